"""One SFT run from a composed Hydra config: data -> tokenizer/model -> labels by scope -> Trainer -> checkpoint.

The same function runs the CPU demo (``model=tiny``) and LLaVA-1.5-7B under DeepSpeed ZeRO-3
(``model=llava7b``); only the configs differ. Returns a metrics dict (for sweeps and tests).
"""

from __future__ import annotations

import gc
import json
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from transformers import set_seed

from instraug.arm import require as require_mins_plus
from lit.data.build import build_dataset, generate_demo_data, load_training_records
from lit.data.labels import LabelSpec
from lit.files import atomic_write
from lit.mask.chat_templates import get_template
from lit.mask.mining import template_sentences, warn_if_all_template_sentences
from lit.mask.scopes import get_scope
from lit.model.build import build_model, tokenizer_for
from lit.model.checkpoint import require_pretrained, save_checkpoint
from lit.tracking import git_sha, set_logger_env
from lit.train.args import last_complete_checkpoint, stop_if_a_save_fills_the_disk, train_or_restore, training_args
from lit.train.trainer import build_trainer, part_lrs, train_metrics

log = logging.getLogger(__name__)


def write_run_files(cfg: DictConfig, output_dir: Path) -> None:
    """``config.yaml`` and ``git_sha.txt``, written once by the main process of the whole run."""
    atomic_write(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True), what="the run's config")
    atomic_write(output_dir / "git_sha.txt", git_sha() + "\n")
    log.info("run files written to %s (by the main process only)", output_dir)


def check_stage(stage: str, scope) -> None:
    if stage == "pretrain" and (scope.name != "vit" or scope.weights):
        raise ValueError(
            "schedule.stage=pretrain trains the projector on captions with the answer-only loss; "
            f"loss={scope.describe()} does not apply there (L2T changes stage 2 only): drop the loss override"
        )


@dataclass
class Prepared:
    """A run up to its Trainer: the arguments, the built model (``lit.model.build.BuiltModel``), the labelled data
    set and its audit."""

    args: object
    built: object
    dataset: object
    audit: dict


def prepare(cfg: DictConfig, output_dir: Path) -> Prepared:
    """Everything ``run`` does before training: the arguments, run files, data, model, template sentences, labels."""
    require_pretrained(cfg.model)  # before any process group, data or model: one line naming the stage-1 command
    output_dir.mkdir(parents=True, exist_ok=True)
    args = training_args(  # first: models built from here on are partitioned under ZeRO-3
        cfg.train,
        output_dir,
        schedule=cfg.schedule,
        deepspeed=cfg.deepspeed,
        logger=cfg.logger,
        run_name=cfg.run_name,
        seed=cfg.seed,
    )
    main = args.process_index == 0  # the run files are written once, by the main process of the whole run
    if main:
        write_run_files(cfg, output_dir)
    set_logger_env(cfg.logger)
    set_seed(cfg.seed)
    with args.main_process_first(local=False, desc="preparing the data"):
        if main:
            generate_demo_data(cfg.data)
            if cfg.data.get("mins_plus"):  # built by build_mins_plus.py, never by training: checked only
                require_mins_plus(cfg.data)
    records = load_training_records(cfg.data, args)
    auto = cfg.model.chat_template == "auto"  # the checkpoint's own, read once it is loaded
    template = None if auto else get_template(cfg.model.chat_template)
    scope = get_scope(cfg.loss.name, cfg.loss.weights)  # loss.weights: weighted spans, or null
    check_stage(cfg.schedule.stage, scope)

    built = build_model(
        cfg.model,
        cfg.adapter,
        template,
        args,
        tokenizer_of=partial(tokenizer_for, cfg.model, cfg.data, records, template),
    )
    template = built.template
    with args.main_process_first(local=False, desc="mining template sentences"):  # the main process writes the cache
        sentences = template_sentences(cfg.loss, scope, cfg.data.path, cfg.paths.cache_dir)
    labels = LabelSpec.of(cfg.data, chat_template=template, scope=scope, template_sentences=sentences)
    dataset = build_dataset(
        cfg.data, records, labels=labels, tokenizer=built.tokenizer, image_inputs=built.image_inputs, args=args
    )
    if main:
        warn_if_all_template_sentences(dataset.audit, cfg.loss, len(sentences))
    del records  # the examples are in the (memory-mapped) data set now; dataloader workers must not copy the list
    gc.collect()
    audit = dataset.write_audit(output_dir / "data_audit.json") if main else dataset.audit.to_json()
    log.info(
        "records used %d / %d; supervised tokens by kind %s",
        audit["n_used"],
        audit["n_records"],
        audit["supervised_tokens_by_kind"],
    )
    return Prepared(args, built, dataset, audit)


def run(cfg: DictConfig, output_dir: str | Path | None = None) -> dict:
    """Train once; writes ``checkpoint/``, ``config.yaml``, ``log_history.json``, ``data_audit.json``."""
    output_dir = Path(output_dir or cfg.output_dir)
    prepared = prepare(cfg, output_dir)
    args, built, dataset, audit = prepared.args, prepared.built, prepared.dataset, prepared.audit
    trainer = build_trainer(
        built,
        args,
        dataset,
        part_lrs=part_lrs(cfg.model, cfg.adapter),
        group_by_modality_length=cfg.schedule.group_by_modality_length,
        normalization=cfg.loss.normalization,
    )
    mode = cfg.schedule.resume  # false | true (a checkpoint must exist) | auto (if one exists)
    resume = last_complete_checkpoint(output_dir, required=mode != "auto") if mode else None
    with stop_if_a_save_fills_the_disk(trainer, output_dir):  # one line, no partial checkpoint-N left
        result = train_or_restore(trainer, resume)  # trainer.train, but never a step past max_steps after a resume
    with stop_if_a_save_fills_the_disk(trainer, output_dir, final=output_dir / "checkpoint"):
        save_checkpoint(trainer, built, built.template, cfg.adapter, cfg.model.dtype, output_dir)
    metrics = train_metrics(trainer, result, audit)
    if args.process_index == 0:
        atomic_write(output_dir / "log_history.json", json.dumps(trainer.state.log_history, indent=1))
        atomic_write(output_dir / "train_metrics.json", json.dumps(metrics, indent=1))  # marks the run done: last
    return metrics
