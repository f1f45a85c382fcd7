"""Reproduction recipes: one per paper table, each a list of jobs with explicit dependencies.

``conf/recipe/<table>.yaml`` lists jobs (``augment`` / ``mins_plus`` (one arm's MIns+ set) / ``train`` /
``evaluate`` / ``vc``), each with Hydra overrides for its entry point, resources, and ``after`` (the jobs it
needs). ``matrix`` expands one job over values (``{scope}`` in ids and overrides); ``{run:<job id>}`` is that
job's run directory.

- A job several tables need is written once, in ``conf/recipe/_jobs/*.yaml`` (a job, or a list of jobs that go
  together), and a recipe lists it as ``- use: <name>``: its own keys replace the shared ones, and a ``matrix`` of
  its own adds to the shared one's (first), for each job whose id names the key.
- An ``evaluate`` job names the training job it scores with ``of: <job id>``: that job's checkpoint, after it,
  its id as the result name.
- A ``table``'s ``rows`` or ``columns`` may name a list that tables share, in ``conf/recipe/_tables/*.yaml``.

Every job runs in ``<output_root>/repro/<job id>`` (shared by tables, so a stage-1 model is trained once), and a
job whose outputs exist is skipped. Runnable three ways:

- ``--dry``: print every job (command, resources, dependencies); no cluster needed;
- ``--submit``: ``sbatch`` each job (``slurm/train.sbatch`` for training, one process per GPU;
  ``slurm/augment.sbatch`` for augmentation, a ``vllm serve`` in the job; ``slurm/single.sbatch`` for the rest)
  with ``--dependency=afterok`` on the jobs it needs, its resources and the site's settings (``--site``,
  ``conf/site/<name>.yaml``; ``lit/slurm.py``). Training jobs are submitted with ``--requeue`` and
  ``schedule.resume=auto``. A job that is finished, or queued or running from an earlier invocation (its run
  directory's submission record), is not submitted again; its dependents attach to it. Each job's ``--time`` is its
  plan's (training with a published architecture: ``slurm.time_limit``, the site's margin, capped by ``max_hours``,
  over which it runs as requeued segments) or its recipe's hours. ``--wait`` blocks until every job has ended,
  cancels those whose dependency can never be satisfied (naming the upstream job that failed), and ends with a
  table of every job's final state and the command that resumes what failed;
- ``--local``: run the jobs one after another here (the tiny demo recipe, CI);
- ``--check``: the preflight alone (``lit/preflight.py``): data, images, weights, evaluation data and the site against
  every job, each problem one line naming its fix; ``--submit`` runs it first and submits nothing on a problem
  unless ``--force``.

``--gpus-per-node N`` gives every training job N GPUs per node (hours scaled to the same GPU-hours); the global batch
is kept by the gradient accumulation (``schedule.global_batch_size``, set from the job's own batch where its
schedule leaves it null). An override ``<kind>:<override>`` goes to one job kind, ``<job id or glob>:<override>`` to
the jobs it names, and every job's final config is composed by ``--dry``, ``--check`` and ``--submit``.

wandb: every job gets ``WANDB_RUN_GROUP=<table>``, ``WANDB_JOB_TYPE=<kind>``, ``WANDB_NAME=<job id>``.

    python -m lit.recipes l2t_t4 --dry        (make repro TABLE=l2t_t4 DRY=1)
"""

from __future__ import annotations

import argparse
import fnmatch
import itertools
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from lit import job_config, preflight, slurm
from lit.paths import conf_dir

ROOT = Path(__file__).resolve().parent.parent
RECIPES = conf_dir() / "recipe"
ENTRY = {
    "augment": "augment.py",
    "mins_plus": "build_mins_plus.py",
    "train": "train.py",
    "evaluate": "evaluate.py",
    "vc": "vc.py",
}


@dataclass
class Job:
    id: str
    kind: str
    overrides: list[str]
    after: list[str] = field(default_factory=list)
    resources: dict = field(default_factory=dict)
    limit: slurm.TimeLimit | None = None  # its --time and where it comes from (run() sets it; else the recipe's hours)

    def run_dir(self, output_root: Path) -> Path:
        return run_dir(output_root, self.id)

    def command(self, output_root: Path, python: str = "python") -> list[str]:
        return [python, ENTRY[self.kind], f"hydra.run.dir={self.run_dir(output_root)}", *self.overrides]

    def done(self, output_root: Path) -> bool:
        d = self.run_dir(output_root)
        return {
            "train": d / "train_metrics.json",
            "evaluate": d / "scores.json",
            "augment": d / "pool.jsonl",
            "mins_plus": d / "dataset.json",
            "vc": d / "vc.json",
        }[self.kind].exists()


