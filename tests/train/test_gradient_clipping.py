"""Gradient clipping of the paper configs, as the DeepSpeed engine that trains them sees it.

Upstream, what each training script trained with:

- LLaVA-1.5 (haotian-liu/LLaVA c121f04): ``scripts/zero2.json`` and ``scripts/zero3.json`` (used by
  ``scripts/v1_5/pretrain.sh`` line 4 and ``finetune.sh`` line 4) have no ``gradient_clipping`` key, so the
  Trainer's ``max_grad_norm`` never reaches DeepSpeed; ``pyproject.toml`` lines 18 and 26 pin accelerate 0.21.0,
  whose ``Accelerator.clip_grad_norm_`` returns None under DeepSpeed without clipping (huggingface/accelerate
  v0.21.0 ``src/accelerate/accelerator.py`` lines 1921-1924), and DeepSpeed 0.12.6, whose default is
  ``GRADIENT_CLIPPING_DEFAULT = 0.`` (deepspeedai/DeepSpeed v0.12.6 ``deepspeed/runtime/constants.py`` line
  211): unclipped.
- TinyLLaVA (TinyLLaVA/TinyLLaVA_Factory 53f12c7): ``scripts/zero2.json`` / ``zero3.json`` likewise without the
  key; ``pyproject.toml`` lines 18 and 23 pin accelerate 0.27.2 (same no-op, ``accelerator.py`` lines
  2097-2100 at v0.27.2) and DeepSpeed 0.14.0 (default 0, ``constants.py`` line 215 at v0.14.0): unclipped.
- InstructBLIP as InstrAug trains it (declare-lab/InstrAug 15242ef, LAVIS fork): ``IBLIP/lavis/tasks/base_task.py``
  lines 219-232 step the optimizer (or the AMP scaler) straight after ``backward``, no clipping: unclipped.
- LLaVA-NeXT (LLaVA-VL/LLaVA-NeXT df17966): ``scripts/zero3.json`` line 36 (and ``zero2.json`` line 36) set
  ``"gradient_clipping": "auto"``, filled from the Trainer's default ``max_grad_norm`` 1.0: clipped at 1.0.

DeepSpeed 0.19.8 (installed) defaults to 1.0 (``deepspeed/runtime/constants.py`` line 203, since v0.19.3), so
the key must stay and carry ``train.max_grad_norm``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tiny_runs import CONF, ROOT, TINY, tiny_cfg, tiny_training_args

# the CPU test models, not paper configs
CPU_MODELS = (
    "auto",
    "tiny",
    "tiny_iblip",
    "tiny_next",
    "tiny_qwen2_vl",
    "tiny_qwen2_5_vl",
    "tiny_llava_onevision",
    "tiny_idefics3",
    "tiny_smolvlm",
    "tiny_internvl",
    "tiny_qwen3_vl",
)
PAPER_CONFIGS = [f"model={p.stem}" for p in sorted((CONF / "model").glob("*.yaml")) if p.stem not in CPU_MODELS] + [
    f"experiment={p.stem}"
    for p in sorted((CONF / "experiment").glob("*.yaml"))
    if p.stem.startswith(("l2t_", "instraug_"))
]
UPSTREAM_CLIPPING = {"llava": 0.0, "tinyllava": 0.0, "instructblip": 0.0, "llava_next": 1.0}


def _family(model_name: str) -> str:
    for family in ("llava_next", "tinyllava", "instructblip", "llava"):
        if model_name.startswith(family):
            return family
    raise AssertionError(f"no upstream schedule known for model {model_name}")


def _composed(override: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[override], return_hydra_config=True)
    return cfg.hydra.runtime.choices["deepspeed"], cfg


def _engine_groups() -> dict[tuple[str, float], list[str]]:
    """The paper configs by what DeepSpeed's clipping depends on: the DeepSpeed group and train.max_grad_norm."""
    groups: dict[tuple[str, float], list[str]] = {}
    for override in PAPER_CONFIGS:
        choice, cfg = _composed(override)
        groups.setdefault((choice, float(cfg.train.max_grad_norm)), []).append(override)
    return groups


def test_every_paper_config_is_covered():
    assert len(PAPER_CONFIGS) == 36  # 11 model configs, 17 L2T and 8 InstrAug experiments


