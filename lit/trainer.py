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

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """Resume the weights strictly.

        transformers 5.23 saves checkpoints with its original-format key names
        (``language_model.model.layers...``) but ``Trainer._load_from_checkpoint`` loads them with
        ``load_state_dict(strict=False)`` into the model's own names (``model.language_model.layers...``):
        nothing matches, nothing is loaded, and training silently continues from the in-memory weights.
        Here the checkpoint goes through ``from_pretrained`` (which maps the names) and is copied with
        ``strict=True``. DeepSpeed runs resume through the engine's own checkpoint and keep the default path.
        """
        model = model if model is not None else self.model
        if self.is_deepspeed_enabled or self.is_fsdp_enabled or not hasattr(model, "config"):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        loaded = type(model).from_pretrained(resume_from_checkpoint, dtype=next(model.parameters()).dtype)
        model.load_state_dict(loaded.state_dict(), strict=True)

    def log(self, logs: dict, start_time=None) -> None:
        if "loss" in logs:
            for kind, n in zip(SPAN_KINDS, self._kind_tokens.tolist()):
                if n:
                    logs[f"n_tokens/{kind}"] = n
            self._kind_tokens.zero_()
        super().log(logs, start_time)
