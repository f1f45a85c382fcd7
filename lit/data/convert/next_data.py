"""LLaVA-NeXT-Data (``lmms-lab/LLaVA-NeXT-Data``: parquet shards, images embedded as bytes) -> LLaVA JSON.

Writes ``<out>/llava_next_data.json`` (LLaVA records: ``id``, ``image`` relative to ``<out>/images``,
``conversations``) and the images as files under ``<out>/images/<data_source>/``, byte for byte (not
re-encoded). Resumable: images already on disk are kept. Rows without an image become text-only records.
A row without an id or conversations is an error naming the shard row; nothing is dropped silently.

    python -m lit.data.convert.next_data --src ~/hf/LLaVA-NeXT-Data --out $LIT_DATA_DIR/llava_next
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from tqdm import tqdm

from lit.records import RecordError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_FORMATS = {b"\x89PNG": ".png", b"\xff\xd8\xff": ".jpg", b"GIF8": ".gif", b"RIFF": ".webp", b"BM": ".bmp"}


def _extension(data: bytes, path: str | None) -> str:
    for magic, ext in _FORMATS.items():
        if data.startswith(magic):
            return ext
    return Path(path).suffix if path else ".img"


def convert(src: str | Path, out: str | Path, progress: bool = True) -> dict:
    """Convert every parquet shard under ``src``; returns counts (records, with image, images written)."""
    from datasets import Image as ImageFeature
    from datasets import load_dataset

    shards = sorted(str(p) for p in Path(src).rglob("*.parquet"))
    if not shards:
        raise FileNotFoundError(
            f"no .parquet shards under {src}; download lmms-lab/LLaVA-NeXT-Data there first "
            "(huggingface-cli download --repo-type dataset lmms-lab/LLaVA-NeXT-Data --local-dir ...)"
        )
    rows = load_dataset("parquet", data_files=shards, split="train")
    if "image" in rows.column_names:
        rows = rows.cast_column("image", ImageFeature(decode=False))  # the stored bytes, not decoded pixels
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    records, counts, seen = [], {"records": 0, "with_image": 0, "images_written": 0}, {}
    for i, row in enumerate(tqdm(rows, desc="LLaVA-NeXT-Data", disable=not progress, mininterval=1.0)):
        rid = row.get("id")
        if not rid or not row.get("conversations"):
            raise RecordError(f"row {i}", "no 'id' or no 'conversations' in the parquet row")
        record = {"id": rid, "conversations": [{"from": t["from"], "value": t["value"]} for t in row["conversations"]]}
        image = row.get("image")
        if image and image.get("bytes"):
            source = _UNSAFE.sub("_", row.get("data_source") or "unknown")
            rel = Path(source) / (_UNSAFE.sub("_", str(rid)) + _extension(image["bytes"], image.get("path")))
            if rel in seen:
                raise RecordError(rid, f"row {i} maps to the image file {rel} of row {seen[rel]} (same source and id)")
            seen[rel] = i
            target = out / "images" / rel
            if not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(target.name + ".part")
                tmp.write_bytes(image["bytes"])
                os.replace(tmp, target)
                counts["images_written"] += 1
            record["image"] = str(rel)
            counts["with_image"] += 1
        records.append(record)
    counts["records"] = len(records)
    tmp = out / "llava_next_data.json.part"
    tmp.write_text(json.dumps(records))
    os.replace(tmp, out / "llava_next_data.json")
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", required=True, help="folder holding the dataset's parquet shards")
    parser.add_argument("--out", required=True, help="output folder (data.root of data=llava_next_data)")
    args = parser.parse_args(argv)
    print(json.dumps(convert(args.src, args.out)))


if __name__ == "__main__":
    main()
