"""VIT labels equal LLaVA-1.5's `preprocess_v1` labels (answer tokens + each round's </s>).

`llava_v1_supervised_ids` restates what LLaVA's
`preprocess_v1` (haotian-liu/LLaVA `llava/train/train.py`, lines 414-497; SOURCES.md [F]) computes for the
vicuna_v1 template: it tokenizes the whole prompt (splitting at
<image> into chunks, as `tokenizer_image_token` does), then per round (split on "</s>") masks the
first `len(tok(round up to " ASSISTANT: ")) - 2` tokens after the running cursor, moving the cursor by
`len(tok(round))`; for non-legacy tokenizers, rounds after the first are one shorter. Unlike LLaVA,
a cursor that does not land on the sequence length fails here instead of zeroing the labels.
"""

from __future__ import annotations

import pytest

from lit.constants import IGNORE_INDEX
from lit.mask.chat_templates import LLAVA_SYSTEM, get_template
from lit.mask.render import encode, render
from lit.mask.scopes import get_scope, labels_for

IMAGE_INDEX = -200


def _tok_image(tokenizer, text: str) -> list[int]:
    chunks = [tokenizer(c).input_ids for c in text.split("<image>")]
    ids = list(chunks[0])
    for chunk in chunks[1:]:
        ids += [IMAGE_INDEX] + chunk[1:]  # later chunks lose their BOS
    return ids


def llava_v1_supervised_ids(tokenizer, turns: list[tuple[str, str]]) -> list[int]:
    prompt = LLAVA_SYSTEM + " " + "".join(f"USER: {q} ASSISTANT: {a}</s>" for q, a in turns)
    ids = _tok_image(tokenizer, prompt)
    target = list(ids)
    cursor = 1
    target[:1] = [IGNORE_INDEX]
    for i, rnd in enumerate(prompt.split("</s>")):
        if not rnd:
            break
        head = rnd.split(" ASSISTANT: ")[0] + " ASSISTANT: "
        round_len, instruction_len = len(_tok_image(tokenizer, rnd)), len(_tok_image(tokenizer, head)) - 2
        if i != 0 and not tokenizer.legacy:
            round_len, instruction_len = round_len - 1, instruction_len - 1
        target[cursor : cursor + instruction_len] = [IGNORE_INDEX] * instruction_len
        cursor += round_len
    assert cursor == len(ids), f"LLaVA's tokenization-mismatch case ({cursor} vs {len(ids)})"
    return [t for t in target if t != IGNORE_INDEX]


CASES = {
    "single-turn": [("<image>\nWhat color is the circle?", "red")],
    "multi-turn": [
        ("<image>\nHow many shapes are there?", "two"),
        ("Is there a blue square in the image?", "Yes"),
        ("Describe the image briefly.", "A green triangle in the top left and a yellow circle."),
    ],
    "image-at-end": [("What color is the circle?\n<image>", "red"), ("Tell me more about it, please!", "It is round.")],
    "text-only": [("What is 3.5 plus 2?", "5.5"), ("Tell me more about it, please!", "3.5 plus 2 is 5.5.")],
}


def _llava_form(question: str) -> str:
    """LLaVA's preprocess_multimodal: the marker moves to the front as '<image>\\n'."""
    return "<image>\n" + question.replace("<image>", "").strip() if "<image>" in question else question


@pytest.mark.parametrize("case", list(CASES))
def test_vit_labels_match_llava_preprocess_v1(llama_tokenizer, case):
    turns = CASES[case]
    record = {
        "id": case,
        "conversations": [m for q, a in turns for m in ({"from": "human", "value": q}, {"from": "gpt", "value": a})],
    }
    if any("<image>" in q for q, _ in turns):
        record["image"] = "x.png"
    enc = encode(
        render(record, get_template("vicuna_v1")),
        llama_tokenizer,
        record_id=case,
        image_token_id=llama_tokenizer.convert_tokens_to_ids("<image>"),
    )
    ours = [int(t) for t in labels_for(enc, get_scope("vit")) if t != IGNORE_INDEX]
    expected = llava_v1_supervised_ids(llama_tokenizer, [(_llava_form(q), a) for q, a in turns])
    assert ours == expected
    eos = llama_tokenizer.convert_tokens_to_ids("</s>")
    assert ours.count(eos) == len(turns)
