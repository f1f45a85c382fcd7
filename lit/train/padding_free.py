"""Padding-free training (``train.padding_free: true``): which models can run it, and the collator that feeds them.

Each micro-batch becomes one row of its records back to back (``lit.data.collate.PaddingFreeCollator``), so no
layer computes a padding position. The sampler, the per-device and global batch, the accumulation and the loss
normaliser (supervised tokens of the whole accumulated batch) are untouched: a run takes the recipe's optimizer
steps, and its loss and gradients are the padded run's (tests/train/test_padding_free.py). The records stay
apart because transformers builds the attention from the restarting position ids when no attention mask is given:
a per-record causal mask for SDPA and eager attention, the variable-length kernel for FlashAttention.

What is checked at start-up, each refusal naming the setting to change: the attention kernel (one that reads
record boundaries), the LM (one whose mask reads them from the position ids; LM_TYPES, each verified in the
tests), and a decoder-only LM (InstructBLIP on T5 is an encoder-decoder).
"""

from __future__ import annotations

from lit.data.collate import PaddingFreeCollator
from lit.model.families import family_of

KERNELS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3")
FLASH = ("flash_attention_2", "flash_attention_3")
# LM model types whose transformers 5 forward builds its mask from packed position ids when no attention mask is
# given: Vicuna/Llama (LLaVA-1.5, LLaVA-NeXT-Vicuna, InstructBLIP-Vicuna), Qwen2 (TinyLLaVA-0.5B, OneVision), Phi-2
# (TinyLLaVA-3B), Mistral (LLaVA-NeXT-Mistral), the text models of Qwen2-VL and Qwen2.5-VL, and Qwen3-VL's
# (tests/model/test_qwen3_vl.py: its packed rows give the padded batch's loss and gradients).
LM_TYPES = ("llama", "qwen2", "phi", "mistral", "qwen2_vl_text", "qwen2_5_vl_text", "qwen3_vl_text")


def check_padding_free(config) -> None:
    """Refuse, at start-up, a model that cannot train padding-free, naming what to set."""
    text = config.get_text_config()
    kernel = text._attn_implementation or config._attn_implementation
    if kernel not in KERNELS:
        raise ValueError(
            "train.padding_free=true needs an attention kernel that keeps packed records apart "
            f"({', '.join(KERNELS)}); this model runs {kernel!r}: set model.attn_implementation=sdpa (or "
            "flash_attention_2 on GPU), or train.padding_free=false"
        )
    if getattr(config, "use_decoder_only_language_model", True) is False or text.is_encoder_decoder:
        raise ValueError(
            f"train.padding_free=true needs a decoder-only LM; this {config.model_type} has the encoder-decoder "
            f"{text.model_type}: set train.padding_free=false"
        )
    if text.model_type not in LM_TYPES:
        raise ValueError(
            f"train.padding_free=true is verified for the LMs {', '.join(LM_TYPES)}; this model's LM is "
            f"{text.model_type!r}, whose mask may not read packed records from the position ids: set "
            "train.padding_free=false (or verify it as tests/train/test_padding_free.py does and add it to "
            "lit.train.padding_free.LM_TYPES)"
        )


def padding_free_collator(model, pad_token_id: int, image_inputs) -> PaddingFreeCollator:
    """The padding-free collator of ``model``, after the checks, with the family's adaptation applied to the model
    (``Family.prepare_padding_free``) and FlashAttention's boundary arguments where the family passes them to the
    LM only."""
    config = model.config
    check_padding_free(config)
    family = family_of(config.model_type)
    if family.prepare_padding_free is not None:
        family.prepare_padding_free(model)
    kernel = config.get_text_config()._attn_implementation
    return PaddingFreeCollator(pad_token_id, image_inputs, flash_kwargs=kernel in FLASH and family.flash_varlen_kwargs)
