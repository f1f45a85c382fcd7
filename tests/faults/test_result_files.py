"""A ``results/runs/<experiment>/<task>.json`` cut mid-write. The writer (``lit.eval.evaluate.store_result``)
writes a temporary file and renames it into place, so a kill or a full disk during a write leaves the old file
whole (or none) and no temporary behind (a full disk: one line naming the file, ``lit.files.DiskFull``); a file
cut by anything else stops ``make tables`` with one line naming it and saying to delete it and score the run
again."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest

from lit.eval.evaluate import read_result, store_result
from lit.files import DamagedFile, DiskFull
from lit.report import tables

ROOT = Path(__file__).resolve().parents[2]


class Killed(BaseException):
    """Stands for SIGKILL at the injected point (nothing after it runs, ``except Exception`` does not catch it)."""


@pytest.mark.parametrize("at", ["rename", "full disk"])
def test_a_result_is_written_whole_or_not_at_all(tmp_path, monkeypatch, at):
    import lit.files

    old = store_result(tmp_path, "demo_vit", "demo_pope", {"pope/acc": 0.5}, {"checkpoint": "a"})
    before = old.read_bytes()

    def fail(*args):
        if at == "rename":
            raise Killed
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lit.files.os, "replace" if at == "rename" else "fsync", fail)
    with pytest.raises(Killed if at == "rename" else DiskFull) as stop:
        store_result(tmp_path, "demo_vit", "demo_pope", {"pope/acc": 0.9}, {"checkpoint": "b"})
    if at == "full disk":  # one line naming the file, saying to free space
        assert str(stop.value).startswith(f"no space left on the device while writing the file {old} (the old file")
        assert "free space" in str(stop.value) and "\n" not in str(stop.value)
    assert old.read_bytes() == before and read_result(old)["scores"] == {"pope/acc": 0.5}
    assert sorted(p.name for p in old.parent.iterdir()) == ["demo_pope.json"]  # no temporary left
    monkeypatch.undo()
    store_result(tmp_path, "demo_vit", "demo_pope", {"pope/acc": 0.9}, {"checkpoint": "b"})
    assert read_result(old)["scores"] == {"pope/acc": 0.9}


def test_a_results_file_cut_mid_write_is_named_with_what_to_do(tmp_path):
    runs = tmp_path / "runs"
    for experiment in ("demo_vit", "demo_lit"):
        shutil.copytree(ROOT / "results" / "runs" / experiment, runs / experiment)
    cut = runs / "demo_vit" / "demo_pope.json"
    raw = cut.read_bytes()
    cut.write_bytes(raw[: len(raw) // 2])
    argv = ["--runs", str(runs), "--out", str(tmp_path / "tables"), "--tables", "demo_t4"]
    with pytest.raises(DamagedFile) as err:
        tables.main(argv)
    message = str(err.value)
    assert message.startswith(f"{cut} is cut off or not valid JSON (line ") and "\n" not in message
    assert "delete it and score that run again" in message
    assert not (tmp_path / "tables").exists()  # no table built from a damaged result
    cut.write_bytes(raw)
    tables.main(argv)
    assert json.loads(raw)["scores"] and (tmp_path / "tables" / "demo_t4.md").is_file()
