"""The loss weighs every supervised token equally across gradient accumulation (num_items_in_batch)."""

from __future__ import annotations

import pytest
import torch
from transformers.modeling_outputs import CausalLMOutput

from lit.constants import IGNORE_INDEX
from lit.train.loss import supervised_token_loss


def test_accumulated_micro_batches_equal_one_big_batch():
    torch.manual_seed(0)
    logits = torch.randn(4, 7, 11, requires_grad=True)
    labels = torch.randint(0, 11, (4, 7))
    labels[0, :6] = IGNORE_INDEX  # micro-batch 1 supervises few tokens, micro-batch 2 many
    labels[1, :5] = IGNORE_INDEX
    labels[:, 0] = IGNORE_INDEX
    total = (labels[:, 1:] != IGNORE_INDEX).sum()
    whole = supervised_token_loss(CausalLMOutput(logits=logits), labels)
    parts = sum(
        supervised_token_loss(CausalLMOutput(logits=logits[i : i + 2]), labels[i : i + 2], total) for i in (0, 2)
    )
    torch.testing.assert_close(parts, whole)
    naive = sum(supervised_token_loss(CausalLMOutput(logits=logits[i : i + 2]), labels[i : i + 2]) for i in (0, 2)) / 2
    assert not torch.isclose(naive, whole)  # the per-micro-batch mean would weigh tokens unequally


def test_matches_cross_entropy_on_shifted_labels():
    logits = torch.randn(2, 5, 9)
    labels = torch.randint(0, 9, (2, 5))
    labels[:, :2] = IGNORE_INDEX
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 9), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(supervised_token_loss(CausalLMOutput(logits=logits), labels), ref)


def _reference(logits, labels, count=None):
    """The loss as first written: one fp32 copy of every logit, one cross-entropy call."""
    target = labels[:, 1:]
    total = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.size(-1)),
        target.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return total / (count if count is not None else (target != IGNORE_INDEX).sum())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_loss_and_gradients_equal_the_one_shot_fp32_loss(dtype):
    torch.manual_seed(1)
    labels = torch.randint(0, 50, (3, 23))
    labels[0, :15] = IGNORE_INDEX  # chunks with no supervised token are skipped (their gradient is 0)
    labels[2, 5:9] = IGNORE_INDEX
    base = torch.randn(3, 23, 50).to(dtype)
    new_in, ref_in = base.clone().requires_grad_(), base.clone().requires_grad_()
    loss = supervised_token_loss(CausalLMOutput(logits=new_in), labels, num_items_in_batch=torch.tensor(40), chunk=4)
    ref = _reference(ref_in, labels, torch.tensor(40))
    loss.backward()
    ref.backward()
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    assert new_in.grad.dtype == dtype
    torch.testing.assert_close(new_in.grad.float(), ref_in.grad.float(), rtol=1e-6, atol=1e-6)


def test_no_fp32_copy_of_the_logits_is_kept_for_backward():
    """What autograd keeps between forward and backward: the one-shot loss keeps fp32 log-probabilities of
    every position (4 bytes each); the chunked loss keeps only views of the bf16 logits."""
    logits = torch.randn(2, 64, 128).to(torch.bfloat16).requires_grad_()
    labels = torch.randint(0, 128, (2, 64))
    kept = {}

    def measure(fn):
        sizes = []

        def pack(t):
            sizes.append(t.untyped_storage().nbytes() if t.is_floating_point() and t.dtype == torch.float32 else 0)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn()
        return sum(sizes)

    kept["reference"] = measure(lambda: _reference(logits, labels))
    kept["chunked"] = measure(lambda: supervised_token_loss(CausalLMOutput(logits=logits), labels, chunk=16))
    assert kept["reference"] >= 2 * 63 * 128 * 4 and kept["chunked"] == 0, kept
