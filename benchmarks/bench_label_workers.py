"""Labelling a missing label-cache entry with 1 and with 2 worker processes (``lit.data.label_cache.build_labels``:
contiguous shards labelled by forked workers, joined in file order), on the LLaVA-mix-665K-shaped corpus of
bench_labels.py, side by side in one run; both results are checked equal.

    python benchmarks/bench_label_workers.py --records 50000 --tokenizer data/demo/tokenizer
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_labels import labelling_inputs  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--records", type=int, default=50_000)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--out", default="benchmarks/results_label_workers.json")
    args = p.parse_args()

    from lit.data.label_cache import labelled_dataset

    seconds, lengths = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        records, path, kwargs = labelling_inputs(args.tokenizer, args.records, tmp)
        for n in args.workers:
            t0 = time.perf_counter()
            ds = labelled_dataset(records, path, tmp / f"cache{n}", workers=n, min_shard=1, **kwargs)
            seconds[n] = time.perf_counter() - t0
            lengths[n] = ds.lengths()
    assert all(v == lengths[args.workers[0]] for v in lengths.values()), "worker counts disagree"
    base = seconds[args.workers[0]]
    result = {
        "records": len(records),
        "seconds": {str(k): round(v, 2) for k, v in seconds.items()},
        "speedup": {str(k): round(base / v, 2) for k, v in seconds.items()},
        "records_per_s": {str(k): round(len(records) / v) for k, v in seconds.items()},
    }
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