def run_dir(output_root: Path, job_id: str) -> Path:
    return output_root / "repro" / job_id


def available() -> list[str]:
    return sorted(p.stem for p in RECIPES.glob("*.yaml"))


def load(name: str) -> dict:
    path = RECIPES / f"{name}.yaml"
    if not path.exists():
        raise KeyError(f"unknown recipe {name!r}; known: {', '.join(available())}")
    recipe = OmegaConf.to_container(OmegaConf.load(path))
    shared = shared_jobs()
    recipe["jobs"] = [job for spec in recipe["jobs"] for job in _expand(name, spec, shared)]
    table = recipe.get("table") or {}
    for part in ("rows", "columns"):
        if isinstance(table.get(part), str):
            lists = _shared("_tables")
            if table[part] not in lists:
                raise KeyError(
                    f"recipe {name}: table {part} {table[part]!r} is not in conf/recipe/_tables/; "
                    f"known: {', '.join(sorted(lists))}"
                )
            table[part] = lists[table[part]]
    return recipe


def _shared(folder: str) -> dict:
    """The entries of ``conf/recipe/<folder>/*.yaml``, one namespace: name -> value."""
    out: dict = {}
    for path in sorted((RECIPES / folder).glob("*.yaml")):
        for name, value in OmegaConf.to_container(OmegaConf.load(path)).items():
            if name in out:
                raise ValueError(f"{name!r} is defined twice in conf/recipe/{folder}/ ({path.name})")
            out[name] = value
    return out


def shared_jobs() -> dict[str, dict | list[str]]:
    """``conf/recipe/_jobs/*.yaml``: job name -> job (its ``id`` is the name unless it sets one), or set name -> the
    names of its jobs (jobs several recipes share: stage 1 once, not once per table)."""
    return {name: spec if isinstance(spec, list) else {"id": name, **spec} for name, spec in _shared("_jobs").items()}


def _expand(recipe: str, spec: dict, shared: dict) -> list[dict]:
    """A recipe's job as ``jobs`` reads it: ``use: <shared job or set>`` filled in, ``of: <job id>`` spelled out."""
    spec = dict(spec)
    if "use" in spec:
        name = spec.pop("use")
        if name not in shared:
            raise KeyError(f"recipe {recipe}: unknown shared job {name!r}; known: {', '.join(sorted(shared))}")
        if isinstance(shared[name], list):  # a set: the recipe's keys go to each of its jobs
            return [job for member in shared[name] for job in _expand(recipe, {**spec, "use": member}, shared)]
        base = shared[name]
        own = spec.pop("matrix", {})
        matrix = {**own, **{k: v for k, v in base.get("matrix", {}).items() if k not in own}}
        spec = {**base, **spec}
        matrix = {k: v for k, v in matrix.items() if f"{{{k}}}" in spec["id"]}  # a key the id lacks: not this job's
        spec.pop("matrix", None)
        if matrix:
            spec["matrix"] = matrix
    if "of" in spec:  # evaluate the checkpoint of job <of>
        of = spec.pop("of")
        spec["after"] = [of, *spec.get("after", [])]
        spec["overrides"] = [f"ckpt={{run:{of}}}/checkpoint", *spec.get("overrides", []), f"result_name={of}"]
    return [spec]


def _subst(text: str, values: dict) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: str(values.get(m.group(1), m.group(0))), text)


