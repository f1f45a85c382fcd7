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

from dataclasses import replace

import pytest
import torch
from PIL import Image
from test_idefics3 import INSTRUCTIONS, TEMPLATE_SENTENCE, TWO_IMAGES  # RECORDS' instructions; 2 images in a turn
from test_qwen2_vl import RECORDS, SYSTEM  # a system prompt, two turns with an image, a text-only record
from tiny_runs import tiny_model, train_auto_and_score

from lit.constants import IGNORE_INDEX, KIND_INDEX
from lit.mask.chat_templates import get_template

VISION_TOKENS = ("<img>", "<IMG_CONTEXT>", "</img>")
NEVER_SUPERVISED = (TEMPLATE_SENTENCE, SYSTEM, "<|im_start|>", "system", "user", "assistant")  # under lit


def _tiny(tokenizer):
    """A tiny InternVL and its processor from conf/model/tiny_internvl.yaml, 32 wide."""
    return tiny_model("tiny_internvl", tokenizer)[:2]


def _tokenizer(texts):
    """The demo's BPE without a BOS, as the published InternVL3-hf (Qwen2) tokenizers add none."""
    from lit.mask.tokenizer import train_bpe

    tokenizer = train_bpe(list(texts) + ["user assistant system", SYSTEM] * 20, vocab_size=400)
    tokenizer._tokenizer.post_processor = None
    return tokenizer


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    from tiny_runs import write_noise_images

    from lit.model.families import image_inputs_for

    model, processor = _tiny(_tokenizer([t["value"] for r in RECORDS for t in r["conversations"]] * 20))
    root = write_noise_images(tmp_path_factory.mktemp("internvl_images"), {"a.png": (40, 56), "b.png": (16, 40)})
    return model, processor, image_inputs_for(model.config, processor), root


def _dataset(family, scope: str, template=None, sentences=frozenset(), records=RECORDS):
    from tiny_runs import supervised_dataset

    template = template or replace(get_template("internvl"), system_prompt=SYSTEM)
    return supervised_dataset(family, records, template, scope, sentences)


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
    from tiny_runs import assert_vit_supervises_the_answers_alone

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
    assert_vit_supervises_the_answers_alone(ds, RECORDS, tokenizer, "{}<|im_end|>")


def test_lit_adds_the_instructions_never_system_headers_vision_tokens_or_template_sentences(family):
    from tiny_runs import assert_lit_adds_the_instructions_alone

    model, processor, inputs, _ = family
    tokenizer = processor.tokenizer
    vit, lit = _dataset(family, "vit"), _dataset(family, "lit", sentences=frozenset({TEMPLATE_SENTENCE}))
    vision = {tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS}
    assert_lit_adds_the_instructions_alone(vit, lit, RECORDS, tokenizer, INSTRUCTIONS, NEVER_SUPERVISED, vision)
    for kinds in (example.kinds for example in lit.examples):
        assert (kinds == KIND_INDEX["template"]).any() and (kinds == KIND_INDEX["system"]).any()
    ids, labels, n = lit[0]["input_ids"], lit[0]["labels"], inputs.n_tokens(40, 56)
    start = ids.tolist().index(processor.start_image_token_id)
    assert ids[start : start + n].tolist() == inputs.image_ids(n, processor.image_token_id).tolist()
    assert (labels[start : start + n + 1] == IGNORE_INDEX).all()  # the block and the newline after it


def test_the_model_takes_the_batch_and_every_parameter_has_a_part(family):
    from tiny_runs import assert_parts_split_the_model_and_the_projector_trains_alone

    from lit.data.collate import Collator

    model, processor, inputs, _ = family
    ds = _dataset(family, "lit")
    batch = Collator(processor.tokenizer.pad_token_id, inputs)([ds[0], ds[1]])
    assert batch["pixel_values"].shape == (5, 3, 16, 16)  # the image's 2 x 2 tiles and its thumbnail, no counts
    batch.pop("kind_counts")
    assert torch.isfinite(model(**batch).loss)
    assert_parts_split_the_model_and_the_projector_trains_alone(model, (".multi_modal_projector.",))


def test_auto_types_the_published_template_as_the_declared_one_and_the_saved_jinja_agrees(family):
    """``chat_template: auto`` on the published Jinja (``INTERNVL``, with the processor's ``<IMG_CONTEXT>`` and the
    model config's image token) derives the ``internvl`` template; the Jinja training saves from it derives back
    to the same ids and labels."""
    from chat_template_fixtures import INTERNVL
    from tiny_runs import assert_same_ids_and_labels, template_read_back, template_typed_by_auto

    model, processor, _, _ = family
    published = template_typed_by_auto(processor, model.config, INTERNVL)
    assert replace(published, name="internvl") == get_template("internvl")
    assert published.system_prompt == "" and published.image_text == "<IMG_CONTEXT>\n"
    derived = template_read_back(processor, get_template("internvl"))  # what training saves: evaluation's `auto`
    records = [*RECORDS, TWO_IMAGES]
    for scope in ("vit", "lit"):
        ours = _dataset(family, scope, get_template("internvl"), records=records)
        assert_same_ids_and_labels(ours, _dataset(family, scope, derived, records=records))


def test_padding_free_batches_give_the_padded_loss(family):
    """``train.padding_free``: an image record and a text-only one packed into one row (per-record position ids)
    give the loss of the padded batch (the Qwen2 LM reads the records apart from the position ids)."""
    from tiny_runs import assert_padding_free_gives_the_padded_loss

    assert_padding_free_gives_the_padded_loss(family, _dataset(family, "lit"))


@pytest.mark.integration
def test_model_auto_trains_a_saved_internvl_under_zero3_and_lmms_eval_and_vc_score_it(tmp_path, demo_data):
    """``python train.py model=auto model.pretrained=DIR loss=lit`` on a saved tiny InternVL whose processor carries
    the published chat template (tests/tiny_runs.py ``train_auto_and_score``): the class, template and image
    processing come from DIR; ZeRO-3 on CPU; the checkpoint reloads without a video processor and with the PIL
    image processor, lmms-eval scores it (``chat_template=auto``: the template training saved) and VC runs on it."""
    from chat_template_fixtures import INTERNVL
    from tiny_runs import demo_turn_texts, save_as_published

    model, processor = _tiny(_tokenizer(demo_turn_texts(demo_data)))
    given = save_as_published(model, processor, tmp_path / "given", INTERNVL)

    seen, loaded, loaded_processor = train_auto_and_score(given, tmp_path, demo_data)
    assert type(loaded).__name__ == "InternVLForConditionalGeneration"
    assert type(loaded_processor).__name__ == "InternVLNoVideoProcessor"
    assert type(loaded_processor.image_processor).__name__ == "GotOcr2ImageProcessorPil"
    assert loaded_processor.image_seq_length == processor.image_seq_length
    assert loaded_processor.image_token_id == loaded.config.image_token_id
