"""The training CLI under DeepSpeed ZeRO-3 on CPU (one process, gloo), and kill-and-resume.

Each run is a subprocess of `train.py`, as a user would start it, so DeepSpeed's process group does
not leak into other tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file
from tiny_runs import ROOT, TINY, one_process_ds_env

pytestmark = pytest.mark.integration


def _train(run_dir: Path, data: Path, *extra: str, env_extra: dict | None = None, check: bool = True):
    env = {**os.environ, "WANDB_MODE": "disabled", **(env_extra or {})}
    cmd = [
        sys.executable,
        "train.py",
        *TINY,
        f"data.root={data}",
        f"paths.data_dir={run_dir.parent}",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 or not check, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("model", ["tiny", "tiny_next", "tiny_iblip"])
def test_zero3_cpu_run_saves_full_weights(tmp_path, demo_data, model):
    """LLaVA, LLaVA-NeXT (its image_newline is a bare parameter of the model) and InstructBLIP (query tokens,
    Q-Former) under ZeRO-3: every tensor gathered into the consolidated checkpoint."""
    ds_env = one_process_ds_env()
    run_dir = tmp_path / "z3"
    _train(
        run_dir,
        demo_data,
        "deepspeed=zero3",
        "train.max_steps=2",
        "+train.ddp_backend=gloo",
        f"model={model}",
        env_extra=ds_env,
    )
    metrics = json.loads((run_dir / "train_metrics.json").read_text())
    assert metrics["zero_stage"] == 3 and metrics["steps"] == 2
    # The ZeRO-3 pitfall: parameters left partitioned are saved as empty placeholders (shape [0]).
    from transformers import AutoConfig, AutoModelForImageTextToText

    saved = load_file(run_dir / "checkpoint" / "model.safetensors")
    assert all(t.numel() > 0 for t in saved.values())
    fresh = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(run_dir / "checkpoint"))
    assert sum(t.numel() for t in saved.values()) == sum(p.numel() for p in fresh.parameters())
    model, info = AutoModelForImageTextToText.from_pretrained(run_dir / "checkpoint", output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]


def _losses(run_dir: Path) -> list[float]:
    return [h["loss"] for h in json.loads((run_dir / "log_history.json").read_text()) if "loss" in h]


def test_sigkill_and_resume_gives_the_same_losses(tmp_path, demo_data):
    args = ["train.max_steps=8", "train.save_strategy=steps", "+train.save_steps=2"]
    _train(tmp_path / "straight", demo_data, *args)
    reference = _losses(tmp_path / "straight")
    assert len(reference) == 8

    killed = tmp_path / "killed"  # SIGKILLed by the training process itself right after checkpoint-4 is written
    proc = _train(killed, demo_data, *args, env_extra={"LIT_TEST_KILL_AFTER_SAVE": "4"}, check=False)
    assert proc.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), (proc.returncode, proc.stderr[-3000:])
    steps = sorted(int(p.name.split("-")[-1]) for p in killed.glob("checkpoint-*"))
    assert steps and steps[-1] == 4 and (killed / "checkpoint-4" / "trainer_state.json").is_file()
    assert not (killed / "checkpoint").exists() and not (killed / "log_history.json").exists()
    _train(killed, demo_data, *args, "schedule.resume=true")
    assert _losses(killed) == pytest.approx(reference, rel=1e-5)


def test_resume_without_checkpoint_says_what_to_do(tmp_path, demo_data):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [
            sys.executable,
            "train.py",
            *TINY,
            f"data.root={demo_data}",
            "schedule.resume=true",
            f"hydra.run.dir={tmp_path / 'fresh'}",
            "train.max_steps=1",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "holds no complete checkpoint-* folder" in proc.stderr


def test_stage2_under_zero3_starts_from_the_stage1_projector(tmp_path, demo_data, trained):
    """Pitfall: a stage-1 projector loaded into a ZeRO-3-partitioned model silently stays random. Our stage 2
    loads the whole stage-1 checkpoint before DeepSpeed partitions it; with lr 0 the saved projector must
    be the stage-1 projector bit for bit."""
    _, stage1, _ = trained
    run_dir = tmp_path / "sft"
    _train(
        run_dir,
        demo_data,
        "deepspeed=zero3",
        "train.max_steps=1",
        "+train.ddp_backend=gloo",
        f"model.pretrained={stage1 / 'checkpoint'}",
        "train.learning_rate=0",
        env_extra=one_process_ds_env(),
    )
    before = load_file(stage1 / "checkpoint" / "model.safetensors")
    after = load_file(run_dir / "checkpoint" / "model.safetensors")
    keys = [k for k in before if "multi_modal_projector" in k]
    assert keys and all(after[k].shape == before[k].shape and after[k].equal(before[k]) for k in keys)


def test_zero3_save_after_resume_writes_full_weights(tmp_path, demo_data):
    """Pitfall: the final save of a resumed ZeRO-3 run (engine re-created from a checkpoint) must still gather
    every parameter."""
    run_dir = tmp_path / "z3r"
    args = ("deepspeed=zero3", "+train.ddp_backend=gloo", "train.save_strategy=steps", "+train.save_steps=2")
    _train(run_dir, demo_data, *args, "train.max_steps=2", env_extra=one_process_ds_env())
    _train(run_dir, demo_data, *args, "train.max_steps=3", "schedule.resume=true", env_extra=one_process_ds_env())
    metrics = json.loads((run_dir / "train_metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["zero_stage"] == 3
    saved = load_file(run_dir / "checkpoint" / "model.safetensors")
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    fresh = LlavaForConditionalGeneration(LlavaConfig.from_pretrained(run_dir / "checkpoint"))
    assert all(t.numel() > 0 for t in saved.values())
    assert sum(t.numel() for t in saved.values()) == sum(p.numel() for p in fresh.parameters())


def test_lora_under_zero3_saves_a_full_adapter_and_a_merged_model(tmp_path, demo_data, trained):
    """LoRA + ZeRO-3: the adapter (and the projector trained beside it) must be gathered on save, not written
    as empty partitions, and the merged checkpoint must hold every weight."""
    _, stage1, _ = trained
    run_dir = tmp_path / "lora_z3"
    _train(
        run_dir,
        demo_data,
        "deepspeed=zero3",
        "train.max_steps=2",
        "+train.ddp_backend=gloo",
        "adapter=lora",
        "adapter.r=4",
        "adapter.alpha=8",
        f"model.pretrained={stage1 / 'checkpoint'}",
        env_extra=one_process_ds_env(),
    )
    adapter = load_file(run_dir / "checkpoint_adapter" / "adapter_model.safetensors")
    assert any("lora_B" in k for k in adapter) and any("multi_modal_projector" in k for k in adapter)
    assert all(t.numel() > 0 for t in adapter.values())
    assert any(t.abs().sum() > 0 for k, t in adapter.items() if "lora_B" in k)  # trained (B starts at zero)
    from transformers import LlavaForConditionalGeneration

    merged, info = LlavaForConditionalGeneration.from_pretrained(run_dir / "checkpoint", output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]


@pytest.mark.parametrize("part_lrs", [False, True])
def test_zero3_offload_takes_two_steps_with_and_without_part_learning_rates(tmp_path, demo_data, part_lrs):
    """deepspeed=zero3_offload: DeepSpeed refuses a client (torch) optimizer under optimizer offload unless it is
    its CPU Adam (engine._configure_optimizer, zero_force_ds_cpu_optimizer); Accelerate maps our AdamW, with its
    per-part parameter groups, to DeepSpeedCPUAdam. The part's learning rate must follow the schedule there."""
    run_dir = tmp_path / "offload"
    extra = ["+model.part_lrs={vision: 1.0e-5}"] if part_lrs else []
    _train(
        run_dir,
        demo_data,
        "deepspeed=zero3_offload",
        "train.max_steps=2",
        "train.warmup_steps=1",
        "+train.ddp_backend=gloo",
        *extra,
        env_extra=one_process_ds_env(),
    )
    metrics = json.loads((run_dir / "train_metrics.json").read_text())
    assert metrics["zero_stage"] == 3 and metrics["steps"] == 2
    assert "DeepSpeedCPUAdam" in metrics["optimizer"]
    logged = [h for h in json.loads((run_dir / "log_history.json").read_text()) if "loss" in h]
    if part_lrs:
        vision = [h["learning_rate/vision"] for h in logged]
        assert max(vision) == pytest.approx(1e-5) and min(vision) < 1e-5  # warm-up/decay applied to the part
    saved = load_file(run_dir / "checkpoint" / "model.safetensors")
    assert all(t.numel() > 0 for t in saved.values())