def jobs(recipe: dict, output_root: Path) -> list[Job]:
    """Expand the recipe's matrices and resolve ``{run:<id>}``; checks that every dependency exists."""
    out: list[Job] = []
    for spec in recipe["jobs"]:
        matrix = spec.get("matrix") or {}
        keys = list(matrix)
        for combo in itertools.product(*(matrix[k] for k in keys)) if keys else [()]:
            values = dict(zip(keys, combo))
            out.append(
                Job(
                    id=_subst(spec["id"], values),
                    kind=spec["kind"],
                    overrides=[_subst(o, values) for o in spec.get("overrides", [])],
                    after=[_subst(a, values) for a in spec.get("after", [])],
                    resources=spec.get("resources", {}),
                )
            )
    ids = [j.id for j in out]
    unexpanded = [i for i in ids if re.search(r"\{\w+\}", i)]
    if unexpanded:
        raise ValueError(f"recipe {recipe['name']}: job {unexpanded[0]} has a placeholder no matrix sets")
    if len(set(ids)) != len(out):
        raise ValueError(f"recipe {recipe['name']}: duplicate job ids")
    for i, job in enumerate(out):
        missing = [a for a in job.after if a not in ids]
        if missing:
            raise ValueError(f"recipe {recipe['name']}: job {job.id} depends on unknown job {missing[0]}")
        later = [a for a in job.after if a not in ids[:i]]
        if later:
            raise ValueError(f"recipe {recipe['name']}: job {job.id} depends on {later[0]}, listed after it")
        job.overrides = [
            re.sub(r"\{run:([\w.-]+)\}", lambda m: str(run_dir(output_root, m.group(1))), o) for o in job.overrides
        ]
    return out


def gpu_hours(todo: list[Job]) -> float:
    """What the jobs request in total: nodes x GPUs x hours (the recipes' estimates, not measurements)."""
    return sum(j.resources.get("nodes", 1) * j.resources.get("gpus", 1) * j.resources.get("hours", 0) for j in todo)


def _env(recipe: dict, job: Job) -> dict:
    return {"WANDB_RUN_GROUP": recipe["name"], "WANDB_JOB_TYPE": job.kind, "WANDB_NAME": job.id}


def _sbatch(job: Job, output_root: Path, deps: list[str], site) -> list[str]:
    script = {"train": ["slurm/train.sbatch"], "augment": ["slurm/augment.sbatch"]}.get(
        job.kind, ["slurm/single.sbatch", ENTRY[job.kind]]
    )
    minutes = job.limit.minutes if job.limit else None
    return slurm.sbatch_command(
        job.id, job.kind, job.resources, site, output_root, deps, script + job.overrides, minutes
    )


def set_time_limits(todo: list[Job], configs: dict, site) -> None:
    """Each job's ``--time`` on the site (``slurm.time_limit``): a training job's plan plus overheads with the site's
    margin where its model has a published architecture, else the recipe's hours; capped by ``max_hours``."""
    from omegaconf import DictConfig

    for job in todo:
        cfg = configs.get(job.id)
        cfg = cfg if isinstance(cfg, DictConfig) else None
        try:
            job.limit = slurm.time_limit(job.kind, job.resources, site, cfg)
        except Exception as err:  # the plan of an unusual config: the recipe's hours, and why
            job.limit = slurm.time_limit(job.kind, job.resources, site)
            job.limit = slurm.TimeLimit(
                job.limit.minutes, f"{job.limit.source} (no plan: {str(err).splitlines()[0]})", job.limit.segments
            )


def resume_command(name: str, output_root: Path, site: str, site_overrides, gpus_per_node, extra) -> str:
    """The command that submits again what failed or never ran (finished jobs are skipped, queued ones attached)."""
    args = ["python", "-m", "lit.recipes", name, "--submit", "--wait", "--site", site]
    args += ["--output-root", str(output_root)]
    args += [f"site.{o}" for o in site_overrides]
    args += ["--gpus-per-node", str(gpus_per_node)] if gpus_per_node is not None else []
    return " ".join(shlex.quote(a) for a in [*args, *extra])


def scope(extra: list[str], todo: list[Job]) -> None:
    """Add each override to the jobs it names: ``<kind>:<override>`` (``train:train.max_steps=2``) to that kind,
    ``<job id or glob>:<override>`` (``stage1_*:model.compose.text=/models/vicuna``) to those jobs, an unprefixed
    one to every job."""
    ids = [j.id for j in todo]
    for o in extra:
        target, sep, rest = o.partition(":")
        if not sep or not target or "=" in target or target.startswith(("+", "~")):
            named = set(ids)
            rest = o
        elif target in ENTRY:
            named = {j.id for j in todo if j.kind == target}
        else:
            named = set(fnmatch.filter(ids, target))
            if not named:
                raise ValueError(
                    f"override {o}: {target!r} is neither a job kind ({', '.join(ENTRY)}) nor matches a job id "
                    f"of this recipe ({', '.join(ids[:6])}{', ...' if len(ids) > 6 else ''})"
                )
        for job in todo:
            if job.id in named:
                job.overrides.append(rest)


