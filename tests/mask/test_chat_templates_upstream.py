"""Chat templates render what the original code renders; each test names the upstream function it mirrors
(restated from the upstream source, not copied)."""

from __future__ import annotations

from lit.mask.chat_templates import get_template
from lit.mask.render import render

TURNS = [("<image>\nWhat is in the picture?", "A cat."), ("And its colour?", "Black and white.")]


def _record(turns):
    return {
        "image": "x.png",
        "conversations": [m for q, a in turns for m in ({"from": "human", "value": q}, {"from": "gpt", "value": a})],
    }


def _text(record, name, **kw) -> str:
    return "".join(s.text for s in render(record, get_template(name), **kw))


def llava_llama2_get_prompt(system: str, sep: str, sep2: str, messages: list[tuple[str, str | None]]) -> str:
    """haotian-liu/LLaVA ``llava/conversation.py`` (c121f04, lines 73-93), ``Conversation.get_prompt`` for
    ``SeparatorStyle.LLAMA_2``: a user message becomes ``[INST] msg [/INST]`` after ``sep`` (the first one
    carrying the ``<<SYS>>`` block when the system prompt is not empty), an answer becomes
    `` " " + msg + " " + sep2``, an empty answer (the generation slot) adds nothing; leading ``sep`` stripped."""
    out = ""
    for i, (_, message) in enumerate(messages):
        if not message:
            continue
        if i == 0 and system:
            message = f"<<SYS>>\n{system}\n<</SYS>>\n\n{message}"
        out += sep + f"[INST] {message} [/INST]" if i % 2 == 0 else " " + message + " " + sep2
    return out.lstrip(sep) if sep else out


def test_mistral_instruct_is_llava_conv_mistral_instruct():
    # conv_mistral_instruct: system "", sep "", sep2 "</s>", roles USER/ASSISTANT
    messages = [(role, m) for q, a in TURNS for role, m in (("USER", q), ("ASSISTANT", a))]
    assert _text(_record(TURNS), "mistral_instruct") == llava_llama2_get_prompt("", "", "</s>", messages)
    prompt = _text(
        _record(TURNS[:1]) | {"conversations": _record(TURNS)["conversations"][:1]},
        "mistral_instruct",
        add_generation_prompt=True,
    )
    assert prompt == llava_llama2_get_prompt("", "", "</s>", [("USER", TURNS[0][0]), ("ASSISTANT", None)])
    assert _text(_record(TURNS), "mistral_instruct").endswith("white. </s>")


def hf_instructblip_text(prompt: str, num_query_tokens: int, image_token: str = "<image>") -> str:
    """transformers ``InstructBlipProcessor.__call__`` (models/instructblip/processing_instructblip.py, 5.23):
    the prompt is tokenized, and ``image_token * num_query_tokens`` (tokenized without special tokens) is put
    in front of it: no separator between the query tokens and the instruction. (LAVIS's
    ``Blip2VicunaInstruct.forward`` likewise concatenates query embeddings and the text's embeddings.)"""
    return image_token * num_query_tokens + prompt


def test_instructblip_puts_the_query_tokens_right_before_the_instruction():
    record = {"image": "x.png", "conversations": [{"from": "human", "value": "<image>\nWhat is in the picture?"}]}
    rendered = _text(record, "instructblip", add_generation_prompt=True)
    # one <image> marker stands for the num_query_tokens positions the model fills
    assert rendered.replace("<image>", "<image>" * 32) == hf_instructblip_text("What is in the picture?", 32)


def test_instructblip_answer_is_lavis_text_output_plus_eos():
    """LAVIS ``Blip2VicunaInstruct.forward`` (lavis/models/blip2_models/blip2_vicuna_instruct.py, 506965b,
    lines 193-214): ``text_output + eos_token`` tokenized apart from the input, so the answer starts a word."""
    text = _text(_record(TURNS[:1]), "instructblip")
    assert text == "<image>What is in the picture? A cat.</s>"
