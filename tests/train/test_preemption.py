"""A time limit the run survives, without Slurm (lit.train.preemption): SIGUSR1 to a running `train.py` makes it save a
complete checkpoint at the next step boundary and exit, and `schedule.resume=auto` continues it to the losses of an
uninterrupted run. The Slurm side (the --signal, the requeue, the dependents) is tests/launch/test_slurm.py's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_zero3_resume import _losses, _train
from tiny_runs import ROOT, TINY

pytestmark = pytest.mark.integration
STEPS = ["train.max_steps=120", "train.save_strategy=no"]  # no save of its own: the checkpoint is the signal's


def _start(run_dir: Path, data: Path, *extra: str, env_extra: dict | None = None) -> subprocess.Popen:
    """`train.py` as `_train` runs it, started in the background with its output streamed line by line."""
    cmd = [sys.executable, "train.py", *TINY, f"data.root={data}", f"paths.data_dir={run_dir.parent}"]
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    return subprocess.Popen(
        [*cmd, f"hydra.run.dir={run_dir}", *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _signal_after_first_log(proc: subprocess.Popen) -> str:
    """Send SIGUSR1 once the first training step is logged; the whole output once the process has ended."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "'loss'" in line and proc.poll() is None and not any("SIGUSR1 sent" in x for x in lines):
            proc.send_signal(signal.SIGUSR1)
            lines.append("SIGUSR1 sent\n")
    proc.wait(timeout=300)
    return "".join(lines)


def test_sigusr1_saves_a_complete_checkpoint_and_resume_gives_the_same_losses(tmp_path, demo_data):
    stopped = tmp_path / "stopped"
    proc = _start(stopped, demo_data, *STEPS)
    out = _signal_after_first_log(proc)
    assert proc.returncode == 0, out[-3000:]
    assert "SIGUSR1: saving a complete checkpoint at step" in out, out[-3000:]
    step = int(out.split("SIGUSR1: saving a complete checkpoint at step ")[1].split(",")[0])
    assert f"stopped early: checkpoint-{step} in {stopped} is complete" in out
    assert 1 <= step < 120
    assert sorted(p.name for p in stopped.glob("checkpoint-*")) == [f"checkpoint-{step}"]
    assert (stopped / f"checkpoint-{step}" / "trainer_state.json").is_file()
    assert not (stopped / "train_metrics.json").exists() and not (stopped / "checkpoint").exists()

    _train(stopped, demo_data, *STEPS, "schedule.resume=auto")
    assert json.loads((stopped / "train_metrics.json").read_text())["steps"] == 120
    _train(tmp_path / "straight", demo_data, *STEPS)
    assert _losses(stopped) == pytest.approx(_losses(tmp_path / "straight"), rel=1e-5)


def test_the_stop_file_asks_for_the_same_stop(tmp_path, demo_data):
    """What slurm/train.sbatch does on the warning signal (torchrun's workers are not the job's tasks): it touches
    LIT_STOP_FILE, and the trainer stops at the next step boundary as on SIGUSR1."""
    run_dir, stop = tmp_path / "run", tmp_path / "stop_requested"
    proc = _start(run_dir, demo_data, *STEPS, env_extra={"LIT_STOP_FILE": str(stop)})
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "'loss'" in line:
            stop.touch()
    proc.wait(timeout=300)
    out = "".join(lines)
    assert proc.returncode == 0 and f"stop file {stop}: saving a complete checkpoint at step" in out, out[-3000:]
    assert list(run_dir.glob("checkpoint-*/trainer_state.json")) and not (run_dir / "train_metrics.json").exists()
    assert not stop.exists()  # asked once: the resumed run does not stop at its first step
