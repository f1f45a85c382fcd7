"""Reproduction recipes: every job of every table composes, dry runs list the right jobs, the tiny demo
recipe runs locally end to end and its table renders; Hydra multiruns go through submitit_local."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from wandb_records import read_offline_run

from lit import recipes, slurm
from lit.report import tables

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
EXPECTED_JOBS = {
    "demo_t4": 5,
    "l2t_vc": 4,
    "l2t_t1": 25,
    "l2t_t2": 5,
    "l2t_t4": 9,
    "instraug_t1": 45,
    "instraug_t2": 25,
    "instraug_t4": 25,
    "instraug_eps": 17,
    "wit_llava7b": 11,
}
CONFIG_OF = {"train": "train", "evaluate": "eval", "augment": "augment", "vc": "vc", "mins_plus": "train"}


def test_every_table_has_a_recipe():
    assert set(recipes.available()) == set(EXPECTED_JOBS)


@pytest.mark.integration  # every paper recipe's dry run: ~170 jobs composed and planned, ~30 s
@pytest.mark.parametrize("name", sorted(EXPECTED_JOBS))
def test_dry_run_lists_every_job_and_each_composes(name, tmp_path):
    out = StringIO()
    jobs = recipes.run(name, "dry", tmp_path, out=out)
    assert len(jobs) == EXPECTED_JOBS[name]
    text = out.getvalue()
    assert text.count("(to run;") == len(jobs)
    result_names = set()
    for job in jobs:
        assert set(job.after) <= {j.id for j in jobs}
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(CONFIG_OF[job.kind], overrides=job.overrides)
        if job.kind == "train":
            assert cfg.run_name and cfg.loss.name
        if job.kind in ("evaluate", "vc"):
            ckpts = [cfg.ckpt] if isinstance(cfg.ckpt, str) else list(cfg.ckpt)
            # a checkpoint this recipe trains, or a published one by its hub id (e.g. the InstructBLIP base row)
            assert (
                all(c.startswith(str(tmp_path / "repro")) or not c.startswith("/") for c in ckpts) and cfg.result_name
            )
            result_names.add(cfg.result_name)
    table = recipes.load(name)["table"]
    train_ids = {j.id for j in jobs if j.kind == "train"}
    assert all(row["experiment"] in train_ids | result_names for row in table["rows"])


def test_recipe_dependencies_chain_stages(tmp_path):
    jobs = {j.id: j for j in recipes.jobs(recipes.load("instraug_t1"), tmp_path)}
    assert jobs["mi_59k_mins_plus_mt"].after == ["stage1_llava7b", "data_59k_mins_plus_mt"]
    assert jobs["data_59k_mins_plus_mt"].after == ["augment_mins_plus_mt"]
    for job in ("mi_59k_mins_plus_mt", "data_59k_mins_plus_mt"):
        assert f"data.mins_plus.pool={tmp_path}/repro/augment_mins_plus_mt/pool.jsonl" in jobs[job].overrides
    assert jobs["eval_mi_564k_mins"].after == ["mi_564k_mins"]


def test_submit_builds_sbatch_with_dependencies_resources_and_site(tmp_path):
    site = slurm.load_site("example_cluster")
    jobs = {j.id: j for j in recipes.jobs(recipes.load("l2t_t4"), tmp_path)}
    cmd = recipes._sbatch(jobs["sft_llava7b_lit"], tmp_path, ["123"], site)
    assert "--dependency=afterok:123" in cmd and "slurm/train.sbatch" in cmd and "experiment=l2t_llava7b_lit" in cmd
    assert {
        "--gpus-per-node=8",
        "--nodes=1",
        "--time=600",
        "--cpus-per-task=64",
        "--requeue",
        "--account=my-project",
        "--partition=gpu",
        "--qos=normal",
        "--constraint=a100-80g",
        "--mem=480G",
        "--mail-type=FAIL",
        f"--output={tmp_path}/slurm/%x-%j.out",
    } <= set(cmd)
    assert slurm.job_env(site, jobs["sft_llava7b_lit"].resources, "x")["PROCS_PER_NODE"] == "8"
    cmd = recipes._sbatch(jobs["t4_llava7b_lit"], tmp_path, [], site)
    assert "slurm/single.sbatch" in cmd and "evaluate.py" in cmd and "eval=l2t_core" in cmd
    assert "--gpus-per-node=1" in cmd and "--requeue" not in cmd


def test_instructblip_training_keeps_its_two_gpus(tmp_path):
    site = slurm.load_site("default")
    iblip = [
        j
        for j in recipes.jobs(recipes.load("instraug_t1"), tmp_path)
        if j.kind == "train" and j.resources.get("gpus") == 2
    ]
    assert iblip
    cmd = recipes._sbatch(iblip[0], tmp_path, [], site)
    assert "--gpus-per-node=2" in cmd and "--cpus-per-task=16" in cmd
    assert slurm.job_env(site, iblip[0].resources, iblip[0].id)["PROCS_PER_NODE"] == "2"


def test_mins_plus_builds_are_cpu_jobs_that_their_training_waits_for(tmp_path):
    """A MIns+ build asks for no GPU (not even --gpus-per-node=0, a gres request), goes to the site's CPU
    partition, is not requeued, and each training job of its arm depends on it (LLaVA and InstructBLIP alike)."""
    site = slurm.load_site("example_cluster", ["cpu_partition=cpu"])
    jobs = {j.id: j for j in recipes.jobs(recipes.load("instraug_t1"), tmp_path)}
    build = jobs["data_564k_mins_plus_iter"]
    cmd = recipes._sbatch(build, tmp_path, ["7"], site)
    assert cmd[cmd.index("slurm/single.sbatch") + 1] == "build_mins_plus.py"
    assert not any(a.startswith("--gpus") for a in cmd) and "--requeue" not in cmd
    assert {"--partition=cpu", "--cpus-per-task=4", "--time=120", "--dependency=afterok:7"} <= set(cmd)
    assert "--partition=gpu" in recipes._sbatch(jobs["mi_564k_mins_plus_iter"], tmp_path, [], site)
    assert "--partition=gpu" in recipes._sbatch(build, tmp_path, [], slurm.load_site("example_cluster"))
    builds = {j.id for j in jobs.values() if j.kind == "mins_plus"}
    assert len(builds) == 8 and recipes.gpu_hours([jobs[b] for b in builds]) == 0
    for job in jobs.values():
        if job.kind == "train" and "experiment=l2t_llava7b_stage1" not in job.overrides:
            assert len(builds & set(job.after)) == 1, job.id


def test_site_limits_map_onto_the_job(tmp_path):
    job = recipes.jobs(recipes.load("l2t_t2"), tmp_path)[1]  # 8 GPUs, 10 h
    cpu = recipes._sbatch(job, tmp_path, [], slurm.load_site("local_cpu", ["max_hours=0.5"]))
    assert not any(a.startswith("--gpus") for a in cpu) and "--time=30" in cpu and "--cpus-per-task=1" in cpu
    with pytest.raises(ValueError, match="asks for 8 GPUs per node but site nodes have 4"):
        recipes._sbatch(job, tmp_path, [], slurm.load_site("default", ["gpus_per_node=4"]))
    with pytest.raises(KeyError, match="unknown setting"):
        slurm.load_site("default", ["partiton=gpu"])


@pytest.mark.integration
def test_repro_args_mix_options_and_overrides(tmp_path):
    """What `make repro TABLE=demo_t4 DRY=1 ARGS="..."` runs: options and overrides in any order."""
    args = f"train:train.max_steps=2 --site local_cpu site.partition=debug --output-root {tmp_path} vc:n=3".split()
    proc = subprocess.run(
        [sys.executable, "-m", "lit.recipes", "demo_t4", "--dry", *args], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("train.max_steps=2") == 2 and "schedule.resume=auto" in proc.stdout
    assert "vc.py" in proc.stdout
    assert str(tmp_path) in proc.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "lit.recipes", "demo_t4", "--submit", "--site", "nowhere"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "no site 'nowhere'" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.integration
def test_demo_recipe_runs_locally_and_its_table_renders(tmp_path, demo_data, monkeypatch):
    runs = tmp_path / "runs"
    extra = [
        "train:train.max_steps=2",
        "train:train.per_device_train_batch_size=4",
        "train:train.disable_tqdm=true",
        f"train:data.root={demo_data}",
        "train:data.generate=false",
        "train:model.text.hidden_size=32",
        "train:model.vision.hidden_size=32",
        "evaluate:eval.limit=2",
        f"evaluate:eval.data_dir={demo_data}",
        f"evaluate:results_dir={runs}",
        f"vc:data.root={demo_data}",
        "vc:n=3",
        f"vc:results_dir={runs}",
    ]
    recipes.run("demo_t4", "local", tmp_path / "out", extra, out=StringIO())
    assert json.loads((runs / "demo_lit" / "demo_pope.json").read_text())["scores"]
    md = tables.render("demo_t4", runs, tmp_path / "tables", ROOT / "results" / "paper")
    ours = md.split("Ours:")[1]
    assert "| VIT |" in ours and "| LIT |" in ours and "–" not in ours
    assert (tmp_path / "tables" / "demo_t4.png").stat().st_size > 0
    assert "\\begin{tabular}" in (tmp_path / "tables" / "demo_t4.tex").read_text()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    tables.render("demo_t4", runs, tmp_path / "tables", ROOT / "results" / "paper", wandb=True)
    run, summary = read_offline_run(tmp_path / "tables")
    assert run.run_group == "demo_t4" and run.job_type == "table"
    vit_f1 = json.loads((runs / "demo_vit" / "demo_pope.json").read_text())["scores"]["pope_f1"] * 100
    assert summary["VIT/POPE F1"] == pytest.approx(vit_f1) and "LIT/mean VC" in summary and "table" in summary
    again = StringIO()
    recipes.run("demo_t4", "local", tmp_path / "out", extra, out=again)
    assert again.getvalue().count("done, skipped") == 5


def test_tables_show_paper_numbers_with_their_source(tmp_path):
    md = tables.render("l2t_t2", tmp_path / "none", tmp_path, ROOT / "results" / "paper")
    assert "| LLaVA-1.5-7B (presumed) | L2T | 46.2 | 11.8 |" in md and "lecture summary" in md
    assert md.split("Ours:")[1].split("Paper")[0].count("–") == 16  # nothing run yet: every cell empty


@pytest.mark.integration
def test_multirun_through_submitit_local(tmp_path, demo_data):
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "train.py",
        "-m",
        "hydra/launcher=submitit_local",
        "experiment=demo_vit,demo_lit",
        f"data.root={demo_data}",
        "data.generate=false",
        f"paths.data_dir={tmp_path}",
        "train.max_steps=2",
        "train.per_device_train_batch_size=4",
        "train.disable_tqdm=true",
        "model.text.hidden_size=32",
        "model.vision.hidden_size=32",
        f"hydra.sweep.dir={sweep}",
        "hydra.launcher.timeout_min=10",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "disabled"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = sorted(sweep.glob("*/train_metrics.json"))
    assert len(metrics) == 2 and all(json.loads(m.read_text())["steps"] == 2 for m in metrics)
    assert {json.loads(m.read_text()).get("instruction", 0) > 0 for m in metrics} == {True, False}


@pytest.mark.integration
def test_training_run_takes_its_wandb_name_from_the_recipe(tmp_path, demo_data):
    from tiny_runs import TINY

    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("WANDB", "_WANDB"))
    }  # no wandb state of this process
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_NAME="sft_llava7b_lit", WANDB_RUN_GROUP="l2t_t4")
    proc = subprocess.run(
        [
            sys.executable,
            "train.py",
            *TINY,
            f"data.root={demo_data}",
            "train.max_steps=1",
            f"paths.data_dir={tmp_path}",
            f"hydra.run.dir={tmp_path / 'run'}",
            "logger=wandb",
            f"logger.env.WANDB_DIR={tmp_path / 'wb'}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run, _ = read_offline_run(tmp_path / "wb")
    assert run.display_name == "sft_llava7b_lit" and run.run_group == "l2t_t4"


def test_jobs_starting_together_generate_the_demo_data_once(tmp_path):
    """A recipe's two training jobs start at the same moment on Slurm: one generates the demo data, the other
    waits for it and then reads complete files."""
    code = (
        "import logging, sys, json; from omegaconf import OmegaConf; from lit.data.build import generate_demo_data; "
        "logging.basicConfig(level=logging.INFO, format='%(message)s'); "
        "generate_demo_data(OmegaConf.create({'generate': True, 'root': sys.argv[1], 'n_train': 300, "
        "'n_test': 20, 'image_size': 32, 'seed': 0})); "
        "print(len(json.loads(open(sys.argv[1] + '/train.json').read())))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / "demo")],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in results]
    assert [out.strip() for out, _ in results] == ["300", "300"]
    assert sum("generating the demo data set" in err for _, err in results) == 1


SHARED = """stage1_a: {kind: train, overrides: ["experiment=a_stage1"], resources: {gpus: 8, hours: 1}}
sft_a:
  id: sft_a_{scope}
  kind: train
  after: [stage1_a]
  overrides: ["experiment=a_{scope}", "model.pretrained={run:stage1_a}/checkpoint"]
