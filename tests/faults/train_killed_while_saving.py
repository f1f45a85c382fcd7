"""``train.py`` with a kill at a named point of a checkpoint save (test hook; only the fault tests run it).

``LIT_TEST_KILL_WHILE_SAVING=<step>:<point>`` makes the process ``os._exit(137)`` (what SIGKILL leaves: nothing
after it runs, no handler, no flush) in the middle of writing ``checkpoint-<step>``:

- ``optimizer``: the weights are written, ``optimizer.pt`` is cut to half its bytes (the kill lands inside its
  write), the scheduler, RNG and trainer states are never written;
- ``trainer_state``: everything is written but ``trainer_state.json``, the Trainer's last file, which is cut
  after half its text;
- ``final`` (step ignored): every ``checkpoint-N`` is written, then the final ``checkpoint/``'s weights are cut to
  half their bytes (no processor, no ``log_history.json``).

Usage (as ``train.py``): ``python tests/faults/train_killed_while_saving.py <overrides>``. The hook lives here,
not in the package: the training code has no test branch.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HOOK = "LIT_TEST_KILL_WHILE_SAVING"


def install(step: int, point: str) -> None:
    from transformers import Trainer, TrainerState

    save_optimizer, save_state, save_model = (
        Trainer._save_optimizer_and_scheduler,
        TrainerState.save_to_json,
        Trainer.save_model,
    )

    def optimizer_then_killed(self, output_dir):
        if self.state.global_step != step or point != "optimizer":
            return save_optimizer(self, output_dir)
        save_optimizer(self, output_dir)
        path = Path(output_dir) / "optimizer.pt"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        os._exit(137)

    def state_cut_off(self, json_path):
        if self.global_step != step or point != "trainer_state":
            return save_state(self, json_path)
        save_state(self, json_path)
        text = Path(json_path).read_text()
        Path(json_path).write_text(text[: len(text) // 2])
        os._exit(137)

    def final_weights_cut_off(self, output_dir=None, _internal_call=False):
        save_model(self, output_dir, _internal_call)
        if point == "final" and Path(output_dir).name == "checkpoint":
            path = Path(output_dir) / "model.safetensors"
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
            os._exit(137)

    Trainer._save_optimizer_and_scheduler = optimizer_then_killed
    TrainerState.save_to_json = state_cut_off
    Trainer.save_model = final_weights_cut_off


if __name__ == "__main__":
    step, point = os.environ[HOOK].split(":")
    assert point in ("optimizer", "trainer_state", "final"), point
    install(int(step), point)
    sys.argv[0] = str(ROOT / "train.py")
    runpy.run_path(str(ROOT / "train.py"), run_name="__main__")
