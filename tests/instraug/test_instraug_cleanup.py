"""Each drawn MIns+ instruction is cleaned as InstrAug's builder cleans it before filling.

Upstream: declare-lab/InstrAug ``MultiInstruct/instruction_gen.py`` lines 1128-1141 (``build_with_new_instructions``
with ``--with_prob``; lines 1035-1048 are the same steps in the uniform branch): ``strip()``, then
``strip('")')``; every ``"`` removed when the text holds ``"{text}"``, every ``'`` when it holds ``'{text}'``;
``'`` turned into ``"`` when both remain. The seeds below are that file's own, lines 82-86 (``VG``) and 154
(``select_nonoverlaped_region``-style "can't"), with the official ``\\"`` escapes resolved as Python reads them.
"""

from __future__ import annotations

import json

import pytest

from instraug import build

# (seed as instruction_gen.py holds it, what the official cleaning leaves)
OFFICIAL_SEEDS = [
    ('The region in image that "{text}" describes is', "The region in image that {text} describes is"),  # line 82
    (
        'The goal of this task is to find the part of the image with the description: "{text}"',  # line 84: the end
        'The goal of this task is to find the part of the image with the description: "{text}',
    ),  # quote goes first
    (
        ' "{text}" describes part of the image. Find the part.',  # line 85
        '{text}" describes part of the image. Find the part.',
    ),
    (
        "Given {region_split_token.join(region)}, select objects that do not appear in any of the regions. "  # line 154
        "Select \"None\" if you can't find it.{options_token} {split_token.join(options)}",
        "Given {region_split_token.join(region)}, select objects that do not appear in any of the regions. "
        "Select \"None\" if you can\"t find it.{options_token} {split_token.join(options)}",
    ),
    ("Describe the region {region[0]} (in a few words)", "Describe the region {region[0]} (in a few words"),
    ("Answer the question about '{text}'. {question}", "Answer the question about {text}. {question}"),
    (
        "Given the image, the subject in {region[0]} {meta_data['relation']} what?",  # line 211: kept
        "Given the image, the subject in {region[0]} {meta_data['relation']} what?",
    ),
]


@pytest.mark.parametrize("seed, want", OFFICIAL_SEEDS)
def test_official_cleanup_matches_instruction_gen(seed, want):
    assert build.clean_instruction(seed, "official") == want
    assert build.clean_instruction(seed, "strip") == seed.strip()


def test_unknown_cleanup_is_refused():
    with pytest.raises(ValueError, match="unknown cleanup 'none'"):
        build.clean_instruction("x", "none")


def _files(tmp_path):
    instances = tmp_path / "train.jsonl"
    instances.write_text(
        "".join(
            json.dumps(
                {
                    "unique_id": f"vg-{i}",
                    "task_name": "visual_grounding",
                    "image_path": "img.jpg",
                    "text": "a red cup",
                    "target_txt": "[1, 2, 3, 4]",
                }
            )
            + "\n"
            for i in range(4)
        )
    )
    pool = tmp_path / "pool.jsonl"
    pool.write_text(
        json.dumps(
            {
                "id": "VG#1",
                "task": "visual_grounding",
                "origin": "seed",
                "root_id": "VG#1",
                "text": 'Find the region in image that "{text}" describes.',
            }
        )
        + "\n"
    )
    return instances, pool


def test_build_fills_the_cleaned_instruction_and_the_manifest_records_the_choice(tmp_path):
    instances, pool = _files(tmp_path)
    official = build.build_dataset(instances, pool, tmp_path / "official", variant="mins")
    rows = [json.loads(line) for line in official["multiinstruct"].read_text().splitlines()]
    assert {r["prompt"] for r in rows} == {"Find the region in image that a red cup describes."}
    assert json.loads(official["manifest"].read_text())["inputs"]["cleanup"] == "official"
    plain = build.build_dataset(instances, pool, tmp_path / "plain", variant="mins", cleanup="strip")
    rows = [json.loads(line) for line in plain["multiinstruct"].read_text().splitlines()]
    assert {r["prompt"] for r in rows} == {'Find the region in image that "a red cup" describes.'}
    with pytest.raises(build.DatasetMismatch, match="cleanup"):
        build.build_dataset(instances, pool, tmp_path / "official", variant="mins", cleanup="strip")
