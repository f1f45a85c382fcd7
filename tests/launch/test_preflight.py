"""The preflight of `python -m lit.recipes <table> --check` (and before every --submit): one line per problem, each
naming its fix, for missing images, weights and evaluation data, GPUs or time the site cannot give, and an override
that does not compose for a job; `--gpus-per-node` keeps the global batch through the accumulation. Fixtures are
built in tmp_path: a three-record LLaVA JSON with PIL images, an HF cache folder, a recipe of two jobs."""

from __future__ import annotations

import json
import os
from io import StringIO
from pathlib import Path

import pytest
from PIL import Image

from lit import recipes
from lit.job_config import compose_job
from lit.train.distributed import split_global_batch

RECIPE = """name: t
title: preflight fixture
jobs:
  - id: sft_tiny
    kind: train
    overrides: ["experiment=demo_lit", "logger=none", "data.generate=false", "data.root={data}"]
    resources: {{nodes: 1, gpus: 8, hours: 2}}
  - id: eval_tiny
    kind: evaluate
    of: sft_tiny
    overrides: ["eval=pope", "eval.data_dir={eval}", "logger=none"]
    resources: {{nodes: 1, gpus: 1, hours: 1}}
"""


@pytest.fixture
def fixture(tmp_path, monkeypatch):
    """The recipe `t` (a tiny training job and its POPE evaluation) over data that is all there."""
    data, eval_dir = tmp_path / "data", tmp_path / "eval"
    data.mkdir()
    (eval_dir / "pope").mkdir(parents=True)  # what lit_pope reads: <eval.data_dir>/pope (datasets.save_to_disk)
    records = []
    for i in range(3):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(data / f"img{i}.png")
        conv = [{"from": "human", "value": "<image>\nWhat colour is it?"}, {"from": "gpt", "value": "Red."}]
        records.append({"id": f"r{i}", "image": f"img{i}.png", "conversations": conv})
    records.append({"id": "text", "conversations": conv})  # a text-only record names no image
    (data / "train.json").write_text(json.dumps(records))
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "t.yaml").write_text(RECIPE.format(data=data, eval=eval_dir))
    monkeypatch.setattr(recipes, "RECIPES", tmp_path / "recipes")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return tmp_path


def _check(root: Path, *extra: str, site=(), gpus_per_node=None) -> tuple[list[str], bool]:
    """The preflight's lines and whether it passed."""
    out = StringIO()
    try:
        recipes.run(
            "t", "check", root / "out", list(extra), out=out, site_overrides=list(site), gpus_per_node=gpus_per_node
        )
        passed = True
    except RuntimeError as err:
        assert "preflight: " in str(err)
        passed = False
    return [line for line in out.getvalue().splitlines() if not line.startswith("# ")], passed


def _problems(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("PROBLEM")]


def test_everything_present_passes(fixture, capsys):
    lines, passed = _check(fixture)
    assert passed and lines == []
    recipes.main(["t", "--check", "--output-root", str(fixture / "out")])  # exit status 0: no SystemExit
    assert "# preflight passed (0 note(s))" in capsys.readouterr().out


def test_missing_images_are_counted_with_the_setting_that_skips_them(fixture):
    (fixture / "data" / "img1.png").unlink()
    lines, passed = _check(fixture)
    assert not passed
    assert lines == [
        f"PROBLEM [sft_tiny]: 1 of 3 images that {fixture}/data/train.json names are missing under {fixture}/data "
        "(data.image_root), e.g. img1.png; put them there, or set data.on_invalid=skip to train without those records"
    ]
    lines, passed = _check(fixture, "train:data.on_invalid=skip")
    assert passed and lines[0].startswith("note [sft_tiny]: 1 of 3 images") and "data.on_invalid=skip skips" in lines[0]


