"""Multi-image and interleaved records (``"image": [...]``, one ``<image>`` marker per picture): rendering, counts,
labels, batches and the model's forward for every family that takes several images (LLaVA, LLaVA-NeXT, Qwen2-VL;
LLaVA-OneVision in tests/model/test_llava_onevision.py), InstructBLIP's refusal, and the label cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from tiny_runs import CONF

from lit.constants import IGNORE_INDEX, IMAGE_MARKER, KIND_INDEX
from lit.data.collate import Collator, PaddingFreeCollator
from lit.data.dataset import SupervisedDataset
from lit.data.labels import LabelSpec
from lit.mask.chat_templates import get_template
from lit.mask.render import render
from lit.mask.scopes import get_scope
from lit.records import RecordError

TWO = {
    "id": "two-images",
    "image": ["a.png", "b.png"],
    "conversations": [
        {"from": "human", "value": "<image>\n<image>\nWhich picture is brighter?"},
        {"from": "gpt", "value": "The first."},
        {"from": "human", "value": "And is the second one wider?"},
        {"from": "gpt", "value": "Yes."},
    ],
}
INTERLEAVED = {
    "id": "interleaved",
    "image": ["b.png", "a.png", "c.png"],
    "conversations": [
        {"from": "human", "value": "Picture 1: <image>\nPicture 2: <image>\nWhat differs?"},
        {"from": "gpt", "value": "The colour."},
        {"from": "human", "value": "<image>\nAnd this one?"},
        {"from": "gpt", "value": "It is red."},
    ],
}
ONE = {
    "id": "one-image",
    "image": "a.png",
    "conversations": [{"from": "human", "value": "<image>\nWhat colour is it?"}, {"from": "gpt", "value": "Red."}],
}
TEXT = {
    "id": "text-only",
    "conversations": [{"from": "human", "value": "Name a colour."}, {"from": "gpt", "value": "Blue."}],
}
RECORDS = [TWO, INTERLEAVED, ONE, TEXT]


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi_images")
    rng = np.random.default_rng(0)
    for name, (h, w) in {"a.png": (40, 56), "b.png": (32, 32), "c.png": (70, 30)}.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / name)
    return root


def _tiny(arch: str, tokenizer, template: str):
    from lit.mask.tokenizer import prepare_tokenizer
    from lit.model.families import image_inputs_for
    from lit.model.loading import compose_tiny

    name = {"llava_next": "tiny_next", "qwen2_vl": "tiny_qwen2_vl", "qwen2_5_vl": "tiny_qwen2_vl"}
    name["instructblip"] = "tiny_iblip"
    cfg = OmegaConf.load(CONF / "model" / "tiny.yaml")
    if arch != "llava":
        cfg = OmegaConf.merge(cfg, OmegaConf.load(CONF / "model" / f"{name[arch]}.yaml"))
        cfg.arch = arch  # tiny_qwen2_5_vl is tiny_qwen2_vl's sizes in Qwen2.5-VL's class
    cfg.text.hidden_size = cfg.vision.hidden_size = 32
    if not arch.startswith("qwen"):
        cfg.text.num_attention_heads = cfg.text.num_key_value_heads = 4
    prepare_tokenizer(tokenizer, get_template(template))
    model, processor = compose_tiny(cfg, tokenizer)
    return model.eval(), processor, image_inputs_for(model.config, processor)


@pytest.fixture(scope="module", params=["llava", "llava_next", "qwen2_vl", "qwen2_5_vl"])
def family(request):
    from lit.mask.tokenizer import train_bpe

    texts = [t["value"] for r in RECORDS for t in r["conversations"]] * 20 + ["You are a helpful assistant."] * 20
    tokenizer = train_bpe(texts, vocab_size=400)
    qwen = request.param.startswith("qwen")
    template = "qwen2_vl" if qwen else "vicuna_v1"
    if qwen:
        tokenizer._tokenizer.post_processor = None  # no BOS, as Qwen's tokenizers
    return (request.param, template, *_tiny(request.param, tokenizer, template))


def _dataset(family, image_root, scope="lit", records=RECORDS, **kw):
    _, template, _, processor, inputs = family
    spec = LabelSpec(get_template(template), get_scope(scope), 1024, image_root=image_root, **kw)
    return SupervisedDataset(records, spec, processor.tokenizer, inputs, progress=False)


def _runs(ids: np.ndarray, member: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of each run of positions where ``member`` holds."""
    edges = np.diff(np.r_[0, member.astype(np.int8), 0])
    starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    return list(zip(starts.tolist(), (ends - starts).tolist()))


