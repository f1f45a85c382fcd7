"""POPE against lmms-eval's own pope task functions, called on the same answers.

Upstream: lmms-eval 0.7.3 (the installed package), ``lmms_eval/tasks/pope/utils.py``: ``pope_process_results``
(lines 17-28: the prediction is ``results[0].lower().strip()``, compared with the ground truth as it is),
``pope_aggregate_accuracy`` / ``_precision`` / ``_recall`` / ``_f1_score`` / ``_yes_ratio`` (lines 31-84).
``eval.yes_no_rule=exact`` must parse as ``pope_process_results`` does; accuracy and precision must agree;
recall and yes-ratio are defined differently on purpose (``scoring.binary_metrics``), and both definitions
are checked here on answers where they part.
"""

from __future__ import annotations

import pytest
from lmms_eval.tasks.pope import utils as lmms_pope

from lit.eval.tasks.scoring import binary_metrics, yes_no

# (model output, ground truth): a yes question answered "Yes." and a no question answered "no." are not
# parsed by lmms-eval's rule (its prediction keeps the full stop), nor is "Yes, there is a dog.".
ANSWERS = [
    ("Yes", "yes"),
    (" yes \n", "yes"),
    ("Yes.", "yes"),
    ("No", "yes"),
    ("Yes", "yes"),
    ("Yes, there is a dog.", "no"),
    ("yes", "no"),
    ("NO", "no"),
    ("no.", "no"),
    ("No", "no"),
]


def _lmms_rows():
    rows = [
        lmms_pope.pope_process_results({"question_id": i, "answer": gt}, [out]) for i, (out, gt) in enumerate(ANSWERS)
    ]
    return {metric: [r[metric] for r in rows] for metric in rows[0]}


def _our_rows():
    return [{"pred": yes_no(out, "exact"), "answer": gt} for out, gt in ANSWERS]


def test_exact_rule_is_lmms_evals_parse():
    lmms = _lmms_rows()["pope_accuracy"]
    for (out, _), ours, theirs in zip(ANSWERS, _our_rows(), lmms):
        expected = theirs["prediction"] if theirs["prediction"] in ("yes", "no") else None
        assert ours["pred"] == expected, out
    assert [r["pred"] for r in _our_rows()][2] is None  # "Yes." is not "yes" for lmms-eval


def test_accuracy_and_precision_match_lmms_eval():
    lmms, ours = _lmms_rows(), binary_metrics(_our_rows())
    assert ours["accuracy"] == pytest.approx(lmms_pope.pope_aggregate_accuracy(lmms["pope_accuracy"])) == 0.5
    assert ours["precision"] == pytest.approx(lmms_pope.pope_aggregate_precision(lmms["pope_precision"])) == 0.75


def test_recall_and_yes_ratio_definitions_against_lmms_eval():
    """TP 3, FP 1; of the 5 yes questions one is answered "no" and one is unparsed ("Yes.")."""
    lmms, ours = _lmms_rows(), binary_metrics(_our_rows())
    # lmms-eval: FN are the yes questions answered "no" only -> 3 / (3 + 1); ours: 3 of the 5 yes questions
    assert lmms_pope.pope_aggregate_recall(lmms["pope_recall"]) == pytest.approx(3 / 4)
    assert ours["recall"] == pytest.approx(3 / 5)
    assert lmms_pope.pope_aggregate_f1_score(lmms["pope_f1_score"]) == pytest.approx(0.75)
    assert ours["f1"] == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    # lmms-eval: the share of ground-truth yes questions; ours: the share of answers parsed as yes
    assert lmms_pope.pope_aggregate_yes_ratio(lmms["pope_yes_ratio"]) == pytest.approx(5 / 10)
    assert ours["yes_ratio"] == pytest.approx(4 / 10)
    assert ours["unparsed"] == 3
    # with no unparsed answer to a yes question the two recalls agree
    parsed = [(o, g) for o, g in ANSWERS if not (g == "yes" and yes_no(o, "exact") is None)]
    lmms_parsed = [
        lmms_pope.pope_process_results({"question_id": i, "answer": g}, [o])["pope_recall"]
        for i, (o, g) in enumerate(parsed)
    ]
    assert binary_metrics([{"pred": yes_no(o, "exact"), "answer": g} for o, g in parsed])["recall"] == pytest.approx(
        lmms_pope.pope_aggregate_recall(lmms_parsed)
    )
