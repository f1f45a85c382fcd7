"""Hooks of the lit_mi_* tasks: MultiInstruct test files (one instance per line: task_name, image_path,
target_txt, options, task fields) under ``<data_dir>/multiinstruct/<task>/test.jsonl``, images relative
to ``<data_dir>/multiinstruct/``, and the original instructions in ``<data_dir>/multiinstruct/
instructions.<yaml|jsonl|tsv|py>`` (any seed format ``instraug.seeds`` reads, e.g. the official
instruction_gen.py), or the file ``eval.multiinstruct_instructions`` names (conf/eval/multiinstruct.yaml: the
training seeds' file, so the seeds live in one place). Each instance becomes 5 documents, one per original
instruction of its task
(visual_dialog: ``visual_dialog_has_hist`` or ``_no_hist`` by its history), with the fields and target
``instraug.multiinstruct.prepare`` derives (the same as for training; options shuffled once per instance,
so the 5 documents share one order), filled by ``instraug.placeholders.fill`` (never evaluated); at most
``multiinstruct_max_per_task`` instances (default 1000, as InstrAug's test sets). The score of a task is the mean
over its instructions of the
per-instruction score (in %), reported with the spread across instructions.

Scoring, as InstrAug's LAVIS evaluation (declare-lab/InstrAug ``IBLIP/lavis/projects/iblip/eval/*_eval.yaml``,
``IBLIP/lavis/tasks/{instrcls,commonsensevqa,tvqa,visdial,vte}.py``): the six classification tasks (CVQA, DC,
GVQA, NLVR, VE, VSR) rank the instance's options by the log-likelihood of each as the answer
(``output_type: multiple_choice``; ``predict_class``), correct when the top option equals the target (both
stripped, ``instrcls._report_metrics``); the three generation tasks (TVQA, VisDial, VTE) are scored by ROUGE-L
of a beam-search answer (5 beams, at most 30 and at least 5 new tokens, VTE at least 1; repetition penalty 1.5,
LAVIS ``generate``'s default).
"""

from __future__ import annotations

import ast
import random
import statistics
from pathlib import Path

from lit.eval.tasks.scoring import normalise_answer, rouge_l, task_settings

N_INSTRUCTIONS = 5


def _root() -> Path:
    return Path(task_settings(__file__)["data_dir"]) / "multiinstruct"


def _instructions() -> dict[str, list[str]]:
    from instraug.seeds import load_seeds

    named = task_settings(__file__).get("multiinstruct_instructions")  # eval.multiinstruct_instructions
    found = [Path(named)] if named else sorted(_root().glob("instructions.*"))
    if named and not found[0].exists():
        raise FileNotFoundError(
            f"eval.multiinstruct_instructions: {named} does not exist: put the official "
            "instruction_gen.py of declare-lab/InstrAug there (the training seeds' file)"
        )
    if not found:
        raise FileNotFoundError(
            f"no instructions.<yaml|jsonl|tsv|py> in {_root()}: put MultiInstruct's original "
            "instructions there (e.g. the official instruction_gen.py)"
        )
    out: dict[str, list[str]] = {}
    for seed in load_seeds(found[0]):
        out.setdefault(seed.task, []).append(seed.text)
    return out


def raw_instances(dataset) -> list[dict]:
    """The instances as the test file has them. ``datasets`` unifies a JSON file's types (the box
    ``[1.5, 2, 20, 30]`` comes back as ``[1.5, 2.0, 20.0, 30.0]``, missing dict keys as ``None``), which would
    change the region strings; so the lines are read again from ``<task_name>/test.jsonl``, in file order."""
    from lit.records import read_jsonl

    if len(dataset) == 0:
        return []
    path = _root() / dataset[0]["task_name"] / "test.jsonl"
    raw = read_jsonl(path)
    ids = dataset["unique_id"] if "unique_id" in dataset.column_names else [None] * len(dataset)
    if len(raw) != len(dataset) or any(r.get("unique_id") != u for r, u in zip(raw, ids)):
        raise ValueError(
            f"{path}: its lines do not match the documents lmms-eval loaded ({len(raw)} lines, "
            f"{len(dataset)} documents)"
        )
    return raw


def expand_instructions(dataset):
    import datasets

    from instraug.multiinstruct import prepare
    from instraug.placeholders import fill

    by_task = _instructions()
    limit = int(task_settings(__file__).get("multiinstruct_max_per_task", 1000))
    rows = []
    for i, doc in enumerate(raw_instances(dataset)[:limit]):
        uid = doc.get("unique_id") or f"{doc.get('task_name')}-{i}"
        prepared = prepare(doc, random.Random(f"{uid}"))
        task = prepared.instruction_task
        texts = by_task.get(task, [])[:N_INSTRUCTIONS]
        if len(texts) < N_INSTRUCTIONS:
            raise ValueError(
                f"MultiInstruct task {task}: {len(texts)} original instructions found, "
                f"{N_INSTRUCTIONS} needed (instance {uid})"
            )
        for k, text in enumerate(texts):
            rows.append(
                {
                    "doc_index": i,
                    "instruction_id": k,
                    "prompt": fill(text, prepared.fields),
                    "image_path": doc.get("image_path") or "",
                    "target_txt": prepared.target,
                    "options": [str(o) for o in prepared.fields.get("options") or []],
                }
            )
    return datasets.Dataset.from_list(rows)


def doc_to_visual(doc):
    from PIL import Image

    if not doc["image_path"]:
        return []
    return [Image.open(_root() / doc["image_path"]).convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["prompt"]


def doc_to_choice(doc):
    if not doc["options"]:
        raise ValueError(f"MultiInstruct instance {doc['doc_index']} has no options to rank")
    return list(doc["options"])


def process_results_ranked(doc, results):
    """``results``: ``(log-likelihood, greedy)`` per option, in ``doc_to_choice`` order; the likeliest option
    is the prediction. lmms-eval 0.7.3 hands each pair on as its ``str`` (``unwrap_generation_output`` in
    ``lmms_eval/api/instance.py`` turns any non-text output into ``str(output)``); Python writes a float's
    repr exactly, so it is read back without loss."""
    lls = [float((ast.literal_eval(r) if isinstance(r, str) else r)[0]) for r in results]
    chosen = doc["options"][max(range(len(lls)), key=lls.__getitem__)]
    correct = chosen.strip() == doc["target_txt"].strip()
    return {"multiinstruct": {"instruction_id": doc["instruction_id"], "score": 100.0 * correct, "prediction": chosen}}


def process_results_accuracy(doc, results):
    correct = normalise_answer(results[0]) == normalise_answer(doc["target_txt"])
    return {"multiinstruct": {"instruction_id": doc["instruction_id"], "score": 100.0 * correct}}


def process_results_rouge_l(doc, results):
    return {
        "multiinstruct": {
            "instruction_id": doc["instruction_id"],
            "score": 100.0 * rouge_l(results[0], doc["target_txt"]),
        }
    }


def aggregate(rows):
    per_instruction: dict[int, list[float]] = {}
    for r in rows:
        per_instruction.setdefault(r["instruction_id"], []).append(r["score"])
    means = [statistics.fmean(v) for _, v in sorted(per_instruction.items())]
    return {
        "score": statistics.fmean(means),
        "sd_over_instructions": statistics.pstdev(means),
        **{f"instruction_{k}": m for k, m in enumerate(means)},
    }
