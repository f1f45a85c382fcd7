"""LLaVA-NeXT (``model_type: llava_next``): any-resolution tiling, so the positions an image takes depend on its size.

The count is the processor's own (the one ``LlavaNextProcessor`` expands ``<image>`` with); each image gives
``pixel_values`` (P, 3, H, W) (P tiles, padded to the batch's largest P) and ``image_sizes`` (2,).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor

from lit.data.image_inputs import ImageInputs, open_image
from lit.model.families.base import Family
from lit.model.families.llava import PARTS as LLAVA_PARTS

# LLaVA's parts, the projector with the learned row separator of any-resolution tiling (OneVision's too)
PARTS = {**LLAVA_PARTS, "projector": ("multi_modal_projector", "image_newline")}


class AnyResImageInputs(ImageInputs):
    """LLaVA-NeXT: the image is tiled on the best-fitting grid of ``image_grid_pinpoints`` plus a base view."""

    def __init__(self, processor):
        super().__init__(processor.image_processor, 0)
        self.processor = processor

    def n_tokens(self, height: int | None = None, width: int | None = None) -> int:
        if height is None or width is None:
            raise ValueError("LLaVA-NeXT's image token count depends on the image size: pass height and width")
        return int(self.processor._get_num_multimodal_tokens(image_sizes=[(height, width)]).num_image_tokens[0])

    def n_tokens_of_file(self, path: Path, rid) -> int:
        with open_image(path, rid) as img:  # the header only; the pixels are not decoded
            width, height = img.size
        return self.n_tokens(height, width)

    def spec(self) -> dict:
        ip, p = self.image_processor, self.processor
        return {
            "kind": type(self).__name__,
            "pinpoints": ip.image_grid_pinpoints,
            "size": dict(ip.size),
            "crop_size": dict(ip.crop_size or {}),
            "patch": p.patch_size,
            "strategy": p.vision_feature_select_strategy,
            "extra": p.num_additional_image_tokens,
        }

    def pixels(self, rgb) -> dict[str, torch.Tensor]:
        out = self.image_processor(images=[rgb], return_tensors="pt")
        return {"pixel_values": out["pixel_values"][0], "image_sizes": torch.as_tensor(out["image_sizes"][0])}

    def collate(self, images: list[dict]) -> dict[str, torch.Tensor]:
        tiles = max(im["pixel_values"].shape[0] for im in images)
        shape = images[0]["pixel_values"].shape[1:]
        pixels = torch.zeros((len(images), tiles, *shape), dtype=images[0]["pixel_values"].dtype)
        for row, im in enumerate(images):  # the model reads only the first P tiles of each row (from image_sizes)
            pixels[row, : im["pixel_values"].shape[0]] = im["pixel_values"]
        return {"pixel_values": pixels, "image_sizes": torch.stack([im["image_sizes"] for im in images])}


FAMILY = Family(
    model_type="llava_next",
    config_class=LlavaNextConfig,
    model_class=LlavaNextForConditionalGeneration,
    processor_class=LlavaNextProcessor,
    parts=PARTS,
    image_inputs=lambda config, processor: AnyResImageInputs(processor),
    chat_template="vicuna_v1",
)
