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

import pytest
import torch
from PIL import Image
from test_idefics3 import (
    TWO_IMAGES,
    TWO_IMAGES_MESSAGES,
    _assert_ids_and_pixels_are_the_references,
    _assert_lit_labels,
    _dataset,
    _images,
    _tokenizer,
)
from test_qwen2_vl import RECORDS  # a system prompt, two turns with an image, a text-only record
from tiny_runs import tiny_model, train_auto_and_score
from transformers import SmolVLMProcessor

from lit.mask.chat_templates import get_template


def _tiny(tokenizer):
    """A tiny SmolVLM2 and its processor from conf/model/tiny_smolvlm.yaml (over tiny_idefics3.yaml), 32 wide."""
    return tiny_model("tiny_smolvlm", tokenizer)[:2]


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    from tiny_runs import write_noise_images

    from lit.model.families import image_inputs_for

    model, processor = _tiny(_tokenizer([t["value"] for r in RECORDS for t in r["conversations"]] * 20))
    root = write_noise_images(tmp_path_factory.mktemp("smolvlm_images"), {"a.png": (40, 56), "b.png": (32, 32)})
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

    model, processor, inputs, root = family
    _assert_ids_and_pixels_are_the_references(family)
    for height, width in [(40, 56), (32, 32), (10, 70), (70, 10), (8, 100), (64, 16)]:
        ref = processor(text="<image>", images=[Image.new("RGB", (width, height))], add_special_tokens=False)
        n = inputs.n_tokens(height, width)
        assert inputs.image_ids(n, processor.image_token_id).tolist() == ref["input_ids"][0]

    item = _dataset(family, "lit", records=[TWO_IMAGES])[0]
    # ProcessorMixin's apply_chat_template, with no video settings
    text = processor.apply_chat_template(TWO_IMAGES_MESSAGES, chat_template=SMOLVLM)
    ref = processor(text=text, images=_images(TWO_IMAGES, root), return_tensors="pt", add_special_tokens=False)
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
    from tiny_runs import (
        assert_parts_split_the_model_and_the_projector_trains_alone,
        assert_vit_supervises_the_answers_alone,
    )

    model, processor, _, _ = family
    vit = _dataset(family, "vit")
    assert_vit_supervises_the_answers_alone(vit, RECORDS, processor.tokenizer, " {}<end_of_utterance>")
    _assert_lit_labels(family)
    assert_parts_split_the_model_and_the_projector_trains_alone(model, (".connector.",))


def test_auto_types_smolvlm2s_published_template_as_the_idefics3_one(family):
    """Mirrors tests/model/test_idefics3.py's ``auto`` test: ``chat_template: auto`` on SmolVLM2's published Jinja
    (``SMOLVLM``) derives the ``idefics3`` template (``User:`` before an image, ``User: `` before text)."""
    from chat_template_fixtures import SMOLVLM
    from tiny_runs import template_typed_by_auto

    model, processor, _, _ = family
    published = template_typed_by_auto(processor, model.config, SMOLVLM)
    assert replace(published, name="idefics3") == get_template("idefics3")
    assert published.user_text != published.user


def test_padding_free_batches_give_the_padded_loss(family):
    """Mirrors tests/model/test_idefics3.py's: an image record and a text-only one packed into one row give the
    loss of the padded batch (the family is registered: ``check_padding_free`` finds it by ``smolvlm``)."""
    from tiny_runs import assert_padding_free_gives_the_padded_loss

    assert_padding_free_gives_the_padded_loss(family, _dataset(family, "lit"))


@pytest.mark.integration
def test_model_auto_trains_a_saved_smolvlm2_under_zero3_and_lmms_eval_and_vc_score_it(tmp_path, demo_data):
    """Mirrors tests/model/test_idefics3.py's round trip, with the template from the checkpoint itself:
    ``python train.py model=auto model.pretrained=DIR loss=lit`` on a saved tiny SmolVLM2 whose processor carries
    SmolVLM2's published chat template (``chat_template: auto`` types it); ZeRO-3 on CPU; the checkpoint reloads
    as SmolVLM2's classes with the video-less processor and the PIL image processor, lmms-eval scores it and VC
    runs on it."""
    from chat_template_fixtures import SMOLVLM
    from tiny_runs import demo_turn_texts, save_as_published

    model, processor = _tiny(_tokenizer(demo_turn_texts(demo_data)))
    given = save_as_published(model, processor, tmp_path / "given", SMOLVLM)

    seen, loaded, loaded_processor = train_auto_and_score(given, tmp_path, demo_data)
    assert type(loaded).__name__ == "SmolVLMForConditionalGeneration"
    assert type(loaded_processor).__name__ == "SmolVLMNoVideoProcessor"
    assert type(loaded_processor.image_processor).__name__ == "SmolVLMImageProcessorPil"
    assert loaded_processor.image_seq_len == processor.image_seq_len
