"""The `augment.py` job: seeds -> generation -> filter -> pool (+ report, plot). The MIns+ sets built from the
pool are `build_mins_plus.py` jobs, one per arm (``instraug.arm``)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from instraug import pipeline, report
from instraug.backends import build_backend, require_backend
from instraug.filter import FilterConfig
from instraug.seeds import load_seeds
from lit.files import atomic_write

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    a = cfg.augmentation
    require_backend(a.backend.kind, a.backend.args.get("model", "<model>"))  # before anything is read or written
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out / "config.yaml", resolve=True)
    seeds = load_seeds(a.seeds)
    backend = build_backend(a.backend.kind, **OmegaConf.to_container(a.backend.args, resolve=True))
    meta = OmegaConf.to_container(a.meta_prompts, resolve=True)
    acfg = pipeline.AugmentConfig(
        variant=a.variant,
        meta_prompts=meta,
        temperatures=list(a.temperatures),
        samples=a.get("samples", 1),
        rounds=a.rounds,
        top_p=a.top_p,
        max_new_tokens=a.max_new_tokens,
        seed=cfg.seed,
        batch_size=a.batch_size,
        keep_placeholders_hint=a.keep_placeholders_hint,
        reply_lines=a.reply_lines,
        held_out=a.held_out,
    )
    fcfg = FilterConfig(**OmegaConf.to_container(a.filter, resolve=True))
    pool, rep = pipeline.run(seeds, backend, Path(a.cache_dir) / "generations.jsonl", acfg, fcfg)
    if rep.cache_lines_dropped:
        log.warning("%d cut-off generation-cache line(s) dropped and generated again", len(rep.cache_lines_dropped))
    atomic_write(out / "filter_report.json", json.dumps({**rep.to_json(), "config": asdict(acfg)}, indent=1))
    table = report.pool_table(pool)
    atomic_write(out / "pool_summary.md", table + "\n")
    report.length_plot(pool, out / "lengths.png")
    log.info("instruction pool:\n%s", table)
    # the pool marks the job done (lit.recipes): written last, whole or not at all
    atomic_write(out / "pool.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in pool))
    result = {"pool": str(out / "pool.jsonl"), "generated": sum(r["origin"] == "generated" for r in pool)}
    return result
