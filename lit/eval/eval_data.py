"""Evaluation data for the lit_* evaluation tasks: fetch from the Hugging Face hub once, keep on disk.

``python -m lit.eval.eval_data fetch pope mme hallusion chair caption --out data/eval`` saves each hub data set
with ``datasets.save_to_disk`` under ``<out>/<name>``, where the task YAMLs read it
(``dataset_kwargs.load_from_disk``), so evaluation never needs the network. ``eval.data_dir`` points at
``<out>``. MultiInstruct is not on the hub in its test form: put its test files at
``<out>/multiinstruct/<task>/test.jsonl`` (images relative to ``<out>/multiinstruct/``) and its original
instructions at ``<out>/multiinstruct/instructions.<yaml|jsonl|tsv|py>``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HUB = {  # name -> (hub repository, splits kept)
    "pope": ("lmms-lab/POPE", ["test"]),
    "mme": ("lmms-lab/MME", ["test"]),
    "hallusion": ("lmms-lab/HallusionBench", ["image"]),
    "chair": ("tsunghanwu/mscoco_chair", ["test"]),
    "caption": ("lmms-lab/COCO-Caption2017", ["val"]),
}


def fetch(name: str, out: str | Path) -> Path:
    import datasets

    if name not in HUB:
        raise KeyError(
            f"unknown evaluation set {name!r}; known: {', '.join(HUB)} (MultiInstruct: see this module's doc)"
        )
    repo, splits = HUB[name]
    from lit.model import hub

    hub.require(f"evaluation set {name} ({repo})", f"python -m lit.eval.eval_data fetch {name} --out {out}")
    data = datasets.DatasetDict({s: datasets.load_dataset(repo, split=s) for s in splits})
    target = Path(out) / name
    data.save_to_disk(str(target))
    return target


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lit.eval.eval_data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download hub evaluation sets and save them to disk")
    f.add_argument("names", nargs="+", choices=sorted(HUB))
    f.add_argument("--out", default="data/eval")
    args = parser.parse_args(argv)
    for name in args.names:
        print(f"{name}: saved to {fetch(name, args.out)}")


if __name__ == "__main__":
    main()
