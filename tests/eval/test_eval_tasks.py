"""Evaluation tasks: scoring against hand-computed values, and lmms-eval end to end on offline copies of
the hub data sets (exact hub fields, saved with `datasets`) with a tiny trained checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from bench_fixtures import write_all
from wandb_records import read_offline_run

from lit.eval.tasks import scoring

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "text, rule, expected",
    [
        ("Yes", "first_word", "yes"),
        ("Yes, there is a dog.", "first_word", "yes"),
        ("no.", "first_word", "no"),
        ("There is a dog.", "first_word", None),
        ("", "first_word", None),
        ("Yes, there is a dog.", "exact", None),
        (" No. ", "exact", None),
        (" No \n", "exact", "no"),
        ("There is no dog.", "llava", "no"),
        ("There is a dog. It is not red.", "llava", "yes"),
        ("I think so", "llava", "yes"),
        ("", "llava", None),
    ],
)
def test_yes_no_rules(text, rule, expected):
    assert scoring.yes_no(text, rule) == expected


def test_pope_f1_by_hand():
    rows = [  # random: TP, FP, FN, TN, unparsed positive -> P 1/2, R 1/3, F1 0.4, acc 2/5
        {"pred": "yes", "answer": "yes", "category": "random"},
        {"pred": "yes", "answer": "no", "category": "random"},
        {"pred": "no", "answer": "yes", "category": "random"},
        {"pred": "no", "answer": "no", "category": "random"},
        {"pred": None, "answer": "yes", "category": "random"},
        # adversarial: all right -> F1 1
        {"pred": "yes", "answer": "yes", "category": "adversarial"},
        {"pred": "no", "answer": "no", "category": "adversarial"},
    ]
    s = scoring.pope_scores(rows)
    assert s["precision_random"] == pytest.approx(0.5) and s["recall_random"] == pytest.approx(1 / 3)
    assert s["f1_random"] == pytest.approx(0.4) and s["accuracy_random"] == pytest.approx(0.4)
    assert s["yes_ratio_random"] == pytest.approx(0.4) and s["unparsed_random"] == 1 and s["n_random"] == 5
    assert s["f1_mean"] == pytest.approx(0.7) and s["unparsed"] == 1


def test_mme_score_by_hand():
    rows = [
        {"category": "existence", "image_id": "a", "correct": True},
        {"category": "existence", "image_id": "a", "correct": True},
        {"category": "existence", "image_id": "b", "correct": True},
        {"category": "existence", "image_id": "b", "correct": False},
        {"category": "code_reasoning", "image_id": "c", "correct": False},
        {"category": "code_reasoning", "image_id": "c", "correct": False},
    ]
    s = scoring.mme_scores(rows)
    assert s["existence"] == pytest.approx(100 * 3 / 4 + 100 * 1 / 2)  # acc 0.75, acc+ 0.5
    assert s["code_reasoning"] == 0 and s["perception"] == pytest.approx(125) and s["cognition"] == 0


def test_hallusion_grouping_by_hand():
    def row(cat, set_id, fig, q, ok):
        return {
            "category": cat,
            "subcategory": "s",
            "set_id": set_id,
            "figure_id": fig,
            "question_id": q,
            "correct": ok,
        }

    rows = [
        row("VD", 0, 0, 0, True),
        row("VD", 0, 0, 1, False),  # figure VD/0/0: one wrong -> figure wrong
        row("VD", 0, 1, 0, True),
        row("VD", 0, 1, 1, True),  # figure VD/0/1: right
        row("VS", 1, 0, 0, True),
        row("VS", 1, 1, 0, True),
    ]  # VS figure 0 is no figure
    s = scoring.hallusion_scores(rows)
    assert s["aAcc"] == pytest.approx(100 * 5 / 6)
    assert s["fAcc"] == pytest.approx(100 * 2 / 3)  # figures VD/0/0 (wrong), VD/0/1, VS/1/1
    assert s["qAcc"] == pytest.approx(100 * 2 / 3)  # questions VD/0/q0 (right), VD/0/q1 (wrong), VS/1/q0 (right)


def test_rouge_l_and_answer_match_by_hand():
    # LCS("the cat sat", "the cat sat on the mat") = 3: P = 1, R = 1/2, F = 2/3
    assert scoring.rouge_l("the cat sat", "the cat sat on the mat") == pytest.approx(2 / 3)
    assert scoring.rouge_l("", "a b") == 0
    assert scoring.normalise_answer("Yes.") == scoring.normalise_answer(" yes")


def test_chair_on_hand_made_captions():
    caps = [
        "A man rides a bicycle next to two dogs.",  # person, bicycle, dog; truth person, bicycle
        "A toilet seat in a bathroom.",  # toilet (the seat is no chair); truth toilet
        "Cars parked by a dining table and a cat.",
    ]  # car, dining table, cat; truth car
    truths = [["person", "bicycle"], ["toilet"], ["car"]]
    rows = [{"mentioned": scoring.chair_objects(c), "truth": t} for c, t in zip(caps, truths)]
    assert rows[0]["mentioned"] == ["person", "bicycle", "dog"] and rows[1]["mentioned"] == ["toilet"]
    assert rows[2]["mentioned"] == ["car", "dining table", "cat"]
    s = scoring.chair_scores(rows)
    assert s["chair_s"] == pytest.approx(100 * 2 / 3)  # captions 1 and 3 hallucinate
    assert s["chair_i"] == pytest.approx(100 * 3 / 7)  # dog, dining table, cat of 7 mentions
    assert s["recall"] == pytest.approx(100.0)


def test_multiinstruct_average_over_instructions():
    from importlib import import_module

    utils = import_module("lit.eval.tasks.lit_multiinstruct.utils")
    rows = [
        {"instruction_id": 0, "score": 100.0},
        {"instruction_id": 0, "score": 0.0},
        {"instruction_id": 1, "score": 100.0},
        {"instruction_id": 1, "score": 100.0},
    ]
    s = utils.aggregate(rows)
    assert (
        s["instruction_0"] == 50 and s["instruction_1"] == 100 and s["score"] == 75 and s["sd_over_instructions"] == 25
    )


TASKS = ["lit_pope", "lit_mme", "lit_hallusion", "lit_chair", "lit_caption", "lit_mi_ve", "lit_mi_tvqa"]


@pytest.fixture(scope="module")
def bench_run(trained, tmp_path_factory):
    from lit.eval.evaluate import evaluate
    from lit.eval.spec import EvalSpec

    root = write_all(tmp_path_factory.mktemp("bench"))
    _, run_dir, _ = trained
    out = tmp_path_factory.mktemp("bench_eval")
    scores = evaluate(
        run_dir / "checkpoint",
        EvalSpec(tuple(TASKS), str(root), yes_no_rule="llava"),
        out / "eval",
        results_dir=out / "runs",
        experiment="tiny_lit",
        config={"loss": "lit"},
    )
    return scores, out


@pytest.mark.integration
def test_lmms_eval_scores_every_benchmark_offline(bench_run):
    scores, out = bench_run
    assert set(scores) == set(TASKS)
    pope = scores["lit_pope"]
    assert pope["pope/n_adversarial"] == pope["pope/n_popular"] == pope["pope/n_random"] == 2
    assert 0 <= pope["pope/f1_mean"] <= 1
    assert pope["pope/unparsed"] == 0  # the llava rule parses every non-empty output
    assert {"mme/perception", "mme/cognition", "mme/color", "mme/code_reasoning"} <= set(scores["lit_mme"])
    assert {"hallusion/aAcc", "hallusion/fAcc", "hallusion/qAcc"} <= set(scores["lit_hallusion"])
    assert 0 <= scores["lit_chair"]["chair/chair_s"] <= 100 and scores["lit_caption"]["caption/n"] == 2
    assert all(f"multiinstruct/instruction_{k}" in scores["lit_mi_ve"] for k in range(5))
    stored = json.loads((out / "runs" / "tiny_lit" / "lit_pope.json").read_text())
    assert stored["scores"] == pope and stored["config"] == {"loss": "lit"} and stored["lmms_eval_version"]
    assert stored["version"] is not None and stored["generation_kwargs"]["max_new_tokens"] == 16
    assert stored["settings"]["yes_no_rule"] == "llava" and len(stored["git_sha"]) >= 7


def test_missing_evaluation_data_says_how_to_get_it(tmp_path):
    from lit.eval.evaluate import prepare_tasks

    with pytest.raises(FileNotFoundError, match="python -m lit.eval.eval_data fetch pope"):
        prepare_tasks(["lit_pope"], tmp_path, tmp_path / "eval")
    with pytest.raises(FileNotFoundError, match="visual_text_extraction/test.jsonl is missing; put MultiInstruct"):
        prepare_tasks(["lit_multiinstruct"], tmp_path, tmp_path / "eval")


def test_unparsable_and_empty_outputs_are_scored_wrong_and_counted():
    from importlib import import_module

    pope = import_module("lit.eval.tasks.lit_pope.utils")
    rows = [{"pred": scoring.yes_no(text), "answer": "yes", "category": "random"} for text in ("", "maybe", "Yes")]
    s = pope.aggregate(rows)
    assert s["unparsed"] == 2 and s["accuracy_random"] == pytest.approx(1 / 3)


@pytest.mark.integration
def test_evaluate_cli_files_scores_under_the_training_run_name(trained, demo_data, tmp_path):
    import subprocess
    import sys

    cfg, run_dir, _ = trained
    subprocess.run(
        [
            sys.executable,
            "evaluate.py",
            f"ckpt={run_dir / 'checkpoint'}",
            "eval=demo",
            "eval.limit=2",
            "eval.tasks=[demo_pope]",
            f"eval.data_dir={demo_data}",
            f"results_dir={tmp_path / 'runs'}",
            f"hydra.run.dir={tmp_path / 'out'}",
            f"logger.env.WANDB_DIR={tmp_path / 'wb'}",
        ],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_MODE": "offline", "WANDB_RUN_GROUP": "t4"},
    )
    stored = json.loads((tmp_path / "runs" / cfg.run_name / "demo_pope.json").read_text())
    assert stored["config"]["train"]["loss"]["name"] == "lit" and stored["n_samples"]["effective"] == 2
    run, summary = read_offline_run(tmp_path / "wb")  # the scores also land in a wandb run of the table's group
    assert run.run_group == "t4" and run.job_type == "evaluate" and run.display_name == cfg.run_name
    assert summary["demo_pope/pope_f1"] == pytest.approx(stored["scores"]["pope_f1"])
