"""A checkpoint save cut short: by a kill (``train.py`` wrapped by ``train_killed_while_saving.py``, which
``os._exit``s at a named point of the save) or by a full disk (``ENOSPC`` injected at the write, in this
process). ``schedule.resume=auto`` skips a partial ``checkpoint-N``, logging which and why, resumes from the last
complete one (from the last one without a step past ``max_steps`` when the final ``checkpoint/`` was cut) and
gives the uninterrupted run's losses and final weights; a full disk stops the run with one line naming the
checkpoint and saying to free space, after removing the partial folder. The reruns run here, in this process."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_runs import ROOT, TINY, tiny_cfg

from lit.files import DiskFull

pytestmark = pytest.mark.integration
SAVES = ["train.max_steps=8", "train.save_strategy=steps", "+train.save_steps=2"]


def _train(script: str, run_dir: Path, data: Path, *extra: str, env_extra: dict | None = None):
    env = {**os.environ, "WANDB_MODE": "disabled", **(env_extra or {})}
    cmd = [sys.executable, script, *TINY, f"data.root={data}", f"paths.data_dir={run_dir.parent}"]
    cmd += [f"hydra.run.dir={run_dir}", *SAVES, *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _losses(run_dir: Path) -> list[float]:
    return [h["loss"] for h in json.loads((run_dir / "log_history.json").read_text()) if "loss" in h]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, demo_data) -> Path:
    """The uninterrupted run (its losses, its final weights), in this process as ``train.py`` runs it."""
    from lit.train.run import run

    out = tmp_path_factory.mktemp("straight") / "run"
    run(tiny_cfg(demo_data, out, *SAVES), out)
    return out


def _same_weights(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    x, y = load_file(a / "checkpoint" / "model.safetensors"), load_file(b / "checkpoint" / "model.safetensors")
    return x.keys() == y.keys() and all(x[k].equal(y[k]) for k in x)


@pytest.mark.parametrize("point", ["optimizer", "trainer_state", "final"])
def test_a_kill_while_a_checkpoint_is_written_is_skipped_on_resume(tmp_path, demo_data, reference, caplog, point):
    """Killed inside ``checkpoint-4`` (after the weights; or inside ``trainer_state.json``, its last file), or
    inside the final ``checkpoint/``: ``schedule.resume=auto`` skips ``checkpoint-4`` naming why, or resumes
    from ``checkpoint-8`` without a step past ``max_steps``, and gives the uninterrupted losses and weights."""
    from lit.train.run import run

    run_dir = tmp_path / "run"
    hook = {"LIT_TEST_KILL_WHILE_SAVING": f"4:{point}"}
    proc = _train("tests/faults/train_killed_while_saving.py", run_dir, demo_data, env_extra=hook)
    assert proc.returncode == 137, (proc.returncode, proc.stderr[-3000:])
    saved = [2, 4, 6, 8] if point == "final" else [2, 4]
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == [f"checkpoint-{n}" for n in saved]
    assert (run_dir / "checkpoint-4" / "model.safetensors").is_file()  # the weights were written
    assert (run_dir / "checkpoint").exists() == (point == "final") and not (run_dir / "log_history.json").exists()

    with caplog.at_level(logging.INFO, logger="lit.train.args"):  # the same command again, here in this process
        run(tiny_cfg(demo_data, run_dir, *SAVES, "schedule.resume=auto"), run_dir)
    log = caplog.text
    skipped = [line for line in log.splitlines() if "skipping incomplete checkpoint" in line]
    if point == "final":
        assert not skipped and f"resuming from {run_dir / 'checkpoint-8'}" in log
        assert "is at max_steps=8: training was finished, nothing is trained again" in log
    else:
        why = {"optimizer": "no trainer_state.json", "trainer_state": "trainer_state.json is cut off"}[point]
        assert len(skipped) == 1 and f"{run_dir / 'checkpoint-4'}: " in skipped[0] and why in skipped[0], skipped
        assert f"resuming from {run_dir / 'checkpoint-2'}" in log
    assert _losses(run_dir) == pytest.approx(_losses(reference), rel=1e-5)
    assert _same_weights(run_dir, reference)


def _no_space(path) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", str(path))


@pytest.mark.parametrize("at", ["checkpoint-4", "checkpoint"])
def test_a_full_disk_while_saving_stops_in_one_line_and_the_rerun_gives_the_same_losses(
    tmp_path, demo_data, reference, monkeypatch, at
):
    from transformers import Trainer

    from lit.train.run import run

    out = tmp_path / "run"
    save_optimizer, save_model = Trainer._save_optimizer_and_scheduler, Trainer.save_model

    def optimizer_fills_the_disk(self, output_dir):
        if self.state.global_step != 4:
            return save_optimizer(self, output_dir)
        (Path(output_dir) / "optimizer.pt").write_bytes(b"PK\x03\x04 half of it")  # what fit before the disk filled
        raise _no_space(Path(output_dir) / "optimizer.pt")

    def final_save_fills_the_disk(self, output_dir=None, _internal_call=False):
        if Path(output_dir).name != "checkpoint":
            return save_model(self, output_dir, _internal_call)
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "model.safetensors").write_bytes(b"\x10\x00")
        raise RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")

    if at == "checkpoint-4":
        monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", optimizer_fills_the_disk)
    else:
        monkeypatch.setattr(Trainer, "save_model", final_save_fills_the_disk)
    with pytest.raises(DiskFull) as stop:
        run(tiny_cfg(demo_data, out, *SAVES), out)
    message = str(stop.value)
    assert "\n" not in message and f"while writing the checkpoint {out / at} (its partial folder was removed" in message
    resumes = "checkpoint-2" if at == "checkpoint-4" else "checkpoint-8"
    assert f"schedule.resume=auto continues from {out / resumes}" in message and "free space" in message
    assert not (out / at).exists() and not (out / "log_history.json").exists()  # nothing half-written left
    monkeypatch.undo()  # space freed
    run(tiny_cfg(demo_data, out, *SAVES, "schedule.resume=auto"), out)
    assert _losses(out) == pytest.approx(_losses(reference), rel=1e-5)
    assert _same_weights(out, reference)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == [f"checkpoint-{n}" for n in (2, 4, 6, 8)]
