"""Padding-free training (lit.train.padding_free, lit.data.collate.PaddingFreeCollator) against the padded batch.

Parity at step 0 on the same records, in fp32 on CPU, for every family: the loss's relative difference <= 1e-5 and,
per parameter group (vision tower, projector, LM), the gradients' cosine >= 0.99999 — the two figures axolotl's
multipack pull request reports for its packing (loss relative difference, gradient cosine). The records mix
lengths, system prompts, template sentences and (except InstructBLIP, which needs an image) text-only records.
A wrong boundary (attention across records, a target across records, positions that do not restart, M-RoPE
positions of the whole row) moves the loss by far more than this.
"""

from __future__ import annotations

import json

import pytest
import torch
from tiny_runs import tiny_cfg

from lit.constants import IGNORE_INDEX
from lit.data.collate import Collator
from lit.model.parts import part_of
from lit.train.loss import supervised_token_loss
from lit.train.padding_free import LM_TYPES, check_padding_free, padding_free_collator

FAMILIES = ("tiny", "tiny_next", "tiny_iblip", "tiny_qwen2_vl", "tiny_qwen2_5_vl")
TEXT_ONLY = [
    {
        "id": f"text-{i}",
        "conversations": [
            {"from": "human", "value": "Name a colour of the shapes. Answer with a single word." + " Please." * i},
            {"from": "gpt", "value": "Red" if i else "Blue"},
        ],
    }
    for i in range(2)
]


def _prepare(demo_data, out, model: str, *extra: str):
    from lit.train.run import prepare

    records = json.loads((demo_data / "train.json").read_text())[:10]
    if model != "tiny_iblip":  # InstructBLIP needs an image in every record
        records[3:3] = TEXT_ONLY
    (out / "train.json").write_text(json.dumps(records))
    cfg = tiny_cfg(
        demo_data,
        out,
        f"model={model}",
        f"data.path={out / 'train.json'}",
        f"data.image_root={demo_data}",
        "data.label_cache_dir=null",
        *extra,
    )
    prepared = prepare(cfg, out)
    prepared.built.model.eval()  # no dropout (the Q-Former has some): the two batches must meet the same function
    return prepared


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, demo_data, tmp_path_factory):
    return request.param, _prepare(demo_data, tmp_path_factory.mktemp(request.param), request.param)


def _loss_and_grads(model, batch: dict):
    batch = dict(batch)
    labels = batch.pop("labels")
    batch.pop("kind_counts")
    n = (labels[:, 1:] != IGNORE_INDEX).sum()
    model.zero_grad()
    loss = supervised_token_loss(model(**batch), labels, num_items_in_batch=n)
    loss.backward()
    grads: dict[str, list[torch.Tensor]] = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            grads.setdefault(part_of(name), []).append(p.grad.flatten().clone())
    return loss.item(), int(n), {part: torch.cat(g) for part, g in grads.items()}


def _items(dataset, n: int = 8) -> list[dict]:
    return [dataset[i] for i in range(min(n, len(dataset)))]


def _parity(prepared):
    built, items = prepared.built, _items(prepared.dataset)
    pad = built.tokenizer.pad_token_id
    padded = Collator(pad, built.image_inputs)(items)
    flat = padding_free_collator(built.model, pad, built.image_inputs)(items)
    return _loss_and_grads(built.model, padded), _loss_and_grads(built.model, flat), padded, flat


def test_loss_and_gradients_equal_the_padded_batch(family):
    name, prepared = family
    (loss_p, n_p, grads_p), (loss_f, n_f, grads_f), padded, flat = _parity(prepared)
    assert padded["attention_mask"].eq(0).any(), "the records must differ in length, or there is nothing to drop"
    assert n_f == n_p > 0  # the same supervised targets, so the same normaliser
    assert abs(loss_f - loss_p) / abs(loss_p) <= 1e-5, (name, loss_p, loss_f)
    assert set(grads_f) == set(grads_p) and {"vision", "projector", "lm"} <= set(grads_p)
    for part, g in grads_p.items():
        cosine = torch.nn.functional.cosine_similarity(g, grads_f[part], dim=0).item()
        assert cosine >= 0.99999, (name, part, cosine)


