"""InternVL (``model_type: internvl``, transformers' native ``InternVLForConditionalGeneration``: OpenGVLab's
InternVL2.5 / InternVL3 ``-hf`` checkpoints): an InternViT tower, a pixel-shuffle MLP projector, a Qwen2 (or Llama)
LM; an image is cut into tiles of the tower's size, each tile written as ``image_seq_length`` context tokens.

The layout is ``InternVLProcessor``'s (transformers ``models/internvl/processing_internvl.py``,
``replace_image_token``): an image of T tiles is ``<img>`` + ``<IMG_CONTEXT>`` x (``image_seq_length`` x T) +
``</img>``, the processor's ``_get_num_multimodal_tokens``: 2 + ``image_seq_length`` x T positions. T is the PIL
image processor's (``GotOcr2ImageProcessorPil``, ``get_number_of_image_patches``), with the kwargs the processor
calls it with (``InternVLProcessor.images_kwargs``: ``crop_to_patches`` on, whatever the image processor's own
setting): the tile grid (columns x rows, between ``min_patches`` and ``max_patches`` tiles) whose aspect ratio is
closest to the image's, plus a thumbnail of the whole image where the grid has more than one tile; T = 1 (the
image resized to one tile) otherwise. ``image_seq_length`` = (tile size / patch size)^2 x ``downsample_ratio``^2
(the pixel shuffle); the model drops the tower's CLS position (``vision_feature_select_strategy: default``).
The chat template writes one ``<IMG_CONTEXT>`` per image, which the data set expands to the block's ids (the
tokenizer's, so the processor's for the same image and text).

``pixel_values`` per image are its tiles (T, 3, H, W); a batch holds the tiles of all its images, concatenated in
order (sum T, 3, H, W): the model takes no tile counts, it fills the context tokens in order.

The published template (OpenGVLab/InternVL3-*-hf, written by transformers'
``models/internvl/convert_internvl_weights_to_hf.py``; tests/chat_template_fixtures.py ``INTERNVL``) is chatml
with no default system prompt and ``<IMG_CONTEXT>\\n`` for an image item: the ``internvl`` template of
lit/mask/chat_templates.py, which ``chat_template: auto`` derives from it. The original (remote-code) InternVL3
inserts a default system prompt; the ``-hf`` template does not.

The processor is built from the PIL image processor and the tokenizer without the video processor, whose class
needs torchvision (the CPU environment has none; video is not trained here). The tokenizer names the image tokens
as ``InternVLProcessor`` reads them (``start_image_token``, ``end_image_token``, ``context_image_token``,
``video_token``: the published tokenizers' ``extra_special_tokens``).

Padding-free training needs nothing of the family: the LM (Qwen2, or Llama for some checkpoints) reads the records
apart from the packed position ids (tests/model/test_internvl.py: the packed batch gives the padded batch's loss,
SDPA on CPU), and the forward hands its keyword arguments to the LM only (``InternVLModel.forward`` calls
``get_image_features`` without them), so FlashAttention's boundary arguments may be passed (``flash_varlen_kwargs``
left on; that kernel is not run by the CPU tests).
"""

from __future__ import annotations

import re

import numpy as np
import torch
from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLProcessor
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil
from transformers.processing_utils import ProcessorMixin

from lit.data.image_inputs import ImageInputs, open_image
from lit.model.families.base import Family, tiny_sizes, tokenizer_ids

START, CONTEXT, END, VIDEO = "<img>", "<IMG_CONTEXT>", "</img>", "<video>"
# the names InternVLProcessor reads off the tokenizer (the published tokenizers' extra_special_tokens)
NAMED_TOKENS = {
    "start_image_token": START,
    "end_image_token": END,
    "context_image_token": CONTEXT,
    "video_token": VIDEO,
}
CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")  # chatml's, special tokens of the published Qwen2 tokenizers
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # the published image processor's
PARTS = {
    "projector": ("multi_modal_projector",),  # InternVLMultiModalProjector: layer norm + 2-layer MLP
    "vision": ("vision_tower",),
    "lm": ("language_model", "lm_head"),
}


class InternVLNoVideoProcessor(InternVLProcessor):
    """``InternVLProcessor`` with an image processor and a tokenizer only (no video processor)."""

    def __init__(self, image_processor=None, tokenizer=None, image_seq_length: int = 256, chat_template=None, **kwargs):
        self.image_seq_length = image_seq_length
        self.start_image_token, self.end_image_token = tokenizer.start_image_token, tokenizer.end_image_token
        self.start_image_token_id = tokenizer.start_image_token_id
        self.end_image_token_id = tokenizer.end_image_token_id
        self.image_token, self.video_token = tokenizer.context_image_token, tokenizer.video_token
        self.image_token_id = tokenizer.context_image_token_id
        self.multimodal_pattern = re.compile(
            f"(?P<image>{re.escape(self.image_token)})|(?P<video>{re.escape(self.video_token)})"
        )
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


def load_processor(path: str) -> InternVLNoVideoProcessor:
    """The saved processor of ``path`` (tokenizer, ``image_seq_length``, chat template) without its video
    processor, with the PIL image processor (``GotOcr2ImageProcessorPil``, whatever transformers would default to
    where torchvision is installed)."""
    processor = InternVLNoVideoProcessor.from_pretrained(path)
    processor.image_processor = GotOcr2ImageProcessorPil.from_pretrained(path)
    return processor


