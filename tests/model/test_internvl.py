"""InternVL as a model family (lit/model/families/internvl.py): the image-token layout against ``InternVLProcessor``,
labels, ``chat_template: auto``, training under ZeRO-3, reload, lmms-eval and VC on a tiny model built from
``InternVLConfig`` (a Qwen2 LM) with transformers' PIL image processor (``GotOcr2ImageProcessorPil``, no
torchvision).

The reference for the ids is transformers' own: ``InternVLProcessor`` (``models/internvl/processing_internvl.py``:
each ``<IMG_CONTEXT>`` of the text becomes ``<img>`` + ``<IMG_CONTEXT>`` x image_seq_length x tiles + ``</img>``,
the tiles ``GotOcr2ImageProcessorPil``'s with ``crop_to_patches``), without its video processor, applied to the
text that the published chat template of OpenGVLab/InternVL3-*-hf writes (tests/chat_template_fixtures.py
``INTERNVL``) for the same conversation, unchanged: chatml, no default system prompt, ``<IMG_CONTEXT>\\n`` for an
image item (the ``internvl`` template, lit/mask/chat_templates.py). ``chat_template: auto`` derives that template
from the published Jinja.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from test_qwen2_vl import RECORDS, SYSTEM  # a system prompt, two turns with an image, a text-only record
from tiny_runs import CONF, train_auto_and_score

from lit.constants import IGNORE_INDEX, KIND_INDEX
from lit.mask.chat_templates import get_template

TEMPLATE_SENTENCE = "Answer briefly."
INSTRUCTIONS = {"img-multi": ["What colour is the square?", "And how many circles are there?"], "text-only": ["Name"]}
VISION_TOKENS = ("<img>", "<IMG_CONTEXT>", "</img>")
TWO_IMAGES = {
    "id": "two-images",
    "image": ["a.png", "b.png"],
    "conversations": [
        {"from": "human", "value": "<image>\n<image>\nAre the two pictures alike?"},
        {"from": "gpt", "value": "No."},
    ],
}


def _tiny(tokenizer):
    """A tiny InternVL and its processor from conf/model/tiny_internvl.yaml, 32 wide."""
    from lit.mask.tokenizer import prepare_tokenizer
    from lit.model.loading import compose_tiny

    cfg = OmegaConf.merge(
        OmegaConf.load(CONF / "model" / "tiny.yaml"), OmegaConf.load(CONF / "model" / "tiny_internvl.yaml")
    )
    cfg.text.hidden_size = cfg.vision.hidden_size = 32
    prepare_tokenizer(tokenizer, get_template("internvl"))
    model, processor = compose_tiny(cfg, tokenizer)
    return model.eval(), processor


def _tokenizer(texts):
    """The demo's BPE without a BOS, as the published InternVL3-hf (Qwen2) tokenizers add none."""
    from lit.mask.tokenizer import train_bpe

    tokenizer = train_bpe(list(texts) + ["user assistant system", SYSTEM] * 20, vocab_size=400)
    tokenizer._tokenizer.post_processor = None
    return tokenizer


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    from lit.model.families import image_inputs_for

    model, processor = _tiny(_tokenizer([t["value"] for r in RECORDS for t in r["conversations"]] * 20))
    root = tmp_path_factory.mktemp("internvl_images")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(root / "a.png")
    Image.fromarray(rng.integers(0, 255, (16, 40, 3), dtype=np.uint8)).save(root / "b.png")
    return model, processor, image_inputs_for(model.config, processor), root


def _dataset(family, scope: str, template=None, sentences=frozenset(), records=RECORDS):
    from lit.data.dataset import SupervisedDataset
    from lit.data.labels import LabelSpec
    from lit.mask.scopes import get_scope

    model, processor, inputs, root = family
    template = template or replace(get_template("internvl"), system_prompt=SYSTEM)
    spec = LabelSpec(template, get_scope(scope), 1024, template_sentences=sentences, image_root=root)
    return SupervisedDataset(records, spec, processor.tokenizer, inputs, progress=False)


def _items(text: str, turn_opens_with_image: bool) -> list[dict]:
    """A turn's content items: one image (moved first, its newline dropped, as LLaVA's records mean it) and the
    text; or, with several images, the images and the text between them in the record's order."""
    if text.count("<image>") > 1:
        items = []
        for k, piece in enumerate(text.split("<image>")):
            items += [{"type": "image"}] if k else []
            items += [{"type": "text", "text": piece}] if piece else []
        return items
    image = [{"type": "image"}] if turn_opens_with_image else []
    return image + [{"type": "text", "text": text.replace("<image>", "").strip()}]


def _messages(record: dict, system: str | None) -> list[dict]:
    out = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
    for turn in record["conversations"]:
        role = "user" if turn["from"] == "human" else "assistant"
        out.append({"role": role, "content": _items(turn["value"], "<image>" in turn["value"])})
    return out


