"""The SFT loss: summed token cross-entropy over supervised labels / supervised tokens in the whole
(accumulated, all-device) batch.

LIT supervises more tokens per record than VIT, and different records gain different numbers. A
per-micro-batch mean divided by the accumulation steps (nanoGPT's ``loss / grad_accum``) would weight
micro-batches by 1/their own token count and so skew VIT against LIT; dividing every micro-batch's
*sum* by the global count (Hugging Face's ``num_items_in_batch``) gives every supervised token the
same weight. Labels are unshifted; the shift happens here, once.

Memory: the logits stay in the model's dtype. The cross-entropy runs over chunks of ``CHUNK`` positions,
each cast to fp32 and recomputed in the backward pass (activation checkpointing), so at most one chunk's
fp32 copy exists at a time, not one of the whole (B, T, V) batch (4 GB at 16 x 2048 x 32K), and positions
without a supervised label are not computed at all.

Weighted spans (``loss.weights``, ``lit.mask.scopes``): batches carry ``loss_weights`` (B, T), each labelled token's
kind weight, and the loss is ``sum_t w_t * CE_t / N``, the sum and ``N`` taken over the whole accumulated,
all-device batch, as above. ``N`` by ``loss.normalization``:

- ``tokens``: the number of tokens with a non-zero weight (Weighted Instruction Tuning's definition, arXiv
  2507.07817; the binary loss's own normaliser, so a weighted batch and a binary one with the same labels share it);
- ``weights``: the sum of the weights (a weighted mean: the loss's scale does not grow with the prompt weight).

``SpanWeightedLoss`` is the Trainer side: Hugging Face's ``Trainer`` hands a loss function only the outputs, the
labels and the count, so it takes the weights out of the batch before the forward (TRL's ``SFTTrainer`` would hand
them to the model) and counts ``N`` for ``weights``.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from lit.constants import IGNORE_INDEX

CHUNK = 1024  # positions per fp32 chunk: 128 MB at a 32K vocabulary
NORMALIZATIONS = ("tokens", "weights")


def _chunk_sum(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="sum")


def _weighted_chunk_sum(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    per_token = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="none")
    return (per_token * weights).sum()


def supervised_token_loss(
    outputs, labels: torch.Tensor, num_items_in_batch=None, chunk: int = CHUNK, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """``outputs.logits`` (B, T, V), ``labels`` (B, T) -> scalar; ``num_items_in_batch`` = supervised tokens
    across the accumulated batch (counted by the Trainer over ``labels[:, 1:]``; their weight sum with
    ``normalization=weights``); if None, this batch's count. ``weights`` (B, T): per-token weights (unshifted, as
    the labels), or None for the binary loss."""
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
    target = labels[:, 1:].to(logits.device)
    supervised = target != IGNORE_INDEX
    if weights is not None:
        weights = weights[:, 1:].to(logits.device, torch.float32)
    total = logits.new_zeros((), dtype=torch.float32)
    for row in range(logits.size(0)):
        for start in range(0, target.size(1), chunk):
            stop = min(start + chunk, target.size(1))
            if not supervised[row, start:stop].any():
                continue
            piece, tgt = logits[row, start:stop], target[row, start:stop]  # views: no copy of the logits
            if weights is None:
                fn, args = _chunk_sum, (piece, tgt)
            else:
                fn, args = _weighted_chunk_sum, (piece, tgt, weights[row, start:stop])
            if torch.is_grad_enabled() and logits.requires_grad:
                total = total + checkpoint(fn, *args, use_reentrant=False)
            else:
                total = total + fn(*args)
    count = num_items_in_batch if num_items_in_batch is not None else supervised.sum()
    if torch.is_tensor(count):
        count = count.to(total.device)
    return total / count


class SpanWeightedLoss:
    """A ``Trainer`` mixin (before the Trainer in the bases) for batches with ``loss_weights``: the supervised-token
    loss, weighed and normalised as ``normalization`` says (``NORMALIZATIONS``); batches without weights get the
    binary loss. For LitCollator users::

        class WeightedSFTTrainer(SpanWeightedLoss, SFTTrainer): ...

        WeightedSFTTrainer(model=model, data_collator=LitCollator(..., weights={"instruction": 0.1}), ...)
    """

    def __init__(self, *args, normalization: str = "tokens", **kwargs):
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"loss.normalization={normalization!r}: choose one of {', '.join(NORMALIZATIONS)}")
        super().__init__(*args, **kwargs)
        self.normalization = normalization
        self.compute_loss_func = supervised_token_loss  # also makes the Trainer count num_items_in_batch

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        weights = inputs.pop("loss_weights", None)  # not a model input
        self.compute_loss_func = partial(supervised_token_loss, weights=weights)  # the Trainer passes no batch keys
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def _get_num_items_in_batch(self, batch_samples: list, device):
        """With ``normalization=weights``: the weight sum of the accumulated batch over every process (as the
        Trainer's token count: over ``[:, 1:]``, gathered when ``average_tokens_across_devices``)."""
        if self.normalization == "tokens" or not batch_samples or "loss_weights" not in batch_samples[0]:
            return super()._get_num_items_in_batch(batch_samples, device)
        mass = sum(batch["loss_weights"][:, 1:].sum(dtype=torch.float64) for batch in batch_samples).to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            mass = self.accelerator.gather(mass[None]).sum()
        return mass.float()
