"""The loss weighs every supervised token equally across gradient accumulation (num_items_in_batch)."""

from __future__ import annotations

import torch
from transformers.modeling_outputs import CausalLMOutput

from lit.constants import IGNORE_INDEX
from lit.loss import supervised_token_loss


def test_accumulated_micro_batches_equal_one_big_batch():
    torch.manual_seed(0)
    logits = torch.randn(4, 7, 11, requires_grad=True)
    labels = torch.randint(0, 11, (4, 7))
    labels[0, :6] = IGNORE_INDEX  # micro-batch 1 supervises few tokens, micro-batch 2 many
    labels[1, :5] = IGNORE_INDEX
    labels[:, 0] = IGNORE_INDEX
    total = (labels[:, 1:] != IGNORE_INDEX).sum()
    whole = supervised_token_loss(CausalLMOutput(logits=logits), labels)
    parts = sum(supervised_token_loss(CausalLMOutput(logits=logits[i:i + 2]), labels[i:i + 2], total) for i in (0, 2))
    torch.testing.assert_close(parts, whole)
    naive = sum(supervised_token_loss(CausalLMOutput(logits=logits[i:i + 2]), labels[i:i + 2]) for i in (0, 2)) / 2
    assert not torch.isclose(naive, whole)  # the per-micro-batch mean would weigh tokens unequally


def test_matches_cross_entropy_on_shifted_labels():
    logits = torch.randn(2, 5, 9)
    labels = torch.randint(0, 9, (2, 5))
    labels[:, :2] = IGNORE_INDEX
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 9), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(supervised_token_loss(CausalLMOutput(logits=logits), labels), ref)