def test_a_missing_data_file_and_image_folder(fixture):
    lines, passed = _check(fixture, f"sft_tiny:data.path={fixture}/nowhere.json")
    assert not passed and _problems(lines) == [
        f"PROBLEM [sft_tiny]: data file {fixture}/nowhere.json is missing (data.path); put it there, or set "
        "data.root / LIT_DATA_DIR"
    ]
    lines, _ = _check(fixture, f"train:data.image_root={fixture}/pictures")
    assert _problems(lines) == [
        f"PROBLEM [sft_tiny]: image folder {fixture}/pictures is missing (data.image_root) but 3 records of "
        f"{fixture}/data/train.json have images; put them there, or set data.on_invalid=skip to train without those "
        "records"
    ]


def test_missing_local_weights(fixture):
    lines, passed = _check(fixture, f"train:model.pretrained={fixture}/weights")
    assert not passed and lines == [
        f"PROBLEM [sft_tiny]: model weights {fixture}/weights (model.pretrained) do not exist; put them there or fix "
        "model.pretrained"
    ]
    (fixture / "weights").mkdir()
    (fixture / "weights" / "config.json").write_text("{}")
    assert _check(fixture, f"train:model.pretrained={fixture}/weights") == ([], True)


def test_hub_weights_come_from_the_hf_cache_with_the_offline_hint(fixture):
    cache = fixture / "hf" / "hub"
    lines, passed = _check(fixture, "train:model.pretrained=acme/tiny-llava")
    assert not passed and lines == [
        f"PROBLEM [sft_tiny]: model acme/tiny-llava (model.pretrained) is not in the HF cache {cache}: run "
        "`hf download acme/tiny-llava` with that HF_HOME (shared with the compute nodes) and submit with "
        "HF_HUB_OFFLINE=1, or set model.pretrained to a local folder"
    ]
    repo = cache / "models--acme--tiny-llava"  # the layout huggingface_hub writes
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    lines, passed = _check(fixture, "train:model.pretrained=acme/tiny-llava")
    assert passed and lines == [
        f"note [sft_tiny]: model acme/tiny-llava (model.pretrained) is in the HF cache {cache}; on compute nodes "
        "without network, submit with HF_HUB_OFFLINE=1 and HF_HOME on a shared filesystem"
    ]


def test_missing_evaluation_data(fixture):
    (fixture / "eval" / "pope").rmdir()
    lines, passed = _check(fixture)
    assert not passed and lines == [
        f"PROBLEM [eval_tiny]: evaluation task lit_pope: data {fixture}/eval/pope is missing; run `python -m "
        f"lit.eval.eval_data fetch pope --out {fixture}/eval` on a machine with hub access, or point eval.data_dir "
        "at the folder that holds it"
    ]
    lines, _ = _check(fixture, "evaluate:eval.builtin_tasks=[mmmu_val]")  # lmms-eval's own task: its hub data
    assert any("lmms-eval task mmmu_val: its data set" in p and "--repo-type dataset" in p for p in _problems(lines))


def test_gpus_the_site_does_not_have(fixture):
    lines, passed = _check(fixture, site=["gpus_per_node=4"])
    assert not passed and lines == [
        "PROBLEM [sft_tiny]: asks for 8 GPUs per node but the site's nodes have 4 (gpus_per_node); pass "
        "--gpus-per-node 4 (every training job; the global batch is kept by gradient accumulation)"
    ]
    assert _check(fixture, site=["gpus_per_node=4"], gpus_per_node=4) == ([], True)


def test_time_the_site_does_not_allow(fixture):
    """The evaluation's 1 h fits a 1-hour site, the training's 2 h does not: without the warning signal it would
    end as TIMEOUT (a problem); with it, it runs as two segments that resume (a note)."""
    lines, passed = _check(fixture, site=["max_hours=1", "signal_s=0"])
    assert not passed and lines == [
        "PROBLEM [sft_tiny]: needs ~2.0 h (the recipe's resources.hours), but the site's max_hours is 1: Slurm would "
        "stop it at 1 h (TIMEOUT); set site.signal_s to run it as segments that resume, or give it more GPUs or "
        "nodes, or a partition with a longer limit (site.max_hours)"
    ]
    lines, passed = _check(fixture, site=["max_hours=1", "signal_s=600"])
    assert passed and lines == [
        "note [sft_tiny]: needs ~2.0 h: the recipe's resources.hours; capped at the site's max_hours 1: runs as 2 "
        "segments (SIGUSR1 600 s before each limit: a checkpoint, scontrol requeue, schedule.resume=auto)"
    ]


