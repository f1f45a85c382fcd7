"""How one architecture turns an image (and, for InstructBLIP, the instruction) into model inputs.

Three kinds, picked from the model's config by ``image_inputs_for``:
- ``llava``: a fixed number of positions per image (LLaVA-1.5 at 336 px: 576; TinyLLaVA's SigLIP: 728),
  ``pixel_values`` (3, H, W);
- ``llava_next``: any-resolution tiling, so the number of positions depends on the image's size; it is
  computed with the processor's own count (the one ``LlavaNextProcessor`` expands ``<image>`` with), and
  each image gives ``pixel_values`` (P, 3, H, W) (P tiles, padded to the batch's largest P) and
  ``image_sizes`` (2,);
- ``instructblip``: a fixed number of query tokens, and the Q-Former also reads the instruction
  (``qformer_input_ids``, the first human turn without the image marker, at most 128 tokens as LAVIS's
  ``max_txt_len``), so every record needs an image.

``spec()`` is what the label cache keys on: everything that decides how many positions an image takes.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from lit.constants import IMAGE_MARKER
from lit.records import RecordError


class ImageInputs:
    """A fixed number of image positions; one (3, H, W) tensor per image."""

    requires_image = False  # whether text-only records cannot be fed to the model
    augment = None  # training only: (rgb, record id) -> the inputs of pixels() (lit.data.blip_augment)

    def __init__(self, image_processor, n_tokens: int):
        self.image_processor, self.n = image_processor, int(n_tokens)

    def n_tokens(self, height: int | None = None, width: int | None = None) -> int:
        return self.n

    def n_tokens_of_file(self, path: Path, rid) -> int:
        """Positions the image file at ``path`` takes (its header is read only where the count needs the size)."""
        return self.n

    def spec(self) -> dict:
        return {"kind": type(self).__name__, "n": self.n}

    def pixels(self, rgb) -> dict[str, torch.Tensor]:
        """The per-image model inputs (no batch dimension)."""
        return {"pixel_values": self.image_processor(images=[rgb], return_tensors="pt")["pixel_values"][0]}

    def collate(self, images: list[dict]) -> dict[str, torch.Tensor]:
        return {key: torch.stack([im[key] for im in images]) for key in images[0]}

    def text_inputs(self, record: dict, rid) -> dict[str, np.ndarray]:
        """Per-record token inputs besides ``input_ids`` (none here)."""
        return {}

    def collate_text(self, items: list[dict]) -> dict[str, torch.Tensor]:
        return {}


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


class QFormerImageInputs(ImageInputs):
    """InstructBLIP: ``num_query_tokens`` positions per image; the Q-Former reads the instruction too."""

    requires_image = True
    max_length = 128  # Q-Former instruction tokens (LAVIS blip2_vicuna_instruct's max_txt_len)

    def __init__(self, processor, n_tokens: int):
        super().__init__(processor.image_processor, n_tokens)
        self.qformer_tokenizer = processor.qformer_tokenizer

    def spec(self) -> dict:
        tok = self.qformer_tokenizer
        return {
            **super().spec(),
            "qformer_max_length": self.max_length,
            "qformer_vocab": len(tok),
            "qformer_tokenizer": type(tok).__name__,
        }

    def text_inputs(self, record: dict, rid) -> dict[str, np.ndarray]:
        first = next(t["value"] for t in record["conversations"] if t["from"] == "human")
        tok = self.qformer_tokenizer
        side, tok.truncation_side = (
            tok.truncation_side,
            "left",
        )  # LAVIS keeps the instruction's end (its init_tokenizer)
        try:
            ids = tok(first.replace(IMAGE_MARKER, "").strip(), truncation=True, max_length=self.max_length)["input_ids"]
        finally:
            tok.truncation_side = side
        if not ids:
            raise RecordError(rid, "the Q-Former tokenizer gives no tokens for the instruction")
        return {"qformer_input_ids": np.asarray(ids, dtype=np.int64)}

    def collate_text(self, items: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(it["qformer_input_ids"]) for it in items)
        pad = self.qformer_tokenizer.pad_token_id or 0
        ids = torch.full((len(items), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(items), longest), dtype=torch.long)
        for row, it in enumerate(items):
            n = len(it["qformer_input_ids"])
            ids[row, :n], mask[row, :n] = it["qformer_input_ids"], 1
        return {"qformer_input_ids": ids, "qformer_attention_mask": mask}


def extra_vision_positions(vision_config) -> int:
    """Positions a vision tower outputs besides its patches: CLIP's CLS token; SigLIP has none."""
    return 0 if vision_config.model_type.startswith("siglip") else 1


def llava_image_positions(model_config) -> int:
    """Image features a LLaVA gives the LM per image, as ``LlavaModel.get_image_features`` selects them: the
    tower's patches and extra positions, less the first position under strategy ``default`` (CLIP: 577 - 1 =
    576 at 336 px; SigLIP-so400m at 384 px: 729 with ``full``, 728 with ``default`` as TinyLLaVA)."""
    vision = model_config.vision_config
    n = (vision.image_size // vision.patch_size) ** 2 + extra_vision_positions(vision)
    return n - (model_config.vision_feature_select_strategy == "default")


def image_inputs_for(model_config, processor) -> ImageInputs:
    """The ``ImageInputs`` of a model (by its config's ``model_type``) and its processor."""
    kind = model_config.model_type
    if kind == "llava":
        return ImageInputs(processor.image_processor, llava_image_positions(model_config))
    if kind == "llava_next":
        return AnyResImageInputs(processor)
    if kind == "instructblip":
        return QFormerImageInputs(processor, model_config.num_query_tokens)
    raise ValueError(f"no image inputs for model_type {kind!r}; known: llava, llava_next, instructblip")


@contextmanager
def open_image(path: Path, rid):
    """``PIL.Image.open(path)``, any failure to read it (in the block too) a ``RecordError`` naming the record."""
    try:
        with Image.open(path) as img:
            yield img
    except (OSError, UnidentifiedImageError) as err:
        raise RecordError(rid, f"unreadable image {path}: {err}") from err
