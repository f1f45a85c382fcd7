"""The four loss scopes on hand-written conversations: supervised text runs written out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from lit.constants import IGNORE_INDEX, KIND_INDEX
from lit.mask.chat_templates import get_template
from lit.mask.render import encode, render
from lit.mask.scopes import SCOPES, get_scope, labels_for

SHORT = "Answer the question using a single word or phrase."
YESNO = "Answer yes or no."
SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions."
)
RECORD = {
    "id": "two-turns",
    "image": "x.png",
    "conversations": [
        {"from": "human", "value": f"What color is the circle? {SHORT}\n<image>"},
        {"from": "gpt", "value": "red"},
        {"from": "human", "value": f"Is there a blue square in the image? {YESNO}"},
        {"from": "gpt", "value": "Yes"},
    ],
}

# Supervised runs (maximal stretches of consecutive supervised tokens), decoded, white space removed.
GOLDEN = {
    "vit": ["red</s>", "Yes</s>"],
    "lit": ["Whatcoloristhecircle?", "red</s>", "Istherebluesquareintheimage?".replace("blue", "ablue"), "Yes</s>"],
    "lit_nosys": [
        f"Whatcoloristhecircle?{SHORT}".replace(" ", ""),
        "red</s>",
        f"Isthereabluesquareintheimage?{YESNO}".replace(" ", ""),
        "Yes</s>",
    ],
    "lit_all": [
        (SYSTEM + "USER:").replace(" ", ""),
        f"Whatcoloristhecircle?{SHORT}ASSISTANT:red</s>USER:Isthereabluesquareintheimage?{YESNO}"
        "ASSISTANT:Yes</s>".replace(" ", ""),
    ],
}


def supervised_runs(tokenizer, enc, labels) -> list[str]:
    runs, current = [], []
    for tid, lab in zip(enc.input_ids.tolist(), labels.tolist()):
        if lab != IGNORE_INDEX:
            current.append(tid)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return ["".join(tokenizer.decode(r).split()) for r in runs]


@pytest.mark.parametrize("scope", list(SCOPES))
def test_golden_supervised_runs(any_tokenizer, scope):
    tokenizer = any_tokenizer
    sentences = frozenset({SHORT, YESNO})
    enc = encode(
        render(RECORD, get_template("vicuna_v1"), template_sentences=sentences, record_id="two-turns"),
        tokenizer,
        record_id="two-turns",
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    labels = labels_for(enc, get_scope(scope))
    assert supervised_runs(tokenizer, enc, labels) == GOLDEN[scope]
    assert ((labels == IGNORE_INDEX) | (labels == enc.input_ids)).all()


def test_image_moves_to_front_as_one_token(bpe_tokenizer):
    spans = render(RECORD, get_template("vicuna_v1"))
    kinds = [s.kind for s in spans]
    image = kinds.index("image")
    assert spans[image].text == "<image>" and spans[image + 1].text == "\n" and spans[image - 2].text == "USER:"
    enc = encode(spans, bpe_tokenizer, record_id="r", image_token_id=bpe_tokenizer.convert_tokens_to_ids("<image>"))
    assert (enc.kinds == KIND_INDEX["image"]).sum() == 1


def test_templates_change_only_the_lit_scope(bpe_tokenizer):
    template = get_template("vicuna_v1")
    image_id = bpe_tokenizer.convert_tokens_to_ids("<image>")
    plain = encode(render(RECORD, template), bpe_tokenizer, record_id="r", image_token_id=image_id)
    marked = encode(
        render(RECORD, template, template_sentences=frozenset({SHORT})),
        bpe_tokenizer,
        record_id="r",
        image_token_id=image_id,
    )
    for scope in ("vit", "lit_nosys", "lit_all"):
        assert np.array_equal(labels_for(plain, get_scope(scope)), labels_for(marked, get_scope(scope)))
    assert (labels_for(marked, get_scope("lit")) != IGNORE_INDEX).sum() < (
        labels_for(plain, get_scope("lit")) != IGNORE_INDEX
    ).sum()


def test_unknown_scope_and_template_name_the_choices():
    with pytest.raises(KeyError, match="vit, lit, lit_nosys, lit_all"):
        get_scope("answer_only")
    with pytest.raises(KeyError, match="vicuna_v1"):
        get_template("vicuna")
