"""Hooks of lit_mme (lmms-eval layout). MME's questions end in "Please answer yes or no."; the post-prompt
replaces that sentence, as LLaVA's evaluation does."""

from lit.eval.tasks.scoring import mme_scores, task_image, task_yes_no, with_prompt

SUFFIX = "Please answer yes or no."


def doc_to_visual(doc):
    return [task_image(doc, __file__)]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    question = doc["question"].strip()
    if (lmms_eval_specific_kwargs or {}).get("post_prompt") and question.endswith(SUFFIX):
        question = question[: -len(SUFFIX)].strip()
    return with_prompt(question, lmms_eval_specific_kwargs)


def process_results(doc, results):
    pred = task_yes_no(results[0], __file__)
    return {
        "mme": {
            "category": doc["category"],
            "image_id": doc["question_id"],
            "correct": pred is not None and pred == doc["answer"].strip().lower().rstrip("."),
        }
    }


def aggregate(rows):
    return mme_scores(rows)
