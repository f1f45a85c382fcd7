"""Pool summary (per task: seeds, kept generations, expansion factor) and the length-distribution plot."""

from __future__ import annotations

from collections import Counter
from pathlib import Path


def pool_table(pool: list[dict]) -> str:
    seeds = Counter(r["task"] for r in pool if r["origin"] == "seed")
    gens = Counter(r["task"] for r in pool if r["origin"] == "generated")
    lines = ["| task | seeds | generated (kept) | expansion |", "|---|---|---|---|"]
    for task in sorted(seeds):
        lines.append(f"| {task} | {seeds[task]} | {gens[task]} | {(seeds[task] + gens[task]) / seeds[task]:.1f}x |")
    total_s, total_g = sum(seeds.values()), sum(gens.values())
    lines.append(f"| **all** | {total_s} | {total_g} | {(total_s + total_g) / max(total_s, 1):.1f}x |")
    return "\n".join(lines)


def length_plot(pool: list[dict], path: str | Path) -> None:
    """Instruction length (words) of seeds vs generated instructions (InstrAug's Fig. 5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for origin, colour in (("seed", "tab:blue"), ("generated", "tab:orange")):
        lengths = [len(r["text"].split()) for r in pool if r["origin"] == origin]
        if lengths:
            ax.hist(
                lengths,
                bins=range(0, max(lengths) + 2),
                alpha=0.6,
                density=True,
                color=colour,
                label=f"{origin} (n={len(lengths)})",
            )
    ax.set(xlabel="instruction length (words)", ylabel="share", title="instruction lengths")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
