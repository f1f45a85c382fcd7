"""MIns+ builder: one instruction per MultiInstruct instance, sampled with ratio ε, filled safely.

ε is the probability mass on the task's original (seed) instructions, 1 − ε on its generated ones:
P(seed i) = ε / |seeds|, P(generated j) = (1 − ε) / |generated| (uniform within each group, the official
``--with_prob`` form with RAW_LOGIT = ε and GEN_LOGIT = 1 − ε; the repo leaves both undefined). So
ε = 1 is the un-augmented MIns data set and ε = 0 never uses a seed. A task without generations uses its
seeds whatever ε is. Exactly one uniform draw decides the group for every instance, so for a fixed
random seed the ε = 1 data set is identical to one built from the seeds alone.

Options are shuffled per instance (``options``); instructions are filled by ``placeholders.fill``, which
parses and never evaluates. Output: LLaVA JSON (what ``train.py`` reads) and MultiInstruct JSONL with
``prompt`` and ``target`` added.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

from instraug.placeholders import UnsafePlaceholder, fill, multiset
from instraug.seeds import load_seeds
from lit.records import read_jsonl

DROPPED_TASKS = {"image_generation", "infilling", "im_region_extraction", "im_descriptive_infilling",
                 "image_completion_w_region_caption", "image_completion_w_image_caption",
                 "im_descriptive_extraction", "VQA_absurd", "region_area"}


def pools(pool_rows: list[dict]) -> dict[str, tuple[list[str], list[str]]]:
    """task -> (seed texts, generated texts) from an instruction pool."""
    out: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for row in pool_rows:
        out[row["task"]][0 if row["origin"] == "seed" else 1].append(row["text"])
    return dict(out)


def pool_from_files(seeds_path: str | Path, generated_path: str | Path | None, provenance: str) -> list[dict]:
    """An instruction pool from a seed file and a file of already-written rewrites (same formats as seeds;
    without one, the seeds alone: the un-augmented MIns).

    Every rewrite must carry the placeholder multiset of one of its task's seeds (rule R3), else it could
    not be filled: a ``ValueError`` names it."""
    seeds = load_seeds(seeds_path)
    by_task: dict[str, list] = defaultdict(list)
    for s in seeds:
        by_task[s.task].append(s)
    pool = [s.pool_row() for s in seeds]
    for g in load_seeds(generated_path) if generated_path else []:
        roots = [s for s in by_task.get(g.task, []) if multiset(s.text) == multiset(g.text)]
        if not roots:
            raise ValueError(f"{generated_path}: {g.seed_id} {g.text!r} has no seed of task {g.task!r} with the same "
                             "placeholders")
        pool.append({"id": f"gen:{g.seed_id}", "task": g.task, "text": g.text, "origin": "generated",
                     "root_id": roots[0].seed_id, "provenance": provenance})
    return pool


def sample_instruction(rng: random.Random, seeds: list[str], generated: list[str], epsilon: float) -> tuple[str, str]:
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    use_seed = rng.random() < epsilon or not generated
    group = seeds if use_seed else generated
    return group[rng.randrange(len(group))], "seed" if use_seed else "generated"


def build(instances: list[dict], pool_rows: list[dict], epsilon: float, seed: int = 0) -> list[dict]:
    """MultiInstruct instances -> rows with ``prompt``, ``target``, ``instruction``, ``instruction_origin``."""
    rng = random.Random(seed)
    by_task = pools(pool_rows)
    rows = []
    for i, inst in enumerate(instances):
        task = inst.get("task_name")
        rid = inst.get("unique_id", f"{task}-{i}")
        if task in DROPPED_TASKS:
            continue
        if task not in by_task or not by_task[task][0]:
            raise KeyError(f"instance {rid}: no seed instructions for task {task!r} in the pool")
        instruction, origin = sample_instruction(rng, *by_task[task], epsilon)
        fields = dict(inst)
        if isinstance(inst.get("options"), list):
            fields["options"] = rng.sample(inst["options"], len(inst["options"]))
        try:
            prompt = fill(instruction, fields)
        except UnsafePlaceholder as err:
            raise UnsafePlaceholder(f"instance {rid}, instruction {instruction!r}: {err}") from err
        rows.append({**inst, "id": rid, "prompt": prompt, "target": inst["target_txt"], "instruction": instruction,
                     "instruction_origin": origin})
    return rows


def to_llava(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        record = {"id": row["id"], "conversations": [
            {"from": "human", "value": ("<image>\n" if row.get("image_path") else "") + row["prompt"]},
            {"from": "gpt", "value": row["target"]}]}
        if row.get("image_path"):
            record["image"] = row["image_path"]
        out.append(record)
    return out


def write(rows: list[dict], out_dir: str | Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"llava": out_dir / "train.json", "multiinstruct": out_dir / "train.jsonl"}
    paths["llava"].write_text(json.dumps(to_llava(rows), ensure_ascii=False, indent=0))
    paths["multiinstruct"].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return paths


def build_from_files(instances: str | Path, pool: str | Path, epsilon: float, out_dir: str | Path, seed: int = 0,
                     generated: str | Path | None = None) -> dict[str, Path]:
    """Build and write a MIns+ data set. ``pool`` is an ``augment.py`` pool.jsonl, or a seed file (plus
    optionally ``generated``, a file of rewrites; see ``pool_from_files``)."""
    for path in (instances, pool, generated):
        if path is not None and not Path(path).exists():
            raise FileNotFoundError(f"MIns+ build input {path} does not exist")
    if str(pool).endswith(".jsonl"):  # an augment.py pool
        rows = read_jsonl(Path(pool))
    else:  # a seed file, with or without a file of rewrites
        rows = pool_from_files(pool, generated, provenance=f"file:{Path(generated).name}" if generated else "")
    return write(build(read_jsonl(Path(instances)), rows, epsilon=epsilon, seed=seed), out_dir)
