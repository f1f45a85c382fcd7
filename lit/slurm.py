"""Submitting recipe jobs to Slurm: site settings, each job's resources as ``sbatch`` flags, and a submission
record in the job's run directory, so that a second invocation attaches to a queued or running job instead of
submitting it again.

Site settings live in ``conf/site/<name>.yaml`` (the same files the submitit launcher reads as the ``site`` group).

Time limits (``time_limit``): a training job whose model has a published architecture asks for its plan's upper
bound (``lit.train.plan``: FLOPs at the stated MFU, records at max length) plus the overheads below, times the
site's ``time_margin``, capped by ``max_hours``; every other job asks for its recipe's ``resources.hours``. A
training job gets ``--signal=B:USR1@<signal_s>``: ``slurm/train.sbatch`` then has the trainer save a complete
checkpoint at the next step boundary (``lit.train.preemption``) and requeues the job (``scontrol requeue``), which
resumes with ``schedule.resume=auto``: a job that needs more than ``max_hours`` runs as such segments. Its
dependents wait on its job id with ``afterok``, which a requeued job keeps (it is pending again, not ended).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
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


# What a training job spends besides its optimizer steps. Our estimates, not measurements (no cluster run of this
# repository has timed them); the site's time_margin is there for their error and for the plan's MFU.
# - model loading: 16-bit weights of a 7B/13B model (14-26 GB) read from a shared filesystem at a few hundred MB/s
#   and partitioned by ZeRO-3, a few minutes; taken as 10 min;
LOAD_S = 600.0
# - labelling: each record rendered, tokenized and masked once per node (lit.data, its label cache): measured at
#   0.4-0.6 ms per record in one process on a 2-core CPU machine (BENCHMARKS.md, "Template mining and label
#   building" and "Labelling a missing cache entry"), with fixed image counts; taken as 2 ms, for the image-header
#   reads of size-dependent families on a shared filesystem (LLaVA-665K: 22 min);
LABEL_S_PER_RECORD = 0.002
# - checkpoint saves (train.save_steps): 12 bytes per trainable parameter (DeepSpeed's fp32 master weights and
#   Adam's two moments) + 2 per parameter (16-bit weights), written at 1 GB/s to the shared filesystem (7B: ~95 s
#   a save); the final save writes the 16-bit weights only.
SAVE_BYTES_PER_S = 1e9


@dataclass(frozen=True)
class TimeLimit:
    """A job's ``--time`` and where it comes from (one line for the dry run); ``segments`` > 1: it needs more than
    the site's ``max_hours`` and runs as that many requeued segments; ``need_hours``: its hours before the cap."""

    minutes: int
    source: str
    segments: int = 1
    need_hours: float = 0.0

    @property
    def capped(self) -> bool:
        """Whether the site's ``max_hours`` is shorter than the job needs."""
        return self.need_hours > self.minutes / 60 + 1e-9


def planned_hours(cfg: DictConfig, nodes: int, gpus: int) -> tuple[float, str] | None:
    """A training job's hours by its plan plus the overheads (before the margin) and how they add up; None where
    its model has no published architecture or its data set no known record count."""
    if not cfg.model.get("architecture") or not gpus:
        return None
    from lit.train.plan import plan

    p = plan(cfg, nodes=nodes, gpus_per_node=gpus)
    if not p["steps_per_epoch"]:
        return None
    t = cfg.train
    max_steps = int(t.get("max_steps", -1) or -1)
    epochs = float(t.num_train_epochs)
    steps = math.ceil(max_steps if max_steps > 0 else p["steps_per_epoch"] * epochs)
    strategy = str(t.get("save_strategy", "no"))
    saves = steps // int(t.save_steps) if strategy == "steps" and t.get("save_steps") else 0
    saves = math.ceil(epochs) if strategy == "epoch" else saves
    save_s = (saves * (12 * p["params_trainable"] + 2 * p["params_total"]) + 2 * p["params_total"]) / SAVE_BYTES_PER_S
    label_s = (p["records"] or 0) * LABEL_S_PER_RECORD
    train_s = steps * p["step_s"]
    hours = (train_s + LOAD_S + label_s + save_s) / 3600
    how = (
        f"lit.train.plan: {steps:,} steps x {p['step_s']:.1f} s at {p['mfu']:.0%} MFU"
        + (" (records at max length: an upper bound)" if p["mean_tokens_assumed"] else "")
        + f" = {train_s / 3600:.1f} h, + model loading {LOAD_S / 3600:.2f} h + labelling {label_s / 3600:.2f} h "
        f"({p['records']:,} records) + {saves} save(s) and the final one {save_s / 3600:.2f} h = {hours:.1f} h"
    )
    return hours, how


