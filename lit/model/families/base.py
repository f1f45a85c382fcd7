"""What a model family is: everything that differs between Hugging Face vision-language classes, in one record.

A family module (``lit/model/families/<model_type>.py``) builds one ``Family`` and nothing outside it asks which
family a model is: loading, freezing, per-part learning rates, LoRA, the image inputs of training and evaluation
and the default chat template all read it from here (``lit.model.families.family_of``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lit.data.image_inputs import ImageInputs


@dataclass(frozen=True)
class Family:
    """One Hugging Face image-text class and how this repository drives it.

    ``parts``: parameter-name markers of the vision tower, the projector and the LM (``model.freeze``,
    ``model.part_lrs`` and LoRA address the parts; a marker matches a dotted name component sequence).
    ``image_inputs(model_config, processor)``: how an image becomes positions and model inputs.
    ``load_processor(path)``: the processor of a saved checkpoint with transformers' PIL image processor (None:
    ``AutoProcessor``); ``compose_tiny(model_cfg, tokenizer)``: a model and processor from configs with random
    weights (the CPU tests; None: the family is only loaded).
    ``chat_template``: the name in ``lit.mask.chat_templates.TEMPLATES`` its checkpoints are trained with when
    ``model.chat_template`` is not given.
    Padding-free training (``lit.train.padding_free``): ``prepare_padding_free(model)`` adapts a model whose forward
    would hide the packed records from the LM's mask (None: nothing to adapt); ``flash_varlen_kwargs``: whether the
    record boundaries may be passed as FlashAttention's ``cu_seq_lens_*`` keyword arguments (False where the
    forward hands its keyword arguments to the vision tower as well; FlashAttention then reads them from the
    position ids).
    """

    model_type: str
    config_class: type
    model_class: type
    processor_class: type
    parts: dict[str, tuple[str, ...]]
    image_inputs: Callable[[object, object], ImageInputs]
    chat_template: str
    load_processor: Callable[[str], object] | None = None
    compose_tiny: Callable[[object, object], tuple[object, object]] | None = None
    prepare_padding_free: Callable[[object], None] | None = None
    flash_varlen_kwargs: bool = True

    def part_of(self, name: str) -> str | None:
        """Which part (vision/projector/lm) the parameter ``name`` belongs to; None if none claims it."""
        for part, markers in self.parts.items():
            if any(f".{m}." in f".{name}." for m in markers):
                return part
        return None


def tiny_sizes(cfg) -> tuple[dict, dict]:
    """``cfg.text`` and ``cfg.vision``, a tiny model's sizes, as plain dicts without their ``arch`` and
    ``vocab_size`` keys (the vocabulary is the tokenizer's, ``tokenizer_ids``)."""
    from omegaconf import OmegaConf

    def plain(node) -> dict:
        return {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k not in ("arch", "vocab_size")}

    return plain(cfg.text), plain(cfg.vision)


def tokenizer_ids(tokenizer) -> dict[str, int]:
    """The LM config's vocabulary size and special token ids for the tokenizer a tiny model is built with."""
    return {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
