"""The generated fragments of README.md, BENCHMARKS.md and docs/*.md, rendered from the committed results.

A fragment sits between two HTML comments, each a line of its own, which Markdown viewers do not show::

    <!-- generated: demo-table -->
    ... (written by this module; edit the results, then run `make docs`) ...
    <!-- /generated -->

The name after ``generated:`` picks the renderer (``RENDERERS``); each reads files under the repository root
(``results/``, ``benchmarks/results_*.json``, ``conf/recipe/``) and reuses the tables the results were written
with (``lit.report.plots.markdown_table``, ``lit.report.tables.markdown``). ``tests/test_docs.py`` checks
that the committed files equal a fresh render, so a result edited without ``make docs`` fails the tests.

    python -m lit.report.docs            (make docs)   rewrite every fragment in place
    python -m lit.report.docs --check                  exit 1 naming the files whose fragments are stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FILES = ("README.md", "BENCHMARKS.md", "docs/*.md")
# Markers are whole lines (a marker quoted inside a sentence is not one).
FRAGMENT = re.compile(r"^(<!-- generated: ([\w-]+) -->\n)(.*?)^(<!-- /generated -->)$", re.S | re.M)
OPEN = re.compile(r"^<!-- generated: ([\w-]+) -->$", re.M)
CLOSE = re.compile(r"^<!-- /generated -->$", re.M)


def _json(root: Path, rel: str) -> dict:
    return json.loads((root / rel).read_text())


def _n(x: float, digits: int = 0) -> str:
    """A number with thousands separators: 1733 -> 1,733; 9.19 (digits=2) -> 9.19."""
    return f"{x:,.{digits}f}"


# --- the demo ---------------------------------------------------------------------------------------------


def demo_table(root: Path) -> str:
    """``make demo``'s table, as ``results/demo/table.md`` holds it (``lit.report.plots.markdown_table``)."""
    from lit.report.plots import markdown_table

    return markdown_table(_json(root, "results/demo/metrics.json")["summary"])


def demo_seeds(root: Path) -> str:
    """Every metric of ``make demo`` per seed and arm (``results/demo/metrics.json``)."""
    summary = _json(root, "results/demo/metrics.json")["summary"]
    arms, seeds = summary["arms"], summary["seeds"]
    lines = [
        "| metric | " + " | ".join(f"{a}, seeds {' / '.join(map(str, seeds))}" for a in arms) + " |",
        "|---" * (len(arms) + 1) + "|",
    ]
    for row in summary["metrics"].values():
        cells = [" / ".join(f"{v:.3f}" for v in row["arms"][a]["values"]) if a in row["arms"] else "–" for a in arms]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# The demo's targets for the VIT arm (docs/demo.md): metric key -> (label, lowest, highest allowed mean).
DEMO_TARGETS = {
    "pope_accuracy": ("POPE-style accuracy", 0.80, None),
    "pope_yes_ratio": ("POPE-style yes-ratio", 0.40, 0.60),
    "vqa_accuracy": ("colour VQA accuracy", 0.80, None),
}


def demo_targets(root: Path) -> str:
    """The VIT arm's mean and seeds against each target of the demo (``results/demo/metrics.json``)."""
    metrics = _json(root, "results/demo/metrics.json")["summary"]["metrics"]
    lines = ["| target (VIT, mean over seeds) | mean | seeds | met |", "|---|---|---|---|"]
    for key, (label, low, high) in DEMO_TARGETS.items():
        vit = metrics[key]["arms"]["vit"]
        bound = f"in [{low:.2f}, {high:.2f}]" if high is not None else f"≥ {low:.2f}"
        met = low <= vit["mean"] and (high is None or vit["mean"] <= high)
        lines.append(
            f"| {label} {bound} | {vit['mean']:.3f} | {' / '.join(f'{v:.3f}' for v in vit['values'])} | "
            f"{'yes' if met else '**no**'} |"
        )
    return "\n".join(lines)


def _arm_label(arm: str) -> str:
    from lit.report.plots import instruction_weight

    if arm.startswith("eps"):
        return f"ε = {float(arm[3:]):g}"
    weight = instruction_weight(arm)
    return f"w = {weight:g}" if weight is not None else arm


def _means_table(root: Path, folder: str) -> str:
    """A demo sweep's means, one column per arm (``results/<folder>/table.md`` has the CIs and the differences)."""
    summary = _json(root, f"results/{folder}/metrics.json")["summary"]
    arms = summary["arms"]
    lines = ["| metric | " + " | ".join(_arm_label(a) for a in arms) + " |", "|---" * (len(arms) + 1) + "|"]
    for row in summary["metrics"].values():
        arrow = " ↓" if row["lower_is_better"] else ""
        cells = [f"{row['arms'][a]['mean']:.3f}" if a in row["arms"] else "–" for a in arms]
        lines.append(f"| {row['label']}{arrow} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Seeds: {summary['seeds']}. ↓: lower is better. 95% CIs and the paired differences against "
        f"`{summary.get('baseline', 'vit')}`: `results/{folder}/table.md`.",
    ]
    return "\n".join(lines)


