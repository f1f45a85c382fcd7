"""What a run needs to know about its processes before anything is built: the world size (from the launcher's
environment) and the gradient accumulation that makes the schedule's global batch on that many processes."""

from __future__ import annotations

import os


def launched_world_size() -> int:
    """Processes in this run as the launcher set them (torchrun / deepspeed / accelerate: ``WORLD_SIZE``;
    ``srun`` with one task per GPU: ``SLURM_NTASKS``); 1 for a plain ``python train.py``."""
    for name in ("WORLD_SIZE", "SLURM_NTASKS"):
        if os.environ.get(name):
            return int(os.environ[name])
    return 1


def accumulation_steps(global_batch_size: int, per_device: int, world_size: int) -> int:
    """Gradient accumulation steps so that ``per_device`` x ``world_size`` x steps == ``global_batch_size``;
    a clear error, saying what to set, when no whole number of steps does that."""
    per_step = per_device * world_size
    if global_batch_size <= 0 or per_device <= 0:
        raise ValueError(
            f"schedule.global_batch_size ({global_batch_size}) and train.per_device_train_batch_size "
            f"({per_device}) must be positive"
        )
    if global_batch_size % per_step:
        fits = [b for b in range(per_device, 0, -1) if global_batch_size % (b * world_size) == 0]
        hint = (
            f"set train.per_device_train_batch_size={fits[0]}"
            if fits
            else f"run on a number of processes that divides {global_batch_size}"
        )
        raise ValueError(
            f"schedule.global_batch_size={global_batch_size} is not a multiple of "
            f"per_device_train_batch_size {per_device} x world size {world_size} = {per_step}: {hint}, "
            "or change schedule.global_batch_size "
            "(null: use train.gradient_accumulation_steps as given)"
        )
    return global_batch_size // per_step


def split_global_batch(global_batch_size: int, per_device: int, world_size: int) -> tuple[int, int]:
    """``(per-device batch, accumulation steps)`` that make exactly ``global_batch_size`` on ``world_size``
    processes. The configured ``per_device`` is kept where it fits; where ``per_device`` x ``world_size`` alone
    exceeds the global batch (a 16-GPU run of an 8-GPU schedule), the per-device batch becomes the global batch's
    share of each process, with no accumulation. A clear error where no whole split exists."""
    if global_batch_size > 0 and per_device * world_size > global_batch_size:
        if global_batch_size % world_size:
            raise ValueError(
                f"schedule.global_batch_size={global_batch_size} cannot be split evenly over "
                f"{world_size} processes: run on a number of processes that divides {global_batch_size}, "
                "or change schedule.global_batch_size (null: use train.per_device_train_batch_size and "
                "train.gradient_accumulation_steps as given)"
            )
        return global_batch_size // world_size, 1
    return per_device, accumulation_steps(global_batch_size, per_device, world_size)


def init_deepspeed_comm(args) -> None:
    """Make DeepSpeed's communication layer wrap the process group ``TrainingArguments`` set up, so that
    ``deepspeed.zero.Init`` (models built under ZeRO-3) sees the real world size. On GPUs accelerate does
    this itself; on CPU (``use_cpu``, gloo) it leaves it to ``deepspeed.initialize``, which comes too late."""
    if not args.deepspeed:
        return
    import deepspeed.comm as ds_comm
    import torch.distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized() and not ds_comm.is_initialized():
        ds_comm.init_distributed(dist_backend=torch.distributed.get_backend(), auto_mpi_discovery=False)
