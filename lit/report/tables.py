"""Collect finished results into the papers' tables: ours next to the paper's numbers, plus plots.

For each recipe (``conf/recipe/<table>.yaml``) with a ``table`` block, the cells are read from the
results store ``results/runs/<experiment>/<task>.json`` (written by ``evaluate.py``); a cell with no
result yet is ``–``. The paper's numbers (``results/paper/<csv>``, with their source; unknown cells
empty, never invented) follow as their own block, since the papers' base models differ from ours.
Written per table: ``results/tables/<table>.md`` (markdown), ``.tex`` (LaTeX tabular) and ``.png``
(bars per row, VIT vs LIT per evaluation set, or the epsilon curve, as the recipe's ``plot`` says).

With ``--wandb`` each table is also a wandb run in the table's group (``lit.tracking``).

    python -m lit.report.tables [--runs results/runs] [--tables demo_t4 l2t_t4 ...] [--wandb]   (make tables)
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from lit import recipes

ROOT = Path(__file__).resolve().parents[2]


def cell(runs_dir: Path, experiment: str, column: dict) -> float | None:
    from lit.eval.evaluate import read_result

    path = runs_dir / experiment / f"{column['task']}.json"
    if not path.exists():
        return None
    value = read_result(path)["scores"].get(column["metric"])
    return None if value is None else value * column.get("scale", 1)


def collect(table: dict, runs_dir: Path) -> list[dict]:
    return [
        {
            "label": row["label"],
            "x": row.get("x"),
            "values": [cell(runs_dir, row["experiment"], c) for c in table["columns"]],
        }
        for row in table["rows"]
    ]


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def markdown(title: str, columns: list[str], rows: list[dict], paper: list[dict] | None, paper_file: str | None) -> str:
    lines = [f"## {title}", "", "Ours:", "", "| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {r['label']} | " + " | ".join(_fmt(v) for v in r["values"]) + " |" for r in rows]
    if paper:
        keys = [k for k in paper[0] if k not in ("source",)]
        lines += [
            "",
            f"Paper (`results/paper/{paper_file}`; empty = not retrieved):",
            "",
            "| " + " | ".join(keys) + " | source |",
            "|---" * (len(keys) + 1) + "|",
        ]
        lines += ["| " + " | ".join(p[k] or "–" for k in keys) + f" | {p['source']} |" for p in paper]
    return "\n".join(lines) + "\n"


def latex(columns: list[str], rows: list[dict]) -> str:
    esc = lambda s: str(s).replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")  # noqa: E731
    out = [
        r"\begin{tabular}{l" + "r" * len(columns) + "}",
        r"\toprule",
        " & ".join([""] + [esc(c) for c in columns]) + r" \\",
        r"\midrule",
    ]
    out += [" & ".join([esc(r["label"])] + [_fmt(v).replace("–", "--") for v in r["values"]]) + r" \\" for r in rows]
    return "\n".join(out + [r"\bottomrule", r"\end{tabular}"]) + "\n"


def plot(kind: str, title: str, columns: list[str], rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(columns) + 2), 4))
    if kind == "curve":
        for j, col in enumerate(columns):
            pts = [(r["x"], r["values"][j]) for r in rows if r["values"][j] is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=col)
        ax.set_xlabel("epsilon (share of original instructions)")
    else:  # bars: one group per column, one bar per row (vit_vs_lit: rows come in VIT/LIT pairs)
        width = 0.8 / max(1, len(rows))
        for i, r in enumerate(rows):
            ax.bar(
                [j + i * width for j in range(len(columns))],
                [v or 0 for v in r["values"]],
                width,
                label=r["label"],
                hatch="//" if kind == "vit_vs_lit" and i % 2 == 0 else None,
            )
        ax.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(len(columns))])
        ax.set_xticklabels(columns, fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def render(name: str, runs_dir: Path, out_dir: Path, paper_dir: Path, wandb: bool = False) -> str:
    recipe = recipes.load(name)
    table = recipe["table"]
    columns = [c["label"] for c in table["columns"]]
    rows = collect(table, runs_dir)
    paper = None
    if recipe.get("paper"):
        with open(paper_dir / recipe["paper"], newline="") as fh:
            paper = list(csv.DictReader(fh))
    out_dir.mkdir(parents=True, exist_ok=True)
    md = markdown(recipe["title"], columns, rows, paper, recipe.get("paper"))
    (out_dir / f"{name}.md").write_text(md)
    (out_dir / f"{name}.tex").write_text(latex(columns, rows))
    plot(table.get("plot", "bars"), recipe["title"], columns, rows, out_dir / f"{name}.png")
    if wandb:
        from lit.tracking import log_summary

        log_summary(
            f"{name}-table",
            "table",
            {f"{r['label']}/{c}": v for r in rows for c, v in zip(columns, r["values"])},
            group=name,
            table=(["row", *columns], [[r["label"], *r["values"]] for r in rows]),
            images={"plot": out_dir / f"{name}.png"},
            config={"recipe": recipe},
            directory=out_dir,
        )
    return md


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lit.report.tables", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default=str(ROOT / "results" / "runs"))
    parser.add_argument("--paper", default=str(ROOT / "results" / "paper"))
    parser.add_argument("--out", default=str(ROOT / "results" / "tables"))
    parser.add_argument("--tables", nargs="*", default=recipes.available())
    parser.add_argument(
        "--wandb",
        action="store_true",
        help="also log each table as a wandb run (group=<table>, job_type=table; WANDB_MODE, default offline)",
    )
    args = parser.parse_args(argv)
    for name in args.tables:
        print(render(name, Path(args.runs), Path(args.out), Path(args.paper), wandb=args.wandb))
    print(f"written: {args.out}/<table>.md, .tex, .png")


if __name__ == "__main__":
    main()
