"""What a training job needs on a cluster, computed on CPU from the configs:

    python -m lit.train.plan model=llava7b [deepspeed=zero3] [nodes=1 gpus_per_node=8 gpu_mem_gb=80]
                       [mfu=0.4 peak_tflops=312 mean_tokens=... records=...] [any train.py override]

The architecture as published (``model.architecture`` -> ``conf/architecture/<name>.yaml``) is built on the meta
device (no memory, no hub); it prints the parameter count (total, trainable with the schedule's freezing) next to
the published count, the image positions per image, per-GPU memory for model states from DeepSpeed's own
estimators plus an activation estimate at the schedule's batch and length, whether that fits, and the step time
and GPU-hours of one epoch from FLOPs at a stated MFU.

Estimates, with their assumptions printed: activations per layer follow Korthikanti et al. 2022 (arXiv:2205.05198,
sbh·34 bytes in 16-bit without the attention-score term, which FlashAttention/SDPA never store); with gradient
checkpointing only each layer's input is kept plus one layer being recomputed. Without ``mean_tokens`` every record
is taken at the schedule's max length, so step time and GPU-hours are upper bounds.
"""

from __future__ import annotations

import functools
import math
import sys

from omegaconf import DictConfig

GIB = 2**30
PLAN_KEYS = {
    "nodes": 1,
    "gpus_per_node": 8,
    "gpu_mem_gb": 80.0,
    "mfu": 0.4,
    "peak_tflops": 312.0,
    "mean_tokens": None,
    "records": None,
}
# Records per epoch of the training sets: llava_v1_5_mix665k.json (665,298) and blip_laion_cc_sbu_558k.json
# (558,128) as LLaVA's docs/Data.md links them; LLaVA-NeXT-Data: 779,289 (lmms-lab/LLaVA-NeXT-Data card).
RECORDS = {"llava665k": 665_298, "llava558k": 558_128, "llava_next_data": 779_289}
OVERHEAD_GIB = 2.0  # CUDA context, NCCL buffers, allocator fragmentation


@functools.cache
def _meta(name: str):
    from lit.model.architecture import build_meta, load_architecture

    return build_meta(load_architecture(name))


@functools.cache
def _positions(name: str) -> dict[str, int]:
    from lit.model.architecture import image_positions, load_architecture

    return image_positions(load_architecture(name))


def _vision_tokens(vision) -> int:
    """Tokens the vision tower runs on per image (tile): its patches plus a CLS token (SigLIP has none)."""
    return (vision.image_size // vision.patch_size) ** 2 + (0 if vision.get("arch") == "siglip" else 1)


def _largest_layer(model) -> int:
    """Parameters of the largest single module (what ZeRO-3 gathers at once), as DeepSpeed's model_to_params."""
    return max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())


def model_state_bytes(
    cfg: DictConfig, total: int, trainable: int, largest: int, gpus_per_node: int, nodes: int
) -> tuple[float, str]:
    """Per-GPU bytes of weights, gradients and optimizer states, and how they were estimated."""
    frozen = total - trainable
    gpus = gpus_per_node * nodes
    ds = cfg.deepspeed.config if cfg.deepspeed.enabled else None
    stage = int(ds.zero_optimization.stage) if ds is not None else 0
    zero = ds.zero_optimization if ds is not None else {}
    opt_off = bool(zero.get("offload_optimizer"))
    param_off = bool(zero.get("offload_param"))
    if stage == 3:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

        _, gpu, _ = estimate_zero3_model_states_mem_needs(
            trainable, largest, gpus_per_node, nodes, cpu_offload=opt_off, cpu_offload_params=param_off and opt_off
        )
        frozen_bytes = 0 if param_off else 2 * frozen / gpus
        how = (
            "DeepSpeed estimate_zero3_model_states_mem_needs(trainable) + 16-bit frozen weights / GPUs"
            + (" (optimizer offloaded)" if opt_off else "")
            + (" (params offloaded)" if param_off else "")
        )
    elif stage in (1, 2):
        from deepspeed.runtime.zero.stage_1_and_2 import (
            estimate_zero2_model_states_mem_needs,
        )

        _, gpu = estimate_zero2_model_states_mem_needs(trainable, gpus_per_node, nodes, cpu_offload=opt_off)
        frozen_bytes = 2 * frozen  # ZeRO-1/2 keep every weight on every GPU
        how = "DeepSpeed estimate_zero2_model_states_mem_needs(trainable) + 16-bit frozen weights"
    else:
        gpu = 16 * trainable  # fp32 weights + grads + Adam m, v, replicated (DDP)
        frozen_bytes = 4 * frozen
        how = "DDP: 16 bytes per trainable parameter + 4 per frozen"
    return gpu + frozen_bytes, how


