"""MIns+ builder: one instruction per MultiInstruct instance, drawn from the task's pool, filled safely.

Two ways to draw (``sampling``):

- ``official`` (declare-lab/InstrAug ``build_new_dataset.py`` default, ``random.choice``): uniform over the
  task's seeds and accepted generations together; with ~10 kept rewrites per seed a seed is drawn about
  1 time in 11;
- ``epsilon``: mass ε on the seed group and 1 − ε on the generated group, uniform within each (the
  official ``--with_prob`` form, RAW_LOGIT = ε, GEN_LOGIT = 1 − ε; the repo leaves both undefined). ε = 1 is
  the un-augmented MIns data set, ε = 0 never uses a seed. One uniform draw decides the group, so for a
  fixed seed the ε = 1 set equals the set built from the seeds alone.

A task without generations uses its seeds in both modes. Each instance's fields come from
``instraug.multiinstruct.prepare`` (regions, options string, given region, region info, dialogue
history, target); instructions are filled by ``placeholders.fill``, which parses and never evaluates.
Instances of the tasks the official build drops (image output, VQA_absurd, region_area) are skipped and
counted in the manifest. Each drawn instruction is cleaned before it is filled (``cleanup``):

- ``official`` (``build_with_new_instructions``, ``instruction_gen.py`` lines 1035-1048 and 1128-1141): surrounding
  whitespace stripped (four official seeds start or end with some: ``VG#3``, ``VG_selection#3``,
  ``visual_object_identification#3``, ``VQA_object_recognition#3``), then double quotes and closing parentheses
  at either end; every double quote removed if the text holds ``"{text}"``, every single quote if it holds
  ``'{text}'``; single quotes turned double where both kinds remain. The official code did this to survive its
  ``eval`` of the instruction as an f-string, which is not reproduced (``placeholders.fill`` never evaluates);
  the text the model reads is;
- ``strip``: surrounding whitespace only.
Output: LLaVA JSON (what ``train.py`` reads), MultiInstruct JSONL with ``prompt`` and ``target`` added, and
``mins_plus.json`` (the inputs, their hashes, counts), all written atomically, the manifest last; a set built from
other inputs is never overwritten. Two jobs building the same set take turns (``build_lock``); a full disk leaves
no file of the set (``write``), and the files of a build killed before its manifest are removed and written again
by the next build (``check_existing``, the ``.building`` marker).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import random
from collections import Counter, defaultdict
from pathlib import Path

from instraug.multiinstruct import DROPPED_TASKS, prepare
from instraug.placeholders import UnsafePlaceholder, fill, multiset
from instraug.seeds import load_seeds
from lit.files import DamagedFile, DiskFull, atomic_write, disk_full, file_sha256, is_disk_full, read_jsonl_strict
from lit.records import read_jsonl

log = logging.getLogger(__name__)
SAMPLING = ("official", "epsilon")
CLEANUP = ("official", "strip")
MANIFEST = "mins_plus.json"
BUILDING = ".building"  # written before the set's files, removed after its manifest: a build that never finished


class DatasetMismatch(RuntimeError):
    """An existing MIns+ set was built from other inputs than the ones asked for."""


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
            raise ValueError(
                f"{generated_path}: {g.seed_id} {g.text!r} has no seed of task {g.task!r} with the same placeholders"
            )
        pool.append(
            {
                "id": f"gen:{g.seed_id}",
                "task": g.task,
                "text": g.text,
                "origin": "generated",
                "root_id": roots[0].seed_id,
                "provenance": provenance,
            }
        )
    return pool


def pool_from_official_tsv(path: str | Path) -> list[dict]:
    """The official generation output (``gen_instructions*.tsv``: task_name, instructions, origin, length and,
    after ``filter_instructions``, is_preserved) as a pool: seeds are the rows with ``origin == -1``, generated
    rows are kept where ``is_preserved`` is true (all of them if the column is absent)."""
    import csv

    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if not rows or not {"task_name", "instructions", "origin"} <= set(rows[0]):
        raise ValueError(
            f"{path}: expected the official TSV columns task_name, instructions, origin "
            f"(found {sorted(rows[0]) if rows else 'no rows'})"
        )
    pool, counts = [], Counter()
    for i, row in enumerate(rows):
        seed = row["origin"].strip() == "-1"
        if not seed and str(row.get("is_preserved", "True")).strip().lower() not in ("true", "1"):
            continue
        task = row["task_name"]
        pool.append(
            {
                "id": f"{task}#{counts[task]}" if seed else f"gen:{i}",
                "task": task,
                "text": row["instructions"],
                "origin": "seed" if seed else "generated",
                "provenance": f"file:{Path(path).name}:{i}",
            }
        )
        counts[task] += seed
    return pool


def sample_instruction(
    rng: random.Random, seeds: list[str], generated: list[str], sampling: str = "official", epsilon: float | None = None
) -> tuple[str, str]:
    if sampling == "official":
        k = rng.randrange(len(seeds) + len(generated))
        return (seeds[k], "seed") if k < len(seeds) else (generated[k - len(seeds)], "generated")
    if sampling != "epsilon":
        raise ValueError(f"unknown sampling {sampling!r}; choose {' or '.join(SAMPLING)}")
    if epsilon is None or not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"sampling=epsilon needs epsilon in [0, 1], got {epsilon}")
    use_seed = rng.random() < epsilon or not generated
    group = seeds if use_seed else generated
    return group[rng.randrange(len(group))], "seed" if use_seed else "generated"


def clean_instruction(text: str, cleanup: str = "official") -> str:
    """A drawn instruction as the model will read it (``cleanup``: see the module docstring)."""
    if cleanup not in CLEANUP:
        raise ValueError(f"unknown cleanup {cleanup!r}; choose {' or '.join(CLEANUP)}")
    text = text.strip()
    if cleanup == "strip":
        return text
    text = text.strip('")')
    if '"{text}"' in text:
        text = text.replace('"', "")
    if "'{text}'" in text:
        text = text.replace("'", "")
    if "'" in text and '"' in text:
        text = text.replace("'", '"')
    return text


def build(
    instances: list[dict],
    pool_rows: list[dict],
    sampling: str = "official",
    epsilon: float | None = None,
    seed: int = 0,
    skipped: Counter | None = None,
    cleanup: str = "official",
) -> list[dict]:
    """MultiInstruct instances -> rows with ``prompt``, ``target``, ``instruction``, ``instruction_origin``;
    ``skipped`` (if given) counts the instances of dropped tasks per task."""
    rng = random.Random(seed)
    by_task = pools(pool_rows)
    rows = []
    for i, inst in enumerate(instances):
        task = inst.get("task_name")
        rid = inst.get("unique_id", f"{task}-{i}")
        if task in DROPPED_TASKS:
            if skipped is not None:
                skipped[task] += 1
            continue
        prepared = prepare(inst, rng)
        key = prepared.instruction_task
        if key not in by_task or not by_task[key][0]:
            raise KeyError(f"instance {rid}: no seed instructions for task {key!r} in the pool")
        instruction, origin = sample_instruction(rng, *by_task[key], sampling=sampling, epsilon=epsilon)
        instruction = clean_instruction(instruction, cleanup)
        try:
            prompt = fill(instruction, prepared.fields)
        except UnsafePlaceholder as err:
            raise UnsafePlaceholder(f"instance {rid} ({key}), instruction {instruction!r}: {err}") from err
        rows.append(
            {
                **inst,
                "id": rid,
                "prompt": prompt,
                "target": prepared.target,
                "instruction": instruction,
                "instruction_origin": origin,
            }
        )
    return rows


def to_llava(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        record = {
            "id": row["id"],
            "conversations": [
                {"from": "human", "value": ("<image>\n" if row.get("image_path") else "") + row["prompt"]},
                {"from": "gpt", "value": row["target"]},
            ],
        }
        if row.get("image_path"):
            record["image"] = row["image_path"]
        out.append(record)
    return out


def write(rows: list[dict], out_dir: str | Path, manifest: dict | None = None) -> dict[str, Path]:
    """Write the set atomically (each file renamed into place; the manifest, which marks the set whole, last).
    A write that fails (a full disk: ``lit.files.DiskFull``, one line naming the set) removes the files of the
    set it had already written, so no set without its manifest is left."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"llava": out_dir / "train.json", "multiinstruct": out_dir / "train.jsonl", "manifest": out_dir / MANIFEST}
    texts = {
        "multiinstruct": lambda: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
        "llava": lambda: json.dumps(to_llava(rows), ensure_ascii=False, indent=0),
        "manifest": lambda: json.dumps(manifest or {}, indent=1, sort_keys=True),
    }
    written: list[Path] = [out_dir / BUILDING]
    try:
        atomic_write(out_dir / BUILDING, "a MIns+ build that has not finished (instraug.build.write)\n")
        for name, text in texts.items():
            atomic_write(paths[name], text(), what="the MIns+ set file")
            written.append(paths[name])
        (out_dir / BUILDING).unlink()
    except BaseException as err:
        for path in written:
            path.unlink(missing_ok=True)
        if isinstance(err, (Exception, DiskFull)) and is_disk_full(err, out_dir):
            left = f"none of its files was left; the rerun writes {', '.join(p.name for p in paths.values())}"
            raise disk_full("the MIns+ set", out_dir, err, left) from err
        raise
    return paths


