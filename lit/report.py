"""Results tables and plots for a set of runs (mean ± sd over seeds, per scope)."""

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
]


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(runs: list[dict]) -> dict:
    """runs: {"scope", "seed", "scores": {task: {metric: v}}, "log_history": [...]} -> per-scope stats."""
    scopes = sorted({r["scope"] for r in runs}, key=["vit", "lit_all", "lit_nosys", "lit"].index)
    out = {"scopes": scopes, "seeds": sorted({r["seed"] for r in runs}), "metrics": {}}
    for task, metric, label in METRICS:
        row = {}
        for scope in scopes:
            vals = [r["scores"][task][metric] for r in runs if r["scope"] == scope and metric in r["scores"].get(task, {})]
            if vals:
                mean, sd = _mean_sd(vals)
                row[scope] = {"mean": mean, "sd": sd, "values": vals}
        out["metrics"][f"{task}/{metric}"] = {"label": label, **row}
    return out


def markdown_table(summary: dict) -> str:
    scopes = summary["scopes"]
    head = "| metric | " + " | ".join(f"{s} (mean ± sd)" for s in scopes)
    head += " | Δ lit − vit |" if {"vit", "lit"} <= set(scopes) else " |"
    lines = [head, "|" + "---|" * (len(scopes) + 1 + ({"vit", "lit"} <= set(scopes)))]
    for key, row in summary["metrics"].items():
        cells = [f"{row[s]['mean']:.3f} ± {row[s]['sd']:.3f}" if s in row else "–" for s in scopes]
        line = f"| {row['label']} | " + " | ".join(cells) + " |"
        if {"vit", "lit"} <= set(scopes) and "vit" in row and "lit" in row:
            line += f" {row['lit']['mean'] - row['vit']['mean']:+.3f} |"
        lines.append(line)
    lines.append("")
    lines.append(f"Seeds: {summary['seeds']}. Each seed changes the model initialisation and data order; "
                 "the data set is the same.")
    return "\n".join(lines)


def plot(runs: list[dict], summary: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(12, 4.2))
    colours = {"vit": "tab:blue", "lit_all": "tab:green", "lit_nosys": "tab:purple", "lit": "tab:orange"}
    for r in runs:
        steps = [e["step"] for e in r["log_history"] if "loss" in e]
        losses = [e["loss"] for e in r["log_history"] if "loss" in e]
        ax_loss.plot(steps, losses, color=colours[r["scope"]], alpha=0.7,
                     label=r["scope"] if r["seed"] == summary["seeds"][0] else None)
    ax_loss.set(xlabel="step", ylabel="loss per supervised token", yscale="log",
                title="training loss (each scope over its own supervised tokens)")
    ax_loss.legend()
    keys = list(summary["metrics"])
    width = 0.8 / len(summary["scopes"])
    for i, scope in enumerate(summary["scopes"]):
        means = [summary["metrics"][k].get(scope, {}).get("mean", 0) for k in keys]
        sds = [summary["metrics"][k].get(scope, {}).get("sd", 0) for k in keys]
        ax_score.bar([x + i * width for x in range(len(keys))], means, width, yerr=sds, capsize=3,
                     color=colours[scope], label=scope)
    ax_score.set_xticks([x + width * (len(summary["scopes"]) - 1) / 2 for x in range(len(keys))])
    ax_score.set_xticklabels([textwrap.fill(summary["metrics"][k]["label"], 16) for k in keys], fontsize=7)
    ax_score.set(ylim=(0, 1), title="test scores (lmms-eval), mean ± sd over seeds")
    ax_score.legend()
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
