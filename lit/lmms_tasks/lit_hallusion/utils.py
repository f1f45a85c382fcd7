"""Hooks of lit_hallusion (lmms-eval layout); scoring in ``lit.lmms_tasks.scoring.hallusion_scores``."""

from lit.lmms_tasks.scoring import hallusion_scores, task_image, task_yes_no

KEYS = ("category", "subcategory", "set_id", "figure_id", "question_id")


def doc_to_visual(doc):
    if str(doc.get("visual_input", "1")) == "0" or doc.get("image") is None:
        return []
    return [task_image(doc, __file__)]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_results(doc, results):
    pred = task_yes_no(results[0], __file__)
    truth = "yes" if str(doc["gt_answer"]) == "1" else "no"
    return {"hallusion": {**{k: doc[k] for k in KEYS}, "correct": pred == truth, "unparsed": pred is None}}


def aggregate(rows):
    return {**hallusion_scores(rows), "unparsed": sum(r["unparsed"] for r in rows)}