def test_each_marker_becomes_its_own_images_positions_never_supervised(family, image_root):
    arch, _, model, processor, inputs = family
    ds = _dataset(family, image_root)
    sizes = {"a.png": (40, 56), "b.png": (32, 32), "c.png": (70, 30)}
    vision = {model.config.image_token_id} if arch.startswith("qwen") else {ds.image_token_id}
    for i, record in enumerate(RECORDS):
        item = ds[i]
        ids, labels = item["input_ids"].numpy(), item["labels"].numpy()
        names = record.get("image", [])
        names = [names] if isinstance(names, str) else names
        runs = _runs(ids, np.isin(ids, list(vision)))
        assert [n for _, n in runs] == [inputs.n_tokens(*sizes[name]) for name in names]  # in the images' order
        assert (labels[np.isin(ids, list(vision))] == IGNORE_INDEX).all()
        images = item["image"]
        assert (images is None) == (not names)
        if len(names) > 1:
            assert isinstance(images, list) and len(images) == len(names)
        if arch.startswith("qwen") and names:  # the vision start and end around each image are never supervised
            start, end = model.config.vision_start_token_id, model.config.vision_end_token_id
            assert (ids == start).sum() == (ids == end).sum() == len(names)
            assert (labels[np.isin(ids, [start, end])] == IGNORE_INDEX).all()


def test_a_batch_of_single_multi_and_text_only_records_trains(family, image_root):
    arch, _, model, processor, inputs = family
    ds = _dataset(family, image_root)
    items = [ds[i] for i in range(len(RECORDS))]
    batch = Collator(processor.tokenizer.pad_token_id, inputs)(items)
    batch.pop("kind_counts")
    n_images = batch["image_grid_thw"].shape[0] if arch.startswith("qwen") else batch["pixel_values"].shape[0]
    assert n_images == 6  # 2 + 3 + 1, in batch order
    out = model(**batch)
    assert torch.isfinite(out.loss)
    if arch.startswith("qwen"):  # padding-free: each record's M-RoPE positions with all its images' grids
        packed = PaddingFreeCollator(processor.tokenizer.pad_token_id, inputs)(items)
        packed.pop("kind_counts")
        assert packed["position_ids"].shape == (4, 1, packed["input_ids"].shape[1])
        with torch.no_grad():
            assert torch.allclose(model(**packed).loss, out.loss, atol=1e-5)


def test_lit_supervises_the_text_between_the_images_never_the_images_or_their_separators(family, image_root):
    _, template, _, processor, _ = family
    spans = render(INTERLEAVED, get_template(template))
    image = get_template(template).image_text or get_template(template).image_token
    assert [s.kind for s in spans if s.text == image] == ["image"] * 3
    texts = {s.text: s.kind for s in spans}
    assert texts["Picture 1:"] == texts["Picture 2:"] == texts["What differs?"] == "instruction"
    vit, lit = _dataset(family, image_root, "vit"), _dataset(family, image_root, "lit")
    tok = processor.tokenizer
    for i in range(len(RECORDS)):
        v, li, ids = vit[i]["labels"], lit[i]["labels"], lit[i]["input_ids"]
        assert ((v != IGNORE_INDEX) <= (li != IGNORE_INDEX)).all()
        supervised = tok.decode(ids[li != IGNORE_INDEX])
        for turn in RECORDS[i]["conversations"]:
            for piece in turn["value"].split(IMAGE_MARKER):
                assert piece.strip() in supervised
        assert vit.image_token_id not in ids[li != IGNORE_INDEX].tolist()
    ex = lit.examples[1]  # the interleaved record: every image position and "\n" beside one is unsupervised
    kinds = ex.kinds[ex.labels != IGNORE_INDEX]
    assert not np.isin(kinds, [KIND_INDEX["image"], KIND_INDEX["format"], KIND_INDEX["role"]]).any()


