"""Hooks of lit_pope (lmms-eval layout). The aggregation returns a dict of metrics, flattened by
``lit.eval.evaluate`` into ``pope/<metric>``."""

from lit.eval.tasks.scoring import pope_scores, task_image, task_yes_no, with_prompt


def doc_to_visual(doc):
    return [task_image(doc, __file__)]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return with_prompt(doc["question"], lmms_eval_specific_kwargs)


def process_results(doc, results):
    return {
        "pope": {
            "pred": task_yes_no(results[0], __file__),
            "answer": doc["answer"].strip().lower(),
            "category": doc["category"],
        }
    }


def aggregate(rows):
    return pope_scores(rows)
