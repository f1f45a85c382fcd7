"""File helpers shared by the data builders and result writers: atomic writes, content hashes, and readers
that name a file an earlier crash left damaged instead of failing with a JSON traceback."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, renamed into place, so a
    reader sees the old file or the whole new one, never a part."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
