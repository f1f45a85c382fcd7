"""L2T's visual-contribution analysis: how much the image, rather than the text, drives the answer.

Per image record (its answer tokens, as the answer-only mask selects them):

- ``vc = log p(answer | image, instruction) − log p(answer | noise image, instruction)``, the noise image
  being uniform random pixels of the same size (L2T's "no image", shared spec 1.2), summed over the
  answer tokens;
- ``attention_to_image``: the share of attention the answer tokens' queries put on the image tokens,
  averaged over layers, heads and answer tokens (eager attention, so the weights are returned).

``python vc.py "ckpt=[outputs/demo/vit-s0/checkpoint,outputs/demo/lit-s0/checkpoint]" data=demo n=200``
(config ``conf/vc.yaml``) writes ``vc.json`` (per checkpoint: mean, sd, n, and the per-sample values) and
``vc.png`` (histograms, one per checkpoint) in its run directory, and the means to the results store.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import torch

from lit.constants import IGNORE_INDEX


def _dataset(ckpt: str, records: list[dict], image_root: str, template: str):
    from lit.chat_templates import get_template
    from lit.data import SupervisedDataset
    from lit.mask import get_scope
    from lit.image_inputs import image_inputs_for
    from lit.model import load_pretrained

    model, processor = load_pretrained(ckpt)
    model.set_attn_implementation("eager")
    model.eval()
    ds = SupervisedDataset(records, image_root=image_root, tokenizer=processor.tokenizer, template=get_template(template),
                           scope=get_scope("vit"), image_inputs=image_inputs_for(model.config, processor),
                           max_length=4096, progress=False)
    return model, ds


@torch.no_grad()
def _answer_logprob(model, ids, labels, image_inputs: dict) -> tuple[float, float]:
    """Summed log-probability of the answer tokens and the mean attention share on image positions;
    ``image_inputs``: the batched (batch of one) image and Q-Former inputs."""
    out = model(input_ids=ids[None], output_attentions=True, **image_inputs)
    logp = torch.log_softmax(out.logits[0, :-1].float(), -1)
    target = labels[1:]
    keep = target != IGNORE_INDEX
    total = logp[keep].gather(1, target[keep][:, None]).sum().item()
    image = ids == model.config.image_token_index
    queries = torch.nonzero(keep).squeeze(1)  # positions predicting an answer token
    att = torch.stack([a[0].mean(0) for a in out.attentions])  # (layers, T, T), mean over heads
    share = att[:, queries][:, :, image].sum(-1).mean().item()
    return total, share


def analyse(ckpt: str, records: list[dict], image_root: str, template: str = "vicuna_v1", n: int = 200,
            seed: int = 0) -> dict:
    model, ds = _dataset(ckpt, [r for r in records if "image" in r][:n], image_root, template)
    gen = torch.Generator().manual_seed(seed)
    vcs, shares = [], []
    for i in range(len(ds)):
        item = ds[i]
        if not (item["labels"] != IGNORE_INDEX).any():  # an answer fully truncated away
            continue
        inputs = {**ds.image_inputs.collate([item["image"]]), **ds.image_inputs.collate_text([item])}
        pixels = inputs["pixel_values"].to(model.dtype)
        noise = torch.rand(pixels.shape, generator=gen) * (pixels.max() - pixels.min()) + pixels.min()
        with_image, share = _answer_logprob(model, item["input_ids"], item["labels"], {**inputs, "pixel_values": pixels})
        without, _ = _answer_logprob(model, item["input_ids"], item["labels"],
                                     {**inputs, "pixel_values": noise.to(model.dtype)})
        vcs.append(with_image - without)
        shares.append(share)
    if not vcs:
        raise ValueError("no image record with answer tokens among the records given")
    return {"checkpoint": ckpt, "n": len(vcs), "vc_mean": statistics.fmean(vcs),
            "vc_sd": statistics.pstdev(vcs), "attention_to_image_mean": statistics.fmean(shares), "vc": vcs,
            "attention_to_image": shares}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.histogram_bin_edges(np.concatenate([r["vc"] for r in results]), bins=30)
    for r in results:
        ax.hist(r["vc"], bins=bins, alpha=0.5, label=f"{Path(r['checkpoint']).parent.name} (mean {r['vc_mean']:.3f})")
    ax.set(xlabel="visual contribution: log p(a | image) − log p(a | noise)", ylabel="samples")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_from_config(cfg) -> list[dict]:
    """The ``vc.py`` job: analyse each of ``cfg.ckpt`` (one path or a list, e.g. VIT and LIT) on the first
    ``cfg.n`` image records of ``cfg.data`` (optionally those whose image path starts with
    ``cfg.image_prefix``); writes ``vc.json`` and ``vc.png`` in the run directory and, per checkpoint,
    ``<results_dir>/<result name>/lit_vc.json`` with ``vc/mean``, ``vc/sd``, ``vc/attention_to_image``."""
    from omegaconf import OmegaConf

    from lit.evaluate import git_sha, store_result, trained_run
    from lit.model import check_checkpoint
    from lit.records import load_records

    ckpts = [cfg.ckpt] if isinstance(cfg.ckpt, str) else list(cfg.ckpt)
    names = cfg.result_name if cfg.result_name is not None else [None] * len(ckpts)
    names = [names] if isinstance(names, str) else list(names)
    if len(names) != len(ckpts):
        raise ValueError(f"result_name lists {len(names)} names for {len(ckpts)} checkpoints; give one per ckpt")
    records = [r for r in load_records(cfg.data.path) if "image" in r and str(r["image"]).startswith(cfg.image_prefix)]
    if not records:
        raise ValueError(f"{cfg.data.path} has no image record whose image path starts with {cfg.image_prefix!r}")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for ckpt, name in zip(ckpts, names):
        check_checkpoint(ckpt)
        run_cfg, template, run_name = trained_run(ckpt, cfg.chat_template)
        r = analyse(ckpt, records, cfg.data.image_root, template, cfg.n, cfg.seed)
        results.append(r)
        if cfg.results_dir:
            store_result(cfg.results_dir, name or run_name, "lit_vc",
                         {"vc/mean": r["vc_mean"], "vc/sd": r["vc_sd"], "vc/attention_to_image":
                          r["attention_to_image_mean"], "vc/n": r["n"]},
                         {"checkpoint": str(ckpt), "git_sha": git_sha(), "data": cfg.data.path,
                          "config": {"train": run_cfg, "vc": OmegaConf.to_container(cfg, resolve=True)}})
        print(f"{ckpt}: VC {r['vc_mean']:.4f} ± {r['vc_sd']:.4f} (n={r['n']}), "
              f"attention to image {r['attention_to_image_mean']:.4f}")
    (out / "vc.json").write_text(json.dumps(results, indent=1))
    plot(results, out / "vc.png")
    return results