def activation_bytes(
    text, vision, batch: int, length: int, checkpointing: bool, vision_trainable: bool, vision_tokens: int
) -> float:
    """Per-GPU activation bytes (16-bit) of a micro-batch of ``batch`` records of ``length`` positions."""

    def stack(tokens: float, hidden: int, layers: int) -> float:
        per_layer = 34 * tokens * hidden
        return layers * 2 * tokens * hidden + per_layer if checkpointing else layers * per_layer

    lm = stack(batch * length, text.hidden_size, text.num_hidden_layers)
    logits = 2 * batch * length * text.vocab_size * 2  # bf16 logits and their gradient
    vis = stack(batch * vision_tokens, vision.hidden_size, vision.num_hidden_layers) if vision_trainable else 0
    return lm + logits + vis


def step_flops(cfg: DictConfig, arch, model, global_batch: int, mean_tokens: float, checkpointing: bool) -> float:
    """FLOPs of one optimizer step: 2N per token forward, 2N for activation gradients, 2N for weight
    gradients of trained weights, +2N forward again with gradient checkpointing; causal attention 2·n·L·h per
    token per pass; frozen vision towers run forward only."""
    from lit.model.parts import part_of

    parts = {"lm": 0, "vision": 0, "projector": 0}
    for name, p in model.named_parameters():
        if "embed_tokens" not in name:
            parts[part_of(name)] += p.numel()
    freeze = cfg.model.freeze
    text = arch.text
    attn = 2 * text.num_hidden_layers * mean_tokens * text.hidden_size
    passes = 1 + (1 if checkpointing else 0) + 1 + (0 if freeze.lm else 1)
    lm = global_batch * mean_tokens * (2 * (parts["lm"] + parts["projector"]) + attn) * passes
    vision_tokens = _vision_tokens(arch.vision)
    vision_passes = 1 if freeze.vision else passes
    vision = global_batch * vision_tokens * 2 * parts["vision"] * vision_passes
    return lm + vision


