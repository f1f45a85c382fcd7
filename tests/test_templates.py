"""Template mining: sentence splitting, per-record counting, thresholds, the cached artefact, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

from lit.templates import TemplateSet, mine, mine_file, sentence_spans


def _rec(*questions):
    return {"conversations": [m for q in questions for m in ({"from": "human", "value": q}, {"from": "gpt", "value": "a"})]}


def test_sentence_split():
    text = "What color is it? Answer with one word.\nOptions:\nA. red\nB. blue\nIs it 3.5 cm?  Yes!"
    assert [text[a:b] for a, b in sentence_spans(text)] == [
        "What color is it?", "Answer with one word.", "Options:", "A. red", "B. blue", "Is it 3.5 cm?", "Yes!"]


def test_counts_records_not_occurrences_and_applies_thresholds():
    s = "Answer yes or no."
    records = [_rec(f"<image>\nIs it red? {s}", f"Is it blue? {s}")] * 6 + [_rec("Is it red? Tell me.")] * 4
    result = mine(records, min_share=0.5, progress=False)
    counts = {t["sentence"]: t["count"] for t in result.top}
    assert counts[s] == 6 and counts["Is it red?"] == 10 and counts["Tell me."] == 4
    assert result.sentences == {s, "Is it red?", "Is it blue?"}
    assert mine(records, min_share=0.5, top_k=1, progress=False).sentences == {"Is it red?"}
    assert mine(records, min_share=0.0, min_count=7, progress=False).sentences == {"Is it red?"}


def test_artefact_is_cached_by_corpus_hash(tmp_path):
    data = tmp_path / "d.json"
    data.write_text(json.dumps([_rec("Hello there. Answer now.")] * 3))
    out = tmp_path / "t.json"
    first = mine_file(data, out, min_share=0.5)
    assert TemplateSet.load(out).corpus_sha256 == first.corpus_sha256
    out.write_text(out.read_text().replace("Answer now.", "Cached."))
    assert "Cached." in mine_file(data, out, min_share=0.5).sentences  # same bytes + params: reused
    data.write_text(json.dumps([_rec("Hello there. Answer now.")] * 4))
    assert "Answer now." in mine_file(data, out, min_share=0.5).sentences  # corpus changed: mined again


def test_cli_prints_top_sentences(tmp_path):
    data = tmp_path / "d.json"
    data.write_text(json.dumps([_rec("Hello there. Answer now.")] * 3 + [_rec("Other.")]))
    out = subprocess.run([sys.executable, "-m", "lit.templates", "mine", "--data", str(data), "--out",
                          str(tmp_path / "t.json"), "--min-share", "0.5"], capture_output=True, text=True, check=True)
    assert "4 records; 2 templates" in out.stdout and "Answer now." in out.stdout
