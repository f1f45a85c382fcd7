"""Resuming never unpickles code: the optimizer, scheduler and RNG states of a checkpoint are read with torch's
``weights_only`` loader (transformers 5's ``Trainer._load_rng_state`` / ``_load_optimizer_and_scheduler``, which
``schedule.resume`` goes through).

A checkpoint file is replaced by a pickle whose payload opens a marker file when it is unpickled; the resumed run
must stop on it, with the marker never created. The control unpickles the same file with ``weights_only=False``
and the marker appears, so the payload is armed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_runs import ROOT, TINY

pytestmark = pytest.mark.integration


class _Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _train(run_dir: Path, data: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "train.py", *TINY, f"data.root={data}", f"paths.data_dir={run_dir.parent}"]
    cmd += [f"hydra.run.dir={run_dir}", "train.save_strategy=steps", "+train.save_steps=1", *extra]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory, demo_data):
    run_dir = tmp_path_factory.mktemp("safe_resume") / "run"
    proc = _train(run_dir, demo_data, "train.max_steps=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


@pytest.mark.parametrize("name", ["rng_state.pth", "optimizer.pt"])
def test_resume_refuses_a_pickled_payload(checkpointed, demo_data, tmp_path, name):
    run_dir = tmp_path / "run"
    shutil.copytree(checkpointed, run_dir)
    target = run_dir / "checkpoint-2" / name
    assert target.exists(), sorted(p.name for p in target.parent.iterdir())
    marker = tmp_path / "payload_ran"
    torch.save({"state": _Payload(marker)}, target)
    proc = _train(run_dir, demo_data, "train.max_steps=3", "schedule.resume=true")
    assert proc.returncode != 0
    assert "Weights only load failed" in proc.stderr
    assert not marker.exists()
    torch.load(target, weights_only=False)  # the control: the payload is armed
    assert marker.exists()
