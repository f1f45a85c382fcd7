"""The ``train`` and ``deepspeed`` groups as Hugging Face ``TrainingArguments`` (plus ``lr_schedule``), and where
a run resumes."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from transformers import TrainingArguments

from lit.train.schedule import SCHEDULES

log = logging.getLogger(__name__)


@dataclass
class LitTrainingArguments(TrainingArguments):
    """``TrainingArguments`` with the schedules of ``lit.train.schedule`` (``train.lr_schedule``, which then
    replaces ``lr_scheduler_type``), the warm-up's starting rate and padding-free batches (``train.padding_free``)."""

    lr_schedule: str = field(default="", metadata={"help": "'' (lr_scheduler_type) or lavis_epoch_cosine"})
    warmup_start_lr: float = field(default=0.0, metadata={"help": "the rate warm-up starts from (LAVIS warmup_lr)"})
    padding_free: bool = field(
        default=False, metadata={"help": "each micro-batch as one row without padding (lit.train.padding_free)"}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.lr_schedule and self.lr_schedule not in SCHEDULES:
            raise ValueError(
                f"unknown train.lr_schedule {self.lr_schedule!r}; known: '' (lr_scheduler_type), "
                + ", ".join(SCHEDULES)
            )


def training_args(
    train: DictConfig,
    output_dir: Path,
    *,
    schedule: DictConfig,
    deepspeed: DictConfig,
    logger: DictConfig,
    run_name: str,
    seed: int,
):
    """``TrainingArguments`` from the ``train`` group (+ the ``deepspeed`` group's config). Built before any model:
    while it lives, transformers sees ZeRO-3 (``is_deepspeed_zero3_enabled``) and builds and loads models partitioned
    under ``deepspeed.zero.Init``, so no rank ever holds the whole model. With ``schedule.global_batch_size`` set,
    gradient accumulation is derived from it, the per-device batch and the world size."""
    from lit.train.distributed import (
        init_deepspeed_comm,
        launched_world_size,
        split_global_batch,
    )

    kwargs = OmegaConf.to_container(train, resolve=True)
    world = launched_world_size()
    global_batch = schedule.global_batch_size
    if global_batch:
        configured = kwargs["per_device_train_batch_size"]
        per_device, steps = split_global_batch(global_batch, configured, world)
        if per_device != configured:
            log.info(
                "train.per_device_train_batch_size=%d x %d processes exceeds schedule.global_batch_size=%d: %d "
                "per device, %d accumulation step(s)",
                configured,
                world,
                global_batch,
                per_device,
                steps,
            )
            kwargs["per_device_train_batch_size"] = per_device
        given = kwargs.get("gradient_accumulation_steps", 1)
        if given not in (1, steps):
            raise ValueError(
                f"train.gradient_accumulation_steps={given} disagrees with schedule.global_batch_size="
                f"{global_batch} on {world} processes ({steps} steps): set one of them only "
                "(schedule.global_batch_size=null to choose the accumulation yourself)"
            )
        kwargs["gradient_accumulation_steps"] = steps
    if deepspeed.enabled:
        kwargs["deepspeed"] = deepspeed_config(deepspeed, max_grad_norm=train.get("max_grad_norm"))
    run_name = os.environ.get("WANDB_NAME") or run_name  # a recipe job names its wandb run by its job id
    args = LitTrainingArguments(
        output_dir=str(output_dir),
        report_to=list(logger.report_to),
        run_name=run_name,
        remove_unused_columns=False,
        seed=seed,
        data_seed=seed,
        **kwargs,
    )
    init_deepspeed_comm(args)
    if global_batch and args.world_size != world:
        raise RuntimeError(
            f"the launcher's environment says {world} processes but torch.distributed has "
            f"{args.world_size}: set WORLD_SIZE for every process"
        )
    log.info(
        "batch: %d per device x %d processes x %d accumulation steps = %d",
        args.per_device_train_batch_size,
        args.world_size,
        args.gradient_accumulation_steps,
        args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps,
    )
    return args


def deepspeed_config(deepspeed: DictConfig, *, max_grad_norm: float | None) -> dict:
    """``deepspeed.config`` as a dict, refused without ``gradient_clipping``: DeepSpeed then applies its own
    default (1.0 since 0.19.3, 0 before), and ``train.max_grad_norm`` would be silently ignored."""
    config = OmegaConf.to_container(deepspeed.config, resolve=True)
    if "gradient_clipping" not in config:
        raise ValueError(
            "deepspeed.config has no gradient_clipping: DeepSpeed would clip at its own default (1.0 "
            f"since 0.19.3), not at train.max_grad_norm={max_grad_norm}; set "
            "deepspeed.config.gradient_clipping=auto (filled from train.max_grad_norm, 0: no clipping)"
        )
    return config


def last_complete_checkpoint(output_dir: Path, required: bool = True) -> str | None:
    """The newest ``checkpoint-N`` that was written completely (a run killed while saving leaves a partial one,
    which the Trainer would pick and fail on); its ``trainer_state.json`` is written last. None if there is none
    and ``required`` is false (``schedule.resume=auto``: a requeued job resumes, a first start starts)."""
    found = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    complete = [p for p in found if (p / "trainer_state.json").is_file()]
    for partial in sorted(set(found) - set(complete)):
        log.warning("ignoring incomplete checkpoint %s", partial)
    if not complete and not required:
        log.info("no complete checkpoint in %s: starting from scratch", output_dir)
        return None
    if not complete:
        raise FileNotFoundError(
            f"schedule.resume=true but {output_dir} holds no complete checkpoint-* folder; pass "
            "the run directory of the interrupted run as hydra.run.dir=<dir>"
        )
    log.info("resuming from %s", complete[-1])
    return str(complete[-1])
