"""Seed instructions: read them, never execute them.

Formats: the project's JSONL (``{"task": ..., "instruction": ...}`` per line) or YAML
(``{task: [instruction, ...]}``); the official ``raw_instructions.tsv`` (columns ``task_name``,
``instructions``); and the official ``instruction_gen.py``, parsed with ``ast``: every string or f-string
inside a list that is the value of a task-name key is a seed, f-string expressions kept as ``{expr}``.

``python -m instraug.seeds PATH --json`` prints tasks, seeds, the augmentable subset (without the
pure-placeholder tasks and the held-out test tasks, shared spec 2.1 step 1) and placeholder counts.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from instraug.placeholders import placeholders

PURE_PLACEHOLDER_TASKS = {"open-domain_VQA", "VQA"}
TEST_TASKS = {"visual_spatial_reasoning", "visual_text_extraction", "text_vqa", "medic_disaster_types",
              "grounded_VQA", "visual_nli", "natural_language_visual_reasoning", "commonsense_VQA",
              "visual_dialog_has_hist", "visual_dialog_no_hist"}


@dataclass(frozen=True)
class Seed:
    seed_id: str  # "<task>#<k>"
    task: str
    text: str

    def pool_row(self) -> dict:
        """This seed as a row of an instruction pool (its own root)."""
        return {"id": self.seed_id, "task": self.task, "text": self.text, "origin": "seed", "root_id": self.seed_id}


def _from_pairs(pairs) -> list[Seed]:
    counts: Counter = Counter()
    out = []
    for task, text in pairs:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"seed {task}#{counts[task]}: empty instruction")
        out.append(Seed(f"{task}#{counts[task]}", task, text))
        counts[task] += 1
    return out


def _fstring(node: ast.JoinedStr) -> str:
    parts = []
    for value in node.values:
        if isinstance(value, ast.Constant):
            parts.append(str(value.value))
        else:  # FormattedValue: keep the expression text, never evaluate it
            parts.append("{" + ast.unparse(value.value) + "}")
    return "".join(parts)


def _python_pairs(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and isinstance(key.value, str) and isinstance(value, (ast.List, ast.Tuple)):
                    for item in value.elts:
                        if isinstance(item, ast.Constant) and isinstance(item.value, str):
                            yield key.value, item.value
                        elif isinstance(item, ast.JoinedStr):
                            yield key.value, _fstring(item)


def load_seeds(path: str | Path) -> list[Seed]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"seed file {path} does not exist")
    if path.suffix == ".py":
        return _from_pairs(_python_pairs(path))
    if path.suffix == ".tsv":
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        if rows and not {"task_name", "instructions"} <= set(rows[0]):
            raise ValueError(f"{path}: expected TSV columns task_name, instructions; found {sorted(rows[0])}")
        return _from_pairs((r["task_name"], r["instructions"]) for r in rows)
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return _from_pairs((task, text) for task, texts in data.items() for text in texts)
    pairs = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
                pairs.append((row["task"], row["instruction"]))
            except (json.JSONDecodeError, KeyError) as err:
                raise ValueError(f"{path}: line {lineno} is not a {{'task', 'instruction'}} object ({err})") from err
    return _from_pairs(pairs)


def augmentable(seeds: list[Seed]) -> list[Seed]:
    return [s for s in seeds if s.task not in PURE_PLACEHOLDER_TASKS | TEST_TASKS]


def summary(seeds: list[Seed]) -> dict:
    aug = augmentable(seeds)
    counts = Counter(p for s in seeds for p in placeholders(s.text))
    return {"tasks": len({s.task for s in seeds}), "seeds": len(seeds),
            "augmentable_tasks": len({s.task for s in aug}), "augmentable_seeds": len(aug),
            "placeholders": dict(counts.most_common())}


def _main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m instraug.seeds", description="Summarise a seed file.")
    parser.add_argument("path")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    info = summary(load_seeds(args.path))
    if args.json:
        print(json.dumps(info, indent=1, ensure_ascii=False))
    else:
        for key, value in info.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    _main()
