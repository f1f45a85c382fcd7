"""The recipes on a real Slurm (the one-node CPU cluster of scripts/local_slurm.sh; `make test-slurm` brings it
up and down): the demo table's afterok chain runs to the same table as --local, a second invocation attaches to
queued jobs instead of submitting them again, a requeued training job resumes from its checkpoint, and one whose time
limit is shorter than its run survives it in segments (the warning signal, a checkpoint, a requeue)."""

from __future__ import annotations

import json
import subprocess
import time
from io import StringIO
from pathlib import Path

import pytest

from lit import recipes, slurm
from lit.report import tables

LOCAL_CONF = Path("/etc/slurm/slurm.conf")  # the local test cluster's, never a real cluster's
pytestmark = [
    pytest.mark.slow,
    pytest.mark.slurm,
    pytest.mark.integration,
    pytest.mark.skipif(
        not (LOCAL_CONF.exists() and "scripts/local_slurm.sh" in LOCAL_CONF.read_text()),
        reason="no local test Slurm: `make test-slurm` starts one",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
SITE = "local_cpu"


def _tiny(demo_data: Path, runs: Path) -> list[str]:
    """The demo recipe shrunk to seconds per job (as tests/launch/test_recipes.py runs it locally)."""
    return [
        "train:train.max_steps=2",
        "train:train.per_device_train_batch_size=4",
        "train:train.disable_tqdm=true",
        f"train:data.root={demo_data}",
        "train:data.generate=false",
        "train:model.text.hidden_size=32",
        "train:model.vision.hidden_size=32",
        "evaluate:eval.limit=2",
        f"evaluate:eval.data_dir={demo_data}",
        f"evaluate:results_dir={runs}",
        f"vc:data.root={demo_data}",
        "vc:n=3",
        f"vc:results_dir={runs}",
    ]


@pytest.fixture(autouse=True)
def _quiet_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")  # sbatch exports the submitting environment to the jobs


def _scontrol(slurm_id: str) -> dict:
    out = subprocess.run(["scontrol", "show", "job", slurm_id], capture_output=True, text=True, check=True).stdout
    return dict(f.split("=", 1) for f in out.split() if "=" in f)


def _ours(md: str) -> str:
    return md.split("Ours:")[1].split("Paper")[0]


def test_demo_table_on_slurm_equals_the_local_run(tmp_path, demo_data):
    """Every job of demo_t4's afterok chain completes on Slurm (its log directory did not exist before: Slurm
    would fail every job), and the table equals the one --local renders."""
    out_root, runs = tmp_path / "slurm", tmp_path / "runs_slurm"
    assert not slurm.log_dir(out_root).exists()
    text = StringIO()
    recipes.run("demo_t4", "submit", out_root, _tiny(demo_data, runs), out=text, site=SITE, wait=True)
    assert text.getvalue().count("submitted:") == 5
    assert all(j.done(out_root) for j in recipes.jobs(recipes.load("demo_t4"), out_root))
    assert sorted(p.name.rsplit("-", 1)[0] for p in slurm.log_dir(out_root).glob("*.out")) == sorted(
        ["demo_vit", "demo_lit", "eval_demo_vit", "eval_demo_lit", "vc_demo"]
    )

    local_runs = tmp_path / "runs_local"
    recipes.run("demo_t4", "local", tmp_path / "local", _tiny(demo_data, local_runs), out=StringIO())
    paper = ROOT / "results" / "paper"
    on_slurm = tables.render("demo_t4", runs, tmp_path / "tables_slurm", paper)
    here = tables.render("demo_t4", local_runs, tmp_path / "tables_local", paper)
    assert "| LIT |" in _ours(on_slurm) and "–" not in _ours(on_slurm)
    assert _ours(on_slurm) == _ours(here)

    again = StringIO()  # nothing left to do: a second invocation submits nothing
    recipes.run("demo_t4", "submit", out_root, _tiny(demo_data, runs), out=again, site=SITE)
    assert again.getvalue().count("done, skipped") == 5 and "submitted:" not in again.getvalue()


def test_a_second_invocation_attaches_to_queued_jobs(tmp_path, demo_data):
    """Jobs held in the queue are not submitted again; a job whose record is gone is, and its dependency names
    the jobs already queued."""
    out_root = tmp_path / "out"
    extra = _tiny(demo_data, tmp_path / "runs")
    held = ["sbatch_extra.hold=true"]  # submitted held: they stay queued while the test looks
    first = recipes.run("demo_t4", "submit", out_root, extra, out=StringIO(), site=SITE, site_overrides=held)
    ids = {j.id: json.loads((j.run_dir(out_root) / slurm.RECORD).read_text())["slurm_id"] for j in first}
    try:
        assert all(slurm.state(i) == "PENDING" for i in ids.values())
        subprocess.run(["scancel", ids["vc_demo"]], check=True)
        (run_dir := recipes.run_dir(out_root, "vc_demo") / slurm.RECORD).unlink()
        text = StringIO()
        recipes.run("demo_t4", "submit", out_root, extra, out=text, site=SITE, site_overrides=held)
        assert text.getvalue().count("attached") == 4 and text.getvalue().count("submitted:") == 1
        new_id = json.loads(run_dir.read_text())["slurm_id"]
        assert new_id not in ids.values()
        dependency = _scontrol(new_id)["Dependency"]
        assert ids["demo_vit"] in dependency and ids["demo_lit"] in dependency
        assert ids["demo_vit"] in _scontrol(ids["eval_demo_vit"])["Dependency"]
        queued = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True).stdout.split()
        assert sorted(queued) == sorted(ids)  # one queued job per recipe job, none twice
    finally:
        subprocess.run(["scancel", *ids.values(), *([new_id] if "new_id" in dir() else [])], check=False)


MINS_PLUS_CHAIN = """
name: mins_plus_chain
title: "One MIns+ arm of the demo: build, then train"
jobs:
  - id: data_demo_eps0
    kind: mins_plus
    overrides: ["experiment=demo_mins_plus", "augmentation.epsilon=0.0"]
    resources: {nodes: 1, gpus: 0, hours: 0.1}
  - id: demo_eps0
    kind: train
    after: [data_demo_eps0]
    overrides: ["experiment=demo_mins_plus", "augmentation.epsilon=0.0"]
    resources: {nodes: 1, gpus: 8, hours: 0.1}
"""


def test_mins_plus_build_runs_as_a_cpu_job_before_its_training(tmp_path, demo_data, monkeypatch):
    """A recipe's `mins_plus` job (build_mins_plus.py) asks Slurm for no GPU, its training job waits for it
    (afterok), the training reads the set it built, and a second invocation submits neither."""
    import shutil

    monkeypatch.setattr(recipes, "RECIPES", tmp_path / "recipes")
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "mins_plus_chain.yaml").write_text(MINS_PLUS_CHAIN)
    data = shutil.copytree(demo_data, tmp_path / "data")
    out_root = tmp_path / "out"
    extra = [
        f"data.root={data}",
        "data.generate=false",
        f"paths.data_dir={tmp_path}",
        "model.text.hidden_size=32",
        "model.vision.hidden_size=32",
        "train:train.max_steps=2",
        "train:train.per_device_train_batch_size=4",
        "train:train.disable_tqdm=true",
        "train:logger=none",
    ]
    jobs = recipes.run(
        "mins_plus_chain",
        "submit",
        out_root,
        extra,
        out=StringIO(),
        site=SITE,
        site_overrides=["sbatch_extra.hold=true"],
    )
    ids = {j.id: json.loads((j.run_dir(out_root) / slurm.RECORD).read_text())["slurm_id"] for j in jobs}
    try:
        build, train = _scontrol(ids["data_demo_eps0"]), _scontrol(ids["demo_eps0"])
        assert "gpu" not in build.get("TresPerNode", "") and "gpu" not in build["TRES"]
        assert ids["data_demo_eps0"] in train["Dependency"]
        subprocess.run(["scontrol", "release", *ids.values()], check=True)
        slurm.wait(ids, poll_s=2)
    finally:
        subprocess.run(["scancel", *ids.values()], check=False)
    logs = {p.name: p.read_text()[-2000:] for p in slurm.log_dir(out_root).glob("*.out")}
    assert all(j.done(out_root) for j in jobs), logs
    instances = (data / "train_instances.jsonl").read_text().splitlines()
    built = (data / "mins_plus" / "eps0.0-s0" / "train.jsonl").read_text().splitlines()
    audit = json.loads((recipes.run_dir(out_root, "demo_eps0") / "data_audit.json").read_text())
    assert len(built) == len(instances) == audit["n_used"]
    again = StringIO()
    recipes.run("mins_plus_chain", "submit", out_root, extra, out=again, site=SITE)
    assert again.getvalue().count("done, skipped") == 2 and "submitted:" not in again.getvalue()


