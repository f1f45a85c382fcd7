"""LoRA through peft (config group ``adapter``), as in LLaVA-1.5's LoRA schedule: low-rank adapters on every
linear layer of the language model (not the vision tower, projector or LM head), the projector trained in
full at its own learning rate, the vision tower frozen.

Checkpoints: ``adapter.save=adapter`` writes a peft adapter folder (adapter weights, the projector, the
processor); ``merged`` also writes the merged full model, which is what ``checkpoint/`` then holds (vLLM
and any HF loader read it) while ``checkpoint_adapter/`` keeps the adapter. ``lit.model.loading.load_pretrained``
loads either: an adapter folder is applied to its base model and merged in memory.
"""

from __future__ import annotations

import re
from pathlib import Path

from torch import nn

from lit.model.parts import PARTS, part_of

ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_checkpoint(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def lm_linear_pattern(model) -> str:
    """A peft ``target_modules`` regex for every ``nn.Linear`` inside the language model (LLaVA's
    ``find_all_linear_names`` minus the projector, vision tower and LM head), whatever the LM calls them
    (Llama/Qwen2: q_proj ... down_proj; Phi-2: q_proj, dense, fc1, fc2)."""
    leaves = sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and "lm_head" not in name and part_of(f"{name}.weight") == "lm"
        }
    )
    if not leaves:
        raise ValueError("the language model has no nn.Linear layers to put LoRA on")
    return rf".*language_model\..*\.({'|'.join(map(re.escape, leaves))})"


def apply_lora(model, cfg, train_projector: bool, extra_trainable: list[str] = ()):
    """Wrap ``model`` in a peft LoRA model; ``extra_trainable`` modules (e.g. resized embeddings) are
    trained and saved in full beside the projector."""
    from peft import LoraConfig, get_peft_model

    if getattr(model, "is_gradient_checkpointing", False) or cfg.get("gradient_checkpointing"):
        model.enable_input_require_grads()  # frozen embeddings + checkpointing would cut the graph
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    # modules_to_save takes modules: NeXT's image_newline (a bare parameter) stays as stage 1 left it under LoRA
    projector = [m.rsplit(".", 1)[-1] for m in PARTS["projector"] if m.rsplit(".", 1)[-1] in present]
    full = (projector if train_projector else []) + list(extra_trainable)
    config = LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        bias="none",
        target_modules=lm_linear_pattern(model),
        modules_to_save=full or None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def load_adapter_checkpoint(path: str | Path, dtype):
    """Base model + adapter, merged: a full model (LLaVA, NeXT or InstructBLIP) ready for evaluation."""
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForImageTextToText

    base_path = PeftConfig.from_pretrained(str(path)).base_model_name_or_path
    if not base_path:
        raise FileNotFoundError(f"{path}: adapter_config.json names no base model (base_model_name_or_path)")
    base = AutoModelForImageTextToText.from_pretrained(base_path, dtype=dtype)
    return PeftModel.from_pretrained(base, str(path)).merge_and_unload()


def save_merged(adapter_dir: str | Path, out_dir: str | Path, processor, dtype) -> None:
    """Write the merged full model of an adapter checkpoint (read back from disk, so it works the same
    after a ZeRO-3 run, whose in-memory weights are partitioned)."""
    from transformers.integrations import deepspeed as hf_deepspeed

    from lit.model.processor_files import save_processor

    # After a ZeRO-3 run the Trainer's DeepSpeed config is still registered, and from_pretrained would build
    # the base model partitioned (empty tensors) for it; the merge is a plain single-process load.
    registered = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        model = load_adapter_checkpoint(adapter_dir, dtype)
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = registered
    model.save_pretrained(str(out_dir))
    save_processor(processor, out_dir)
