"""Idefics3 / SmolVLM as a model family (lit/model/families/idefics3.py): the image-token layout against
``Idefics3Processor``, labels, training under ZeRO-3, reload, lmms-eval and VC on a tiny model built from
``Idefics3Config`` with transformers' PIL image processor (no torchvision).

The reference for the ids is transformers' own: ``Idefics3Processor`` (``processing_idefics3.py``, the tiles'
``<fake_token_around_image><row_r_col_c>`` + ``<image>`` x image_seq_len, the rows' newlines, the global view)
applied to the text that SmolVLM's published chat template writes (tests/chat_template_fixtures.py ``SMOLVLM``) for
the same conversation, unchanged: ``User:<image>text`` for a turn that opens with the image, ``User: text`` for a
text-only one (the ``idefics3`` template's ``user`` and ``user_text``, lit/mask/chat_templates.py). ``chat_template:
auto`` derives that template from the published Jinja; the name ``idefics3`` and a YAML file declare it.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from test_qwen2_vl import RECORDS, SYSTEM  # a system prompt, two turns with an image, a text-only record
from tiny_runs import tiny_model, train_auto_and_score

from lit.constants import IGNORE_INDEX, KIND_INDEX
from lit.mask.chat_templates import get_template

TEMPLATE_SENTENCE = "Answer briefly."
INSTRUCTIONS = {"img-multi": ["What colour is the square?", "And how many circles are there?"], "text-only": ["Name"]}
NEVER_SUPERVISED = (TEMPLATE_SENTENCE, SYSTEM, "System", "User", "Assistant:")  # under lit: besides the image blocks
TWO_IMAGES = {
    "id": "two-images",
    "image": ["a.png", "b.png"],
    "conversations": [
        {"from": "human", "value": "<image>\n<image>\nAre the two pictures alike?"},
        {"from": "gpt", "value": "No."},
    ],
}
# TWO_IMAGES as SmolVLM's processor takes it: the items in the record's order, a system message
TWO_IMAGES_MESSAGES = [
    {"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
    {
        "role": "user",
        "content": [
            {"type": "image"},
            {"type": "text", "text": "\n"},
            {"type": "image"},
            {"type": "text", "text": "\nAre the two pictures alike?"},
        ],
    },
    {"role": "assistant", "content": [{"type": "text", "text": "No."}]},
]
# what the YAML route declares for a checkpoint whose Jinja template cannot be typed: the idefics3 template
IDEFICS3_YAML = """\
name: smolvlm
system: [["System:", role], [" ", format], ["{system}", system], ["<end_of_utterance>", format], ["\\n", format]]
user: [["User:", role], ["{content}", content], ["<end_of_utterance>", format], ["\\n", format]]
user_text: [["User:", role], [" ", format], ["{content}", content], ["<end_of_utterance>", format], ["\\n", format]]
assistant:
  - ["Assistant:", role]
  - [" ", response]
  - ["{content}", content]
  - ["<end_of_utterance>", eos]
  - ["\\n", format]
