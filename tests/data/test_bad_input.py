"""Bad records and files give errors that name the record and the reason; skips are counted."""

from __future__ import annotations

import json

import pytest

from lit.data.dataset import SupervisedDataset
from lit.data.image_inputs import ImageInputs
from lit.data.labels import LabelSpec
from lit.mask.chat_templates import get_template
from lit.mask.render import render
from lit.mask.scopes import get_scope
from lit.model.loading import _image_processor
from lit.records import RecordError, load_records

VICUNA = get_template("vicuna_v1")


def _rec(*turns, image=False, rid="bad-1"):
    record = {"id": rid, "conversations": [{"from": f, "value": v} for f, v in turns]}
    if image:
        record["image"] = "x.png"
    return record


@pytest.mark.parametrize(
    "record, reason",
    [
        (_rec(("human", "Hi"), ("human", "again")), "roles do not alternate"),
        (_rec(("gpt", "Hello"), ("human", "Hi")), "starts with a gpt turn"),
        (_rec(("human", "  "), ("gpt", "x")), "empty value"),
        (
            _rec(("human", "<image>"), ("gpt", "  "), image=True),
            "turn 1 \\(gpt\\) has an empty value",
        ),  # image-only human turn is fine
        (_rec(("user", "Hi"), ("gpt", "x")), "unknown role 'user'"),
        (_rec(("human", "<image>\nHi"), ("gpt", "see <image>"), image=True), "marker in a gpt turn"),
        (_rec(("human", "<image>\n<image>\nHi"), ("gpt", "x"), image=True), "2 <image> markers"),
        (_rec(("human", "Hi"), ("gpt", "x"), image=True), "0 <image> markers"),
        (_rec(("human", "<image>\nHi"), ("gpt", "x")), "no 'image' field"),
        (_rec(("human", "Hi")), "ends with a human turn"),
        ({"id": "bad-1", "conversations": []}, "empty 'conversations'"),
    ],
)
def test_invalid_conversations_name_record_and_reason(record, reason):
    with pytest.raises(RecordError, match=reason) as err:
        render(record, VICUNA)
    assert "bad-1" in str(err.value)


def _dataset(records, tokenizer, image_root, **kw):
    spec = LabelSpec(VICUNA, get_scope("vit"), kw.pop("max_length", 512), image_root=image_root, **kw)
    return SupervisedDataset(records, spec, tokenizer, ImageInputs(_image_processor(32), 16), progress=False)


def test_missing_image_is_an_error_naming_the_record(bpe_tokenizer, demo_data):
    records = [_rec(("human", "<image>\nHi"), ("gpt", "x"), image=True, rid="no-such-image")]
    with pytest.raises(RecordError, match="no-such-image.*missing image"):
        _dataset(records, bpe_tokenizer, demo_data)


def test_skip_mode_counts_every_skip_with_its_reason(bpe_tokenizer, demo_data, tmp_path):
    good = json.loads((demo_data / "train.json").read_text())[:3]
    bad = [
        _rec(("human", "<image>\nHi"), ("gpt", "x"), image=True, rid="missing"),
        _rec(("gpt", "x"), ("human", "y"), rid="gpt-first"),
    ]
    ds = _dataset(good + bad, bpe_tokenizer, demo_data, on_invalid="skip")
    report = ds.write_audit(tmp_path / "audit.json")
    assert len(ds) == 3 and report["n_skipped"] == 2
    assert {s["id"] for s in report["skipped"]} == {"missing", "gpt-first"}
    assert json.loads((tmp_path / "audit.json").read_text())["skipped_by_reason"]["missing image"] == 1


def test_unreadable_image_names_record_when_loaded(bpe_tokenizer, tmp_path):
    (tmp_path / "x.png").write_bytes(b"not a png")
    ds = _dataset([_rec(("human", "<image>\nHi"), ("gpt", "x"), image=True, rid="broken")], bpe_tokenizer, tmp_path)
    with pytest.raises(RecordError, match="broken.*unreadable image"):
        ds[0]