def demo_sweep_table(root: Path) -> str:
    """``make demo-sweep``'s means, one column per arm (one seed: ``results/demo_sweep/table.md`` has the CIs)."""
    return _means_table(root, "demo_sweep")


def demo_weights_table(root: Path) -> str:
    """``make demo-weights``'s means, one column per instruction weight (``results/demo_weights/``)."""
    return _means_table(root, "demo_weights")


# --- recipes and paper tables -----------------------------------------------------------------------------


def recipes_table(root: Path) -> str:
    """Every recipe's title, job count and requested GPU-hours: the numbers its dry run prints first."""
    from lit import recipes

    lines = ["| recipe | table | jobs | GPU-hours requested |", "|---|---|---|---|"]
    for name in recipes.available():
        recipe = recipes.load(name)
        todo = recipes.jobs(recipe, Path("/nonexistent"))
        lines.append(f"| `{name}` | {recipe['title']} | {len(todo)} | {recipes.gpu_hours(todo):g} |")
    return "\n".join(lines)


def loss_scopes(root: Path) -> str:
    """The four scopes' supervised span kinds (``lit.mask.scopes``) beside L2T's Table 4 rows and gains
    (``conf/recipe/l2t_t4.yaml`` maps each row to its scope's run; the gains: ``results/paper/l2t_t4.csv``)."""
    import csv

    from lit import recipes
    from lit.constants import SPAN_KINDS
    from lit.mask.scopes import SCOPES

    recipe = recipes.load("l2t_t4")
    with open(root / "results" / "paper" / recipe["paper"], newline="") as fh:
        gains = {r["row"]: r["relative gain over VIT (%)"] for r in csv.DictReader(fh)}
    lines = ["| `loss=` | supervised span kinds | L2T Table 4 row | relative gain over VIT (%) |", "|---|---|---|---|"]
    for row in recipe["table"]["rows"]:
        scope = max((s for s in SCOPES if row["experiment"].endswith(f"_{s}")), key=len)  # sft_llava7b_<scope>
        kinds = ", ".join(k for k in SPAN_KINDS if k in SCOPES[scope])
        lines.append(f"| `{scope}` | {kinds} | {row['label']} | {gains.get(row['label'], '–') or '–'} |")
    return "\n".join(lines)


def paper_tables(root: Path) -> str:
    """Each recipe's table as ``make tables`` writes it (``lit.report.tables.markdown``): our cells from
    ``results/runs/`` (– where not run), then the paper's numbers from ``results/paper/``."""
    import csv

    from lit import recipes
    from lit.report import tables

    blocks = []
    for name in recipes.available():
        recipe = recipes.load(name)
        if "table" not in recipe:
            continue
        rows = tables.collect(recipe["table"], root / "results" / "runs")
        paper = None
        if recipe.get("paper"):
            with open(root / "results" / "paper" / recipe["paper"], newline="") as fh:
                paper = list(csv.DictReader(fh))
        md = tables.markdown(
            recipe["title"], [c["label"] for c in recipe["table"]["columns"]], rows, paper, recipe.get("paper")
        )
        blocks.append(f"#{md.strip()}\n\nRecipe: `conf/recipe/{name}.yaml`.")  # ## -> ###: under this page's ##
    return "\n\n".join(blocks)


# --- the config groups (conf/) ----------------------------------------------------------------------------

# Each config group (a folder of conf/) with what it sets; a folder missing here fails the render.
CONFIG_GROUPS = {
    "model": (
        "what to train and how it is built: `tiny*` on CPU, `*_stage1` compose stage 1, the rest load a checkpoint"
    ),
    "data": "the training set, its paths and limits",
    "loss": "the mask scope (the table in Train)",
    "adapter": "full fine-tuning or LoRA (`lora`: r 128, alpha 256, lr 2e-4, the projector in full at 2e-5, as "
    "LLaVA-1.5's `finetune_lora.sh`)",
    "schedule": "each published training schedule once (`train`, the DeepSpeed choice, the global batch, the "
    "stage); a model names its own",
    "deepspeed": "the ZeRO stage",
    "eval": "lmms-eval tasks and scoring settings",
    "augmentation": "InstrAug generation and MIns+ sampling",
    "experiment": "one paper run as deltas over the groups",
    "architecture": "published architectures without weights (`lit.train.plan`, `make smoke`)",
    "logger": "experiment logging (`wandb` offline by default)",
    "paths": "where data, outputs and results live (`LIT_ROOT`, `LIT_DATA_DIR`, `LIT_OUTPUT_DIR`)",
    "site": "Slurm settings of `make repro` and the submitit launcher",
    "hydra/launcher": "where a multirun runs (Hydra's local launcher unless set)",
    "local": "machine-specific values, git-ignored, loaded last if present",
}
# Groups whose folders hold a user's own files (a cluster's site, git-ignored local values): their options are
# stated, not listed, so the render does not depend on the machine.
FIXED_OPTIONS = {
    "site": "`default`, `example_cluster`, `local_cpu`; your own `<name>` (docs/cluster.md)",
    "local": "your own `default` (`conf/local/default.yaml`)",
}
NOT_GROUPS = {"recipe", "hydra"}  # conf/recipe is read by lit.recipes; conf/hydra holds the launcher group


