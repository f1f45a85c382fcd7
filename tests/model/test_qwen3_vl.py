"""Qwen3-VL as a model family (lit/model/families/qwen3_vl.py): ids, pixels and labels against Qwen3-VL's own code,
M-RoPE positions against the model's, padding-free parity, the published chat template typed by ``auto``, training
under ZeRO-3, reload, lmms-eval and VC on a tiny model built from ``Qwen3VLConfig`` with transformers' PIL image
processor (no torchvision).

The reference for the ids and labels is Qwen3-VL's public fine-tuning code, QwenLM/Qwen3-VL
``qwen-vl-finetune/qwenvl/data/data_processor.py``: ``_build_messages`` turns a LLaVA record into chat messages (a
human turn split at its ``<image>`` markers into image items and stripped text items; no system message), and
``preprocess_qwen_visual`` tokenizes them with ``processor.apply_chat_template(messages, tokenize=True,
return_dict=True)`` (the published template, tests/chat_template_fixtures.py ``QWEN3_VL``, through
``Qwen3VLProcessor``) and supervises, after each ``<|im_start|>assistant`` and the newline after it, everything up to
and including the next ``<|im_end|>`` and the token after it. ``_build_messages`` and ``_preprocess_qwen_visual`` below
rebuild that on our tokenizer; the processor is ``Qwen3VLProcessor`` without its video processor (whose class needs
torchvision; the family's ``Qwen3VLNoVideoProcessor`` overrides only ``__init__``).
"""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_qwen2_vl import RECORDS as QWEN2_VL_RECORDS  # two turns with an image, a text-only record
from test_qwen2_vl import SYSTEM
from tiny_runs import tiny_model, train_auto_and_score

from lit.constants import IGNORE_INDEX, KIND_INDEX
from lit.mask.chat_templates import get_template

TEMPLATE_SENTENCE = "Answer briefly."
RECORDS = [
    *QWEN2_VL_RECORDS,
    {
        "id": "two-images",
        "image": ["a.png", "b.png"],
        "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is the square? Answer briefly."},
            {"from": "gpt", "value": "Red."},
            {"from": "human", "value": "<image>\nAnd in this picture?"},
            {"from": "gpt", "value": "Green, at the bottom."},
        ],
    },
]
INSTRUCTIONS = {
    "img-multi": ["What colour is the square?", "And how many circles are there?"],
    "text-only": ["Name a colour."],
    "two-images": ["What colour is the square?", "And in this picture?"],
}
SIZES = {"a.png": (40, 56), "b.png": (72, 48)}  # (height, width): grids of 2 x 3 and 3 x 2 merged positions
VISION = ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>")
NEVER_SUPERVISED = (TEMPLATE_SENTENCE, SYSTEM, "system", "user", "assistant", "<|im_start|>")  # under lit


def _tiny(tokenizer):
    """A tiny Qwen3-VL and its processor from conf/model/tiny_qwen3_vl.yaml, 32 wide."""
    return tiny_model("tiny_qwen3_vl", tokenizer)[:2]


def _tokenizer(texts):
    from lit.mask.tokenizer import train_bpe

    tokenizer = train_bpe([*texts, SYSTEM, "user assistant system"] * 20, vocab_size=400)
    tokenizer._tokenizer.post_processor = None  # Qwen's tokenizers add no BOS (the demo BPE's Llama layout does)
    return tokenizer


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    from tiny_runs import write_noise_images

    from lit.model.families import image_inputs_for

    model, processor = _tiny(_tokenizer([t["value"] for r in RECORDS for t in r["conversations"]]))
    root = write_noise_images(tmp_path_factory.mktemp("qwen3_images"), SIZES)
    return model, processor, image_inputs_for(model.config, processor), root


def _dataset(family, scope: str, system: str = "", template=None, sentences=frozenset()):
    from tiny_runs import supervised_dataset

    template = replace(template or get_template("qwen3_vl"), system_prompt=system)
    return supervised_dataset(family, RECORDS, template, scope, sentences, max_length=512)


