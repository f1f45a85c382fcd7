"""Idefics3 and SmolVLM's layout (``model_type: idefics3``; SmolVLM2's ``smolvlm``, below): an image is split
into tiles, each tile written as ``image_seq_len`` image tokens after its own tag, and a downscaled global view
follows.

The layout is ``Idefics3Processor``'s (transformers ``models/idefics3/processing_idefics3.py``,
``replace_image_token``): an image of R x C tiles (``do_image_splitting``; the image processor resizes it to
multiples of ``max_image_size``) is, row by row, ``<fake_token_around_image><row_r_col_c>`` + ``<image>`` x
``image_seq_len`` per tile, a ``\\n`` after each row, then ``\\n<fake_token_around_image><global-img>`` +
``<image>`` x ``image_seq_len`` + ``<fake_token_around_image>``; an image that is not split (R = C = 0) is the
global block alone. ``image_seq_len`` = (tile size / patch size)^2 / scale_factor^2 (the connector's pixel
shuffle). The ids of that text are the tokenizer's (the newlines between the tags too), so they are the
processor's for the same image and text; the chat template writes one ``<image>``, which the data set expands.

``pixel_values`` per image are its tiles (T, 3, H, W) and ``pixel_attention_mask`` (T, H, W); a batch holds
the tiles of all its images in one row (1, sum T, ...): the model flattens the image axis and fills the image
tokens in order.

SmolVLM2 (``model_type: smolvlm``, HuggingFaceTB/SmolVLM2-*-Instruct) is the same layout in transformers'
``smolvlm`` classes (``models/smolvlm/``: the processor's ``replace_image_token`` writes the same text, the image
processor, config fields and model inputs are Idefics3's, the module names too): ``FAMILY_SMOLVLM``. Its
``SmolVLMProcessor`` also needs a video processor, whose class needs torchvision, and ``num2words`` for the video
prompts (the CPU environment has neither; video is not trained here), so it is built without one
(``SmolVLMNoVideoProcessor``). Unlike
``Idefics3Processor`` it adds no tokens to the tokenizer (the published tokenizers have them) and counts no
image tokens (``_get_num_multimodal_tokens``): its count is the length of the text it writes, which
``Idefics3ImageInputs`` tokenizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import (
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3Processor,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
    SmolVLMProcessor,
)
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil
from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil
from transformers.processing_utils import ProcessorMixin

from lit.data.image_inputs import ImageInputs, open_image
from lit.model.families.base import Family, tiny_sizes, tokenizer_ids

FAKE, GLOBAL, END_OF_UTTERANCE = "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"
MAX_TILES = 6  # <row_1_col_1> ... <row_6_col_6>, the tags Idefics3Processor looks up
TILE_TAGS = tuple(f"<row_{r}_col_{c}>" for r in range(1, MAX_TILES + 1) for c in range(1, MAX_TILES + 1))
SPECIAL_TOKENS = (FAKE, "<image>", END_OF_UTTERANCE, GLOBAL, *TILE_TAGS)
PARTS = {
    "projector": ("connector",),  # Idefics3Connector: pixel shuffle + the linear map to the LM's width
    "vision": ("vision_model",),
    "lm": ("text_model", "lm_head"),
}


class SmolVLMNoVideoProcessor(SmolVLMProcessor):
    """``SmolVLMProcessor`` with an image processor and a tokenizer only (no video processor): the tokens it reads
    off the tokenizer as ``SmolVLMProcessor.__init__`` does, no ``video_token`` (a ``<video>`` in the text stays
    text)."""

    def __init__(self, image_processor=None, tokenizer=None, image_seq_len: int = 169, chat_template=None, **kwargs):
        self.fake_image_token = getattr(tokenizer, "fake_image_token", FAKE)
        self.image_token = getattr(tokenizer, "image_token", "<image>")
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.end_of_utterance_token = getattr(tokenizer, "end_of_utterance_token", END_OF_UTTERANCE)
        self.global_image_token = getattr(tokenizer, "global_image_token", GLOBAL)
        self.image_seq_len = image_seq_len
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    def apply_chat_template(self, conversation, chat_template=None, **kwargs):
        """``ProcessorMixin``'s (``SmolVLMProcessor``'s adds its video processor's frame settings)."""
        return ProcessorMixin.apply_chat_template(self, conversation, chat_template, **kwargs)


