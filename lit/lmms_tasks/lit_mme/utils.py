"""Hooks of lit_mme (lmms-eval layout). MME's questions end in "Please answer yes or no."; the post-prompt
replaces that sentence, as LLaVA's evaluation does."""

from lit.lmms_tasks.scoring import mme_scores, task_image, task_settings, yes_no

SUFFIX = "Please answer yes or no."


def doc_to_visual(doc):
    return [task_image(doc, __file__)]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kw = lmms_eval_specific_kwargs or {}
    question = doc["question"].strip()
    if kw.get("post_prompt") and question.endswith(SUFFIX):
        question = question[: -len(SUFFIX)].strip()
    return f"{kw.get('pre_prompt', '')}{question}{kw.get('post_prompt', '')}"


def process_results(doc, results):
    rule = task_settings(__file__).get("yes_no_rule", "first_word")
    pred = yes_no(results[0], rule)
    return {"mme": {"category": doc["category"], "image_id": doc["question_id"],
                    "correct": pred is not None and pred == doc["answer"].strip().lower().rstrip(".")}}


def aggregate(rows):
    return mme_scores(rows)