def test_no_padding_position_reaches_the_model(family):
    """The LM's forward sees one row of exactly the records' tokens, without an attention mask, and the vision
    tower the batch's images."""
    name, prepared = family
    built, items = prepared.built, _items(prepared.dataset)
    seen = []
    lm = built.model.get_decoder()  # the LM's decoder stack, the first module every token position enters
    handle = lm.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((kwargs["inputs_embeds"].shape, kwargs.get("attention_mask"))),
        with_kwargs=True,
    )
    try:
        batch = padding_free_collator(built.model, built.tokenizer.pad_token_id, built.image_inputs)(items)
        assert "attention_mask" not in batch
        labels = batch.pop("labels")
        batch.pop("kind_counts")
        with torch.no_grad():
            logits = built.model(**batch).logits
    finally:
        handle.remove()
    total = sum(len(it["input_ids"]) for it in items)
    assert [(tuple(shape[:2]), mask) for shape, mask in seen] == [((1, total), None)], name
    assert logits.shape[:2] == labels.shape == (1, total)
    assert not (batch["input_ids"] == built.tokenizer.pad_token_id).all(-1).any()


def test_each_record_restarts_its_positions_and_loses_its_first_target(family):
    _, prepared = family
    built, items = prepared.built, _items(prepared.dataset)
    flat = padding_free_collator(built.model, built.tokenizer.pad_token_id, built.image_inputs)(items)
    lengths = [len(it["input_ids"]) for it in items]
    starts = torch.cumsum(torch.tensor([0, *lengths[:-1]]), 0)
    text_positions = flat["position_ids"].reshape(-1, flat["input_ids"].shape[1])[0]
    assert text_positions[starts].eq(0).all() and int(text_positions.max()) == max(lengths) - 1
    assert flat["labels"][0, starts].eq(IGNORE_INDEX).all()


def test_mrope_positions_are_the_models_own_per_record(demo_data, tmp_path):
    """Qwen2-VL: the packed 3-D positions of each record are those the model computes for it in a padded batch
    (Qwen2VLModel.compute_3d_position_ids), not positions of the whole row."""
    prepared = _prepare(demo_data, tmp_path, "tiny_qwen2_vl")
    built, items = prepared.built, _items(prepared.dataset)
    pad = built.tokenizer.pad_token_id
    padded = Collator(pad, built.image_inputs)(items)
    flat = padding_free_collator(built.model, pad, built.image_inputs)(items)
    inner = built.model.model
    expected = inner.compute_3d_position_ids(
        input_ids=padded["input_ids"],
        image_grid_thw=padded.get("image_grid_thw"),
        inputs_embeds=inner.get_input_embeddings()(padded["input_ids"]),
        attention_mask=padded["attention_mask"],
        mm_token_type_ids=padded["mm_token_type_ids"],
    )
    mask = padded["attention_mask"].bool()
    assert flat["position_ids"].shape == (4, 1, mask.sum())
    assert torch.equal(flat["position_ids"][1:, 0], expected[:, mask])
    assert expected[:, mask].max() < flat["position_ids"][0].max()  # image rows really are 3-D, not the text run


@pytest.mark.parametrize("kernel", ["eager", "sdpa"])
def test_parity_under_both_cpu_kernels(demo_data, tmp_path, kernel):
    prepared = _prepare(demo_data, tmp_path, "tiny", f"+model.attn_implementation={kernel}")
    assert prepared.built.model.config.get_text_config()._attn_implementation == kernel
    (loss_p, _, grads_p), (loss_f, _, grads_f), _, _ = _parity(prepared)
    assert abs(loss_f - loss_p) / abs(loss_p) <= 1e-5
    for part, g in grads_p.items():
        assert torch.nn.functional.cosine_similarity(g, grads_f[part], dim=0).item() >= 0.99999


