"""Qwen2-VL as a model family (lit/model/families/qwen2_vl.py): labels, training under ZeRO-3, reload, lmms-eval and
VC on a tiny model built from ``Qwen2VLConfig`` with transformers' PIL image processor (no torchvision).

The reference for the answer-only labels is the segment-wise masking of a public Qwen2-VL fine-tuning code,
2U1/Qwen2-VL-Finetune ``src/dataset/sft_dataset.py`` (``SupervisedDataset.__getitem__``) with
``src/dataset/data_utils.py`` (``llava_to_openai``, ``replace_image_tokens``): the default system message
``<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n`` is all IGNORE; each round's
``<|im_start|>user\\n{content}<|im_end|>\\n<|im_start|>assistant\\n`` is IGNORE, with ``\\n?<image>\\n?`` replaced by
``<|vision_start|><|image_pad|><|vision_end|>`` and the pad expanded by the processor; the answer
``{content}<|im_end|>\\n`` is supervised; each segment tokenized alone without special tokens. ``_reference``
below rebuilds that construction on our tokenizer.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_runs import tiny_model, train_auto_and_score

from lit.constants import IGNORE_INDEX
from lit.mask.chat_templates import get_template

SYSTEM = "You are a helpful assistant."
RECORDS = [
    {
        "id": "img-multi",
        "image": "a.png",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is the square? Answer briefly."},
            {"from": "gpt", "value": "Red."},
            {"from": "human", "value": "And how many circles are there?"},
            {"from": "gpt", "value": "Two circles, at the top."},
        ],
    },
    {
        "id": "text-only",
        "conversations": [
            {"from": "human", "value": "Name a colour. Answer briefly."},
            {"from": "gpt", "value": "Blue."},
        ],
    },
]


def _tiny(tokenizer, arch: str = "qwen2_vl"):
    """A tiny Qwen2-VL (or Qwen2.5-VL) and its processor from conf/model/tiny_qwen2_vl.yaml, 32 wide."""
    return tiny_model("tiny_qwen2_vl", tokenizer, arch=arch)[:2]


@pytest.fixture(scope="module", params=["qwen2_vl", "qwen2_5_vl"])
def family(tmp_path_factory, request):
    from tiny_runs import write_noise_images

    from lit.mask.tokenizer import train_bpe
    from lit.model.families import image_inputs_for

    texts = [t["value"] for r in RECORDS for t in r["conversations"]] * 20 + [SYSTEM, "user assistant system"] * 20
    tokenizer = train_bpe(texts, vocab_size=400)
    tokenizer._tokenizer.post_processor = None  # Qwen's tokenizers add no BOS (the demo BPE's Llama layout does)
    model, processor = _tiny(tokenizer, request.param)
    root = write_noise_images(tmp_path_factory.mktemp("qwen_images"), {"a.png": (40, 56)})
    return model, processor, image_inputs_for(model.config, processor), root


def _dataset(family, scope: str):
    from tiny_runs import supervised_dataset

    return supervised_dataset(family, RECORDS, get_template("qwen2_vl"), scope, max_length=512)


def _reference(record: dict, tokenizer, n_pads: int) -> tuple[list[int], list[int]]:
    """2U1/Qwen2-VL-Finetune's input ids and labels for ``record`` (see the module docstring)."""
    import re

    def tok(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    ids = tok(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n")
    labels = [IGNORE_INDEX] * len(ids)
    turns = record["conversations"]
    for user, gpt in zip(turns[::2], turns[1::2]):
        content = re.sub(r"\n?<image>\n?", "<|vision_start|><|image_pad|><|vision_end|>", user["value"])
        prompt = tok(f"<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n")
        pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
        prompt = [t for p in prompt for t in ([pad] * n_pads if p == pad else [p])]  # the processor's expansion
        answer = tok(f"{gpt['value']}<|im_end|>\n")
        ids += prompt + answer
        labels += [IGNORE_INDEX] * len(prompt) + answer
    return ids, labels


def test_vit_labels_are_the_public_finetuning_codes_but_for_the_newline_after_each_end_of_turn(family):
    """Same input ids; the same supervised tokens except the ``\\n`` after each ``<|im_end|>``, which 2U1's code
    supervises and ours leaves out: generation stops at ``<|im_end|>``, so the newline is never generated."""
    ds = _dataset(family, "vit")
    tokenizer = family[1].tokenizer
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    assert len(newline) == 1
    for i, record in enumerate(RECORDS):
        item = ds[i]
        n_pads = int((item["input_ids"] == family[0].config.image_token_id).sum())
        assert n_pads == (family[2].n_tokens(40, 56) if "image" in record else 0)
        ref_ids, ref_labels = _reference(record, tokenizer, n_pads)
        assert item["input_ids"].tolist() == ref_ids
        ours, ref = item["labels"].numpy(), np.asarray(ref_labels)
        differ = np.nonzero(ours != ref)[0]
        end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        answers = len(record["conversations"]) // 2
        assert len(differ) == answers  # one newline per answer
        assert all(ref_ids[d] == newline[0] and ref_ids[d - 1] == end and ours[d] == IGNORE_INDEX for d in differ)


def test_lit_supervises_the_instructions_never_the_system_roles_or_vision_tokens(family):
    model, processor, inputs, _ = family
    tokenizer = processor.tokenizer
    vit, lit = _dataset(family, "vit"), _dataset(family, "lit_nosys")
    vision = {model.config.vision_start_token_id, model.config.image_token_id, model.config.vision_end_token_id}
    for i in range(len(RECORDS)):
        ids, v, li = vit[i]["input_ids"], vit[i]["labels"], lit[i]["labels"]
        assert ((v != IGNORE_INDEX) <= (li != IGNORE_INDEX)).all()  # LIT adds to VIT, never removes
        supervised = tokenizer.decode(ids[li != IGNORE_INDEX])
        for instruction in ("What colour is the square?", "And how many circles are there?", "Name a colour."):
            if instruction in json.dumps(RECORDS[i]):
                assert instruction in supervised
        assert SYSTEM not in supervised and "system" not in supervised and "user" not in supervised
        assert not any(int(t) in vision for t in ids[li != IGNORE_INDEX])
        header = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
        n = len(header)
        starts = [j for j in range(len(ids) - n) if ids[j : j + n].tolist() == header]
        assert starts and all((li[j : j + n] == IGNORE_INDEX).all() for j in starts)


def test_image_inputs_have_the_processors_counts_and_m_rope_inputs(family):
    model, processor, inputs, root = family
    rgb = Image.open(root / "a.png").convert("RGB")
    pixels = inputs.pixels(rgb)
    t, h, w = pixels["image_grid_thw"].tolist()
    merge = processor.image_processor.merge_size
    assert inputs.n_tokens(40, 56) == t * h * w // merge**2
    expect = processor._get_num_multimodal_tokens(image_sizes=[(40, 56)]).num_image_tokens[0]
    assert inputs.n_tokens(40, 56) == expect  # the processor's own count
    ds = _dataset(family, "vit")
    batch = ds.image_inputs.collate([ds[0]["image"]])
    ids = ds[0]["input_ids"][None]
    tokens = inputs.token_inputs(ids)
    assert tokens["mm_token_type_ids"].sum() == expect
    out = model(input_ids=ids, labels=ds[0]["labels"][None], **batch, **tokens)
    assert torch.isfinite(out.loss)
    # What the family adds is what the model needs: Qwen2-VL refuses images without the token types, Qwen2.5-VL
    # falls back to 1-D positions, which changes every logit after the image.
    try:
        without = model(input_ids=ids, labels=ds[0]["labels"][None], **batch)
    except ValueError as err:
        assert "mm_token_type_ids" in str(err)
    else:
        assert not torch.allclose(without.logits, out.logits)


@pytest.mark.integration
def test_model_auto_trains_a_saved_qwen2_vl_under_zero3_and_lmms_eval_and_vc_score_it(tmp_path, demo_data):
    """``python train.py model=auto model.pretrained=DIR loss=lit`` on a saved tiny Qwen2-VL whose processor carries
    Qwen2-VL-Instruct's published chat template: the class, template and image processing come from DIR; ZeRO-3
    on CPU; the checkpoint reloads with the PIL image processor, lmms-eval scores it and VC runs on it."""
    from chat_template_fixtures import QWEN2_VL
    from tiny_runs import demo_turn_texts, save_as_published

    from lit.mask.tokenizer import train_bpe

    tokenizer = train_bpe(demo_turn_texts(demo_data) + [SYSTEM] * 20, vocab_size=400)
    tokenizer._tokenizer.post_processor = None  # no BOS, as Qwen's tokenizers
    model, processor = _tiny(tokenizer)
    given = save_as_published(model, processor, tmp_path / "given", QWEN2_VL)

    seen, loaded, loaded_processor = train_auto_and_score(given, tmp_path, demo_data)
    assert seen["system"] > 0  # in the input, never supervised
    assert type(loaded).__name__ == "Qwen2VLForConditionalGeneration"
    assert type(loaded_processor.image_processor).__name__ == "Qwen2VLImageProcessorPil"
    assert json.loads((tmp_path / "eval" / "scores.json").read_text())["lmms_eval_version"]


def test_every_family_names_a_known_chat_template_and_claims_every_parameter(family):
    from lit.mask.chat_templates import TEMPLATES
    from lit.model.families import FAMILIES, family_of
    from lit.model.parts import part_of

    assert all(f.chat_template in TEMPLATES for f in FAMILIES.values())
    model = family[0]
    parts = {part_of(name) for name, _ in model.named_parameters()}
    assert parts == {"vision", "projector", "lm"}
    assert all(part_of(n) == "projector" for n, _ in model.named_parameters() if ".merger." in n)
    with pytest.raises(
        ValueError, match=f"^model_type 'paligemma' is not supported; supported: {', '.join(sorted(FAMILIES))} "
    ):
        family_of("paligemma")


@pytest.mark.parametrize("loss", ["vit", "lit"])
def test_audit_dump_with_the_checkpoints_own_template_is_the_fixed_command_line_contract(family, tmp_path, loss):
    """``python -m lit.mask.audit dump --data F --tokenizer DIR --template auto --loss vit|lit --out O.jsonl`` on a
    saved tiny Qwen2-VL whose processor carries Qwen2-VL-Instruct's published chat template: one JSON line per
    record, the vision block never supervised, the answers always, the instructions under ``lit`` only."""
    from chat_template_fixtures import QWEN2_VL
    from tiny_runs import save_as_published

    model, processor, _, root = family
    folder = save_as_published(model, processor, tmp_path / "qwen2_vl", QWEN2_VL)
    data = tmp_path / "records.json"
    data.write_text(json.dumps(RECORDS))
    out = tmp_path / "labels.jsonl"
    from lit.mask.audit import _main  # `python -m lit.mask.audit` with these arguments, in this process

    _main(
        [
            "dump",
            "--data",
            str(data),
            "--tokenizer",
            str(folder),
            "--template",
            "auto",
            "--loss",
            loss,
            "--out",
            str(out),
        ]
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in RECORDS] and all(
        set(r) == {"id", "input_ids", "labels"} for r in rows
    )
    tokenizer = processor.tokenizer
    vision = {tokenizer.convert_tokens_to_ids(t) for t in ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>")}
    for row, record in zip(rows, RECORDS):
        ids, labels = np.asarray(row["input_ids"]), np.asarray(row["labels"])
        assert ((labels == IGNORE_INDEX) | (labels == ids)).all()
        assert not set(ids[labels != IGNORE_INDEX].tolist()) & vision
        assert ("image" in record) == bool(set(ids.tolist()) & vision)
        supervised = tokenizer.decode(ids[labels != IGNORE_INDEX])
        for answer in (t["value"] for t in record["conversations"] if t["from"] == "gpt"):
            assert answer in supervised
        instruction = {"img-multi": "What colour is the square?", "text-only": "Name a colour."}[record["id"]]
        assert (instruction in supervised) == (loss == "lit")
        assert SYSTEM not in supervised
