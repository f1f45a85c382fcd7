"""slurm/train.sbatch's side of the warning signal, without Slurm: stand-ins for `srun` (runs its command) and
`scontrol` (records a requeue), a stand-in training process that stops when the stop file appears, and SIGUSR1 sent
to the batch shell as `--signal=B:USR1@...` does. The real chain is tests/launch/test_slurm.py's."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRAINING = """#!/bin/bash
# a stand-in for `python train.py ...`: runs until the stop file appears (the trainer's checkpoint), or finishes
echo "training $*"
for _ in $(seq 300); do
  [ -n "${LIT_STOP_FILE:-}" ] && [ -f "$LIT_STOP_FILE" ] && { echo "checkpoint saved, stopping"; exit 0; }
  [ -f "$FINISH" ] && { echo finished; touch "$RUN_DIR/train_metrics.json"; exit 0; }
  sleep 0.1
done
exit 3
"""


def _stand_ins(tmp_path: Path) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "srun": '#!/bin/sh\nwhile [ "${1#--}" != "$1" ]; do shift; done\nexec "$@"\n',
        "scontrol": '#!/bin/sh\n[ "$1" = show ] && { echo localhost; exit 0; }\n'  # a requeue: recorded
        f'echo "$@" >> {tmp_path / "scontrol.log"}\n',
        "python": TRAINING,
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "LIT_PYTHON": str(bin_dir / "python"),
        "RUN_DIR": str(tmp_path / "run"),
        "FINISH": str(tmp_path / "finish"),
        "SLURM_JOB_ID": "77",
        "SLURM_JOB_NAME": "t",
        "SLURM_NNODES": "1",
        "SLURM_JOB_NODELIST": "localhost",
        "PROCS_PER_NODE": "1",
        "SLURM_RESTART_COUNT": "0",
    }


def _start(env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        ["bash", "slurm/train.sbatch", "model=tiny"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )


def _wait_for(path: Path) -> None:
    deadline = time.time() + 20
    while not path.exists() and time.time() < deadline:
        time.sleep(0.05)


def test_the_warning_signal_stops_training_and_requeues_the_job(tmp_path):
    env = _stand_ins(tmp_path)
    proc = _start(env)
    _wait_for(tmp_path / "run" / "slurm_job.txt")
    time.sleep(0.5)  # the training stand-in is running
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "asking training to checkpoint and stop" in out and "checkpoint saved, stopping" in out
    assert "requeueing job 77 after restart 0" in out
    assert (tmp_path / "scontrol.log").read_text() == "requeue 77\n"
    assert not (tmp_path / "run" / "stop_requested").exists()  # the next start does not stop at once


def test_a_run_that_finishes_is_not_requeued_and_keeps_its_exit_status(tmp_path):
    env = _stand_ins(tmp_path)
    (tmp_path / "finish").touch()
    proc = _start(env)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "finished" in out and not (tmp_path / "scontrol.log").exists()
    failing = {**env, "FINISH": str(tmp_path / "never")}
    (tmp_path / "bin" / "python").write_text("#!/bin/sh\nexit 5\n")
    proc = _start(failing)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 5 and not (tmp_path / "scontrol.log").exists()
