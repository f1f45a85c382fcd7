"""Stage 1 run by hand writes a stable checkpoint path that stage 2's default ``model.pretrained`` reads, and
stage 2 without it stops at once, in one line, naming the stage-1 command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lit.model.checkpoint import MissingCheckpoint, require_pretrained

ROOT = Path(__file__).resolve().parents[2]
FAMILIES = ["llava7b", "llava13b", "llava_next7b", "tinyllava05b", "tinyllava3b"]


@pytest.mark.parametrize("family", FAMILIES)
def test_stage1_by_hand_writes_where_stage2_reads(family, tmp_path):
    overrides = [f"paths.output_root={tmp_path}"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        stage1 = compose("train", overrides=[f"model={family}_stage1", *overrides], return_hydra_config=True)
        run_dir = OmegaConf.select(stage1, "hydra.run.dir")  # where `python train.py model=<family>_stage1` runs
        stage2 = compose("train", overrides=[f"model={family}", *overrides])
    assert run_dir == f"{tmp_path}/{family}_stage1"  # no time stamp: the same path on every run
    assert stage2.model.pretrained == f"{run_dir}/checkpoint"  # lit.model.checkpoint.save_checkpoint writes it
    with pytest.raises(MissingCheckpoint, match=rf"`python train\.py model={family}_stage1`"):
        require_pretrained(stage2.model)
    (Path(run_dir) / "checkpoint").mkdir(parents=True)
    require_pretrained(stage2.model)  # there now: nothing to say


def test_recipes_still_choose_their_own_stage1_directory(tmp_path):
    from lit import recipes

    jobs = {j.id: j for j in recipes.jobs(recipes.load("l2t_t1"), tmp_path)}
    assert f"hydra.run.dir={tmp_path}/repro/stage1_llava7b" in jobs["stage1_llava7b"].command(tmp_path)
    assert f"model.pretrained={tmp_path}/repro/stage1_llava7b/checkpoint" in jobs["sft_llava7b_lit"].overrides


def test_a_missing_path_that_is_no_stage1_output_is_named_too(tmp_path):
    with pytest.raises(MissingCheckpoint, match="does not exist: set it to a checkpoint directory"):
        require_pretrained(OmegaConf.create({"pretrained": str(tmp_path / "elsewhere" / "ckpt")}))
    require_pretrained(OmegaConf.create({"pretrained": "llava-hf/llava-1.5-7b-hf"}))  # a hub id: loaded later


@pytest.mark.integration
def test_stage2_without_stage1_stops_before_any_heavy_work(tmp_path):
    proc = subprocess.run(
        [sys.executable, "train.py", "model=llava7b", f"paths.output_root={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr  # one line, no traceback
    assert "`python train.py model=llava7b_stage1`" in proc.stderr
    assert f"{tmp_path}/llava7b_stage1/checkpoint" in proc.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file() and ".hydra" not in p.parts]
    assert [p.name for p in written] == ["train.log"]  # stopped before the run files, process group and model
