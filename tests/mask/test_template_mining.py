"""Template mining: sentence splitting, per-record counting, thresholds, the cached artefact, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lit.mask.mining import TemplateSentences, mine, mine_file, sentence_spans


def _rec(*questions):
    return {
        "conversations": [m for q in questions for m in ({"from": "human", "value": q}, {"from": "gpt", "value": "a"})]
    }


def test_sentence_split():
    text = "What color is it? Answer with one word.\nOptions:\nA. red\nB. blue\nIs it 3.5 cm?  Yes!"
    assert [text[a:b] for a, b in sentence_spans(text)] == [
        "What color is it?",
        "Answer with one word.",
        "Options:",
        "A. red",
        "B. blue",
        "Is it 3.5 cm?",
        "Yes!",
    ]


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
    assert TemplateSentences.load(out).corpus_sha256 == first.corpus_sha256
    out.write_text(out.read_text().replace("Answer now.", "Cached."))
    assert "Cached." in mine_file(data, out, min_share=0.5).sentences  # same bytes + params: reused
    data.write_text(json.dumps([_rec("Hello there. Answer now.")] * 4))
    assert "Answer now." in mine_file(data, out, min_share=0.5).sentences  # corpus changed: mined again


def test_cli_prints_top_sentences(tmp_path):
    data = tmp_path / "d.json"
    data.write_text(json.dumps([_rec("Hello there. Answer now.")] * 3 + [_rec("Other.")]))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "lit.mask.mining",
            "mine",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "t.json"),
            "--min-share",
            "0.5",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "4 records; 2 templates" in out.stdout and "Answer now." in out.stdout


def _mix665k_shaped(n: int) -> list[dict]:
    sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
    from mining_corpus import corpus

    return corpus(n, seed=1)


def test_option_lines_are_never_templates_on_a_multiple_choice_corpus():
    """20% of questions are multiple choice over six colours in four label styles, so each option line
    (``A. red``, ``(b) blue``, ``3. green``, ``D) white``) is in over 1% of records; mined at 1%, none of
    them is a template, while the letter-answer suffix that follows the options is one."""
    from collections import Counter

    from lit.mask.mining import human_sentences, is_option

    records = _mix665k_shaped(3000)
    result = mine(records, min_share=0.01, progress=False)
    shares = Counter(s for r in records for s in human_sentences(r))
    frequent_options = {s for s, c in shares.items() if is_option(s) and c >= 0.01 * len(records)}
    assert {"A. red", "(b) blue", "3. green", "D) white"} <= frequent_options  # the test can fail
    assert not frequent_options & result.sentences
    assert "Answer with the option's letter from the given choices directly." in result.sentences


def test_option_labels_and_sentence_split():
    from lit.mask.mining import is_option

    text = "Pick one.\n3. green\n12. blue\n(c) red\nA) white\nIt is 3. Next."
    assert [text[a:b] for a, b in sentence_spans(text)] == [
        "Pick one.",
        "3. green",
        "12. blue",
        "(c) red",
        "A) white",
        "It is 3.",
        "Next.",
    ]
    assert [
        is_option(s) for s in ("A. red", "(b) blue", "3. green", "A) white", "A cat.", "It is 3.", "Pick one.")
    ] == [True, True, True, True, False, False, False]


def test_an_option_in_a_template_file_is_still_supervised():
    from lit.mask.chat_templates import get_template
    from lit.mask.render import render

    record = _rec("What is it?\nA. red\nB. blue\nAnswer with a letter.")
    spans = render(record, get_template("vicuna_v1"), template_sentences=frozenset({"A. red", "Answer with a letter."}))
    kinds = {s.text: s.kind for s in spans}
    assert kinds["Answer with a letter."] == "template" and "A. red" in "".join(
        s.text for s in spans if s.kind == "instruction"
    )


def test_mining_settings_come_from_the_loss_config(tmp_path):
    from omegaconf import OmegaConf

    from lit.mask.mining import CONF_DIR, loss_settings

    # every scope composes conf/loss/default.yaml, where the template-sentence settings are written
    expected = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "loss" / "default.yaml").template_sentences)
    assert loss_settings("lit") == expected and expected["min_share"] == 0.05
    data = tmp_path / "d.json"  # a sentence in 3% of records: a template at 0.01, not at the config's 0.05
    data.write_text(json.dumps([_rec("Rare tail.")] * 3 + [_rec(f"Question {i}?") for i in range(97)]))
    out = subprocess.run(
        [sys.executable, "-m", "lit.mask.mining", "mine", "--data", str(data), "--out", str(tmp_path / "t.json")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "0 templates (share >= 0.05)" in out
    assert TemplateSentences.load(tmp_path / "t.json").min_share == 0.05