generation_prompt: [["Assistant:", role]]
eos: "<end_of_utterance>"
image_sep: ""
"""


def _tiny(tokenizer, **overrides):
    """A tiny Idefics3 and its processor from conf/model/tiny_idefics3.yaml, 32 wide."""
    return tiny_model("tiny_idefics3", tokenizer, "idefics3", **overrides)[:2]


def _tokenizer(texts):
    """The demo's BPE with SmolVLM's BOS, ``<|im_start|>``, which its published template writes first."""
    from tokenizers import processors

    from lit.mask.tokenizer import train_bpe

    tokenizer = train_bpe(list(texts) + ["User: Assistant: System:", SYSTEM] * 20, vocab_size=400)
    tokenizer.add_special_tokens({"bos_token": "<|im_start|>"})
    bos = [("<|im_start|>", tokenizer.bos_token_id)]
    tokenizer._tokenizer.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|im_start|> $A", special_tokens=bos),
        ]
    )
    return tokenizer


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    from tiny_runs import write_noise_images

    from lit.model.families import image_inputs_for

    model, processor = _tiny(_tokenizer([t["value"] for r in RECORDS for t in r["conversations"]] * 20))
    root = write_noise_images(tmp_path_factory.mktemp("idefics3_images"), {"a.png": (40, 56)})
    return model, processor, image_inputs_for(model.config, processor), root


def _dataset(family, scope: str, template=None, sentences=frozenset(), records=RECORDS):
    from tiny_runs import supervised_dataset

    template = template or replace(get_template("idefics3"), system_prompt=SYSTEM)
    return supervised_dataset(family, records, template, scope, sentences)


def _vision_ids(tokenizer) -> set[int]:
    """The ids of the image blocks' tokens: the tags, the global view's, the image token, the tiles' positions."""
    vision = {tokenizer.convert_tokens_to_ids(t) for t in ("<fake_token_around_image>", "<global-img>", "<image>")}
    return vision | {tokenizer.convert_tokens_to_ids(f"<row_{r}_col_{c}>") for r in (1, 2) for c in (1, 2)}


def _messages(record: dict) -> list[dict]:
    """The record as the chat messages SmolVLM's processor takes: the image first in its turn, a system message."""
    out = [{"role": "system", "content": [{"type": "text", "text": SYSTEM}]}]
    for turn in record["conversations"]:
        text = turn["value"].replace("<image>", "").strip()
        content = ([{"type": "image"}] if "<image>" in turn["value"] else []) + [{"type": "text", "text": text}]
        out.append({"role": "user" if turn["from"] == "human" else "assistant", "content": content})
    return out


def _reference(record: dict, processor, root) -> dict:
    """``Idefics3Processor`` on SmolVLM's published template's text for ``record``, tokenized as
    ``apply_chat_template`` tokenizes it (no special tokens added: the text starts with the BOS)."""
    from chat_template_fixtures import SMOLVLM
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    text = ImmutableSandboxedEnvironment().from_string(SMOLVLM).render(messages=_messages(record))
    return processor(text=text, images=_images(record, root), return_tensors="pt", add_special_tokens=False)


def _images(record: dict, root) -> list | None:
    """The record's images, in its order, as the processor takes them (``None`` for a text-only record)."""
    names = record.get("image", [])
    return [Image.open(root / name).convert("RGB") for name in ([names] if isinstance(names, str) else names)] or None


def _assert_ids_and_pixels_are_the_references(family):
    """Each of RECORDS' ids under ``vit`` are ``_reference``'s (the family's processor on SmolVLM's published
    template's text), and an image record's pixels and pixel attention mask too."""
    model, processor, inputs, root = family
    ds = _dataset(family, "vit")
    for i, record in enumerate(RECORDS):
        item, ref = ds[i], _reference(record, processor, root)
        assert item["input_ids"].tolist() == ref["input_ids"][0].tolist()
        if "image" in record:
            batch = inputs.collate([item["image"]])
            assert torch.equal(batch["pixel_values"], ref["pixel_values"])
            assert torch.equal(batch["pixel_attention_mask"], ref["pixel_attention_mask"].bool())