@contextlib.contextmanager
def build_lock(out_dir: Path):
    """Held while one process checks for and builds the set in ``out_dir``: two jobs of one sweep that build the
    same set at once take turns, and the second finds the first's set whole (``check_existing``) instead of its
    files without their manifest. An ``fcntl.flock`` on ``.<out_dir name>.lock`` beside the folder (left there; the
    kernel releases the lock when its holder exits, killed or not). Shared filesystems: NFS maps flock onto its
    byte-range locks; Lustre needs its ``flock`` mount option."""
    lock = out_dir.parent / f".{out_dir.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def inputs_key(
    instances: str | Path,
    pool: str | Path,
    generated: str | Path | None,
    variant: str,
    sampling: str,
    epsilon: float | None,
    seed: int,
    cleanup: str = "official",
) -> dict:
    """Everything a MIns+ set depends on: the files by content, and the drawing settings."""
    for path in (instances, pool, generated):
        if path is not None and not Path(path).exists():
            raise FileNotFoundError(f"MIns+ build input {path} does not exist")
    return {
        "instances": str(instances),
        "instances_sha256": file_sha256(instances),
        "pool": str(pool),
        "pool_sha256": file_sha256(pool),
        "generated": str(generated) if generated else None,
        "generated_sha256": file_sha256(generated) if generated else None,
        "variant": variant,
        "sampling": sampling,
        "epsilon": None if sampling == "official" else float(epsilon),
        "seed": int(seed),
        "cleanup": cleanup,
    }


