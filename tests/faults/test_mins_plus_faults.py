"""A MIns+ build under a full disk and under two jobs building the same set at once.

A full disk (``ENOSPC`` injected at the write of one of the set's files) stops the build with one line naming
the set and saying to free space, and leaves none of its files (no set without its manifest, no temporary); the
rerun writes the undisturbed set byte for byte. Two processes (forked from this one, released together by a
barrier, the second half a second later) build the same set while the first holds its files without a manifest
for a second: the second waits on the build lock and then uses the whole set, so both return it, equal to a
single build's."""

from __future__ import annotations

import errno
import json
import multiprocessing
import time
from pathlib import Path

import pytest

from instraug import build
from lit.files import DiskFull

pytestmark = pytest.mark.integration
FILES = ["mins_plus.json", "train.json", "train.jsonl"]


def _inputs(tmp_path: Path) -> tuple[Path, Path]:
    """MultiInstruct-style VQA_color instances and a pool of 3 seeds and 6 rewrites."""
    instances, pool = tmp_path / "instances.jsonl", tmp_path / "pool.jsonl"
    rows = [
        {"unique_id": f"VQA_color-{i}", "task_name": "VQA_color", "image_path": f"images/{i % 2}.png"}
        | {"question": "what colour is the dog", "answer": "brown", "options": ["brown", "black", "white"]}
        | {"target_txt": "brown", "text": "a dog"}
        for i in range(60)
    ]
    instances.write_text("".join(json.dumps(r) + "\n" for r in rows))
    texts = [(f"Seed {k}: {{question}}{{options_str}}", "seed") for k in range(3)]
    texts += [(f"Rewrite {k}: {{question}}{{options_str}}", "generated") for k in range(6)]
    pool.write_text("".join(json.dumps({"task": "VQA_color", "text": t, "origin": o}) + "\n" for t, o in texts))
    return instances, pool


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("full_at", ["train.json", "mins_plus.json"])
def test_a_full_disk_while_building_stops_in_one_line_and_leaves_no_file(tmp_path, monkeypatch, full_at):
    import lit.files

    instances, pool = _inputs(tmp_path)
    reference = _files(
        build.build_dataset(instances, pool, tmp_path / "reference", variant="mins_plus")["llava"].parent
    )
    assert sorted(reference) == FILES
    fsync = lit.files.os.fsync

    def fills_the_disk(fd):
        if Path(f"/proc/self/fd/{fd}").resolve().name.startswith(f".{full_at}."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return fsync(fd)

    monkeypatch.setattr(lit.files.os, "fsync", fills_the_disk)
    out = tmp_path / "set"
    with pytest.raises(DiskFull) as stop:
        build.build_dataset(instances, pool, out, variant="mins_plus")
    message = str(stop.value)
    assert "\n" not in message and message.startswith(f"no space left on the device while writing the MIns+ set {out}")
    assert "none of its files was left" in message and "free space" in message
    assert list(out.iterdir()) == []  # no file of the set, no temporary
    monkeypatch.undo()  # space freed
    build.build_dataset(instances, pool, out, variant="mins_plus")
    assert _files(out) == reference


def _race(instances: Path, pool: Path, out: Path, barrier, late: float) -> None:
    write = build.atomic_write

    def slow_manifest(path, text, what="the file"):
        if Path(path).name == build.MANIFEST:  # the set's files are there, its manifest not yet: the race window
            time.sleep(1.0)
        write(path, text, what)

    build.atomic_write = slow_manifest
    barrier.wait(timeout=60)
    time.sleep(late)  # the second job comes while the first holds its files without their manifest
    build.build_dataset(instances, pool, out, variant="mins_plus")


def test_two_jobs_building_the_same_set_both_end_with_it_whole(tmp_path):
    instances, pool = _inputs(tmp_path)
    reference = _files(
        build.build_dataset(instances, pool, tmp_path / "reference", variant="mins_plus")["llava"].parent
    )
    out, fork = tmp_path / "set", multiprocessing.get_context("fork")
    barrier = fork.Barrier(2)
    procs = [fork.Process(target=_race, args=(instances, pool, out, barrier, late)) for late in (0, 0.5)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [proc.exitcode for proc in procs] == [0, 0]  # neither stopped on a set without its manifest
    assert _files(out) == reference  # the whole set, no temporary beside it


def _killed_before_the_manifest(instances: Path, pool: Path, out: Path) -> None:
    import os

    write = build.atomic_write

    def dies_at_the_manifest(path, text, what="the file"):
        if Path(path).name == build.MANIFEST:  # the set's files written, the manifest not: a kill lands here
            os._exit(137)
        write(path, text, what)

    build.atomic_write = dies_at_the_manifest
    build.build_dataset(instances, pool, out, variant="mins_plus")


def test_a_build_killed_before_its_manifest_is_built_again(tmp_path, caplog):
    """A build killed between its files and its manifest leaves them with its ``.building`` marker: training says
    the set does not exist (``check_existing`` without ``reclaim``), the next build removes them, logged, and writes
    the set a single build writes; files without a manifest that no build of ours left are still refused."""
    instances, pool = _inputs(tmp_path)
    reference = _files(
        build.build_dataset(instances, pool, tmp_path / "reference", variant="mins_plus")["llava"].parent
    )
    out = tmp_path / "set"
    proc = multiprocessing.get_context("fork").Process(target=_killed_before_the_manifest, args=(instances, pool, out))
    proc.start()
    proc.join(120)
    assert proc.exitcode == 137
    assert sorted(p.name for p in out.iterdir()) == [build.BUILDING, "train.json", "train.jsonl"]
    key = build.inputs_key(instances, pool, None, "mins_plus", "official", None, 0)
    assert build.check_existing(out, key) is False and (out / "train.json").exists()  # not reclaimed outside a build
    with caplog.at_level("WARNING", logger="instraug.build"):
        build.build_dataset(instances, pool, out, variant="mins_plus")
    assert "a MIns+ build that never finished left ['train.json', 'train.jsonl']" in caplog.text
    assert _files(out) == reference
    (out / build.MANIFEST).unlink()  # a set without its manifest that no build of ours left: its inputs are unknown
    with pytest.raises(build.DatasetMismatch, match="without mins_plus.json"):
        build.build_dataset(instances, pool, out, variant="mins_plus")
