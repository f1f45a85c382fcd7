"""A MultiInstruct instance -> every field an instruction may use, derived as the official builds do.

Instances are the JSON lines MultiInstruct's preprocessing writes (VT-NLP/MultiInstruct
``data_preprocessor/*.py`` -> ``training_data/<dataset>/<task>/train.jsonl``, ``testing_data/.../test.jsonl``):
``unique_id``, ``task_name``, ``image_path``, ``target_txt`` and, by task, ``text``, ``question``,
``options`` (list), ``region`` (list of ``[x1, y1, x2, y2]`` boxes), ``context``, ``answer``,
``meta_data`` (``relation``, ``method``, ``object_regions``, ``dialog_hist``, ...). Files that already
went through a build (boxes as strings) are accepted too.

What is derived (declare-lab/InstrAug ``MultiInstruct/build_new_dataset.py`` and
``instruction_gen.py::build_with_new_instructions``; VT-NLP/MultiInstruct ``build_dataset.py`` and
``instruction_templates.py::build_instruction`` for the evaluation tasks):

- regions: each box written as its numbers joined by spaces (``util.process_region``); region-output
  tasks take the space-joined regions as target, option-region tasks get their options as boxes, and
  ``meta_data['object_regions']`` boxes are written the same way;
- ``options`` shuffled per instance, ``options_str = "\\n\\n[Options]: " + "||||".join(options)``;
- ``visual_object_region`` / ``visual_subject_region``: ``region`` = the subject's / the object's boxes
  joined by ``||||`` (MultiInstruct's templates; InstrAug's builder reads the subject for both, a
  copy slip this module does not repeat);
- ``wikihow_next_step``: ``context`` = the history steps one per line, or ``"nothing"``;
  ``wikihow_*_step_order``: ``options`` = next/previous in random order (``options_str`` keeps the
  instance's options, as the official code computes it first);
- ``select_*_region`` and ``if_region_overlap``: ``given_region``;
- ``visual_answer_justification`` and ``commonsense_VQA``: ``region_info`` ("<name> is in <box>." per object);
- ``visual_dialog``: ``dial_history`` ("<q>, <a>;" per turn) and the instruction set
  ``visual_dialog_has_hist`` or ``visual_dialog_no_hist`` (InstrAug's builder compares the task with a
  list here, so it never switches; the intent, MultiInstruct's templates, is followed).

``python -m instraug.multiinstruct training_data_1K/ data/multiinstruct/59k/train.jsonl`` collects the per-task
files into the one instances file ``data=mins_plus`` reads, checking every instance.

Not reproduced, on purpose: the official builder's ``eval`` of the instruction as an f-string (filling is
``placeholders.fill``, which never evaluates) and its multi-line branch, which returned the unfilled template.
Its quote and bracket trimming, which changes the text the model reads, is (``build.clean_instruction``).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from instraug.placeholders import CONSTANTS

OUTPUT_REGION_TASKS = frozenset(
    {
        "detection",
        "VG",
        "object_region_selection",
        "region_generation",
        "pointing_grounded_VQA",
        "descriptive_object_region_generate",
        "text_localization",
        "visual_object_region",
        "visual_subject_region",
        "descriptive_object_region_select",
        "VG_selection",
        "grounded_VQA",
        "select_overlap_most_region",
        "select_overlap_least_region",
        "select_overlaped_region",
        "select_nonoverlaped_region",
    }
)
OPTIONS_REGION_TASKS = frozenset(
    {
        "object_region_selection",
        "pointing_grounded_VQA",
        "text_localization",
        "descriptive_object_region_select",
        "VG_selection",
        "grounded_VQA",
        "select_overlap_most_region",
        "select_overlap_least_region",
        "select_overlaped_region",
        "select_nonoverlaped_region",
    }
)
GIVEN_REGION_TASKS = frozenset(
    {
        "select_overlap_most_region",
        "select_overlap_least_region",
        "select_overlaped_region",
        "select_nonoverlaped_region",
        "if_region_overlap",
    }
)
# dropped by the official build: image-output tasks, and two tasks without instructions
DROPPED_TASKS = frozenset(
    {
        "image_generation",
        "infilling",
        "im_region_extraction",
        "im_descriptive_infilling",
        "image_completion",
        "image_completion_w_image_caption",
        "image_completion_w_region_caption",
        "im_descriptive_extraction",
        "VQA_absurd",
        "region_area",
    }
)


class InstanceError(ValueError):
    """A MultiInstruct instance that lacks what its task needs."""


@dataclass(frozen=True)
class Prepared:
    instruction_task: str  # the key of the instruction set (visual_dialog -> visual_dialog_has_hist / _no_hist)
    fields: dict  # every name a placeholder may use
    target: str


def box_text(box) -> str:
    """One box as the official builds write it: its numbers joined by spaces (a string stays as it is)."""
    if isinstance(box, str):
        return box
    if isinstance(box, (list, tuple)) and box and all(isinstance(x, (int, float)) for x in box):
        return " ".join(str(x) for x in box)
    raise InstanceError(f"not a region box: {box!r}")


def boxes(value) -> list[str]:
    """A list of boxes (or one flat box, as in MultiInstruct's test files) -> list of box strings."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(x, (int, float)) for x in value):
        return [box_text(value)]
    if not isinstance(value, (list, tuple)):
        raise InstanceError(f"not a list of region boxes: {value!r}")
    return [box_text(b) for b in value]


def _need(inst: dict, *path: str):
    value = inst
    for key in path:
        if not isinstance(value, dict) or value.get(key) is None:
            raise InstanceError(
                f"instance {inst.get('unique_id', '?')} ({inst.get('task_name')}): field {'.'.join(path)} is missing"
            )
        value = value[key]
    return value


def prepare(inst: dict, rng: random.Random) -> Prepared:
    """The fields and target of one instance; ``rng`` shuffles its options (and next/previous)."""
    task = inst.get("task_name")
    if not task:
        raise InstanceError(f"instance {inst.get('unique_id', '?')}: no task_name")
    if task in DROPPED_TASKS:
        raise InstanceError(
            f"instance {inst.get('unique_id', '?')}: task {task} is not used (the official build "
            "drops image-output tasks and VQA_absurd / region_area)"
        )
    fields = {k: v for k, v in inst.items() if v is not None}
    fields.update(CONSTANTS)
    try:
        if inst.get("region") is not None:
            fields["region"] = boxes(inst["region"])
        if task in OPTIONS_REGION_TASKS and inst.get("options") is not None:
            fields["options"] = boxes(inst["options"])
        meta = dict(inst.get("meta_data") or {})
        if isinstance(meta.get("object_regions"), dict):
            meta["object_regions"] = {k: boxes(v) for k, v in meta["object_regions"].items() if v is not None}
        fields["meta_data"] = meta
    except InstanceError as err:
        raise InstanceError(f"instance {inst.get('unique_id', '?')} ({task}): {err}") from err
    if task in OUTPUT_REGION_TASKS:
        target = " ".join(_need({**inst, "region": fields.get("region")}, "region"))
    else:
        target = _need(inst, "target_txt")
    if isinstance(fields.get("options"), list):
        options = list(fields["options"])
        rng.shuffle(options)
        fields["options"] = options
        fields["options_str"] = f"{CONSTANTS['options_token']} {CONSTANTS['split_token'].join(options)}"
    split = CONSTANTS["region_split_token"]
    instruction_task = task
    if task == "visual_object_region":
        fields["region"] = split.join(_need(fields, "meta_data", "object_regions", "subject"))
    elif task == "visual_subject_region":
        fields["region"] = split.join(_need(fields, "meta_data", "object_regions", "object"))
    elif task == "wikihow_next_step":
        context = inst.get("context") or []
        fields["context"] = "\n".join(context) if context else '"nothing"'
    elif task in ("wikihow_text_image_step_order", "wikihow_image_text_step_order"):
        fields["options"] = rng.sample(["next", "previous"], 2)
    elif task in GIVEN_REGION_TASKS:
        fields["given_region"] = split.join(_need(fields, "meta_data", "object_regions", "given_region"))
    elif task in ("visual_answer_justification", "commonsense_VQA"):
        regions = _need(fields, "meta_data", "object_regions")
        fields["region_info"] = " ".join(f"{k} is in {v[0]}." for k, v in regions.items())
    elif task == "visual_dialog":
        turns = _need(fields, "meta_data", "dialog_hist")
        fields["dial_history"] = [f"{t['q']}, {t['a']};" for t in turns]
        instruction_task = "visual_dialog_has_hist" if turns else "visual_dialog_no_hist"
    return Prepared(instruction_task, fields, str(target))


def collect(src: str | Path, out: str | Path, split: str = "train") -> dict:
    """Concatenate MultiInstruct's per-task files (``<src>/**/<split>.jsonl``, e.g. ``training_data_1K``) into one
    instances file, checking every instance with ``prepare``; the official build's dropped tasks are left out
    and counted. Returns the counts per task."""
    import json

    from lit.records import read_jsonl

    files = sorted(Path(src).rglob(f"{split}.jsonl"))
    if not files:
        raise FileNotFoundError(
            f"no {split}.jsonl under {src} (MultiInstruct's training_data_<SIZE>/ or testing_data/)"
        )
    kept: Counter = Counter()
    dropped: Counter = Counter()
    rng = random.Random(0)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            for path in tqdm(files, desc="MultiInstruct files"):
                for lineno, inst in enumerate(read_jsonl(path), 1):
                    task = inst.get("task_name")
                    if task in DROPPED_TASKS:
                        dropped[task] += 1
                        continue
                    try:
                        prepare(inst, rng)
                    except InstanceError as err:
                        raise InstanceError(f"{path}:{lineno}: {err}") from err
                    kept[task] += 1
                    fh.write(json.dumps(inst, ensure_ascii=False) + "\n")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return {"instances": sum(kept.values()), "per_task": dict(kept), "dropped": dict(dropped)}


def _main(argv=None) -> None:
    import argparse
    import json

    parser = argparse.ArgumentParser(
        prog="python -m instraug.multiinstruct",
        description="Collect MultiInstruct's per-task files into one instances file.",
    )
    parser.add_argument("src", help="e.g. training_data_1K/ (MultiInstruct's process_data.sh output)")
    parser.add_argument("out", help="e.g. data/multiinstruct/59k/train.jsonl")
    parser.add_argument("--split", default="train", choices=["train", "test"])
    args = parser.parse_args(argv)
    print(json.dumps(collect(args.src, args.out, args.split), indent=1))


if __name__ == "__main__":
    _main()
