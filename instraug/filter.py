"""The rule filter, with a count of every rejection per rule per task.

It follows the official InstrAug filter (SOURCES.md [D]: `MultiInstruct/instruction_gen.py`, lines 955-975).

A generated instruction is kept iff
- R1/R2: ``0 < words < max_ratio x words(parent)`` (too short or too long generations hallucinate);
- R3: its placeholder multiset equals the *root seed's* (order free);
- R4 (optional, off as in the official code): no contractions ``'d`` / ``'ll``;
- it differs from its parent (after normalising case and white space) — the official check compared
  against the placeholder-filled input and so only worked for seeds without placeholders;
- it is not a duplicate (exact after normalising case and white space) of a rewrite already kept from the
  same seed (``dedup="seed"``, the official ``gen_results`` check), or, with ``dedup="task"``, of any
  seed or kept rewrite of its task;
- optionally (``near_dup``, off as in the official code) not a near duplicate of one of those (token-set
  Jaccard similarity >= ``near_dup``).
Seeds are always kept.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from instraug.placeholders import multiset

RULES = ("empty", "too_long", "placeholders", "contraction", "same_as_parent", "duplicate", "near_duplicate")


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"\w+|\{.*?\}", text.lower()))


@dataclass
class FilterConfig:
    max_ratio: float = 2.0
    forbid_contractions: bool = False
    dedup: str = "seed"  # seed (official) | task
    near_dup: float | None = None


@dataclass
class FilterReport:
    rejected: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # task -> rule -> n
    kept: Counter = field(default_factory=Counter)
    cache_lines_dropped: list = field(default_factory=list)  # {"file", "line"}: cut off by a killed run, made again

    def to_json(self) -> dict:
        return {
            "kept": dict(self.kept),
            "rejected": {t: dict(c) for t, c in self.rejected.items()},
            "rejected_by_rule": dict(sum(self.rejected.values(), Counter())),
            "cache_lines_dropped": list(self.cache_lines_dropped),
        }


def reject_reason(text: str, parent: str, root: str, cfg: FilterConfig) -> str | None:
    words, parent_words = len(text.split()), len(parent.split())
    if words == 0:
        return "empty"
    if words >= cfg.max_ratio * parent_words:
        return "too_long"
    if multiset(text) != multiset(root):
        return "placeholders"
    if cfg.forbid_contractions and re.search(r"'(d|ll)\b", text):
        return "contraction"
    if _norm(text) == _norm(parent):
        return "same_as_parent"
    return None


def apply(
    rows: list[dict],
    seeds: dict[str, str],
    cfg: FilterConfig,
    report: FilterReport | None = None,
    kept_before: list[dict] = (),
) -> list[dict]:
    """Keep the rows (``{"task", "text", "parent_text", "root_id", ...}``) that pass; seeds = root_id -> text.

    Duplicates are checked against the seeds, ``kept_before`` (earlier Iter rounds) and the rows kept so far.
    """
    if cfg.dedup not in ("seed", "task"):
        raise ValueError(f"filter.dedup must be seed or task, got {cfg.dedup!r}")
    report = report if report is not None else FilterReport()
    kept: list[dict] = []
    seen: dict[str, set[str]] = defaultdict(set)  # scope -> normalised texts
    token_sets: dict[str, list[set[str]]] = defaultdict(list)

    def scope(task: str, parent_id: str) -> str:
        return task if cfg.dedup == "task" else parent_id

    earlier = (
        [(root_id.rsplit("#", 1)[0], root_id, text) for root_id, text in seeds.items()] if cfg.dedup == "task" else []
    )
    for task, parent_id, text in earlier + [(r["task"], r.get("parent_id", ""), r["text"]) for r in kept_before]:
        seen[scope(task, parent_id)].add(_norm(text))
        token_sets[scope(task, parent_id)].append(_tokens(text))
    for row in rows:
        task, text = row["task"], row["text"]
        where = scope(task, row.get("parent_id", row["root_id"]))
        if where not in token_sets:  # per seed: the parent itself is the first text of its scope
            seen[where].add(_norm(row["parent_text"]))
            token_sets[where].append(_tokens(row["parent_text"]))
        reason = reject_reason(text, row["parent_text"], seeds[row["root_id"]], cfg)
        if reason is None and _norm(text) in seen[where]:
            reason = "duplicate"
        if reason is None and cfg.near_dup is not None:
            toks = _tokens(text)
            if any(len(toks & other) / max(len(toks | other), 1) >= cfg.near_dup for other in token_sets[where]):
                reason = "near_duplicate"
        if reason:
            report.rejected[task][reason] += 1
            continue
        seen[where].add(_norm(text))
        token_sets[where].append(_tokens(text))
        report.kept[task] += 1
        kept.append(row)
    return kept
