"""Scoring rules shared by the demo tasks and the evaluation tasks (plain functions, no lmms-eval import).

Yes/no extraction (stated because scores move by points with it; ``eval.yes_no_rule`` picks one):

- ``first_word`` (default): lower-case, take the first alphanumeric word; "yes"/"no" count;
- ``llava``: LLaVA's POPE script: the first sentence is "no" if it contains the word no/not, else "yes"
  (so every non-empty output parses, and "I cannot tell" counts as "no");
- ``exact``: lmms-eval's POPE parse (``pope_process_results``): the whole output, lower-cased and stripped
  of surrounding whitespace, must be ``yes`` or ``no``; so "Yes, there is" and "Yes." are not parsed.

Anything not parsed is *unparsed*: scored as wrong and counted, never dropped.
"""

from __future__ import annotations

import functools
import re

_WORD = re.compile(r"[a-z0-9]+")


def first_word(text: str) -> str:
    match = _WORD.search(text.lower())
    return match.group() if match else ""


YES_NO_RULES = ("first_word", "llava", "exact")


def yes_no(text: str, rule: str = "first_word") -> str | None:
    if rule == "first_word":
        word = first_word(text)
        return word if word in ("yes", "no") else None
    if rule == "llava":
        sentence = text.strip().split(".")[0]
        if not sentence:
            return None
        words = set(_WORD.findall(sentence.lower()))
        return "no" if words & {"no", "not"} else "yes"
    if rule == "exact":  # lmms-eval tasks/pope/utils.py pope_process_results: results[0].lower().strip()
        word = text.lower().strip()
        return word if word in ("yes", "no") else None
    raise ValueError(f"unknown yes/no rule {rule!r}; choose one of {', '.join(YES_NO_RULES)}")


def binary_metrics(rows: list[dict]) -> dict[str, float]:
    """rows: {"pred": "yes"|"no"|None, "answer": "yes"|"no"}; "yes" is the positive class (POPE).

    Accuracy and precision are lmms-eval's (``tasks/pope/utils.py``). Two metrics are defined differently:

    - ``recall`` = TP / (ground-truth yes): an unparsed answer to a yes question counts as a miss. lmms-eval's
      ``pope_aggregate_recall`` counts as false negatives only the answers parsed as "no", so it leaves unparsed
      answers to yes questions out (its recall, and F1 with it, is never lower than ours);
    - ``yes_ratio`` = share of answers parsed as "yes" (the model's yes bias, as LLaVA's
      ``llava/eval/eval_pope.py`` computes it). lmms-eval's ``pope_aggregate_yes_ratio`` is the share of
      *ground-truth* yes questions (0.5 on POPE's balanced splits), whatever the model answers.
    """
    n = len(rows)
    tp = sum(r["pred"] == "yes" and r["answer"] == "yes" for r in rows)
    fp = sum(r["pred"] == "yes" and r["answer"] == "no" for r in rows)
    fn = sum(r["pred"] != "yes" and r["answer"] == "yes" for r in rows)
    correct = sum(r["pred"] == r["answer"] for r in rows)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": correct / n if n else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": sum(r["pred"] == "yes" for r in rows) / n if n else 0.0,
        "unparsed": sum(r["pred"] is None for r in rows),
    }


