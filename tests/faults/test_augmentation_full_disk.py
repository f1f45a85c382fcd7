"""A full disk during ``augment.py``: ``ENOSPC`` injected at the fsync of the generation cache's second batch
(its bytes are in the file by then), or at the write of ``pool.jsonl``. The run stops with one line naming the
file and saying to free space; the cache holds whole batches only (the one being written is taken back off)
and no pool is there. Run again once space is freed, it generates only what the cache lacks and writes the
undisturbed run's pool, byte for byte."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from augment_runs import augment, cache_lines, rewrite
from chat_server import ChatServer

from lit.files import DiskFull

pytestmark = pytest.mark.integration


def _fills_the_disk_at(name: str, nth: int = 1):
    """An ``os.fsync`` that fails with ENOSPC on the ``nth`` fsync of a file whose name starts with ``name``
    (a temporary of ``atomic_write`` starts with ``.<name>.``)."""
    fsync, calls = os.fsync, []

    def fsync_or_full(fd):
        if Path(f"/proc/self/fd/{fd}").resolve().name.lstrip(".").startswith(name):
            calls.append(fd)
            if len(calls) == nth:
                raise OSError(errno.ENOSPC, "No space left on device")
        return fsync(fd)

    return fsync_or_full


@pytest.mark.parametrize("full_at", ["generations.jsonl", "pool.jsonl"])
def test_a_full_disk_stops_in_one_line_and_the_rerun_writes_the_undisturbed_pool(tmp_path, monkeypatch, full_at):
    with ChatServer(rewrite) as server:
        augment(server.url, tmp_path / "undisturbed_cache", tmp_path / "undisturbed")
        undisturbed = (tmp_path / "undisturbed" / "pool.jsonl").read_bytes()
        server.requests.clear()

        cache, run_dir = tmp_path / "cache", tmp_path / "run"
        monkeypatch.setattr(os, "fsync", _fills_the_disk_at(full_at, nth=2 if full_at == "generations.jsonl" else 1))
        with pytest.raises(DiskFull) as stop:
            augment(server.url, cache, run_dir)
        message = str(stop.value)
        assert "\n" not in message and "free space" in message
        if full_at == "generations.jsonl":
            assert message.startswith(f"no space left on the device while writing the generation cache {cache}")
            assert "the batch being written was taken back off, 4 of 16 generations are saved there" in message
            assert len(cache_lines(cache)) == 4 and all(json.loads(line) for line in cache_lines(cache))
        else:
            assert message.startswith(f"no space left on the device while writing the file {run_dir / 'pool.jsonl'}")
            assert len(cache_lines(cache)) == 16
        assert not (run_dir / "pool.jsonl").exists() and not list(run_dir.glob(".*.tmp"))
        monkeypatch.undo()  # space freed
        server.requests.clear()
        augment(server.url, cache, run_dir)
    assert len(server.requests) == (12 if full_at == "generations.jsonl" else 0)  # only what the cache lacked
    assert (run_dir / "pool.jsonl").read_bytes() == undisturbed
