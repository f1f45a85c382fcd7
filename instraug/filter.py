"""The rule filter (shared spec 2.1 step 4), with a count of every rejection per rule per task.

A generated instruction is kept iff
- R1/R2: ``0 < words < max_ratio x words(parent)`` (too short or too long generations hallucinate);
- R3: its placeholder multiset equals the *root seed's* (order free);
- R4 (optional, off as in the official code): no contractions ``'d`` / ``'ll``;
- it differs from its parent (after normalising case and white space) — the official check compared
  against the placeholder-filled input and so only worked for seeds without placeholders;
- it is not a duplicate of a kept instruction of the same task (exact after normalising), nor a near
  duplicate (token-set Jaccard similarity >= ``near_dup``).
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
    near_dup: float = 0.9


@dataclass
class FilterReport:
    rejected: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # task -> rule -> n
    kept: Counter = field(default_factory=Counter)

    def to_json(self) -> dict:
        return {"kept": dict(self.kept), "rejected": {t: dict(c) for t, c in self.rejected.items()},
                "rejected_by_rule": dict(sum(self.rejected.values(), Counter()))}


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


def apply(rows: list[dict], seeds: dict[str, str], cfg: FilterConfig, report: FilterReport | None = None,
          kept_before: list[dict] = ()) -> list[dict]:
    """Keep the rows (``{"task", "text", "parent_text", "root_id", ...}``) that pass; seeds = root_id -> text.

    Duplicates are checked against the seeds, ``kept_before`` (earlier Iter rounds) and the rows kept so far.
    """
    report = report if report is not None else FilterReport()
    kept: list[dict] = []
    seen: dict[str, set[str]] = defaultdict(set)
    token_sets: dict[str, list[set[str]]] = defaultdict(list)
    earlier = [(root_id.rsplit("#", 1)[0], text) for root_id, text in seeds.items()]
    for task, text in earlier + [(r["task"], r["text"]) for r in kept_before]:
        seen[task].add(_norm(text))
        token_sets[task].append(_tokens(text))
    for row in rows:
        task, text = row["task"], row["text"]
        reason = reject_reason(text, row["parent_text"], seeds[row["root_id"]], cfg)
        if reason is None and _norm(text) in seen[task]:
            reason = "duplicate"
        if reason is None:
            toks = _tokens(text)
            if any(len(toks & other) / max(len(toks | other), 1) >= cfg.near_dup for other in token_sets[task]):
                reason = "near_duplicate"
        if reason:
            report.rejected[task][reason] += 1
            continue
        seen[task].add(_norm(text))
        token_sets[task].append(_tokens(text))
        report.kept[task] += 1
        kept.append(row)
    return kept
