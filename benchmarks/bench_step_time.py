"""Benchmark: LIT vs VIT training step time on the same batches, alternating, in one process.

The mask changes only which labels are -100, so the forward/backward work is identical; this measures
what is left (label handling, the loss over more supervised tokens). Two models with the same init are
stepped alternately (VIT batch i, LIT batch i, then LIT first on the next step, ...), so drift in machine load
hits both alike.

    python benchmarks/bench_step_time.py --steps 200 [--hidden 128] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--data", default="data/demo")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="benchmarks/results_step_time.json")
    args = p.parse_args()

    from lit.data.collate import Collator
    from lit.data.dataset import SupervisedDataset
    from lit.data.labels import LabelSpec
    from lit.mask.chat_templates import get_template
    from lit.mask.mining import mine
    from lit.mask.scopes import get_scope
    from lit.mask.tokenizer import load_tokenizer, prepare_tokenizer
    from lit.model.families import image_inputs_for
    from lit.model.loading import compose_tiny
    from lit.records import load_records
    from lit.train.loss import supervised_token_loss

    cfg = OmegaConf.load("conf/model/tiny.yaml")
    template = get_template("vicuna_v1")
    tok = load_tokenizer(f"{args.data}/tokenizer")
    prepare_tokenizer(tok, template)
    model, processor = compose_tiny(cfg, tok)
    records = load_records(f"{args.data}/train.json")
    templates = mine(records, min_share=0.2, progress=False).sentences
    models, loaders, opts = {}, {}, {}
    for scope in ("vit", "lit"):
        spec = LabelSpec(template, get_scope(scope), 512, template_sentences=templates, image_root=args.data)
        ds = SupervisedDataset(records, spec, tok, image_inputs_for(model.config, processor), progress=False)
        gen = torch.Generator().manual_seed(0)  # same order for both scopes: the same batches
        loaders[scope] = torch.utils.data.DataLoader(
            ds,
            batch_size=args.batch,
            shuffle=True,
            generator=gen,
            collate_fn=Collator(tok.pad_token_id, ds.image_inputs),
        )
        models[scope] = copy.deepcopy(model).to(args.device).train()
        opts[scope] = torch.optim.AdamW(models[scope].parameters(), lr=5e-4)
    iters = {s: iter(loaders[s]) for s in loaders}
    times = {"vit": [], "lit": []}
    tokens = {"vit": 0, "lit": 0}
    for step in range(args.steps):
        for scope in ("vit", "lit") if step % 2 == 0 else ("lit", "vit"):  # neither always goes first
            try:
                batch = next(iters[scope])
            except StopIteration:
                iters[scope] = iter(loaders[scope])
                batch = next(iters[scope])
            batch.pop("kind_counts")
            labels = batch.pop("labels").to(args.device)
            batch = {k: v.to(args.device) for k, v in batch.items()}
            if args.device != "cpu":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            loss = supervised_token_loss(models[scope](**batch), labels)
            loss.backward()
            opts[scope].step()
            opts[scope].zero_grad(set_to_none=True)
            if args.device != "cpu":
                torch.cuda.synchronize()
            if step >= 10:  # warm-up excluded
                times[scope].append(time.perf_counter() - t0)
                tokens[scope] += int((labels[:, 1:] != -100).sum())
    med = {s: statistics.median(v) for s, v in times.items()}
    result = {
        "device": args.device,
        "steps_timed": len(times["vit"]),
        "batch": args.batch,
        "median_step_s": {s: round(v, 5) for s, v in med.items()},
        "steps_per_s": {s: round(1 / v, 2) for s, v in med.items()},
        "lit_over_vit_throughput": round(med["vit"] / med["lit"], 4),
        "supervised_tokens_per_step": {s: round(tokens[s] / len(times[s]), 1) for s in tokens},
    }
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
