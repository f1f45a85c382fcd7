"""Seed instructions: read them, never execute them.

Accepted formats (by suffix):

- ``.py``: the official ``instruction_gen.py`` of declare-lab/InstrAug, parsed with ``ast``. Inside it each
  task is a list of strings assigned to a variable (``instructs = ["..."]``) followed by
  ``df_dicts.extend(dict(task_name='<task>', instructions=instruct) for instruct in instructs)``; the
  strings (or f-strings, expressions kept as ``{expr}``) of the list named in that call are the task's
  seeds. Commented-out tasks are comments, so they are not seen.
- ``.tsv``: the official ``raw_instructions.tsv`` (columns ``task_name``, ``instructions``), or a pool
  TSV with more columns (only seeds, ``origin == -1``, are read when an ``origin`` column exists);
- ``.jsonl``: ``{"task": ..., "instruction": ...}`` per line; ``.yaml``: ``{task: [instruction, ...]}``.

A file that yields no seed, or a task without seeds, is an error naming the file and these formats.

Which tasks are not augmented: the pure-placeholder tasks of the official code (``open-domain_VQA``,
``VQA``) and the held-out evaluation tasks. The official ``TEST_TASKS`` list has 7 of the 9 tasks of the
paper's Table 1; the paper (arXiv 2402.14492, Table 1) also holds out commonsense_VQA and visual_dialog.
``held_out="paper"`` (the default) follows the paper; ``held_out="official"`` the code's list. The two
differ only in tasks that have no MultiInstruct training instances, so the MIns+ data are the same.

``python -m instraug.seeds PATH [--json]`` prints task and seed counts and the augmented subset.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from instraug.placeholders import placeholders

FORMATS = (
    "official instruction_gen.py (lists assigned to a variable, then df_dicts.extend(dict(task_name=..., "
    "instructions=...) for ... in <list>)), raw_instructions.tsv (task_name, instructions), "
    "JSONL ({task, instruction} per line), YAML ({task: [instruction, ...]})"
)
PURE_PLACEHOLDER_TASKS = ("open-domain_VQA", "VQA")  # skipped by the official generate_new_instruction
OFFICIAL_TEST_TASKS = (
    "visual_spatial_reasoning",
    "visual_text_extraction",
    "text_vqa",
    "medic_disaster_types",
    "grounded_VQA",
    "visual_nli",
    "natural_language_visual_reasoning",
)
HELD_OUT = {
    "official": OFFICIAL_TEST_TASKS,
    "paper": OFFICIAL_TEST_TASKS + ("commonsense_VQA", "visual_dialog_has_hist", "visual_dialog_no_hist"),
}


class SeedFileError(ValueError):
    """A seed file that yields nothing usable."""


@dataclass(frozen=True)
class Seed:
    seed_id: str  # "<task>#<k>"
    task: str
    text: str

    def pool_row(self) -> dict:
        """This seed as a row of an instruction pool (its own root)."""
        return {"id": self.seed_id, "task": self.task, "text": self.text, "origin": "seed", "root_id": self.seed_id}


def _from_pairs(pairs, path: Path) -> list[Seed]:
    counts: Counter = Counter()
    out = []
    for task, text in pairs:
        if not isinstance(task, str) or not task.strip():
            raise SeedFileError(f"{path}: a seed without a task name ({text!r})")
        if not isinstance(text, str) or not text.strip():
            raise SeedFileError(f"{path}: seed {task}#{counts[task]} is empty")
        out.append(Seed(f"{task}#{counts[task]}", task, text))
        counts[task] += 1
    if not out:
        raise SeedFileError(f"{path}: no seed instructions found; accepted formats: {FORMATS}")
    return out


def _text(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):  # keep each expression's source, never evaluate it
        return "".join(
            str(v.value) if isinstance(v, ast.Constant) else "{" + ast.unparse(v.value) + "}" for v in node.values
        )
    return None


def _extend_call(node: ast.AST) -> tuple[str, str] | None:
    """``X.extend(dict(task_name='t', instructions=v) for v in LIST)`` -> ("t", "LIST")."""
    if not (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "extend"
        and len(node.args) == 1
        and isinstance(node.args[0], (ast.GeneratorExp, ast.ListComp))
    ):
        return None
    comp = node.args[0]
    if len(comp.generators) != 1 or not isinstance(comp.generators[0].iter, ast.Name):
        return None
    elt = comp.elt
    if not (isinstance(elt, ast.Call) and isinstance(elt.func, ast.Name) and elt.func.id == "dict"):
        return None
    task = next((k.value for k in elt.keywords if k.arg == "task_name"), None)
    if isinstance(task, ast.Constant) and isinstance(task.value, str):
        return task.value, comp.generators[0].iter.id
    return None


def _python_pairs(path: Path):
    with warnings.catch_warnings():  # the official file has invalid escapes such as "\A"
        warnings.simplefilter("ignore", SyntaxWarning)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.Module))]:
        lists: dict[str, list[str]] = {}
        for stmt in func.body:  # in order: a task's list is the last assignment before its extend call
            if isinstance(stmt, ast.Assign) and isinstance(stmt.value, (ast.List, ast.Tuple)):
                texts = [_text(e) for e in stmt.value.elts]
                for target in stmt.targets:
                    if isinstance(target, ast.Name):
                        lists[target.id] = [t for t in texts if t is not None]
            elif isinstance(stmt, ast.Expr) and (found := _extend_call(stmt.value)):
                task, name = found
                if not lists.get(name):
                    raise SeedFileError(
                        f"{path}:{stmt.lineno}: task {task!r} has no seed instructions "
                        f"(no list of strings named {name!r} before it)"
                    )
                yield from ((task, text) for text in lists[name])


def _tsv_pairs(path: Path):
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if not rows or not {"task_name", "instructions"} <= set(rows[0]):
        found = sorted(rows[0]) if rows else "no rows"
        raise SeedFileError(
            f"{path}: expected TSV columns task_name, instructions; found {found}. Accepted formats: {FORMATS}"
        )
    return [(r["task_name"], r["instructions"]) for r in rows if str(r.get("origin", "-1")).strip() in ("-1", "")]


def _jsonl_pairs(path: Path):
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
                yield row["task"], row["instruction"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise SeedFileError(
                    f"{path}: line {lineno} is not a {{'task', 'instruction'}} object ({err}). "
                    f"Accepted formats: {FORMATS}"
                ) from err


def load_seeds(path: str | Path) -> list[Seed]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"seed file {path} does not exist")
    if path.suffix == ".py":
        return _from_pairs(_python_pairs(path), path)
    if path.suffix == ".tsv":
        return _from_pairs(_tsv_pairs(path), path)
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise SeedFileError(f"{path}: expected a mapping task -> list of instructions. Accepted formats: {FORMATS}")
        for task, texts in data.items():
            if not texts:
                raise SeedFileError(f"{path}: task {task!r} has no seed instructions")
        return _from_pairs(((task, text) for task, texts in data.items() for text in texts), path)
    if path.suffix == ".jsonl":
        return _from_pairs(_jsonl_pairs(path), path)
    raise SeedFileError(f"{path}: unknown seed file type {path.suffix!r}. Accepted formats: {FORMATS}")


def held_out_tasks(held_out: str = "paper") -> tuple[str, ...]:
    if held_out not in HELD_OUT:
        raise ValueError(f"unknown held-out list {held_out!r}; choose {' or '.join(HELD_OUT)}")
    return HELD_OUT[held_out]


def augmentable(seeds: list[Seed], held_out: str = "paper") -> list[Seed]:
    skip = set(PURE_PLACEHOLDER_TASKS) | set(held_out_tasks(held_out))
    return [s for s in seeds if s.task not in skip]


def summary(seeds: list[Seed], held_out: str = "paper") -> dict:
    aug = augmentable(seeds, held_out)
    counts = Counter(p for s in seeds for p in placeholders(s.text))
    return {
        "tasks": len({s.task for s in seeds}),
        "seeds": len(seeds),
        "augmentable_tasks": len({s.task for s in aug}),
        "augmentable_seeds": len(aug),
        "placeholders": dict(counts.most_common()),
    }


def _main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m instraug.seeds", description="Summarise a seed file.")
    parser.add_argument("path")
    parser.add_argument("--held-out", choices=sorted(HELD_OUT), default="paper")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    info = summary(load_seeds(args.path), args.held_out)
    if args.json:
        print(json.dumps(info, indent=1, ensure_ascii=False))
    else:
        for key, value in info.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    _main()
