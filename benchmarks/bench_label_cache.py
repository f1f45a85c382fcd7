"""Label cache: building the labelled data set (cache miss: label + write Arrow) vs reading it back
(cache hit: hash the data file + memory-map), on a LLaVA-mix-665K-shaped corpus.

    python benchmarks/bench_label_cache.py --records 50000 --tokenizer data/demo/tokenizer
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
    p.add_argument("--out", default="benchmarks/results_label_cache.json")
    args = p.parse_args()

    from lit.data.label_cache import labelled_dataset

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        records, path, kwargs = labelling_inputs(args.tokenizer, args.records, tmp)
        times = {}
        for label in ("build_and_write", "read_back"):
            t0 = time.perf_counter()
            ds = labelled_dataset(records, path, tmp / "cache", **kwargs)
            ds.lengths()
            times[label] = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in (tmp / "cache").rglob("*") if f.is_file())
    result = {
        "records": len(records),
        "seconds": {k: round(v, 2) for k, v in times.items()},
        "speedup": round(times["build_and_write"] / times["read_back"], 1),
        "cache_mb": round(size / 2**20, 1),
    }
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
