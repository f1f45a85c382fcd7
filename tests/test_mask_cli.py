"""The audit CLI: `python -m lit.mask show|dump` on a corpus, tokenizer directory and template."""

from __future__ import annotations

import json
import subprocess
import sys

from lit.constants import IGNORE_INDEX


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "lit.mask", *args], capture_output=True, text=True, check=True).stdout


def test_dump_and_show(tmp_path, demo_data, tokenizers):
    tok_dir = tmp_path / "tok"
    tokenizers["bpe"].save_pretrained(tok_dir)
    data = demo_data / "train.json"
    common = ["--data", str(data), "--tokenizer", str(tok_dir), "--template", "vicuna_v1"]
    rows = {}
    for loss in ("vit", "lit"):
        _cli("dump", *common, "--loss", loss, "--out", str(tmp_path / f"{loss}.jsonl"))
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
    assert 0 < grew < len(rows["vit"])  # some questions are supervised; pure-template turns are not
    out = _cli("show", *common, "--loss", "lit", "--n", "2", "--html", str(tmp_path / "mask.html"))
    assert out.count("=== train-") == 2 and "[" in out
    assert 'class="on"' in (tmp_path / "mask.html").read_text()