def test_an_override_that_does_not_compose_for_a_job_names_it(fixture, capsys):
    lines, passed = _check(fixture, "train:model.compose.text=/models/vicuna")
    assert not passed and lines == [
        "PROBLEM [sft_tiny]: its config has no key model.compose.text, so the override "
        "model.compose.text=/models/vicuna does not compose (Hydra struct error); give it only to the jobs whose "
        "config has it: <job id or glob>:model.compose.text=/models/vicuna"
    ]
    recipes.main(["t", "--dry", "--output-root", str(fixture / "out"), "train:model.compose.text=/models/vicuna"])
    out = capsys.readouterr().out
    assert "  CONFIG ERROR: its config has no key model.compose.text" in out
    assert "# 1 job(s) whose config does not compose: sft_tiny" in out
    with pytest.raises(ValueError, match="'stage1_\\*' is neither a job kind .* nor matches a job id"):
        _check(fixture, "stage1_*:model.compose.text=/models/vicuna")  # a scope that names no job


def test_every_problem_is_reported_at_once_and_submit_refuses_without_force(fixture, monkeypatch):
    (fixture / "data" / "img0.png").unlink()
    (fixture / "eval" / "pope").rmdir()
    lines, _ = _check(fixture, site=["gpus_per_node=4", "max_hours=1", "signal_s=0"])
    starts = ["1 of 3 images that", "asks for 8 GPUs per node", "needs ~2.0 h (the recipe", "evaluation task lit_pope"]
    problems = _problems(lines)
    assert len(problems) == 4 and all(p.split("]: ", 1)[1].startswith(w) for p, w in zip(problems, starts))
    with pytest.raises(RuntimeError, match="nothing submitted; fix them, or pass --force"):
        recipes.run("t", "submit", fixture / "out", out=StringIO())
    assert not (fixture / "out").exists()  # no sbatch, no submission record, no log folder
    bin_dir = fixture / "bin"  # a stand-in sbatch: the submission itself is test_slurm.py's
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\necho 4242\n")
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    out = StringIO()
    recipes.run("t", "submit", fixture / "out", out=out, force=True)
    text = out.getvalue()
    assert "# --force: submitting despite 2 problem(s)" in text and text.count("submitted: 4242") == 2


def test_dry_run_on_a_4_gpu_site_shows_the_accumulation_raised_and_the_sbatch_flags(fixture, capsys):
    args = ["t", "--dry", "--output-root", str(fixture / "out"), "--site", "example_cluster", "site.gpus_per_node=4"]
    recipes.main(args)
    out = capsys.readouterr().out
    assert "  WARNING: job sft_tiny asks for 8 GPUs per node but site nodes have 4" in out
    assert "pass --gpus-per-node 4" in out
    recipes.main([*args, "--gpus-per-node", "4"])
    out = capsys.readouterr().out
    train = out.split("[train] sft_tiny")[1].split("[evaluate]")[0]
    assert "(to run; after: -; 1 node(s) x 4 GPU, ~4.0 h)" in train  # 2 h on 8 GPUs: the same GPU-hours on 4
    assert (
        "  shape: 1 node(s) x 4 GPU(s) (--gpus-per-node 4; the recipe asks 8); batch 12 per device x 4 process(es) "
        "x 2 accumulation = 96 global" in train
    )
    sbatch = next(line for line in train.splitlines() if line.startswith("  sbatch: "))
    for flag in (
        "--nodes=1",
        "--gpus-per-node=4",
        "--cpus-per-task=32",
        "--time=240",
        "--requeue",
        "--account=my-project",
        "--partition=gpu",
        "--constraint=a100-80g",
        "--mem=480G",
        "--mail-type=FAIL",
    ):
        assert f" {flag} " in sbatch + " ", flag
    assert sbatch.endswith(" slurm/train.sbatch")
    assert "WARNING" not in out and "~1 h" in out.split("[evaluate] eval_tiny")[1]  # evaluation keeps its 1 GPU
    # the training job's own command keeps the global batch: its composed config splits 96 as 12 x 4 x 2
    todo = recipes.run("t", "dry", fixture / "out", out=StringIO(), gpus_per_node=4)
    cfg = compose_job("train", todo[0].overrides)
    assert "schedule.global_batch_size=96" in todo[0].overrides
    assert split_global_batch(cfg.schedule.global_batch_size, cfg.train.per_device_train_batch_size, 4) == (12, 2)
    assert recipes.gpu_hours(todo) == recipes.gpu_hours(recipes.run("t", "dry", fixture / "out", out=StringIO()))


