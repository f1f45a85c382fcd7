"""LLaVA-OneVision as a model family (lit/model/families/llava_onevision.py): image counts and pixels against
transformers' own ``LlavaOnevisionProcessor``, labels (``vit``, ``lit``, and OneVision's own baseline mask against
``preprocess_qwen``), multi-image records, and training under ZeRO-3, reload, lmms-eval and VC on a tiny model built
from ``LlavaOnevisionConfig`` with transformers' PIL image processor (no torchvision).

The tokenizer carries Qwen2's special tokens (``<|im_start|>``, ``<|im_end|>``, ``<|endoftext|>``) and the
published chat template of llava-hf/llava-onevision-qwen2-*-hf (tests/chat_template_fixtures.py). That template
cannot be typed (``chat_template: auto`` refuses it: its assistant turn starts ``<|im_start|>assistant \\n`` in training
but ``<|im_start|>assistant\\n`` at inference, tests/mask/test_jinja_template.py), so training names the format
OneVision was trained in: Qwen2's chatml with ``<image>\\n`` in front of its turn (LLaVA-NeXT's ``conv_qwen``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_runs import CONF, tiny_model, train_auto_and_score

from lit.constants import IGNORE_INDEX, IMAGE_MARKER, KIND_INDEX
from lit.mask.chat_templates import get_template

SYSTEM = "You are a helpful assistant."
QWEN_SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
TEMPLATE_SENTENCE = "Answer briefly."
RECORDS = [
    {
        "id": "one-image",
        "image": "a.png",
        "conversations": [
            {"from": "human", "value": f"<image>\nWhat colour is the square? {TEMPLATE_SENTENCE}"},
            {"from": "gpt", "value": "Red."},
            {"from": "human", "value": "And how many circles are there?"},
            {"from": "gpt", "value": "Two circles, at the top."},
        ],
    },
    {
        "id": "two-images",
        "image": ["a.png", "b.png"],
        "conversations": [
            {"from": "human", "value": f"<image>\n<image>\nWhich picture is brighter? {TEMPLATE_SENTENCE}"},
            {"from": "gpt", "value": "The first."},
            {"from": "human", "value": "Is the second one square?"},
            {"from": "gpt", "value": "Yes."},
        ],
    },
    {
        "id": "text-only",
        "conversations": [
            {"from": "human", "value": f"Name a colour. {TEMPLATE_SENTENCE}"},
            {"from": "gpt", "value": "Blue."},
        ],
    },
]
SIZES = {"a.png": (40, 56), "b.png": (32, 32)}


def _tokenizer(texts):
    from chat_template_fixtures import LLAVA_ONEVISION_HF

    from lit.mask.tokenizer import train_bpe

    tokenizer = train_bpe([*texts, SYSTEM, "user assistant system"] * 20, vocab_size=400)
    tokenizer._tokenizer.post_processor = None  # Qwen2's tokenizers add no BOS
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIALS})
    tokenizer.chat_template = LLAVA_ONEVISION_HF
    return tokenizer


def _tiny(tokenizer):
    """A tiny LLaVA-OneVision and its processor from conf/model/tiny_llava_onevision.yaml, 32 wide."""
    from chat_template_fixtures import LLAVA_ONEVISION_HF

    text = {"num_attention_heads": 4, "num_key_value_heads": 4}
    model, processor, _ = tiny_model("tiny_llava_onevision", tokenizer, "chatml", text=text)
    processor.chat_template = LLAVA_ONEVISION_HF
    return model, processor


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """The tiny model saved with ``save_pretrained`` and read back as ``model=auto`` reads it (``load_pretrained``)."""
    from tiny_runs import save_as_published, write_noise_images

    from lit.model.families import image_inputs_for
    from lit.model.loading import load_pretrained

    model, processor = _tiny(_tokenizer([t["value"] for r in RECORDS for t in r["conversations"]]))
    saved = save_as_published(model, processor, tmp_path_factory.mktemp("onevision"))
    model, processor = load_pretrained(str(saved))
    model.eval()
    root = write_noise_images(tmp_path_factory.mktemp("onevision_images"), SIZES)
    return model, processor, image_inputs_for(model.config, processor), root


def _dataset(family, scope: str, sentences=frozenset({TEMPLATE_SENTENCE})):
    from tiny_runs import supervised_dataset

    return supervised_dataset(family, RECORDS, get_template("chatml"), scope, sentences)


def _images(record, root) -> list:
    names = record.get("image", [])
    return [Image.open(root / n).convert("RGB") for n in ([names] if isinstance(names, str) else names)]


def test_the_saved_model_reloads_as_its_family_with_the_pil_processor(family):
    from lit.model.families import family_of
    from lit.model.parts import part_of

    model, processor, _, _ = family
    assert type(model).__name__ == "LlavaOnevisionForConditionalGeneration"
    assert family_of(model.config.model_type).model_type == "llava_onevision"
    assert type(processor.image_processor).__name__ == "LlavaOnevisionImageProcessorPil"
    assert {part_of(name) for name, _ in model.named_parameters()} == {"vision", "projector", "lm"}
    assert part_of("model.image_newline") == "projector"
    assert all(t in processor.tokenizer.get_vocab() for t in [*QWEN_SPECIALS, IMAGE_MARKER])


@pytest.mark.parametrize("size", [(40, 56), (32, 32), (20, 90), (90, 20), (64, 64), (300, 200)])
def test_image_token_counts_are_what_llava_onevision_processor_inserts(family, size):
    """One image: the any-resolution count (tiles, unpadded, newlines, base view); two images of that size in one
    prompt: one base view and a newline each. Counted by transformers' ``LlavaOnevisionProcessor.__call__``."""
    from transformers import LlavaOnevisionProcessor

    model, processor, inputs, _ = family
    assert isinstance(processor, LlavaOnevisionProcessor)
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 255, (*size, 3), dtype=np.uint8))
    image_id = model.config.image_token_id
    one = processor(text=[f"{IMAGE_MARKER}\nhi"], images=[rgb], return_tensors="pt")
    assert inputs.n_tokens(*size) == int((one["input_ids"] == image_id).sum())
    assert inputs.n_tokens_of_record([rgb], "r") == [int((one["input_ids"] == image_id).sum())]
    two = processor(text=[f"{IMAGE_MARKER}{IMAGE_MARKER}\nhi"], images=[[rgb, rgb]], return_tensors="pt")
    assert sum(inputs.n_tokens_of_record([rgb, rgb], "r")) == int((two["input_ids"] == image_id).sum())
    assert torch.equal(inputs.pixels(rgb)["pixel_values"], one["pixel_values"][0])