@pytest.mark.parametrize("override", PAPER_CONFIGS)
def test_paper_config_clips_as_upstream(override):
    choice, cfg = _composed(override)
    expected = UPSTREAM_CLIPPING[_family(cfg.model.name)]
    assert cfg.deepspeed.enabled and choice in ("zero2", "zero3")
    assert cfg.deepspeed.config.gradient_clipping == "auto"  # filled from train.max_grad_norm, never absent
    assert cfg.train.max_grad_norm == expected


def test_offloading_keeps_the_schedule_s_clipping_optimizer_and_schedule():
    """LLaVA's ``scripts/zero3_offload.json`` (c121f04) differs from its ``zero3.json`` in more than offloading:
    ``"gradient_clipping": "auto"`` (line 51: HF's max_grad_norm default, 1.0) and its own ``optimizer`` (AdamW,
    lines 13-21) and ``scheduler`` (``WarmupLR``, lines 22-29, which HF's Trainer then uses in place of the cosine
    schedule). ``deepspeed=zero3_offload`` here changes where states live only: the schedule's clipping (0),
    optimizer and cosine schedule stay."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = compose("train", overrides=["model=llava7b", "deepspeed=zero3"])
        offload = compose("train", overrides=["model=llava7b", "deepspeed=zero3_offload"])
    a, b = (OmegaConf.to_container(c.deepspeed.config, resolve=True) for c in (base, offload))
    assert b["zero_optimization"].pop("offload_optimizer") == {"device": "cpu", "pin_memory": True}
    assert b["zero_optimization"].pop("offload_param") == {"device": "cpu", "pin_memory": True}
    assert a == b and "scheduler" not in b and "optimizer" not in b
    assert offload.train.max_grad_norm == 0.0 and offload.train.lr_scheduler_type == "cosine"


def _ds_env() -> dict:
    from tiny_runs import one_process_ds_env

    return {**one_process_ds_env(), "WANDB_MODE": "disabled"}


@pytest.mark.integration
@pytest.mark.parametrize("group", sorted(_engine_groups()), ids=lambda g: f"{g[0]}-clip{g[1]}")
def test_the_engine_clips_as_the_paper_schedules_say(tmp_path, demo_data, group):
    """The tiny model through train.py on CPU with a paper config's DeepSpeed group and train.max_grad_norm: the
    engine DeepSpeed builds reports that clipping (``DeepSpeedEngine.gradient_clipping()``)."""
    choice, clipping = group
    configs = _engine_groups()[group]
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "train.py",
        *TINY,
        f"data.root={demo_data}",
        f"paths.data_dir={tmp_path}",
        f"hydra.run.dir={run_dir}",
        f"deepspeed={choice}",
        f"train.max_grad_norm={clipping}",
        "train.max_steps=1",
        "+train.ddp_backend=gloo",
    ]
    proc = subprocess.run(
        cmd, cwd=ROOT, env={**os.environ, **_ds_env()}, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ran = OmegaConf.load(run_dir / "config.yaml")
    for override in configs:  # the run's DeepSpeed config is each of these configs' own
        _, cfg = _composed(override)
        assert OmegaConf.to_container(ran.deepspeed) == OmegaConf.to_container(cfg.deepspeed, resolve=True), override
        assert UPSTREAM_CLIPPING[_family(cfg.model.name)] == clipping, override
    metrics = json.loads((run_dir / "train_metrics.json").read_text())
    assert metrics["zero_stage"] == int(choice[-1]) and metrics["steps"] == 1
    assert metrics["gradient_clipping"] == clipping, configs


def test_a_deepspeed_config_without_gradient_clipping_is_refused(tmp_path, demo_data):
    """Without the key DeepSpeed 0.19.8 clips at 1.0 whatever train.max_grad_norm says."""
    from deepspeed.runtime.config import get_gradient_clipping

    assert get_gradient_clipping({}) == 1.0
    cfg = tiny_cfg(
        demo_data, tmp_path, "deepspeed=zero3", "~deepspeed.config.gradient_clipping", "train.max_grad_norm=0.0"
    )
    with pytest.raises(
        ValueError,
        match=r"deepspeed.config has no gradient_clipping.*train.max_grad_norm=0.0.*"
        r"deepspeed.config.gradient_clipping=auto",
    ):
        tiny_training_args(cfg, tmp_path)