def tokens_per_tile(config) -> int:
    """The positions the model gives one tile: (tile / patch)^2 patches (the CLS position dropped), pixel-shuffled
    by ``downsample_ratio`` (InternVLModel.get_image_features)."""
    vision = config.vision_config
    (h, w), (ph, pw) = vision.image_size, vision.patch_size
    return round((h // ph) * (w // pw) * config.downsample_ratio**2)


class InternVLImageInputs(ImageInputs):
    """Tiles from the image's size; the positions are the processor's ``<img>``, context tokens and ``</img>``."""

    def __init__(self, processor, config):
        super().__init__(processor.image_processor, 0)
        self.processor, self.tokenizer = processor, processor.tokenizer
        self.seq_len = int(processor.image_seq_length)
        if self.seq_len != tokens_per_tile(config):
            raise ValueError(
                f"the processor writes {self.seq_len} image tokens per tile but the model gives "
                f"{tokens_per_tile(config)} ((image_size / patch_size)^2 x downsample_ratio^2): set the "
                "processor's image_seq_length"
            )
        if config.vision_feature_select_strategy != "default":
            raise ValueError(
                "InternVL's processor counts the tiles' patches without the tower's CLS position: "
                f"vision_feature_select_strategy must be 'default', not {config.vision_feature_select_strategy!r}"
            )
        merged = processor._merge_kwargs(tokenizer_init_kwargs=self.tokenizer.init_kwargs)["images_kwargs"]
        # the image processor's own settings, overridden as the processor's call overrides them (crop_to_patches)
        ip = self.image_processor
        self.kwargs = {
            "crop_to_patches": bool(merged.get("crop_to_patches", ip.crop_to_patches)),
            "min_patches": int(merged.get("min_patches", ip.min_patches)),
            "max_patches": int(merged.get("max_patches", ip.max_patches)),
        }
        self._ids: dict[int, np.ndarray] = {}

    def tiles(self, height: int, width: int) -> int:
        """The tiles (the grid's and the thumbnail) an image of ``height`` x ``width`` is cut into."""
        return int(self.image_processor.get_number_of_image_patches(height, width, self.kwargs))

    def n_tokens(self, height: int | None = None, width: int | None = None) -> int:
        if height is None or width is None:
            raise ValueError("InternVL's image token count depends on the image size: pass height and width")
        return 2 + self.seq_len * self.tiles(height, width)

    def n_tokens_of_file(self, path, rid) -> int:
        with open_image(path, rid) as img:  # the header only
            width, height = img.size
        return self.n_tokens(height, width)

    def image_ids(self, n: int, image_token_id: int) -> np.ndarray:
        """The processor's ids of the image that takes ``n`` positions (the count decides the tiles)."""
        if n not in self._ids:
            tiles, rest = divmod(n - 2, self.seq_len)
            if rest or not 1 <= tiles <= self.kwargs["max_patches"] + 1:
                raise ValueError(f"no InternVL tiling takes {n} positions (image_seq_length {self.seq_len})")
            text = self.processor.replace_image_token({"num_patches": [tiles]}, 0)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            self._ids[n] = np.asarray(ids, dtype=np.int64)
        return self._ids[n]

    def spec(self) -> dict:
        ip = self.image_processor
        return {
            "kind": type(self).__name__,
            "size": dict(ip.size),
            **self.kwargs,
            "seq_len": self.seq_len,
            "layout": self.image_ids(2 + self.seq_len, self.processor.image_token_id).tolist(),  # the block's ids
        }

    def pixels(self, rgb) -> dict[str, torch.Tensor]:
        out = self.image_processor(images=[rgb], return_tensors="pt", **self.kwargs)
        tiles = int(out["num_patches"][0])
        if tiles != self.tiles(rgb.height, rgb.width):  # the count the labels were built with
            raise ValueError(
                f"the image processor cut a {rgb.height} x {rgb.width} image into {tiles} tiles, "
                f"not the {self.tiles(rgb.height, rgb.width)} its token count assumes"
            )
        return {"pixel_values": out["pixel_values"]}

    def collate(self, images: list[dict]) -> dict[str, torch.Tensor]:
        return {"pixel_values": torch.cat([im["pixel_values"] for im in images])}


def compose_tiny(cfg, tokenizer):
    """An InternVL from ``cfg.text`` (a Qwen2) / ``cfg.vision`` (InternViT) sizes with random weights, the
    tokenizer given chatml's and InternVL's image tokens (named as ``InternVLProcessor`` reads them), and a
    processor whose PIL image processor cuts images into tiles of ``cfg.vision.image_size`` (at most
    ``cfg.max_patches``, plus the thumbnail)."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in (*CHAT_TOKENS, *NAMED_TOKENS.values()) if t not in vocab]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    tokenizer._set_model_specific_special_tokens(NAMED_TOKENS)
    text, vision = tiny_sizes(cfg)
    text.update(model_type="qwen2", **tokenizer_ids(tokenizer))
    config = InternVLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=tokenizer.convert_tokens_to_ids(CONTEXT),
        downsample_ratio=float(cfg.get("downsample_ratio", 0.5)),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )
    config.image_seq_length = tokens_per_tile(config)
    torch.manual_seed(int(cfg.get("init_seed", 0)))
    model = InternVLForConditionalGeneration._from_config(config)
    size = vision["image_size"]
    image_processor = GotOcr2ImageProcessorPil(
        size={"height": size, "width": size},
        max_patches=int(cfg.max_patches),
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )
    processor = InternVLNoVideoProcessor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_length=config.image_seq_length
    )
    return model, processor


FAMILY = Family(
    model_type="internvl",
    config_class=InternVLConfig,
    model_class=InternVLForConditionalGeneration,
    processor_class=InternVLNoVideoProcessor,
    parts=PARTS,
    image_inputs=lambda config, processor: InternVLImageInputs(processor, config),
    chat_template="internvl",
    load_processor=load_processor,
    compose_tiny=compose_tiny,
)
