"""Benchmark: padded against padding-free batches (``train.padding_free``).

``--part share``: on the LLaVA-mix-665K-shaped corpus of ``bench_labels.py`` (its questions, answers of 1-30 words),
labelled by train.py's data set code with LLaVA-1.5's 576 image positions and the vicuna_v1 template, the records
cut into device batches as LLaVA-1.5's SFT recipe does (``lit.data.sampler.ModalityLengthGroupedSampler``, 16 per
device, 8 devices x 1 accumulation step per megabatch) and, for comparison, in random order: the share of the
positions a padded batch computes that are padding. A padding-free batch computes none. Token counts come from a
BPE trained on the corpus itself (``--vocab``, default 32,000 as Vicuna's), which on this corpus's small word set
gives one token per common word, as Llama's tokenizer does for common English words.

``--part speed``: the tiny demo model (conf/model/tiny.yaml, SDPA) on the demo data, two copies from the same
initialisation, one fed padded batches and one padding-free batches of the same records, alternating which goes
first, in one process: real (non-padding) tokens per second of forward + backward + AdamW step, as a ratio, and
the two runs' losses step by step (the padding-free run's loss curve against the padded one's).

    python benchmarks/bench_padding_free.py --part share --records 665000
    python benchmarks/bench_padding_free.py --part speed --steps 60 --data data/demo
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

OUT = Path("benchmarks/results_padding_free.json")


def padding_share(batches: list[list[int]], lengths: list[int]) -> float:
    """The share of a padded batch's positions (batch size x its longest record) that are padding."""
    computed = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1 - sum(lengths[i] for b in batches for i in b) / computed


def share(args) -> dict:
    import bench_labels  # the same directory: run as python benchmarks/bench_padding_free.py

    from lit.data.dataset import SupervisedDataset
    from lit.data.sampler import ModalityLengthGroupedSampler
    from lit.mask.tokenizer import prepare_tokenizer, train_bpe

    with tempfile.TemporaryDirectory() as tmp:
        tok_dir = Path(tmp) / "tokenizer"
        texts = [t["value"] for r in bench_labels.corpus(20_000, seed=1) for t in r["conversations"]]
        train_bpe(texts, vocab_size=args.vocab).save_pretrained(tok_dir)
        records, _, kwargs = bench_labels.labelling_inputs(str(tok_dir), args.records, Path(tmp))
        prepare_tokenizer(kwargs["tokenizer"], kwargs["spec"].chat_template)
        kwargs["spec"] = dataclasses.replace(kwargs["spec"], max_length=2048)  # LLaVA-1.5's model_max_length
        ds = SupervisedDataset(records, **{**kwargs, "progress": True})
        lengths, has_image = ds.lengths(), ds.has_image()
    per_device, chunks = args.batch, args.devices * args.accumulation
    grouped = list(ModalityLengthGroupedSampler(lengths, has_image, per_device, chunks, seed=0))
    generator = torch.Generator().manual_seed(0)
    shuffled = torch.randperm(len(lengths), generator=generator).tolist()
    cut = lambda order: [order[i : i + per_device] for i in range(0, len(order), per_device)]  # noqa: E731
    q = statistics.quantiles(lengths, n=100)
    return {
        "records": len(lengths),
        "image_share": round(sum(has_image) / len(has_image), 4),
        "tokens_per_record": {"mean": round(statistics.fmean(lengths), 1), "p5": q[4], "p50": q[49], "p95": q[94]},
        "batch": {"per_device": per_device, "devices": args.devices, "accumulation": args.accumulation},
        "padding_share": {
            "modality_grouped (LLaVA-1.5 SFT)": round(padding_share(cut(grouped), lengths), 4),
            "random order": round(padding_share(cut(shuffled), lengths), 4),
            "padding_free": 0.0,
        },
    }


def speed(args) -> dict:
    from omegaconf import OmegaConf

    from lit.data.collate import Collator, PaddingFreeCollator
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

    torch.set_num_threads(args.threads)
    cfg = OmegaConf.load("conf/model/tiny.yaml")
    cfg.attn_implementation = "sdpa"
    template = get_template("vicuna_v1")
    tok = load_tokenizer(f"{args.data}/tokenizer")
    prepare_tokenizer(tok, template)
    model, processor = compose_tiny(cfg, tok)
    records = load_records(f"{args.data}/train.json")
    spec = LabelSpec(
        template,
        get_scope("lit"),
        512,
        template_sentences=mine(records, min_share=0.4, progress=False).sentences,
        image_root=args.data,
    )
    image_inputs = image_inputs_for(model.config, processor)
    ds = SupervisedDataset(records, spec, tok, image_inputs, progress=False)
    collate = {
        "padded": Collator(tok.pad_token_id, image_inputs),
        "padding_free": PaddingFreeCollator(tok.pad_token_id, image_inputs),
    }
    models = {k: copy.deepcopy(model).train() for k in collate}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=5e-4) for k, m in models.items()}
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0)).tolist()
    times, tokens, computed, losses = (
        {k: [] for k in collate},
        {k: 0 for k in collate},
        {k: 0 for k in collate},
        {k: [] for k in collate},
    )
    for step in range(args.steps):
        items = [ds[i] for i in order[step * args.batch : (step + 1) * args.batch]]
        for kind in ("padded", "padding_free") if step % 2 == 0 else ("padding_free", "padded"):
            batch = collate[kind](items)
            batch.pop("kind_counts")
            labels = batch.pop("labels")
            t0 = time.perf_counter()
            loss = supervised_token_loss(models[kind](**batch), labels)
            loss.backward()
            opts[kind].step()
            opts[kind].zero_grad(set_to_none=True)
            elapsed = time.perf_counter() - t0
            losses[kind].append(loss.item())
            if step >= args.warmup:
                times[kind].append(elapsed)
                tokens[kind] += sum(len(it["input_ids"]) for it in items)
                computed[kind] += batch["input_ids"].numel()
    rate = {k: tokens[k] / sum(times[k]) for k in collate}
    rel = [abs(f - p) / abs(p) for p, f in zip(losses["padded"], losses["padding_free"], strict=True)]
    return {
        "model": "conf/model/tiny.yaml (128 wide, 2 layers), SDPA, fp32",
        "threads": args.threads,
        "steps": args.steps,
        "steps_timed": len(times["padded"]),
        "batch": args.batch,
        "padding_share_of_computed_positions": round(1 - tokens["padded"] / computed["padded"], 4),
        "real_tokens_per_s": {k: round(v, 1) for k, v in rate.items()},
        "padding_free_over_padded": round(rate["padding_free"] / rate["padded"], 4),
        "loss_rel_diff": {"step_0": rel[0], "max_over_steps": max(rel), "last": rel[-1]},
        "losses": {k: [round(x, 6) for x in v] for k, v in losses.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--part", choices=["share", "speed"], required=True)
    p.add_argument("--records", type=int, default=665_000)
    p.add_argument("--vocab", type=int, default=32_000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--accumulation", type=int, default=1)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", default="data/demo")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[args.part] = share(args) if args.part == "share" else speed(args)
    print(json.dumps({k: v for k, v in results[args.part].items() if k != "losses"}, indent=1))
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
