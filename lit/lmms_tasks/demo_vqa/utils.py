"""Hooks of the demo_vqa task (lmms-eval layout: YAML + utils.py)."""

from pathlib import Path

from PIL import Image

from lit.lmms_tasks.scoring import first_word


def _data_dir() -> Path:
    return Path(Path(__file__).with_name("data_dir.txt").read_text().strip())


def doc_to_visual(doc):
    return [Image.open(_data_dir() / doc["image"]).convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_results(doc, results):
    correct = float(first_word(results[0]) == doc["answer"])
    out = {"vqa_accuracy": correct}
    if doc["shape"] == "triangle":
        out["trap_accuracy"] = correct
    return out


def agg_accuracy(scores):
    return sum(scores) / len(scores) if scores else float("nan")
