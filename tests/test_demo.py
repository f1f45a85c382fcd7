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
