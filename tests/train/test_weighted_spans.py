"""Weighted spans (``loss.weights``): the scope they make, the per-token weights the batches carry, the weighted loss
against a hand computation, and a run's losses with weights of 1 (the binary run's, bit for bit), under gradient
accumulation 1 vs 4 and on 1 vs 2 processes (gloo)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from tiny_runs import tiny_cfg, train_on_two_processes
from transformers.modeling_outputs import CausalLMOutput

from lit.constants import IGNORE_INDEX, KIND_INDEX
from lit.mask.scopes import SCOPES, get_scope
from lit.train.loss import supervised_token_loss

WEIGHTS = "loss.weights={instruction:0.1,template:0.05}"


def test_weights_of_zero_and_one_are_the_binary_scope():
    assert get_scope("lit", {"instruction": 1, "response": 1.0, "template": 0, "system": None}) == get_scope("lit")
    assert not get_scope("lit", {"instruction": 1}).weighted
    # the ladder's template rule is unchanged: only lit weighs template sentences apart from the instruction
    assert {name: get_scope(name).uses_template_sentences for name in SCOPES} == {
        "vit": False,
        "lit": True,
        "lit_nosys": False,
        "lit_all": False,
    }


def test_a_weight_above_zero_supervises_its_kind_and_a_zero_removes_it():
    scope = get_scope("vit", {"instruction": 0.1})
    assert scope.kinds == SCOPES["vit"] | {"instruction"} and scope.weighted and scope.uses_template_sentences
    assert scope.kind_weights()[KIND_INDEX["instruction"]] == np.float32(0.1)
    assert scope.describe() == "vit (instruction=0.1)"
    assert get_scope("lit", {"instruction": 0}).kinds == SCOPES["vit"]
    assert get_scope("lit_nosys", {"template": 0.5}).uses_template_sentences  # 1 vs 0.5: weighed apart


@pytest.mark.parametrize(
    "weights,match",
    [
        ({"prompt": 0.1}, r"unknown span kinds \['prompt'\]"),
        ({"instruction": -0.1}, "a finite number >= 0"),
        ({"instruction": float("nan")}, "a finite number >= 0"),
        ({"instruction": float("inf")}, "a finite number >= 0"),
        ({"instruction": "0.1"}, "a finite number >= 0"),
        ({"image": 0.5}, "image tokens are never supervised"),
        ({"response": 0, "eos": 0}, "every weight is 0"),
    ],
)
def test_bad_weights_are_refused(weights, match):
    with pytest.raises(ValueError, match=match):
        get_scope("vit", weights)


def _hand_loss(logits, labels, weights):
    """sum_t w_t * -log p(label_t) over the shifted positions, written out token by token."""
    total = 0.0
    for b in range(labels.size(0)):
        for t in range(1, labels.size(1)):
            if labels[b, t] != IGNORE_INDEX:
                logp = logits[b, t - 1].double().log_softmax(-1)[labels[b, t]]
                total += float(weights[b, t]) * -float(logp)
    return total


@pytest.mark.parametrize("chunk", [1024, 2])
def test_the_weighted_loss_matches_a_hand_computation_under_both_normalisations(chunk):
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 9)
    labels = torch.randint(0, 9, (2, 6))
    labels[0, :2] = IGNORE_INDEX
    labels[1, 4:] = IGNORE_INDEX
    weights = torch.tensor([[0, 0, 0.1, 0.1, 1, 1], [0, 0.05, 0.1, 1, 0, 0]]) * (labels != IGNORE_INDEX)
    weighted_sum = _hand_loss(logits, labels, weights)
    nonzero = int((weights[:, 1:] > 0).sum())  # WIT: tokens with a weight above 0
    mass = float(weights[:, 1:].sum())
    out = CausalLMOutput(logits=logits)
    tokens = supervised_token_loss(out, labels, nonzero, chunk=chunk, weights=weights)
    by_mass = supervised_token_loss(out, labels, torch.tensor(mass), chunk=chunk, weights=weights)
    assert math.isclose(float(tokens), weighted_sum / nonzero, rel_tol=1e-6)
    assert math.isclose(float(by_mass), weighted_sum / mass, rel_tol=1e-6)
    ones = (labels != IGNORE_INDEX).float()
    torch.testing.assert_close(supervised_token_loss(out, labels, weights=ones), supervised_token_loss(out, labels))


def test_weighted_gradients_flow_through_the_checkpointed_chunks():
    torch.manual_seed(1)
    logits = torch.randn(2, 7, 11, requires_grad=True)
    labels = torch.randint(0, 11, (2, 7))
    labels[:, 0] = IGNORE_INDEX
    weights = torch.rand(2, 7) * (labels != IGNORE_INDEX)
    supervised_token_loss(CausalLMOutput(logits=logits), labels, 5, chunk=3, weights=weights).backward()
    chunked = logits.grad.clone()
    logits.grad = None
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), reduction="none")
    ((ce * weights[:, 1:].reshape(-1)).sum() / 5).backward()
    torch.testing.assert_close(chunked, logits.grad)


def _items(demo_data, tmp_path, *extra):
    from lit.train.run import prepare

    cfg = tiny_cfg(demo_data, tmp_path, *extra)
    return prepare(cfg, tmp_path).dataset


@pytest.mark.integration
def test_items_carry_each_labelled_tokens_kind_weight_and_the_labels_stay_lits(demo_data, tmp_path):
    """Through train.py's preparation: the weighted set's labels are the binary ``lit`` set's plus the template
    sentences (now weighted 0.05), and every labelled token weighs its kind's weight, image positions 0."""
    weighted = _items(demo_data, tmp_path / "w", "loss.weights={instruction:0.1,template:0.05}")
    binary = _items(demo_data, tmp_path / "b")
    assert "loss_weights" not in binary[0]
    seen = np.zeros(len(KIND_INDEX), dtype=np.int64)
    for i in range(len(weighted)):
        item, ex, plain = weighted[i], weighted.examples[i], binary.examples[i]
        w, labels = item["loss_weights"].numpy(), item["labels"].numpy()
        assert w.shape == labels.shape and np.all((w > 0) == (labels != IGNORE_INDEX))  # image positions weigh 0
        np.testing.assert_array_equal(ex.input_ids, plain.input_ids)
        is_template = ex.kinds == KIND_INDEX["template"]
        np.testing.assert_array_equal(ex.labels[~is_template], plain.labels[~is_template])  # lit's labels elsewhere
        assert np.all(ex.labels[is_template & (np.arange(len(ex.labels)) > 0)] != IGNORE_INDEX)
        n = {kind: int(ex.kind_counts[KIND_INDEX[kind]]) for kind in ("instruction", "template", "response", "eos")}
        expected = 0.1 * n["instruction"] + 0.05 * n["template"] + n["response"] + n["eos"]
        assert math.isclose(float(w.sum(dtype=np.float64)), expected, rel_tol=1e-6)
        assert {round(float(x), 6) for x in w[w > 0]} <= {0.05, 0.1, 1.0}
        seen += ex.kind_counts
    assert all(seen[KIND_INDEX[kind]] for kind in ("instruction", "template", "response", "eos"))


