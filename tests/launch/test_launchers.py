"""SLURM launchers without a cluster: the sbatch template's dry run and the submitit launcher config."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[2]


def test_sbatch_dry_run_prints_the_command_and_records_it(tmp_path):
    env = {
        **os.environ,
        "DRY_RUN": "1",
        "RUN_DIR": str(tmp_path / "run"),
        "SLURM_NNODES": "2",
        "SLURM_GPUS_ON_NODE": "8",
    }
    env.pop("PROCS_PER_NODE", None)
    out = subprocess.run(
        ["bash", "slurm/train.sbatch", "model=llava7b", "loss=lit"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "torch.distributed.run --nnodes 2 --nproc_per_node 8" in out and "model=llava7b loss=lit" in out
    recorded = (tmp_path / "run" / "slurm_job.txt").read_text()
    assert "git_sha:" in recorded and "hydra.run.dir=" in recorded


def test_one_process_on_one_node_runs_without_torchrun(tmp_path):
    env = {**os.environ, "DRY_RUN": "1", "RUN_DIR": str(tmp_path / "run"), "SLURM_NNODES": "1", "PROCS_PER_NODE": "1"}
    out = subprocess.run(
        ["bash", "slurm/train.sbatch", "loss=lit"], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "torch.distributed.run" not in out and "train.py hydra.run.dir=" in out


def test_submitit_slurm_launcher_takes_the_site_settings():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train", overrides=["hydra/launcher=slurm", "loss=lit", "site=example_cluster"], return_hydra_config=True
        )
        cpu = compose("train", overrides=["hydra/launcher=slurm", "site=local_cpu"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.gpus_per_node == 8
    assert launcher.tasks_per_node == 8  # one task per GPU
    assert (launcher.account, launcher.partition, launcher.qos, launcher.constraint) == (
        "my-project",
        "gpu",
        "normal",
        "a100-80g",
    )
    assert launcher.additional_parameters == {"mail_type": "FAIL"} and launcher.setup[0].startswith("module load")
    assert (cpu.hydra.launcher.gpus_per_node, cpu.hydra.launcher.tasks_per_node) == (0, 1)