def _shape_lines(job: Job, cfg, output_root: Path, site, before: dict[str, int]) -> list[str]:
    """What the dry run shows of a job on the site: its GPUs and batch split (training), the sbatch flags the site
    produces, or a warning where the site's nodes have fewer GPUs than it asks."""
    from omegaconf import DictConfig

    lines = []
    r = job.resources
    nodes, gpus = int(r.get("nodes", 1)), int(r.get("gpus", 1))
    if isinstance(cfg, str):
        lines.append(f"  CONFIG ERROR: {cfg}")
    elif job.kind == "train" and isinstance(cfg, DictConfig):
        was = f" (--gpus-per-node {gpus}; the recipe asks {before[job.id]})" if job.id in before else ""
        try:
            per_device, accumulation, world, global_batch = job_config.batch_split(
                cfg, nodes, gpus if site.gpus_per_node else 0
            )
            batch = (
                f"{per_device} per device x {world} process(es) x {accumulation} accumulation = {global_batch} global"
            )
        except ValueError as err:
            batch = f"DOES NOT SPLIT: {err}"
        lines.append(f"  shape: {nodes} node(s) x {gpus} GPU(s){was}; batch {batch}")
    try:
        cmd = _sbatch(job, output_root, [], site)
        lines.append("  sbatch: " + " ".join(cmd[2 : len(cmd) - len(job.overrides)]))
    except ValueError as err:
        fix = f"; or pass --gpus-per-node {site.gpus_per_node} (every training job)" if job.kind == "train" else ""
        lines.append(f"  WARNING: {err}{fix}")
    return lines


