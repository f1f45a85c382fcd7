"""The ``data`` group's part of a training run: data on disk, the records, the labelled set.

``build_dataset`` turns the records into the supervised data set that training reads: token ids, labels by a
``LabelSpec`` (``lit.data.labels``), image inputs. One process per node labels, in parallel over the node's
cores, while the others wait and then memory-map the result. Every function here takes the ``data`` group
(``cfg.data``), never the whole config.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

log = logging.getLogger(__name__)


def generate_demo_data(data: DictConfig) -> None:
    """Generate the demo data if asked and missing, or generated with other settings. Jobs that start together
    (a recipe's training jobs on Slurm) take turns on a lock file beside the data folder: one generates, the
    others then find the data complete."""
    import fcntl

    from lit.data.synthetic import ensure, is_current

    root = Path(data.root)
    if not data.get("generate") or is_current(data):
        return
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.generate.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not is_current(data):
            log.info("generating the demo data set in %s", root)
            ensure(data)


def load_training_records(data: DictConfig, args) -> list[dict] | None:
    """The records, on the processes that label them. The list (mix-665K: GBs as Python objects) is held by
    the process that labels: with a label cache, one per node; the others read the labelled set the main
    process leaves in the cache (``None`` here)."""
    from lit.data.dataset import check_image_root
    from lit.records import load_records

    if args.local_process_index != 0 and data.label_cache_dir:
        return None
    records = load_records(data.path)
    check_image_root(records, data.image_root)  # before any model is loaded
    return records


def build_dataset(data: DictConfig, records: list[dict] | None, *, labels, tokenizer, image_inputs, args):
    """The labelled, memory-mapped training set (``lit.data.dataset.SupervisedDataset``) of ``data.path``,
    labelled by ``labels`` (a ``LabelSpec``) and cached in ``data.label_cache_dir``."""
    from lit.data.label_cache import labelled_dataset

    # one process per node labels (over the node's cores) while the others wait, then all memory-map the result
    with args.main_process_first(local=True, desc="labelling the data"):
        return labelled_dataset(
            records,
            data.path,
            data.label_cache_dir,
            labels,
            tokenizer=tokenizer,
            image_inputs=image_inputs,
            workers=data.label_workers,
        )