def _losses(run_dir):
    return [h for h in json.loads((run_dir / "log_history.json").read_text()) if "loss" in h]


def _run(demo_data, out, *extra):
    from lit.train.run import run

    run(tiny_cfg(demo_data, out, "train.max_steps=3", *extra), out)
    return _losses(out)


@pytest.mark.integration
def test_weights_of_one_give_the_binary_runs_losses_bit_for_bit(demo_data, tmp_path):
    binary = _run(demo_data, tmp_path / "binary")
    ones = _run(demo_data, tmp_path / "ones", "loss.weights={instruction:1,response:1,eos:1,template:0}")
    assert [h["loss"] for h in ones] == [h["loss"] for h in binary]
    assert not any(k.startswith("weight_mass/") for k in ones[0])


@pytest.mark.integration
@pytest.mark.parametrize("normalization", ["tokens", "weights"])
def test_the_weighted_loss_is_the_same_for_accumulation_1_and_4(demo_data, tmp_path, normalization):
    norm = f"loss.normalization={normalization}"
    one = _run(demo_data, tmp_path / "a1", WEIGHTS, norm, "schedule.global_batch_size=4")
    four = _run(demo_data, tmp_path / "a4", WEIGHTS, norm, "schedule.global_batch_size=4", *_PER_DEVICE_1)
    assert len(one) == len(four) == 3
    for a, b in zip(one, four):
        assert math.isclose(a["loss"], b["loss"], rel_tol=1e-4), (a["loss"], b["loss"])
        assert a["n_tokens/instruction"] == b["n_tokens/instruction"]
        assert math.isclose(a["weight_mass/instruction"], 0.1 * a["n_tokens/instruction"], rel_tol=1e-6)
        assert math.isclose(a["weight_mass/template"], 0.05 * a["n_tokens/template"], rel_tol=1e-6)


_PER_DEVICE_1 = ("train.per_device_train_batch_size=1",)


@pytest.mark.integration
def test_the_weight_sum_normalisation_divides_by_the_logged_weight_mass(demo_data, tmp_path):
    """Step 1 starts from the same weights on the same batch: the two normalisations' losses differ by exactly
    (tokens with a weight) / (their weight sum) of that batch, both as the run logs them."""
    by_tokens = _run(demo_data, tmp_path / "t", WEIGHTS, "loss.normalization=tokens")[0]
    by_mass = _run(demo_data, tmp_path / "m", WEIGHTS, "loss.normalization=weights")[0]
    count = sum(v for k, v in by_tokens.items() if k.startswith("n_tokens/"))
    mass = sum(v for k, v in by_tokens.items() if k.startswith("weight_mass/"))
    assert mass < 0.9 * count  # the instruction and template tokens weigh less than 1
    assert math.isclose(by_mass["loss"] * mass, by_tokens["loss"] * count, rel_tol=1e-4)


@pytest.mark.integration
def test_the_weighted_loss_is_the_same_on_one_and_two_processes(demo_data, tmp_path):
    """2 processes x 2 records (gloo) against 1 process x 2 records x 2 accumulation steps: the same records per
    step (accelerate hands each process whole per-device batches in turn), the same weight-sum-normalised loss."""
    common = [
        WEIGHTS,
        "loss.normalization=weights",
        "schedule.global_batch_size=4",
        "train.per_device_train_batch_size=2",
    ]
    single = _run(demo_data, tmp_path / "one", *common)
    run_dir = tmp_path / "two"
    train_on_two_processes(demo_data, tmp_path / "two_data", run_dir, *common, "train.max_steps=3")
    double = _losses(run_dir)
    assert json.loads((run_dir / "train_metrics.json").read_text())["world_size"] == 2
    assert [h["loss"] for h in double] == pytest.approx([h["loss"] for h in single], rel=1e-4)
