"""L2T's visual-contribution analysis (arXiv 2503.22215, v2 §5): how much the image, rather than the text,
drives the answer.

Per question–answer pair (turn j of a record: its instruction X_I and answer X_A, the turns before it as
context, rendered in the training chat template):

- ``vc = log p(X_A | X_V, X_I) − log p(X_A | noise, X_I)``, summed over the answer's tokens; the
  end-of-turn token (``</s>``) is **not** counted, only the answer's own tokens;
- "no image" (the paper's X_V = ∅) is an image of uniform random pixels (0–255 in each channel, the size of
  the real one) passed through the model's own image processor, a new one per pair (seeded); a record with
  several images has each of them replaced by its own noise image;
- ``attention_to_image`` (only with ``attention_share``: it needs eager attention and the weights of every
  layer): the share of attention that the queries predicting answer tokens put on image positions,
  averaged over layers, heads and those queries.

Records come from a named source (``source`` in ``conf/vc.yaml``, e.g. ``vqav2``: mix-665K's COCO records
whose questions carry VQAv2's short-answer prompt), ``n`` of them drawn at random with ``seed`` (all when
``n`` is null). The model runs on ``device`` in its own dtype. Reported: every pair's value, the mean, sd
and a bootstrap 95% CI of the mean.

``python vc.py "ckpt=[<vit run>/checkpoint,<lit run>/checkpoint]" data=llava665k source=vqav2 n=1000``
"""

from __future__ import annotations

import json
import random
import re
import statistics
from pathlib import Path

import numpy as np
import torch

from lit.constants import IGNORE_INDEX
from lit.files import atomic_write
from lit.records import record_images


def select_records(records: list[dict], source: dict, n: int | None, seed: int) -> list[dict]:
    """Image records of a named source: image path prefix, ``id`` pattern and instruction text, each optional;
    then ``n`` of them at random (``seed``), keeping file order."""
    prefix, pattern, contains = source.get("image_prefix") or "", source.get("id_pattern"), source.get("contains")
    id_re = re.compile(pattern) if pattern else None

    def wanted(r: dict) -> bool:
        images = record_images(r)  # one or several; every one under the source's prefix
        if not images or not all(isinstance(i, str) and i.startswith(prefix) for i in images):
            return False
        if id_re is not None and not id_re.search(str(r.get("id", ""))):
            return False
        return contains is None or any(
            contains in t.get("value", "") for t in r["conversations"] if t.get("from") == "human"
        )

    chosen = [r for r in records if wanted(r)]
    if n is not None and n < len(chosen):
        keep = sorted(random.Random(seed).sample(range(len(chosen)), n))
        chosen = [chosen[i] for i in keep]
    return chosen


def qa_pairs(records: list[dict]) -> list[dict]:
    """One record per question–answer pair: the conversation up to and including answer j."""
    out = []
    for i, r in enumerate(records):
        turns = r["conversations"]
        for j in range(1, len(turns), 2):
            out.append({**r, "id": f"{r.get('id', f'#{i}')}#{j // 2}", "conversations": turns[: j + 1]})
    return out


def last_answer_labels(labels: torch.Tensor, count_eos: bool, eos_id: int | None) -> torch.Tensor:
    """Keep only the last run of supervised positions (the last answer; earlier answers are context), without
    its end-of-turn token unless ``count_eos``."""
    on = torch.nonzero(labels != IGNORE_INDEX).squeeze(1)
    breaks = torch.nonzero(on[1:] != on[:-1] + 1).squeeze(1)
    start = int(on[breaks[-1] + 1]) if len(breaks) else int(on[0])
    out = torch.full_like(labels, IGNORE_INDEX)
    out[start:] = labels[start:]
    if not count_eos and eos_id is not None and out[int(on[-1])] == eos_id:
        out[int(on[-1])] = IGNORE_INDEX
    return out


@torch.no_grad()
def answer_logprob(
    model, ids, labels, inputs: dict, attention: bool, image_token_id: int
) -> tuple[float, float | None]:
    """Summed log-probability of the labelled tokens, and (with ``attention``) the attention share on the
    image positions of the queries that predict them. ``ids``/``labels``: (T,); ``inputs``: batched image inputs."""
    out = model(input_ids=ids[None], output_attentions=attention, **inputs)
    target = labels[1:]
    keep = torch.nonzero(target != IGNORE_INDEX).squeeze(1)
    logp = torch.log_softmax(out.logits[0, keep].float(), -1)  # position t predicts token t + 1
    total = logp.gather(1, target[keep][:, None]).sum().item()
    if not attention:
        return total, None
    image = ids == image_token_id
    att = torch.stack([a[0].float().mean(0) for a in out.attentions])  # (layers, T, T), mean over heads
    return total, att[:, keep][:, :, image].sum(-1).mean().item()


