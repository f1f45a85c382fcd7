"""Reading LLaVA-format corpora (a JSON list, or JSON lines) with errors that name the record.

A record is ``{"id": ..., "image": "rel/path.jpg" (optional), "conversations": [{"from": "human"|"gpt",
"value": str}, ...]}`` as in LLaVA-mix-665K; ``image`` may be a list, one ``<image>`` marker per picture in the
human turns (multi-image and interleaved records, as LLaVA-OneVision's data: ``record_images``).
"""

from __future__ import annotations

import json
from pathlib import Path


class RecordError(ValueError):
    """A record that cannot be trained on; the message names it and says why."""

    def __init__(self, record_id: object, reason: str):
        self.record_id = record_id
        self.reason = reason
        super().__init__(f"record {record_id!r}: {reason}")


def record_id(record: dict, index: int) -> object:
    """The record's ``id`` if it has one, else ``#<index>`` (its position in the file)."""
    return record.get("id", f"#{index}") if isinstance(record, dict) else f"#{index}"


def _json_lines(text: str, path: Path) -> list:
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: line {lineno} is not valid JSON ({err.msg}); fix or remove that line") from err
    return rows


def read_jsonl(path: str | Path) -> list:
    """The objects of a JSON-lines file (blank lines skipped); a malformed line raises naming it."""
    path = Path(path)
    return _json_lines(path.read_text(encoding="utf-8"), path)


def load_records(path: str | Path) -> list[dict]:
    """Load a LLaVA JSON list or a JSONL file; malformed input raises naming the line or record."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file {path} does not exist (check data.path / paths.data_dir)")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: malformed JSON at line {err.lineno} column {err.colno}: {err.msg}") from err
    else:
        records = _json_lines(text, path)
    for i, record in enumerate(records):
        if not isinstance(record, dict) or not isinstance(record.get("conversations"), list):
            raise RecordError(record_id(record, i), f"in {path}: expected an object with a 'conversations' list")
    return records


def record_images(record: dict) -> list:
    """The images a record names, in order: none (no ``image``, or an empty list), its one image, or each of a
    list (``"image": ["a.jpg", "b.jpg"]``, one ``<image>`` marker per picture in the human turns, as
    LLaVA-OneVision's data). An entry is a path (relative to the image root) or an image in memory."""
    image = record.get("image") if isinstance(record, dict) else None
    if image is None:
        return []
    return list(image) if isinstance(image, (list, tuple)) else [image]
