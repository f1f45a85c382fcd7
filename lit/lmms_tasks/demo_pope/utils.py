"""Hooks of the demo_pope task (lmms-eval layout: YAML + utils.py)."""

from lit.lmms_tasks.scoring import binary_metrics, task_image, yes_no



def doc_to_visual(doc):
    return [task_image(doc, __file__)]


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
