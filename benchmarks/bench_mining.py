"""Benchmark: template mining (``lit.mask.mining.mine_file``: read, hash, count, select) against a plain
miner (``json.load`` + one regex per human turn + ``Counter``) on the same mix-665K-shaped file, side by
side in one process, alternating, best of ``--repeats``. The plain miner is also timed with Python's cyclic
garbage collector paused, as ours pauses it, so the regex and counting are compared on their own too.

    python benchmarks/bench_mining.py --records 665000 --repeats 2
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from mining_corpus import corpus  # noqa: E402

PLAIN_SENTENCE = re.compile(r"\S.*?(?:[.!?]+(?=\s|$)|$)", re.M)


def plain_mine(path: Path, min_share: float) -> set[str]:
    """The baseline: json.load, a sentence regex per human turn, a Counter of per-record sets."""
    with open(path) as fh:
        records = json.load(fh)
    counts: Counter[str] = Counter()
    for record in records:
        seen = set()
        for turn in record["conversations"]:
            if turn["from"] == "human":
                seen.update(PLAIN_SENTENCE.findall(turn["value"].replace("<image>", "")))
        counts.update(seen)
    return {s for s, c in counts.items() if c / len(records) >= min_share}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--records", type=int, default=665_000)
    p.add_argument("--data", help="an existing LLaVA-format file instead of a generated one")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--min-share", type=float, default=0.05, help="conf/loss/lit.yaml's value")
    p.add_argument("--out", default="benchmarks/results_mining.json")
    args = p.parse_args()

    from lit.mask.mining import is_option, mine_file

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.data) if args.data else Path(tmp) / "corpus.json"
        if not args.data:
            path.write_text(json.dumps(corpus(args.records)))
        ours, plain, plain_no_gc = [], [], []
        for _ in range(args.repeats):  # alternate, so both see the same machine state
            t0 = time.perf_counter()
            mined = mine_file(path, min_share=args.min_share, progress=False)
            ours.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            plain_mine(path, args.min_share)
            plain.append(time.perf_counter() - t0)
            gc.disable()
            t0 = time.perf_counter()
            plain_mine(path, args.min_share)
            plain_no_gc.append(time.perf_counter() - t0)
            gc.enable()
        size_mb = path.stat().st_size / 1e6
    options_seen = [r for r in mined.top if is_option(r["sentence"])]
    result = {
        "records": mined.n_records,
        "file_mb": round(size_mb),
        "min_share": args.min_share,
        "ours_seconds": round(min(ours), 2),
        "plain_seconds": round(min(plain), 2),
        "ratio_ours_over_plain": round(min(ours) / min(plain), 3),
        "plain_gc_paused_seconds": round(min(plain_no_gc), 2),
        "ratio_ours_over_plain_gc_paused": round(min(ours) / min(plain_no_gc), 3),
        "templates": len(mined.template_sentences),
        "max_option_line_share": round(max((r["share"] for r in options_seen), default=0.0), 4),
    }
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
