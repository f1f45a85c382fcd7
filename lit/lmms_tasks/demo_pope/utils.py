"""Hooks of the demo_pope task (lmms-eval layout: YAML + utils.py)."""

from pathlib import Path

from PIL import Image

from lit.lmms_tasks.scoring import binary_metrics, yes_no



def _data_dir() -> Path:
    return Path(Path(__file__).with_name("data_dir.txt").read_text().strip())


def doc_to_visual(doc):
    return [Image.open(_data_dir() / doc["image"]).convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_results(doc, results):
    row = {"pred": yes_no(results[0]), "answer": doc["answer"].lower()}
    return {key: row for key in ("pope_accuracy", "pope_f1", "pope_precision", "pope_recall", "pope_yes_ratio",
                                 "pope_unparsed")}


def agg_accuracy(rows):
    return binary_metrics(rows)["accuracy"]


def agg_f1(rows):
    return binary_metrics(rows)["f1"]


def agg_precision(rows):
    return binary_metrics(rows)["precision"]


def agg_recall(rows):
    return binary_metrics(rows)["recall"]


def agg_yes_ratio(rows):
    return binary_metrics(rows)["yes_ratio"]


def agg_unparsed(rows):
    return binary_metrics(rows)["unparsed"]
