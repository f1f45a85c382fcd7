"""Batch collation: right padding, labels padded with IGNORE_INDEX, image inputs batched in order."""

from __future__ import annotations

import torch

from lit.constants import IGNORE_INDEX
from lit.data.image_inputs import ImageInputs


class Collator:
    """Collate ``SupervisedDataset`` items into a batch for the model.

    Output: ``input_ids``/``labels``/``attention_mask`` (B, T); the image inputs of the items that have an
    image, in batch order (the model scatters image features onto image positions in order), as
    ``image_inputs`` batches them (``pixel_values`` (N_img, 3, H, W); LLaVA-NeXT adds a tile axis and
    ``image_sizes``), absent for text-only batches; InstructBLIP's ``qformer_input_ids``/``_attention_mask``;
    ``kind_counts`` (K,) supervised tokens per span kind; per-token inputs a family derives from the ids
    (Qwen2-VL's ``mm_token_type_ids``).
    """

    def __init__(self, pad_token_id: int, image_inputs: ImageInputs):
        self.pad_token_id, self.image_inputs = pad_token_id, image_inputs

    def __call__(self, items: list[dict]) -> dict:
        longest = max(len(it["input_ids"]) for it in items)
        ids = torch.full((len(items), longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(items), longest), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(items), longest), dtype=torch.long)
        for row, it in enumerate(items):
            n = len(it["input_ids"])
            ids[row, :n], labels[row, :n], mask[row, :n] = it["input_ids"], it["labels"], 1
        batch = {
            "input_ids": ids,
            "labels": labels,
            "attention_mask": mask,
            "kind_counts": torch.stack([it["kind_counts"] for it in items]).sum(0),
        }
        images = [it["image"] for it in items if it["image"] is not None]
        if images:
            batch.update(self.image_inputs.collate(images))
        batch.update(self.image_inputs.collate_text(items))
        batch.update(self.image_inputs.token_inputs(ids))
        return batch