def test_too_long_is_an_error_or_a_counted_truncation(bpe_tokenizer, demo_data):
    long = [_rec(("human", "Hi"), ("gpt", "Tell me more about it, please! " * 10), rid="long")]
    with pytest.raises(RecordError, match="long.*too long.*data.too_long=truncate"):
        _dataset(long, bpe_tokenizer, demo_data, max_length=120)
    ds = _dataset(
        long + [_rec(("human", "Hi " * 80), ("gpt", "x"), rid="all-cut")],
        bpe_tokenizer,
        demo_data,
        max_length=120,
        too_long="truncate",
        on_invalid="skip",
    )
    assert len(ds[0]["input_ids"]) == 120
    assert ds.audit.truncated == ["long"]
    assert ds.audit.skipped == [
        {"id": "all-cut", "reason": "no supervised tokens: every label is masked (after truncation)"}
    ]


def test_malformed_json_names_the_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(_rec(("human", "a"), ("gpt", "b"))) + "\n{not json\n")
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        load_records(path)
    path = tmp_path / "data.json"
    path.write_text('[{"id": 1, "conversations": []}, {"id": 2}]')
    with pytest.raises(RecordError, match="record 2.*'conversations' list"):
        load_records(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_records(tmp_path / "nope.json")


def test_template_without_single_eos_token_is_reported(bpe_tokenizer):
    from lit.mask.render import encode
    from lit.mask.tokenizer import train_bpe

    plain = train_bpe(["hello there"] * 5, vocab_size=300)  # knows </s> but not <|endoftext|>
    spans = render(_rec(("human", "hello"), ("gpt", "there")), get_template("phi"))
    with pytest.raises(RecordError, match="eos text '<\\|endoftext\\|>' is not a single token"):
        encode(spans, plain, record_id="bad-1", image_token_id=None)


def test_run_with_a_missing_image_root_stops_before_loading_a_model(demo_data, tmp_path, monkeypatch):
    from tiny_runs import tiny_cfg

    from lit.model import loading as model_module
    from lit.train.run import run

    def must_not_build(*args, **kwargs):
        raise AssertionError("a model was built before the data was checked")

    monkeypatch.setattr(model_module, "compose_tiny", must_not_build)
    cfg = tiny_cfg(demo_data, tmp_path, f"data.image_root={tmp_path / 'no-images'}")
    with pytest.raises(FileNotFoundError, match=r"image root .*no-images does not exist but \d+ records have images"):
        run(cfg, tmp_path)
    assert not (tmp_path / "checkpoint").exists()


def test_run_on_a_corpus_with_zero_usable_records_says_why(demo_data, tmp_path):
    from tiny_runs import tiny_cfg

    from lit.train.run import run

    bad = [_rec(("gpt", "x"), ("human", "y"), rid=f"gpt-first-{i}") for i in range(3)]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    cfg = tiny_cfg(
        demo_data,
        tmp_path,
        f"data.path={tmp_path / 'bad.json'}",
        "data.on_invalid=skip",
        f"data.tokenizer_corpus={demo_data / 'train.json'}",
        "loss=vit",
    )
    with pytest.raises(ValueError, match=r"no usable records out of 3.*starts with a gpt turn"):
        run(cfg, tmp_path)
    assert not (tmp_path / "checkpoint").exists()


@pytest.mark.integration
def test_run_with_a_model_id_that_is_not_available_offline_says_what_to_do(demo_data, tmp_path):
    import os
    import subprocess
    import sys

    from tiny_runs import ROOT, TINY

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [
            sys.executable,
            "train.py",
            *TINY,
            f"data.root={demo_data}",
            f"paths.data_dir={tmp_path}",
            f"hydra.run.dir={tmp_path}",
            "model.pretrained=no-such-org/no-such-llava",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]  # one line that names the id and the command to fetch it
    assert "no-such-org/no-such-llava" in last and "hf download no-such-org/no-such-llava" in last
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "checkpoint").exists()