def task_settings(utils_file: str) -> dict:
    """The run's settings that ``lit.eval.evaluate.prepare_tasks`` wrote into ``settings.json`` beside a task's
    utils.py (data directory, yes/no rule, ...): lmms-eval passes no options to ``process_results``.
    Parsed once per task folder (and again only if the file is rewritten), not once per document."""
    from pathlib import Path

    path = Path(utils_file).with_name("settings.json")
    return _read_settings(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _read_settings(path: str, mtime_ns: int) -> dict:
    import json
    from pathlib import Path

    return json.loads(Path(path).read_text())


def task_yes_no(text: str, utils_file: str) -> str | None:
    """``yes_no`` under the run's ``yes_no_rule`` (``eval.yes_no_rule``)."""
    return yes_no(text, task_settings(utils_file).get("yes_no_rule", "first_word"))


def with_prompt(question: str, lmms_eval_specific_kwargs: dict | None) -> str:
    """The question between the task's ``pre_prompt`` and ``post_prompt``."""
    kw = lmms_eval_specific_kwargs or {}
    return f"{kw.get('pre_prompt', '')}{question}{kw.get('post_prompt', '')}"


def task_image(doc: dict, utils_file: str):
    """The PIL image of a document: ``doc["image"]`` itself when the data set stores images (the hub's
    parquet/arrow form), else a path relative to the run's data directory."""
    from pathlib import Path

    from PIL import Image

    image = doc["image"]
    if not isinstance(image, str):
        return image.convert("RGB")
    return Image.open(Path(task_settings(utils_file)["data_dir"]) / image).convert("RGB")


# --- evaluation set aggregations (each takes the per-document rows that process_results returned) ---------


def pope_scores(rows: list[dict]) -> dict[str, float]:
    """POPE: metrics per split (``category``: adversarial/popular/random) and their means, as LLaVA reports
    (mean F1 over the three splits). rows: {"pred", "answer", "category"}."""
    out: dict[str, float] = {}
    splits = sorted({r["category"] for r in rows})
    for split in splits:
        m = binary_metrics([r for r in rows if r["category"] == split])
        out.update({f"{k}_{split}": v for k, v in m.items()})
        out[f"n_{split}"] = sum(r["category"] == split for r in rows)
    for k in ("accuracy", "precision", "recall", "f1", "yes_ratio"):
        out[f"{k}_mean"] = sum(out[f"{k}_{s}"] for s in splits) / len(splits) if splits else 0.0
    out["unparsed"] = sum(r["pred"] is None for r in rows)
    return out


MME_PERCEPTION = (
    "existence",
    "count",
    "position",
    "color",
    "posters",
    "celebrity",
    "scene",
    "landmark",
    "artwork",
    "OCR",
)
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def mme_scores(rows: list[dict]) -> dict[str, float]:
    """MME: per subtask 100·acc + 100·acc+ (acc+: images whose questions are all right); perception and
    cognition are sums over their subtasks. rows: {"category", "image_id", "correct"}."""
    from collections import defaultdict

    by_image: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_image[r["category"]][r["image_id"]].append(bool(r["correct"]))
    out: dict[str, float] = {}
    for category, images in by_image.items():
        answers = [a for v in images.values() for a in v]
        acc = sum(answers) / len(answers)
        acc_plus = sum(all(v) for v in images.values()) / len(images)
        out[category] = 100 * acc + 100 * acc_plus
    out["perception"] = sum(out.get(c, 0.0) for c in MME_PERCEPTION)
    out["cognition"] = sum(out.get(c, 0.0) for c in MME_COGNITION)
    out["total"] = out["perception"] + out["cognition"]
    return out


def hallusion_scores(rows: list[dict]) -> dict[str, float]:
    """HallusionBench (string-match path): aAcc over questions; fAcc over figures (category, subcategory,
    set_id, figure_id; VS questions without a figure, figure_id 0, are not figures), a figure counting only
    if all its questions are right; qAcc over question groups (category, subcategory, set_id,
    question_id), all figure variants right. rows: those fields + "correct"."""
    from collections import defaultdict

    figures, questions = defaultdict(list), defaultdict(list)
    for r in rows:
        ok = bool(r["correct"])
        questions[(r["category"], r["subcategory"], str(r["set_id"]), str(r["question_id"]))].append(ok)
        if not (r["category"] == "VS" and str(r["figure_id"]) == "0"):
            figures[(r["category"], r["subcategory"], str(r["set_id"]), str(r["figure_id"]))].append(ok)
    mean = lambda xs: 100 * sum(xs) / len(xs) if xs else 0.0  # noqa: E731
    return {
        "aAcc": mean([bool(r["correct"]) for r in rows]),
        "fAcc": mean([all(v) for v in figures.values()]),
        "qAcc": mean([all(v) for v in questions.values()]),
    }


def normalise_answer(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (Google's rouge_score, the implementation MultiInstruct/OFA-style evaluations use)."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"]).score(reference, prediction)["rougeL"].fmeasure


# Irregular plurals of COCO object words that lemminflect leaves as they are (WordNet maps them).
_IRREGULAR = {"oxen": "ox", "doggies": "doggy"}
_TOKEN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*|'[a-z]+|[^\sa-z0-9]")


def chair_words(caption: str) -> list[str]:
    """The caption's words as lmms-eval's ``coco_cap_chair`` ``caption_to_words`` sees them before the object
    lookup: lower-cased, split into words and punctuation (as NLTK's ``word_tokenize``), each word
    lemmatised, then the two-word names of ``DOUBLE_WORD_DICT`` joined. lmms-eval lemmatises with WordNet
    after POS tagging (NLTK data that no package registry carries); we take every word's noun lemma from
    ``lemminflect`` (irregular plurals included: mice, men, children, knives, teeth), since only nouns can
    name objects; a word that is itself a COCO object name is kept when its lemma is not one (``corgi``)."""
    from lemminflect import getLemma
    from lmms_eval.tasks.coco_cap_chair.utils import DOUBLE_WORD_DICT, MSCOCO_OBJECTS

    objects = _coco_objects(tuple(MSCOCO_OBJECTS))
    words = []
    for token in _TOKEN.findall(caption.lower()):
        lemma = _IRREGULAR.get(token) or (getLemma(token, upos="NOUN")[0] if token[0].isalpha() else token)
        words.append(token if token in objects and lemma not in objects else lemma)
    joined, i = [], 0
    while i < len(words):
        pair = " ".join(words[i : i + 2])
        if pair in DOUBLE_WORD_DICT:
            joined.append(DOUBLE_WORD_DICT[pair])
            i += 2
        else:
            joined.append(words[i])
            i += 1
    return joined


@functools.lru_cache(maxsize=1)
def _coco_objects(names: tuple[str, ...]) -> frozenset[str]:
    return frozenset(names)


def chair_objects(caption: str) -> list[str]:
    """The COCO categories a caption mentions, one per mention, by lmms-eval's ``coco_cap_chair`` rules
    (Rohrbach et al. 2018): ``chair_words``, then "seat" dropped when "toilet" is there, then each word in
    ``MSCOCO_OBJECTS`` mapped through ``INVERSE_SYNONYM_DICT``. As there, negation is not parsed: "no dog"
    mentions a dog."""
    from lmms_eval.tasks.coco_cap_chair.utils import (
        INVERSE_SYNONYM_DICT,
        MSCOCO_OBJECTS,
    )

    words = chair_words(caption)
    if "toilet" in words and "seat" in words:
        words = [w for w in words if w != "seat"]
    objects = _coco_objects(tuple(MSCOCO_OBJECTS))
    return [INVERSE_SYNONYM_DICT[w] for w in words if w in objects]


def chair_scores(rows: list[dict]) -> dict[str, float]:
    """CHAIR_S: % of captions with at least one object not in the image; CHAIR_I: % of object mentions
    not in the image; recall: % of ground-truth objects mentioned. rows: {"mentioned", "truth"} (lists of
    COCO categories)."""
    mentions = [(m, set(r["truth"])) for r in rows for m in r["mentioned"]]
    hallucinated = sum(m not in truth for m, truth in mentions)
    truth_total = sum(len(set(r["truth"])) for r in rows)
    return {
        "chair_s": 100 * sum(any(m not in set(r["truth"]) for m in r["mentioned"]) for r in rows) / len(rows)
        if rows
        else 0.0,
        "chair_i": 100 * hallucinated / len(mentions) if mentions else 0.0,
        "recall": 100 * sum(len(set(r["mentioned"]) & set(r["truth"])) for r in rows) / truth_total
        if truth_total
        else 0.0,
    }


def cider(rows: list[dict]) -> float:
    """CIDEr-D (pycocoevalcap) ×100 over rows {"id", "prediction", "references"}; text lower-cased and
    split into words by rule (the PTB tokenizer of pycocoevalcap needs Java)."""
    from pycocoevalcap.cider.cider import Cider

    tok = normalise_answer
    gts = {r["id"]: [tok(t) for t in r["references"]] for r in rows}
    res = {r["id"]: [tok(r["prediction"])] for r in rows}
    return 100 * Cider().compute_score(gts, res)[0] if rows else 0.0