def _render(messages: list[dict]) -> str:
    """The published template's text, rendered as ``apply_chat_template(..., tokenize=False)`` renders it."""
    from chat_template_fixtures import INTERNVL
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return (
        ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        .from_string(INTERNVL)
        .render(messages=messages)
    )


def _reference(text: str, record: dict, processor, root) -> dict:
    """``InternVLProcessor`` (without its video processor) on ``text`` and the record's images."""
    names = record.get("image", [])
    names = [names] if isinstance(names, str) else names
    images = [Image.open(root / name).convert("RGB") for name in names] or None
    return processor(text=text, images=images, return_tensors="pt")


@pytest.mark.parametrize("system", [SYSTEM, None])
def test_ids_and_pixels_are_internvl_processors_for_the_published_template(family, system):
    """Mirrors transformers ``models/internvl/processing_internvl.py`` (``InternVLProcessor.__call__``,
    ``replace_image_token``, ``_get_num_multimodal_tokens``) on the published template's text: with and without a
    system message (no default one is inserted), two turns with an image, a text-only record."""
    model, processor, inputs, root = family
    template = replace(get_template("internvl"), system_prompt=system or "")
    ds = _dataset(family, "vit", template)
    for i, record in enumerate(RECORDS):
        item, text = ds[i], _render(_messages(record, system))
        ref = _reference(text, record, processor, root)
        assert item["input_ids"].tolist() == ref["input_ids"][0].tolist()
        assert (SYSTEM in processor.tokenizer.decode(item["input_ids"])) == bool(system)
        if "image" in record:
            assert torch.equal(inputs.collate([item["image"]])["pixel_values"], ref["pixel_values"])
    sizes = [(40, 56), (32, 32), (16, 16), (16, 32), (64, 32), (16, 40), (70, 10), (8, 100), (300, 20)]
    counts = [inputs.n_tokens(h, w) for h, w in sizes]
    assert counts == processor._get_num_multimodal_tokens(image_sizes=sizes).num_image_tokens
    assert set(counts) == {6, 14, 18, 22}  # 1 tile; 2, 3 or 4 tiles and the thumbnail; 4 positions each, <img>, </img>


def test_a_record_with_two_images_is_internvl_processors_and_the_model_reads_it(family):
    """Mirrors ``InternVLProcessor`` for two images in one turn: the ids and pixels (each image's tiles in order)
    equal the processor's for the published template's text of the record's items in order (``<image>\\n<image>\\nQ``:
    each image item's ``<IMG_CONTEXT>\\n``, then the record's own newlines); written without them
    (``<image><image>Q``) the record is the template's ``[image, image, text]``, which is also what InternVL's own
    fine-tuning code (``_official``) makes of ``<image>\\n<image>\\nQ``. The image blocks are never supervised under
    ``lit``; the model's forward reads every image's tiles (finite loss)."""
    from lit.data.collate import Collator

    model, processor, inputs, root = family
    question = {"from": "human", "value": "<image><image>Are the two pictures alike?"}
    together = {**TWO_IMAGES, "id": "together", "conversations": [question, TWO_IMAGES["conversations"][1]]}
    records = [TWO_IMAGES, together]
    ds = _dataset(family, "lit", records=records)
    texts = [_render(_messages(r, SYSTEM)) for r in records]
    assert "<|im_start|>user\n<IMG_CONTEXT>\n\n<IMG_CONTEXT>\n\nAre" in texts[0]
    assert "<|im_start|>user\n<IMG_CONTEXT>\n<IMG_CONTEXT>\nAre" in texts[1]
    for i, record in enumerate(records):
        ref = _reference(texts[i], record, processor, root)
        item = ds[i]
        assert item["input_ids"].tolist() == ref["input_ids"][0].tolist()
        batch = Collator(processor.tokenizer.pad_token_id, inputs)([item])
        assert torch.equal(batch["pixel_values"], ref["pixel_values"])
        assert batch["pixel_values"].shape[0] == 5 + 4  # a.png: 2 x 2 tiles and the thumbnail; b.png: 3 x 1 and it
        supervised = ds.examples[i].kinds[ds.examples[i].labels != IGNORE_INDEX]
        assert KIND_INDEX["image"] not in supervised.tolist() and KIND_INDEX["instruction"] in supervised.tolist()
        with torch.no_grad():
            assert torch.isfinite(model(**{k: v for k, v in batch.items() if k != "kind_counts"}).loss)
    blocks = [processor.replace_image_token({"num_patches": [t]}, 0) for t in (5, 4)]
    official, _ = _official(TWO_IMAGES, processor.tokenizer, blocks, SYSTEM)
    assert ds[1]["input_ids"].tolist() == official


