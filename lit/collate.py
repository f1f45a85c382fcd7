"""Batch collation: right padding, labels padded with IGNORE_INDEX, images stacked in order."""

from __future__ import annotations

import torch

from lit.constants import IGNORE_INDEX


class Collator:
    """Collate ``SupervisedDataset`` items into a LLaVA batch.

    Output: ``input_ids``/``labels``/``attention_mask`` (B, T); ``pixel_values`` (N_img, 3, H, W) for the
    items that have an image, in batch order (LLaVA scatters features onto image positions in
    order), absent for text-only batches; ``kind_counts`` (K,) supervised tokens per span kind.
    """

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[dict]) -> dict:
        longest = max(len(it["input_ids"]) for it in items)
        ids = torch.full((len(items), longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(items), longest), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(items), longest), dtype=torch.long)
        for row, it in enumerate(items):
            n = len(it["input_ids"])
            ids[row, :n], labels[row, :n], mask[row, :n] = it["input_ids"], it["labels"], 1
        batch = {"input_ids": ids, "labels": labels, "attention_mask": mask,
                 "kind_counts": torch.stack([it["kind_counts"] for it in items]).sum(0)}
        images = [it["pixel_values"] for it in items if it["pixel_values"] is not None]
        if images:
            batch["pixel_values"] = torch.stack(images)
        return batch
