"""A full disk while an evaluation writes. Where ``lit.eval.evaluate`` runs lmms-eval 0.7.3 in-process
(``simple_evaluate`` with no ``output_path``, ``evaluation_tracker`` or ``use_cache``), lmms-eval itself writes one
thing: its datasets cache, built when a task is loaded (``lmms_eval.api.task.ConfigurableTask.download`` ->
``datasets.load_dataset``, which writes an Arrow file under ``LMMS_EVAL_DATASETS_CACHE`` through
``fsspec.implementations.local.LocalFileOpener.write``). It writes no samples or results of its own (the
``save_results_samples``/``save_results_aggregated`` of ``lmms_eval.loggers.evaluation_tracker`` run only with an
``output_path``) and keeps no response cache (``lmms_eval.caching``, only with ``use_cache``): the per-sample
``samples/<task>.jsonl``, the results store and ``scores.json`` (the done marker) are ours, each through
``lit.files.atomic_write``. The undisturbed evaluation here checks that list (every file it opens for writing is in
the output folder, the results store or the datasets cache), then a full disk is injected at each place, in this
process: ``ENOSPC`` from the Arrow file's write (as a full disk raises it: no file name), or from the ``fsync`` of
the file being written.

Each stops the evaluation with one line saying the disk is full and naming the file, or (inside lmms-eval, whose
error keeps no file name) the datasets cache and the output folder, and to free space and run it again (before:
tenacity's ``RetryError`` traceback, after lmms-eval's 5 tries of the download, 2 s apart; the waits are skipped
here). No ``scores.json`` is left (an earlier evaluation's is removed when one starts), no temporary file, and no
half-built cache entry (``datasets`` removes its ``.incomplete`` folder); the rerun after freeing space gives the
undisturbed evaluation's scores, samples and results store."""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import os
import sys
from pathlib import Path

import pytest

from lit.eval.evaluate import evaluate, read_result
from lit.eval.spec import EvalSpec
from lit.files import DiskFull

pytestmark = pytest.mark.integration

TASKS = ("demo_pope", "demo_vqa")
_written: list[str] | None = None  # the paths opened for writing while recording (see _record_writes)
_hooked = False


def _audit(event, args):
    if _written is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        mode, flags = args[1], args[2]
        if (mode and any(c in mode for c in "wax+")) or (flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            _written.append(os.fsdecode(args[0]))


def _record_writes(call):
    """``call()`` and the files it opened for writing (``open`` audit events; an audit hook cannot be removed, so
    one is added once per process and records only here)."""
    global _written, _hooked
    if not _hooked:
        sys.addaudithook(_audit)
        _hooked = True
    _written = []
    try:
        return call(), _written
    finally:
        _written = None


@contextlib.contextmanager
def _datasets_cache(path: Path):
    """lmms-eval's datasets cache at ``path`` (``LMMS_EVAL_DATASETS_CACHE``; lmms-eval resolves it once per process,
    ``lmms_eval.api.task._resolve_hf_datasets_cache_dir``, so that is cleared here and after), then as it was."""
    from lmms_eval.api.task import _resolve_hf_datasets_cache_dir as resolved

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("LMMS_EVAL_DATASETS_CACHE", str(path))
            resolved.cache_clear()
            yield
    finally:
        resolved.cache_clear()


def _evaluate(ckpt, data, out: Path, runs: Path):
    return evaluate(ckpt, EvalSpec(TASKS, str(data), limit=3), out, results_dir=runs, experiment="e")


@pytest.fixture(scope="module", autouse=True)
def _lmms_eval_task_index_once():
    """lmms-eval indexes its own ~3,200 task YAMLs for every ``TaskManager`` (``_get_task_and_group``, 3 s of
    pure-Python YAML per evaluation on one core); here that folder's index, which nothing changes, is read once
    for the module (a copy each time). Indexing only reads: no write of an evaluation is skipped."""
    import lmms_eval.tasks
    from lmms_eval.tasks import TaskManager

    builtin, index, get = str(Path(lmms_eval.tasks.__file__).parent) + "/", {}, TaskManager._get_task_and_group

    def once(self, task_dir):
        if task_dir != builtin:
            return get(self, task_dir)
        if builtin not in index:
            index[builtin] = get(self, task_dir)
        return copy.deepcopy(index[builtin])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TaskManager, "_get_task_and_group", once)
        yield


