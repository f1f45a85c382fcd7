"""Submitting recipe jobs to Slurm: site settings, each job's resources as ``sbatch`` flags, and a submission
record in the job's run directory, so that a second invocation attaches to a queued or running job instead of
submitting it again.

Site settings live in ``conf/site/<name>.yaml`` (the same files the submitit launcher reads as the ``site`` group).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lit.paths import conf_dir

ROOT = Path(__file__).resolve().parent.parent
SITES = conf_dir() / "site"
RECORD = "slurm_submission.json"
# squeue states of a job that will still run (or is running); anything else has ended
ACTIVE = {
    "PENDING",
    "RUNNING",
    "CONFIGURING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SUSPENDED",
    "SIGNALING",
    "STAGE_OUT",
}


def load_site(name: str, overrides: list[str] = ()) -> DictConfig:
    """``conf/site/<name>.yaml`` merged over the site files its ``defaults`` list names, then ``key=value``
    overrides."""
    path = SITES / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in SITES.glob("*.yaml")))
        raise FileNotFoundError(f"no site {name!r} ({path}); known: {known}. Copy conf/site/example_cluster.yaml")
    cfg = OmegaConf.load(path)
    base = OmegaConf.create()
    for entry in cfg.pop("defaults", []):
        if entry != "_self_":
            base = OmegaConf.merge(base, load_site(entry))
    site = OmegaConf.merge(base, cfg, OmegaConf.from_dotlist(list(overrides)))
    unknown = set(site) - set(OmegaConf.load(SITES / "default.yaml"))
    if unknown:
        raise KeyError(f"site {name!r}: unknown setting(s) {sorted(unknown)}; see conf/site/default.yaml")
    return site


def log_dir(output_root: Path) -> Path:
    return output_root / "slurm"


def shape(resources: dict, site: DictConfig, job_id: str) -> dict:
    """Nodes, GPUs per node, processes per node, CPUs and minutes of one job on this site."""
    nodes, gpus = int(resources.get("nodes", 1)), int(resources.get("gpus", 1))
    have = site.gpus_per_node
    if have == 0:
        gpus = 0  # a CPU-only site: every job runs one process per node
    elif gpus > have:
        raise ValueError(
            f"job {job_id} asks for {gpus} GPUs per node but site nodes have {have}; "
            "change the recipe's resources (more nodes, fewer GPUs) or the site's gpus_per_node"
        )
    minutes = math.ceil(float(resources.get("hours", 24)) * 60)
    if site.max_hours is not None:
        minutes = min(minutes, math.ceil(site.max_hours * 60))
    cpus = gpus * site.cpus_per_gpu if gpus else site.cpus_per_task
    return {"nodes": nodes, "gpus": gpus, "procs": max(gpus, 1), "cpus": cpus, "minutes": minutes}


def sbatch_command(
    job_id: str, kind: str, resources: dict, site: DictConfig, output_root: Path, deps: list[str], script: list[str]
) -> list[str]:
    s = shape(resources, site, job_id)
    args = [
        "sbatch",
        "--parsable",
        f"--job-name={job_id}",
        f"--output={log_dir(output_root)}/%x-%j.out",
        "--open-mode=append",
        f"--nodes={s['nodes']}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={s['cpus']}",
        f"--time={s['minutes']}",
    ]
    if s["gpus"]:  # no GPU: no GPU request at all (--gpus-per-node=0 is still a gres:gpu request)
        args.append(f"--gpus-per-node={s['gpus']}")
    site_flags = {
        "account": site.account,
        "qos": site.qos,
        "constraint": site.constraint,
        "partition": site.partition if s["gpus"] or not site.cpu_partition else site.cpu_partition,
    }
    for flag, value in site_flags.items():
        if value:
            args.append(f"--{flag}={value}")
    if site.mem_gb:
        args.append(f"--mem={int(site.mem_gb)}G")
    if kind == "train":
        args.append("--requeue")  # preempted or requeued: it starts again and resumes (schedule.resume=auto)
    if deps:
        args.append("--dependency=afterok:" + ":".join(deps))
    for key, value in site.sbatch_extra.items():  # the same dict as submitit's additional_parameters
        flag = "--" + key.replace("_", "-")
        args.append(flag if value is True else f"{flag}={value}")
    return args + script


def job_env(site: DictConfig, resources: dict, job_id: str) -> dict:
    """What the sbatch scripts read: the interpreter, processes per node, the site's setup line."""
    env = {"LIT_PYTHON": site.python or sys.executable, "PROCS_PER_NODE": str(shape(resources, site, job_id)["procs"])}
    if site.setup:
        env["LIT_SITE_SETUP"] = "\n".join(site.setup)
    if site.vllm_setup:
        env["LIT_VLLM_SETUP"] = "\n".join(site.vllm_setup)
    return env


def state(slurm_id: str) -> str | None:
    """The job's squeue state, or None once Slurm no longer lists it."""
    res = subprocess.run(
        ["squeue", "-h", "--states=all", "-j", slurm_id, "-o", "%T|%r"], capture_output=True, text=True
    )
    if res.returncode != 0 or not res.stdout.strip():
        return None
    st, reason = res.stdout.strip().splitlines()[0].split("|", 1)
    if st == "PENDING" and reason == "DependencyNeverSatisfied":
        return "DEPENDENCY_NEVER_SATISFIED"
    return st


def settled_state(slurm_id: str, timeout_s: float = 120) -> str | None:
    """The job's state once it is no longer COMPLETING (a requeued job passes through COMPLETING to PENDING)."""
    deadline = time.time() + timeout_s
    st = state(slurm_id)
    while st == "COMPLETING" and time.time() < deadline:
        time.sleep(1)
        st = state(slurm_id)
    return st


def active(run_dir: Path) -> str | None:
    """The Slurm id recorded in ``run_dir`` if that job is still queued or running."""
    record = run_dir / RECORD
    if not record.exists():
        return None
    slurm_id = json.loads(record.read_text())["slurm_id"]
    return slurm_id if settled_state(slurm_id) in ACTIVE else None


def submit(command: list[str], run_dir: Path, output_root: Path, env: dict) -> str:
    log_dir(output_root).mkdir(parents=True, exist_ok=True)  # Slurm fails a job whose log directory is missing
    run_dir.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(command, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"sbatch failed ({res.returncode}): {res.stderr.strip()}\n  {' '.join(command)}")
    slurm_id = res.stdout.strip().split(";")[0]
    (run_dir / RECORD).write_text(
        json.dumps(
            {"slurm_id": slurm_id, "submitted": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": command}, indent=1
        )
    )
    return slurm_id


def wait(slurm_ids: dict[str, str], poll_s: float = 5.0, out=sys.stdout) -> dict[str, str]:
    """Block until none of the jobs (name -> Slurm id) is queued or running; their last states by name."""
    last: dict[str, str] = {}
    pending = dict(slurm_ids)
    while pending:
        for name, sid in list(pending.items()):
            st = state(sid)
            if st not in ACTIVE | {"COMPLETING"}:
                last[name] = st or "ENDED"
                del pending[name]
                if st == "DEPENDENCY_NEVER_SATISFIED":
                    subprocess.run(["scancel", sid], check=False)
                print(f"  {name} ({sid}): {last[name]}", file=out, flush=True)
        if pending:
            time.sleep(poll_s)
    return last