def plan(
    cfg: DictConfig,
    nodes: int = 1,
    gpus_per_node: int = 8,
    gpu_mem_gb: float = 80.0,
    mfu: float = 0.4,
    peak_tflops: float = 312.0,
    mean_tokens: float | None = None,
    records: int | None = None,
) -> dict:
    from lit.model.architecture import load_architecture
    from lit.model.loading import apply_freeze
    from lit.train.distributed import split_global_batch

    name = cfg.model.get("architecture")
    if not name:
        raise ValueError(
            f"model {cfg.model.name!r} names no published architecture (model.architecture: one of "
            "conf/architecture/*.yaml)"
        )
    arch = load_architecture(name)
    model = _meta(name)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(apply_freeze(model, cfg.model.freeze).values())
    gpus = nodes * gpus_per_node
    t = cfg.train
    per_device, length = int(t.per_device_train_batch_size), int(cfg.data.max_length)
    global_batch = int(cfg.schedule.global_batch_size or per_device * gpus * t.gradient_accumulation_steps)
    try:
        per_device, accumulation = split_global_batch(global_batch, per_device, gpus)  # as training derives it
        batch_note = f"{per_device} per GPU x {gpus} GPUs x {accumulation} accumulation = {global_batch}"
    except ValueError as err:
        accumulation, batch_note = None, f"does not divide: {err}"
    positions = _positions(name)
    states, how = model_state_bytes(cfg, total, trainable, _largest_layer(model), gpus_per_node, nodes)
    checkpointing = bool(t.get("gradient_checkpointing"))
    tiles = 1 + max(
        (h // arch.vision.image_size) * (w // arch.vision.image_size)
        for h, w in arch.get("image_grid_pinpoints") or [[arch.vision.image_size] * 2]
    )
    vision_tokens = tiles * _vision_tokens(arch.vision)
    acts = activation_bytes(
        arch.text, arch.vision, per_device, length, checkpointing, not cfg.model.freeze.vision, vision_tokens
    )
    need = states + acts + OVERHEAD_GIB * GIB
    n_records = records or RECORDS.get(cfg.data.name)
    tokens = float(mean_tokens or length)
    flops = step_flops(cfg, arch, model, global_batch, tokens, checkpointing)
    step_s = flops / (gpus * peak_tflops * 1e12 * mfu)
    steps = math.ceil(n_records / global_batch) if n_records else None
    return {
        "model": cfg.model.name,
        "architecture": arch.name,
        "params_total": total,
        "params_published": float(arch.published_params),
        "params_vs_published": total / arch.published_params - 1,
        "params_trainable": trainable,
        "image_positions": positions,
        "gpus": gpus,
        "batch": batch_note,
        "accumulation": accumulation,
        "zero_stage": int(cfg.deepspeed.config.zero_optimization.stage) if cfg.deepspeed.enabled else 0,
        "states_gib": states / GIB,
        "states_how": how,
        "activations_gib": acts / GIB,
        "overhead_gib": OVERHEAD_GIB,
        "need_gib": need / GIB,
        "gpu_mem_gb": gpu_mem_gb,
        "fits": need <= gpu_mem_gb * 1e9,
        "max_length": length,
        "mean_tokens": tokens,
        "mean_tokens_assumed": mean_tokens is None,
        "step_tflop": flops / 1e12,
        "mfu": mfu,
        "peak_tflops": peak_tflops,
        "step_s": step_s,
        "records": n_records,
        "steps_per_epoch": steps,
        "gpu_hours_per_epoch": steps * step_s * gpus / 3600 if steps else None,
        "gradient_checkpointing": checkpointing,
    }


def format_plan(p: dict) -> str:
    lines = [
        f"{p['model']} ({p['architecture']}) on {p['gpus']} GPUs of {p['gpu_mem_gb']:g} GB, ZeRO-{p['zero_stage']}",
        f"  parameters: {p['params_total'] / 1e9:.3f}B total (published {p['params_published'] / 1e9:.2f}B, "
        f"{100 * p['params_vs_published']:+.2f}%), {p['params_trainable'] / 1e9:.3f}B trainable",
        "  image positions per image: " + ", ".join(f"{k}: {v}" for k, v in p["image_positions"].items()),
        f"  batch: {p['batch']}",
        f"  per GPU: model states {p['states_gib']:.1f} GiB [{p['states_how']}]",
        f"           activations {p['activations_gib']:.1f} GiB (micro-batch at max length {p['max_length']}, "
        f"gradient checkpointing {'on' if p['gradient_checkpointing'] else 'off'}) + {p['overhead_gib']:.0f} GiB "
        f"overhead = {p['need_gib']:.1f} GiB -> {'fits' if p['fits'] else 'DOES NOT FIT'}",
        f"  step: {p['step_tflop']:.0f} TFLOP at {p['mean_tokens']:.0f} tokens/record"
        f"{' (max length: an upper bound; set mean_tokens=)' if p['mean_tokens_assumed'] else ''}, "
        f"{p['mfu']:.0%} MFU of {p['peak_tflops']:g} TFLOP/s -> {p['step_s']:.1f} s",
    ]
    if p["steps_per_epoch"]:
        lines.append(
            f"  epoch: {p['records']:,} records = {p['steps_per_epoch']:,} steps -> "
            f"{p['steps_per_epoch'] * p['step_s'] / 3600:.1f} h, {p['gpu_hours_per_epoch']:.0f} GPU-hours"
        )
    else:
        lines.append("  epoch: record count unknown for this data set (set records=)")
    return "\n".join(lines)


def plan_lines(overrides: list[str], resources: dict) -> str:
    """The plan of one recipe training job (``make repro TABLE=... DRY=1``), indented; one line if its model
    has no published architecture."""
    cfg = compose([o for o in overrides if not o.startswith(("hydra.", "+hydra."))])
    if not cfg.model.get("architecture"):
        return f"  plan: model {cfg.model.name} has no published architecture (model.architecture)"
    p = plan(cfg, nodes=int(resources.get("nodes", 1)), gpus_per_node=int(resources.get("gpus", 8)))
    return "\n".join(
        "  plan: " + line.strip() if i == 0 else "  " + line for i, line in enumerate(format_plan(p).splitlines())
    )


def compose(overrides: list[str]) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from lit.paths import conf_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose("train", overrides=overrides)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return
    settings, overrides = {}, []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key in PLAN_KEYS:
            settings[key] = float(value) if "." in value or key in ("mfu", "peak_tflops", "gpu_mem_gb") else int(value)
        else:
            overrides.append(arg)
    print(format_plan(plan(compose(overrides), **settings)))


if __name__ == "__main__":
    main()