def _options(folder: Path) -> str:
    """The group's options; a base that others derive from (``name: ???``, e.g. ``eval/default``) is none."""
    names = sorted(p.stem for p in folder.glob("*.yaml") if "\nname: ???" not in "\n" + p.read_text())
    if len(names) <= 14:
        return ", ".join(f"`{n}`" for n in names) or "—"
    prefixes: dict[str, int] = {}
    for n in names:  # many options (experiment): by family
        key = n.split("_")[0]
        prefixes[key] = prefixes.get(key, 0) + 1
    return ", ".join(f"`{k}_…` ({v})" for k, v in prefixes.items())


def config_groups(root: Path) -> str:
    """Every config group of ``conf/`` with its options, read from the folders."""
    conf = root / "conf"
    found = {p.name for p in conf.iterdir() if p.is_dir()} - NOT_GROUPS
    unknown = sorted(found - set(CONFIG_GROUPS))
    if unknown:
        raise KeyError(f"conf/{unknown[0]}/ is a config group without a line in lit.report.docs.CONFIG_GROUPS")
    lines = ["| group | what it sets | options |", "|---|---|---|"]
    for group, what in CONFIG_GROUPS.items():
        lines.append(f"| `{group}` | {what} | {FIXED_OPTIONS.get(group) or _options(conf / group)} |")
    return "\n".join(lines)


# --- benchmarks (benchmarks/results_*.json) ---------------------------------------------------------------


def bench_labels(root: Path) -> str:
    r = _json(root, "benchmarks/results_labels.json")
    lines = [
        "| what | result |",
        "|---|---|",
        f"| template mining, {_n(r['records_mined'])} conversations (read + hash + count) | "
        f"**{r['mining_seconds']:.1f} s** (goal ≤ 60 s); {r['templates_found']} templates at share ≥ 1% |",
    ]
    for scope, rate in r["conversations_per_second"].items():
        lines.append(
            f"| label building, `{scope}`, {_n(r['label_records'])} conversations | {_n(rate)} conversations/s |"
        )
    return "\n".join(lines)


def bench_mining(root: Path) -> str:
    r = _json(root, "benchmarks/results_mining.json")
    return "\n".join(
        [
            f"| {_n(r['records'])} conversations ({r['file_mb']} MB) | seconds | ours / it |",
            "|---|---|---|",
            f"| ours (`mine_file`, hash included) | **{r['ours_seconds']:.2f}** | |",
            f"| plain miner | {r['plain_seconds']:.2f} | **{r['ratio_ours_over_plain']:.2f}** |",
            f"| plain miner, garbage collector paused | {r['plain_gc_paused_seconds']:.2f} | "
            f"**{r['ratio_ours_over_plain_gc_paused']:.2f}** (goal ≤ 1) |",
            "",
            f"Templates at share ≥ {r['min_share']:g}: {r['templates']}; largest share of an option line "
            f"(`max_option_line_share`): {r['max_option_line_share']}.",
        ]
    )


def bench_label_cache(root: Path) -> str:
    r = _json(root, "benchmarks/results_label_cache.json")
    s = r["seconds"]
    return "\n".join(
        [
            f"| {_n(r['records'])} conversations | seconds |",
            "|---|---|",
            f"| cache miss: label + write | {s['build_and_write']:.2f} |",
            f"| cache hit: hash + read back | {s['read_back']:.2f} |",
            f"| **speed-up** | **{r['speedup']:.1f}×** (cache {r['cache_mb']:.0f} MB) |",
        ]
    )


def bench_step_time(root: Path) -> str:
    r = _json(root, "benchmarks/results_step_time.json")
    m, t = r["median_step_s"], r["supervised_tokens_per_step"]
    return "\n".join(
        [
            f"| batch {r['batch']}, median over {r['steps_timed']} steps | VIT | LIT |",
            "|---|---|---|",
            f"| median step | {m['vit']:.4f} s | {m['lit']:.4f} s |",
            f"| supervised tokens / step | {t['vit']:.0f} | {t['lit']:.0f} |",
            f"| **LIT / VIT throughput** | | **{r['lit_over_vit_throughput']:.4f}** (goal ≥ 0.995) |",
        ]
    )


