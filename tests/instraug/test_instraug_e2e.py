"""InstrAug end to end on CPU: seeds in the official instruction_gen.py structure -> generation with a tiny
transformers chat model -> filter -> MIns+ set on MultiInstruct-format instances (options, regions,
dialogue) -> training a tiny LLaVA -> the lit_multiinstruct tasks through lmms-eval."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from omegaconf import open_dict
from test_instraug_official import OFFICIAL, ROOT
from tiny_runs import tiny_cfg

TRAIN_TASKS = ("VQA_color", "region_caption_match", "visual_dialog_has_hist", "visual_dialog_no_hist")


def _official_subset(path: Path, tasks) -> None:
    """The fixture's lists and extend calls for ``tasks`` only, in the same structure."""
    lines = OFFICIAL.read_text().splitlines()
    out = ["def save_raw_instruction():", "    df_dicts = list()"]
    block: list[str] = []
    for line in lines:
        if line.startswith("    instructs"):
            block = [line]
        elif block:
            block.append(line)
            if "df_dicts.extend(" in line:
                if any(f"task_name='{t}'" in line for t in tasks):
                    out += block
                block = []
    path.write_text("\n".join(out) + "\n")


def _instances(images: Path) -> list[dict]:
    from PIL import Image

    images.mkdir(parents=True, exist_ok=True)
    colours = {"red": (220, 30, 30), "blue": (30, 30, 220)}
    for name, rgb in colours.items():
        Image.new("RGB", (32, 32), rgb).save(images / f"{name}.png")
    rows = []
    for i in range(12):
        colour = "red" if i % 2 else "blue"
        img = f"images/{colour}.png"
        rows.append(
            {
                "unique_id": f"vqa-{i}",
                "task_name": "VQA_color",
                "image_path": img,
                "question": "What colour is the square?",
                "options": ["red", "blue"],
                "target_txt": colour,
            }
        )
        rows.append(
            {
                "unique_id": f"rcm-{i}",
                "task_name": "region_caption_match",
                "image_path": img,
                "text": f"a {colour} square",
                "region": [[0, 0, 31.5, 31.5]],
                "options": ["yes", "no"],
                "target_txt": "yes",
            }
        )
        rows.append(
            {
                "unique_id": f"vd-{i}",
                "task_name": "visual_dialog",
                "image_path": img,
                "question": "is it red",
                "target_txt": "yes" if colour == "red" else "no",
                "meta_data": {
                    "caption": "a square",
                    "dialog_hist": [{"q": "is it a square", "a": "yes"}] if i % 3 else [],
                },
            }
        )
    return rows


def _eval_data(root: Path) -> None:
    mi = root / "multiinstruct"
    shutil.copytree(root.parent / "data" / "images", mi / "images")
    shutil.copy(OFFICIAL, mi / "instructions.py")  # the original instructions, official structure
    tests = {
        "commonsense_VQA": [
            {
                "unique_id": f"cvqa-{i}",
                "task_name": "commonsense_VQA",
                "image_path": "images/red.png",
                "question": "What is person 1 holding ?",
                "options": ["a red box .", "a blue box ."],
                "target_txt": "a red box .",
                "meta_data": {"object_regions": {"person 1": [1.5, 2, 20, 30]}},
            }
            for i in range(2)
        ],
        "grounded_VQA": [
            {
                "unique_id": f"gvqa-{i}",
                "task_name": "grounded_VQA",
                "image_path": "images/blue.png",
                "question": "Which region is blue?",
                "region": [[0, 0, 31, 31]],
                "options": [[0, 0, 31, 31], [1, 1, 5, 5]],
                "target_txt": "0 0 31 31",
            }
            for i in range(2)
        ],
        "visual_dialog": [
            {
                "unique_id": f"vd-{i}",
                "task_name": "visual_dialog",
                "image_path": "images/red.png",
                "question": "is it red",
                "target_txt": "yes",
                "meta_data": {"dialog_hist": [{"q": "a square?", "a": "yes"}] if i else []},
            }
            for i in range(2)
        ],
    }
    for task, rows in tests.items():
        (mi / task).mkdir(parents=True)
        (mi / task / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.integration
@pytest.mark.slow
def test_seeds_to_generation_to_mins_plus_to_training_to_lmms_eval(tiny_chat_model, tmp_path):
    from hydra import compose, initialize_config_dir

    from instraug.arm import build_for
    from instraug.run import run as augment
    from lit.eval.evaluate import evaluate
    from lit.eval.spec import EvalSpec
    from lit.train.run import run as train

    data = tmp_path / "data"
    seeds = tmp_path / "instruction_gen.py"
    _official_subset(seeds, TRAIN_TASKS)
    instances = data / "train.jsonl"
    rows = _instances(data / "images")
    instances.write_text("".join(json.dumps(r) + "\n" for r in rows))

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        acfg = compose(
            "augment",
            overrides=[
                f"augmentation.seeds={seeds}",
                "augmentation.max_new_tokens=8",
                "augmentation.batch_size=50",
                "augmentation.backend.kind=transformers",
                f"augmentation.backend.args.model={tiny_chat_model}",
                "~augmentation.backend.args.tensor_parallel_size",
                f"augmentation.cache_dir={tmp_path / 'cache'}",
            ],
        )
    with open_dict(acfg):
        acfg.output_dir = str(tmp_path / "augment")
    result = augment(acfg)
    generations = [json.loads(line) for line in (tmp_path / "cache" / "generations.jsonl").read_text().splitlines()]
    assert len(generations) == 10 * 10  # VQA_color and region_caption_match: 10 seeds x the official 10 replies
    report = json.loads((tmp_path / "augment" / "filter_report.json").read_text())
    rejected = sum(sum(c.values()) for c in report["rejected"].values())
    assert sum(report["kept"].values()) == result["generated"] and result["generated"] + rejected <= 100

    cfg = tiny_cfg(
        data,
        tmp_path / "run",
        "data=mins_plus",
        "augmentation=mins_plus",
        f"data.mins_plus.pool={result['pool']}",
        f"data.mins_plus.instances={instances}",
        "train.max_steps=3",
    )
    built = build_for(cfg.data)
    records = json.loads(built["llava"].read_text())
    assert len(records) == len(rows)
    prompts = {r["id"]: r["conversations"][0]["value"] for r in records}
    assert "0 0 31.5 31.5" in prompts["rcm-0"] and "[Options]: " in prompts["vqa-0"]
    assert "is it a square, yes;" in prompts["vd-1"] or prompts["vd-1"].endswith("is it red?")
    metrics = train(cfg, tmp_path / "run")
    assert metrics["steps"] == 3

    eval_root = tmp_path / "eval_data"
    eval_root.mkdir()
    _eval_data(eval_root)
    scores = evaluate(
        tmp_path / "run" / "checkpoint",
        EvalSpec(("lit_mi_cvqa", "lit_mi_gvqa", "lit_mi_visdial"), str(eval_root)),
        tmp_path / "eval",
        chat_template=cfg.model.chat_template,
    )
    for task in ("lit_mi_cvqa", "lit_mi_gvqa", "lit_mi_visdial"):
        got = scores[task]
        assert 0 <= got["multiinstruct/score"] <= 100
        assert all(f"multiinstruct/instruction_{k}" in got for k in range(5))
