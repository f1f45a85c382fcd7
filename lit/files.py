"""File helpers shared by the data builders and result writers: atomic writes, content hashes, readers that
name a file an earlier crash left damaged instead of failing with a JSON traceback, and a full disk turned into
one line naming what was being written and saying to free space."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

# What a full disk (or quota) looks like from the writers used here: an OSError from Python's own I/O, a message
# from safetensors (Rust: ``StorageFull``) or torch's zip writer, which keep only the text.
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXTS = ("no space left on device", "storagefull", "disk quota exceeded", "quotaexceeded")


class DiskFull(SystemExit):
    """A write failed for lack of space (``ENOSPC``/``EDQUOT``): exits with one line naming the artefact, what the
    failed write left (nothing half-written), and to free space and run the same command again (no traceback)."""


def free_bytes(path: str | Path) -> int | None:
    """The bytes this user may still write on the filesystem of ``path`` (its nearest existing folder)."""
    where = Path(path)
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        stat = os.statvfs(where)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


def is_disk_full(err: BaseException | None, path: str | Path | None = None) -> bool:
    """True if ``err`` (or an exception it was raised from) is a full disk or an exhausted quota. torch's zip
    writer keeps no errno ("file write failed", "unexpected pos"): with ``path`` given, such a failure counts
    where the filesystem of ``path`` has under 64 MiB left."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        text = str(err).lower()
        if isinstance(err, DiskFull) or (isinstance(err, OSError) and err.errno in _FULL_ERRNOS):
            return True
        if any(full in text for full in _FULL_TEXTS):
            return True
        torch_write = "write failed" in text or "unexpected pos" in text  # torch's zip writer, errno lost
        if path is not None and torch_write and (free_bytes(path) or 0) < 2**26:
            return True
        err = err.__cause__ or err.__context__
    return False


def disk_full(
    what: str, path: str | Path, err: BaseException, left: str = "nothing of it was left half-written"
) -> DiskFull:
    """The one-line stop for ``err``, a full disk while writing ``what`` at ``path`` (``left``: what state that
    leaves, for the reader deciding what to do)."""
    left_bytes = free_bytes(path)
    free = "" if left_bytes is None else f", {left_bytes / 2**20:.0f} MiB free there now"
    return DiskFull(
        f"no space left on the device while writing {what} {path} ({left}{free}): free space on that "
        "filesystem (or point the run at another one), then run the same command again"
    )


@contextlib.contextmanager
def stop_if_disk_full(what: str, path: str | Path, left: str = "nothing of it was left half-written"):
    """Turn a full disk inside the block into ``DiskFull`` naming ``what`` at ``path``; other errors pass."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - a full disk arrives as OSError, RuntimeError or a library's own type
        if is_disk_full(err, path):
            raise disk_full(what, path, err, left) from err
        raise


def atomic_write(path: Path, text: str, what: str = "the file") -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, renamed into place, so a
    reader sees the old file or the whole new one, never a part. A full disk leaves no temporary behind and
    stops with ``DiskFull`` naming ``what`` and ``path``."""
    path = Path(path)
    with stop_if_disk_full(what, path, "the old file, if any, is as it was"):  # no room for the temporary's entry
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, Exception) and is_disk_full(err):
            left = "the old file, if any, is as it was; no temporary file is left"
            raise disk_full(what, path, err, left) from err
        raise


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


class DamagedFile(SystemExit):
    """A file an earlier run left damaged (cut off mid-write, not JSON): exits with one line naming the file,
    the line, and what to do (no traceback)."""


def load_json(path: str | Path, remedy: str):
    """The JSON document in ``path``; ``DamagedFile`` naming it, where it breaks off, and ``remedy`` if it is
    not valid JSON (a file cut off mid-write by a writer that was not atomic, or a full disk)."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        where = f"line {err.lineno} column {err.colno}: {err.msg}" if isinstance(err, json.JSONDecodeError) else err
        raise DamagedFile(f"{path} is cut off or not valid JSON ({where}): {remedy}") from None


def read_jsonl_strict(path: str | Path, what: str, remedy: str) -> list:
    """The objects of a JSON-lines file that is written whole (blank lines skipped); ``DamagedFile`` naming the
    file and the line if one is not valid JSON: a last line cut off, or a broken line inside."""
    path = Path(path)
    lines = path.read_bytes().split(b"\n")
    rows = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line.decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError):
            cut = lineno == len(lines)  # the last line, with no line end
            how = "is cut off (the last line, no line end)" if cut else "is not valid JSON"
            raise DamagedFile(f"{what} {path}: line {lineno} {how}: {remedy}") from None
    return rows


def read_appended_jsonl(path: str | Path, what: str, remedy: str) -> tuple[list[dict], int | None]:
    """The rows of an append-only JSON-lines file (a cache: one whole line per finished item), and the number of
    the line dropped, if any. A last line without a line end was cut off by a run killed while writing it: it
    is cut from the file (its item is made again) and logged. A broken line inside is ``DamagedFile``, naming
    the file, the line and ``remedy``: it is never used, and never dropped silently."""
    path = Path(path)
    if not path.exists():
        return [], None
    raw = path.read_bytes()
    good = raw[: raw.rfind(b"\n") + 1]
    dropped = None
    if len(good) != len(raw):
        dropped = good.count(b"\n") + 1
        with open(path, "r+b") as fh:
            fh.truncate(len(good))
            fh.flush()
            os.fsync(fh.fileno())
        log.warning(
            "%s %s: line %d was cut off by a run killed while writing it (%d bytes): dropped, its item is made again",
            what,
            path,
            dropped,
            len(raw) - len(good),
        )
    rows = []
    for lineno, line in enumerate(good.split(b"\n")[:-1], 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            row = None
        if not isinstance(row, dict):
            raise DamagedFile(f"{what} {path}: line {lineno} is not a JSON object: {remedy}")
        rows.append(row)
    return rows, dropped