def _losses(run_dir: Path) -> list[float]:
    return [h["loss"] for h in json.loads((run_dir / "log_history.json").read_text()) if "loss" in h]


def test_requeued_training_resumes_from_its_checkpoint(tmp_path, demo_data):
    """`scontrol requeue` of a running training job: Slurm starts it again, it continues from its last
    complete checkpoint (schedule.resume=auto) and ends with the losses of an uninterrupted run."""
    site = slurm.load_site(SITE)
    job = next(j for j in recipes.jobs(recipes.load("demo_t4"), tmp_path) if j.id == "demo_vit")
    job.overrides += [
        "logger=none",
        f"data.root={demo_data}",
        "data.generate=false",
        f"paths.data_dir={tmp_path}",
        "train.max_steps=16",
        "train.per_device_train_batch_size=4",
        "train.logging_steps=1",
        "train.save_strategy=steps",
        "+train.save_steps=2",
        "train.disable_tqdm=true",
        "schedule.resume=auto",
    ]
    submitted = {}
    for name in ("straight", "requeued"):
        run_dir = tmp_path / name
        env = {**slurm.job_env(site, job.resources, name), "RUN_DIR": str(run_dir)}
        submitted[name] = slurm.submit(recipes._sbatch(job, tmp_path, [], site), run_dir, tmp_path, env)
    requeued = tmp_path / "requeued"
    deadline = time.time() + 300
    while not list(requeued.glob("checkpoint-*/trainer_state.json")) and time.time() < deadline:
        time.sleep(0.2)
    assert not (requeued / "train_metrics.json").exists(), "the run ended before the requeue"
    subprocess.run(["scontrol", "requeue", submitted["requeued"]], check=True)
    assert slurm.settled_state(submitted["requeued"]) == "PENDING"
    # Slurm holds a requeued job back for two minutes (its BeginTime); let it start now
    subprocess.run(["scontrol", "update", f"JobId={submitted['requeued']}", "StartTime=now"], check=True)
    slurm.wait(submitted, poll_s=2)
    assert (requeued / "train_metrics.json").exists(), [p.read_text()[-2000:] for p in (tmp_path / "slurm").glob("*")]
    assert "restart: 1" in (requeued / "slurm_job.txt").read_text()
    log = next((tmp_path / "slurm").glob(f"*-{submitted['requeued']}.out")).read_text()
    resumed_at = int(log.split("resuming from")[1].splitlines()[0].rsplit("checkpoint-", 1)[1])
    assert 0 < resumed_at < 16
    assert _losses(requeued) == pytest.approx(_losses(tmp_path / "straight"), rel=1e-5)