@pytest.fixture(scope="module")
def undisturbed(trained, demo_data, tmp_path_factory):
    import lmms_eval.evaluator  # noqa: F401 - imported before recording: a first import may write caches

    _, run_dir, _ = trained
    where = tmp_path_factory.mktemp("undisturbed")
    out, runs, cache = where / "eval", where / "runs", where / "datasets"
    with _datasets_cache(cache):
        scores, written = _record_writes(lambda: _evaluate(run_dir / "checkpoint", demo_data, out, runs))
    written = [p for p in written if p != os.devnull and not p.endswith(".pyc")]  # git_sha's subprocess; imports
    assert any(Path(p).is_relative_to(cache) and p.endswith(".arrow") for p in written)  # lmms-eval's own write
    assert all(any(Path(p).is_relative_to(d) for d in (out, runs, cache)) for p in written), written
    return scores, out, runs


def _fsync_fails_at(folder: Path, name: str):
    """``os.fsync`` raising ``ENOSPC`` for ``atomic_write``'s temporary ``.<name>.*.tmp`` in ``folder`` (the file
    is found from the descriptor); every other fsync as it is."""
    fsync = os.fsync

    def fsync_or_full(fd):
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if path.parent == folder and path.name.startswith(f".{name}."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return fsync(fd)

    return fsync_or_full


@pytest.mark.parametrize("at", ["datasets cache", "samples", "results store", "scores.json"])
def test_a_full_disk_while_evaluating_stops_in_one_line_and_the_rerun_gives_the_same_scores(
    trained, demo_data, undisturbed, tmp_path, monkeypatch, at
):
    import fsspec.implementations.local as fsspec_local
    from lmms_eval.api.task import ConfigurableTask

    import lit.files

    reference, ref_out, ref_runs = undisturbed
    _, run_dir, _ = trained
    ckpt, out, runs, cache = run_dir / "checkpoint", tmp_path / "eval", tmp_path / "runs", tmp_path / "datasets"
    out.mkdir()
    (out / "scores.json").write_text(json.dumps({"scores": {"demo_pope": {"pope_f1": 0.0}}}))  # an earlier run's
    arrow_writes = []
    with _datasets_cache(cache), monkeypatch.context() as full:  # a cache of its own: the dataset is built here
        if at == "datasets cache":
            write = fsspec_local.LocalFileOpener.write

            def write_or_full(self, *args, **kwargs):
                if str(self.path).endswith(".arrow"):
                    arrow_writes.append(self.path)
                    raise OSError(errno.ENOSPC, "No space left on device")  # a full disk names no file
                return write(self, *args, **kwargs)

            full.setattr(fsspec_local.LocalFileOpener, "write", write_or_full)
            full.setattr(ConfigurableTask.download.retry, "sleep", lambda seconds: None)  # lmms-eval's 2 s waits
        else:
            folder, name = {
                "samples": (out / "samples", "demo_pope.jsonl"),
                "results store": (runs / "e", "demo_pope.json"),
                "scores.json": (out, "scores.json"),
            }[at]
            full.setattr(lit.files.os, "fsync", _fsync_fails_at(folder, name))
        with pytest.raises(DiskFull) as stop:
            _evaluate(ckpt, demo_data, out, runs)

    message = str(stop.value)
    assert message.startswith("no space left on the device while ") and "\n" not in message
    assert "free space" in message and "run the same command again" in message
    if at == "datasets cache":
        assert arrow_writes and all(Path(p).is_relative_to(cache) for p in arrow_writes)
        assert f"its datasets cache {cache} or that folder" in message and str(out) in message
        assert "the evaluation is not done (no scores.json there)" in message
        assert not list(cache.rglob("*.incomplete")) and not list(cache.rglob("*.arrow"))  # no half-built entry
        assert not (out / "samples").exists() and not runs.exists()  # stopped before anything was generated
    else:
        assert f"while writing the file {folder / name} " in message
    assert not (out / "scores.json").exists()  # not done: neither the earlier run's marker nor a new one
    assert not [*out.rglob(".*.tmp"), *runs.rglob(".*.tmp")]  # no temporary left
    if runs.exists():  # written whole, by this run, before the disk filled (the rest are missing, none cut off)
        assert all(read_result(p)["scores"] == reference[p.stem] for p in runs.glob("e/*.json"))

    with _datasets_cache(cache):
        scores = _evaluate(ckpt, demo_data, out, runs)  # space freed: the same command again
    assert scores == reference and json.loads((out / "scores.json").read_text())["scores"] == reference
    for task in TASKS:
        assert (out / "samples" / f"{task}.jsonl").read_bytes() == (ref_out / "samples" / f"{task}.jsonl").read_bytes()
        assert (
            read_result(runs / "e" / f"{task}.json")["scores"] == read_result(ref_runs / "e" / f"{task}.json")["scores"]
        )