def _tiny_lm(model_type: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        model_type,
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("model_type", [t for t in LM_TYPES if not t.endswith("_vl_text")])
def test_each_listed_lm_keeps_packed_records_apart(model_type):
    """Every LM in LM_TYPES (the Qwen2-VL text models are covered by the family tests): two records packed into one
    row with restarting positions give each record's own logits."""
    lm = _tiny_lm(model_type)
    a, b = torch.randint(0, 97, (1, 7)), torch.randint(0, 97, (1, 11))
    with torch.no_grad():
        alone = torch.cat([lm(input_ids=a).logits, lm(input_ids=b).logits], dim=1)
        position_ids = torch.cat([torch.arange(7), torch.arange(11)])[None]
        packed = lm(input_ids=torch.cat([a, b], dim=1), position_ids=position_ids, use_cache=False).logits
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-5)


def test_unsupported_kernels_and_lms_are_refused_at_start_up(family):
    import copy

    _, prepared = family
    config = copy.deepcopy(prepared.built.model.config)
    check_padding_free(config)  # the tiny families pass
    text = config.get_text_config()
    text._attn_implementation = "flex_attention"
    with pytest.raises(ValueError, match="set model.attn_implementation=sdpa"):
        check_padding_free(config)
    text._attn_implementation = "sdpa"
    text.model_type = "opt"
    with pytest.raises(ValueError, match="LM is 'opt'.*train.padding_free=false"):
        check_padding_free(config)


def test_a_padding_free_run_takes_the_recipes_steps_with_the_padded_losses(demo_data, tmp_path):
    """Through train.py's path (Trainer, sampler, 2 accumulation steps, the supervised-token normaliser): the same
    optimizer steps, and per step the same loss and gradient norm as the padded run."""
    from lit.train.run import run

    logged = {}
    for free in (False, True):
        out = tmp_path / f"padding_free_{free}"
        cfg = tiny_cfg(
            demo_data,
            out,
            "train.max_steps=4",
            "train.gradient_accumulation_steps=2",
            f"train.padding_free={free}",
            "data.label_cache_dir=null",
        )
        metrics = run(cfg, out)
        history = [h for h in json.loads((out / "log_history.json").read_text()) if "loss" in h]
        logged[free] = metrics["steps"], [(h["loss"], h["grad_norm"]) for h in history]
        assert all(h["throughput/tokens_per_s"] > 0 for h in history)
    (steps_padded, padded), (steps_free, free) = logged[False], logged[True]
    assert steps_padded == steps_free == 4 and len(padded) == len(free) == 4
    for (loss_p, norm_p), (loss_f, norm_f) in zip(padded, free, strict=True):
        assert loss_f == pytest.approx(loss_p, rel=1e-4, abs=2e-4)  # the Trainer logs the loss to 4 decimals
        assert norm_f == pytest.approx(norm_p, rel=1e-4)


@pytest.mark.parametrize("kernel", ["flash_attention_2", "sdpa"])
def test_the_flattened_row_is_transformers_flattening_collators(family, kernel):
    """Tokens, labels, positions and (for FlashAttention, where the family passes them to the LM only) the record
    boundaries equal those of transformers' ``DataCollatorWithFlattening(return_flash_attn_kwargs=True)``
    (transformers/data/data_collator.py) on the same records; Qwen2-VL's boundaries come from its positions."""
    import copy
    from types import SimpleNamespace

    from transformers import DataCollatorWithFlattening

    name, prepared = family
    built, items = prepared.built, _items(prepared.dataset)
    config = copy.deepcopy(built.model.config)
    config.get_text_config()._attn_implementation = kernel
    model = SimpleNamespace(config=config, language_model=torch.nn.Identity())
    ours = padding_free_collator(model, built.tokenizer.pad_token_id, built.image_inputs)(items)
    theirs = DataCollatorWithFlattening(return_flash_attn_kwargs=True)(
        [{"input_ids": it["input_ids"].tolist(), "labels": it["labels"].tolist()} for it in items]
    )
    assert torch.equal(ours["input_ids"], theirs["input_ids"]) and torch.equal(ours["labels"], theirs["labels"])
    assert torch.equal(ours["position_ids"].reshape(-1, ours["input_ids"].shape[1])[0], theirs["position_ids"][0])
    flash = kernel == "flash_attention_2" and not name.startswith("tiny_qwen2")
    assert ("cu_seq_lens_q" in ours) == flash
    if flash:
        for key in ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k"):
            assert torch.equal(torch.as_tensor(ours[key]), torch.as_tensor(theirs[key])), key
