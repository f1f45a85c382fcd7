"""Results tables and plots for a set of demo runs: mean ± sd over seeds, per arm.

An arm is one configuration being compared: a mask scope (``vit``, ``lit_all``, ``lit_nosys``, ``lit``)
or an instruction ratio of the MIns+ sweep (``eps0.5``). Runs are dicts
``{"arm", "seed", "scores": {task: {metric: value}}, "log_history": [...]}``.
"""

from __future__ import annotations

import json
import statistics
import textwrap
from pathlib import Path

METRICS = [  # (task, metric, label)
    ("demo_pope", "pope_accuracy", "POPE-style accuracy"),
    ("demo_pope", "pope_f1", "POPE-style F1"),
    ("demo_pope", "pope_yes_ratio", "POPE-style yes-ratio (0.5 ideal)"),
    ("demo_vqa", "vqa_accuracy", "colour VQA accuracy"),
    ("demo_vqa", "trap_accuracy", "colour VQA on the prior trap (triangles)"),
    ("demo_vqa_unseen", "vqa_accuracy", "colour VQA, unseen phrasings"),
]
SCOPE_ORDER = ["vit", "lit_all", "lit_nosys", "lit"]


def _arm_key(arm: str) -> tuple:
    if arm in SCOPE_ORDER:
        return (0, SCOPE_ORDER.index(arm), "")
    if arm.startswith("eps"):
        return (1, float(arm[3:]), "")
    return (2, 0, arm)


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(runs: list[dict]) -> dict:
    arms = sorted({r["arm"] for r in runs}, key=_arm_key)
    out = {"arms": arms, "seeds": sorted({r["seed"] for r in runs}), "metrics": {}}
    for task, metric, label in METRICS:
        row = {}
        for arm in arms:
            vals = [r["scores"][task][metric] for r in runs if r["arm"] == arm and metric in r["scores"].get(task, {})]
            if vals:
                mean, sd = _mean_sd(vals)
                row[arm] = {"mean": mean, "sd": sd, "values": vals}
        if row:
            out["metrics"][f"{task}/{metric}"] = {"label": label, **row}
    return out


def markdown_table(summary: dict) -> str:
    arms = summary["arms"]
    delta = {"vit", "lit"} <= set(arms)
    head = "| metric | " + " | ".join(f"{a} (mean ± sd)" for a in arms) + (" | Δ lit − vit |" if delta else " |")
    lines = [head, "|" + "---|" * (len(arms) + 1 + delta)]
    for row in summary["metrics"].values():
        cells = [f"{row[a]['mean']:.3f} ± {row[a]['sd']:.3f}" if a in row else "–" for a in arms]
        line = f"| {row['label']} | " + " | ".join(cells) + " |"
        if delta:
            line += f" {row['lit']['mean'] - row['vit']['mean']:+.3f} |" if "vit" in row and "lit" in row else " – |"
        lines.append(line)
    lines.append("")
    lines.append(f"Seeds: {summary['seeds']}. Each seed changes the model initialisation and data order; the "
                 "images and answers are the same for every arm (epsilon arms reword the instructions).")
    return "\n".join(lines)


def plot(runs: list[dict], summary: dict, path: str | Path) -> None:
    """Loss curves, score bars per arm, and (when the runs hold an epsilon sweep) score against epsilon."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = summary["arms"]
    eps_arms = [a for a in arms if a.startswith("eps")]
    colours = {arm: plt.get_cmap("tab10")(i % 10) for i, arm in enumerate(arms)}
    n_panels = 2 + bool(eps_arms)
    fig, axes = plt.subplots(1, n_panels, figsize=(6 * n_panels, 4.2))
    ax_loss, ax_score = axes[0], axes[1]
    for r in runs:
        steps = [e["step"] for e in r["log_history"] if "loss" in e]
        losses = [e["loss"] for e in r["log_history"] if "loss" in e]
        ax_loss.plot(steps, losses, color=colours[r["arm"]], alpha=0.7,
                     label=r["arm"] if r["seed"] == summary["seeds"][0] else None)
    ax_loss.set(xlabel="step", ylabel="loss per supervised token", yscale="log",
                title="training loss (each arm over its own supervised tokens)")
    ax_loss.legend(fontsize=7)
    keys = list(summary["metrics"])
    width = 0.8 / len(arms)
    for i, arm in enumerate(arms):
        means = [summary["metrics"][k].get(arm, {}).get("mean", 0) for k in keys]
        sds = [summary["metrics"][k].get(arm, {}).get("sd", 0) for k in keys]
        ax_score.bar([x + i * width for x in range(len(keys))], means, width, yerr=sds, capsize=3,
                     color=colours[arm], label=arm)
    ax_score.set_xticks([x + width * (len(arms) - 1) / 2 for x in range(len(keys))])
    ax_score.set_xticklabels([textwrap.fill(summary["metrics"][k]["label"], 16) for k in keys], fontsize=7)
    ax_score.set(ylim=(0, 1), title="test scores (lmms-eval), mean ± sd over seeds")
    ax_score.legend(fontsize=7)
    if eps_arms:
        ax_eps = axes[2]
        xs = [float(a[3:]) for a in eps_arms]
        for key in keys:
            row = summary["metrics"][key]
            if all(a in row for a in eps_arms) and "yes_ratio" not in key:
                ax_eps.errorbar(xs, [row[a]["mean"] for a in eps_arms], yerr=[row[a]["sd"] for a in eps_arms],
                                marker="o", capsize=3, label=textwrap.fill(row["label"], 28))
        ax_eps.set(xlabel="epsilon (share of original instructions)", ylim=(0, 1), title="MIns+ epsilon sweep")
        ax_eps.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(runs: list[dict], out_dir: str | Path) -> str:
    """Write metrics.json, table.md and plot.png under ``out_dir``; returns the markdown table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarise(runs)
    table = markdown_table(summary)
    (out_dir / "metrics.json").write_text(json.dumps({"summary": summary, "runs": [
        {k: v for k, v in r.items() if k != "log_history"} for r in runs]}, indent=1))
    (out_dir / "table.md").write_text(table + "\n")
    plot(runs, summary, out_dir / "plot.png")
    return table
