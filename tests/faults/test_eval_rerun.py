"""A killed lmms-eval run started again. lmms-eval 0.7.3 cannot resume one (its response cache stores a request
type's responses only once the model has returned all of them; ``lit.eval.evaluate``'s docstring), so the rerun
redoes the evaluation from scratch: every request generated again, the undisturbed run's scores. The kill, half
way through the generations, leaves no done marker: an earlier evaluation's ``scores.json`` is removed when one
starts, and the new one is written last, whole."""

from __future__ import annotations

import json

import pytest

from lit.eval.evaluate import evaluate
from lit.eval.spec import EvalSpec

pytestmark = pytest.mark.integration


class Killed(BaseException):
    """Stands for SIGKILL at the injected point (nothing after it runs, ``except Exception`` does not catch it)."""


def test_a_killed_evaluation_leaves_no_done_marker_and_the_rerun_gives_the_same_scores(
    trained, demo_data, tmp_path, monkeypatch
):
    from lit.eval.lmms_model import LitLlava

    _, run_dir, _ = trained
    ckpt, spec = run_dir / "checkpoint", EvalSpec(("demo_pope",), str(demo_data), limit=6)
    reference = evaluate(ckpt, spec, tmp_path / "reference")

    out, generated = tmp_path / "eval", []
    out.mkdir()
    (out / "scores.json").write_text(json.dumps({"scores": {"demo_pope": {"pope_f1": 0.0}}}))  # an earlier run's
    generate = LitLlava.generate_until

    def killed_half_way(self, requests):
        generated.extend(generate(self, requests[: len(requests) // 2]))
        raise Killed

    monkeypatch.setattr(LitLlava, "generate_until", killed_half_way)
    with pytest.raises(Killed):
        evaluate(ckpt, spec, out, results_dir=tmp_path / "runs", experiment="e")
    assert len(generated) == 3
    assert not (out / "scores.json").exists() and not list(out.glob(".scores.json.*"))  # not done
    assert not (tmp_path / "runs").exists() and not (out / "samples").exists()

    def counted(self, requests):
        generated.extend(requests)
        return generate(self, requests)

    generated.clear()
    monkeypatch.setattr(LitLlava, "generate_until", counted)
    scores = evaluate(ckpt, spec, out, results_dir=tmp_path / "runs", experiment="e")
    assert len(generated) == 6  # from scratch: nothing of the killed run is reused
    assert scores == reference and json.loads((out / "scores.json").read_text())["scores"] == reference
    assert (out / "samples" / "demo_pope.jsonl").read_bytes() == (
        tmp_path / "reference" / "samples" / "demo_pope.jsonl"
    ).read_bytes()
