"""L2T's visual contribution (lit/eval/vc.py, vc.py): per question-answer pair, answer tokens only, pixel-noise
"no image" through the model's own processor, named sources, bootstrap CI, results-store keys."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lit.constants import IGNORE_INDEX
from lit.eval import vc
from lit.records import load_records

ROOT = Path(__file__).resolve().parents[2]


def _rec(rid, image, *turns):
    r = {"id": rid, "conversations": [{"from": f, "value": v} for f, v in zip(["human", "gpt"] * 5, turns)]}
    if image:
        r["image"] = image
    return r


def test_named_source_selects_by_path_id_and_text_and_draws_at_random():
    short = "Answer the question using a single word or phrase."
    records = [_rec(f"v{i}", f"coco/train2017/{i}.jpg", f"<image>\nWhat? {short}", "x") for i in range(30)]
    records += [
        _rec("g0", "gqa/1.jpg", f"<image>\nWhat? {short}", "x"),
        _rec("c0", "coco/2.jpg", "<image>\nDescribe.", "y"),
        _rec("t0", None, f"What? {short}", "x"),
    ]
    source = {"image_prefix": "coco/", "id_pattern": r"^v", "contains": short}
    assert [r["id"] for r in vc.select_records(records, source, None, 0)] == [f"v{i}" for i in range(30)]
    drawn = [r["id"] for r in vc.select_records(records, source, 5, 0)]
    assert len(drawn) == 5 and drawn != [f"v{i}" for i in range(5)]  # not the first n
    assert drawn == [r["id"] for r in vc.select_records(records, source, 5, 0)]  # seeded


def test_each_pair_scores_only_its_own_answer_tokens(trained, demo_data):
    """Pair j of a record is the conversation up to answer j; only answer j's tokens are labelled (no </s>),
    and the summed log-probability equals minus HF's mean loss on those labels times their number."""
    from lit.data.dataset import SupervisedDataset
    from lit.data.labels import LabelSpec
    from lit.mask.chat_templates import get_template
    from lit.mask.scopes import get_scope
    from lit.model.families import image_inputs_for
    from lit.model.loading import load_pretrained

    model, processor = load_pretrained(str(trained[1] / "checkpoint"))

    record = next(r for r in load_records(demo_data / "train.json") if len(r["conversations"]) >= 4)
    pairs = vc.qa_pairs([record])
    assert len(pairs) == len(record["conversations"]) // 2 and pairs[1]["conversations"] == record["conversations"][:4]
    tok = processor.tokenizer
    spec = LabelSpec(get_template("vicuna_v1"), get_scope("vit"), 512, image_root=demo_data)
    ds = SupervisedDataset(pairs, spec, tok, image_inputs_for(model.config, processor), progress=False)
    item = ds[1]
    eos = tok.convert_tokens_to_ids("</s>")
    labels = vc.last_answer_labels(item["labels"], count_eos=False, eos_id=eos)
    answer = record["conversations"][3]["value"]
    assert tok.decode(labels[labels != IGNORE_INDEX]).strip() == answer.strip()
    with_eos = vc.last_answer_labels(item["labels"], count_eos=True, eos_id=eos)
    assert int((with_eos != IGNORE_INDEX).sum()) == int((labels != IGNORE_INDEX).sum()) + 1
    pixels = item["image"]["pixel_values"][None]
    total, share = vc.answer_logprob(
        model, item["input_ids"], labels, {"pixel_values": pixels}, False, ds.image_token_id
    )
    with torch.no_grad():
        loss = model(input_ids=item["input_ids"][None], pixel_values=pixels, labels=labels[None]).loss.item()
    assert share is None and total == pytest.approx(-loss * int((labels != IGNORE_INDEX).sum()), rel=1e-4)


def test_no_image_is_uniform_pixel_noise_through_the_processor():
    rng = np.random.default_rng(0)
    img = vc.noise_image((50, 20), rng)
    x = np.asarray(img)
    assert img.size == (50, 20) and x.min() == 0 and x.max() == 255 and abs(x.mean() - 127.5) < 5


def test_bootstrap_ci_brackets_the_mean():
    values = list(np.random.default_rng(1).normal(2.0, 1.0, 200))
    low, high = vc.bootstrap_ci(values, seed=0)
    assert low < np.mean(values) < high and 0.15 < high - low < 0.4  # about 2 * 1.96 / sqrt(200)


@pytest.mark.integration
def test_vc_cli_reports_pairs_ci_and_stores_results(trained, demo_data, tmp_path):
    ckpt = str(trained[1] / "checkpoint")
    subprocess.run(
        [
            sys.executable,
            "vc.py",
            f"ckpt=[{ckpt},{ckpt}]",
            "result_name=[a,b]",
            f"data.root={demo_data}",
            "n=3",
            "attention_share=true",
            f"results_dir={tmp_path / 'runs'}",
            f"hydra.run.dir={tmp_path}",
        ],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    first, second = json.loads((tmp_path / "vc.json").read_text())
    chosen = vc.select_records(load_records(demo_data / "train.json"), {"image_prefix": ""}, 3, 0)
    assert first["n_records"] == 3 and first["n"] == sum(len(r["conversations"]) // 2 for r in chosen)
    assert [p["id"].rsplit("#", 1)[0] for p in first["pairs"]][0] == chosen[0]["id"]
    assert all(math.isfinite(p["vc"]) and 0 < p["attention_to_image"] < 1 for p in first["pairs"])
    assert (
        first["vc_mean"] == pytest.approx(np.mean(first["vc"]))
        and first["vc_ci95"][0] <= first["vc_mean"] <= first["vc_ci95"][1]
    )
    assert first["dtype"] == "float32" and first["device"] == "cpu" and not first["end_of_turn_counted"]
    assert second["vc"] == pytest.approx(first["vc"])  # same checkpoint, same seeds
    stored = json.loads((tmp_path / "runs" / "b" / "lit_vc.json").read_text())["scores"]
    assert stored["vc/mean"] == pytest.approx(first["vc_mean"]) and stored["vc/ci_low"] == first["vc_ci95"][0]
    assert stored["vc/attention_to_image"] == pytest.approx(first["attention_to_image_mean"])
    assert (tmp_path / "vc.png").exists()
