"""HallusionBench's GPT-judge path against a local OpenAI-compatible endpoint (a stand-in for the API,
served over real HTTP): verdict parsing, the cache, missing keys, API errors, and lmms-eval end to end."""

from __future__ import annotations

import re

import pytest
from bench_fixtures import write_all

from lit.eval.judge import ChatJudge, parse_verdict
from lit.eval.tasks import scoring


def _grade(server):
    """The judge's verdicts: the prediction's first yes/no word against the reference's, unless ``server.fixed``
    fixes the verdict for a reference answer; each is recorded in ``server.verdicts``."""

    def reply(body: dict) -> str:
        prompt = body["messages"][0]["content"]
        reference = re.search(r"Reference answer: (.*)", prompt).group(1)
        prediction = re.search(r"Prediction: (.*)", prompt).group(1)
        said = scoring.yes_no(prediction)
        verdict = "unclear" if said is None else "correct" if said == scoring.yes_no(reference) else "incorrect"
        verdict = server.fixed.get(reference, verdict)
        server.verdicts.append((prompt, verdict))
        return verdict.capitalize() + "."

    return reply


@pytest.fixture
def judge_server(chat_server):
    chat_server.verdicts, chat_server.fixed = [], {}
    chat_server.reply = _grade(chat_server)
    return chat_server, chat_server.completions_url


def test_parse_verdict_checks_incorrect_before_correct():
    assert parse_verdict("Incorrect.") == 0 and parse_verdict("correct") == 1 and parse_verdict("I am not sure") == 2


def test_judge_calls_the_api_once_per_prompt_and_caches(judge_server, tmp_path, monkeypatch):
    server, url = judge_server
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-test")
    cache = tmp_path / "cache.jsonl"
    judge = ChatJudge(api_url=url, model="gpt-4", api_key_env="TEST_JUDGE_KEY", cache=str(cache))
    assert judge.verdict("Is it red?", "Yes, it is red.", "yes") == 1
    assert judge.verdict("Is it red?", "Yes, it is red.", "No.") == 0
    assert judge.verdict("Is it red?", "Yes, it is red.", "It depends") == 2
    assert judge.verdict("Is it red?", "Yes, it is red.", "yes") == 1
    assert len(server.requests) == 3 and server.requests[0]["headers"]["authorization"] == "Bearer sk-test"
    assert server.requests[0]["body"]["model"] == "gpt-4" and server.requests[0]["body"]["temperature"] == 0
    again = ChatJudge(api_url=url, model="gpt-4", api_key_env="TEST_JUDGE_KEY", cache=str(cache))
    assert again.verdict("Is it red?", "Yes, it is red.", "No.") == 0 and len(server.requests) == 3
    assert "sk-test" not in cache.read_text()


def test_judge_without_a_key_or_with_a_refused_key_says_so(judge_server, monkeypatch):
    server, url = judge_server
    monkeypatch.delenv("TEST_JUDGE_KEY", raising=False)
    with pytest.raises(RuntimeError, match=r"\$TEST_JUDGE_KEY.*kind=string_match"):
        ChatJudge(api_url=url, model="gpt-4", api_key_env="TEST_JUDGE_KEY").verdict("q", "Yes", "yes")
    monkeypatch.setenv("TEST_JUDGE_KEY", "bad")
    server.script = [401]
    with pytest.raises(RuntimeError, match="answered 401"):
        ChatJudge(api_url=url, model="gpt-4", api_key_env="TEST_JUDGE_KEY").verdict("q", "Yes", "yes")


@pytest.mark.integration
def test_hallusion_scored_by_the_judge_end_to_end(trained, judge_server, tmp_path, monkeypatch):
    from lit.eval.evaluate import evaluate
    from lit.eval.spec import EvalSpec

    server, url = judge_server
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-secret")
    root = write_all(tmp_path / "bench")
    _, run_dir, _ = trained
    judge = {"kind": "gpt", "api_url": url, "model": "gpt-4", "api_key_env": "TEST_JUDGE_KEY"}
    # the fixture's references: VD fig0 "No", VD fig1 "Yes", VS fig0 (no figure) "Yes", VS fig1 "No"
    server.fixed = {"Yes": "unclear", "No": "correct"}
    scores = evaluate(
        run_dir / "checkpoint", EvalSpec(("lit_hallusion",), str(root), hallusion_judge=judge), tmp_path / "eval"
    )
    assert len(server.verdicts) == 4  # one call per HallusionBench question
    got = scores["lit_hallusion"]
    # unclear is right only for the VS question without a figure: 3/4 right; figures: VD0 ok, VD1 wrong, VS1 ok;
    # question groups: VD (one wrong) and VS (both right)
    assert got["hallusion/aAcc"] == 75 and got["hallusion/fAcc"] == pytest.approx(200 / 3)
    assert got["hallusion/qAcc"] == 50 and got["hallusion/unparsed"] == 2
    assert "sk-secret" not in (tmp_path / "eval" / "scores.json").read_text()
    assert "sk-secret" not in "".join(p.read_text() for p in (tmp_path / "eval").rglob("settings.json"))


def test_gpt_judge_without_a_key_fails_before_generation(trained, tmp_path, monkeypatch):
    from lit.eval.evaluate import evaluate
    from lit.eval.spec import EvalSpec

    monkeypatch.delenv("TEST_JUDGE_KEY", raising=False)
    _, run_dir, _ = trained
    judge = {"kind": "gpt", "api_url": "http://127.0.0.1:9/x", "model": "gpt-4", "api_key_env": "TEST_JUDGE_KEY"}
    with pytest.raises(RuntimeError, match="TEST_JUDGE_KEY"):
        evaluate(
            run_dir / "checkpoint",
            EvalSpec(("lit_hallusion",), str(tmp_path), hallusion_judge=judge),
            tmp_path / "eval",
        )
    assert not (tmp_path / "eval").exists()
