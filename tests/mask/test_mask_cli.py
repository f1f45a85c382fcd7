"""The audit CLI: `python -m lit.mask.audit show|dump` on a corpus, tokenizer directory and template."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lit.constants import IGNORE_INDEX

pytestmark = pytest.mark.integration  # the mining and audit CLIs, run as subprocesses on a corpus


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "lit.mask.audit", *args], capture_output=True, text=True, check=True
    ).stdout


def test_dump_and_show(tmp_path, demo_data, tokenizers):
    tok_dir = tmp_path / "tok"
    tokenizers["bpe"].save_pretrained(tok_dir)
    data = demo_data / "train.json"
    common = ["--data", str(data), "--tokenizer", str(tok_dir), "--chat-template", "vicuna_v1"]
    # the demo corpus is narrow: at the 5% default every demo question is a template, so mine at the demo's
    # own share (conf/experiment/demo_lit.yaml) as training the demo does, and hand the artefact to the audit
    templates = tmp_path / "templates.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "lit.mask.mining",
            "mine",
            "--data",
            str(data),
            "--out",
            str(templates),
            "--min-share",
            "0.4",
        ],
        check=True,
        capture_output=True,
    )
    rows = {}
    for loss in ("vit", "lit"):
        _cli(
            "dump",
            *common,
            "--loss",
            loss,
            "--template-sentences",
            str(templates),
            "--out",
            str(tmp_path / f"{loss}.jsonl"),
        )
        rows[loss] = [json.loads(line) for line in (tmp_path / f"{loss}.jsonl").read_text().splitlines()]
    assert len(rows["vit"]) == len(json.loads(data.read_text()))
    image_id = tokenizers["bpe"].convert_tokens_to_ids("<image>")
    grew = 0
    for vit, lit in zip(rows["vit"], rows["lit"]):
        assert vit["input_ids"] == lit["input_ids"] and vit["input_ids"].count(image_id) == 1
        on_vit = {i for i, x in enumerate(vit["labels"]) if x != IGNORE_INDEX}
        on_lit = {i for i, x in enumerate(lit["labels"]) if x != IGNORE_INDEX}
        assert on_vit <= on_lit
        grew += on_vit < on_lit
    assert grew > 0  # questions are supervised under lit
    tok = tokenizers["bpe"]
    for lit in rows["lit"]:  # the template in every record (share 1.0) never is
        assert not any("Answer yes or no" in run for run in _supervised_runs(tok, lit["labels"]))
    out = _cli(
        "show",
        *common,
        "--loss",
        "lit",
        "--template-sentences",
        str(templates),
        "--n",
        "2",
        "--html",
        str(tmp_path / "mask.html"),
    )
    assert out.count("=== train-") == 2 and "[" in out
    assert 'class="on"' in (tmp_path / "mask.html").read_text()


def _supervised_runs(tok, labels: list[int]) -> list[str]:
    """The decoded text of each maximal run of supervised positions."""
    runs, current = [], []
    for x in labels + [IGNORE_INDEX]:
        if x != IGNORE_INDEX:
            current.append(x)
        elif current:
            runs.append(tok.decode(current))
            current = []
    return runs


def test_dump_on_a_llama_tokenizer_without_image_token(tmp_path, sp_model_dir):
    """The proof command on a SentencePiece Llama tokenizer that has no <image>: ``vit`` labels equal LLaVA's
    ``preprocess_v1`` (haotian-liu/LLaVA llava/train/train.py, restated in test_llava_parity), and under
    ``lit`` (thresholds of conf/loss/lit.yaml) every record's option lines and questions are supervised."""
    import sys as _sys
    from pathlib import Path

    from test_llava_parity import _llava_form, llava_v1_supervised_ids
    from transformers import LlamaTokenizer

    from lit.mask.chat_templates import get_template
    from lit.mask.mining import is_option, sentence_spans
    from lit.mask.tokenizer import load_prepared

    tok_dir = tmp_path / "vicuna_tok"
    LlamaTokenizer.from_pretrained(str(sp_model_dir), legacy=False, add_bos_token=True).save_pretrained(tok_dir)
    assert "<image>" not in LlamaTokenizer.from_pretrained(str(tok_dir)).get_vocab()
    _sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
    from mining_corpus import LETTER, SHORT, corpus

    records = corpus(200, seed=3)
    data = tmp_path / "mix.json"
    data.write_text(json.dumps(records))
    common = ["--data", str(data), "--tokenizer", str(tok_dir), "--chat-template", "vicuna_v1"]
    rows = {}
    for loss in ("vit", "lit"):
        _cli("dump", *common, "--loss", loss, "--out", str(tmp_path / f"{loss}.jsonl"))
        rows[loss] = [json.loads(line) for line in (tmp_path / f"{loss}.jsonl").read_text().splitlines()]
    tok = load_prepared(tok_dir, get_template("vicuna_v1"))
    n_options = 0
    for record, vit, lit in zip(records, rows["vit"], rows["lit"]):
        turns = [(t["value"], a["value"]) for t, a in zip(record["conversations"][::2], record["conversations"][1::2])]
        assert [x for x in vit["labels"] if x != IGNORE_INDEX] == llava_v1_supervised_ids(
            tok, [(_llava_form(q), a) for q, a in turns]
        )
        supervised = "|".join(_supervised_runs(tok, lit["labels"]))
        for question, _ in turns:
            text = question.replace("<image>", "")
            for a, b in sentence_spans(text):
                sentence = text[a:b]
                if sentence in (LETTER, SHORT):  # templates (in > 5% of records): not supervised
                    assert sentence not in supervised
                else:  # the question and each option line
                    assert sentence in supervised, (record["id"], sentence)
                    n_options += is_option(sentence)
    assert n_options > 40


