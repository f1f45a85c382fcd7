"""Peak host RSS per rank of a 2-process ZeRO-3 CPU run of a ≈0.5B-parameter random-weight LLaVA (Llama-style
LM 1024 wide x 30 layers, small vision tower, LM frozen so that optimizer states do not hide the weights),
with the code before the fix (model built before ``TrainingArguments``: every rank holds the whole model
until DeepSpeed partitions it) and after (``TrainingArguments`` first: built partitioned under zero.Init).
Both versions run side by side in this one invocation on the same data; "before" is the tree at --before.

Each pair runs twice: with glibc's default malloc and with ``MALLOC_MMAP_THRESHOLD_=131072``. On CPU the
"device" is host memory: zero.Init builds each layer full-size and keeps only its shard, and glibc's dynamic
mmap threshold leaves the freed full-size buffers in the heap, so the default-malloc peak shows the allocator,
not what is alive (a GPU builds those layers in device memory). A fixed threshold returns them to the OS.

    python benchmarks/bench_zero3_rss.py --before 07a3295
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = [
    "model.text.hidden_size=1024",
    "model.text.intermediate_size=4096",
    "model.text.num_hidden_layers=30",
    "model.text.num_attention_heads=16",
    "model.text.num_key_value_heads=16",
    "model.freeze.lm=true",
    "model.freeze.vision=true",
]


def n_params(layers: int = 30, hidden: int = 1024, inter: int = 4096, vocab: int = 512) -> int:
    return layers * (4 * hidden * hidden + 3 * hidden * inter + 2 * hidden) + 2 * vocab * hidden + hidden


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def run(tree: Path, data: Path, work: Path, malloc: dict) -> dict:
    probe = work / "rss"
    probe.mkdir(parents=True)
    env = {
        **os.environ,
        **malloc,
        "WANDB_MODE": "disabled",
        "DS_ACCELERATOR": "cpu",
        "PYTHONPATH": str(tree),
        "RSS_PROBE_DIR": str(probe),
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_port()}",
        str(ROOT / "benchmarks" / "rss_probe.py"),
        str(tree / "train.py"),
        "experiment=demo_lit",
        *MODEL,
        f"data.root={data}",
        "data.generate=false",
        f"paths.data_dir={work}",
        f"hydra.run.dir={work / 'run'}",
        "deepspeed=zero3",
        "+train.ddp_backend=gloo",
        "train.max_steps=1",
        "train.per_device_train_batch_size=1",
        "train.disable_tqdm=true",
        "loss.template_sentences.min_share=0.3",
    ]
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-4000:])
    return {p.stem: json.loads(p.read_text()) for p in sorted(probe.glob("rank*.json"))}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--before", required=True, help="git revision of the code before the fix")
    p.add_argument("--out", default="benchmarks/results_zero3_rss.json")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from lit.data.synthetic import generate

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate(tmp / "data", n_train=16, n_test=2, progress=False)
        before = tmp / "before"
        before.mkdir()
        archive = subprocess.run(["git", "archive", args.before], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
        results = {"params": n_params(), "full_fp32_mb": round(n_params() * 4 / 2**20)}
        for label, malloc in (("default_malloc", {}), ("fixed_mmap_threshold", {"MALLOC_MMAP_THRESHOLD_": "131072"})):
            results[label] = {
                "before": run(before, tmp / "data", tmp / f"{label}_before", malloc),
                "after": run(ROOT, tmp / "data", tmp / f"{label}_after", malloc),
            }
    print(json.dumps(results, indent=1))
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