def bench_instraug(root: Path) -> str:
    r = _json(root, "benchmarks/results_instraug.json")
    g = r["generations_per_s"]
    return "\n".join(
        [
            f"| {r['jobs']} generations, {r['new_tokens']} new tokens each | official shape (2 per call) | "
            f"pipeline ({r['batch']} per call) |",
            "|---|---|---|",
            f"| generations/s | {g['official_2_at_a_time']:.1f} | {g['pipeline']:.1f} |",
            f"| **speed-up** | | **{r['speedup']:.1f}×** |",
        ]
    )


def bench_zero3_rss(root: Path) -> str:
    r = _json(root, "benchmarks/results_zero3_rss.json")
    rows = [
        ("fixed_mmap_threshold", "before_train", "**at training start, `MALLOC_MMAP_THRESHOLD_=131072`**"),
        ("fixed_mmap_threshold", "after_train", "after the step, same"),
        ("fixed_mmap_threshold", "exit", "at exit (rank 0 gathered the weights to save), same"),
        ("default_malloc", "before_train", "at training start, glibc default malloc"),
        ("default_malloc", "after_train", "after the step, default malloc"),
        ("default_malloc", "exit", "at exit, default malloc"),
    ]
    lines = [
        f"| peak RSS, MB (rank 0 / rank 1); {r['params'] / 1e6:.1f}M parameters, {_n(r['full_fp32_mb'])} MB in fp32 "
        "| before: model, then args | after: args, then zero.Init |",
        "|---|---|---|",
    ]
    for malloc, when, label in rows:
        cells = [
            " / ".join(_n(r[malloc][code][rank][when]) for rank in ("rank0", "rank1")) for code in ("before", "after")
        ]
        if label.startswith("**"):
            cells[1] = f"**{cells[1]}**"
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def bench_label_workers(root: Path) -> str:
    r = _json(root, "benchmarks/results_label_workers.json")
    s, rate = r["seconds"], r["records_per_s"]
    return "\n".join(
        [
            f"| {_n(r['records'])} conversations | 1 process | 2 processes | speed-up |",
            "|---|---|---|---|",
            f"| seconds | {s['1']:.2f} | {s['2']:.2f} | {r['speedup']['2']:.2f}× |",
            f"| conversations/s | {_n(rate['1'])} | {_n(rate['2'])} | |",
        ]
    )


RENDERERS: dict[str, Callable[[Path], str]] = {
    "demo-table": demo_table,
    "demo-seeds": demo_seeds,
    "demo-targets": demo_targets,
    "demo-sweep-table": demo_sweep_table,
    "demo-weights-table": demo_weights_table,
    "loss-scopes": loss_scopes,
    "recipes-table": recipes_table,
    "config-groups": config_groups,
    "paper-tables": paper_tables,
    "bench-labels": bench_labels,
    "bench-mining": bench_mining,
    "bench-label-cache": bench_label_cache,
    "bench-step-time": bench_step_time,
    "bench-instraug": bench_instraug,
    "bench-zero3-rss": bench_zero3_rss,
    "bench-label-workers": bench_label_workers,
}


def doc_files(root: Path = ROOT) -> list[Path]:
    return sorted({p for pattern in FILES for p in root.glob(pattern)})


def render_text(text: str, root: Path = ROOT, where: str = "") -> str:
    """``text`` with every fragment rendered afresh from the files under ``root``."""
    opened = OPEN.findall(text)
    matched = FRAGMENT.findall(text)
    if len(opened) != len(matched) or len(CLOSE.findall(text)) != len(matched):
        raise ValueError(
            f"{where}: a `<!-- generated: NAME -->` marker without its `<!-- /generated -->` (or the other way round)"
        )

    def fresh(m: re.Match) -> str:
        name = m.group(2)
        if name not in RENDERERS:
            raise KeyError(f"{where}: unknown generated fragment {name!r}; known: {', '.join(RENDERERS)}")
        return f"{m.group(1)}{RENDERERS[name](root).rstrip()}\n{m.group(4)}"

    return FRAGMENT.sub(fresh, text)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lit.report.docs", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a fragment is stale")
    parser.add_argument("--root", default=str(ROOT), help="repository root (results and docs are read from it)")
    args = parser.parse_args(argv)
    root = Path(args.root)
    stale = []
    for path in doc_files(root):
        text = path.read_text()
        new = render_text(text, root, str(path.relative_to(root)))
        if new != text:
            stale.append(str(path.relative_to(root)))
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        sys.exit(f"stale generated fragments in {', '.join(stale)}: run `make docs`")
    print(("rewritten: " + ", ".join(stale)) if stale and not args.check else "every generated fragment is current")


if __name__ == "__main__":
    main()