def test_augmentation_job_serves_its_llm_over_http(tmp_path, tiny_chat_model):
    """slurm/augment.sbatch: an OpenAI-compatible server in the job (here `transformers serve`, the same HTTP
    API as `vllm serve`), augment.py against it, the server stopped at the end."""
    site = slurm.load_site(SITE)
    job = recipes.Job(
        id="augment_demo",
        kind="augment",
        resources={"nodes": 1, "gpus": 4, "hours": 0.2},
        overrides=[
            "augmentation.seeds=instraug/demo/seeds.yaml",
            "~augmentation.meta_prompts",
            "+augmentation.meta_prompts={rephrase: 1}",  # replaces the official mix (a plain override merges into it)
            "augmentation.max_new_tokens=6",
            f"augmentation.backend.args.model={tiny_chat_model}",
            f"augmentation.cache_dir={tmp_path / 'cache'}",
        ],
    )
    run_dir = job.run_dir(tmp_path)
    server = str(Path(recipes.sys.executable).with_name("transformers")) + " serve"
    env = {
        **slurm.job_env(site, job.resources, job.id),
        "RUN_DIR": str(run_dir),
        "LIT_LLM_SERVER": server,
        "LIT_LLM_SERVER_ARGS": "",
        "LIT_LLM_TIMEOUT": "300",
    }
    sid = slurm.submit(recipes._sbatch(job, tmp_path, [], site), run_dir, tmp_path, env)
    slurm.wait({job.id: sid}, poll_s=2)
    log = next((tmp_path / "slurm").glob(f"*-{sid}.out")).read_text()
    assert job.done(tmp_path), log[-3000:]
    assert "LLM server healthy" in log and "transformers serve" in (run_dir / "slurm_job.txt").read_text()
    rows = [json.loads(line) for p in (tmp_path / "cache").rglob("*.jsonl") for line in p.read_text().splitlines()]
    assert len(rows) == 8 and all(r["model"] == str(tiny_chat_model) for r in rows)  # 8 seeds x 1 sample, via HTTP
    port = int(log.split("healthy on port ")[1].split()[0])
    import socket

    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # the server is gone with the job


