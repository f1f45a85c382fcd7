"""Hooks of lit_pope (lmms-eval layout). The aggregation returns a dict of metrics, flattened by
``lit.evaluate`` into ``pope/<metric>``."""

from lit.lmms_tasks.scoring import pope_scores, task_image, task_settings, yes_no


def doc_to_visual(doc):
    return [task_image(doc, __file__)]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kw = lmms_eval_specific_kwargs or {}
    return f"{kw.get('pre_prompt', '')}{doc['question']}{kw.get('post_prompt', '')}"


def process_results(doc, results):
    rule = task_settings(__file__).get("yes_no_rule", "first_word")
    return {"pope": {"pred": yes_no(results[0], rule), "answer": doc["answer"].strip().lower(),
                     "category": doc["category"]}}


def aggregate(rows):
    return pope_scores(rows)