def time_limit(kind: str, resources: dict, site: DictConfig, cfg: DictConfig | None = None) -> TimeLimit:
    """A job's ``--time``: for a training job with a plan (``cfg`` composed, a GPU site), the plan's hours plus
    overheads times ``site.time_margin``; else the recipe's ``resources.hours`` (24 if it sets none). Capped by
    ``site.max_hours``; a training job over the cap runs as segments (``--signal``, requeue, resume)."""
    nodes, gpus = int(resources.get("nodes", 1)), int(resources.get("gpus", 1))
    hours, source = float(resources.get("hours", 24)), "the recipe's resources.hours"
    planned = planned_hours(cfg, nodes, gpus) if kind == "train" and cfg is not None and site.gpus_per_node else None
    if planned is not None:
        margin = float(site.get("time_margin") or 1.0)
        hours = planned[0] * margin
        source = f"{planned[1]}, x {margin:g} margin (site.time_margin)"
    segments, need = 1, hours
    if site.max_hours is not None and hours > site.max_hours:
        if kind == "train" and site.get("signal_s"):
            segments = math.ceil(hours / site.max_hours)
            source += (
                f"; capped at the site's max_hours {site.max_hours:g}: runs as {segments} segments (SIGUSR1 "
                f"{site.signal_s} s before each limit: a checkpoint, scontrol requeue, schedule.resume=auto)"
            )
        else:
            source += f"; capped at the site's max_hours {site.max_hours:g}: Slurm stops it there (TIMEOUT)"
        hours = float(site.max_hours)
    return TimeLimit(max(1, math.ceil(hours * 60 - 1e-9)), source, segments, need)


def shape(resources: dict, site: DictConfig, job_id: str) -> dict:
    """Nodes, GPUs per node, processes per node, CPUs and minutes (the recipe's hours, capped) of one job on this
    site."""
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
    job_id: str,
    kind: str,
    resources: dict,
    site: DictConfig,
    output_root: Path,
    deps: list[str],
    script: list[str],
    minutes: int | None = None,
) -> list[str]:
    """The job's ``sbatch`` command line; ``minutes``: its ``--time`` (``time_limit``), else the recipe's hours."""
    s = shape(resources, site, job_id)
    if minutes is not None:
        s["minutes"] = minutes
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
        # to the batch shell only (B:): slurm/train.sbatch saves, then requeues the job; not where the warning would
        # come in the first half of the limit (each segment would get too little done)
        if site.get("signal_s") and 2 * site.signal_s <= s["minutes"] * 60:
            args.append(f"--signal=B:USR1@{int(site.signal_s)}")
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


