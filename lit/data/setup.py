"""The ``data`` group's part of a training run: data on disk, the records, the mined templates, the labelled set.

``build_dataset`` turns the records into the supervised data set that training reads: token ids, labels under
the loss scope (with the mined task templates where the scope drops them), image inputs. One process per node
labels, in parallel over the node's cores, while the others wait and then memory-map the result.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

log = logging.getLogger(__name__)


def generate_demo_data(cfg: DictConfig) -> None:
    """Generate the demo data if asked and missing, or generated with other settings. Jobs that start together
    (a recipe's training jobs on Slurm) take turns on a lock file beside the data folder: one generates, the
    others then find the data complete."""
    import fcntl

    from lit.data.synthetic import ensure, is_current

    root = Path(cfg.data.root)
    if not cfg.data.get("generate") or is_current(cfg.data):
        return
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.generate.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not is_current(cfg.data):
            log.info("generating the demo data set in %s", root)
            ensure(cfg.data)


def prepare_data(cfg: DictConfig) -> None:
    """The demo data if asked and missing. A MIns+ set (``data.mins_plus``) is not built here: it must exist,
    built from the inputs the config names, by ``build_mins_plus.py`` (``instraug.arm``)."""
    generate_demo_data(cfg)
    if cfg.data.get("mins_plus"):
        from instraug.arm import require

        require(cfg)


def load_training_records(cfg: DictConfig, args) -> list[dict] | None:
    """The records, on the processes that label them. The list (mix-665K: GBs as Python objects) is held by
    the process that labels: with a label cache, one per node; the others read the labelled set the main
    process leaves in the cache (``None`` here)."""
    from lit.data.dataset import check_image_root
    from lit.data.records import load_records

    if args.local_process_index != 0 and cfg.label_cache_dir:
        return None
    records = load_records(cfg.data.path)
    check_image_root(records, cfg.data.image_root)  # before any model is loaded
    return records


def _templates(cfg: DictConfig, scope, args) -> frozenset[str]:
    """The task-template sentences the scope keeps out of the loss: the loss config's file, or mined from
    the training corpus (by the main process, which writes the cache the others read)."""
    from lit.mask.mining import TemplateSet, mine_file

    if not scope.uses_templates:
        return frozenset()
    t = cfg.loss.templates
    with args.main_process_first(local=False, desc="mining templates"):
        tset = TemplateSet.load(t.file) if t.file else mine_file(
            cfg.data.path, Path(cfg.paths.cache_dir) / f"templates_{Path(cfg.data.path).stem}.json",
            min_share=t.min_share, min_count=t.min_count, top_k=t.top_k)
    log.info("%d template sentences masked: %s", len(tset.sentences), sorted(tset.sentences)[:5])
    return tset.sentences


def build_dataset(cfg: DictConfig, records: list[dict] | None, *, tokenizer, template, scope, image_inputs, args):
    """The labelled, memory-mapped training set (``lit.data.dataset.SupervisedDataset``)."""
    from lit.data.label_cache import labelled_dataset

    templates = _templates(cfg, scope, args)
    # one process per node labels (over the node's cores) while the others wait, then all memory-map the result
    with args.main_process_first(local=True, desc="labelling the data"):
        dataset = labelled_dataset(records, cfg.data.path, cfg.label_cache_dir, image_root=cfg.data.image_root,
                                   tokenizer=tokenizer, template=template, scope=scope, image_inputs=image_inputs,
                                   max_length=cfg.data.max_length, templates=templates,
                                   on_invalid=cfg.data.on_invalid, too_long=cfg.data.too_long,
                                   workers=cfg.get("label_workers"))
    if scope.uses_templates and args.process_index == 0:
        warn_if_all_templates(dataset.audit, cfg.loss.templates, len(templates))
    return dataset


ALL_TEMPLATES_SHARE = 0.95  # template tokens / instruction tokens from which `lit` is (nearly) `vit`


def warn_if_all_templates(audit, settings, n_templates: int) -> float | None:
    """Warn once when the template sentences cover (nearly) every instruction token: the ``lit`` arm then
    supervises the responses only, like ``vit``, and the ablation ladder has one rung less. Returns the share."""
    share = audit.template_share()
    if share is not None and share >= ALL_TEMPLATES_SHARE:
        log.warning("loss=lit: the %d template sentences cover %.1f%% of the instruction tokens, so `lit` supervises "
                    "(almost) only the responses, as `vit` does; raise loss.templates.min_share (now %s, "
                    "conf/loss/lit.yaml) or set loss.templates.top_k / loss.templates.file", n_templates, 100 * share,
                    settings.get("min_share"))
    return share
