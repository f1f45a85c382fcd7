"""Per-item statistics of the demo: each metric as a function of per-item sums, bootstrapped over seeds and items.

A run's lmms-eval samples (``<run>/eval/samples/<task>.jsonl``) and VC values give, per test item, a few
numbers (``correct``, ``said_yes``, ``hallucinated`` ...). Every demo metric is a ratio of sums of such
numbers over the items (accuracy = Σ correct / n; F1 = 2·TP / (2·TP + FP + FN); CHAIR_I = Σ hallucinated
mentions / Σ mentions), so one resampling of the items is one index array, and the bootstrap is a few
array sums. The comparison is paired: every arm is scored on the same items and trained with the same
seeds, so one resample draws seeds and items once and applies them to both arms.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Metric:
    key: str  # name in metrics.json and the table
    label: str
    task: str  # lmms-eval task whose samples hold the items ("vc": the VC analysis)
    columns: Callable[[dict], dict[str, float] | None]  # one sample row -> its numbers (None: not an item of it)
    value: Callable[[dict[str, np.ndarray]], np.ndarray]  # column sums (each shape (B,)) -> metric (B,)
    lines: dict[str, float] = field(default_factory=dict)  # reference lines for the plot: name -> value
    lower_is_better: bool = False


def _pope(row: dict) -> dict[str, float]:
    r = row["pope_accuracy"]
    yes, truth = r["pred"] == "yes", r["answer"] == "yes"
    return {
        "n": 1,
        "correct": float(r["pred"] == r["answer"]),
        "yes": float(yes),
        "tp": float(yes and truth),
        "fp": float(yes and not truth),
        "fn": float(not yes and truth),
    }


def _vqa(row: dict) -> dict[str, float]:
    return {"n": 1, "correct": float(row["vqa_accuracy"])}


def _trap(row: dict) -> dict[str, float] | None:
    return {"n": 1, "correct": float(row["trap_accuracy"])} if "trap_accuracy" in row else None


def _chair(row: dict) -> dict[str, float]:
    from lit.eval.tasks.scoring import chair_scores

    r = row["chair"]
    scores = chair_scores([r])  # this caption alone: CHAIR_S is 0 or 100, CHAIR_I its share of bad mentions
    mentions = len(r["mentioned"])
    return {"n": 1, "any_bad": scores["chair_s"] / 100, "mentions": mentions, "bad": scores["chair_i"] / 100 * mentions}


def _ratio(num: str, den: str) -> Callable[[dict], np.ndarray]:
    return lambda s: s[num] / np.maximum(s[den], 1e-12)


def _f1(s: dict) -> np.ndarray:
    return 2 * s["tp"] / np.maximum(2 * s["tp"] + s["fp"] + s["fn"], 1e-12)


def metrics(train_yes_share: float) -> list[Metric]:
    """The demo's metrics with their reference lines (``train_yes_share``: the share of "Yes" probes in training)."""
    chance = {"chance (4 colours)": 0.25}
    return [
        Metric(
            "pope_accuracy", "POPE-style accuracy", "demo_pope", _pope, _ratio("correct", "n"), {"constant answer": 0.5}
        ),
        Metric("pope_f1", "POPE-style F1", "demo_pope", _pope, _f1, {"always yes": 2 / 3}),
        Metric(
            "pope_yes_ratio",
            "POPE-style yes-ratio",
            "demo_pope",
            _pope,
            _ratio("yes", "n"),
            {"test truth": 0.5, "training prior": train_yes_share},
        ),
        Metric("vqa_accuracy", "colour VQA accuracy", "demo_vqa", _vqa, _ratio("correct", "n"), chance),
        Metric(
            "trap_accuracy", "colour VQA, prior trap (triangles)", "demo_vqa", _trap, _ratio("correct", "n"), chance
        ),
        Metric(
            "vqa_unseen_accuracy",
            "colour VQA, unseen phrasings",
            "demo_vqa_unseen",
            _vqa,
            _ratio("correct", "n"),
            chance,
        ),
        Metric(
            "chair_s",
            "CHAIR_S (captions with a hallucinated object)",
            "demo_caption",
            _chair,
            _ratio("any_bad", "n"),
            lower_is_better=True,
        ),
        Metric(
            "chair_i",
            "CHAIR_I (hallucinated object mentions)",
            "demo_caption",
            _chair,
            _ratio("bad", "mentions"),
            lower_is_better=True,
        ),
        Metric(
            "vc",
            "mean VC (nats, answer log-prob: image − noise)",
            "vc",
            lambda row: {"n": 1, "vc": row["vc"]},
            _ratio("vc", "n"),
            {"image ignored": 0.0},
        ),
    ]