@pytest.mark.parametrize(
    "images, value, found",
    [(["a.png", "b.png"], "<image>\nOne marker.", 1), (["a.png", "b.png"], "<image><image><image>\nThree.", 3)],
)
def test_a_marker_count_that_is_not_the_image_count_names_the_record_or_is_skipped(
    family, image_root, images, value, found
):
    bad = {"id": "bad", "image": images, "conversations": [{"from": "human", "value": value}, TWO["conversations"][1]]}
    with pytest.raises(RecordError, match=rf"record 'bad': record has 2 images but {found} <image> markers"):
        _dataset(family, image_root, records=[bad])
    ds = _dataset(family, image_root, records=[bad, ONE], on_invalid="skip")
    assert len(ds) == 1 and [s["id"] for s in ds.audit.skipped] == ["bad"]
    assert ds.audit.skipped[0]["reason"].startswith(f"record has 2 images but {found} <image> markers")


def test_a_list_of_one_image_is_the_single_image_record(family, image_root):
    listed = {**ONE, "image": ["a.png"]}
    a, b = _dataset(family, image_root, records=[ONE])[0], _dataset(family, image_root, records=[listed])[0]
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert isinstance(b["image"], dict)


def test_multi_image_labels_survive_the_label_cache(family, image_root, tmp_path):
    ds = _dataset(family, image_root)
    ds.save_labels(tmp_path / "labels")
    back = SupervisedDataset.load_labels(tmp_path / "labels", ds.spec, family[3].tokenizer, family[4])
    assert back.lengths() == ds.lengths() and back.has_image() == [True, True, True, False]
    for i in range(len(ds)):
        x, y = ds[i], back[i]
        assert torch.equal(x["input_ids"], y["input_ids"]) and torch.equal(x["labels"], y["labels"])
        xs, ys = (v if isinstance(v, list) else [v] for v in (x["image"], y["image"]))
        assert len(xs) == len(ys)
        for a, b in zip(xs, ys):
            if a is not None:
                assert torch.equal(a["pixel_values"], b["pixel_values"])


def test_too_long_multi_image_records_are_cut_after_the_last_image_or_refused(family, image_root):
    ds = _dataset(family, image_root, records=[TWO])
    full = len(ds[0]["input_ids"])
    spec = LabelSpec(ds.spec.chat_template, ds.spec.scope, full - 3, image_root=image_root, too_long="truncate")
    short = SupervisedDataset([TWO], spec, family[3].tokenizer, family[4], progress=False)
    assert len(short[0]["input_ids"]) == full - 3 and short.audit.truncated == ["two-images"]
    spec = LabelSpec(ds.spec.chat_template, ds.spec.scope, 8, image_root=image_root, too_long="truncate")
    with pytest.raises(RecordError, match=r"the 2 images .* do not fit in max_length 8"):
        SupervisedDataset([TWO], spec, family[3].tokenizer, family[4], progress=False)


def test_instructblip_refuses_a_multi_image_record_by_name(image_root):
    from lit.mask.tokenizer import train_bpe

    tokenizer = train_bpe([t["value"] for t in TWO["conversations"]] * 20, vocab_size=300)
    family = ("instructblip", "instructblip", *_tiny("instructblip", tokenizer, "instructblip"))
    with pytest.raises(RecordError, match=r"record 'two-images': 2 images: this model \(InstructBLIP\) takes 1"):
        _dataset(family, image_root, records=[TWO])
    ds = _dataset(family, image_root, records=[TWO, ONE], on_invalid="skip")
    assert len(ds) == 1 and ds.audit.skipped[0]["id"] == "two-images"


def test_trl_messages_with_several_images_become_one_multi_image_record():
    from lit.data.convert.messages import record_of_messages

    red, blue = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    example = {
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " vs "}, {"type": "image"}]},
            {"role": "assistant", "content": "red vs blue"},
        ],
        "images": [red, blue],
    }
    record, system = record_of_messages(example, "m")
    assert record["image"] == [red, blue] and record["conversations"][0]["value"] == "<image> vs <image>"
    assert system is None


def test_images_in_memory_count_and_batch_like_files(family, image_root):
    """A record whose ``image`` is a list of PIL images (TRL's ``images`` column, decoded) is the record of files."""
    in_memory = {**TWO, "image": [Image.open(image_root / name).convert("RGB") for name in TWO["image"]]}
    a, b = _dataset(family, image_root, records=[TWO])[0], _dataset(family, image_root, records=[in_memory])[0]
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert all(torch.equal(x["pixel_values"], y["pixel_values"]) for x, y in zip(a["image"], b["image"]))
