"""Qwen3-VL (``model_type: qwen3_vl``): Qwen2-VL's native-resolution images and vision block, a Qwen3 LM, DeepStack.

What is the same as Qwen2-VL (lit/model/families/qwen2_vl.py, imported from there): the image processor
(``Qwen2VLImageProcessorPil``: an image of H x W pixels is resized to multiples of ``patch_size * merge_size``
within the processor's pixel bounds and takes ``t * h * w / merge_size**2`` positions), the layout
``<|vision_start|>`` + that many ``<|image_pad|>`` + ``<|vision_end|>`` (``Qwen3VLProcessor.replace_image_token``,
transformers ``models/qwen3_vl/processing_qwen3_vl.py``), the flattened patches of a batch concatenated, and the
M-RoPE positions the model computes from ``mm_token_type_ids`` and ``image_grid_thw``
(``Qwen3VLModel.get_rope_index`` has Qwen2-VL's signature; its positions are computed here by the model's own
method, ``qwen2_vl.RopeIndex``, for the collator and for padding-free rows).

What differs (transformers ``models/qwen3_vl/modeling_qwen3_vl.py`` and ``configuration_qwen3_vl.py``): the
vision tower is ``hidden_size`` wide with ``intermediate_size`` MLPs, a learned position grid of
``num_position_embeddings`` (a square, resampled to each image's grid) and 16-pixel patches by default; its
``merger`` maps merged patches to the LM's width (``out_hidden_size``), and the DeepStack mergers
(``deepstack_merger_list``, one per layer in ``deepstack_visual_indexes``) map the features of those tower layers to
the LM's width too, added to the image positions' hidden states after the LM's first layers: both are the
projector. The LM is Qwen3 (per-head q/k norms) with interleaved M-RoPE (``mrope_section`` [24, 20, 20] of 64 in the
published configs). The published chat template is chatml without a default system prompt (the ``qwen3_vl``
template, lit/mask/chat_templates.py).

The processor is built from the PIL image processor and the tokenizer without the video processor, whose class
needs torchvision (as for Qwen2-VL): the CPU environment has none, and video is not trained here.
"""

from __future__ import annotations

import dataclasses

from omegaconf import OmegaConf
from transformers import (
    AutoTokenizer,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLModel,
    Qwen3VLProcessor,
    Qwen3VLTextConfig,
    Qwen3VLVisionConfig,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.processing_utils import ProcessorMixin

from lit.model.families.base import Family
from lit.model.families.qwen2_vl import Qwen2VLImageInputs, tiny_image_processor, tiny_model

PARTS = {
    # the PatchMerger after the last block and the DeepStack mergers: the MLPs from vision patches to the LM's width
    "projector": ("visual.merger", "visual.deepstack_merger_list"),
    "vision": ("visual",),
    "lm": ("language_model", "lm_head"),
}


class Qwen3VLNoVideoProcessor(Qwen3VLProcessor):
    """``Qwen3VLProcessor`` with an image processor and a tokenizer only (no video processor)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
        self.vision_start_token, self.vision_end_token = "<|vision_start|>", "<|vision_end|>"
        for name in ("image", "video", "vision_start", "vision_end"):
            setattr(self, f"{name}_token_id", tokenizer.convert_tokens_to_ids(getattr(self, f"{name}_token")))
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


def load_processor(path: str) -> Qwen3VLNoVideoProcessor:
    """The saved tokenizer and image processor of ``path``, the image processor in its PIL form."""
    return Qwen3VLNoVideoProcessor(
        image_processor=Qwen2VLImageProcessorPil.from_pretrained(path), tokenizer=AutoTokenizer.from_pretrained(path)
    )


class Qwen3VLImageInputs(Qwen2VLImageInputs):
    """Qwen2-VL's image inputs, the M-RoPE positions from ``Qwen3VLModel.get_rope_index``."""

    def __init__(self, processor, config):
        super().__init__(processor, config, inner_model=Qwen3VLModel)


def _config_keys(config_class) -> set[str]:
    """The keyword arguments ``config_class`` reads: its fields and their aliases (``num_hidden_layers`` for
    ``depth``)."""
    return {f.name for f in dataclasses.fields(config_class)} | set(config_class.attribute_map)


def mrope_section(head_dim: int) -> list[int]:
    """Interleaved M-RoPE sections (temporal, height, width) of a head's rotary half, in the published proportions
    [24, 20, 20] of 64 (Qwen3-VL-2B to 32B): height and width each 20/64 of it, the temporal rest."""
    half = head_dim // 2
    spatial = half * 20 // 64
    if spatial < 1:
        raise ValueError(f"Qwen3-VL's M-RoPE needs a head of at least 8 dimensions (4 rotary pairs), got {head_dim}")
    return [half - 2 * spatial, spatial, spatial]


def compose_tiny(cfg, tokenizer):
    """A Qwen3-VL from ``cfg.text`` (Qwen3) / ``cfg.vision`` sizes with random weights, the tokenizer given the
    vision tokens, and a processor whose PIL image processor keeps images between ``cfg.min_pixels`` and
    ``max_pixels``. Keys the configs do not read (the CLIP tower's ``image_size`` of conf/model/tiny.yaml) are left
    out; the merger writes the LM's width."""
    vision = OmegaConf.to_container(cfg.vision, resolve=True)
    text = OmegaConf.to_container(cfg.text, resolve=True)
    vision = {k: v for k, v in vision.items() if k in _config_keys(Qwen3VLVisionConfig)}
    text = {k: v for k, v in text.items() if k in _config_keys(Qwen3VLTextConfig)}
    text.setdefault("head_dim", text["hidden_size"] // text["num_attention_heads"])
    text.setdefault(
        "rope_parameters",
        {
            "rope_type": "default",
            "rope_theta": 5000000.0,
            "mrope_section": mrope_section(text["head_dim"]),
            "mrope_interleaved": True,
        },
    )
    vision["out_hidden_size"] = text["hidden_size"]
    model = tiny_model(cfg, tokenizer, Qwen3VLConfig, Qwen3VLForConditionalGeneration, text, vision)
    image_processor = tiny_image_processor(
        cfg,
        model.config.vision_config,
        image_mean=[0.5, 0.5, 0.5],  # Qwen3-VL's preprocessor_config.json (Qwen2-VL's are CLIP's)
        image_std=[0.5, 0.5, 0.5],
    )
    return model, Qwen3VLNoVideoProcessor(image_processor=image_processor, tokenizer=tokenizer)


FAMILY = Family(
    model_type="qwen3_vl",
    config_class=Qwen3VLConfig,
    model_class=Qwen3VLForConditionalGeneration,
    processor_class=Qwen3VLNoVideoProcessor,
    parts=PARTS,
    image_inputs=lambda config, processor: Qwen3VLImageInputs(processor, config),
    chat_template="qwen3_vl",
    load_processor=load_processor,
    compose_tiny=compose_tiny,
    flash_varlen_kwargs=False,  # the model hands its forward's keyword arguments to the vision tower too
)
