"""A time limit the run survives: on SIGUSR1 (or the stop file ``LIT_STOP_FILE`` names) the trainer saves a complete
checkpoint at the next step boundary and the process exits, so that the batch script requeues the job and it resumes
with ``schedule.resume=auto``.

On Slurm, ``lit.recipes`` submits training with ``--signal=B:USR1@<site.signal_s>``: the signal goes to the batch
shell of ``slurm/train.sbatch``, which touches the stop file (under ``torchrun`` the workers are not the job's tasks,
and ``torchrun`` itself would die of a SIGUSR1) and, once training has exited, runs ``scontrol requeue``. A process
started by hand stops on ``kill -USR1 <pid>``. Every rank stops at the same step: the request is all-reduced at each
step boundary (one integer), so a ZeRO-3 save never waits for a rank that went on.

After the save and a barrier the process exits with status 0 (``SystemExit`` from the callback, so nothing after the
training loop runs: no final save, no ``train_metrics.json``, since the run is not finished; that file is what the
batch script and ``lit.recipes`` look at). Status 0, because ``torchrun`` stops the other ranks as soon as one
exits nonzero.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path

from transformers import TrainerCallback

log = logging.getLogger(__name__)
STOP_FILE = "LIT_STOP_FILE"  # environment: a file whose existence asks for the same stop as SIGUSR1


class StopOnSignal(TrainerCallback):
    """Save a complete checkpoint at the next step boundary after SIGUSR1 (or the stop file), then exit."""

    def __init__(self, signum: int = signal.SIGUSR1):
        self.requested = False
        self.stopping = False
        self.signum = signum
        self.stop_file = Path(os.environ[STOP_FILE]) if os.environ.get(STOP_FILE) else None
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.requested = True  # acted on at the next step boundary: a handler must not save from inside a step

    def _asked(self, args) -> bool:
        asked = self.requested or (self.stop_file is not None and self.stop_file.exists())
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            import torch

            flag = torch.tensor([int(asked)], device=args.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # one rank asked: every rank stops at this step
            asked = bool(flag.item())
        return asked

    def on_step_end(self, args, state, control, **kwargs):
        if not self.stopping and self._asked(args):
            self.stopping = True
            control.should_save = True
            control.should_training_stop = True
            if state.is_world_process_zero:
                log.warning(
                    "%s: saving a complete checkpoint at step %d, then stopping",
                    signal.Signals(self.signum).name if self.requested else f"stop file {self.stop_file}",
                    state.global_step,
                )
        return control

    def on_save(self, args, state, control, **kwargs):
        if not self.stopping:
            return control
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # rank 0 has written trainer_state.json: the checkpoint is complete
        if state.is_world_process_zero:
            if self.stop_file is not None:
                self.stop_file.unlink(missing_ok=True)  # asked once: a resumed run does not stop at its first step
            log.warning(
                "stopped early: checkpoint-%d in %s is complete; the run is not finished (no train_metrics.json). "
                "Resume with schedule.resume=auto (a Slurm job requeues itself and does)",
                state.global_step,
                args.output_dir,
            )
        sys.exit(0)  # out of Trainer.train and train.py: the final save and train_metrics.json never run
