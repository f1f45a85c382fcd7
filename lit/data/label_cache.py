"""An on-disk cache of the labelled data set (Hugging Face ``datasets``, Arrow, memory-mapped).

Tokenizing and labelling LLaVA-mix-665K takes minutes; a second run with the same inputs reads the
result back instead. The cache key covers everything the labels depend on: the data file's bytes, the
tokenizer (its full serialisation), the label settings (``lit.data.labels.LabelSpec``: chat template, mask
scope, template sentences, max_length / too_long / on_invalid, image root), how images become positions
(``ImageInputs.spec``), and the source of the code that builds labels (so a change there invalidates old
entries). Entries live in ``<cache_dir>/labels_<key>/`` (``data/`` Arrow files + ``audit.json``) and are written
under a temporary name and renamed, so ranks (or jobs) that build at the same time never read a half-written
entry: the first rename wins and the others, whose labels are the same, drop theirs. A build that fails (a full
disk: one line naming the entry, ``lit.files.DiskFull``) removes its temporary folder; the folder of a build that
was killed (``labels_<key>.tmp-<host>-<pid>``, its process gone) is removed by the next build on that host
(``remove_abandoned``).
An entry damaged afterwards (an Arrow file cut short by a crash or a full disk, emptied or removed) is found
before use (``entry_problem``), logged with its reason and labelled again.

A missing entry is labelled in shards by forked worker processes (``workers``, default: every core this
process may use), and the run then trains from the memory-mapped entry, never from an in-memory list, so
dataloader workers share the pages instead of copying Python objects.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import shutil
import socket
from pathlib import Path

from lit.data.labels import LabelSpec
from lit.files import disk_full, file_sha256, is_disk_full

log = logging.getLogger(__name__)
MIN_SHARD = 2000  # records per labelling worker at least: below that, forking costs more than it saves
# The code that decides the labels, relative to the ``lit`` package: a change to any of it invalidates the cache.
LABEL_CODE = (
    "mask/chat_templates.py",
    "data/dataset.py",
    "data/labels.py",
    "data/image_inputs.py",
    "mask/scopes.py",
    "records.py",
    "mask/render.py",
    "mask/mining.py",
)


def _tokenizer_state(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is not None:  # without the truncation/padding a previous call left on the backend: not labelling state
        state = json.loads(backend.to_str())
        state.pop("truncation", None), state.pop("padding", None)
        body = json.dumps(state, sort_keys=True)
    else:
        body = json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return body + json.dumps(
        {
            "specials": tokenizer.all_special_tokens,
            "added": sorted(tokenizer.get_added_vocab().items()),
            "cls": type(tokenizer).__name__,
            "bos": getattr(tokenizer, "add_bos_token", None),
        }
    )


def fingerprint(data_path: str | Path, spec: LabelSpec, *, tokenizer, image_inputs) -> str:
    """The cache key of labelling ``data_path`` by ``spec`` with ``tokenizer`` and ``image_inputs``: the data
    file's bytes, the label code, the tokenizer, the spec (``LabelSpec.key``) and the image inputs' spec."""
    h = hashlib.sha256(file_sha256(data_path).encode())
    code_dir = Path(__file__).resolve().parent.parent
    for name in LABEL_CODE:
        h.update((code_dir / name).read_bytes())
    h.update(_tokenizer_state(tokenizer).encode())
    h.update(json.dumps({**spec.key(), "image_inputs": image_inputs.spec()}, sort_keys=True, default=str).encode())
    return h.hexdigest()[:20]


def available_cores() -> int:
    """The cores this process may run on (a SLURM allocation's, not the whole node's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


_SHARD_INPUT: tuple = ()  # (records, spec, tokenizer, image_inputs, progress) handed to forked workers unpickled


def _label_shard(job: tuple[int, int, int, str]):
    from lit.data.dataset import SupervisedDataset
    from lit.records import RecordError

    index, start, stop, folder = job
    records, spec, tokenizer, image_inputs, progress = _SHARD_INPUT
    try:
        SupervisedDataset(
            records[start:stop],
            spec,
            tokenizer,
            image_inputs,
            first_index=start,
            allow_empty=True,
            progress=progress and index == 0,
        ).save_labels(folder)
    except RecordError as err:  # its (id, reason) constructor does not survive pickling
        return err.record_id, err.reason
    return None


def build_labels(
    records: list[dict],
    folder: str | Path,
    spec: LabelSpec,
    tokenizer,
    image_inputs,
    *,
    workers: int | None = None,
    min_shard: int = MIN_SHARD,
    progress: bool = True,
) -> None:
    """Label ``records`` by ``spec`` into ``folder`` (``save_labels``' layout) with up to ``workers`` processes,
    each labelling a contiguous shard; shards are joined in file order, audits summed."""
    from datasets import concatenate_datasets, load_from_disk

    from lit.data.dataset import Audit, SupervisedDataset
    from lit.records import RecordError

    folder = Path(folder)
    n_proc = max(1, min(workers or available_cores(), math.ceil(len(records) / max(min_shard, 1))))
    if n_proc == 1:
        SupervisedDataset(records, spec, tokenizer, image_inputs, progress=progress).save_labels(folder)
        return
    global _SHARD_INPUT
    size = math.ceil(len(records) / n_proc)
    jobs = [
        (i, a, min(a + size, len(records)), str(folder / "shards" / f"{i:04d}"))
        for i, a in enumerate(range(0, len(records), size))
    ]
    log.info("labelling %d records with %d processes", len(records), len(jobs))
    _SHARD_INPUT = (records, spec, tokenizer, image_inputs, progress)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the workers' tokenizers run single-threaded
    try:
        with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
            errors = pool.map(_label_shard, jobs, chunksize=1)
    finally:
        _SHARD_INPUT = ()
    for error in errors:
        if error is not None:
            raise RecordError(*error)
    audit, parts = Audit(), []
    for _, _, _, shard in jobs:
        report = json.loads((Path(shard) / "audit.json").read_text())
        audit.n_records += report["n_records"]
        audit.skipped += report["skipped"]
        audit.truncated += report["truncated"]
        audit.supervised_by_kind.update(report["supervised_tokens_by_kind"])
        audit.tokens_by_kind.update(report["tokens_by_kind"])
        if (Path(shard) / "data").is_dir():
            parts.append(load_from_disk(str(Path(shard) / "data")))
    if not parts:
        raise ValueError(f"no usable records out of {len(records)}; first problems: {audit.skipped[:3]}")
    concatenate_datasets(parts).save_to_disk(str(folder / "data"))
    (folder / "audit.json").write_text(json.dumps(audit.to_json(), default=str))
    shutil.rmtree(folder / "shards")


def entry_problem(entry: Path) -> str | None:
    """What is wrong with a cache entry that has its ``audit.json`` (None: it reads back whole): its Arrow data must
    load, hold the audit's number of used records, and yield its last row."""
    from datasets import load_from_disk

    try:
        n_used = json.loads((entry / "audit.json").read_text())["n_used"]
        if not n_used:
            return None  # an entry of no usable record has no data folder
        table = load_from_disk(str(entry / "data"))
        if len(table) != n_used:
            return f"{len(table)} rows where its audit counts {n_used} used records"
        table[len(table) - 1]
    except Exception as err:  # noqa: BLE001 - a damaged file fails in many ways (Arrow, OS, JSON, missing keys)
        return f"{type(err).__name__}: {err}"
    return None


def remove_abandoned(entry: Path) -> list[Path]:
    """Remove the temporary folders of ``entry`` that builds on this host left when they were killed (their process
    is gone), logged; a build still running, or one on another host, is left alone. The folders removed."""
    host = socket.gethostname()
    removed = []
    for tmp in entry.parent.glob(f"{entry.name}.tmp-{host}-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        log.warning("removed %s, left by a labelling run that was killed (process %s is gone)", tmp, pid)
        removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def labelled_dataset(
    records: list[dict] | None,
    data_path: str | Path,
    cache_dir: str | Path | None,
    spec: LabelSpec,
    *,
    tokenizer,
    image_inputs,
    workers: int | None = None,
    min_shard: int = MIN_SHARD,
    progress: bool = True,
):
    """A ``SupervisedDataset`` of the records of ``data_path`` labelled by ``spec`` (``records``: already read, or
    None to read them only if they must be labelled): read from the cache, else labelled into it and then read."""
    from lit.data.dataset import SupervisedDataset
    from lit.records import load_records

    if not cache_dir:
        return SupervisedDataset(
            records if records is not None else load_records(data_path),
            spec,
            tokenizer,
            image_inputs,
            progress=progress,
        )
    entry = Path(cache_dir) / f"labels_{fingerprint(data_path, spec, tokenizer=tokenizer, image_inputs=image_inputs)}"
    problem = entry_problem(entry) if (entry / "audit.json").is_file() else None
    if problem:  # e.g. a file truncated by a crash or a full disk after the entry was complete: labelled again
        log.warning("label cache entry %s is damaged (%s): labelling again", entry, problem)
        damaged = entry.with_name(f"{entry.name}.damaged-{os.getpid()}")
        try:
            entry.rename(damaged)
            shutil.rmtree(damaged, ignore_errors=True)
        except OSError:  # another process moved it first
            pass
    if (entry / "audit.json").is_file():
        log.info("labels read from the cache %s", entry)
    else:
        remove_abandoned(entry)
        tmp = entry.with_name(f"{entry.name}.tmp-{socket.gethostname()}-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            build_labels(
                records if records is not None else load_records(data_path),
                tmp,
                spec,
                tokenizer,
                image_inputs,
                workers=workers,
                min_shard=min_shard,
                progress=progress,
            )
        except BaseException as err:  # an error, a full disk, Ctrl-C: no temporary folder left to fill the disk
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(err, Exception) and is_disk_full(err, tmp):
                left = "its temporary folder was removed, the cache holds no part of it"
                raise disk_full("the label cache entry", entry, err, left) from err
            raise
        try:
            tmp.rename(entry)
            log.info("labels cached in %s", entry)
        except OSError:  # another rank finished first: its entry is the same
            shutil.rmtree(tmp, ignore_errors=True)
    return SupervisedDataset.load_labels(entry, spec, tokenizer, image_inputs)
