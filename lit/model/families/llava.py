"""LLaVA-1.5 and TinyLLaVA (``model_type: llava``): a fixed number of image positions, one (3, H, W) image each.

576 positions for CLIP at 336 px (577 less the CLS token under strategy ``default``); TinyLLaVA's SigLIP: 728.
"""

from __future__ import annotations

from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

from lit.data.image_inputs import ImageInputs, llava_image_positions
from lit.model.families.base import Family

PARTS = {
    "projector": ("multi_modal_projector",),
    "vision": ("vision_tower",),
    "lm": ("language_model", "lm_head"),
}

FAMILY = Family(
    model_type="llava",
    config_class=LlavaConfig,
    model_class=LlavaForConditionalGeneration,
    processor_class=LlavaProcessor,
    parts=PARTS,
    image_inputs=lambda config, processor: ImageInputs(processor.image_processor, llava_image_positions(config)),
    chat_template="vicuna_v1",
)
