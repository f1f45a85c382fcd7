"""Weighted spans in TRL: ``LitCollator(weights=...)`` with ``class WeightedSFTTrainer(SpanWeightedLoss, SFTTrainer)``.

The records, train.py's reference (``lit.train.run.prepare``) and the helpers are ``test_lit_collator``'s: demo
records with images, the LLaVA system prompt and the mined task-template sentence ("Answer yes or no."), and
text-only ones, fed as TRL conversational vision examples. The expected weights are derived from two binary label
sets (``vit`` and ``lit``), not from the weighting code: a token ``lit`` supervises and ``vit`` does not is an
instruction token. The first logged loss is checked against the weighted loss written out token by token
(``test_weighted_spans._hand_loss``) on the initial model's logits for the first batch.
"""

from __future__ import annotations

import copy

import pytest
import torch
from test_lit_collator import (  # noqa: F401  (prepared: the shared fixture)
    _assert_same_batch,
    _collator,
    _expected,
    _Recording,
    prepared,
    sft_config,
    trl_example,
)
from test_weighted_spans import _hand_loss

from lit.collator import LitCollator
from lit.constants import IGNORE_INDEX
from lit.train.loss import SpanWeightedLoss, supervised_token_loss

WEIGHTS = {"instruction": 0.1}  # lit's other weights stay: template sentences, system prompt, roles 0; answer 1
TINY_LLAVA = pytest.mark.parametrize("prepared", ["tiny"], indirect=True)  # the LLaVA family of the shared fixture


def _binary(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k != "loss_weights"}


def _expected_weights(p, demo_data, examples, labels: torch.Tensor) -> torch.Tensor:
    """1 where vit supervises (the answer, end of turn), 0.1 where only lit does (the instruction), else 0."""
    vit = LitCollator(
        p.built.processor, p.built.model.config, chat_template=p.built.template, scope="vit", image_root=demo_data
    )(examples)["labels"]
    answer = vit != IGNORE_INDEX
    instruction = (labels != IGNORE_INDEX) & ~answer
    assert instruction.any() and answer.any()
    return answer.float() + WEIGHTS["instruction"] * instruction.float()


@TINY_LLAVA
def test_the_collator_carries_each_labelled_tokens_kind_weight_and_train_py_labels(prepared, demo_data):  # noqa: F811
    records, p = prepared
    examples = [trl_example(r, demo_data) for r in records]
    batch = _collator(p, demo_data, weights=WEIGHTS)(examples)
    _assert_same_batch(_binary(batch), _expected(p, [r["id"] for r in records]))  # lit's labels: 0.1 is still > 0
    torch.testing.assert_close(batch["loss_weights"], _expected_weights(p, demo_data, examples, batch["labels"]))
    # a system message of the example's own weighs 0 like the template's: the same weights, shifted by its length
    collator = _collator(p, demo_data, weights=WEIGHTS)
    plain, custom = (
        collator([trl_example(records[0], demo_data, system=s)])["loss_weights"][0]
        for s in (None, "You judge coloured shapes with care, always.")
    )
    assert torch.equal(plain[plain > 0], custom[custom > 0])


@pytest.mark.integration
@TINY_LLAVA
@pytest.mark.parametrize("normalization", ["tokens", "weights"])
def test_weighted_sft_trainer_trains_on_the_weighted_loss(prepared, demo_data, tmp_path, normalization):  # noqa: F811
    from datasets import Dataset
    from trl import SFTTrainer

    class WeightedSFTTrainer(SpanWeightedLoss, SFTTrainer):
        pass

    records, p = prepared
    model = copy.deepcopy(p.built.model).train()
    initial = copy.deepcopy(model).eval()
    examples = [trl_example(r, demo_data) for r in records]
    recording = _Recording(_collator(p, demo_data, weights=WEIGHTS))
    args = sft_config(tmp_path)
    trainer = WeightedSFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(examples),
        processing_class=p.built.processor,
        data_collator=recording,
        normalization=normalization,
    )
    trainer.train()

    assert len(recording.batches) >= 3  # the data loader may fetch one batch ahead
    by_id = {e["id"]: e for e in examples}
    for ids, batch in recording.batches:  # train.py's labels, and the weights of their kinds
        _assert_same_batch(_binary(batch), _expected(p, ids))
        expected = _expected_weights(p, demo_data, [by_id[i] for i in ids], batch["labels"])
        torch.testing.assert_close(batch["loss_weights"], expected)

    first = dict(recording.batches[0][1])
    labels, weights = first.pop("labels"), first.pop("loss_weights")
    with torch.no_grad():
        outputs = initial(**first)
    shifted = weights[:, 1:]
    count, mass = float((shifted > 0).sum()), float(shifted.sum(dtype=torch.float64))
    weighted_sum = _hand_loss(outputs.logits, labels, weights)
    hand = weighted_sum / (count if normalization == "tokens" else mass)
    library = supervised_token_loss(
        outputs, labels, torch.tensor(count if normalization == "tokens" else mass), weights=weights
    ).item()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3
    assert library == pytest.approx(hand, rel=1e-5)
    assert losses[0] == pytest.approx(hand, abs=2e-4), (losses[0], hand)
    # and none of what a lost weight or the other normaliser would give (at initialisation every token's
    # cross-entropy is close to log(vocabulary), so the unweighted mean is near the weighted one: 5x the tolerance)
    others = {
        "unweighted": supervised_token_loss(outputs, labels).item(),
        "the other normalisation": weighted_sum / (mass if normalization == "tokens" else count),
    }
    for name, value in others.items():
        assert abs(losses[0] - value) > 1e-3, (name, losses[0], value)