def _assert_lit_labels(family):
    """``lit`` over ``vit`` on RECORDS: the instructions added, never the system prompt, headers, template sentences
    or the image blocks (tags, tile positions, the rows' newlines, image tokens); the template sentence and the system
    prompt have kinds of their own."""
    from tiny_runs import assert_lit_adds_the_instructions_alone

    model, processor, inputs, _ = family
    tokenizer = processor.tokenizer
    vit, lit = _dataset(family, "vit"), _dataset(family, "lit", sentences=frozenset({TEMPLATE_SENTENCE}))
    never, vision = NEVER_SUPERVISED, _vision_ids(tokenizer)
    assert_lit_adds_the_instructions_alone(vit, lit, RECORDS, tokenizer, INSTRUCTIONS, never, vision)
    for kinds in (example.kinds for example in lit.examples):
        assert (kinds == KIND_INDEX["template"]).any() and (kinds == KIND_INDEX["system"]).any()
    ids, labels, n = lit[0]["input_ids"], lit[0]["labels"], inputs.n_tokens(40, 56)
    start = ids.tolist().index(tokenizer.convert_tokens_to_ids("<fake_token_around_image>"))
    assert ids[start : start + n].tolist() == inputs.image_ids(n, processor.image_token_id).tolist()
    assert (labels[start : start + n] == IGNORE_INDEX).all()  # the rows' newlines in the block too


def test_ids_and_pixels_are_idefics3_processors_for_smolvlms_published_template(family):
    _, processor, inputs, _ = family
    _assert_ids_and_pixels_are_the_references(family)
    tiles = [(r, c) for r, c in inputs.layouts if r]  # every grid's count is the processor's own formula
    assert all(
        inputs.n_tokens(h, w) == processor._get_num_multimodal_tokens(image_sizes=[(h, w)]).num_image_tokens[0]
        for h, w in [(40, 56), (32, 32), (10, 70), (70, 10), (8, 100)]
    )
    assert len(tiles) == 36 and len(inputs.by_count) == 37  # each count stands for one grid


def test_an_image_that_is_not_split_is_its_global_view_alone(family):
    model, processor = _tiny(family[1].tokenizer, do_image_splitting=False)
    from lit.model.families import image_inputs_for

    inputs = image_inputs_for(model.config, processor)
    img = Image.open(family[3] / "a.png").convert("RGB")
    ref = processor(text="User:<image>What colour?", images=[img], return_tensors="pt")
    n = inputs.n_tokens(img.height, img.width)
    assert n == processor.image_seq_len + 3 and inputs.grid(img.height, img.width) == (0, 0)
    ids = ref["input_ids"][0].tolist()
    start = ids.index(processor.fake_image_token_id)
    assert ids[start : start + n] == inputs.image_ids(n, processor.image_token_id).tolist()
    assert inputs.pixels(img)["pixel_values"].shape == (1, 3, 16, 16)


def test_vit_supervises_only_the_answers_and_their_end_of_utterance(family):
    from tiny_runs import assert_vit_supervises_the_answers_alone

    vit = _dataset(family, "vit")
    assert_vit_supervises_the_answers_alone(vit, RECORDS, family[1].tokenizer, " {}<end_of_utterance>")


def test_lit_adds_the_instructions_never_system_headers_vision_tokens_or_template_sentences(family):
    _assert_lit_labels(family)


def test_the_model_takes_the_batch_and_every_parameter_has_a_part(family):
    from tiny_runs import assert_parts_split_the_model_and_the_projector_trains_alone

    from lit.data.collate import Collator

    model, processor, inputs, _ = family
    ds = _dataset(family, "lit")
    batch = Collator(processor.tokenizer.pad_token_id, inputs)([ds[0], ds[1]])
    assert batch["pixel_values"].shape == (1, 5, 3, 16, 16)  # the image's 2 x 2 tiles and its global view
    batch.pop("kind_counts")
    out = model(**batch)
    assert torch.isfinite(out.loss)
    assert_parts_split_the_model_and_the_projector_trains_alone(model, (".connector.",))


