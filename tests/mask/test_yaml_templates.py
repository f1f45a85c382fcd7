"""YAML-declared chat templates (``lit.mask.chat_templates.load_yaml``): the second way in, for checkpoints whose Jinja
template cannot be typed. A YAML file that declares a built-in template gives exactly its labels; a bad file is an
error naming the key."""

from __future__ import annotations

import numpy as np
import pytest

from lit.mask.chat_templates import TEMPLATES, get_template, load_yaml
from lit.mask.render import encode, render
from lit.mask.scopes import SCOPES, get_scope, labels_for

VICUNA_V1 = """\
# LLaVA-1.5's conv_vicuna_v1, declared
name: vicuna_v1
system_prompt: "A chat between a curious user and an artificial intelligence assistant. The assistant gives \\
  helpful, detailed, and polite answers to the user's questions."
system: [["{system}", system], [" ", format]]
user: [["USER:", role], [" ", format], ["{content}", content], [" ", format]]
assistant: [["ASSISTANT:", role], [" ", response], ["{content}", content], ["</s>", eos]]
generation_prompt: [["ASSISTANT:", role]]
eos: "</s>"
"""
CHATML = """\
name: chatml
system_prompt: You are a helpful assistant.
system:
  - ["<|im_start|>system", role]
  - ["\\n", format]
  - ["{system}", system]
  - ["<|im_end|>", format]
  - ["\\n", format]
user: [["<|im_start|>user", role], ["\\n", format], ["{content}", content], ["<|im_end|>", format], ["\\n", format]]
assistant:
  - ["<|im_start|>assistant", role]
  - ["\\n", format]
  - ["{content}", content]
  - ["<|im_end|>", eos]
  - ["\\n", format]
generation_prompt: [["<|im_start|>assistant", role], ["\\n", format]]
eos: <|im_end|>
"""
RECORDS = [
    {
        "id": "img",
        "image": "x.png",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat color is the circle? Answer the question using a single word."},
            {"from": "gpt", "value": "red"},
            {"from": "human", "value": "How many shapes are there?"},
            {"from": "gpt", "value": "two"},
        ],
    },
    {"id": "text", "conversations": [{"from": "human", "value": "Tell me more."}, {"from": "gpt", "value": "No"}]},
]
SENTENCES = frozenset({"Answer the question using a single word."})


def _labels(template, tokenizer, scope: str) -> list[tuple[list[int], list[int]]]:
    out = []
    image_id = tokenizer.convert_tokens_to_ids(template.image_token)
    for record in RECORDS:
        spans = render(record, template, template_sentences=SENTENCES, record_id=record["id"])
        enc = encode(spans, tokenizer, record_id=record["id"], image_token_id=image_id)
        out.append((enc.input_ids.tolist(), labels_for(enc, get_scope(scope)).tolist()))
    return out


@pytest.mark.parametrize("name, text", [("vicuna_v1", VICUNA_V1), ("chatml", CHATML)])
def test_a_yaml_declaring_a_builtin_template_is_that_template_and_gives_its_labels(name, text, any_tokenizer, tmp_path):
    path = tmp_path / f"declared_{name}.yaml"
    path.write_text(text)
    declared = get_template(str(path))  # model.chat_template=path/to/template.yaml
    assert declared == TEMPLATES[name]
    for scope in SCOPES:
        assert _labels(declared, any_tokenizer, scope) == _labels(TEMPLATES[name], any_tokenizer, scope)
    assert any(np.asarray(lab)[np.asarray(lab) != -100].size for _, lab in _labels(declared, any_tokenizer, "lit"))


def test_the_name_defaults_to_the_files_stem_and_the_system_block_to_none(tmp_path):
    path = tmp_path / "mine.yml"
    path.write_text(
        'user: [["Q:", role], [" ", format], ["{content}", content], ["\\n", format]]\n'
        'assistant: [["A:", role], [" ", response], ["{content}", content], ["</s>", eos]]\n'
        'generation_prompt: [["A:", role]]\n'
        "eos: </s>\n"
    )
    t = load_yaml(path)
    assert t.name == "mine" and t.system_prompt == "" and t.system == ()
    assert t.user == (("Q:", "role"), (" ", "format"), ("{content}", "content"), ("\n", "format"))
    assert t.image_first and t.image_token == "<image>" and t.image_sep == "\n"  # ChatTemplate's defaults


BAD = {  # (what is changed in CHATML, the key the error names)
    "unknown key": (("eos: <|im_end|>", "eos: <|im_end|>\nend_of_turn: x"), "unknown key 'end_of_turn'"),
    "missing": (("eos: <|im_end|>", ""), r"eos: missing"),
    "bad kind": (('["\\n", format]]', '["\\n", separator]]'), r"user\[4\]: kind 'separator'"),
    "not a pair": (('[["<|im_start|>user", role]', '[["<|im_start|>user"]'), r"user\[0\]: a \[text, kind\] pair"),
    "no body": (('["{content}", content], ["<|im_end|>", format]', '["<|im_end|>", format]'), r"^\S+: user: needs"),
    "body kind": (('["{content}", content], ["<|im_end|>", format]', '["{content}", role]'), r"user\[2\]: the message"),
    "eos not closing": (('["<|im_end|>", eos]', '["<|im_end|>", format]'), r"eos: '<\|im_end\|>' must close"),
    "no system piece": (('  - ["{system}", system]\n', ""), r"system: a system_prompt is given"),
    "type": (("eos: <|im_end|>", "eos: <|im_end|>\nimage_first: 1"), r"image_first: expected bool"),
    "pieces not a list": (
        ('generation_prompt: [["<|im_start|>assistant", role], ["\\n", format]]', "generation_prompt: x"),
        r"generation_prompt: a list",
    ),  # noqa: E501
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_declaration_is_an_error_naming_the_file_and_the_key(case, tmp_path):
    (old, new), message = BAD[case]
    assert old in CHATML
    path = tmp_path / "bad.yaml"
    path.write_text(CHATML.replace(old, new, 1))
    with pytest.raises(ValueError, match=message) as err:
        get_template(str(path))
    assert str(path) in str(err.value)


def test_a_missing_file_or_a_non_mapping_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such YAML file"):
        get_template(str(tmp_path / "absent.yaml"))
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="a mapping of ChatTemplate's fields"):
        get_template(str(tmp_path / "list.yaml"))
    with pytest.raises(KeyError, match="or a YAML file"):
        get_template("vicuna")