def test_items_are_the_processors_ids_and_pixels_and_the_model_reads_them_alike(family):
    """Each record's expanded ids are exactly what ``LlavaOnevisionProcessor`` makes of the rendered text and the
    record's images, its pixels the processor's, and a batch gives the same logits as the processor's inputs."""
    from lit.data.collate import Collator
    from lit.mask.render import render

    model, processor, inputs, root = family
    ds = _dataset(family, "lit")
    for i, record in enumerate(RECORDS):
        text = "".join(s.text for s in render(record, get_template("chatml")))
        images = _images(record, root)
        ref = processor(text=[text], images=[images] if images else None, return_tensors="pt")
        item = ds[i]
        assert item["input_ids"].tolist() == ref["input_ids"][0].tolist()
        batch = Collator(processor.tokenizer.pad_token_id, inputs)([item])
        batch.pop("kind_counts")
        if images:
            assert torch.equal(batch["pixel_values"], ref["pixel_values"])
            assert batch["image_sizes"].tolist() == ref["image_sizes"].tolist()
            if len(images) > 1:
                assert batch["batch_num_images"].tolist() == [len(images)]
        with torch.no_grad():
            ours = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
            theirs = model(**{k: v for k, v in ref.items()}).logits
        assert torch.allclose(ours, theirs, atol=1e-5)
    batch = Collator(processor.tokenizer.pad_token_id, inputs)([ds[i] for i in range(len(RECORDS))])
    batch.pop("kind_counts")
    assert batch["batch_num_images"].tolist() == [1, 2]  # the text-only record has none
    assert torch.isfinite(model(**batch).loss)


