"""Qwen2-VL and Qwen2.5-VL (``model_type: qwen2_vl`` / ``qwen2_5_vl``): native-resolution images, M-RoPE.

An image of H x W pixels is resized to multiples of ``patch_size * merge_size`` within the processor's pixel
bounds and takes ``t * h * w / merge_size**2`` positions (``image_grid_thw`` = (t, h, w) patches), written as
``<|vision_start|>`` + that many ``<|image_pad|>`` + ``<|vision_end|>`` (the chat template writes the block with
one pad, the data set expands it), the layout of Qwen2-VL's chat template and ``Qwen2VLProcessor``
(transformers ``models/qwen2_vl/processing_qwen2_vl.py``, ``replace_image_token``).
``pixel_values`` are the flattened patches of all images of a batch, concatenated. The LM's 3-D rotary
positions are computed by the model from ``mm_token_type_ids`` (1 on image pads, 0 elsewhere, as
``ProcessorMixin.create_mm_token_type_ids``) and ``image_grid_thw``.

The processor is built from the PIL image processor (``Qwen2VLImageProcessorPil``) and the tokenizer without
the video processor, whose class needs torchvision: the CPU environment has none, and video is not trained here.
"""

from __future__ import annotations

from pathlib import Path
from types import MethodType

import torch
from transformers import (
    AutoTokenizer,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLModel,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLModel,
    Qwen2VLProcessor,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.processing_utils import ProcessorMixin

from lit.data.image_inputs import ImageInputs, item_images, open_image
from lit.model.families.base import Family, tiny_sizes, tokenizer_ids

VISION_TOKENS = ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>")
PARTS = {
    "projector": ("visual.merger",),  # Qwen2-VL's PatchMerger: the MLP from vision patches to the LM's width
    "vision": ("visual",),
    "lm": ("language_model", "lm_head"),
}


class Qwen2VLNoVideoProcessor(Qwen2VLProcessor):
    """``Qwen2VLProcessor`` with an image processor and a tokenizer only (no video processor)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


def load_processor(path: str) -> Qwen2VLNoVideoProcessor:
    """The saved tokenizer and image processor of ``path``, the image processor in its PIL form."""
    return Qwen2VLNoVideoProcessor(
        image_processor=Qwen2VLImageProcessorPil.from_pretrained(path), tokenizer=AutoTokenizer.from_pretrained(path)
    )


class RopeIndex:
    """The model's own M-RoPE positions (``Qwen2VLModel.get_rope_index``, or Qwen2.5-VL's) without the model: the
    method reads only ``self.config`` and ``self.get_vision_position_ids``, so it is bound to this holder of the
    config, and a collator (in a data-loader worker too) computes exactly the positions the model would."""

    def __init__(self, model_class, config):
        self.config = config
        self.get_vision_position_ids = MethodType(model_class.get_vision_position_ids, self)
        self.get_rope_index = MethodType(model_class.get_rope_index, self)


class Qwen2VLImageInputs(ImageInputs):
    """Positions (image pads) from the image's size, their grid, and the M-RoPE token types."""

    def __init__(self, processor, config, inner_model=None):
        """``inner_model``: the class whose ``get_rope_index`` the positions come from (default: Qwen2-VL's, or
        Qwen2.5-VL's for its config; Qwen3-VL passes its own)."""
        super().__init__(processor.image_processor, 0)
        self.merge = self.image_processor.merge_size
        self.start, self.pad, self.end = config.vision_start_token_id, config.image_token_id, config.vision_end_token_id
        inner = inner_model or (Qwen2_5_VLModel if config.model_type == "qwen2_5_vl" else Qwen2VLModel)
        self.rope = RopeIndex(inner, config)

    def n_tokens(self, height: int | None = None, width: int | None = None) -> int:
        if height is None or width is None:
            raise ValueError("Qwen2-VL's image token count depends on the image size: pass height and width")
        patches = self.image_processor.get_number_of_image_patches(height, width, {})
        return patches // self.merge**2

    def n_tokens_of_file(self, path: Path, rid) -> int:
        with open_image(path, rid) as img:  # the header only
            width, height = img.size
        return self.n_tokens(height, width)

    def spec(self) -> dict:
        ip = self.image_processor
        return {
            "kind": type(self).__name__,
            "size": dict(ip.size),
            "patch": ip.patch_size,
            "merge": ip.merge_size,
            "temporal": ip.temporal_patch_size,
            "ids": [self.start, self.pad, self.end],
        }

    def pixels(self, rgb) -> dict[str, torch.Tensor]:
        out = self.image_processor(images=[rgb], return_tensors="pt")
        return {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"][0]}

    def collate(self, images: list[dict]) -> dict[str, torch.Tensor]:
        return {
            "pixel_values": torch.cat([im["pixel_values"] for im in images]),
            "image_grid_thw": torch.stack([im["image_grid_thw"] for im in images]),
        }

    def token_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"mm_token_type_ids": (input_ids == self.pad).to(torch.int32)}

    def packed_position_ids(self, items: list[dict]) -> torch.Tensor:
        """(4, 1, N): the text positions (restarting with each record: transformers builds the per-record mask from
        them) over each record's 3-D M-RoPE positions, computed for that record alone by the model's own
        ``get_rope_index``, as in a padded batch."""
        rows = []
        for it in items:
            ids = torch.as_tensor(it["input_ids"], dtype=torch.long)[None]
            images = item_images(it)
            grid = torch.stack([im["image_grid_thw"] for im in images]) if images else None
            positions, _ = self.rope.get_rope_index(
                ids, self.token_inputs(ids)["mm_token_type_ids"], image_grid_thw=grid
            )
            rows.append(positions)
        return torch.cat([super().packed_position_ids(items)[None], torch.cat(rows, dim=-1)])