_IDENTITY = ("instances_sha256", "pool_sha256", "generated_sha256", "variant", "sampling", "epsilon", "seed", "cleanup")


def check_existing(out_dir: str | Path, key: dict, reclaim: bool = False) -> bool:
    """True if ``out_dir`` holds a set built from ``key``'s inputs; False if there is none, or only the files of a
    build that never finished (killed between its files and its manifest: ``reclaim``, under ``build_lock``,
    removes them, logged, for the build to write again); raises if it holds one built from other inputs (or, made
    by something else, one without a manifest)."""
    out_dir = Path(out_dir)
    manifest = out_dir / MANIFEST
    if (out_dir / BUILDING).exists():
        if reclaim:
            left = [p.name for p in (out_dir / "train.json", out_dir / "train.jsonl", manifest) if p.exists()]
            log.warning("%s: a MIns+ build that never finished left %s; removed, building it again", out_dir, left)
            for name in (*left, BUILDING):
                (out_dir / name).unlink(missing_ok=True)
        return False
    if not (out_dir / "train.json").exists() and not manifest.exists():
        return False
    if not manifest.exists():
        raise DatasetMismatch(
            f"{out_dir} holds a MIns+ set without {MANIFEST}: its inputs are unknown. Delete it, "
            "or point data.path elsewhere"
        )
    found = json.loads(manifest.read_text()).get("inputs", {})
    diff = [k for k in _IDENTITY if found.get(k) != key.get(k)]
    if diff:
        detail = "; ".join(f"{k}: built {found.get(k)!r}, asked {key.get(k)!r}" for k in diff)
        raise DatasetMismatch(
            f"{out_dir} was built from other inputs ({detail}). Refusing to use or overwrite it: "
            "delete it to rebuild, or give this arm its own data.path"
        )
    return True


