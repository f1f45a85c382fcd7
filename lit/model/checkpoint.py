"""Saving a trained model as a checkpoint that evaluation (lmms-eval, vLLM, ``lit_llava``) reads as it is."""

from __future__ import annotations

from pathlib import Path

from lit.model.processor_files import save_processor
from lit.paths import conf_dir

CONF_DIR = conf_dir()


class MissingCheckpoint(SystemExit):
    """``model.pretrained`` names a local checkpoint that is not there: exits with one line (no traceback)."""


def require_pretrained(model_cfg) -> None:
    """Stop before anything is built if ``model.pretrained`` is a local path that does not exist. Stage 2's
    default is stage 1's stable output (``<output_root>/<name>_stage1/checkpoint``), so the message names the
    stage-1 command that writes it."""
    from lit.model.hub import is_hub_id

    path = model_cfg.get("pretrained")
    if not path or is_hub_id(path) or Path(path).exists():
        return
    stage1 = Path(path).parent.name
    if Path(path).name == "checkpoint" and (CONF_DIR / "model" / f"{stage1}.yaml").is_file():
        raise MissingCheckpoint(
            f"model.pretrained={path} does not exist: it is stage 1's checkpoint, so train stage "
            f"1 first with `python train.py model={stage1}` (it writes {path}), or set "
            "model.pretrained=<a stage-1 run>/checkpoint or a hub id"
        )
    raise MissingCheckpoint(
        f"model.pretrained={path} does not exist: set it to a checkpoint directory "
        "(<run>/checkpoint) or a Hugging Face hub id (org/name)"
    )


def save_checkpoint(trainer, built, template, adapter_cfg, dtype: str, output_dir: Path) -> Path:
    """``<output_dir>/checkpoint``: the weights, the processor and the prepared tokenizer, with the training
    format as a Jinja chat template (lmms-eval's ``llava_hf``, vLLM and ``apply_chat_template`` use it).
    A LoRA run with ``adapter.save=merged`` also keeps its adapter in ``checkpoint_adapter``."""
    from lit.model.chat_jinja import to_jinja

    merge = built.lora and adapter_cfg.save == "merged"
    saved = output_dir / ("checkpoint_adapter" if merge else "checkpoint")
    trainer.save_model(str(saved))
    if trainer.is_world_process_zero():
        built.processor.chat_template = built.tokenizer.chat_template = to_jinja(template)
        save_processor(built.processor, saved)
        if merge:
            from lit.model.loading import DTYPES
            from lit.model.lora import save_merged

            save_merged(saved, output_dir / "checkpoint", built.processor, DTYPES[dtype])
    return output_dir / "checkpoint"
