"""Batch collation: padded (right padding, labels padded with IGNORE_INDEX) or padding-free (the micro-batch
flattened into one row); image inputs batched in order either way."""

from __future__ import annotations

import torch

from lit.constants import IGNORE_INDEX
from lit.data.image_inputs import ImageInputs, item_images


class Collator:
    """Collate ``SupervisedDataset`` items into a batch for the model.

    Output: ``input_ids``/``labels``/``attention_mask`` (B, T); the image inputs of the items that have an
    image (several for a multi-image record), in batch order (the model scatters image features onto image
    positions in order), as ``image_inputs.collate_records`` batches them (``pixel_values`` (N_img, 3, H, W);
    LLaVA-NeXT adds a tile axis and ``image_sizes``, OneVision ``batch_num_images``), absent for text-only
    batches; InstructBLIP's ``qformer_input_ids``/``_attention_mask``;
    ``kind_counts`` (K,) supervised tokens per span kind; ``loss_weights`` (B, T) where the items carry them (a
    weighted scope; 0 on padding); per-token inputs a family derives from the ids (Qwen2-VL's ``mm_token_type_ids``).
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
        batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
        if "loss_weights" in items[0]:  # a weighted scope (loss.weights): padding weighs 0
            batch["loss_weights"] = torch.zeros((len(items), longest), dtype=torch.float32)
            for row, it in enumerate(items):
                batch["loss_weights"][row, : len(it["loss_weights"])] = it["loss_weights"]
        return {**batch, **self.image_and_token_inputs(items, ids)}

    def image_and_token_inputs(self, items: list[dict], ids: torch.Tensor) -> dict:
        """What a batch carries besides its tokens: the supervised-token counts, the image inputs, the family's
        per-record and per-token inputs (of ``ids``, the batch's token rows)."""
        batch = {"kind_counts": torch.stack([it["kind_counts"] for it in items]).sum(0)}
        per_record = [item_images(it) for it in items]
        if any(per_record):
            batch.update(self.image_inputs.collate_records(per_record))
        batch.update(self.image_inputs.collate_text(items))
        batch.update(self.image_inputs.token_inputs(ids))
        return batch


class PaddingFreeCollator(Collator):
    """The micro-batch as one row of its records back to back (``train.padding_free``): no padding position.

    ``input_ids``/``labels`` (1, N), N the records' total length; ``position_ids`` restarting at 0 with each
    record (M-RoPE families: the (4, 1, N) text and 3-D positions ``ImageInputs.packed_position_ids`` gives), from
    which transformers' mask keeps attention within each record (SDPA and eager attention: a per-record causal
    mask; FlashAttention: its variable-length kernel); no ``attention_mask``; ``use_cache=False`` (with a key-value
    cache, transformers reads no record boundaries from the position ids: the records would attend to each other).
    ``flash_kwargs``: also the record boundaries as FlashAttention's ``cu_seq_lens_q/k`` and ``max_length_q/k`` (as
    transformers' ``DataCollatorWithFlattening(return_flash_attn_kwargs=True)``), for families that hand them to
    the LM only.

    Each record's first label is IGNORE_INDEX, so the last token of one record never predicts the first of the
    next: the supervised targets are exactly the padded batch's, and so are the loss and its normaliser. Image
    inputs stay per image, as in the padded batch.
    """

    def __init__(self, pad_token_id: int, image_inputs: ImageInputs, *, flash_kwargs: bool = False):
        super().__init__(pad_token_id, image_inputs)
        self.flash_kwargs = flash_kwargs

    def __call__(self, items: list[dict]) -> dict:
        lengths = torch.tensor([len(it["input_ids"]) for it in items])
        ids = torch.cat([torch.as_tensor(it["input_ids"], dtype=torch.long) for it in items])[None]
        labels = torch.cat([torch.as_tensor(it["labels"], dtype=torch.long) for it in items])[None]
        starts = torch.cumsum(lengths, 0) - lengths
        labels[0, starts] = IGNORE_INDEX
        batch = {
            "input_ids": ids,
            "labels": labels,
            "position_ids": self.image_inputs.packed_position_ids(items),
            "use_cache": False,
            **self.image_and_token_inputs(items, ids),
        }
        if "loss_weights" in items[0]:  # a weighted scope: 0 wherever the labels are IGNORE_INDEX, as padded
            batch["loss_weights"] = torch.cat([it["loss_weights"] for it in items])[None]
            batch["loss_weights"][0, starts] = 0.0
        if self.flash_kwargs:
            bounds = torch.cat([starts, lengths.sum()[None]]).to(torch.int32)
            batch.update(
                cu_seq_lens_q=bounds,
                cu_seq_lens_k=bounds,
                max_length_q=int(lengths.max()),
                max_length_k=int(lengths.max()),
            )
        return batch
