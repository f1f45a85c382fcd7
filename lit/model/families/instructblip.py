"""InstructBLIP (``model_type: instructblip``): a fixed number of query tokens per image, and the Q-Former reads the
instruction too (``qformer_input_ids``: the first human turn without the image marker, at most 128 tokens as
LAVIS's ``max_txt_len``), so every record needs an image.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import InstructBlipConfig, InstructBlipForConditionalGeneration, InstructBlipProcessor

from lit.constants import IMAGE_MARKER
from lit.data.image_inputs import ImageInputs
from lit.model.families.base import Family
from lit.records import RecordError


class QFormerImageInputs(ImageInputs):
    """InstructBLIP: ``num_query_tokens`` positions per image; the Q-Former reads the instruction too."""

    requires_image = True
    max_images = 1  # the Q-Former reads one image with the instruction (LAVIS's blip2_vicuna_instruct)
    model_name = "InstructBLIP"
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


def drop_filled_attention_mask(model) -> None:
    """Padding-free training (``train.padding_free``): InstructBLIP's forward replaces a missing attention mask with
    ones before its LM, which would hide the records packed into one row from transformers' mask (it reads the
    record boundaries from the position ids only when there is no mask). A hook on the LM drops that all-ones mask
    whenever position ids come with it."""

    def hook(module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if kwargs.get("position_ids") is not None and mask is not None and mask.dim() == 2 and bool(mask.all()):
            kwargs["attention_mask"] = None
        return args, kwargs

    lm = model.language_model
    if not getattr(lm, "drops_filled_attention_mask", False):  # once per model, however many collators are built
        lm.register_forward_pre_hook(hook, with_kwargs=True)
        lm.drops_filled_attention_mask = True


FAMILY = Family(
    model_type="instructblip",
    config_class=InstructBlipConfig,
    model_class=InstructBlipForConditionalGeneration,
    processor_class=InstructBlipProcessor,
    parts={
        "projector": ("qformer", "query_tokens", "language_projection"),
        "vision": ("vision_model",),
        "lm": ("language_model", "lm_head"),
    },
    image_inputs=lambda config, processor: QFormerImageInputs(processor, config.num_query_tokens),
    chat_template="instructblip",
    prepare_padding_free=drop_filled_attention_mask,
)
