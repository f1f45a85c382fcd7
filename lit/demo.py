"""The embedded demo: synthetic data -> train each arm (same seeds, same data) -> lmms-eval -> report.

``python -m lit.demo [--seeds 0 1 2] [--scopes vit lit] [--epsilons 0 0.5 1] [--instruction-weights 0 0.1 1]
[overrides ...]``; ``make demo`` runs VIT vs LIT, ``make demo-sweep`` the mask-scope ladder and a MIns+ epsilon
sweep, ``make demo-weights`` the instruction-weight sweep. An arm is a mask scope (``experiment=demo_<scope>``), an
instruction ratio (``experiment=demo_mins_plus augmentation.epsilon=<e>``) or an instruction weight
(``experiment=demo_lit loss.weights={instruction:<w>}``: weighted spans, the rest of ``lit``'s weights kept). Each
run composes the same Hydra config ``train.py`` uses and goes through the same ``lit.train.run.run``; finished runs
(checkpoint + scores present) are reused, so an interrupted demo resumes where it stopped (``--fresh`` retrains).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from lit.paths import conf_dir
from lit.report.plots import instruction_weight, weight_arm

CONF_DIR = conf_dir()


def arm_overrides(arm: str) -> list[str]:
    """``vit`` -> the demo with that mask scope; ``eps0.5`` -> the MIns+ demo at epsilon 0.5; ``iw0.1`` -> the LIT
    demo with the instruction tokens weighed 0.1 (template sentences, system prompt and roles keep 0, the response
    and end of turn 1)."""
    if arm.startswith("eps"):
        return ["experiment=demo_mins_plus", f"augmentation.epsilon={float(arm[3:])}"]
    weight = instruction_weight(arm)
    if weight is not None:
        return ["experiment=demo_lit", f"loss.weights={{instruction:{weight:g}}}"]
    return [f"experiment=demo_{arm}"]


def compose_run(arm: str, seed: int, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[*arm_overrides(arm), f"seed={seed}", f"model.init_seed={seed}", *overrides])


def score_run(cfg, ckpt: Path, out: Path) -> dict:
    """lmms-eval on ``ckpt`` with the composed config's ``eval`` group, as ``evaluate.py`` scores."""
    from lit.eval.evaluate import evaluate
    from lit.eval.spec import EvalSpec

    return evaluate(ckpt, EvalSpec.from_config(cfg.eval), out, chat_template=cfg.model.chat_template)


def run_one(arm: str, seed: int, overrides: list[str], runs_dir: Path, fresh: bool) -> dict:
    from lit.train.run import run

    cfg = compose_run(arm, seed, overrides)
    run_dir = runs_dir / f"{arm}-s{seed}"
    scores_file = run_dir / "eval" / "scores.json"
    with open_dict(cfg):
        cfg.output_dir = str(run_dir)
    stamp = run_dir / "demo_config.yaml"  # the composed config the finished run was trained with
    wanted = OmegaConf.to_yaml(cfg, resolve=True)
    if fresh or (scores_file.exists() and (not stamp.is_file() or stamp.read_text() != wanted)):
        if not fresh:
            print(f"=== {run_dir} was trained with other settings: retraining", flush=True)
        shutil.rmtree(run_dir, ignore_errors=True)
    if not scores_file.exists():
        t0 = time.time()
        print(f"\n=== training {arm} seed {seed} -> {run_dir}", flush=True)
        if cfg.data.get("mins_plus"):  # the arm's MIns+ set, as build_mins_plus.py builds it
            from instraug.arm import build_for
            from lit.data.build import generate_demo_data

            generate_demo_data(cfg.data)
            build_for(cfg.data)
        run(cfg, run_dir)
        stamp.write_text(wanted)
        print(f"=== scoring {arm} seed {seed} with lmms-eval ({time.time() - t0:.0f}s so far)", flush=True)
        score_run(cfg, run_dir / "checkpoint", run_dir / "eval")
    record = json.loads(scores_file.read_text())
    vc_file = run_dir / "vc.json"
    if not vc_file.exists():
        print(f"=== visual contribution of {arm} seed {seed}", flush=True)
        write_vc(run_dir / "checkpoint", Path(cfg.data.root), cfg.model.chat_template, vc_file, n=cfg.eval.vc_items)
    from lit.report.demo_stats import load_samples

    scores = record["scores"]
    history = json.loads((run_dir / "log_history.json").read_text())
    return {
        "arm": arm,
        "seed": seed,
        "run_dir": str(run_dir),
        "scores": scores,
        "log_history": history,
        "samples": load_samples(run_dir),
    }