l2t_a: [stage1_a, sft_a]
"""


def _recipe_dir(tmp_path, monkeypatch, jobs: str):
    monkeypatch.setattr(recipes, "RECIPES", tmp_path)
    (tmp_path / "_jobs").mkdir()
    (tmp_path / "_jobs" / "shared.yaml").write_text(SHARED)
    (tmp_path / "t.yaml").write_text(f"name: t\njobs:\n{jobs}")


def test_a_shared_job_set_is_expanded_with_the_recipes_matrix_and_of_names_the_scored_run(tmp_path, monkeypatch):
    _recipe_dir(
        tmp_path,
        monkeypatch,
        "  - {use: l2t_a, matrix: {scope: [vit, lit]}}\n"
        "  - {id: 'ev_{scope}', kind: evaluate, of: 'sft_a_{scope}', matrix: {scope: [lit]}, overrides: [eval=x]}\n",
    )
    assert recipes.available() == ["t"]  # _jobs/ is not a recipe
    got = {j.id: j for j in recipes.jobs(recipes.load("t"), Path("/out"))}
    assert list(got) == ["stage1_a", "sft_a_vit", "sft_a_lit", "ev_lit"]  # stage 1 once: its id names no scope
    assert got["sft_a_lit"].overrides == ["experiment=a_lit", "model.pretrained=/out/repro/stage1_a/checkpoint"]
    assert got["ev_lit"].after == ["sft_a_lit"]
    assert got["ev_lit"].overrides == ["ckpt=/out/repro/sft_a_lit/checkpoint", "eval=x", "result_name=sft_a_lit"]


def test_an_unknown_shared_job_or_a_placeholder_no_matrix_sets_is_refused(tmp_path, monkeypatch):
    _recipe_dir(tmp_path, monkeypatch, "  - use: stage1_b\n")
    with pytest.raises(KeyError, match="unknown shared job 'stage1_b'; known: l2t_a, sft_a, stage1_a"):
        recipes.load("t")
    (tmp_path / "t.yaml").write_text("name: t\njobs:\n  - use: sft_a\n")
    with pytest.raises(ValueError, match="job sft_a_{scope} has a placeholder no matrix sets"):
        recipes.jobs(recipes.load("t"), Path("/out"))


def test_time_limits_fall_back_to_the_recipe_and_the_cap_makes_segments():
    """Without a plan (a model with no published architecture, a CPU site) a job asks for its recipe's hours; over
    the site's max_hours a training job runs as segments (it requeues itself on the warning signal), another job is
    only cut."""
    site = slurm.load_site("local_cpu", ["max_hours=0.5"])
    train = slurm.time_limit("train", {"hours": 2}, site)
    assert train.minutes == 30 and train.segments == 4
    assert train.source == (
        "the recipe's resources.hours; capped at the site's max_hours 0.5: runs as 4 segments (SIGUSR1 600 s before "
        "each limit: a checkpoint, scontrol requeue, schedule.resume=auto)"
    )
    evaluate = slurm.time_limit("evaluate", {"hours": 2}, site)
    assert (
        evaluate.minutes == 30 and evaluate.segments == 1 and evaluate.source.endswith("Slurm stops it there (TIMEOUT)")
    )
    assert slurm.time_limit("train", {"hours": 0.25}, site) == slurm.TimeLimit(
        15, "the recipe's resources.hours", 1, 0.25
    )
    assert train.capped and train.need_hours == 2 and not slurm.time_limit("train", {"hours": 0.25}, site).capped
    flags = slurm.sbatch_command("j", "train", {"hours": 2}, site, ROOT, [], ["slurm/train.sbatch"], minutes=30)
    assert "--time=30" in flags and "--signal=B:USR1@600" in flags and "--requeue" in flags
    quiet = slurm.sbatch_command("j", "train", {}, slurm.load_site("local_cpu", ["signal_s=0"]), ROOT, [], [])
    assert not any(f.startswith("--signal") for f in quiet)
    assert not any(f.startswith("--signal") for f in slurm.sbatch_command("j", "evaluate", {}, site, ROOT, [], []))
    short = slurm.sbatch_command("j", "train", {}, site, ROOT, [], [], minutes=15)  # the warning in the first half
    assert "--time=15" in short and not any(f.startswith("--signal") for f in short)


@pytest.mark.integration  # plans LLaVA-1.5-7B on the meta device (~15 s)
def test_dry_run_shows_each_jobs_time_limit_with_its_source_and_the_cap(tmp_path):
    """L2T Table 2 on an 8-GPU site: each training job's --time is its plan (21.0 h of steps for the SFT, an upper
    bound) plus loading, labelling and saves, times the 1.25 margin; the evaluations keep their recipe's hours. A
    12-hour site caps the training jobs and runs them as segments."""
    from lit.job_config import compose_job

    def dry(*site: str) -> dict[str, list[str]]:
        out = StringIO()
        recipes.run("l2t_t2", "dry", tmp_path, out=out, site="example_cluster", site_overrides=list(site))
        blocks = out.getvalue().split("\n[")[1:]
        return {b.split("] ", 1)[1].split(" ", 1)[0]: b.splitlines() for b in blocks}

    jobs = dry()
    sft = next(line for line in jobs["sft_llava7b_lit"] if line.startswith("  time: "))
    cfg = compose_job(
        "train", next(j for j in recipes.jobs(recipes.load("l2t_t2"), tmp_path) if j.id.endswith("lit")).overrides
    )
    hours, how = slurm.planned_hours(cfg, 1, 8)
    minutes = slurm.math.ceil(hours * 1.25 * 60)
    assert 21.0 < hours < 23.0 and how.startswith(
        "lit.train.plan: 5,198 steps x 14.5 s at 40% MFU (records at max length"
    )
    assert sft == f"  time: --time={minutes} ({minutes / 60:.1f} h) from {how}, x 1.25 margin (site.time_margin)"
    assert "+ model loading 0.17 h + labelling 0.37 h (665,298 records) + 10 save(s) and the final one" in sft
    sbatch = next(line for line in jobs["sft_llava7b_lit"] if line.startswith("  sbatch: "))
    assert f" --time={minutes} " in sbatch and " --signal=B:USR1@600 " in sbatch
    assert "  time: --time=240 (4.0 h) from the recipe's resources.hours" in jobs["t2_llava7b_lit"]
    assert "--signal" not in next(line for line in jobs["t2_llava7b_lit"] if line.startswith("  sbatch: "))

    capped = dry("max_hours=12", "time_margin=1.5")
    sft = next(line for line in capped["sft_llava7b_lit"] if line.startswith("  time: "))
    assert sft.startswith("  time: --time=720 (12.0 h) from lit.train.plan: 5,198 steps")
    assert sft.endswith(
        "x 1.5 margin (site.time_margin); capped at the site's max_hours 12: runs as 3 segments (SIGUSR1 600 s "
        "before each limit: a checkpoint, scontrol requeue, schedule.resume=auto)"
    )
    assert " --time=720 " in next(line for line in capped["stage1_llava7b"] if line.startswith("  sbatch: "))