def add_vision_tokens(tokenizer) -> dict[str, int]:
    """Give ``tokenizer`` the vision tokens it lacks; their ids."""
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [t for t in VISION_TOKENS if t not in tokenizer.get_vocab()]}
    )
    return {t: tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS}


def tiny_model(cfg, tokenizer, config_class, model_class, text: dict, vision: dict):
    """A model of ``model_class`` with random weights (``cfg.init_seed``) from ``text`` / ``vision`` sizes, with the
    tokenizer's vocabulary, special ids and vision tokens (Qwen2-VL's, Qwen2.5-VL's and Qwen3-VL's configs share
    these names)."""
    ids = add_vision_tokens(tokenizer)
    config = config_class(
        text_config={**text, **tokenizer_ids(tokenizer)},
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(int(cfg.get("init_seed", 0)))
    return model_class._from_config(config)


def tiny_image_processor(cfg, vision_config, **extra) -> Qwen2VLImageProcessorPil:
    """The PIL image processor for ``vision_config``'s patches, keeping images between ``cfg.min_pixels`` and
    ``cfg.max_pixels``."""
    return Qwen2VLImageProcessorPil(
        min_pixels=int(cfg.min_pixels),
        max_pixels=int(cfg.max_pixels),
        patch_size=vision_config.patch_size,
        merge_size=vision_config.spatial_merge_size,
        temporal_patch_size=vision_config.temporal_patch_size,
        **extra,
    )


def compose_tiny(cfg, tokenizer):
    """A Qwen2-VL from ``cfg.text`` / ``cfg.vision`` sizes with random weights, the tokenizer given the vision
    tokens, and a processor whose PIL image processor keeps images between ``cfg.min_pixels`` and ``max_pixels``."""
    text, vision = tiny_sizes(cfg)
    config_class, model_class = Qwen2VLConfig, Qwen2VLForConditionalGeneration
    if cfg.arch == "qwen2_5_vl":  # the same sizes in Qwen2.5-VL's names: its tower is `hidden_size` wide, the
        # merger writes `out_hidden_size`; windowed attention in every block but the last, as the published layout
        config_class, model_class = Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
        width, lm_width = vision.pop("embed_dim"), vision["hidden_size"]
        vision.update(
            hidden_size=width,
            intermediate_size=width * vision.pop("mlp_ratio"),
            out_hidden_size=lm_width,
            window_size=vision["patch_size"] * vision["spatial_merge_size"] * 2,
            fullatt_block_indexes=[vision["depth"] - 1],
        )
    if "rope_parameters" not in text:  # M-RoPE sections in Qwen2-VL-7B's proportions, [16, 24, 24] of 64
        half = text["hidden_size"] // text["num_attention_heads"] // 2
        t = half // 4
        sections = [t, (half - t) // 2, half - t - (half - t) // 2]
        text["rope_parameters"] = {"rope_type": "default", "mrope_section": sections, "rope_theta": 1000000.0}
    model = tiny_model(cfg, tokenizer, config_class, model_class, text, vision)
    image_processor = tiny_image_processor(cfg, model.config.vision_config)
    return model, Qwen2VLNoVideoProcessor(image_processor=image_processor, tokenizer=tokenizer)


def _family(model_type: str, config_class, model_class) -> Family:
    return Family(
        model_type=model_type,
        config_class=config_class,
        model_class=model_class,
        processor_class=Qwen2VLNoVideoProcessor,
        parts=PARTS,
        image_inputs=lambda config, processor: Qwen2VLImageInputs(processor, config),
        chat_template="qwen2_vl",
        load_processor=load_processor,
        compose_tiny=compose_tiny,
        flash_varlen_kwargs=False,  # the model hands its forward's keyword arguments to the vision tower too
    )


FAMILY = _family("qwen2_vl", Qwen2VLConfig, Qwen2VLForConditionalGeneration)
FAMILY_2_5 = _family("qwen2_5_vl", Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration)