def item_table(metric: Metric, runs: list[dict]) -> dict[str, np.ndarray] | None:
    """Per-item columns of ``metric`` for every run: ``{column: array (n_runs, n_items)}``, items in the same
    order for every run (by document id); None if a run lacks the task's samples."""
    tables = []
    for run in runs:
        rows = run.get("samples", {}).get(metric.task)
        if rows is None:
            return None
        cols = [c for c in (metric.columns(r) for r in rows) if c is not None]
        tables.append({k: np.array([c[k] for c in cols], dtype=float) for k in cols[0]} if cols else {})
    if not tables or any(len(t.get("n", [])) != len(tables[0].get("n", [])) for t in tables) or not tables[0]:
        return None
    return {k: np.stack([t[k] for t in tables]) for k in tables[0]}


def bootstrap(
    runs: list[dict], arms: list[str], metric: Metric, n_boot: int = 1000, seed: int = 0, baseline: str = "vit"
) -> dict | None:
    """Mean ± sd over seeds per arm, a 95% bootstrap CI of each arm's mean, and of the paired difference
    arm − ``baseline``; resampling seeds and items together (the same draw for every arm)."""
    table = item_table(metric, runs)
    if table is None:
        return None
    seeds = sorted({r["seed"] for r in runs})
    index = {(r["arm"], r["seed"]): i for i, r in enumerate(runs)}
    rng = np.random.default_rng(seed)
    n_items = table["n"].shape[1]
    seed_draw = rng.integers(0, len(seeds), size=(n_boot, len(seeds)))
    item_draw = rng.integers(0, n_items, size=(n_boot, n_items))
    out: dict = {
        "label": metric.label,
        "n_items": n_items,
        "lines": metric.lines,
        "lower_is_better": metric.lower_is_better,
        "arms": {},
    }
    boots = {}
    for arm in arms:
        rows = [index.get((arm, s)) for s in seeds]
        if None in rows:
            continue
        per_seed = np.array(
            [float(metric.value({k: v[i].sum(keepdims=True) for k, v in table.items()})[0]) for i in rows]
        )
        # (B, seeds): the metric of each drawn seed on the drawn items
        sums = {k: v[rows][:, item_draw].sum(-1).T for k, v in table.items()}  # (B, seeds)
        drawn = metric.value(sums)
        boot = np.take_along_axis(drawn, seed_draw, axis=1).mean(1)
        boots[arm] = boot
        out["arms"][arm] = {
            "mean": float(per_seed.mean()),
            "sd": float(per_seed.std(ddof=1)) if len(rows) > 1 else 0.0,
            "values": per_seed.tolist(),
            "ci95": np.percentile(boot, [2.5, 97.5]).tolist(),
        }
    if baseline in boots:
        for arm, boot in boots.items():
            if arm != baseline:
                diff = boot - boots[baseline]
                out["arms"][arm]["diff"] = {
                    "baseline": baseline,
                    "mean": out["arms"][arm]["mean"] - out["arms"][baseline]["mean"],
                    "ci95": np.percentile(diff, [2.5, 97.5]).tolist(),
                }
    return out


def load_samples(run_dir: str | Path) -> dict[str, list[dict]]:
    """The per-document samples lmms-eval logged for a run (every ``eval*/samples/<task>.jsonl``) and its VC."""
    run_dir = Path(run_dir)
    samples: dict[str, list[dict]] = {}
    for path in sorted(run_dir.glob("eval*/samples/*.jsonl")):
        samples[path.stem] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    vc = run_dir / "vc.json"
    if vc.is_file():
        samples["vc"] = [{"vc": v} for v in json.loads(vc.read_text())["vc"]]
    return samples
