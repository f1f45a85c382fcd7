"""Hooks of the demo_pope task (lmms-eval layout: YAML + utils.py)."""

from lit.eval.tasks.scoring import binary_metrics, task_image, task_yes_no


def doc_to_visual(doc):
    return [task_image(doc, __file__)]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_results(doc, results):
    row = {"pred": task_yes_no(results[0], __file__), "answer": doc["answer"].lower()}
    return {
        key: row
        for key in ("pope_accuracy", "pope_f1", "pope_precision", "pope_recall", "pope_yes_ratio", "pope_unparsed")
    }


def _aggregate(metric):
    def aggregate(rows):
        return binary_metrics(rows)[metric]

    aggregate.__name__ = f"agg_{metric}"
    return aggregate


agg_accuracy, agg_f1, agg_precision, agg_recall, agg_yes_ratio, agg_unparsed = (
    _aggregate(m) for m in ("accuracy", "f1", "precision", "recall", "yes_ratio", "unparsed")
)
