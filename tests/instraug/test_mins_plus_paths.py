"""`build_mins_plus.py` reads the MultiInstruct instances where the README and `python -m instraug.multiinstruct`
put them (data/multiinstruct/59k/train.jsonl), and a missing input stops in one line naming it and its command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from test_instraug_official import raw_instance

from instraug.arm import MissingInput, check_inputs

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTED = "multiinstruct/59k/train.jsonl"  # instraug/multiinstruct.py: `... training_data_1K/ data/<this>`


def _cfg(experiment: str, data_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"experiment={experiment}", f"paths.data_dir={data_dir}", *overrides])


def test_the_default_instances_file_is_the_documented_one(tmp_path):
    from instraug import multiinstruct

    assert f"data/{DOCUMENTED}" in multiinstruct.__doc__
    for experiment in ("instraug_llava7b_mins", "instraug_llava7b_mins_plus", "instraug_iblip7b_mins_plus_mt"):
        cfg = _cfg(experiment, tmp_path)
        assert cfg.data.mins_plus.instances == f"{tmp_path}/{DOCUMENTED}", experiment


def test_a_missing_instances_file_names_its_path_and_the_collect_command(tmp_path):
    data = tmp_path / "data"
    proc = subprocess.run(
        [
            sys.executable,
            "build_mins_plus.py",
            "experiment=instraug_llava7b_mins_plus",
            f"paths.data_dir={data}",
            f"data.mins_plus.pool={tmp_path}/pool.jsonl",
            f"hydra.run.dir={tmp_path}/run",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr  # one line, no traceback
    assert f"{data}/{DOCUMENTED}" in proc.stderr
    assert f"`python -m instraug.multiinstruct training_data_1K/ {data}/{DOCUMENTED}`" in proc.stderr


def test_the_collect_command_writes_what_the_build_reads(tmp_path):
    from instraug.multiinstruct import collect

    src = tmp_path / "training_data_1K" / "VQA_color"
    src.mkdir(parents=True)
    (src / "train.jsonl").write_text("".join(json.dumps(raw_instance("VQA_color", i)) + "\n" for i in range(2)))
    data = tmp_path / "data"
    collect(tmp_path / "training_data_1K", data / DOCUMENTED)  # the documented command, in-process
    cfg = _cfg("instraug_llava7b_mins_plus", data, f"data.mins_plus.pool={tmp_path}/run/pool.jsonl")
    with pytest.raises(MissingInput, match=r"pool .*run/pool\.jsonl .*python augment\.py"):
        check_inputs(cfg.data)  # past the instances: the next missing input is the pool
    seeds = _cfg("instraug_llava7b_mins", data)
    with pytest.raises(MissingInput, match=r"instruction_gen\.py .*curl -L -o"):
        check_inputs(seeds.data)
