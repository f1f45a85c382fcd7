"""The label cache under a full disk and under two jobs building the same entry at once.

A full disk (``ENOSPC`` injected where the Arrow data is written) stops the run with one line naming the entry
and saying to free space; no entry and no temporary folder is left, and the rerun labels as an undisturbed
build does. Two processes (forked from this one) that both label the same entry, held together by a barrier
until both have their labels in their own temporary folders, both rename at once: one wins, the other drops
its copy, and both read the one whole entry, equal to a single build's labels."""

from __future__ import annotations

import errno
import json
import multiprocessing
from pathlib import Path

import pytest
from tiny_runs import labelled_tiny

from lit.files import DiskFull

pytestmark = pytest.mark.integration


def _build(records_path: Path, tokenizer, cache: Path):
    return labelled_tiny(records_path, tokenizer, cache, workers=1)


def _labels(dataset) -> list[list[list[int]]]:
    return [[dataset[i]["input_ids"].tolist(), dataset[i]["labels"].tolist()] for i in range(len(dataset))]


@pytest.fixture
def records(demo_data) -> Path:
    """Twelve demo records, in the demo folder (their images are relative to it)."""
    path = demo_data / "label_faults.json"
    path.write_text(json.dumps(json.loads((demo_data / "train.json").read_text())[:12]))
    return path


def test_a_full_disk_while_labelling_stops_in_one_line_and_leaves_nothing(
    records, bpe_tokenizer, tmp_path, monkeypatch
):
    from datasets import Dataset

    reference = _labels(_build(records, bpe_tokenizer, tmp_path / "reference"))
    save = Dataset.save_to_disk

    def fills_the_disk(self, dataset_path, *args, **kwargs):
        save(self, dataset_path, *args, **kwargs)
        (arrow,) = Path(dataset_path).glob("*.arrow")
        arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 3])  # what fit
        raise OSError(errno.ENOSPC, "No space left on device", str(arrow))

    monkeypatch.setattr(Dataset, "save_to_disk", fills_the_disk)
    cache = tmp_path / "cache"
    with pytest.raises(DiskFull) as stop:
        _build(records, bpe_tokenizer, cache)
    message = str(stop.value)
    assert "\n" not in message and message.startswith("no space left on the device while writing the label cache")
    assert f"entry {cache}/labels_" in message and "temporary folder was removed" in message
    assert "free space" in message
    assert list(cache.iterdir()) == []  # no entry, no temporary folder
    monkeypatch.undo()  # space freed
    assert _labels(_build(records, bpe_tokenizer, cache)) == reference
    assert [p.name.startswith("labels_") and "." not in p.name for p in cache.iterdir()] == [True]


def _race(records: Path, tokenizer, cache: Path, barrier, out: Path) -> None:
    import lit.data.label_cache as label_cache

    build = label_cache.build_labels

    def build_then_wait(records_, folder, *args, **kwargs):
        build(records_, folder, *args, **kwargs)
        barrier.wait(timeout=60)  # both have labelled into their own temporary folder: now both rename

    label_cache.build_labels = build_then_wait
    out.write_text(json.dumps(_labels(_build(records, tokenizer, cache))))


def test_two_processes_building_the_same_entry_end_with_one_whole_entry(records, bpe_tokenizer, tmp_path):
    from lit.data.label_cache import entry_problem

    reference = _labels(_build(records, bpe_tokenizer, tmp_path / "reference"))
    cache, fork = tmp_path / "cache", multiprocessing.get_context("fork")
    barrier = fork.Barrier(2)
    procs = [
        fork.Process(target=_race, args=(records, bpe_tokenizer, cache, barrier, tmp_path / f"labels{i}.json"))
        for i in range(2)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [proc.exitcode for proc in procs] == [0, 0]
    (entry,) = cache.iterdir()  # one entry, no temporary folder of the process that lost the rename
    assert entry.name.startswith("labels_") and entry_problem(entry) is None
    for i in range(2):
        assert json.loads((tmp_path / f"labels{i}.json").read_text()) == reference
    assert _labels(_build(records, bpe_tokenizer, cache)) == reference


def _killed_while_labelling(records_path: Path, tokenizer, cache: Path) -> None:
    import os

    import lit.data.label_cache as label_cache

    def dies_halfway(records, out, *args, **kwargs):
        Path(out).mkdir(parents=True)
        (Path(out) / "data-00000-of-00001.arrow").write_bytes(b"half an Arrow file")
        os._exit(137)  # killed while its labels are in its temporary folder

    label_cache.build_labels = dies_halfway
    _build(records_path, tokenizer, cache)


def test_the_folder_a_killed_build_left_is_removed_by_the_next_build(records, bpe_tokenizer, tmp_path, caplog):
    """A build killed while labelling leaves ``labels_<key>.tmp-<host>-<pid>``: the next build on that host removes
    it (its process is gone), logged, and labels as an undisturbed build; the folder of a build that is still
    running (a live process) or of one on another host is left alone."""
    import os
    import socket

    reference = _labels(_build(records, bpe_tokenizer, tmp_path / "reference"))
    cache = tmp_path / "cache"
    proc = multiprocessing.get_context("fork").Process(
        target=_killed_while_labelling, args=(records, bpe_tokenizer, cache)
    )
    proc.start()
    proc.join(120)
    assert proc.exitcode == 137
    (left,) = cache.glob("labels_*.tmp-*")
    assert left.name.endswith(f".tmp-{socket.gethostname()}-{proc.pid}")
    running = left.with_name(left.name.rsplit(".tmp-", 1)[0] + f".tmp-{socket.gethostname()}-{os.getppid()}")
    elsewhere = left.with_name(left.name.rsplit(".tmp-", 1)[0] + f".tmp-another-node-{proc.pid}")
    running.mkdir()
    elsewhere.mkdir()
    with caplog.at_level("WARNING", logger="lit.data.label_cache"):
        rebuilt = _build(records, bpe_tokenizer, cache)
    assert f"removed {left}, left by a labelling run that was killed (process {proc.pid} is gone)" in caplog.text
    assert not left.exists() and running.is_dir() and elsewhere.is_dir()
    assert _labels(rebuilt) == reference
    assert sorted(p.name for p in cache.iterdir() if ".tmp-" in p.name) == sorted([running.name, elsewhere.name])