def wait(
    slurm_ids: dict[str, str], poll_s: float = 5.0, out=sys.stdout, after: dict[str, list[str]] | None = None
) -> dict[str, str]:
    """Block until none of the jobs (name -> Slurm id) is queued or running; their last states by name. A job whose
    dependency can never be satisfied (an upstream job failed) is cancelled with a line naming that job (``after``:
    name -> the names it depends on)."""
    last: dict[str, str] = {}
    pending = dict(slurm_ids)
    while pending:
        for name, sid in list(pending.items()):
            st = state(sid)
            if st not in ACTIVE | {"COMPLETING"}:
                last[name] = st or "ENDED"
                del pending[name]
                line = f"  {name} ({sid}): {last[name]}"
                if st == "DEPENDENCY_NEVER_SATISFIED":
                    subprocess.run(["scancel", sid], check=False)
                    culprit = failed_upstream(name, after or {}, last, slurm_ids)
                    line = f"  {name} ({sid}): cancelled: its dependency can never be satisfied" + (
                        f": upstream job {culprit}" if culprit else ""
                    )
                print(line, file=out, flush=True)
        if pending:
            time.sleep(poll_s)
    return last


def failed_upstream(name: str, after: dict[str, list[str]], last: dict[str, str], slurm_ids: dict[str, str]) -> str:
    """``<job> (<Slurm id>) ended <state>``: the job upstream of ``name`` that failed first (followed through the
    dependents cancelled for it), or '' if none is known."""
    seen: set[str] = set()
    todo = list(after.get(name, []))
    while todo:
        up = todo.pop(0)
        if up in seen:
            continue
        seen.add(up)
        st = last.get(up) or (state(slurm_ids[up]) if up in slurm_ids else None) or "?"
        if st == "DEPENDENCY_NEVER_SATISFIED":
            todo[:0] = after.get(up, [])
        elif st not in ("COMPLETED", "ENDED") and st not in ACTIVE | {"COMPLETING"}:
            return f"{up} ({slurm_ids.get(up, '?')}) ended {st}"
    return ""


SACCT_FIELDS = ("JobID", "State", "ExitCode", "Elapsed")


def parse_sacct(text: str) -> dict[str, dict[str, str]]:
    """``sacct -n -P -X -o JobID,State,ExitCode,Elapsed`` output: Slurm id -> its fields (the state's first word:
    ``CANCELLED by 1000`` is ``CANCELLED``); a job listed twice keeps its last line."""
    rows: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < len(SACCT_FIELDS) or not parts[0]:
            continue
        row = dict(zip(SACCT_FIELDS, parts))
        row["State"] = row["State"].split()[0] if row["State"].strip() else "?"
        rows[row["JobID"]] = row
    return rows


def final_states(slurm_ids: dict[str, str], seen: dict[str, str]) -> tuple[dict[str, dict[str, str]], str]:
    """Each job's final state by ``sacct`` (Slurm id -> fields), and where the states come from; where ``sacct``
    has no record (accounting disabled, as on the local test Slurm), the last state ``wait`` saw."""
    try:
        res = subprocess.run(
            ["sacct", "-n", "-P", "-X", "-j", ",".join(slurm_ids.values()), "-o", ",".join(SACCT_FIELDS)],
            capture_output=True,
            text=True,
        )
        rows = parse_sacct(res.stdout) if res.returncode == 0 else {}
    except FileNotFoundError:  # no sacct on this machine
        rows = {}
    source = "sacct" if rows else "squeue (sacct has no records: accounting storage is off)"
    for name, sid in slurm_ids.items():
        rows.setdefault(sid, {"JobID": sid, "State": seen.get(name, "?"), "ExitCode": "-", "Elapsed": "-"})
    return rows, source


def state_table(slurm_ids: dict[str, str], rows: dict[str, dict[str, str]], done: dict[str, bool]) -> list[str]:
    """One line per job: its name, Slurm id, final state, exit code, elapsed time and whether its result is there."""
    table = [("job", "Slurm id", "state", "exit", "elapsed", "result")]
    for name, sid in slurm_ids.items():
        row = rows.get(sid, {})
        state_ = row.get("State", "?") if sid != "-" else "not submitted (done before)"
        if state_ == "DEPENDENCY_NEVER_SATISFIED":
            state_ = "CANCELLED (dependency)"
        result = "yes" if done.get(name) else "MISSING"
        table.append((name, sid, state_, row.get("ExitCode", "-"), row.get("Elapsed", "-"), result))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
