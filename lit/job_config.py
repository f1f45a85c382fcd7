"""Each recipe job's final config, composed as its entry point composes it, and its node shape: the GPUs per node
of every training job from the command line (``python -m lit.recipes <table> --gpus-per-node N``) with the global
batch kept through the gradient accumulation."""

from __future__ import annotations

import re

from omegaconf import DictConfig, OmegaConf

CONFIG_OF = {"train": "train", "mins_plus": "train", "evaluate": "eval", "vc": "vc", "augment": "augment"}


def compose_job(kind: str, overrides: list[str]) -> DictConfig:
    """The job's final config as its entry point composes it (``hydra.*`` overrides left out)."""
    from hydra import compose, initialize_config_dir

    from lit.paths import conf_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(CONFIG_OF[kind], overrides=[o for o in overrides if not o.startswith(("hydra.", "+hydra."))])


def compose_error(overrides: list[str], err: Exception) -> str:
    """One line for a config that does not compose, naming the override and what to do."""
    msg = str(err).strip()
    key = re.match(r"Could not override '([^']+)'", msg)
    if key:
        given = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] == key.group(1)]
        override = given[-1] if given else key.group(1)
        return (
            f"its config has no key {key.group(1)}, so the override {override} does not compose (Hydra struct "
            f"error); give it only to the jobs whose config has it: <job id or glob>:{override}"
        )
    return f"its config does not compose: {msg.splitlines()[0]}"


def batch_split(cfg: DictConfig, nodes: int, gpus: int) -> tuple[int, int, int, int]:
    """``(per-device batch, accumulation, processes, global batch)`` of a training config on ``nodes`` x ``gpus``
    (one process per GPU; one per node without GPUs), as ``lit.train.args`` derives them; ValueError if the global
    batch does not split."""
    from lit.train.distributed import split_global_batch

    world = nodes * max(gpus, 1)
    per_device = int(cfg.train.per_device_train_batch_size)
    global_batch = cfg.schedule.global_batch_size
    if not global_batch:
        accumulation = int(cfg.train.gradient_accumulation_steps)
        return per_device, accumulation, world, per_device * world * accumulation
    per_device, accumulation = split_global_batch(int(global_batch), per_device, world)
    return per_device, accumulation, world, int(global_batch)


def compose_all(todo: list) -> dict:
    """Job id -> its final composed config, or the one line saying why it does not compose."""
    configs: dict = {}
    for job in todo:
        try:
            configs[job.id] = compose_job(job.kind, job.overrides)
        except Exception as err:  # Hydra's composition errors have no common base beyond HydraException
            configs[job.id] = compose_error(job.overrides, err)
    return configs


def set_gpus_per_node(todo: list, configs: dict, gpus: int) -> dict[str, int]:
    """Give every training job ``gpus`` GPUs per node, its hours scaled to the same GPU-hours, and keep its global
    batch: where its schedule leaves ``schedule.global_batch_size`` null, it is set to the job's batch on its
    recipe GPUs, so that training derives the accumulation for the new count. Job id -> the recipe's GPUs."""
    before: dict[str, int] = {}
    for job in todo:
        r = job.resources
        old = int(r.get("gpus", 1))
        if job.kind != "train" or old == gpus:
            continue
        before[job.id] = old
        job.resources = {**r, "gpus": gpus}
        if "hours" in r and old and gpus:
            job.resources["hours"] = round(float(r["hours"]) * old / gpus, 2)
        cfg = configs.get(job.id)
        if isinstance(cfg, DictConfig) and not cfg.schedule.global_batch_size:
            per_device, accumulation, _, global_batch = batch_split(cfg, int(r.get("nodes", 1)), old)
            job.overrides.append(f"schedule.global_batch_size={global_batch}")
            OmegaConf.update(cfg, "schedule.global_batch_size", global_batch)
            if accumulation != 1:  # derived from the global batch now
                job.overrides.append("train.gradient_accumulation_steps=1")
                OmegaConf.update(cfg, "train.gradient_accumulation_steps", 1)
    return before
