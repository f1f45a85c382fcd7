"""Benchmark: instruction generations/s of the InstrAug pipeline vs the official code's shape.

The official generator submits 2 prompts at a time; ours submits the whole job list in large batches
(and, with vLLM, all at once to continuous batching). Both arms here use the same in-process
transformers backend, the same random-weight Llama-shaped model, the same jobs and sampling settings,
and run alternately in one process; only the number of prompts per generate call differs. Throughput
with random weights equals that with trained weights for a fixed number of generated tokens, so every
reply is forced to ``--new-tokens`` tokens (EOS suppressed).

    python benchmarks/bench_instraug.py [--hidden 256 --layers 4] [--batch 32] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def build_model(path: Path, hidden: int, layers: int) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from instraug.meta_prompts import load
    from lit.mask.tokenizer import train_bpe

    corpus = [load(n).text for n in ("rephrase", "synonyms", "reorder", "simplify", "concise")]
    tok = train_bpe(
        corpus * 10 + [line for line in Path("instraug/demo/seeds.yaml").read_text().splitlines()] * 10, vocab_size=1000
    )
    tok.chat_template = (
        "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<s>assistant:{% endif %}"
    )
    tok.save_pretrained(path)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 64),
        bos_token_id=tok.bos_token_id,
        eos_token_id=None,
        pad_token_id=tok.pad_token_id,
    )
    LlamaForCausalLM(cfg).save_pretrained(path)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch", type=int, default=32, help="prompts per generate call in the pipeline arm")
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="benchmarks/results_instraug.json")
    args = p.parse_args()

    import torch

    from instraug.backends import Sampling, TransformersBackend
    from instraug.generate import jobs_for, run_jobs
    from instraug.seeds import augmentable, load_seeds

    work = Path(tempfile.mkdtemp(prefix="bench_instraug_"))
    build_model(work / "model", args.hidden, args.layers)
    seeds = augmentable(load_seeds("instraug/demo/seeds.yaml"))
    parents = [{"id": s.seed_id, "task": s.task, "text": s.text, "root_id": s.seed_id} for s in seeds]
    sampling = Sampling(temperature=0.6, top_p=0.9, max_new_tokens=args.new_tokens, seed=0)
    backend = TransformersBackend(str(work / "model"), batch_size=args.batch, device=args.device)
    backend.model.generation_config.min_new_tokens = args.new_tokens  # fixed work per reply
    arms = {"official_2_at_a_time": 2, "pipeline": args.batch}
    times: dict[str, list[float]] = {a: [] for a in arms}
    n_jobs = 0
    for rep in range(args.repeats):
        for arm in list(arms) if rep % 2 == 0 else list(arms)[::-1]:
            mix = {name: args.samples for name in ("rephrase", "synonyms", "reorder", "simplify", "concise")}
            jobs = jobs_for(parents, mix, [0.6], backend.name)
            n_jobs = len(jobs)
            backend.batch_size = arms[arm]
            t0 = time.perf_counter()
            run_jobs(jobs, backend, work / f"{arm}-{rep}.jsonl", sampling, batch_size=arms[arm], progress=False)
            times[arm].append(time.perf_counter() - t0)
    result = {
        "device": args.device,
        "threads": torch.get_num_threads(),
        "hidden": args.hidden,
        "layers": args.layers,
        "jobs": n_jobs,
        "new_tokens": args.new_tokens,
        "batch": args.batch,
        "generations_per_s": {a: n_jobs / statistics.median(t) for a, t in times.items()},
        "seconds": times,
    }
    result["speedup"] = result["generations_per_s"]["pipeline"] / result["generations_per_s"]["official_2_at_a_time"]
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