def run(
    name: str,
    mode: str,
    output_root: Path,
    extra: list[str] = (),
    out=sys.stdout,
    site: str = "default",
    site_overrides: list[str] = (),
    wait: bool = False,
    gpus_per_node: int | None = None,
    force: bool = False,
) -> list[Job]:
    recipe = load(name)
    todo = jobs(recipe, output_root)
    scope(list(extra), todo)
    for job in todo:
        if job.kind == "train":  # a requeued or re-run job continues from its last complete checkpoint
            job.overrides.append("schedule.resume=auto")
    site_cfg = slurm.load_site(site, site_overrides)
    configs = job_config.compose_all(todo) if mode != "local" else {}
    before = job_config.set_gpus_per_node(todo, configs, gpus_per_node) if gpus_per_node is not None else {}
    if mode in ("dry", "submit"):
        set_time_limits(todo, configs, site_cfg)
    kinds = ", ".join(f"{n} {k}" for k in ENTRY if (n := sum(j.kind == k for j in todo)))
    print(f"# {recipe['title']}: {len(todo)} jobs ({kinds}); {gpu_hours(todo):g} GPU-hours requested", file=out)
    for note in recipe.get("not_runnable", []):
        print(f"# not runnable here: {note}", file=out)
    if mode in ("check", "submit"):
        problems = preflight.report(preflight.check(todo, configs, output_root, site_cfg), out)
        if problems and mode == "check":
            raise RuntimeError(f"preflight: {problems} problem(s) above")
        if problems and not force:
            raise RuntimeError(
                f"preflight: {problems} problem(s) above, nothing submitted; fix them, or pass --force to submit anyway"
            )
        if problems:
            print(f"# --force: submitting despite {problems} problem(s)", file=out)
        if mode == "check":
            return todo
    slurm_ids: dict[str, str] = {}
    submitted: dict[str, str] = {}
    for job in todo:
        done = job.done(output_root)
        queued = slurm.active(job.run_dir(output_root)) if mode == "submit" and not done else None
        status = "done, skipped" if done else f"queued or running as {queued}, attached" if queued else "to run"
        r = job.resources
        print(
            f"[{job.kind}] {job.id} ({status}; after: {', '.join(job.after) or '-'}; "
            f"{r.get('nodes', 1)} node(s) x {r.get('gpus', 1)} GPU, ~{r.get('hours', '?')} h)",
            file=out,
        )
        print("  " + " ".join(shlex.quote(a) for a in job.command(output_root)), file=out)
        if mode == "dry":
            for line in _shape_lines(job, configs.get(job.id), output_root, site_cfg, before):
                print(line, file=out)
            lim = job.limit
            print(f"  time: --time={lim.minutes} ({lim.minutes / 60:.1f} h) from {lim.source}", file=out)
        if mode == "dry" and job.kind == "train" and not isinstance(configs.get(job.id), str):
            from lit.train.plan import (
                plan_lines,  # memory, fit and GPU-hours of the job on its resources
            )

            print(plan_lines(job.overrides, r), file=out)
        if queued:
            slurm_ids[job.id] = queued
        if mode == "dry" or done or queued:
            continue
        env = {**_env(recipe, job), "RUN_DIR": str(job.run_dir(output_root))}
        if mode == "local":
            subprocess.run(job.command(output_root, sys.executable), cwd=ROOT, env={**os.environ, **env}, check=True)
        elif mode == "submit":
            deps = [slurm_ids[a] for a in job.after if a in slurm_ids]
            env.update(slurm.job_env(site_cfg, job.resources, job.id))
            slurm_ids[job.id] = submitted[job.id] = slurm.submit(
                _sbatch(job, output_root, deps, site_cfg), job.run_dir(output_root), output_root, env
            )
            print(f"  submitted: {slurm_ids[job.id]}", file=out)
    if mode == "dry":
        broken = [j.id for j in todo if isinstance(configs.get(j.id), str)]
        if broken:
            print(f"# {len(broken)} job(s) whose config does not compose: {', '.join(broken)}", file=out)
    if mode == "submit" and wait and slurm_ids:
        print(f"# waiting for {len(slurm_ids)} job(s); logs in {slurm.log_dir(output_root)}/", file=out, flush=True)
        seen = slurm.wait(slurm_ids, out=out, after={j.id: j.after for j in todo})
        rows, source = slurm.final_states(slurm_ids, seen)
        every = {j.id: slurm_ids.get(j.id, "-") for j in todo}
        print(f"# final states ({source}):", file=out)
        for line in slurm.state_table(every, rows, {j.id: j.done(output_root) for j in todo}):
            print(line, file=out)
        failed = [j.id for j in todo if not j.done(output_root)]
        if failed:
            again = resume_command(name, output_root, site, site_overrides, gpus_per_node, extra)
            print(f"# to resume what failed or never ran (finished jobs are skipped):\n  {again}", file=out, flush=True)
            raise RuntimeError(
                f"{len(failed)} job(s) ended without their result: {', '.join(failed)}; "
                f"see {slurm.log_dir(output_root)}/<job>-<id>.out; resume with: {again}"
            )
    return todo


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lit.recipes", description=__doc__.split("\n")[0])
    parser.add_argument("table", choices=available())
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry", action="store_const", dest="mode", const="dry", help="print the jobs (default)")
    mode.add_argument("--submit", action="store_const", dest="mode", const="submit", help="sbatch with dependencies")
    mode.add_argument("--local", action="store_const", dest="mode", const="local", help="run the jobs here, in order")
    mode.add_argument(
        "--check", action="store_const", dest="mode", const="check", help="the preflight only (also run by --submit)"
    )
    parser.add_argument("--output-root", default=os.environ.get("LIT_OUTPUT_DIR", str(ROOT / "outputs")))
    parser.add_argument(
        "--site",
        default=os.environ.get("LIT_SITE", "default"),
        help="conf/site/<name>.yaml: account, partition, QoS, time cap, GPUs per node, sbatch flags",
    )
    parser.add_argument("--wait", action="store_true", help="with --submit: block until every job has ended")
    parser.add_argument("--force", action="store_true", help="with --submit: submit despite preflight problems")
    parser.add_argument(
        "--gpus-per-node",
        type=int,
        default=None,
        metavar="N",
        help="N GPUs per node for every training job (the global batch kept through gradient accumulation)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides added to every job, to one kind (train:train.max_steps=10) or to the jobs a job id "
        "or glob names (stage1_*:model.compose.text=/models/vicuna); site.<key>=<value> changes one site setting",
    )
    args = parser.parse_intermixed_args(argv)
    site_overrides = [o.removeprefix("site.") for o in args.overrides if o.startswith("site.")]
    overrides = [o for o in args.overrides if not o.startswith("site.")]
    try:
        run(
            args.table,
            args.mode or "dry",
            Path(args.output_root),
            overrides,
            out=sys.stdout,  # the stream at call time (a test's capture), not at import
            site=args.site,
            site_overrides=site_overrides,
            wait=args.wait,
            gpus_per_node=args.gpus_per_node,
            force=args.force,
        )
    except (RuntimeError, ValueError, FileNotFoundError, KeyError) as err:
        sys.exit(f"lit.recipes: {err}")


if __name__ == "__main__":
    main()
