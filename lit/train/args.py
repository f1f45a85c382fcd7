"""The ``train`` and ``deepspeed`` groups as Hugging Face ``TrainingArguments`` (plus ``lr_schedule``), where
a run resumes (the newest checkpoint written completely), and the one-line stop of a save that fills the disk."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from transformers import TrainerCallback, TrainingArguments
from transformers.trainer_utils import TrainOutput

from lit.files import disk_full, is_disk_full
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


CHECKPOINT = re.compile(r"checkpoint-(\d+)")


def _safetensors_problem(path: Path) -> str | None:
    """Why a ``.safetensors`` file is not whole: its header (8-byte length, then JSON with each tensor's byte
    range) must parse and its data must end exactly at the end of the file."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return f"{path.name} is {size} bytes, shorter than a header"
        n = int.from_bytes(head, "little")
        if 8 + n > size:
            return f"{path.name} is cut off inside its header ({size} bytes)"
        try:
            header = json.loads(fh.read(n))
        except ValueError:
            return f"{path.name} has a header that is not JSON"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    return None if 8 + n + end == size else f"{path.name} is {size} bytes where its header needs {8 + n + end}"


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``checkpoint-N`` was not written completely, None if it was. The Trainer writes the weights, then the
    optimizer, scheduler and RNG states, then ``trainer_state.json`` last: a save cut short (a kill, a full disk)
    leaves no ``trainer_state.json``, one cut off, or a file before it cut off. So: ``trainer_state.json`` must
    parse and be at step N; every safetensors file must be whole (header and length), every torch file (a zip)
    must have its central directory (written last), every shard a weights index names must be there, and
    DeepSpeed's ``latest`` must name a folder that exists."""
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "it has no trainer_state.json, which the Trainer writes last: the save was cut short"
    try:
        step = json.loads(state.read_text())["global_step"]
    except (ValueError, KeyError, TypeError):
        return "its trainer_state.json is cut off or not the Trainer's state: the save was cut short"
    match = CHECKPOINT.fullmatch(folder.name)
    if match and step != int(match.group(1)):
        return f"its trainer_state.json is at step {step}, not {match.group(1)}"
    for index in folder.glob("*.index.json"):
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError):
            return f"{index.name} is cut off or not a weights index"
        missing = sorted(s for s in shards if not (folder / s).is_file())
        if missing:
            return f"{index.name} names {missing[0]}, which is not there"
    latest = folder / "latest"  # DeepSpeed's tag of its engine checkpoint (global_stepN/)
    if latest.is_file() and not (folder / latest.read_text().strip()).is_dir():
        return f"'latest' names {latest.read_text().strip()!r}, which is not there"
    for path in sorted(folder.rglob("*")):
        if path.suffix == ".safetensors":
            problem = _safetensors_problem(path)
        elif path.suffix in (".pt", ".pth", ".bin") and path.is_file():
            with open(path, "rb") as fh:
                zipped = fh.read(2) == b"PK"  # torch.save's zip format; the legacy pickle format is not checked
            empty = path.stat().st_size == 0
            problem = f"{path.name} is empty" if empty else None
            if zipped and not zipfile.is_zipfile(path):
                problem = f"{path.relative_to(folder)} is cut off (no zip directory at its end)"
        else:
            continue
        if problem:
            return problem
    return None


def newest_complete_checkpoint(output_dir: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest complete ``checkpoint-N`` in ``output_dir`` (None: none), and each newer one with its problem."""
    found = [p for p in Path(output_dir).glob("checkpoint-*") if CHECKPOINT.fullmatch(p.name) and p.is_dir()]
    skipped = []
    for folder in sorted(found, key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder, skipped
        skipped.append((folder, problem))
    return None, skipped


def last_complete_checkpoint(output_dir: Path, required: bool = True) -> str | None:
    """The newest ``checkpoint-N`` that was written completely (``checkpoint_problem``): a run killed while
    saving, or stopped by a full disk, leaves a partial one, which the Trainer would pick and fail on; each newer
    one skipped is logged with why. None if there is none and ``required`` is false (``schedule.resume=auto``: a
    requeued job resumes, a first start starts)."""
    newest, skipped = newest_complete_checkpoint(output_dir)
    for folder, problem in skipped:
        log.warning("skipping incomplete checkpoint %s: %s", folder, problem)
    if newest is not None:
        log.info("resuming from %s", newest)
        return str(newest)
    if not required:
        log.info("no complete checkpoint in %s: starting from scratch", output_dir)
        return None
    raise FileNotFoundError(
        f"schedule.resume=true but {output_dir} holds no complete checkpoint-* folder; pass "
        "the run directory of the interrupted run as hydra.run.dir=<dir>"
    )


@contextlib.contextmanager
def stop_if_a_save_fills_the_disk(trainer, output_dir: Path, final: Path | None = None):
    """Turn a full disk while the block saves a checkpoint into one line (``lit.files.DiskFull``) naming it.
    The partial folder is removed first (by the main process), so nothing half-written stays under a checkpoint's
    name: ``checkpoint-N`` of the step being saved if it is incomplete, or ``final`` (the run's ``checkpoint/``)
    when the block writes it. The rerun (``schedule.resume=auto``) resumes from the last complete checkpoint."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - safetensors, torch and json each raise their own type
        if not is_disk_full(err, output_dir):
            raise
        folder = final or Path(output_dir) / f"checkpoint-{trainer.state.global_step}"
        main = trainer.is_world_process_zero()
        removed = folder.is_dir() and (final is not None or checkpoint_problem(folder) is not None)
        if removed and main:
            shutil.rmtree(folder, ignore_errors=True)
            if final is not None:  # a LoRA run's adapter, saved before the merged model
                shutil.rmtree(folder.with_name("checkpoint_adapter"), ignore_errors=True)
        left = "its partial folder was removed" if removed else "nothing of it was left half-written"
        if main:
            complete = newest_complete_checkpoint(output_dir)[0]
            left += f"; schedule.resume=auto continues from {complete}" if complete else "; no checkpoint-N is complete"
        raise disk_full("the checkpoint", folder, err, left) from err


class _Finished(Exception):
    """Raised before a step past ``max_steps``: the checkpoint resumed from was the last one."""


class _StopAtTheEnd(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
        if state.max_steps > 0 and state.global_step >= state.max_steps:
            raise _Finished


def train_or_restore(trainer, resume: str | None) -> TrainOutput:
    """``trainer.train(resume_from_checkpoint=resume)``, except from a checkpoint at ``max_steps`` (a run killed
    while it saved its final ``checkpoint/``, or after its last ``checkpoint-N``): the Trainer would fast-forward
    the data to that step and then take one step more before it checks ``max_steps``, so the final weights would
    not be the uninterrupted run's. Here such a checkpoint is loaded (weights, optimizer, state) and nothing is
    trained; the training loss reported is then the mean of the logged losses."""
    stop = _StopAtTheEnd()
    trainer.add_callback(stop)
    try:
        return trainer.train(resume_from_checkpoint=resume)
    except _Finished:
        state = trainer.state
        log.info("%s is at max_steps=%d: training was finished, nothing is trained again", resume, state.max_steps)
        trainer.control = trainer.callback_handler.on_train_end(trainer.args, state, trainer.control)
        losses = [h["loss"] for h in state.log_history if "loss" in h]
        return TrainOutput(state.global_step, sum(losses) / len(losses) if losses else float("nan"), {})
    finally:
        trainer.remove_callback(stop)
