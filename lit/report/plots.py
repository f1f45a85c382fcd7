"""Results table and plot for a set of demo runs: per metric, mean ± sd over seeds per arm, bootstrap CIs.

An arm is one configuration being compared: a mask scope (``vit``, ``lit_all``, ``lit_nosys``, ``lit``),
an instruction ratio of the MIns+ sweep (``eps0.5``) or an instruction weight of the weighted-span sweep (``iw0.1``:
``loss=lit`` with ``loss.weights={instruction: 0.1}``). Runs are dicts ``{"arm", "seed", "scores":
{task: {metric: value}}, "samples": {task: [per-document rows]}, "log_history": [...]}``; the statistics
(``lit.report.demo_stats``) are computed from the per-document samples, so they are the lmms-eval scores
recomputed item by item, with a 95% bootstrap CI over seeds and test items and, against ``vit``, the paired
difference of each arm (without a ``vit`` arm, against the lowest instruction weight). A weight sweep also gets
``weights.csv`` (one row per weight and metric) and ``weights.png`` (each metric against the instruction weight).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from lit.report.demo_stats import bootstrap, metrics

SCOPE_ORDER = ["vit", "lit_all", "lit_nosys", "lit"]
WEIGHT_PREFIX = "iw"  # an arm of the instruction-weight sweep: iw<weight>
LOSS_TITLE = "training loss per supervised token\n(each arm over its own tokens)"


def weight_arm(weight: float) -> str:
    """The arm of ``loss=lit`` with the instruction weighed ``weight``: ``iw0.01``."""
    return f"{WEIGHT_PREFIX}{float(weight):g}"


def instruction_weight(arm: str) -> float | None:
    """``iw0.01`` -> 0.01; None for an arm of another kind."""
    return float(arm[len(WEIGHT_PREFIX) :]) if arm.startswith(WEIGHT_PREFIX) else None


def _arm_key(arm: str) -> tuple:
    if arm in SCOPE_ORDER:
        return (0, SCOPE_ORDER.index(arm), "")
    if arm.startswith("eps"):
        return (1, float(arm[3:]), "")
    if instruction_weight(arm) is not None:
        return (2, instruction_weight(arm), "")
    return (3, 0, arm)


def _baseline(arms: list[str]) -> str | None:
    """What the other arms are compared with: ``vit``, else the lowest instruction weight (0: ``vit``'s labels)."""
    if "vit" in arms:
        return "vit"
    return next((a for a in arms if instruction_weight(a) is not None), None)


def summarise(runs: list[dict], train_yes_share: float, n_boot: int = 1000) -> dict:
    arms = sorted({r["arm"] for r in runs}, key=_arm_key)
    baseline = _baseline(arms)
    out = {"arms": arms, "seeds": sorted({r["seed"] for r in runs}), "n_boot": n_boot, "metrics": {}}
    if baseline is not None:
        out["baseline"] = baseline
    for metric in metrics(train_yes_share):
        stats = bootstrap(runs, arms, metric, n_boot=n_boot, baseline=baseline or "vit")
        if stats is not None:
            out["metrics"][metric.key] = stats
    return out


def _ci(ci: list[float]) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def markdown_table(summary: dict) -> str:
    arms = summary["arms"]
    baseline = summary.get("baseline", "vit")
    others = [a for a in arms if a != baseline] if baseline in arms else []
    head = (
        "| metric | n items | "
        + " | ".join(f"{a}: mean ± sd (95% CI)" for a in arms)
        + "".join(f" | {a} − {baseline} (95% CI)" for a in others)
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
        "difference draws the same seeds and items for both arms (paired). ↓: lower is better."
        + (
            f" {WEIGHT_PREFIX}<w>: `loss=lit` with `loss.weights={{instruction: <w>}}` (template sentences, system "
            "prompt and roles 0, response and end of turn 1)."
            if any(instruction_weight(a) is not None for a in arms)
            else ""
        ),
    ]
    return "\n".join(lines)


def weights_csv(summary: dict) -> str:
    """The weight sweep as CSV: one row per instruction weight and metric (mean, sd and 95% CI over seeds and items,
    the per-seed values, the paired difference from the baseline arm)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        ["instruction_weight", "metric", "label", "lower_is_better", "n_items", "mean", "sd", "ci95_low", "ci95_high"]
        + ["seed_values", "diff_baseline", "diff_mean", "diff_ci95_low", "diff_ci95_high"]
    )
    for arm in summary["arms"]:
        weight = instruction_weight(arm)
        if weight is None:
            continue
        for key, row in summary["metrics"].items():
            s = row["arms"].get(arm)
            if not s:
                continue
            d = s.get("diff")
            writer.writerow(
                [f"{weight:g}", key, row["label"], row["lower_is_better"], row["n_items"]]
                + [f"{s['mean']:.4f}", f"{s['sd']:.4f}", *(f"{c:.4f}" for c in s["ci95"])]
                + [" ".join(f"{v:.4f}" for v in s["values"])]
                + ([d["baseline"], f"{d['mean']:+.4f}", *(f"{c:+.4f}" for c in d["ci95"])] if d else ["", "", "", ""])
            )
    return buf.getvalue()


def plot(runs: list[dict], summary: dict, path: str | Path) -> None:
    """One panel per metric (bars: mean over seeds, whiskers: 95% CI, dots: seeds; dashed: chance and prior
    lines), and the training loss curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = summary["arms"]
    keys = list(summary["metrics"])
    colours = {arm: plt.get_cmap("tab10")(i % 10) for i, arm in enumerate(arms)}
    fig, flat, n_panels = _panel_grid(len(keys) + 1)
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
        _reference_lines(ax, row)
        ax.set_xticks(list(xs))
        ax.set_xticklabels(arms, fontsize=7, rotation=30 if len(arms) > 3 else 0)
        _style_panel(ax, row, key)
    _loss_panel(flat[len(keys)], runs, summary, colours)
    _finish(
        fig, flat[n_panels:], f"demo: test scores through lmms-eval; bars = mean over seeds {summary['seeds']}", path
    )


def _panel_grid(n_panels: int):
    """A figure of ``n_panels`` panels, at most 5 a row: the figure, its axes in reading order, ``n_panels``."""
    import matplotlib.pyplot as plt

    cols = min(5, n_panels)
    rows = -(-n_panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols, 3.0 * rows), squeeze=False)
    return fig, axes.ravel(), n_panels


