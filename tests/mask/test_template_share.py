"""A warning, at label time, when the mined template sentences cover (nearly) every instruction token, so that
`lit` would supervise only the responses, exactly like `vit` (the default 5% threshold on a narrow corpus)."""

from __future__ import annotations

import json
import logging

import pytest
from hydra import compose, initialize_config_dir
from tiny_runs import CONF
from transformers import TrainingArguments

from lit.data.build import build_dataset
from lit.data.image_inputs import ImageInputs
from lit.data.labels import LabelSpec
from lit.mask.chat_templates import get_template
from lit.mask.mining import template_sentences, warn_if_all_template_sentences
from lit.mask.scopes import get_scope
from lit.model.loading import _image_processor

FIXED = ["What is shown here? Answer briefly.", "Which colour is it? Answer briefly.", "How many are there?"]


def _records(varied: bool) -> list[dict]:
    """40 text-only records: only a few fixed questions (each in far more than 5% of records), or a question of
    its own per record beside one shared answer-format sentence."""
    human = [
        f"Tell me what item number {i} of the list is made of. Answer briefly." if varied else FIXED[i % 3]
        for i in range(40)
    ]
    return [
        {"id": i, "conversations": [{"from": "human", "value": h}, {"from": "gpt", "value": f"answer {i}"}]}
        for i, h in enumerate(human)
    ]


def _label(tmp_path, records, tokenizer, scope="lit"):
    """The sentences, the labelled set and the warning, as ``lit.train.run.run`` gets them from the groups."""
    data = tmp_path / "train.json"
    data.write_text(json.dumps(records))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"loss={scope}",
                f"data.path={data}",
                "data.image_root=null",
                f"paths.cache_dir={tmp_path}/cache",
                f"data.label_cache_dir={tmp_path}/labels",
            ],
        )
    assert scope != "lit" or cfg.loss.template_sentences.min_share == 0.05  # the shipped default
    args = TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[])
    sentences = template_sentences(cfg.loss, get_scope(scope), cfg.data.path, cfg.paths.cache_dir)
    labels = LabelSpec.of(
        cfg.data, chat_template=get_template("vicuna_v1"), scope=get_scope(scope), template_sentences=sentences
    )
    dataset = build_dataset(
        cfg.data,
        records,
        labels=labels,
        tokenizer=tokenizer,
        image_inputs=ImageInputs(_image_processor(32), 16),
        args=args,
    )
    warn_if_all_template_sentences(dataset.audit, cfg.loss, len(sentences))
    return dataset


def test_a_corpus_of_only_templates_warns_with_the_share_and_the_setting(tmp_path, bpe_tokenizer, caplog):
    with caplog.at_level(logging.WARNING, logger="lit.mask.mining"):
        dataset = _label(tmp_path, _records(varied=False), bpe_tokenizer)
    assert dataset.audit.template_share() == 1.0 and "instruction" not in dataset.audit.supervised_by_kind
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "cover 100.0% of the instruction tokens" in warnings[0]
    assert "loss.template_sentences.min_share (now 0.05" in warnings[0]


def test_a_corpus_with_real_instructions_does_not_warn(tmp_path, bpe_tokenizer, caplog):
    with caplog.at_level(logging.WARNING, logger="lit.mask.mining"):
        dataset = _label(tmp_path, _records(varied=True), bpe_tokenizer)
    share = dataset.audit.template_share()
    assert 0 < share < 0.95 and dataset.audit.supervised_by_kind["instruction"] > 0  # templates mined, not all
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("scope", ["vit", "lit_nosys"])
def test_scopes_without_templates_never_warn(tmp_path, bpe_tokenizer, caplog, scope):
    with caplog.at_level(logging.WARNING, logger="lit.mask.mining"):
        _label(tmp_path, _records(varied=False), bpe_tokenizer, scope=scope)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_the_share_survives_the_label_cache(tmp_path, bpe_tokenizer):
    first = _label(tmp_path, _records(varied=True), bpe_tokenizer)
    again = _label(tmp_path, _records(varied=True), bpe_tokenizer)  # read back from data.label_cache_dir
    assert len(list((tmp_path / "labels").glob("labels_*"))) == 1
    assert again.audit.tokens_by_kind == first.audit.tokens_by_kind and again.audit.template_share() > 0
