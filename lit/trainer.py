"""Hugging Face ``Trainer`` with the supervised-token loss and per-span-kind token logging."""

from __future__ import annotations

import torch
from transformers import Trainer

from lit.constants import SPAN_KINDS
from lit.loss import supervised_token_loss


class LitTrainer(Trainer):
    """Adds ``n_tokens/<kind>`` (supervised tokens per span kind since the last log) to every log line,
    so VIT and LIT runs can be compared on how much they supervise."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, compute_loss_func=supervised_token_loss, **kwargs)
        self._kind_tokens = torch.zeros(len(SPAN_KINDS), dtype=torch.long)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        counts = inputs.pop("kind_counts", None)
        if counts is not None and model.training:
            self._kind_tokens += counts.detach().cpu()
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def log(self, logs: dict, start_time=None) -> None:
        if "loss" in logs:
            for kind, n in zip(SPAN_KINDS, self._kind_tokens.tolist()):
                if n:
                    logs[f"n_tokens/{kind}"] = n
            self._kind_tokens.zero_()
        super().log(logs, start_time)