def _style_panel(ax, row: dict, key: str) -> None:
    """A metric panel's title (with "lower is better" where it is), its y range (scores in [0, 1]) and ticks."""
    title = textwrap.fill(row["label"] + (" (lower is better)" if row["lower_is_better"] else ""), 34)
    ax.set_title(title, fontsize=8)
    if key != "vc":
        ax.set_ylim(0, 1.05)
    ax.tick_params(axis="y", labelsize=7)


def _finish(fig, unused_axes, title: str, path) -> None:
    """Blank the unused panels, add the title with what the marks mean, and save the figure to ``path``."""
    import matplotlib.pyplot as plt

    for ax in unused_axes:
        ax.axis("off")
    fig.suptitle(f"{title}, whiskers = 95% bootstrap CI over seeds and items, dots = seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _reference_lines(ax, row: dict) -> None:
    """A metric's chance and prior lines (dashed), with a legend where it has any."""
    for style, (name, value) in zip(["--", ":", "-."], row["lines"].items()):
        ax.axhline(value, color="grey", ls=style, lw=1, label=name)
    if row["lines"]:
        ax.legend(fontsize=6, loc="best")


def _loss_panel(ax, runs: list[dict], summary: dict, colours: dict, title: str = LOSS_TITLE) -> None:
    """The training loss of every run, one colour per arm (labelled once, on the first seed)."""
    for r in runs:
        steps = [e["step"] for e in r["log_history"] if "loss" in e]
        losses = [e["loss"] for e in r["log_history"] if "loss" in e]
        ax.plot(
            steps,
            losses,
            color=colours[r["arm"]],
            alpha=0.7,
            lw=1,
            label=r["arm"] if r["seed"] == summary["seeds"][0] else None,
        )
    ax.set_yscale("log")
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("step", fontsize=7)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6)


def weight_curve(runs: list[dict], summary: dict, path: str | Path) -> None:
    """Each metric against the instruction weight of the sweep's arms (line: mean over seeds, whiskers: 95% CI,
    dots: seeds). The x-axis is symmetric-log: linear up to the smallest weight above 0, logarithmic after, so 0
    sits on it beside 0.01 ... 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [a for a in summary["arms"] if instruction_weight(a) is not None]
    weights = [instruction_weight(a) for a in arms]
    positive = [w for w in weights if w > 0]
    linthresh = min(positive) if positive else 1.0
    keys = list(summary["metrics"])
    colours = {arm: plt.get_cmap("viridis")(i / max(1, len(arms) - 1)) for i, arm in enumerate(arms)}
    fig, flat, n_panels = _panel_grid(len(keys) + 1)
    for ax, key in zip(flat, keys):
        row = summary["metrics"][key]
        present = [(w, row["arms"][a]) for w, a in zip(weights, arms) if a in row["arms"]]
        xs = [w for w, _ in present]
        means = [s["mean"] for _, s in present]
        errors = [[s["mean"] - s["ci95"][0] for _, s in present], [s["ci95"][1] - s["mean"] for _, s in present]]
        ax.errorbar(xs, means, yerr=errors, color="tab:blue", marker="o", ms=4, capsize=3, lw=1.2)
        for w, s in present:
            ax.scatter([w] * len(s["values"]), s["values"], color="black", s=8, zorder=3)
        _reference_lines(ax, row)
        ax.set_xscale("symlog", linthresh=linthresh, linscale=0.5)
        ax.set_xlim(-0.5 * linthresh if min(weights) <= 0 else min(weights) / 1.5, max(weights) * 1.5)
        ax.set_xticks(weights)
        ax.set_xticklabels([f"{w:g}" for w in weights], fontsize=7)
        ax.set_xlabel("instruction weight", fontsize=7)
        _style_panel(ax, row, key)
    weighted = "training loss: weighted sum / divisor\n(loss.normalization; each arm its own tokens)"
    _loss_panel(flat[len(keys)], [r for r in runs if r["arm"] in colours], summary, colours, weighted)
    title = f"demo, loss=lit with the instruction weighed w (loss.weights): mean over seeds {summary['seeds']}"
    _finish(fig, flat[n_panels:], title, path)


def write_report(runs: list[dict], out_dir: str | Path, train_yes_share: float) -> str:
    """Write metrics.json, table.md and plot.png under ``out_dir`` (with instruction-weight arms also weights.csv and
    weights.png); returns the markdown table."""
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
    if any(instruction_weight(a) is not None for a in summary["arms"]):
        (out_dir / "weights.csv").write_text(weights_csv(summary))
        weight_curve(runs, summary, out_dir / "weights.png")
    return table
