"""``data.too_long=truncate`` cuts an item to exactly ``max_length`` positions (image expanded), never more; a
record whose image cannot fit is an error naming it, or with ``on_invalid=skip`` a skip counted as ``too long``.

The 576 image positions and ``max_length`` 512 of the over-long case are LLaVA-1.5's CLIP-L/336 grid (24 x 24
patches, ``llava/model/multimodal_encoder/clip_encoder.py`` lines 87-88, ``num_patches``) against a short context."""

from __future__ import annotations

import pytest
from PIL import Image

from lit.data.dataset import SupervisedDataset
from lit.data.image_inputs import ImageInputs
from lit.data.labels import LabelSpec
from lit.mask.chat_templates import get_template
from lit.mask.scopes import get_scope
from lit.model.loading import _image_processor
from lit.records import RecordError


@pytest.fixture
def image_root(tmp_path):
    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp_path / "x.png")
    return tmp_path


def _record(rid, question, answer, image=True):
    record = {
        "id": rid,
        "conversations": [
            {"from": "human", "value": ("<image>\n" if image else "") + question},
            {"from": "gpt", "value": answer},
        ],
    }
    if image:
        record["image"] = "x.png"
    return record


def _dataset(records, tokenizer, root, n_image, max_length, on_invalid="raise", allow_empty=False):
    spec = LabelSpec(
        get_template("vicuna_v1"),
        get_scope("vit"),
        max_length,
        too_long="truncate",
        on_invalid=on_invalid,
        image_root=root,
    )
    return SupervisedDataset(
        records, spec, tokenizer, ImageInputs(_image_processor(32), n_image), progress=False, allow_empty=allow_empty
    )


LONG_ANSWER = "A green triangle in the top left and a yellow circle in the bottom right. " * 6


def test_items_never_exceed_max_length_and_truncated_ones_fill_it(llama_tokenizer, image_root):
    records = [
        _record("image-long", "Describe the image briefly.", LONG_ANSWER),
        _record("text-long", "Describe the image briefly.", LONG_ANSWER, image=False),
        _record("short", "What color is the circle?", "red"),
    ]
    full = _dataset(records, llama_tokenizer, image_root, n_image=16, max_length=100_000)
    lengths = dict(zip((e.record_id for e in full.examples), full.lengths()))
    first_image = int((full.examples[0].input_ids == full.image_token_id).nonzero()[0][0]) + 16
    seen_cut = set()
    for max_length in range(first_image + 1, max(lengths.values()) + 2, 7):
        ds = _dataset(
            records, llama_tokenizer, image_root, n_image=16, max_length=max_length, on_invalid="skip", allow_empty=True
        )
        assert all(s["reason"].startswith("no supervised tokens") for s in ds.audit.skipped)  # answer cut away
        for i, example in enumerate(ds.examples):
            item = ds[i]
            n = len(item["input_ids"])
            assert n == len(item["labels"]) == ds.lengths()[i] <= max_length
            cut = example.record_id in ds.audit.truncated
            assert cut == (lengths[example.record_id] > max_length) and (
                n == max_length if cut else n == lengths[example.record_id]
            )
            seen_cut |= {example.record_id} if cut else set()
    assert {"image-long", "text-long"} <= seen_cut


def test_an_image_that_cannot_fit_is_an_error_naming_the_record_or_a_counted_skip(llama_tokenizer, image_root):
    records = [
        _record("does-not-fit", "What color is the circle?", "red"),
        _record("long-does-not-fit", "Describe the image briefly.", LONG_ANSWER),  # a cut point of -63 keeps it
        _record("text", "What color is the circle?", "red", image=False),
    ]
    with pytest.raises(RecordError, match="does-not-fit.*too long: the image \\(576 positions.*max_length 512"):
        _dataset(records, llama_tokenizer, image_root, n_image=576, max_length=512)
    ds = _dataset(records, llama_tokenizer, image_root, n_image=576, max_length=512, on_invalid="skip")
    assert [e.record_id for e in ds.examples] == ["text"]
    report = ds.audit.to_json()
    assert report["skipped_by_reason"] == {"too long": 2}
    assert [s["id"] for s in report["skipped"]] == ["does-not-fit", "long-does-not-fit"]
    assert report["n_truncated"] == 0


def test_the_image_must_fit_after_the_text_before_it(llama_tokenizer, image_root):
    """The image sits after the system prompt: a max_length above the image's positions but below the text in
    front of it plus the image cannot hold it either."""
    record = _record("late-image", "What color is the circle?", "red")
    ds = _dataset([record], llama_tokenizer, image_root, n_image=16, max_length=400)
    before = int((ds.examples[0].input_ids == ds.image_token_id).nonzero()[0][0])
    with pytest.raises(RecordError, match="late-image.*the image .16 positions after"):
        _dataset([record], llama_tokenizer, image_root, n_image=16, max_length=before + 15)
    with pytest.raises(RecordError, match="late-image.*no supervised tokens"):  # the image fits, no answer does
        _dataset([record], llama_tokenizer, image_root, n_image=16, max_length=before + 16)