def _build_messages(record: dict, root, system: str = "") -> list[dict]:
    """QwenLM/Qwen3-VL's ``_build_messages`` (module docstring), with a system message first where one is given."""
    images = record.get("image") or []
    images = [str(root / name) for name in ([images] if isinstance(images, str) else images)]
    messages = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
    for turn in record["conversations"]:
        if turn["from"] == "human":
            content = []
            for seg in re.split(r"(<image>|<video>)", turn["value"]):
                if seg == "<image>":
                    content.append({"type": "image", "image": images.pop(0)})
                elif seg.strip():
                    content.append({"type": "text", "text": seg.strip()})
            messages.append({"role": "user", "content": content})
        else:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": turn["value"]}]})
    assert not images
    return messages


def _preprocess_qwen_visual(record: dict, processor, root, system: str = "") -> dict:
    """QwenLM/Qwen3-VL's ``preprocess_qwen_visual`` (module docstring) on our tokenizer: its ``<|im_start|>`` +
    ``assistant`` token pair is our tokens of ``<|im_start|>assistant``, its ``pos + 2`` the header's newline."""
    from chat_template_fixtures import QWEN3_VL

    out = processor.apply_chat_template(
        _build_messages(record, root, system),
        chat_template=QWEN3_VL,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    tokenizer = processor.tokenizer
    ids = out["input_ids"][0].tolist()
    head = tokenizer("<|im_start|>assistant", add_special_tokens=False)["input_ids"]
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    labels = [IGNORE_INDEX] * len(ids)
    for pos in range(len(ids)):
        if ids[pos : pos + len(head)] == head:
            assert ids[pos + len(head) : pos + len(head) + 1] == newline  # the token the original skips
            start = pos + len(head) + 1
            stop = ids.index(end, start)
            labels[start : stop + 2] = ids[start : stop + 2]
    return {**out, "labels": torch.tensor(labels)}


@pytest.mark.parametrize("system", ["", SYSTEM], ids=["no_system", "system"])
def test_ids_pixels_and_token_types_are_qwen3vl_processors_on_the_published_template(family, system):
    """Mirrors QwenLM/Qwen3-VL ``preprocess_qwen_visual`` (qwen-vl-finetune/qwenvl/data/data_processor.py): for every
    record (two turns with an image, text only, two images in two turns), with and without a system message, our ids
    are ``Qwen3VLProcessor.apply_chat_template``'s with the published template, and so are the pixels, the grids
    (in the images' order) and the M-RoPE token types; each image's count is the processor's own."""
    model, processor, inputs, root = family
    ds = _dataset(family, "vit", system)
    for i, record in enumerate(RECORDS):
        item, ref = ds[i], _preprocess_qwen_visual(record, processor, root, system)
        assert item["input_ids"].tolist() == ref["input_ids"][0].tolist(), record["id"]
        tokens = inputs.token_inputs(item["input_ids"][None])
        assert torch.equal(tokens["mm_token_type_ids"], ref["mm_token_type_ids"].to(torch.int32))
        images = item.get("image")
        if images is None:
            assert "pixel_values" not in ref
            continue
        batch = inputs.collate(images if isinstance(images, list) else [images])
        assert torch.equal(batch["pixel_values"], ref["pixel_values"])
        assert torch.equal(batch["image_grid_thw"], ref["image_grid_thw"])
    sizes = [*SIZES.values(), (32, 32), (10, 70), (300, 20)]
    counts = processor._get_num_multimodal_tokens(image_sizes=sizes).num_image_tokens
    assert [inputs.n_tokens(h, w) for h, w in sizes] == counts
    assert processor.image_processor.patch_size == model.config.vision_config.patch_size == 16


def test_two_images_in_one_turn_match_qwen3vls_messages_when_written_without_whitespace_between(family):
    """Mirrors QwenLM/Qwen3-VL ``_build_messages`` on a turn with two images: it strips each text piece and drops
    whitespace-only ones, so ``<image><image>Q`` gives its ids exactly, while ``<image>\n<image>\nQ`` (kept as the
    record writes it, docs/training.md) has two newlines more, one after each vision block, never supervised."""
    from tiny_runs import supervised_dataset

    model, processor, inputs, root = family
    tokenizer = processor.tokenizer
    question, answer = "Which picture is brighter?", "The first."

    def record(text: str) -> dict:
        turns = [{"from": "human", "value": text}, {"from": "gpt", "value": answer}]
        return {"id": "one-turn", "image": ["a.png", "b.png"], "conversations": turns}

    tight, spaced = record(f"<image><image>{question}"), record(f"<image>\n<image>\n{question}")
    template = get_template("qwen3_vl")
    ours = supervised_dataset(family, [tight, spaced], template, "lit", frozenset(), max_length=512)
    reference = _preprocess_qwen_visual(tight, processor, root)
    assert ours[0]["input_ids"].tolist() == reference["input_ids"][0].tolist()
    assert _preprocess_qwen_visual(spaced, processor, root)["input_ids"].tolist() == reference["input_ids"].tolist()
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    extra = ours[1]["input_ids"].tolist()
    end = processor.vision_end_token_id
    for at in reversed([i for i, t in enumerate(extra) if t == end]):
        assert extra[at + 1 : at + 2] == newline and ours[1]["labels"][at + 1] == IGNORE_INDEX
        del extra[at + 1]
    assert extra == reference["input_ids"][0].tolist()


def test_vit_labels_are_qwen3vls_finetuning_codes_but_for_the_newline_after_each_end_of_turn(family):
    """Mirrors QwenLM/Qwen3-VL ``preprocess_qwen_visual``'s labels: the same supervised tokens (each answer and its
    ``<|im_end|>``) except the ``\\n`` after each ``<|im_end|>``, which that code supervises and ours leaves out:
    generation stops at ``<|im_end|>``, so the newline is never generated."""
    from tiny_runs import assert_vit_supervises_the_answers_alone

    model, processor, _, root = family
    tokenizer = processor.tokenizer
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert len(newline) == 1
    for system in ("", SYSTEM):
        ds = _dataset(family, "vit", system)
        for i, record in enumerate(RECORDS):
            item, ref = ds[i], _preprocess_qwen_visual(record, processor, root, system)
            ids, ours, theirs = item["input_ids"].numpy(), item["labels"].numpy(), ref["labels"].numpy()
            differ = np.nonzero(ours != theirs)[0]
            assert len(differ) == len(record["conversations"]) // 2  # one newline per answer
            assert all(ids[d] == newline[0] and ids[d - 1] == end and ours[d] == IGNORE_INDEX for d in differ)
        assert_vit_supervises_the_answers_alone(ds, RECORDS, tokenizer, "{}<|im_end|>")


def test_lit_adds_the_instructions_never_system_headers_vision_tokens_or_template_sentences(family):
    from tiny_runs import assert_lit_adds_the_instructions_alone

    model, processor, inputs, _ = family
    tokenizer = processor.tokenizer
    vision = {tokenizer.convert_tokens_to_ids(t) for t in VISION}
    vit = _dataset(family, "vit", SYSTEM)
    lit = _dataset(family, "lit", SYSTEM, sentences=frozenset({TEMPLATE_SENTENCE}))
    assert_lit_adds_the_instructions_alone(vit, lit, RECORDS, tokenizer, INSTRUCTIONS, NEVER_SUPERVISED, vision)
    header = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    for i, record in enumerate(RECORDS):
        ids, li = vit[i]["input_ids"], lit[i]["labels"]
        starts = [j for j in range(len(ids)) if ids[j : j + len(header)].tolist() == header]
        assert len(starts) == len(record["conversations"]) // 2
        assert all((li[j : j + len(header)] == IGNORE_INDEX).all() for j in starts)
        kinds = lit.examples[i].kinds
        assert (kinds == KIND_INDEX["system"]).any()
        assert (kinds == KIND_INDEX["template"]).any() == (TEMPLATE_SENTENCE in json.dumps(record))


def test_every_parameter_has_a_part_the_mergers_and_deepstack_mergers_are_the_projector(family):
    from tiny_runs import assert_parts_split_the_model_and_the_projector_trains_alone

    modules = (".merger.", ".deepstack_merger_list.")
    projector = assert_parts_split_the_model_and_the_projector_trains_alone(family[0], modules)
    assert any(".deepstack_merger_list.0." in n for n in projector)


def test_mrope_positions_the_collator_computes_are_the_models_own_and_padding_free_is_the_padded_batch(family):
    """Mirrors tests/train/test_padding_free.py (``test_mrope_positions_are_the_models_own_per_record``,
    ``test_loss_and_gradients_equal_the_padded_batch``) for Qwen3-VL: the 3-D positions ``PaddingFreeCollator``
    computes for each record (``Qwen3VLModel.get_rope_index`` through ``qwen2_vl.RopeIndex``) are those the model
    computes itself for the padded batch (``compute_3d_position_ids``, with the attention mask); the packed row gives
    the padded batch's loss (relative difference <= 1e-5) and gradients (cosine >= 0.99999 per part), DeepStack's
    features included; without the per-record positions the records would attend to each other."""
    from lit.data.collate import Collator
    from lit.model.parts import part_of
    from lit.train.loss import supervised_token_loss
    from lit.train.padding_free import padding_free_collator

    model, processor, inputs, _ = family
    ds = _dataset(family, "lit", SYSTEM)
    items = [ds[i] for i in range(len(RECORDS))]
    pad = processor.tokenizer.pad_token_id
    padded = Collator(pad, inputs)(items)
    packed = padding_free_collator(model, pad, inputs)(items)
    assert padded["attention_mask"].eq(0).any() and "attention_mask" not in packed
    inner = model.model
    expected = inner.compute_3d_position_ids(
        input_ids=padded["input_ids"],
        image_grid_thw=padded["image_grid_thw"],
        inputs_embeds=inner.get_input_embeddings()(padded["input_ids"]),
        attention_mask=padded["attention_mask"],
        mm_token_type_ids=padded["mm_token_type_ids"],
    )
    mask = padded["attention_mask"].bool()
    assert packed["position_ids"].shape == (4, 1, mask.sum())
    assert torch.equal(packed["position_ids"][1:, 0], expected[:, mask])
    assert expected[:, mask].max() < packed["position_ids"][0].max()  # image rows really are 3-D, not the text run

    def model_inputs(batch):
        return {k: v for k, v in batch.items() if k != "kind_counts"}

    def loss_and_grads(batch):
        batch = model_inputs(batch)
        labels = batch.pop("labels")
        model.zero_grad()
        loss = supervised_token_loss(model(**batch), labels, num_items_in_batch=(labels[:, 1:] != IGNORE_INDEX).sum())
        loss.backward()
        grads = {}
        for name, p in model.named_parameters():
            if p.grad is not None:
                grads.setdefault(part_of(name), []).append(p.grad.flatten().clone())
        return loss.item(), {part: torch.cat(g) for part, g in grads.items()}

    (loss_p, grads_p), (loss_f, grads_f) = loss_and_grads(padded), loss_and_grads(packed)
    model.zero_grad()
    assert abs(loss_f - loss_p) / abs(loss_p) <= 1e-5, (loss_p, loss_f)
    assert set(grads_p) == set(grads_f) == {"vision", "projector", "lm"}
    for part, g in grads_p.items():
        assert torch.nn.functional.cosine_similarity(g, grads_f[part], dim=0).item() >= 0.99999, part
    with torch.no_grad():
        unmarked = {k: v for k, v in model_inputs(packed).items() if k != "position_ids"}
        assert abs(model(**unmarked).loss.item() - model(**model_inputs(padded)).loss.item()) > 1e-4


def test_auto_types_the_published_template_as_qwen3_vl_and_the_saved_jinja_reads_back(family):
    """``chat_template: auto`` on Qwen3-VL-Instruct's published Jinja (tests/chat_template_fixtures.py ``QWEN3_VL``)
    derives the ``qwen3_vl`` template; that template writes, character for character, what the published one writes
    for a conversation with and without a system message, several turns, two images and text only, and the
    generation prompt; ``qwen2_vl``'s does not (its default system prompt). The Jinja training saves from it
    (lit/model/chat_jinja.py) derives back to the same ids and labels."""
    from chat_template_fixtures import QWEN3_VL
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from tiny_runs import assert_same_ids_and_labels, template_read_back, template_typed_by_auto

    from lit.mask.render import render

    model, processor, _, root = family
    published = template_typed_by_auto(processor, model.config, QWEN3_VL)
    assert replace(published, name="qwen3_vl") == get_template("qwen3_vl")
    assert published.image_token == "<|image_pad|>" and published.system_prompt == ""

    jinja = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(QWEN3_VL)
    for system in ("", SYSTEM):
        template = replace(get_template("qwen3_vl"), system_prompt=system)
        for record in RECORDS:
            ours = "".join(s.text for s in render(record, template))
            assert ours == jinja.render(messages=_build_messages(record, root, system)), (record["id"], system)
            first = {"id": record["id"], "conversations": record["conversations"][:1]}
            if "image" in record:  # the images of the first turn
                images = [record["image"]] if isinstance(record["image"], str) else record["image"]
                first["image"] = images[: first["conversations"][0]["value"].count("<image>")]
            prompt = "".join(s.text for s in render(first, template, add_generation_prompt=True))
            assert prompt == jinja.render(messages=_build_messages(first, root, system), add_generation_prompt=True)
    qwen2 = "".join(s.text for s in render(RECORDS[1], get_template("qwen2_vl")))
    assert qwen2 != jinja.render(messages=_build_messages(RECORDS[1], root)) and "system" in qwen2

    derived = template_read_back(processor, get_template("qwen3_vl"))  # what training saves: evaluation's `auto`
    for scope in ("vit", "lit"):
        assert_same_ids_and_labels(_dataset(family, scope), _dataset(family, scope, template=derived))


@pytest.mark.integration
def test_model_auto_trains_a_saved_qwen3_vl_under_zero3_and_lmms_eval_and_vc_score_it(tmp_path, demo_data):
    """Mirrors test_qwen2_vl.py's round trip (tests/tiny_runs.py ``train_auto_and_score``): ``python train.py
    model=auto model.pretrained=DIR loss=lit`` on a saved tiny Qwen3-VL whose processor carries Qwen3-VL-Instruct's
    published chat template: the class, template and image processing come from DIR; ZeRO-3 on CPU; the checkpoint
    reloads with the PIL image processor, lmms-eval scores it and VC runs on it."""
    from chat_template_fixtures import QWEN3_VL
    from tiny_runs import demo_turn_texts, save_as_published

    model, processor = _tiny(_tokenizer(demo_turn_texts(demo_data)))
    given = save_as_published(model, processor, tmp_path / "given", QWEN3_VL)

    seen, loaded, loaded_processor = train_auto_and_score(given, tmp_path, demo_data)
    assert not seen.get("system")  # the published template writes no default system prompt
    assert type(loaded).__name__ == "Qwen3VLForConditionalGeneration"
    assert type(loaded_processor).__name__ == "Qwen3VLNoVideoProcessor"
    assert type(loaded_processor.image_processor).__name__ == "Qwen2VLImageProcessorPil"
    assert loaded.config.vision_config.deepstack_visual_indexes == [0]
    assert json.loads((tmp_path / "eval" / "scores.json").read_text())["lmms_eval_version"]