def test_vit_supervises_only_answers_and_end_of_turn_and_lit_adds_the_instructions(family):
    model, processor, _, _ = family
    tok = processor.tokenizer
    vit, lit = _dataset(family, "vit"), _dataset(family, "lit")
    image_id = model.config.image_token_id
    for i, record in enumerate(RECORDS):
        ex_v, ex_l = vit.examples[i], lit.examples[i]
        kinds_v = set(ex_v.kinds[ex_v.labels != IGNORE_INDEX].tolist())
        assert kinds_v == {KIND_INDEX["response"], KIND_INDEX["eos"]}
        assert set(ex_l.kinds[ex_l.labels != IGNORE_INDEX].tolist()) == {
            KIND_INDEX[k] for k in ("instruction", "response", "eos")
        }
        ids, v, li = lit[i]["input_ids"], vit[i]["labels"], lit[i]["labels"]
        assert ((v != IGNORE_INDEX) <= (li != IGNORE_INDEX)).all()
        answers = tok.decode(ids[v != IGNORE_INDEX])
        assert answers == "".join(t["value"] + "<|im_end|>" for t in record["conversations"] if t["from"] == "gpt")
        supervised = tok.decode(ids[li != IGNORE_INDEX])
        for turn in record["conversations"][::2]:
            for piece in turn["value"].replace(TEMPLATE_SENTENCE, "").split(IMAGE_MARKER):
                assert piece.strip() in supervised
        assert TEMPLATE_SENTENCE not in supervised and SYSTEM not in supervised
        assert not {"system", "user", "assistant"} & set(supervised.replace("<|im_end|>", " ").split())
        assert image_id not in ids[li != IGNORE_INDEX].tolist()
        header = tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
        starts = [j for j in range(len(ids) - len(header)) if ids[j : j + len(header)].tolist() == header]
        assert starts and all((li[j : j + len(header)] == IGNORE_INDEX).all() for j in starts)


