"""The demo: its statistics (paired bootstrap over seeds and items), its CHAIR-style caption scoring, and a
shortened demo end to end that must learn the yes/no probes from the image."""

from __future__ import annotations

import json
import shutil

import pytest


def _pope_rows(correct: list[bool], truth: list[str]) -> list[dict]:
    rows = []
    for ok, answer in zip(correct, truth):
        pred = answer if ok else {"yes": "no", "no": "yes"}[answer]
        rows.append({"doc_id": len(rows), "pope_accuracy": {"pred": pred, "answer": answer}})
    return rows


def _runs(acc_by_arm: dict[str, list[float]], n: int = 200) -> list[dict]:
    """Runs whose POPE rows are right on the first ``acc * n`` items (alternating yes/no truth)."""
    truth = ["yes", "no"] * (n // 2)
    return [
        {"arm": arm, "seed": seed, "samples": {"demo_pope": _pope_rows([i < acc * n for i in range(n)], truth)}}
        for arm, accs in acc_by_arm.items()
        for seed, acc in enumerate(accs)
    ]


def test_bootstrap_gives_seed_sd_item_ci_and_paired_difference():
    from lit.report.demo_stats import bootstrap, metrics

    accuracy = next(m for m in metrics(0.7) if m.key == "pope_accuracy")
    stats = bootstrap(_runs({"vit": [0.6, 0.7, 0.8], "lit": [0.7, 0.8, 0.9]}), ["vit", "lit"], accuracy, n_boot=400)
    vit, lit = stats["arms"]["vit"], stats["arms"]["lit"]
    assert vit["values"] == pytest.approx([0.6, 0.7, 0.8]) and vit["mean"] == pytest.approx(0.7)
    assert vit["sd"] == pytest.approx(0.1)
    assert vit["ci95"][0] < 0.7 < vit["ci95"][1]
    # LIT is right on a superset of VIT's items for every seed: every paired draw is >= 0
    assert lit["diff"]["mean"] == pytest.approx(0.1)
    assert 0 <= lit["diff"]["ci95"][0] < 0.1 < lit["diff"]["ci95"][1]
    same = bootstrap(_runs({"vit": [0.6, 0.7], "lit": [0.6, 0.7]}), ["vit", "lit"], accuracy, n_boot=200)
    assert same["arms"]["lit"]["diff"]["ci95"] == [0.0, 0.0]  # paired: identical arms differ by exactly 0


def test_f1_and_yes_ratio_are_recomputed_from_items():
    from lit.eval.tasks.scoring import binary_metrics
    from lit.report.demo_stats import bootstrap, metrics

    runs = _runs({"vit": [0.75]}, n=40)
    rows = [r["pope_accuracy"] for r in runs[0]["samples"]["demo_pope"]]
    expected = binary_metrics(rows)
    by_key = {m.key: m for m in metrics(0.7)}
    for key, name in (("pope_f1", "f1"), ("pope_yes_ratio", "yes_ratio"), ("pope_accuracy", "accuracy")):
        assert bootstrap(runs, ["vit"], by_key[key], n_boot=10)["arms"]["vit"]["mean"] == pytest.approx(expected[name])


def test_caption_objects_and_chair_through_the_scoring_function():
    from lit.eval.tasks.demo_caption.utils import (
        aggregate,
        mentioned_objects,
        process_results,
    )

    assert mentioned_objects("A red circle in the top left and two Blue squares.") == ["red circle", "blue square"]
    doc = {"objects": ["blue square", "red circle"]}
    good = process_results(doc, ["A red circle in the top left and a blue square in the bottom right."])
    bad = process_results(doc, ["A red circle and a green triangle."])
    scores = aggregate([good["chair"], bad["chair"]])
    assert scores["chair_s"] == pytest.approx(50.0)  # one caption of two names an absent object
    assert scores["chair_i"] == pytest.approx(100 / 4)  # one of four mentions


def test_demo_data_is_regenerated_when_its_settings_change(tmp_path):
    from omegaconf import OmegaConf

    from lit.data.synthetic import ensure

    cfg = OmegaConf.create(
        {
            "root": str(tmp_path / "demo"),
            "n_train": 6,
            "n_test": 2,
            "n_caption": 1,
            "probes": [2, 3],
            "others": [1, 2],
            "yes_share": 0.7,
        }
    )
    assert ensure(cfg) and not ensure(cfg)  # generated once, then reused
    (tmp_path / "demo" / "tokenizer").mkdir()  # trained on the old corpus: must not survive a regeneration
    cfg.yes_share = 0.5
    assert ensure(cfg) and not (tmp_path / "demo" / "tokenizer").exists()
    records = json.loads((tmp_path / "demo" / "train.json").read_text())
    assert len(records) == 6 and all(
        2 <= sum(t["value"] in ("Yes", "No") for t in r["conversations"]) <= 3 for r in records
    )


def _near_share(probes: list[tuple[str, str]], scene) -> float:
    """The share of absent-object probes whose shape or colour is present in ``scene`` (near misses)."""
    present = {(s, c) for s, c, _ in scene}
    assert not present & set(probes)
    return sum(any(s == p or c == q for s, c in present) for p, q in probes) / len(probes)


def test_near_miss_share_sets_the_training_negatives_only(tmp_path):
    import random

    from lit.data.synthetic import _train_turns, generate

    scene = [("circle", "red", 0), ("square", "blue", 3)]
    rng = random.Random(0)
    for share, check in ((1.0, lambda x: x == 1.0), (0.0, lambda x: x < 0.8)):
        turns = [t for _ in range(200) for t in _train_turns(rng, scene, yes_share=0.0, near_miss_share=share)]
        probes = [(t["fields"]["shape"], t["fields"]["colour"]) for t in turns if t["task"] == "object_probe"]
        assert all(t["answer"] == "No" for t in turns if t["task"] == "object_probe")
        assert check(_near_share(probes, scene)), (share, _near_share(probes, scene))
    # the POPE-style test split keeps its own rate: not all of its negatives are near misses
    paths = generate(tmp_path, n_train=5, n_test=120, n_caption=120, image_size=8, near_miss_share=1.0, progress=False)
    objects = {r["image"]: r["objects"] for r in map(json.loads, paths["caption"].read_text().splitlines())}
    near = []
    for r in map(json.loads, paths["pope"].read_text().splitlines()):
        if r["answer"] == "no":
            colour, shape = r["question"].split()[3:5]
            near.append(_near_share([(shape, colour)], [(*o.split()[::-1], 0) for o in objects[r["image"]]]))
    assert len(near) == 120 and sum(near) < 120


def _blank_copy(data, out):
    """The demo test split with every test image replaced by an empty canvas of the same size."""
    from PIL import Image

    shutil.copytree(data, out, ignore=shutil.ignore_patterns("train", "tokenizer"))
    for path in (out / "images" / "test").glob("*.png"):
        with Image.open(path) as img:
            size = img.size
        Image.new("RGB", size, (245, 245, 245)).save(path)
    return out


# A shortened demo: one seed, the VIT arm, half the demo's steps, a smaller test split.
SHORT_STEPS = 600


def _best_constant(path) -> float:
    """The accuracy of the best constant answer on a test file (its most frequent answer's share)."""
    from collections import Counter

    answers = Counter(json.loads(line)["answer"] for line in path.read_text().splitlines())
    return max(answers.values()) / sum(answers.values())


@pytest.mark.integration
def test_short_demo_answers_from_the_image(tmp_path):
    """The whole demo path (data -> lit.train.run.run -> lmms-eval -> report) on one seed must beat the best
    constant answer on the colour questions and on the balanced yes/no probes (0.5), and the same checkpoint
    must fall back to about that when the test images are blank: the answer comes from the image, not from
    the question or the training prior."""
    from lit.data.synthetic import generate
    from lit.demo import main
    from lit.eval.evaluate import evaluate
    from lit.eval.spec import EvalSpec

    data = tmp_path / "data"
    generate(data, n_test=100, n_caption=10, progress=False)
    main(
        [
            "--seeds",
            "0",
            "--scopes",
            "vit",
            "--jobs",
            "1",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--out",
            str(tmp_path / "report"),
            f"data.root={data}",
            "data.generate=false",
            f"paths.data_dir={tmp_path}",
            f"train.max_steps={SHORT_STEPS}",
            "train.disable_tqdm=true",
            "eval.vc_items=30",
        ]
    )
    summary = json.loads((tmp_path / "report" / "metrics.json").read_text())["summary"]["metrics"]
    constant = _best_constant(data / "test_vqa.jsonl")
    vqa, probes = summary["vqa_accuracy"]["arms"]["vit"], summary["pope_accuracy"]["arms"]["vit"]
    assert vqa["mean"] >= constant + 0.1 and vqa["ci95"][0] > constant, (constant, vqa, probes)
    assert probes["mean"] >= 0.6 and probes["ci95"][0] > 0.5, (vqa, probes)  # a constant answer scores 0.5
    assert (tmp_path / "report" / "plot.png").stat().st_size > 10_000

    blank = _blank_copy(data, tmp_path / "blank")
    scores = evaluate(
        tmp_path / "runs" / "vit-s0" / "checkpoint",
        EvalSpec(("demo_vqa", "demo_pope"), str(blank)),
        tmp_path / "blank_eval",
    )
    assert scores["demo_vqa"]["vqa_accuracy"] <= constant + 0.1, (constant, scores)
    assert scores["demo_pope"]["pope_accuracy"] <= 0.58, scores


def test_instruction_weight_arms_train_lit_with_that_instruction_weight():
    """``--instruction-weights``: each arm is the LIT demo with only the instruction's weight changed (templates,
    system prompt and roles 0, the answer 1); 0 labels as vit, 1 is lit itself."""
    from lit.demo import arm_overrides, compose_run
    from lit.mask.scopes import SCOPES, get_scope
    from lit.report.plots import instruction_weight, weight_arm

    assert [weight_arm(w) for w in (0, 0.01, 0.5, 1.0)] == ["iw0", "iw0.01", "iw0.5", "iw1"]
    assert instruction_weight("iw0.01") == 0.01 and instruction_weight("vit") is None
    assert arm_overrides("iw0.01") == ["experiment=demo_lit", "loss.weights={instruction:0.01}"]
    cfg = compose_run("iw0.01", 3, ["train.max_steps=5"])
    assert (cfg.seed, cfg.model.init_seed, cfg.train.max_steps, cfg.loss.normalization) == (3, 3, 5, "tokens")
    assert cfg.loss.template_sentences.min_share == 0.4  # the LIT demo's template share
    scope = get_scope(cfg.loss.name, cfg.loss.weights)
    assert {k: scope.weight_of(k) for k in ("instruction", "template", "system", "role", "response", "eos")} == {
        "instruction": pytest.approx(0.01),
        "template": 0.0,
        "system": 0.0,
        "role": 0.0,
        "response": 1.0,
        "eos": 1.0,
    }
    zero = compose_run("iw0", 0, [])
    assert get_scope(zero.loss.name, zero.loss.weights).kinds == SCOPES["vit"]
    one = compose_run("iw1", 0, [])
    assert get_scope(one.loss.name, one.loss.weights) == get_scope("lit")


def test_weight_sweep_writes_its_table_csv_and_curve(tmp_path, monkeypatch):
    """``python -m lit.demo --scopes --instruction-weights ...`` on made-up runs (training replaced): the jobs are
    the weights x seeds, the table compares each weight with the lowest, weights.csv has a row per weight and
    metric with the runs' means, and weights.png is drawn."""
    import csv

    import lit.demo

    accuracy = {"iw0": [0.6, 0.7], "iw0.01": [0.8, 0.9], "iw0.1": [0.7, 0.8]}
    made_up = _runs(accuracy)
    for r in made_up:
        r["log_history"] = [{"step": s, "loss": 1.0 / s} for s in (1, 2, 3)]
    jobs_seen = []

    def fake_run_all(jobs, cfg, overrides, runs_dir, fresh, n_jobs):
        jobs_seen.extend(jobs)
        assert cfg.loss.weights == {"instruction": 0} and overrides == ["train.max_steps=2"]
        return made_up

    monkeypatch.setattr(lit.demo, "run_all", fake_run_all)
    out = tmp_path / "weights"
    lit.demo.main(
        ["--seeds", "0", "1", "--scopes", "--instruction-weights", "0", "0.01", "0.1", "--out", str(out)]
        + ["--runs-dir", str(tmp_path / "runs"), "train.max_steps=2"]
    )
    assert jobs_seen == [(a, s) for s in (0, 1) for a in ("iw0", "iw0.01", "iw0.1")]
    table = (out / "table.md").read_text()
    assert "| iw0.01 − iw0 (95% CI) |" in table and "loss.weights={instruction: <w>}" in table
    rows = [r for r in csv.DictReader((out / "weights.csv").open()) if r["metric"] == "pope_accuracy"]
    assert [r["instruction_weight"] for r in rows] == ["0", "0.01", "0.1"]
    assert [float(r["mean"]) for r in rows] == pytest.approx([0.65, 0.85, 0.75])
    assert rows[0]["diff_mean"] == "" and float(rows[1]["diff_mean"]) == pytest.approx(0.2)
    assert rows[1]["seed_values"] == "0.8000 0.9000"
    assert (out / "weights.png").stat().st_size > 10_000 and (out / "plot.png").is_file()