def test_auto_types_the_published_template_as_the_declared_one_and_the_yaml_route_and_saved_jinja_agree(
    family, tmp_path
):
    """``chat_template: auto`` on SmolVLM's published Jinja (tests/chat_template_fixtures.py ``SMOLVLM``) derives the
    ``idefics3`` template: ``User:`` before an image, ``User: `` before text (``user`` / ``user_text``). The YAML
    file declaring it is the same template, and the Jinja training saves from it derives back to the same labels."""
    from chat_template_fixtures import SMOLVLM
    from tiny_runs import assert_same_ids_and_labels, template_read_back, template_typed_by_auto

    model, processor, _, _ = family
    published = template_typed_by_auto(processor, model.config, SMOLVLM)
    assert replace(published, name="idefics3") == get_template("idefics3")
    assert published.user_text != published.user
    path = tmp_path / "smolvlm.yaml"
    path.write_text(IDEFICS3_YAML)
    declared = get_template(str(path))
    assert replace(declared, name="idefics3") == get_template("idefics3")
    derived = template_read_back(processor, declared)  # what training saves: evaluation's `auto` reads it back
    for scope in ("vit", "lit"):
        assert_same_ids_and_labels(_dataset(family, scope, declared), _dataset(family, scope, derived))


@pytest.mark.integration
def test_model_auto_trains_a_saved_idefics3_with_a_yaml_template_under_zero3_and_lmms_eval_and_vc_score_it(
    tmp_path, demo_data
):
    """``python train.py model=auto model.pretrained=DIR model.chat_template=T.yaml loss=lit`` on a saved tiny
    Idefics3 whose processor carries SmolVLM's published chat template: the class and image processing come from
    DIR, the template from the YAML file that declares it; ZeRO-3 on CPU; the checkpoint reloads with the PIL
    image processor, lmms-eval scores it (``chat_template=auto``: the template training saved) and VC runs on it."""
    from chat_template_fixtures import SMOLVLM
    from tiny_runs import demo_turn_texts, save_as_published

    model, processor = _tiny(_tokenizer(demo_turn_texts(demo_data)))
    given = save_as_published(model, processor, tmp_path / "given", SMOLVLM)
    template = tmp_path / "smolvlm.yaml"
    template.write_text(IDEFICS3_YAML)

    seen, loaded, loaded_processor = train_auto_and_score(given, tmp_path, demo_data, f"model.chat_template={template}")
    assert type(loaded).__name__ == "Idefics3ForConditionalGeneration"
    assert type(loaded_processor.image_processor).__name__ == "Idefics3ImageProcessorPil"
    assert loaded_processor.image_seq_len == processor.image_seq_len


def test_a_record_with_two_images_is_idefics3_processors_and_the_model_reads_it(family):
    """Two images in one turn (one ``<image>`` marker each, a multi-image record): the ids and pixels equal
    ``Idefics3Processor``'s for the published template's text of the same items in the same order, the image blocks
    are never supervised under ``lit``, and the model's forward reads every image's tiles (finite loss)."""
    from chat_template_fixtures import SMOLVLM
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from lit.data.collate import Collator

    model, processor, inputs, root = family
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "b.png")
    ds = _dataset(family, "lit", records=[TWO_IMAGES])
    text = ImmutableSandboxedEnvironment().from_string(SMOLVLM).render(messages=TWO_IMAGES_MESSAGES)
    ref = processor(text=text, images=_images(TWO_IMAGES, root), return_tensors="pt", add_special_tokens=False)
    item = ds[0]
    assert item["input_ids"].tolist() == ref["input_ids"][0].tolist()
    batch = Collator(processor.tokenizer.pad_token_id, inputs)([item])
    assert torch.equal(batch["pixel_values"], ref["pixel_values"])
    supervised = ds.examples[0].kinds[ds.examples[0].labels != IGNORE_INDEX]
    assert KIND_INDEX["image"] not in supervised.tolist() and KIND_INDEX["instruction"] in supervised.tolist()
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)


def test_padding_free_batches_give_the_padded_loss(family):
    """``train.padding_free``: an image record and a text-only one packed into one row (per-record position ids)
    give the loss of the padded batch."""
    from tiny_runs import assert_padding_free_gives_the_padded_loss

    assert_padding_free_gives_the_padded_loss(family, _dataset(family, "lit"))