def _preprocess_qwen(record: dict, tokenizer) -> tuple[list[int], list[int]]:
    """LLaVA-NeXT's ``preprocess_qwen`` (LLaVA-VL/LLaVA-NeXT ``llava/train/train.py`` lines 563-640 at df17966,
    the training code of LLaVA-OneVision), step for step on ``record`` after its ``preprocess_multimodal`` (which
    leaves these markers as they are), on our tokenizer: ``unmask_tokens_idx = [198, im_start, im_end]``, 198
    being Qwen2's id of ``"\\n"`` (here: our tokenizer's); the image stays one ``<image>`` position (upstream writes
    ``IMAGE_TOKEN_INDEX`` there, its label IGNORE_INDEX)."""
    chat_template = (
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'"
        " + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    roles = {"human": "user", "gpt": "assistant"}
    im_start, im_end = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    nl = tokenizer("\n", add_special_tokens=False)["input_ids"]
    assert len(nl) == 1
    unmask_tokens_idx = [nl[0], im_start, im_end]

    def apply(conv):
        out = tokenizer.apply_chat_template(conv, chat_template=chat_template, tokenize=True)
        return list(out["input_ids"] if hasattr(out, "keys") else out)

    input_id = apply([{"role": "system", "content": SYSTEM}])
    target = [IGNORE_INDEX] * len(input_id)
    for conv in record["conversations"]:
        role = roles[conv["from"]]
        encode_id = apply([{"role": role, "content": conv["value"]}])
        input_id += encode_id
        target += [IGNORE_INDEX] * len(encode_id) if role in ["user", "system"] else encode_id
    for idx, encode_id in enumerate(input_id):
        if encode_id in unmask_tokens_idx:
            target[idx] = encode_id
    return input_id, target


def test_onevision_baseline_is_preprocess_qwen(family):
    """``loss=onevision_baseline`` gives the labels ``preprocess_qwen`` gives (all but the first position, which
    upstream labels ``<|im_start|>`` and we leave out: it has no left context, so no loss ever reads it), on records
    with the system prompt, several turns, one image, two images, none."""
    _, processor, _, _ = family
    ds = _dataset(family, "onevision_baseline", frozenset())
    for i, record in enumerate(RECORDS):
        ex = ds.examples[i]
        ids, labels = _preprocess_qwen(record, processor.tokenizer)
        assert ex.input_ids.tolist() == ids
        assert ex.labels[0] == IGNORE_INDEX and ex.labels[1:].tolist() == labels[1:]
        supervised = set(ex.kinds[ex.labels != IGNORE_INDEX].tolist())
        assert {KIND_INDEX["role"], KIND_INDEX["format"]} <= supervised  # its re-enabled tokens, system turn too
        assert KIND_INDEX["image"] not in supervised and KIND_INDEX["instruction"] not in supervised
    vit = _dataset(family, "vit", frozenset())
    assert all(
        ((v.labels != IGNORE_INDEX) <= (b.labels != IGNORE_INDEX)).all() for v, b in zip(vit.examples, ds.examples)
    )


def test_the_audit_cli_dumps_the_onevision_baseline_as_preprocess_qwen_labels(family, tmp_path):
    """``python -m lit.mask.audit dump --loss onevision_baseline`` (in process) on the family's saved tokenizer: the
    same ids and labels as ``preprocess_qwen`` (the first position aside, as above)."""
    import json

    from lit.mask.audit import _main

    _, processor, _, _ = family
    processor.tokenizer.save_pretrained(tmp_path / "tok")
    (tmp_path / "records.json").write_text(json.dumps(RECORDS))
    out = tmp_path / "labels.jsonl"
    _main(
        ["dump", "--data", str(tmp_path / "records.json"), "--tokenizer", str(tmp_path / "tok")]
        + ["--template", "chatml", "--loss", "onevision_baseline", "--out", str(out)]
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(RECORDS)
    for record, row in zip(RECORDS, rows):
        ids, labels = _preprocess_qwen(record, processor.tokenizer)
        assert row["input_ids"] == ids and row["labels"][0] == IGNORE_INDEX and row["labels"][1:] == labels[1:]


def test_onevision_baseline_is_a_loss_option_without_weights():
    from lit.mask.scopes import SCOPES, get_scope

    assert "onevision_baseline" not in SCOPES  # not a rung of L2T's ladder
    assert (CONF / "loss" / "onevision_baseline.yaml").is_file()
    with pytest.raises(ValueError, match="published baseline mask"):
        get_scope("onevision_baseline", {"instruction": 0.5})


@pytest.mark.integration
def test_model_auto_trains_a_saved_onevision_under_zero3_and_lmms_eval_and_vc_score_it(tmp_path, demo_data):
    """``python train.py model=auto model.pretrained=DIR model.chat_template=chatml loss=lit`` on a saved tiny
    OneVision whose processor carries the published chat template: the class and image processing come from DIR;
    ZeRO-3 on CPU; the checkpoint reloads with the PIL image processor, lmms-eval scores it (reading back the
    template training saved) and VC runs on it."""
    from tiny_runs import demo_turn_texts, save_as_published

    model, processor = _tiny(_tokenizer(demo_turn_texts(demo_data)))
    given = save_as_published(model, processor, tmp_path / "given")  # with the published template _tiny gives it

    seen, loaded, loaded_processor = train_auto_and_score(given, tmp_path, demo_data, "model.chat_template=chatml")
    assert seen["system"] > 0  # in the input, never supervised
    assert type(loaded).__name__ == "LlavaOnevisionForConditionalGeneration"
    assert type(loaded_processor.image_processor).__name__ == "LlavaOnevisionImageProcessorPil"


def test_padding_free_batches_of_single_multi_and_text_only_records_give_the_padded_loss(family):
    from tiny_runs import assert_padding_free_gives_the_padded_loss

    padded, packed = assert_padding_free_gives_the_padded_loss(family, _dataset(family, "lit"))
    assert packed["batch_num_images"].tolist() == padded["batch_num_images"].tolist() == [1, 2]
