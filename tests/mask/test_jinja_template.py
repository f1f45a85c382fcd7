"""``chat_template: auto``: typed templates derived from Jinja chat templates (ours exported, and published ones)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from chat_template_fixtures import LLAVA_ONEVISION_HF, QWEN2_VL, SMOLVLM

from lit.constants import IGNORE_INDEX, KIND_INDEX
from lit.mask.chat_templates import TEMPLATES
from lit.mask.jinja_template import from_jinja, from_tokenizer
from lit.mask.render import encode, render
from lit.mask.scopes import SCOPES, get_scope, labels_for
from lit.mask.tokenizer import train_bpe
from lit.model.chat_jinja import to_jinja

RECORDS = [
    {
        "id": "image-last",
        "image": "x.png",
        "conversations": [
            {"from": "human", "value": "What color is the circle? Answer the question using a single word.\n<image>"},
            {"from": "gpt", "value": "red"},
            {"from": "human", "value": "Is there a blue square in the image? Answer yes or no."},
            {"from": "gpt", "value": "Yes"},
        ],
    },
    {
        "id": "image-first",
        "image": "x.png",
        "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image briefly."},
            {"from": "gpt", "value": "A green triangle."},
            {"from": "human", "value": "How many shapes are there?"},
            {"from": "gpt", "value": "two"},
            {"from": "human", "value": "Tell me more about it, please!"},
            {"from": "gpt", "value": "A yellow circle in the bottom right."},
        ],
    },
    {
        "id": "image-only",
        "image": "x.png",
        "conversations": [{"from": "human", "value": "<image>\n"}, {"from": "gpt", "value": "A dog."}],
    },  # fmt: skip
    {
        "id": "text",
        "conversations": [{"from": "human", "value": "What is 3.5 plus 2?"}, {"from": "gpt", "value": "5.5"}],
    },
]
EXPORTED = ["vicuna_v1", "chatml", "qwen2_base", "phi", "mistral_instruct", "instructblip"]


def _merged(spans) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for s in spans:
        if out and out[-1][1] == s.kind:
            out[-1] = (out[-1][0] + s.text, s.kind)
        else:
            out.append((s.text, s.kind))
    return out


@pytest.mark.parametrize("name", EXPORTED)
def test_round_trip_renders_and_masks_like_the_hand_written_template(name, any_tokenizer):
    template = TEMPLATES[name]
    derived = from_jinja(to_jinja(template), name=name, tokenizer=any_tokenizer)
    image_id = any_tokenizer.convert_tokens_to_ids("<image>")
    for record in RECORDS:
        ours, theirs = render(record, template), render(record, derived)
        assert _merged(theirs) == _merged(ours), record["id"]
        prompt = {**record, "conversations": record["conversations"][:1]}
        assert _merged(render(prompt, derived, add_generation_prompt=True)) == _merged(
            render(prompt, template, add_generation_prompt=True)
        )
        a = encode(ours, any_tokenizer, record_id=record["id"], image_token_id=image_id)
        b = encode(theirs, any_tokenizer, record_id=record["id"], image_token_id=image_id)
        np.testing.assert_array_equal(b.input_ids, a.input_ids)
        for scope in SCOPES:
            np.testing.assert_array_equal(labels_for(b, get_scope(scope)), labels_for(a, get_scope(scope)))


@pytest.mark.parametrize("name", EXPORTED)
def test_round_trip_recovers_the_template(name):
    template = TEMPLATES[name]
    # LAVIS's layout and truncation are not in a chat template: they cannot come back
    expected = replace(template, image_before_bos=False, max_instruction_tokens=0, max_answer_tokens=0)
    assert from_jinja(to_jinja(template), name=name) == expected


@pytest.fixture(scope="module")
def qwen_tokenizer():
    tok = train_bpe(
        ["You are a helpful assistant. What color is the circle? red Yes Is there a blue square? user assistant"] * 20,
        vocab_size=300,
    )
    specials = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>"]
    tok.add_special_tokens({"additional_special_tokens": specials})
    tok.eos_token = "<|im_end|>"
    tok.chat_template = QWEN2_VL
    return tok


def test_qwen2_vl_pieces(qwen_tokenizer):
    t = from_tokenizer(qwen_tokenizer, name="qwen2_vl")
    chatml = TEMPLATES["chatml"]
    assert t.system_prompt == "You are a helpful assistant."
    assert (t.system, t.user, t.assistant, t.generation_prompt) == (
        chatml.system,
        chatml.user,
        chatml.assistant,
        chatml.generation_prompt,
    )
    assert t.eos == "<|im_end|>"
    assert (t.image_text, t.image_first, t.image_sep) == ("<|vision_start|><|image_pad|><|vision_end|>", True, "")


def test_qwen2_vl_renders_what_apply_chat_template_renders(qwen_tokenizer):
    t = from_tokenizer(qwen_tokenizer)
    record = RECORDS[0]
    first = record["conversations"][0]["value"].replace("<image>", "").strip()
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": first}]},
        *[
            {"role": "user" if turn["from"] == "human" else "assistant", "content": turn["value"]}
            for turn in record["conversations"][1:]
        ],
    ]
    expected = qwen_tokenizer.apply_chat_template(messages, tokenize=False)
    assert "".join(s.text for s in render(record, t)) == expected


def _runs(tokenizer, ids, labels) -> list[str]:
    keep = labels != IGNORE_INDEX
    runs, current = [], []
    for tid, k in zip(ids.tolist(), keep.tolist()):
        if k:
            current.append(tid)
        elif current:
            runs, current = runs + [current], []
    runs += [current] if current else []
    return ["".join(tokenizer.decode(r).split()) for r in runs]


def test_qwen2_vl_scopes_supervise_answers_and_instructions_only(qwen_tokenizer):
    t = from_tokenizer(qwen_tokenizer)
    pad = qwen_tokenizer.convert_tokens_to_ids("<|image_pad|>")
    enc = encode(render(RECORDS[0], t), qwen_tokenizer, record_id="q", image_token_id=pad)
    assert enc.input_ids.tolist().count(pad) == 1 and enc.kinds[enc.input_ids == pad].tolist() == [KIND_INDEX["image"]]
    vit = labels_for(enc, get_scope("vit"))
    assert _runs(qwen_tokenizer, enc.input_ids, vit) == ["red<|im_end|>", "Yes<|im_end|>"]
    lit = labels_for(enc, get_scope("lit"))
    assert _runs(qwen_tokenizer, enc.input_ids, lit) == [
        "Whatcoloristhecircle?Answerthequestionusingasingleword.",
        "red<|im_end|>",
        "Istherebluesquareintheimage?Answeryesorno.".replace("blue", "ablue"),
        "Yes<|im_end|>",
    ]
    for labels in (vit, lit):
        supervised = set(enc.kinds[labels != IGNORE_INDEX].tolist())
        assert not supervised & {KIND_INDEX[k] for k in ("system", "role", "format", "image")}
    vision = [qwen_tokenizer.convert_tokens_to_ids(t) for t in ("<|vision_start|>", "<|vision_end|>")]
    assert set(enc.kinds[np.isin(enc.input_ids, vision)].tolist()) == {KIND_INDEX["image"]}  # never supervised


def test_from_tokenizer_takes_a_processors_default_template(qwen_tokenizer):
    processor = SimpleNamespace(chat_template={"default": QWEN2_VL, "tool_use": "{{ x }}"}, tokenizer=qwen_tokenizer)
    assert from_tokenizer(processor).image_text == "<|vision_start|><|image_pad|><|vision_end|>"
    processor.image_token = "<|image_pad|>"  # a Qwen2VLProcessor's: the one image position of the block
    assert from_tokenizer(processor).image_token == "<|image_pad|>"
    with pytest.raises(ValueError, match="^chat_template: named templates"):
        from_tokenizer(SimpleNamespace(chat_template={"tool_use": "{{ x }}"}, tokenizer=qwen_tokenizer))


def test_llava_onevision_hf_template_is_refused():
    # the answer follows '<|im_start|>assistant \n' in training but '<|im_start|>assistant\n' at inference
    with pytest.raises(ValueError, match="^generation_prompt: it is not the start of the assistant turn"):
        from_jinja(LLAVA_ONEVISION_HF, eos_token="<|im_end|>")


def test_smolvlm_template_types_the_header_before_an_image_apart():
    """SmolVLM writes 'User:<image>...' but 'User: text': the header's trailing space is dropped before an image, so
    ``user`` lacks that piece and ``user_text`` has it (rendering both as the Jinja does is checked by
    ``from_jinja`` itself); a header that differs otherwise before an image is still refused."""
    t = from_jinja(SMOLVLM, bos_token="<|im_start|>", eos_token="<end_of_utterance>")
    assert t.user[:2] == (("User:", "role"), ("{content}", "content"))
    assert t.user_text[:3] == (("User:", "role"), (" ", "format"), ("{content}", "content"))
    other = SMOLVLM.replace("{{':'}}", "{{'>'}}")  # 'User><image>' beside 'User: text'
    with pytest.raises(ValueError, match="^image: with an image the user turn starts"):
        from_jinja(other, bos_token="<|im_start|>", eos_token="<end_of_utterance>")
    with pytest.raises(ValueError, match="^system_prompt:"):  # without its BOS the template's first token is unknown
        from_jinja(SMOLVLM, eos_token="<end_of_utterance>")


AMBIGUOUS = {
    "reversed": ("{% for m in messages | reverse %}{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}", "content"),
    "numbered roles": (
        "{% for m in messages %}{{ m['role'] }}{{ loop.index }}: {{ m['content'] }}</s>{% endfor %}",
        "user",
    ),  # fmt: skip
    "upper": ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] | upper }}</s>{% endfor %}", "content"),
    "trim": ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] | trim }}</s>{% endfor %}", "content"),
    "no end of turn": ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{% endfor %}", "eos"),
    "last turn differs": (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{% if not loop.last %}</s>{% endif %}{% endfor %}",
        "user",
    ),  # fmt: skip
    "plain (image only)": (to_jinja(TEMPLATES["plain"]), "content"),
}


@pytest.mark.parametrize("case", sorted(AMBIGUOUS))
def test_ambiguous_templates_name_the_piece(case):
    source, piece = AMBIGUOUS[case]
    with pytest.raises(ValueError, match=f"^{piece}: "):
        from_jinja(source)


def test_eos_must_be_one_token(qwen_tokenizer):
    source = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}<|im_end|><|im_end|>\n{% endfor %}"
    with pytest.raises(ValueError, match="^eos: .* is not one token"):
        from_jinja(source, tokenizer=qwen_tokenizer)
    assert from_jinja(source, eos="<|im_end|>", tokenizer=qwen_tokenizer).eos == "<|im_end|>"
