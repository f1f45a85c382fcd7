"""Tiny offline copies of the benchmark data sets, with exactly the fields of the hub data sets that the
lit_* tasks read, written the way ``lit.eval.eval_data fetch`` writes them (``save_to_disk``)."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image


def _image(colour) -> Image.Image:
    return Image.new("RGB", (32, 32), colour)


def _save(rows: list[dict], split: str, out: Path, image_column: str | None = "image") -> None:
    import datasets

    features = None
    if image_column:
        ds = datasets.Dataset.from_list(rows)
        features = ds.features.copy()
        features[image_column] = datasets.Image()
    datasets.DatasetDict({split: datasets.Dataset.from_list(rows, features=features)}).save_to_disk(str(out))


def write_all(root: Path) -> Path:
    red, blue = _image((220, 40, 40)), _image((40, 80, 220))
    pope = [
        {
            "id": str(i),
            "question_id": str(i),
            "question": f"Is there a {obj} in the image?",
            "answer": ans,
            "image_source": f"COCO_{i}",
            "image": img,
            "category": cat,
        }
        for i, (obj, ans, cat, img) in enumerate(
            [
                ("dog", "yes", "adversarial", red),
                ("cat", "no", "adversarial", red),
                ("car", "yes", "popular", blue),
                ("bus", "no", "popular", blue),
                ("cup", "yes", "random", red),
                ("tie", "no", "random", blue),
            ]
        )
    ]
    _save(pope, "test", root / "pope")
    mme = [
        {
            "question_id": f"{cat}/{n}.jpg",
            "image": img,
            "question": "Is this red? Please answer yes or no.",
            "answer": ans,
            "category": cat,
        }
        for cat, n, img, ans in [
            ("color", 1, red, "Yes"),
            ("color", 1, red, "No"),
            ("code_reasoning", 2, blue, "Yes"),
            ("code_reasoning", 2, blue, "No"),
        ]
    ]
    _save(mme, "test", root / "mme")
    hb = []
    for cat, sub, set_id, fig, q, vis in [
        ("VD", "ocr", 0, 0, 0, "1"),
        ("VD", "ocr", 0, 1, 0, "2"),
        ("VS", "chart", 1, 0, 0, "0"),
        ("VS", "chart", 1, 1, 0, "1"),
    ]:
        hb.append(
            {
                "category": cat,
                "subcategory": sub,
                "visual_input": vis,
                "set_id": str(set_id),
                "figure_id": str(fig),
                "sample_note": "",
                "question_id": str(q),
                "question": "Is the text red?",
                "gt_answer_details": "",
                "gt_answer": str((fig + set_id) % 2),
                "filename": f"{cat}/{sub}/{set_id}_{fig}.png",
                "image": None if vis == "0" else red,
            }
        )
    _save(hb, "image", root / "hallusion")
    _save(
        [
            {"question_id": "1", "image": red, "gt_object": ["dog", "person"]},
            {"question_id": "2", "image": blue, "gt_object": ["car"]},
        ],
        "test",
        root / "chair",
    )
    _save(
        [
            {"question_id": "1", "image": red, "question": "caption", "answer": ["a red square", "red picture"]},
            {"question_id": "2", "image": blue, "question": "caption", "answer": ["a blue square", "blue picture"]},
        ],
        "val",
        root / "caption",
    )
    mi = root / "multiinstruct"
    (mi / "images").mkdir(parents=True, exist_ok=True)
    red.save(mi / "images" / "red.png")
    # MultiInstruct's format: visual_nli carries the hypothesis as text, its instructions end in {options_str}
    instructions = {
        "visual_nli": [f"Instruction {k}: does the image entail '{{text}}'?{{options_str}}" for k in range(5)],
        "text_vqa": [f"Read the text. {{question}} (variant {k})" for k in range(5)],
    }
    (mi / "instructions.yaml").write_text(json.dumps(instructions))
    rows = {
        "visual_nli": [
            {
                "unique_id": f"ve-{i}",
                "task_name": "visual_nli",
                "image_path": "images/red.png",
                "text": "a red square",
                "options": ["yes", "no", "maybe"],
                "target_txt": "yes",
            }
            for i in range(3)
        ],
        "text_vqa": [
            {
                "unique_id": f"tvqa-{i}",
                "task_name": "text_vqa",
                "image_path": "images/red.png",
                "question": "What does the sign say?",
                "target_txt": "stop here",
            }
            for i in range(2)
        ],
    }
    for task, lines in rows.items():
        (mi / task).mkdir(exist_ok=True)
        (mi / task / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return root
