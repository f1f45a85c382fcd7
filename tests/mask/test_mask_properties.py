"""Property tests over random conversations, every chat template, two tokenizers (hypothesis).

Each hypothesis example is a batch of 50 conversations; 200 examples per (template, tokenizer)
cover 10,000 conversations in the full run (`make test-full`), 8 examples (400 conversations) in the fast suite.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lit.constants import IGNORE_INDEX, KIND_INDEX
from lit.mask.chat_templates import TEMPLATES, get_template
from lit.mask.render import encode, render
from lit.mask.scopes import get_scope, labels_for

EXAMPLES = 200 if os.environ.get("LIT_FULL_TESTS") else 8
WORDS = [
    "What",
    "color",
    "is",
    "the",
    "circle",
    "square",
    "red",
    "Is",
    "there",
    "a",
    "blue",
    "image",
    "3.5",
    "plus",
    "2",
    "Answer",
    "yes",
    "or",
    "no",
    "Describe",
    "briefly",
    "please!",
    "user's",
    "A.",
    "B.",
    "\n",
    "über",
    "猫",
    "ok,",
    "(x)",
    "\t",
]
SENTENCES = ["Answer the question using a single word or phrase.", "Answer yes or no.", "Describe the image briefly."]
TEMPLATE_SET = frozenset(SENTENCES)

text = st.lists(st.sampled_from(WORDS), min_size=1, max_size=12).map(" ".join).filter(lambda s: s.strip())
question = st.tuples(text, st.sampled_from(["", *SENTENCES]), st.booleans()).map(
    lambda t: f"{t[0]} {t[1]}".strip() if t[2] else f"{t[1]} {t[0]}".strip()
)


@st.composite
def conversation(draw):
    n = draw(st.integers(1, 3))
    has_image = draw(st.booleans())
    where = draw(st.sampled_from(["front", "end", "middle"]))
    turns = []
    for k in range(n):
        q = draw(question)
        if has_image and k == 0:
            words = q.split(" ")
            q = {
                "front": "<image>\n" + q,
                "end": q + "\n<image>",
                "middle": " ".join(words[:1] + ["<image>"] + words[1:]),
            }[where]
        turns += [{"from": "human", "value": q}, {"from": "gpt", "value": draw(text)}]
    record = {"id": "random", "conversations": turns}
    if has_image:
        record["image"] = "x.png"
    return record


@pytest.mark.parametrize("template_name", sorted(TEMPLATES))
def test_label_invariants(any_tokenizer, template_name):
    tokenizer = any_tokenizer
    template = get_template(template_name)
    image_id = tokenizer.convert_tokens_to_ids(template.image_token)
    scopes = [get_scope(s) for s in ("vit", "lit", "lit_nosys", "lit_all")]

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(conversation(), min_size=50, max_size=50))
    def check(batch):
        for record in batch:
            spans = render(record, template, template_sentences=TEMPLATE_SET)
            enc = encode(spans, tokenizer, record_id="random", image_token_id=image_id)
            text = "".join(s.text for s in spans)
            chunks = [
                tokenizer(c).input_ids for c in text.split(template.image_token)
            ]  # as tokenizer_image_token, llava/mm_utils.py 185-198
            drop = int(chunks[0][:1] == [tokenizer.bos_token_id])  # later chunks lose their BOS
            expected = chunks[0] + [i for c in chunks[1:] for i in [image_id, *c[drop:]]]
            assert enc.input_ids.tolist() == expected  # one tokenization per chunk around the image
            supervised = []
            for scope in scopes:
                labels = labels_for(enc, scope)
                assert ((labels == IGNORE_INDEX) | (labels == enc.input_ids)).all()
                supervised.append(set(np.nonzero(labels != IGNORE_INDEX)[0].tolist()))
            vit, lit, nosys, everything = supervised
            assert vit <= lit <= nosys <= everything
            never = np.isin(enc.kinds, [KIND_INDEX[k] for k in ("image", "system", "role", "template", "special")])
            assert not (labels_for(enc, scopes[1])[never] != IGNORE_INDEX).any()
            assert (enc.input_ids == image_id).sum() == ("image" in record)
            assert len(vit) >= len(record["conversations"]) // 2  # at least every end-of-turn

    check()