@pytest.mark.integration  # plans LLaVA-1.5-7B on the meta device (~15 s)
def test_time_and_memory_from_the_plan_against_the_site(tmp_path):
    """L2T Table 2's SFT jobs ask for 10 h; the plan's upper bound is 21 h of steps on 8 GPUs, 27 h with the
    overheads and the margin (lit.slurm.time_limit): a 12-hour site runs them as 3 segments that resume, and
    without the warning signal refuses them. Stage 1 needs 51 GB per GPU by the plan (ZeRO-2, micro-batch 32): 40 GB
    GPUs do not hold it."""
    out = StringIO()
    site = ["max_hours=12", "gpu_mem_gb=40"]
    with pytest.raises(RuntimeError, match="preflight"):
        recipes.run("l2t_t2", "check", tmp_path, out=out, site="example_cluster", site_overrides=site)
    lines = out.getvalue().splitlines()
    memory = [line for line in lines if "GB per GPU" in line]
    assert memory == [
        "PROBLEM [stage1_llava7b]: needs 51 GB per GPU by the plan (lit.train.plan) but the site's GPUs have 40 GB "
        "(gpu_mem_gb); lower train.per_device_train_batch_size (the accumulation rises), use more GPUs, or "
        "deepspeed=zero3_offload"
    ]
    sft = [
        line
        for line in lines
        if line.startswith(("PROBLEM [sft_llava7b_vit", "note [sft_llava7b_vit")) and " h" in line
    ]
    assert len(sft) == 1 and sft[0].startswith(
        "note [sft_llava7b_vit, sft_llava7b_lit]: needs ~27.2 h: lit.train.plan: 5,198 steps x 14.5 s at 40% MFU"
    )
    assert sft[0].endswith(
        "x 1.25 margin (site.time_margin); capped at the site's max_hours 12: runs as 3 segments "
        "(SIGUSR1 600 s before each limit: a checkpoint, scontrol requeue, schedule.resume=auto)"
    )
    out = StringIO()
    with pytest.raises(RuntimeError, match="preflight"):
        recipes.run("l2t_t2", "check", tmp_path, out=out, site="example_cluster", site_overrides=[*site, "signal_s=0"])
    sft = [
        line for line in out.getvalue().splitlines() if line.startswith("PROBLEM [sft_llava7b_vit") and " h (" in line
    ]
    assert len(sft) == 1 and sft[0].startswith(
        "PROBLEM [sft_llava7b_vit, sft_llava7b_lit]: needs ~27.2 h (lit.train.plan"
    )
    assert sft[0].endswith(
        "but the site's max_hours is 12: Slurm would stop it at 12 h (TIMEOUT); set site.signal_s to run it as "
        "segments that resume, or give it more GPUs or nodes, or a partition with a longer limit (site.max_hours)"
    )