def test_export_writes_a_datasets_folder_with_the_dumps_labels_and_the_span_weights(tmp_path, demo_data, tokenizers):
    """`export` on the demo corpus: `datasets.load_from_disk` gives the `dump` command's ids and labels, each
    token's weight by its kind (instruction 0.5, answer and end of turn 1, everything else 0, where labelled), the
    record's image paths, and a manifest; image positions are never supervised; a malformed weight is refused."""
    import datasets

    from lit.constants import SPAN_KINDS

    tok_dir = tmp_path / "tok"
    tokenizers["bpe"].save_pretrained(tok_dir)
    data = demo_data / "train.json"
    templates = tmp_path / "templates.json"
    subprocess.run(
        [sys.executable, "-m", "lit.mask.mining", "mine", "--data", str(data), "--out", str(templates)]
        + ["--min-share", "0.4"],
        check=True,
        capture_output=True,
    )
    common = ["--data", str(data), "--tokenizer", str(tok_dir), "--chat-template", "vicuna_v1", "--loss", "lit"]
    common += ["--template-sentences", str(templates)]
    _cli("dump", *common, "--out", str(tmp_path / "lit.jsonl"))
    out = _cli("export", *common, "--weights", "instruction=0.5", "--out", str(tmp_path / "export"))
    assert "records exported" in out
    dumped = [json.loads(line) for line in (tmp_path / "lit.jsonl").read_text().splitlines()]
    exported = datasets.load_from_disk(str(tmp_path / "export"))
    manifest = json.loads((tmp_path / "export" / "lit_export.json").read_text())
    records = json.loads(data.read_text())
    assert len(exported) == len(dumped) == len(records) == manifest["records"]
    assert manifest["weights"] == {"instruction": 0.5} and manifest["kind_names"] == list(SPAN_KINDS)
    image_id = manifest["image_token_id"]
    assert image_id == tokenizers["bpe"].convert_tokens_to_ids("<image>")
    expected_weight = {"instruction": 0.5, "response": 1.0, "eos": 1.0}
    n_instruction = 0
    for row, dump, record in zip(exported, dumped, records):
        assert row["id"] == str(dump["id"]) and row["input_ids"] == dump["input_ids"]
        assert row["labels"] == dump["labels"]  # a weight above 0 supervises what the binary scope does
        assert row["images"] == [record["image"]]
        for tid, label, kind, weight in zip(row["input_ids"], row["labels"], row["kinds"], row["loss_weights"]):
            name = SPAN_KINDS[kind]
            want = expected_weight.get(name, 0.0) if label != IGNORE_INDEX else 0.0
            assert weight == pytest.approx(want), (row["id"], name, label)
            if tid == image_id:
                assert label == IGNORE_INDEX and weight == 0.0
            n_instruction += name == "instruction" and label != IGNORE_INDEX
    assert n_instruction > 0
    bad = subprocess.run(
        [sys.executable, "-m", "lit.mask.audit", "export", *common, "--weights", "instruction=lots"]
        + ["--out", str(tmp_path / "bad")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "--weights instruction=lots: write kind=weight" in bad.stderr
    assert not (tmp_path / "bad").exists()