SEGMENTS = """
name: segments
title: "A training job whose time limit is shorter than its run, and its evaluation"
jobs:
  - id: demo_seg
    kind: train
    overrides: ["experiment=demo_vit", "logger=none"]
    resources: {nodes: 1, gpus: 0, hours: 0.05}   # --time=3: the warning signal (60 s before) ends each segment
  - id: eval_demo_seg
    kind: evaluate
    of: demo_seg
    overrides: ["eval=demo"]
    resources: {nodes: 1, gpus: 0, hours: 0.5}
"""


def test_a_run_longer_than_its_time_limit_survives_it_in_segments(tmp_path, demo_data, monkeypatch):
    """A training job's --time (3 min) is shorter than its run: Slurm's warning signal (--signal=B:USR1@60) makes
    slurm/train.sbatch have the trainer save a complete checkpoint and requeue the job, which resumes
    (schedule.resume=auto) until it finishes, with the losses of the same run under a long limit. Its evaluation
    waits on it with afterok across the requeues and then runs."""
    monkeypatch.setattr(recipes, "RECIPES", tmp_path / "recipes")
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "segments.yaml").write_text(SEGMENTS)
    out_root, runs = tmp_path / "out", tmp_path / "runs"
    extra = [
        *[o for o in _tiny(demo_data, runs) if not o.startswith(("train:train.max_steps", "vc:"))],
        "train:train.max_steps=600",  # ~3-4 min of steps on one loaded CPU core: longer than one 3-minute segment
        "train:train.logging_steps=1",
        "train:train.save_strategy=no",  # the only checkpoints are the warning signal's
        f"train:paths.data_dir={tmp_path}",
    ]
    text = StringIO()
    jobs = recipes.run("segments", "submit", out_root, extra, out=text, site=SITE, site_overrides=["signal_s=60"])
    train, evaluate = jobs
    assert (
        train.limit.minutes == 3
        and "--signal=B:USR1@60" in json.loads((train.run_dir(out_root) / slurm.RECORD).read_text())["command"]
    )
    ids = {j.id: json.loads((j.run_dir(out_root) / slurm.RECORD).read_text())["slurm_id"] for j in jobs}
    site = slurm.load_site(SITE)
    straight = recipes.Job("straight", "train", list(train.overrides), resources={"nodes": 1, "gpus": 0, "hours": 0.5})
    env = {**slurm.job_env(site, straight.resources, "straight"), "RUN_DIR": str(tmp_path / "straight")}
    ids["straight"] = slurm.submit(recipes._sbatch(straight, tmp_path, [], site), tmp_path / "straight", tmp_path, env)
    try:
        deadline = time.time() + 900
        while not (evaluate.done(out_root) and (tmp_path / "straight" / "train_metrics.json").exists()):
            assert time.time() < deadline, text.getvalue()
            if slurm.state(ids["demo_seg"]) == "PENDING" and (train.run_dir(out_root) / "slurm_job.txt").exists():
                # requeued: Slurm holds it back for two minutes (its BeginTime); let it start sooner, once the
                # previous run's credential is gone (started at once it is killed: "Job credential revoked")
                time.sleep(10)
                subprocess.run(["scontrol", "update", f"JobId={ids['demo_seg']}", "StartTime=now"], check=False)
            assert slurm.state(ids["demo_seg"]) not in ("TIMEOUT", "FAILED", "CANCELLED")
            time.sleep(2)
        slurm.wait(ids, poll_s=2)
    finally:
        subprocess.run(["scancel", *ids.values()], check=False)
    run_dir = train.run_dir(out_root)
    log = next(slurm.log_dir(out_root).glob(f"*-{ids['demo_seg']}.out")).read_text()
    restarts = int((run_dir / "slurm_job.txt").read_text().split("restart: ")[1].split()[0])
    assert restarts >= 1 and log.count("requeueing job") == restarts, log[-3000:]
    assert "SIGUSR1 (the time limit is near)" in log and "saving a complete checkpoint at step" in log
    assert "resuming from" in log and slurm.state(ids["demo_seg"]) == "COMPLETED"
    assert _losses(run_dir) == pytest.approx(_losses(tmp_path / "straight"), rel=1e-5)
    assert len(_losses(run_dir)) == 600
    assert evaluate.done(out_root) and slurm.state(ids["eval_demo_seg"]) == "COMPLETED"
