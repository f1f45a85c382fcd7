"""Results table and plot for a set of demo runs: per metric, mean ± sd over seeds per arm, bootstrap CIs.

An arm is one configuration being compared: a mask scope (``vit``, ``lit_all``, ``lit_nosys``, ``lit``)
or an instruction ratio of the MIns+ sweep (``eps0.5``). Runs are dicts ``{"arm", "seed", "scores":
{task: {metric: value}}, "samples": {task: [per-document rows]}, "log_history": [...]}``; the statistics
(``lit.report.demo_stats``) are computed from the per-document samples, so they are the lmms-eval scores
recomputed item by item, with a 95% bootstrap CI over seeds and test items and, against ``vit``, the paired
difference of each arm.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from lit.report.demo_stats import bootstrap, metrics

SCOPE_ORDER = ["vit", "lit_all", "lit_nosys", "lit"]


def _arm_key(arm: str) -> tuple:
    if arm in SCOPE_ORDER:
        return (0, SCOPE_ORDER.index(arm), "")
    if arm.startswith("eps"):
        return (1, float(arm[3:]), "")
    return (2, 0, arm)


def summarise(runs: list[dict], train_yes_share: float, n_boot: int = 1000) -> dict:
    arms = sorted({r["arm"] for r in runs}, key=_arm_key)
    out = {"arms": arms, "seeds": sorted({r["seed"] for r in runs}), "n_boot": n_boot, "metrics": {}}
    for metric in metrics(train_yes_share):
        stats = bootstrap(runs, arms, metric, n_boot=n_boot)
        if stats is not None:
            out["metrics"][metric.key] = stats
    return out


def _ci(ci: list[float]) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def markdown_table(summary: dict) -> str:
    arms = summary["arms"]
    others = [a for a in arms if a != "vit"] if "vit" in arms else []
    head = (
        "| metric | n items | "
        + " | ".join(f"{a}: mean ± sd (95% CI)" for a in arms)
        + "".join(f" | {a} − vit (95% CI)" for a in others)
        + " |"
    )
    lines = [head, "|" + "---|" * (2 + len(arms) + len(others))]
    for row in summary["metrics"].values():
        cells = []
        for a in arms:
            s = row["arms"].get(a)
            cells.append(f"{s['mean']:.3f} ± {s['sd']:.3f} {_ci(s['ci95'])}" if s else "–")
        for a in others:
            d = row["arms"].get(a, {}).get("diff")
            cells.append(f"{d['mean']:+.3f} {_ci(d['ci95'])}" if d else "–")
        arrow = " ↓" if row["lower_is_better"] else ""
        lines.append(f"| {row['label']}{arrow} | {row['n_items']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Seeds: {summary['seeds']}; each changes the model initialisation and the data order, the images "
        "and answers are the same for every arm (epsilon arms reword the instructions). sd: over seeds. "
        f"CIs: percentile bootstrap ({summary['n_boot']} draws) over seeds and test items together; a "
        "difference draws the same seeds and items for both arms (paired). ↓: lower is better.",
    ]
    return "\n".join(lines)


def plot(runs: list[dict], summary: dict, path: str | Path) -> None:
    """One panel per metric (bars: mean over seeds, whiskers: 95% CI, dots: seeds; dashed: chance and prior
    lines), and the training loss curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = summary["arms"]
    keys = list(summary["metrics"])
    colours = {arm: plt.get_cmap("tab10")(i % 10) for i, arm in enumerate(arms)}
    n_panels = len(keys) + 1
    cols = min(5, n_panels)
    rows = -(-n_panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols, 3.0 * rows), squeeze=False)
    flat = axes.ravel()
    line_styles = ["--", ":", "-."]
    for ax, key in zip(flat, keys):
        row = summary["metrics"][key]
        xs = range(len(arms))
        for x, arm in zip(xs, arms):
            s = row["arms"].get(arm)
            if not s:
                continue
            lo, hi = s["ci95"]
            ax.bar(x, s["mean"], 0.7, color=colours[arm], alpha=0.85)
            ax.errorbar(x, s["mean"], yerr=[[s["mean"] - lo], [hi - s["mean"]]], color="black", capsize=4, lw=1.2)
            ax.scatter([x] * len(s["values"]), s["values"], color="black", s=8, zorder=3)
        for style, (name, value) in zip(line_styles, row["lines"].items()):
            ax.axhline(value, color="grey", ls=style, lw=1, label=name)
        if row["lines"]:
            ax.legend(fontsize=6, loc="best")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(arms, fontsize=7, rotation=30 if len(arms) > 3 else 0)
        title = textwrap.fill(row["label"] + (" (lower is better)" if row["lower_is_better"] else ""), 34)
        ax.set_title(title, fontsize=8)
        if key != "vc":
            ax.set_ylim(0, 1.05)
        ax.tick_params(axis="y", labelsize=7)
    ax_loss = flat[len(keys)]
    for r in runs:
        steps = [e["step"] for e in r["log_history"] if "loss" in e]
        losses = [e["loss"] for e in r["log_history"] if "loss" in e]
        ax_loss.plot(
            steps,
            losses,
            color=colours[r["arm"]],
            alpha=0.7,
            lw=1,
            label=r["arm"] if r["seed"] == summary["seeds"][0] else None,
        )
    ax_loss.set_yscale("log")
    ax_loss.set_title("training loss per supervised token\n(each arm over its own tokens)", fontsize=8)
    ax_loss.set_xlabel("step", fontsize=7)
    ax_loss.tick_params(labelsize=7)
    ax_loss.legend(fontsize=6)
    for ax in flat[n_panels:]:
        ax.axis("off")
    fig.suptitle(
        f"demo: test scores through lmms-eval; bars = mean over seeds {summary['seeds']}, "
        "whiskers = 95% bootstrap CI over seeds and items, dots = seeds",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(runs: list[dict], out_dir: str | Path, train_yes_share: float) -> str:
    """Write metrics.json, table.md and plot.png under ``out_dir``; returns the markdown table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarise(runs, train_yes_share)
    table = markdown_table(summary)
    (out_dir / "metrics.json").write_text(
        json.dumps(
            {
                "summary": summary,
                "runs": [{k: v for k, v in r.items() if k not in ("log_history", "samples")} for r in runs],
            },
            indent=1,
        )
    )
    (out_dir / "table.md").write_text(table + "\n")
    plot(runs, summary, out_dir / "plot.png")
    return table