def noise_image(size: tuple[int, int], rng: np.random.Generator):
    """Uniform 0–255 pixels, ``size`` = (width, height), as a PIL image for the model's own processor."""
    from PIL import Image

    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def bootstrap_ci(values: list[float], seed: int, n_boot: int = 2000) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean."""
    x = np.asarray(values, dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, len(x), (n_boot, len(x)))
    means = x[idx].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _model_dtype(ckpt: str, dtype: str | None) -> str:
    """``dtype`` if given, else the checkpoint's own (its config's ``dtype``), else float32."""
    if dtype:
        return dtype
    try:
        from transformers import AutoConfig

        saved = getattr(AutoConfig.from_pretrained(ckpt), "dtype", None)
    except (OSError, ValueError):
        saved = None
    name = str(saved).replace("torch.", "") if saved is not None else "float32"
    return name if name in ("float32", "bfloat16", "float16") else "float32"


def analyse(
    ckpt: str,
    records: list[dict],
    image_root: str,
    template: str = "vicuna_v1",
    *,
    seed: int = 0,
    device: str = "cpu",
    dtype: str | None = None,
    attention_share: bool = False,
    count_eos: bool = False,
) -> dict:
    """VC of every question–answer pair of ``records`` (image records) under checkpoint ``ckpt``."""
    from PIL import Image
    from tqdm import tqdm

    from lit.data.dataset import SupervisedDataset
    from lit.data.image_inputs import item_images
    from lit.data.labels import LabelSpec
    from lit.mask.scopes import get_scope
    from lit.mask.tokenizer import prepare_tokenizer
    from lit.model.chat_jinja import chat_template_of
    from lit.model.families import image_inputs_for
    from lit.model.loading import load_pretrained

    model, processor = load_pretrained(ckpt, dtype=_model_dtype(ckpt, dtype))
    chat = chat_template_of(template, processor, model.config)
    prepare_tokenizer(processor.tokenizer, chat, frozen_vocab=True)
    if attention_share:
        model.set_attn_implementation("eager")  # attention weights are returned by eager attention only
    model.to(device).eval()
    spec = LabelSpec(
        chat,
        get_scope("vit"),
        getattr(model.config.text_config, "max_position_embeddings", 4096),
        too_long="truncate",
        image_root=image_root,
    )
    ds = SupervisedDataset(
        qa_pairs(records), spec, processor.tokenizer, image_inputs_for(model.config, processor), progress=False
    )
    eos_id = processor.tokenizer.convert_tokens_to_ids(chat.eos) if chat.eos else None
    rng = np.random.default_rng(seed)
    pairs = []
    for i in tqdm(range(len(ds)), desc=f"VC {Path(ckpt).parent.name}", mininterval=5.0):
        item, ex = ds[i], ds.examples[i]
        labels = last_answer_labels(item["labels"], count_eos, eos_id)
        if not (labels != IGNORE_INDEX).any():  # an answer that is only an end-of-turn token
            continue
        noise = []  # each of the record's images replaced by its own noise image of the same size
        for path in ex.image if isinstance(ex.image, list) else [ex.image]:
            with Image.open(path) as img:
                noise.append(ds.image_inputs.pixels(noise_image(img.size, rng)))
        text = {**ds.image_inputs.collate_text([item]), **ds.image_inputs.token_inputs(item["input_ids"][None])}
        text = {k: v.to(device) for k, v in text.items()}
        ids, labels = item["input_ids"].to(device), labels.to(device)
        values = []
        for real, images in ((True, item_images(item)), (False, noise)):
            inputs = {k: v.to(device) for k, v in ds.image_inputs.collate(images).items()}
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
            values.append(
                answer_logprob(model, ids, labels, {**inputs, **text}, attention_share and real, ds.image_token_id)
            )
        (with_image, share), (without, _) = values
        pairs.append(
            {
                "id": ex.record_id,
                "vc": with_image - without,
                "logp_image": with_image,
                "logp_noise": without,
                "answer_tokens": int((labels != IGNORE_INDEX).sum()),
                "attention_to_image": share,
            }
        )
    if not pairs:
        raise ValueError("no question-answer pair with answer tokens among the records given")
    vcs = [p["vc"] for p in pairs]
    low, high = bootstrap_ci(vcs, seed)
    result = {
        "checkpoint": ckpt,
        "n": len(vcs),
        "n_records": len(records),
        "vc_mean": statistics.fmean(vcs),
        "vc_sd": statistics.pstdev(vcs),
        "vc_ci95": [low, high],
        "end_of_turn_counted": count_eos,
        "device": device,
        "dtype": str(model.dtype).replace("torch.", ""),
        "vc": vcs,
        "pairs": pairs,
    }
    if attention_share:
        result["attention_to_image_mean"] = statistics.fmean(p["attention_to_image"] for p in pairs)
    return result


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.histogram_bin_edges(np.concatenate([r["vc"] for r in results]), bins=30)
    for r in results:
        low, high = r["vc_ci95"]
        ax.hist(
            r["vc"],
            bins=bins,
            alpha=0.5,
            label=f"{Path(r['checkpoint']).parent.name} (mean {r['vc_mean']:.3f}, 95% CI {low:.3f}–{high:.3f})",
        )
    ax.set(xlabel="visual contribution: log p(a | image) − log p(a | noise)", ylabel="question–answer pairs")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_from_config(cfg) -> list[dict]:
    """The ``vc.py`` job: analyse each of ``cfg.ckpt`` (one path or a list, e.g. VIT and LIT) on the records of
    ``cfg.sources[cfg.source]`` in ``cfg.data``; writes ``vc.json`` and ``vc.png`` in the run directory and, per
    checkpoint, ``<results_dir>/<result name>/lit_vc.json`` (``vc/mean``, ``vc/sd``, ``vc/ci_low``,
    ``vc/ci_high``, ``vc/n``, and ``vc/attention_to_image`` with the attention diagnostic)."""
    from omegaconf import OmegaConf

    from lit.eval.evaluate import store_result, trained_run
    from lit.model.loading import check_checkpoint
    from lit.records import load_records
    from lit.tracking import git_sha

    ckpts = [cfg.ckpt] if isinstance(cfg.ckpt, str) else list(cfg.ckpt)
    names = cfg.result_name if cfg.result_name is not None else [None] * len(ckpts)
    names = [names] if isinstance(names, str) else list(names)
    if len(names) != len(ckpts):
        raise ValueError(f"result_name lists {len(names)} names for {len(ckpts)} checkpoints; give one per ckpt")
    if cfg.source not in cfg.sources:
        raise KeyError(f"source={cfg.source!r} is not among the sources of conf/vc.yaml: {', '.join(cfg.sources)}")
    source = OmegaConf.to_container(cfg.sources[cfg.source], resolve=True)
    records = select_records(load_records(cfg.data.path), source, cfg.n, cfg.seed)
    if not records:
        raise ValueError(f"{cfg.data.path} has no image record of source {cfg.source!r} ({source})")
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for ckpt, name in zip(ckpts, names):
        check_checkpoint(ckpt)
        run_cfg, template, run_name = trained_run(ckpt, cfg.chat_template)
        r = analyse(
            ckpt,
            records,
            cfg.data.image_root,
            template,
            seed=cfg.seed,
            device=device,
            dtype=cfg.dtype,
            attention_share=cfg.attention_share,
            count_eos=cfg.count_eos,
        )
        r["source"] = cfg.source
        results.append(r)
        scores = {
            "vc/mean": r["vc_mean"],
            "vc/sd": r["vc_sd"],
            "vc/ci_low": r["vc_ci95"][0],
            "vc/ci_high": r["vc_ci95"][1],
            "vc/n": r["n"],
        }
        if cfg.attention_share:
            scores["vc/attention_to_image"] = r["attention_to_image_mean"]
        if cfg.results_dir:
            store_result(
                cfg.results_dir,
                name or run_name,
                "lit_vc",
                scores,
                {
                    "checkpoint": str(ckpt),
                    "git_sha": git_sha(),
                    "data": cfg.data.path,
                    "source": cfg.source,
                    "config": {"train": run_cfg, "vc": OmegaConf.to_container(cfg, resolve=True)},
                },
            )
        print(
            f"{ckpt}: VC {r['vc_mean']:.4f} (95% CI {r['vc_ci95'][0]:.4f}–{r['vc_ci95'][1]:.4f}, "
            f"sd {r['vc_sd']:.4f}, {r['n']} pairs of {r['n_records']} records)"
            + (f", attention to image {r['attention_to_image_mean']:.4f}" if cfg.attention_share else "")
        )
    plot(results, out / "vc.png")
    atomic_write(out / "vc.json", json.dumps(results, indent=1, default=str))  # marks the job done: last, whole
    return results
