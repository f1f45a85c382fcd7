"""Every chat template, as the Jinja template saved with checkpoints, renders what lit.mask.render renders."""

from __future__ import annotations

import pytest
from transformers.utils.chat_template_utils import _compile_jinja_template

from lit.mask.chat_templates import TEMPLATES
from lit.mask.render import render
from lit.model.chat_jinja import to_jinja

RECORDS = [
    {
        "image": "x.png",
        "conversations": [
            {"from": "human", "value": "What is it?\n<image>"},
            {"from": "gpt", "value": "A cat."},
            {"from": "human", "value": "Colour? Answer with one word."},
            {"from": "gpt", "value": "Red"},
        ],
    },
    {
        "image": "x.png",
        "conversations": [
            {"from": "human", "value": "<image>\n  Describe the image. "},
            {"from": "gpt", "value": "Two squares."},
        ],
    },
    {"conversations": [{"from": "human", "value": " Hi there "}, {"from": "gpt", "value": "Hello."}]},
    # an image-only human turn (LLaVA-Pretrain has them): the marker alone, as LLaVA's preprocess_multimodal leaves it
    {"image": "x.png", "conversations": [{"from": "human", "value": "<image>\n"}, {"from": "gpt", "value": "A dog."}]},
]


def _messages(record, structured: bool):
    out = []
    for turn in record["conversations"]:
        role = "user" if turn["from"] == "human" else "assistant"
        content = turn["value"]
        if structured and role == "user":  # the processor-style list: image items + text items
            images = [{"type": "image"}] * content.count("<image>")
            content = images + [{"type": "text", "text": content.replace("<image>", "")}]
        out.append({"role": role, "content": content})
    return out


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize("structured", [False, True])
def test_jinja_renders_the_training_text(name, structured):
    template = TEMPLATES[name]
    jinja = _compile_jinja_template(to_jinja(template))
    for record in RECORDS:
        if template.image_only and "image" not in record:
            continue
        messages = _messages(record, structured)
        assert jinja.render(messages=messages, add_generation_prompt=False) == "".join(
            s.text for s in render(record, template)
        )
        prompt = {**record, "conversations": record["conversations"][:1]}
        expected = "".join(s.text for s in render(prompt, template, add_generation_prompt=True))
        assert jinja.render(messages=messages[:1], add_generation_prompt=True) == expected


def test_a_system_message_replaces_the_system_prompt():
    jinja = _compile_jinja_template(to_jinja(TEMPLATES["vicuna_v1"]))
    text = jinja.render(
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        add_generation_prompt=True,
    )
    assert text == "Be brief. USER: Hi ASSISTANT:"
