"""LLaVA-OneVision (``model_type: llava_onevision``): a Qwen2 LM, a SigLIP tower, any-resolution tiling for a record
with one image, one base view per image for a record with several.

The counts are the processor's own (transformers ``models/llava_onevision/processing_llava_onevision.py``,
``LlavaOnevisionProcessor.replace_image_token``): a record's only image takes the any-resolution count
(``_get_number_of_features``: the tiles' features, unpadded and capped at ``vision_aspect_ratio``'s
``anyres_max_9``, a newline per row, and the base view's ``num_image_tokens``); each image of a record with several
takes ``num_image_tokens + 1`` (the base view and one newline); less one each under strategy ``default``. The
pixels follow the PIL image processor (``LlavaOnevisionImageProcessorPil``): tiles of a record's only image, or each
image padded to a square, one view, where the record has several; the model tells the two apart by
``batch_num_images`` (images per record), which the collator adds to a batch that holds a multi-image record.

The chat template is Qwen2's chatml, as LLaVA-NeXT's ``conv_qwen`` trains OneVision (``<image>\\n`` in front of its
turn). The processor is built from the PIL image processor and the tokenizer without the video processor, whose
class needs torchvision (the CPU environment has none; video is not trained here).
"""

from __future__ import annotations

import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoTokenizer,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionProcessor,
    Qwen2Config,
    SiglipVisionConfig,
)
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
    LlavaOnevisionImageProcessorPil,
)
from transformers.processing_utils import ProcessorMixin

from lit.constants import IMAGE_MARKER
from lit.data.image_inputs import open_image
from lit.model.families.base import Family, tiny_sizes, tokenizer_ids
from lit.model.families.llava_next import PARTS as ANYRES_PARTS
from lit.model.families.llava_next import AnyResImageInputs

VIDEO_MARKER = "<video>"
QWEN2_CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")  # special tokens of Qwen2's tokenizers (chatml)


class LlavaOnevisionNoVideoProcessor(LlavaOnevisionProcessor):
    """``LlavaOnevisionProcessor`` with an image processor and a tokenizer only (no video processor)."""

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        num_image_tokens: int | None = None,
        vision_feature_select_strategy: str | None = None,
        chat_template=None,
        vision_aspect_ratio: str = "anyres_max_9",
        **kwargs,
    ):
        self.num_image_tokens = num_image_tokens
        self.vision_feature_select_strategy = vision_feature_select_strategy
        self.vision_aspect_ratio = vision_aspect_ratio
        self.image_token, self.video_token = IMAGE_MARKER, VIDEO_MARKER
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


def base_tokens(config) -> int:
    """``num_image_tokens`` of the processor: the positions of one view, (image size / patch size)^2."""
    vision = config.vision_config
    return (vision.image_size // vision.patch_size) ** 2


def processor_for(config, image_processor, tokenizer) -> LlavaOnevisionNoVideoProcessor:
    """The processor the model's config implies (as the published checkpoints' processors are set)."""
    return LlavaOnevisionNoVideoProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        num_image_tokens=base_tokens(config),
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        vision_aspect_ratio=config.vision_aspect_ratio,
    )


def load_processor(path: str) -> LlavaOnevisionNoVideoProcessor:
    """The saved tokenizer and image processor of ``path``, the image processor in its PIL form; the processor's
    counts from the checkpoint's config."""
    return processor_for(
        AutoConfig.from_pretrained(path),
        LlavaOnevisionImageProcessorPil.from_pretrained(path),
        AutoTokenizer.from_pretrained(path),
    )


class OnevisionImageInputs(AnyResImageInputs):
    """LLaVA-NeXT's tiles for a record's only image; one padded square view per image of a multi-image record."""

    def n_tokens_of_record(self, images: list, rid) -> list[int]:
        if len(images) <= 1:
            return super().n_tokens_of_record(images, rid)
        for image in images:  # each must be readable (the header only); the count does not depend on its size
            if not isinstance(image, Image.Image):
                with open_image(image, rid):
                    pass
        p = self.processor
        return [p.num_image_tokens + 1 - (p.vision_feature_select_strategy == "default")] * len(images)

    def spec(self) -> dict:
        ip, p = self.image_processor, self.processor
        return {
            "kind": type(self).__name__,
            "pinpoints": ip.image_grid_pinpoints,
            "size": dict(ip.size),
            "base": p.num_image_tokens,
            "strategy": p.vision_feature_select_strategy,
            "aspect": p.vision_aspect_ratio,
        }

    def record_pixels(self, rgbs: list) -> list[dict[str, torch.Tensor]]:
        if len(rgbs) <= 1:
            return super().record_pixels(rgbs)
        out = self.image_processor(images=[rgbs], return_tensors="pt")  # one record: no tiles, a square each
        return [
            {"pixel_values": pv, "image_sizes": torch.as_tensor(size)}
            for pv, size in zip(out["pixel_values"], out["image_sizes"])
        ]

    def collate_records(self, per_record: list[list[dict]]) -> dict[str, torch.Tensor]:
        batch = super().collate_records(per_record)
        if any(len(images) > 1 for images in per_record):  # which images are tiled (a record's only one) or not
            batch["batch_num_images"] = torch.tensor([len(images) for images in per_record if images])
        return batch


def compose_tiny(cfg, tokenizer):
    """A LLaVA-OneVision from ``cfg.text`` (Qwen2) / ``cfg.vision`` (SigLIP) sizes with random weights, tiled on
    ``cfg.image_grid_pinpoints``, the tokenizer given Qwen2's chat tokens and the image and video markers as
    special tokens where it lacks them, and its processor."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in (*QWEN2_CHAT_TOKENS, IMAGE_MARKER, VIDEO_MARKER) if t not in vocab]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
    text, vision = tiny_sizes(cfg)
    pinpoints = [list(p) for p in cfg.image_grid_pinpoints]
    config = LlavaOnevisionConfig(
        text_config=Qwen2Config(**text, **tokenizer_ids(tokenizer)).to_dict(),
        vision_config=SiglipVisionConfig(**vision).to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_MARKER),
        video_token_index=tokenizer.convert_tokens_to_ids(VIDEO_MARKER),
        vision_feature_select_strategy=cfg.get("vision_feature_select_strategy") or "full",
        vision_feature_layer=-1,
        vision_aspect_ratio=str(cfg.get("vision_aspect_ratio", "anyres_max_9")),
        image_grid_pinpoints=pinpoints,
        tie_word_embeddings=False,
    )
    torch.manual_seed(int(cfg.get("init_seed", 0)))
    model = LlavaOnevisionForConditionalGeneration._from_config(config)
    size = config.vision_config.image_size
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": size, "width": size}, image_grid_pinpoints=pinpoints
    )
    return model, processor_for(config, image_processor, tokenizer)


FAMILY = Family(
    model_type="llava_onevision",
    config_class=LlavaOnevisionConfig,
    model_class=LlavaOnevisionForConditionalGeneration,
    processor_class=LlavaOnevisionNoVideoProcessor,
    parts=ANYRES_PARTS,
    image_inputs=lambda config, processor: OnevisionImageInputs(processor),
    chat_template="chatml",
    load_processor=load_processor,
    compose_tiny=compose_tiny,
)