def _official(record: dict, tokenizer, image_tokens: list[str], system: str) -> tuple[list[int], list[int]]:
    """InternVL's own fine-tuning labels for ``record``: OpenGVLab/InternVL ``internvl_chat/internvl/train/
    dataset.py`` (``preprocess_internvl2_5``), rebuilt on our tokenizer. Each ``<image>`` of a human turn is
    replaced in place by its ``<img>`` + context tokens + ``</img>`` text; the segments ``<|im_start|>system\\n...
    <|im_end|>\\n``, ``<|im_start|>user\\n...<|im_end|>\\n``, ``<|im_start|>assistant\\n...<|im_end|>\\n`` are
    tokenized alone; system and user segments are all IGNORE, an assistant segment supervises all but its
    ``<|im_start|>assistant\\n`` and its last token (the ``\\n``)."""

    def tok(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    ids = tok(f"<|im_start|>system\n{system}<|im_end|>\n")
    labels = [IGNORE_INDEX] * len(ids)
    header = len(tok("<|im_start|>assistant\n"))
    images = iter(image_tokens)
    for turn in record["conversations"]:
        if turn["from"] == "human":
            value = turn["value"]
            while "<image>" in value:
                value = value.replace("<image>", next(images), 1)
            segment = tok(f"<|im_start|>user\n{value}<|im_end|>\n")
            ids, labels = ids + segment, labels + [IGNORE_INDEX] * len(segment)
        else:
            segment = tok(f"<|im_start|>assistant\n{turn['value']}<|im_end|>\n")
            ids += segment
            labels += [IGNORE_INDEX] * header + segment[header:-1] + [IGNORE_INDEX]
    return ids, labels


def test_vit_labels_and_ids_are_internvls_own_fine_tuning_codes(family):
    """Mirrors OpenGVLab/InternVL ``internvl_chat/internvl/train/dataset.py`` (``preprocess_internvl2_5``, see
    ``_official``): the same input ids and the same supervised tokens (each answer and its ``<|im_end|>``) for a
    record with a system prompt, an image and two turns, and a text-only record."""
    model, processor, inputs, _ = family
    tokenizer = processor.tokenizer
    ds = _dataset(family, "vit")
    for i, record in enumerate(RECORDS):
        item = ds[i]
        n = inputs.n_tokens(40, 56)
        blocks = [tokenizer.decode(inputs.image_ids(n, processor.image_token_id))] if "image" in record else []
        assert blocks == [processor.replace_image_token({"num_patches": [5]}, 0)] * len(blocks)
        ref_ids, ref_labels = _official(record, tokenizer, blocks, SYSTEM)
        assert item["input_ids"].tolist() == ref_ids
        assert item["labels"].tolist() == ref_labels
        supervised = tokenizer.decode(item["input_ids"][item["labels"] != IGNORE_INDEX])
        assert supervised == "".join(f"{t['value']}<|im_end|>" for t in record["conversations"] if t["from"] == "gpt")


def test_lit_adds_the_instructions_never_system_headers_vision_tokens_or_template_sentences(family):
    model, processor, inputs, _ = family
    tokenizer = processor.tokenizer
    vit = _dataset(family, "vit")
    lit = _dataset(family, "lit", sentences=frozenset({TEMPLATE_SENTENCE}))
    vision = {tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS}
    for i, record in enumerate(RECORDS):
        ids, v, li = vit[i]["input_ids"], vit[i]["labels"], lit[i]["labels"]
        assert ((v != IGNORE_INDEX) <= (li != IGNORE_INDEX)).all()  # LIT adds to VIT, never removes
        supervised = tokenizer.decode(ids[li != IGNORE_INDEX])
        assert all(instruction in supervised for instruction in INSTRUCTIONS[record["id"]])
        assert TEMPLATE_SENTENCE not in supervised and SYSTEM not in supervised
        assert not any(header in supervised for header in ("<|im_start|>", "system", "user", "assistant"))
        assert not set(ids[li != IGNORE_INDEX].tolist()) & vision
        kinds = lit.examples[i].kinds
        assert (kinds == KIND_INDEX["template"]).any() and (kinds == KIND_INDEX["system"]).any()
    ids, labels, n = lit[0]["input_ids"], lit[0]["labels"], inputs.n_tokens(40, 56)
    start = ids.tolist().index(processor.start_image_token_id)
    assert ids[start : start + n].tolist() == inputs.image_ids(n, processor.image_token_id).tolist()
    assert (labels[start : start + n + 1] == IGNORE_INDEX).all()  # the block and the newline after it


def test_the_model_takes_the_batch_and_every_parameter_has_a_part(family):
    from lit.data.collate import Collator
    from lit.model.loading import apply_freeze
    from lit.model.parts import part_of

    model, processor, inputs, _ = family
    ds = _dataset(family, "lit")
    batch = Collator(processor.tokenizer.pad_token_id, inputs)([ds[0], ds[1]])
    assert batch["pixel_values"].shape == (5, 3, 16, 16)  # the image's 2 x 2 tiles and its thumbnail, no counts
    batch.pop("kind_counts")
    assert torch.isfinite(model(**batch).loss)
    parts = {name: part_of(name) for name, _ in model.named_parameters()}
    assert set(parts.values()) == {"vision", "projector", "lm"}
    assert all(p == "projector" for n, p in parts.items() if ".multi_modal_projector." in n)
    counts = apply_freeze(model, {"vision": True, "projector": False, "lm": True})
    assert counts["vision"] == counts["lm"] == 0 < counts["projector"]
    apply_freeze(model, {})


def test_auto_types_the_published_template_as_the_declared_one_and_the_saved_jinja_agrees(family):
    """``chat_template: auto`` on the published Jinja (``INTERNVL``, with the processor's ``<IMG_CONTEXT>`` and the
    model config's image token) derives the ``internvl`` template; the Jinja training saves from it derives back
    to the same ids and labels."""
    from chat_template_fixtures import INTERNVL

    from lit.mask.jinja_template import from_tokenizer, template_of
    from lit.model.chat_jinja import to_jinja

    model, processor, _, _ = family
    processor.chat_template = INTERNVL
    try:
        published = template_of(processor, model.config)
    finally:
        processor.chat_template = None
    assert replace(published, name="internvl") == get_template("internvl")
    assert published.system_prompt == "" and published.image_text == "<IMG_CONTEXT>\n"
    processor.chat_template = to_jinja(get_template("internvl"))  # what training saves: evaluation's `auto`
    try:
        derived = from_tokenizer(processor)
    finally:
        processor.chat_template = None
    records = [*RECORDS, TWO_IMAGES]
    for scope in ("vit", "lit"):
        ours = _dataset(family, scope, get_template("internvl"), records=records)
        back = _dataset(family, scope, derived, records=records)
        assert all(torch.equal(ours[i]["labels"], back[i]["labels"]) for i in range(len(records)))
        assert all(torch.equal(ours[i]["input_ids"], back[i]["input_ids"]) for i in range(len(records)))


def test_padding_free_batches_give_the_padded_loss(family):
    """``train.padding_free``: an image record and a text-only one packed into one row (per-record position ids)
    give the loss of the padded batch (the Qwen2 LM reads the records apart from the position ids)."""
    from lit.data.collate import Collator, PaddingFreeCollator
    from lit.train.padding_free import check_padding_free

    model, processor, inputs, _ = family
    check_padding_free(model.config)
    ds = _dataset(family, "lit")
    items = [ds[i] for i in range(len(RECORDS))]
    padded = Collator(processor.tokenizer.pad_token_id, inputs)(items)
    packed = PaddingFreeCollator(processor.tokenizer.pad_token_id, inputs)(items)
    for batch in (padded, packed):
        batch.pop("kind_counts")
    assert packed["input_ids"].shape[0] == 1 and padded["input_ids"].shape[0] == len(RECORDS)
    with torch.no_grad():
        assert torch.allclose(model(**padded).loss, model(**packed).loss, atol=1e-5)
        unmarked = {k: v for k, v in packed.items() if k != "position_ids"}  # the records would attend to each other
        assert not torch.allclose(model(**padded).loss, model(**unmarked).loss, atol=1e-5)


@pytest.mark.integration
def test_model_auto_trains_a_saved_internvl_under_zero3_and_lmms_eval_and_vc_score_it(tmp_path, demo_data):
    """``python train.py model=auto model.pretrained=DIR loss=lit`` on a saved tiny InternVL whose processor carries
    the published chat template (tests/tiny_runs.py ``train_auto_and_score``): the class, template and image
    processing come from DIR; ZeRO-3 on CPU; the checkpoint reloads without a video processor and with the PIL
    image processor, lmms-eval scores it (``chat_template=auto``: the template training saved) and VC runs on it."""
    from chat_template_fixtures import INTERNVL

    records = json.loads((demo_data / "train.json").read_text())
    model, processor = _tiny(_tokenizer(t["value"] for r in records for t in r["conversations"]))
    processor.chat_template = processor.tokenizer.chat_template = INTERNVL
    given = tmp_path / "given"
    model.save_pretrained(given)
    processor.save_pretrained(given)

    seen, loaded, loaded_processor = train_auto_and_score(given, tmp_path, demo_data)
    assert type(loaded).__name__ == "InternVLForConditionalGeneration"
    assert type(loaded_processor).__name__ == "InternVLNoVideoProcessor"
    assert type(loaded_processor.image_processor).__name__ == "GotOcr2ImageProcessorPil"
    assert loaded_processor.image_seq_length == processor.image_seq_length
    assert loaded_processor.image_token_id == loaded.config.image_token_id