def write_vc(ckpt: Path, data_root: Path, chat_template: str, out: Path, n: int) -> dict:
    """L2T's visual contribution (``lit.eval.vc.analyse``) on the first ``n`` test questions of the demo (one
    question-answer pair per record)."""
    from lit.eval.vc import analyse

    records = json.loads((data_root / "test.json").read_text())[:n]
    result = analyse(str(ckpt), records, str(data_root), template=chat_template)
    keep = {k: v for k, v in result.items() if k in ("checkpoint", "n", "vc_mean", "vc_sd", "vc")}
    out.write_text(json.dumps(keep, indent=1))
    return keep


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_all(
    jobs: list[tuple[str, int]], cfg, overrides: list[str], runs_dir: Path, fresh: bool, n_jobs: int
) -> list[dict]:
    """Every (arm, seed) run, ``n_jobs`` at a time in worker processes (each with its share of the CPU threads).
    ``cfg`` is the first job's composed config: its data set is generated here, and the first run starts alone
    until it has written what all runs share (the tokenizer)."""
    import os
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from lit.data.build import generate_demo_data

    generate_demo_data(cfg.data)
    if n_jobs <= 1 or len(jobs) == 1:
        return [run_one(arm, seed, overrides, runs_dir, fresh) for arm, seed in jobs]
    threads = max(1, (os.cpu_count() or 1) // n_jobs)
    shared = Path(cfg.model.tokenizer) / "tokenizer_config.json" if cfg.model.get("tokenizer") else None
    with ProcessPoolExecutor(
        n_jobs, mp_context=get_context("spawn"), initializer=_worker_init, initargs=(threads,)
    ) as pool:
        first = pool.submit(run_one, *jobs[0], overrides, runs_dir, fresh)
        while shared is not None and not shared.exists() and not first.done():
            time.sleep(0.5)
        rest = [pool.submit(run_one, arm, seed, overrides, runs_dir, fresh) for arm, seed in jobs[1:]]
        return [first.result(), *(f.result() for f in rest)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lit.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--scopes", nargs="*", default=["vit", "lit"], choices=["vit", "lit_all", "lit_nosys", "lit"])
    parser.add_argument(
        "--epsilons",
        nargs="*",
        type=float,
        default=[],
        help="MIns+ arms: instruction ratios on the demo seeds and their rewrites",
    )
    parser.add_argument(
        "--instruction-weights",
        nargs="*",
        type=float,
        default=[],
        help="weighted-span arms: loss=lit with loss.weights={instruction: W} for each W (0: vit's labels, 1: lit's); "
        "adds weights.csv and weights.png (score vs W) to --out",
    )
    parser.add_argument("--runs-dir", default="outputs/demo")
    parser.add_argument("--out", default="results/demo")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at the same time (CPU threads are shared)")
    parser.add_argument("--fresh", action="store_true", help="retrain even if a finished run exists")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every run, e.g. train.max_steps=100")
    args = parser.parse_args(argv)

    from lit.report.plots import write_report

    start = time.time()
    arms = [*args.scopes, *(f"eps{e}" for e in args.epsilons), *map(weight_arm, args.instruction_weights)]
    jobs = [(arm, seed) for seed in args.seeds for arm in arms]
    cfg = compose_run(*jobs[0], args.overrides)
    runs = run_all(jobs, cfg, args.overrides, Path(args.runs_dir), args.fresh, args.jobs)
    table = write_report(runs, args.out, train_yes_share=cfg.data.yes_share)
    extra = ", weights.csv, weights.png" if args.instruction_weights else ""
    print(f"\n{table}\n\nwritten: {args.out}/table.md, metrics.json, plot.png{extra} ({time.time() - start:.0f}s)")


if __name__ == "__main__":
    main()
