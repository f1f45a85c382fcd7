"""`--wait`'s end without a cluster: stand-ins for sbatch, squeue, sacct and scancel play a failed training job; its
dependents, stuck at DependencyNeverSatisfied, are cancelled with a line naming it, and the run ends with a table
of every job's final state and the command that resumes what failed. The table builder on sacct's own text too."""

from __future__ import annotations

import os
from io import StringIO

import pytest

from lit import recipes, slurm

SBATCH = """#!/bin/sh
# records the job's name under a new id; a job meant to complete leaves its result files in its RUN_DIR
n=$(( $(cat "$FAKE/next" 2>/dev/null || echo 100) + 1 )); echo "$n" > "$FAKE/next"
for a in "$@"; do case "$a" in --job-name=*) name=${a#--job-name=};; esac; done
echo "$name" > "$FAKE/id/$n"
grep -q COMPLETED "$FAKE/sacct/$name" && touch "$RUN_DIR/train_metrics.json" "$RUN_DIR/scores.json" "$RUN_DIR/vc.json"
echo "$n"
"""
SQUEUE = """#!/bin/sh
id=$(echo "$@" | sed 's/.*-j \\([0-9]*\\).*/\\1/')
cat "$FAKE/squeue/$(cat "$FAKE/id/$id")"
"""
SACCT = """#!/bin/sh
[ -f "$FAKE/no_accounting" ] && { echo "sacct: error: Slurm accounting storage is disabled" >&2; exit 1; }
ids=$(echo "$@" | sed 's/.*-j \\([0-9,]*\\).*/\\1/' | tr , ' ')
for id in $ids; do echo "$id|$(cat "$FAKE/sacct/$(cat "$FAKE/id/$id")")"; done
"""
SCANCEL = '#!/bin/sh\necho "$@" >> "$FAKE/scancel.log"\n'
# the demo table: demo_vit fails, so both its evaluation and the VC job (which needs both trainings) can never start
SQUEUE_STATE = {
    "demo_vit": "FAILED|NonZeroExitCode",
    "demo_lit": "COMPLETED|None",
    "eval_demo_vit": "PENDING|DependencyNeverSatisfied",
    "eval_demo_lit": "COMPLETED|None",
    "vc_demo": "PENDING|DependencyNeverSatisfied",
}
SACCT_STATE = {
    "demo_vit": "FAILED|1:0|00:03:12",
    "demo_lit": "COMPLETED|0:0|00:04:01",
    "eval_demo_vit": "CANCELLED by 1000|0:0|00:00:00",
    "eval_demo_lit": "COMPLETED|0:0|00:00:40",
    "vc_demo": "CANCELLED by 1000|0:0|00:00:00",
}


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    fake = tmp_path / "fake"
    for sub in ("bin", "id", "squeue", "sacct"):
        (fake / sub).mkdir(parents=True)
    for name, text in {"sbatch": SBATCH, "squeue": SQUEUE, "sacct": SACCT, "scancel": SCANCEL}.items():
        (fake / "bin" / name).write_text(text)
        (fake / "bin" / name).chmod(0o755)
    for name in SQUEUE_STATE:
        (fake / "squeue" / name).write_text(SQUEUE_STATE[name] + "\n")
        (fake / "sacct" / name).write_text(SACCT_STATE[name] + "\n")
    monkeypatch.setenv("FAKE", str(fake))
    monkeypatch.setenv("PATH", f"{fake / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setattr(slurm.time, "sleep", lambda s: None)
    return fake


def _submit_and_wait(tmp_path) -> tuple[str, str]:
    out = StringIO()
    with pytest.raises(RuntimeError) as err:
        recipes.run(
            "demo_t4", "submit", tmp_path / "out", ["train:train.max_steps=2"], out=out, site="local_cpu", wait=True
        )
    return out.getvalue(), str(err.value)


def test_wait_cancels_what_can_never_run_and_ends_with_the_state_table(tmp_path, fake_slurm):
    text, err = _submit_and_wait(tmp_path)
    sid = {(fake_slurm / "id" / n).read_text().strip(): n for n in os.listdir(fake_slurm / "id")}  # name -> id
    assert (
        f"  eval_demo_vit ({sid['eval_demo_vit']}): cancelled: its dependency can never be satisfied: upstream job "
        f"demo_vit ({sid['demo_vit']}) ended FAILED" in text
    )
    assert f"  vc_demo ({sid['vc_demo']}): cancelled: its dependency can never be satisfied: upstream job demo_vit" in (
        text
    )
    assert sorted((fake_slurm / "scancel.log").read_text().split()) == sorted([sid["eval_demo_vit"], sid["vc_demo"]])
    table = text.split("# final states (sacct):\n")[1].split("# to resume")[0].splitlines()
    assert table[0].split() == ["job", "Slurm", "id", "state", "exit", "elapsed", "result"]
    rows = {line.split()[0]: line.split()[1:] for line in table[1:]}
    assert rows == {
        "demo_vit": [sid["demo_vit"], "FAILED", "1:0", "00:03:12", "MISSING"],
        "demo_lit": [sid["demo_lit"], "COMPLETED", "0:0", "00:04:01", "yes"],
        "eval_demo_vit": [sid["eval_demo_vit"], "CANCELLED", "0:0", "00:00:00", "MISSING"],
        "eval_demo_lit": [sid["eval_demo_lit"], "COMPLETED", "0:0", "00:00:40", "yes"],
        "vc_demo": [sid["vc_demo"], "CANCELLED", "0:0", "00:00:00", "MISSING"],
    }
    again = (
        f"python -m lit.recipes demo_t4 --submit --wait --site local_cpu --output-root {tmp_path / 'out'} "
        "train:train.max_steps=2"
    )
    assert f"# to resume what failed or never ran (finished jobs are skipped):\n  {again}\n" in text
    assert "3 job(s) ended without their result: demo_vit, eval_demo_vit, vc_demo" in err and again in err


def test_without_accounting_the_table_shows_what_squeue_last_said(tmp_path, fake_slurm):
    (fake_slurm / "no_accounting").touch()
    (tmp_path / "out" / "repro" / "demo_lit").mkdir(parents=True)
    (tmp_path / "out" / "repro" / "demo_lit" / "train_metrics.json").write_text("{}")  # finished before: skipped
    text, _ = _submit_and_wait(tmp_path)
    assert "# final states (squeue (sacct has no records: accounting storage is off)):" in text
    rows = {line.split()[0]: line for line in text.split("# final states")[1].splitlines()[2:] if line.strip()}
    assert "not submitted (done before)" in rows["demo_lit"] and rows["demo_lit"].split()[1] == "-"
    assert " FAILED " in rows["demo_vit"] and "CANCELLED (dependency)" in rows["eval_demo_vit"]


def test_sacct_text_to_rows():
    text = "101|COMPLETED|0:0|00:04:01\n102|CANCELLED by 1000|0:0|00:00:00\n103|TIMEOUT|0:15|12:00:07\n\n"
    rows = slurm.parse_sacct(text)
    assert {k: v["State"] for k, v in rows.items()} == {"101": "COMPLETED", "102": "CANCELLED", "103": "TIMEOUT"}
    lines = slurm.state_table({"a": "101", "b": "103"}, rows, {"a": True})
    assert lines == [
        "  job  Slurm id  state      exit  elapsed   result",
        "  a    101       COMPLETED  0:0   00:04:01  yes",
        "  b    103       TIMEOUT    0:15  12:00:07  MISSING",
    ]
