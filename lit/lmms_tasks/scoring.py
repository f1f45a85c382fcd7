"""Scoring rules shared by the demo tasks and the benchmark tasks (plain functions, no lmms-eval import).

Yes/no extraction (stated because scores move by points with it): lower-case, strip punctuation, take
the first word; "yes"/"no" count, anything else is *unparsed* and scored as wrong (never dropped).
lmms-eval's own POPE rule is an exact match of the whole output, which counts "Yes, there is" wrong.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-z0-9]+")


def first_word(text: str) -> str:
    match = _WORD.search(text.lower())
    return match.group() if match else ""


def yes_no(text: str) -> str | None:
    word = first_word(text)
    return word if word in ("yes", "no") else None


def binary_metrics(rows: list[dict]) -> dict[str, float]:
    """rows: {"pred": "yes"|"no"|None, "answer": "yes"|"no"}; "yes" is the positive class (POPE)."""
    n = len(rows)
    tp = sum(r["pred"] == "yes" and r["answer"] == "yes" for r in rows)
    fp = sum(r["pred"] == "yes" and r["answer"] == "no" for r in rows)
    fn = sum(r["pred"] != "yes" and r["answer"] == "yes" for r in rows)
    correct = sum(r["pred"] == r["answer"] for r in rows)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": correct / n if n else 0.0, "precision": precision, "recall": recall, "f1": f1,
            "yes_ratio": sum(r["pred"] == "yes" for r in rows) / n if n else 0.0,
            "unparsed": sum(r["pred"] is None for r in rows)}


def task_image(doc: dict, utils_file: str):
    """The PIL image of a demo-task document: ``doc["image"]`` relative to the data directory that
    ``lit.evaluate.prepare_tasks`` wrote into ``data_dir.txt`` beside the task's utils.py."""
    from pathlib import Path

    from PIL import Image

    data_dir = Path(Path(utils_file).with_name("data_dir.txt").read_text().strip())
    return Image.open(data_dir / doc["image"]).convert("RGB")
