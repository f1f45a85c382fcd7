"""The SFT loss: summed token cross-entropy over supervised labels / supervised tokens in the whole
(accumulated, all-device) batch.

LIT supervises more tokens per record than VIT, and different records gain different numbers. A
per-micro-batch mean divided by the accumulation steps (nanoGPT's ``loss / grad_accum``) would weight
micro-batches by 1/their own token count and so skew VIT against LIT; dividing every micro-batch's
*sum* by the global count (Hugging Face's ``num_items_in_batch``) gives every supervised token the
same weight. Labels are unshifted; the shift happens here, once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lit.constants import IGNORE_INDEX


def supervised_token_loss(outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """``outputs.logits`` (B, T, V), ``labels`` (B, T) -> scalar; ``num_items_in_batch`` = supervised tokens
    across the accumulated batch (counted by the Trainer over ``labels[:, 1:]``); if None, this batch's."""
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
    target = labels[:, 1:].to(logits.device)
    total = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.size(-1)), target.reshape(-1),
                            ignore_index=IGNORE_INDEX, reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else (target != IGNORE_INDEX).sum()
    if torch.is_tensor(count):
        count = count.to(total.device)
    return total / count
