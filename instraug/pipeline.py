"""The augmentation variants over the generation + filter stages.

- ``base``: every augmentable seed x the prompt mix (``meta_prompts``: name -> replies; the official mix,
  10 per seed) at one temperature, then the filter;
- ``mt`` (multi-temperature): the same over several temperatures (official: 0.50..1.00 step 0.05),
  the union of all outputs filtered together;
- ``iter``: ``rounds`` extra rounds in which the outputs kept so far are rewritten again; R2 is checked
  against the direct parent, R3 against the root seed.
Output: the instruction pool (seeds + kept generations, with provenance) and the filter report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from instraug.backends import Sampling
from instraug.filter import FilterConfig, FilterReport, apply
from instraug.generate import (
    REPLY_LINES,
    candidate_rows,
    jobs_for,
    reply_texts,
    run_jobs,
)
from instraug.meta_prompts import OFFICIAL_MIX, mix
from instraug.placeholders import PLACEHOLDER
from instraug.seeds import Seed, augmentable


@dataclass
class AugmentConfig:
    variant: str = "base"  # base | mt | iter
    meta_prompts: dict | list = field(default_factory=lambda: dict(OFFICIAL_MIX))  # a list: each `samples` times
    temperatures: list[float] = field(default_factory=lambda: [0.6])
    samples: int = 1
    keep_placeholders_hint: bool = False  # official: no hint (it is commented out there)
    reply_lines: str = "official"  # official: the official one-line parse | first | all (parse.py)
    held_out: str = "paper"  # paper (Table 1's 9 tasks) | official (the code's TEST_TASKS)
    rounds: int = 1  # extra rounds for variant=iter
    top_p: float = 0.9
    max_new_tokens: int = 128
    seed: int = 0
    batch_size: int = 64


def run(
    seeds: list[Seed], backend, cache_path, cfg: AugmentConfig, filt: FilterConfig | None = None, progress: bool = True
) -> tuple[list[dict], FilterReport]:
    if cfg.variant not in ("base", "mt", "iter"):
        raise ValueError(f"unknown augmentation variant {cfg.variant!r}; choose base, mt or iter")
    if cfg.reply_lines not in REPLY_LINES:
        raise ValueError(f"augmentation.reply_lines must be one of {', '.join(REPLY_LINES)}, got {cfg.reply_lines!r}")
    filt = filt or FilterConfig()
    report = FilterReport()
    roots = {s.seed_id: s.text for s in seeds}
    parents = [
        {"id": s.seed_id, "task": s.task, "text": s.text, "root_id": s.seed_id}
        for s in augmentable(seeds, cfg.held_out)
    ]
    prompt_mix = mix(cfg.meta_prompts, cfg.samples)
    sampling = Sampling(top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
    temps = cfg.temperatures if cfg.variant == "mt" else cfg.temperatures[:1]
    kept: list[dict] = []
    for round_no in range(1 + (cfg.rounds if cfg.variant == "iter" else 0)):
        jobs = jobs_for(parents, prompt_mix, temps, backend.name, hint=cfg.keep_placeholders_hint)
        replies = run_jobs(jobs, backend, cache_path, sampling, cfg.batch_size, progress, report.cache_lines_dropped)
        for reply in replies:  # a reply with nothing parsable is counted, not silently lost
            if not reply_texts(reply, cfg.reply_lines):
                report.rejected[reply["task"]]["unparsable_reply"] += 1
        rows = candidate_rows(replies, cfg.reply_lines)
        new = apply(rows, roots, filt, report, kept_before=kept)
        for row in new:
            row["round"] = round_no
        kept += new
        # the next round rewrites this round's outputs; pure-placeholder texts give the LLM nothing to rewrite
        parents = [
            {"id": r["id"], "task": r["task"], "text": r["text"], "root_id": r["root_id"]}
            for r in new
            if PLACEHOLDER.sub("", r["text"]).strip()
        ]
    pool = [s.pool_row() for s in seeds]
    pool += [{**r, "origin": "generated"} for r in kept]
    return pool, report