@dataclass(frozen=True)
class Classes:
    """The transformers classes of one member of the layout: Idefics3's, or SmolVLM2's."""

    config: type
    model: type
    processor: type
    image_processor: type

    def load_processor(self, path: str):
        """The saved processor of ``path`` with the PIL image processor (``Idefics3ImageProcessorPil`` /
        ``SmolVLMImageProcessorPil``, whatever transformers would default to where torchvision is installed)."""
        processor = self.processor.from_pretrained(path)
        processor.image_processor = self.image_processor.from_pretrained(path)
        return processor

    def compose_tiny(self, cfg, tokenizer):
        """A model of these classes from ``cfg.text`` (a Llama) / ``cfg.vision`` sizes with random weights, the
        tokenizer given the family's special tokens, and a processor whose PIL image processor resizes to
        ``cfg.longest_edge`` and splits into tiles of ``cfg.vision.image_size`` (``cfg.do_image_splitting``)."""
        tokenizer.add_special_tokens(
            {"additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in tokenizer.get_vocab()]}
        )
        text, vision = tiny_sizes(cfg)
        text.update(model_type="llama", **tokenizer_ids(tokenizer))
        config = self.config(
            text_config=text,
            vision_config=vision,
            image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
            scale_factor=int(cfg.scale_factor),
            pad_token_id=tokenizer.pad_token_id,
        )
        torch.manual_seed(int(cfg.get("init_seed", 0)))
        model = self.model._from_config(config)
        image_processor = self.image_processor(
            size={"longest_edge": int(cfg.longest_edge)},
            max_image_size={"longest_edge": vision["image_size"]},
            do_image_splitting=bool(cfg.do_image_splitting),
        )
        seq_len = (vision["image_size"] // vision["patch_size"]) ** 2 // int(cfg.scale_factor) ** 2
        return model, self.processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=seq_len)


IDEFICS3 = Classes(Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor, Idefics3ImageProcessorPil)
SMOLVLM = Classes(SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMNoVideoProcessor, SmolVLMImageProcessorPil)


class Idefics3ImageInputs(ImageInputs):
    """Tiles from the image's size; the positions are the processor's tile tags, newlines and image tokens."""

    def __init__(self, processor, config):
        super().__init__(processor.image_processor, 0)
        self.processor, self.tokenizer = processor, processor.tokenizer
        self.seq_len = int(processor.image_seq_len)
        vision = config.vision_config
        expected = (vision.image_size // vision.patch_size) ** 2 // config.scale_factor**2
        if self.seq_len != expected:
            raise ValueError(
                f"the processor writes {self.seq_len} image tokens per tile but the model gives {expected} "
                "((image_size / patch_size)^2 / scale_factor^2): set the processor's image_seq_len"
            )
        grids = [(0, 0)] + [(r, c) for r in range(1, MAX_TILES + 1) for c in range(1, MAX_TILES + 1)]
        self.layouts = {grid: self._layout(*grid) for grid in grids}
        self.by_count: dict[int, np.ndarray] = {}
        for ids in self.layouts.values():  # each tile adds image_seq_len + 2 positions, each row one more
            if len(ids) in self.by_count:
                raise ValueError(f"two tile grids take {len(ids)} positions (image_seq_len {self.seq_len})")
            self.by_count[len(ids)] = ids

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """(rows, cols) of the tiles an image of ``height`` x ``width`` is split into; (0, 0): not split."""
        _, rows, cols = self.image_processor.get_number_of_image_patches(height, width, {})
        if rows > MAX_TILES or cols > MAX_TILES:
            raise ValueError(f"an image of {height} x {width} is split into {rows} x {cols} tiles; at most 6 x 6")
        return rows, cols

    def _layout(self, rows: int, cols: int) -> np.ndarray:
        """The ids of one image of ``rows`` x ``cols`` tiles: the processor's text for it, tokenized."""
        text = self.processor.replace_image_token({"rows": [[rows]], "cols": [[cols]]}, 0)
        return np.asarray(self.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)

    def n_tokens(self, height: int | None = None, width: int | None = None) -> int:
        if height is None or width is None:
            raise ValueError("Idefics3's image token count depends on the image size: pass height and width")
        return len(self.layouts[self.grid(height, width)])

    def n_tokens_of_file(self, path, rid) -> int:
        with open_image(path, rid) as img:  # the header only
            width, height = img.size
        return self.n_tokens(height, width)

    def image_ids(self, n: int, image_token_id: int) -> np.ndarray:
        """The processor's ids of the image that takes ``n`` positions (the count decides the tile grid)."""
        if n not in self.by_count:
            raise ValueError(f"no Idefics3 tile grid takes {n} positions (image_seq_len {self.seq_len})")
        return self.by_count[n]

    def spec(self) -> dict:
        ip = self.image_processor
        return {
            "kind": type(self).__name__,
            "size": dict(ip.size),
            "tile": dict(ip.max_image_size),
            "split": bool(ip.do_image_splitting),
            "seq_len": self.seq_len,
            "layout": self.layouts[2, 2].tolist(),  # the tokenizer's ids of the tags and newlines (and "\\n\\n")
        }

    def pixels(self, rgb) -> dict[str, torch.Tensor]:
        out = self.image_processor(images=[rgb], return_tensors="pt", return_row_col_info=True)
        grid = (out["rows"][0][0], out["cols"][0][0])
        if grid != self.grid(rgb.height, rgb.width):  # the count the labels were built with
            raise ValueError(
                f"the image processor split a {rgb.height} x {rgb.width} image into {grid} tiles, "
                f"not the {self.grid(rgb.height, rgb.width)} its token count assumes"
            )
        return {"pixel_values": out["pixel_values"][0], "pixel_attention_mask": out["pixel_attention_mask"][0].bool()}

    def collate(self, images: list[dict]) -> dict[str, torch.Tensor]:
        return {key: torch.cat([im[key] for im in images])[None] for key in ("pixel_values", "pixel_attention_mask")}


def _family(model_type: str, classes: Classes) -> Family:
    return Family(
        model_type=model_type,
        config_class=classes.config,
        model_class=classes.model,
        processor_class=classes.processor,
        parts=PARTS,
        image_inputs=lambda config, processor: Idefics3ImageInputs(processor, config),
        chat_template="idefics3",
        load_processor=classes.load_processor,
        compose_tiny=classes.compose_tiny,
    )


FAMILY = _family("idefics3", IDEFICS3)
FAMILY_SMOLVLM = _family("smolvlm", SMOLVLM)
