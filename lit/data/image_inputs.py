"""The data side of a model family's image handling: ``ImageInputs`` (the positions an image takes and the
per-image model inputs), the hooks a family overrides, and reading image files.

Each family (``lit.model.families``) builds its ``ImageInputs``: LLaVA a fixed number of positions per image;
LLaVA-NeXT any-resolution tiles; InstructBLIP query tokens plus the Q-Former's instruction; Qwen2-VL a count
from the image's size, between vision start and end tokens, with ``image_grid_thw`` and ``mm_token_type_ids``.
``spec()`` is what the label cache keys on: everything that decides how many positions an image takes.
A record may have several images: ``n_tokens_of_record`` and ``record_pixels`` see them together (a family whose
count or pixels depend on how many images the record has overrides them: LLaVA-OneVision) and
``collate_records`` batches them per record; ``max_images`` bounds them (InstructBLIP: one).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from lit.records import RecordError


class ImageInputs:
    """A fixed number of image positions; one (3, H, W) tensor per image."""

    requires_image = False  # whether text-only records cannot be fed to the model
    max_images: int | None = None  # images one record may have (None: any number)
    model_name = "this family"  # how errors about the model's image limits name it
    augment = None  # training only: (rgb, record id) -> the inputs of pixels() (lit.data.blip_augment)

    def __init__(self, image_processor, n_tokens: int):
        self.image_processor, self.n = image_processor, int(n_tokens)

    def n_tokens(self, height: int | None = None, width: int | None = None) -> int:
        return self.n

    def n_tokens_of_file(self, path: Path, rid) -> int:
        """Positions the image file at ``path`` takes (its header is read only where the count needs the size)."""
        return self.n

    def n_tokens_of_record(self, images: list, rid) -> list[int]:
        """Positions each of a record's images takes (files, or PIL images in memory), in order."""
        return [
            self.n_tokens(im.height, im.width) if isinstance(im, Image.Image) else self.n_tokens_of_file(im, rid)
            for im in images
        ]

    def spec(self) -> dict:
        return {"kind": type(self).__name__, "n": self.n}

    def pixels(self, rgb) -> dict[str, torch.Tensor]:
        """The per-image model inputs (no batch dimension)."""
        return {"pixel_values": self.image_processor(images=[rgb], return_tensors="pt")["pixel_values"][0]}

    def record_pixels(self, rgbs: list) -> list[dict[str, torch.Tensor]]:
        """The per-image model inputs of one record's images (RGB PIL images, in order)."""
        return [self.pixels(rgb) for rgb in rgbs]

    def collate(self, images: list[dict]) -> dict[str, torch.Tensor]:
        return {key: torch.stack([im[key] for im in images]) for key in images[0]}

    def collate_records(self, per_record: list[list[dict]]) -> dict[str, torch.Tensor]:
        """The image inputs of a batch, given each record's images (``item_images``): every image in order."""
        return self.collate([im for images in per_record for im in images])

    def text_inputs(self, record: dict, rid) -> dict[str, np.ndarray]:
        """Per-record token inputs besides ``input_ids`` (none here)."""
        return {}

    def collate_text(self, items: list[dict]) -> dict[str, torch.Tensor]:
        return {}

    def image_ids(self, n: int, image_token_id: int) -> np.ndarray:
        """The ids of the ``n`` positions one image takes in ``input_ids`` (here: the image token ``n`` times)."""
        return np.full(n, image_token_id, dtype=np.int64)

    def token_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-token model inputs derived from the batch's ``input_ids`` (padded rows or one padding-free row),
        e.g. Qwen2-VL's ``mm_token_type_ids`` (none here)."""
        return {}

    def packed_position_ids(self, items: list[dict]) -> torch.Tensor:
        """The positions of ``items`` flattened into one row (``lit.data.collate.PaddingFreeCollator``): (1, N),
        restarting at 0 with each item, the positions each has in a padded batch."""
        return torch.cat([torch.arange(len(it["input_ids"])) for it in items])[None]


def item_images(item: dict) -> list[dict]:
    """The per-image inputs of a data set item, in order: none (text-only), one, or a multi-image record's list."""
    image = item.get("image")
    if image is None:
        return []
    return list(image) if isinstance(image, (list, tuple)) else [image]


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


@contextmanager
def open_image(path: Path, rid):
    """``PIL.Image.open(path)``, any failure to read it (in the block too) a ``RecordError`` naming the record."""
    try:
        with Image.open(path) as img:
            yield img
    except (OSError, UnidentifiedImageError) as err:
        raise RecordError(rid, f"unreadable image {path}: {err}") from err