def read_pool(path: str | Path) -> list[dict]:
    """The rows of an ``augment.py`` pool.jsonl. ``augment.py`` writes it whole (a temporary name, then renamed),
    so a broken line means the file was cut by something else (a copy, a full disk): stop, naming the line."""
    remedy = (
        "augment.py writes a pool whole, so this one was cut after it was written (an interrupted copy, a full "
        "disk): delete it and run augment.py again (it resumes from its generation cache), or copy it again"
    )
    rows = read_jsonl_strict(path, "instruction pool", remedy)
    for lineno, row in enumerate(rows, 1):
        if not (isinstance(row, dict) and all(isinstance(row.get(k), str) for k in ("task", "text", "origin"))):
            raise DamagedFile(f"instruction pool {path}: row {lineno} is not a pool row (task, text, origin): {remedy}")
    return rows


def _tsv_header(path: str | Path) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        return fh.readline().rstrip("\r\n").split("\t")


def build_dataset(
    instances: str | Path,
    pool: str | Path,
    out_dir: str | Path,
    variant: str,
    sampling: str = "official",
    epsilon: float | None = None,
    seed: int = 0,
    generated: str | Path | None = None,
    cleanup: str = "official",
) -> dict[str, Path]:
    """Build and write one MIns+ set, unless ``out_dir`` already holds the same one. ``pool`` is an
    ``augment.py`` pool.jsonl, the official ``gen_instructions*.tsv``, or a seed file (plus optionally
    ``generated``, see ``pool_from_files``)."""
    key = inputs_key(instances, pool, generated, variant, sampling, epsilon, seed, cleanup)
    out_dir = Path(out_dir)
    with build_lock(out_dir):  # another job building the same set: wait for it, then use its set
        return _build_unlocked(instances, pool, out_dir, key, generated)


def _build_unlocked(instances, pool, out_dir: Path, key: dict, generated) -> dict[str, Path]:
    variant, sampling, epsilon, seed, cleanup = (key[k] for k in ("variant", "sampling", "epsilon", "seed", "cleanup"))
    if check_existing(out_dir, key, reclaim=True):
        return {
            "llava": out_dir / "train.json",
            "multiinstruct": out_dir / "train.jsonl",
            "manifest": out_dir / MANIFEST,
        }
    if str(pool).endswith(".jsonl"):  # an augment.py pool
        pool_rows = read_pool(pool)
    elif str(pool).endswith(".tsv") and "origin" in _tsv_header(pool):
        pool_rows = pool_from_official_tsv(pool)  # the official gen_instructions*.tsv
    else:  # a seed file, with or without a file of rewrites
        pool_rows = pool_from_files(pool, generated, provenance=f"file:{Path(generated).name}" if generated else "")
    skipped: Counter = Counter()
    rows = build(
        read_jsonl(Path(instances)),
        pool_rows,
        sampling=sampling,
        epsilon=epsilon,
        seed=seed,
        skipped=skipped,
        cleanup=cleanup,
    )
    origins = Counter(r["instruction_origin"] for r in rows)
    manifest = {
        "inputs": key,
        "n_rows": len(rows),
        "instruction_origin": dict(origins),
        "skipped_dropped_tasks": dict(skipped),
    }
    return write(rows, out_dir, manifest)
