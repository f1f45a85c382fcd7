"""SmolVLM2 as a model family (``model_type: smolvlm``, lit/model/families/idefics3.py ``FAMILY_SMOLVLM``): the
image-token layout against transformers' ``SmolVLMProcessor`` (built without its video processor), labels,
``chat_template: auto`` and training under ZeRO-3, reload, lmms-eval and VC on a tiny
``SmolVLMForConditionalGeneration`` (conf/model/tiny_smolvlm.yaml: tiny_idefics3's sizes) with the PIL image
processor (no torchvision).

The reference for the ids is transformers' own: ``SmolVLMProcessor`` (``models/smolvlm/processing_smolvlm.py``,
``replace_image_token`` / ``get_image_prompt_string``: the tiles' ``<fake_token_around_image><row_r_col_c>`` +
``<image>`` x image_seq_len, the rows' newlines, the ``<global-img>`` view) applied to the text that SmolVLM2's
published chat template writes (tests/chat_template_fixtures.py ``SMOLVLM``, read from transformers'
tests/models/smolvlm/test_processor_smolvlm.py) for the same conversation. The helpers are test_idefics3.py's:
the layout and template are Idefics3's, only the classes differ.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from test_idefics3 import INSTRUCTIONS, TEMPLATE_SENTENCE, _dataset, _reference, _tokenizer
from test_qwen2_vl import RECORDS, SYSTEM  # a system prompt, two turns with an image, a text-only record
from tiny_runs import tiny_model, train_auto_and_score
from transformers import SmolVLMProcessor

from lit.constants import IGNORE_INDEX, KIND_INDEX
from lit.mask.chat_templates import get_template

TWO_IMAGES = {
    "id": "two-images",
    "image": ["a.png", "b.png"],
    "conversations": [
        {"from": "human", "value": "<image>\n<image>\nAre the two pictures alike?"},
        {"from": "gpt", "value": "No."},
    ],
}


def _tiny(tokenizer):
    """A tiny SmolVLM2 and its processor from conf/model/tiny_smolvlm.yaml (over tiny_idefics3.yaml), 32 wide."""
    return tiny_model("tiny_smolvlm", tokenizer)[:2]


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    from lit.model.families import image_inputs_for

    model, processor = _tiny(_tokenizer([t["value"] for r in RECORDS for t in r["conversations"]] * 20))
    root = tmp_path_factory.mktemp("smolvlm_images")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(root / "a.png")
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "b.png")
    return model, processor, image_inputs_for(model.config, processor), root


def test_the_tiny_model_is_smolvlm2s_classes_without_a_video_processor(family):
    model, processor, _, _ = family
    assert type(model).__name__ == "SmolVLMForConditionalGeneration" and model.config.model_type == "smolvlm"
    assert type(processor.image_processor).__name__ == "SmolVLMImageProcessorPil"
    assert isinstance(processor, SmolVLMProcessor)
    assert not hasattr(processor, "video_processor")


def test_ids_and_pixels_are_smolvlm_processors_for_the_published_template(family):
    """Mirrors transformers tests/models/smolvlm/test_processor_smolvlm.py (the processor on the published
    template's text) and tests/model/test_idefics3.py's test of the ids: each record's ids and pixels are the
    video-less ``SmolVLMProcessor``'s for ``SMOLVLM``'s text, a two-image record's too, and every image's count and
    ids are those the processor writes for an image of that size (it has no ``_get_num_multimodal_tokens``)."""
    from chat_template_fixtures import SMOLVLM

    from lit.data.collate import Collator
    from lit.data.dataset import SupervisedDataset
    from lit.data.labels import LabelSpec
    from lit.mask.scopes import get_scope

    model, processor, inputs, root = family
    ds = _dataset(family, "vit")
    for i, record in enumerate(RECORDS):
        item, ref = ds[i], _reference(record, processor, root)
        assert item["input_ids"].tolist() == ref["input_ids"][0].tolist()
        if "image" in record:
            batch = inputs.collate([item["image"]])
            assert torch.equal(batch["pixel_values"], ref["pixel_values"])
            assert torch.equal(batch["pixel_attention_mask"], ref["pixel_attention_mask"].bool())
    for height, width in [(40, 56), (32, 32), (10, 70), (70, 10), (8, 100), (64, 16)]:
        ref = processor(text="<image>", images=[Image.new("RGB", (width, height))], add_special_tokens=False)
        n = inputs.n_tokens(height, width)
        assert inputs.image_ids(n, processor.image_token_id).tolist() == ref["input_ids"][0]

    template = replace(get_template("idefics3"), system_prompt=SYSTEM)
    spec = LabelSpec(template, get_scope("lit"), 1024, image_root=root)
    item = SupervisedDataset([TWO_IMAGES], spec, processor.tokenizer, inputs, progress=False)[0]
    user = [{"type": "image"}, {"type": "text", "text": "\n"}, {"type": "image"}]  # the record's order
    user.append({"type": "text", "text": "\nAre the two pictures alike?"})
    messages = [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
        {"role": "user", "content": user},
        {"role": "assistant", "content": [{"type": "text", "text": "No."}]},
    ]
    text = processor.apply_chat_template(messages, chat_template=SMOLVLM)  # ProcessorMixin's, no video settings
    images = [Image.open(root / name).convert("RGB") for name in TWO_IMAGES["image"]]
    ref = processor(text=text, images=images, return_tensors="pt", add_special_tokens=False)
    assert item["input_ids"].tolist() == ref["input_ids"][0].tolist()
    batch = Collator(processor.tokenizer.pad_token_id, inputs)([item])
    assert torch.equal(batch["pixel_values"], ref["pixel_values"])
    assert batch["pixel_values"].shape == (1, 10, 3, 16, 16)  # each image's 2 x 2 tiles and its global view
    batch.pop("kind_counts")
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)


def test_vit_and_lit_labels_and_every_parameter_has_a_part(family):
    """Mirrors tests/model/test_idefics3.py's label and parts tests: ``vit`` supervises the answers and their
    ``<end_of_utterance>`` only; ``lit`` adds the instructions, never the system prompt, headers, the image blocks
    (tags, newlines, image tokens) or template sentences; SmolVLM's modules are Idefics3's parts."""
    from lit.model.loading import apply_freeze
    from lit.model.parts import part_of

    model, processor, inputs, _ = family
    tokenizer = processor.tokenizer
    vit = _dataset(family, "vit")
    lit = _dataset(family, "lit", sentences=frozenset({TEMPLATE_SENTENCE}))
    vision = {tokenizer.convert_tokens_to_ids(t) for t in ("<fake_token_around_image>", "<global-img>", "<image>")}
    vision |= {tokenizer.convert_tokens_to_ids(f"<row_{r}_col_{c}>") for r in (1, 2) for c in (1, 2)}
    for i, record in enumerate(RECORDS):
        ids, v, li = vit[i]["input_ids"], vit[i]["labels"], lit[i]["labels"]
        answers = [t["value"] for t in record["conversations"] if t["from"] == "gpt"]
        assert tokenizer.decode(ids[v != IGNORE_INDEX]) == "".join(f" {a}<end_of_utterance>" for a in answers)
        assert ((v != IGNORE_INDEX) <= (li != IGNORE_INDEX)).all()  # LIT adds to VIT, never removes
        supervised = tokenizer.decode(ids[li != IGNORE_INDEX])
        assert all(instruction in supervised for instruction in INSTRUCTIONS[record["id"]])
        assert TEMPLATE_SENTENCE not in supervised and SYSTEM not in supervised
        assert not any(header in supervised for header in ("System", "User", "Assistant:"))
        assert not set(ids[li != IGNORE_INDEX].tolist()) & vision
        kinds = lit.examples[i].kinds
        assert (kinds == KIND_INDEX["template"]).any() and (kinds == KIND_INDEX["system"]).any()
    ids, labels, n = lit[0]["input_ids"], lit[0]["labels"], inputs.n_tokens(40, 56)
    start = ids.tolist().index(tokenizer.convert_tokens_to_ids("<fake_token_around_image>"))
    assert ids[start : start + n].tolist() == inputs.image_ids(n, processor.image_token_id).tolist()
    assert (labels[start : start + n] == IGNORE_INDEX).all()  # the rows' newlines in the block too

    parts = {name: part_of(name) for name, _ in model.named_parameters()}
    assert set(parts.values()) == {"vision", "projector", "lm"}
    assert all(p == "projector" for n, p in parts.items() if ".connector." in n)
    counts = apply_freeze(model, {"vision": True, "projector": False, "lm": True})
    assert counts["vision"] == counts["lm"] == 0 < counts["projector"]
    apply_freeze(model, {})


def test_auto_types_smolvlm2s_published_template_as_the_idefics3_one(family):
    """Mirrors tests/model/test_idefics3.py's ``auto`` test: ``chat_template: auto`` on SmolVLM2's published Jinja
    (``SMOLVLM``) derives the ``idefics3`` template (``User:`` before an image, ``User: `` before text)."""
    from chat_template_fixtures import SMOLVLM

    from lit.mask.jinja_template import template_of

    model, processor, _, _ = family
    processor.chat_template = SMOLVLM
    try:
        published = template_of(processor, model.config)
    finally:
        processor.chat_template = None
    assert replace(published, name="idefics3") == get_template("idefics3")
    assert published.user_text != published.user


def test_padding_free_batches_give_the_padded_loss(family):
    """Mirrors tests/model/test_idefics3.py's: an image record and a text-only one packed into one row give the
    loss of the padded batch (the family is registered: ``check_padding_free`` finds it by ``smolvlm``)."""
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
    with torch.no_grad():
        assert torch.allclose(model(**padded).loss, model(**packed).loss, atol=1e-5)


@pytest.mark.integration
def test_model_auto_trains_a_saved_smolvlm2_under_zero3_and_lmms_eval_and_vc_score_it(tmp_path, demo_data):
    """Mirrors tests/model/test_idefics3.py's round trip, with the template from the checkpoint itself:
    ``python train.py model=auto model.pretrained=DIR loss=lit`` on a saved tiny SmolVLM2 whose processor carries
    SmolVLM2's published chat template (``chat_template: auto`` types it); ZeRO-3 on CPU; the checkpoint reloads
    as SmolVLM2's classes with the video-less processor and the PIL image processor, lmms-eval scores it and VC
    runs on it."""
    import json

    from chat_template_fixtures import SMOLVLM

    records = json.loads((demo_data / "train.json").read_text())
    model, processor = _tiny(_tokenizer(t["value"] for r in records for t in r["conversations"]))
    processor.chat_template = processor.tokenizer.chat_template = SMOLVLM
    given = tmp_path / "given"
    model.save_pretrained(given)
    processor.save_pretrained(given)

    seen, loaded, loaded_processor = train_auto_and_score(given, tmp_path, demo_data)
    assert type(loaded).__name__ == "SmolVLMForConditionalGeneration"
    assert type(loaded_processor).__name__ == "SmolVLMNoVideoProcessor"
    assert type(loaded_processor.image_processor).__name__ == "SmolVLMImageProcessorPil"
    assert loaded_processor.image_seq_len == processor.image_seq_len
