"""The preflight of a recipe: what would stop its jobs on the cluster, found here before any GPU-hour is asked for.

``python -m lit.recipes <table> --check`` runs it on its own, and ``--submit`` runs it first and submits nothing
when it finds a problem (unless ``--force``). Every job that is not finished is checked, and every problem is
reported at once, one line each, naming the fix:

- its final Hydra config composes (an override that only stage 1's config has, reaching a stage-2 job, is a struct
  error here, not on the cluster after stage 1 has run);
- data: the data file and the image folder exist, and every image the records name (``"image"``, relative to
  ``data.image_root``) is there; missing images are a problem under ``data.on_invalid: raise`` and a note under
  ``skip`` (those records are skipped). Data built by an earlier job (MIns+ sets) or generated on first use (the
  demo) is not checked;
- model weights: a local path exists, or a hub id is in the Hugging Face cache (``config.json``), for
  ``model.pretrained`` / ``model.compose.*`` / ``model.tokenizer``, an evaluation's ``ckpt`` and the augmentation
  LLM; a checkpoint an earlier job writes is not checked;
- evaluation data: the files each task reads under ``eval.data_dir``, and lmms-eval's own tasks' hub data sets in
  the HF cache;
- the site: each job's GPUs per node against ``gpus_per_node``, its time (``lit.slurm.time_limit``: the recipe's
  hours, for training the plan's upper bound with overheads and margin) against ``max_hours`` (a training job over
  it runs as segments that resume, a note, where ``signal_s`` is set; else a problem), its per-GPU memory by the
  plan against ``gpu_mem_gb``, and its global batch split over its GPUs.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lit.job_config import batch_split
from lit.slurm import time_limit

ROOT = Path(__file__).resolve().parent.parent
OFFLINE_HINT = "on compute nodes without network, submit with HF_HUB_OFFLINE=1 and HF_HOME on a shared filesystem"


@dataclass(frozen=True)
class Finding:
    """One line of the report: a problem (submission refused) or a note."""

    jobs: tuple[str, ...]
    text: str
    problem: bool = True


def _path(p) -> Path:
    """A config path as the jobs see it (they run in the repository root)."""
    path = Path(str(p)).expanduser()
    return path if path.is_absolute() else ROOT / path


def hub_cache() -> Path:
    """The Hugging Face hub cache the jobs use (``HF_HUB_CACHE``, else ``HF_HOME``/hub), read now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "huggingface"
    return Path(home).expanduser() / "hub"


def _in_hub_cache(repo: str, repo_type: str = "model") -> bool:
    if repo_type == "model":
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo, "config.json", cache_dir=str(hub_cache())), str)
    snapshots = hub_cache() / f"{repo_type}s--{repo.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any(p.iterdir() for p in snapshots.iterdir() if p.is_dir())


def _image_census(data_file: str, image_root: str | None) -> tuple[int, int, str | None]:
    """``(records with an image, of them missing, the first missing)`` of a LLaVA JSON / JSONL file."""
    from lit.records import load_records

    root = Path(image_root) if image_root else None
    with_image, missing, first = 0, 0, None
    for record in load_records(data_file):
        images = record.get("image")
        if images is None:
            continue
        with_image += 1
        for name in images if isinstance(images, list) else [images]:
            if not (root / name if root else Path(name)).is_file():
                missing += 1
                first = first or str(name)
                break
    return with_image, missing, first


class Checker:
    """The checks of one recipe's jobs; ``produced`` are the run directories its jobs write (not checked)."""

    def __init__(self, output_root: Path, site: DictConfig, kinds: dict[str, str]):
        self.output_root = output_root
        self.site = site
        self.kinds = kinds  # job id -> kind, every job of the recipe
        self.findings: list[Finding] = []
        self.census: dict[tuple, tuple[int, int, str | None]] = {}

    def add(self, job, text: str, problem: bool = True) -> None:
        self.findings.append(Finding((job.id,), text, problem))

    def produced(self, p) -> bool:
        """A path inside the run directory of one of the recipe's jobs: an earlier job writes it."""
        path = str(_path(p))
        return any(path.startswith(str(self.output_root / "repro" / j) + "/") for j in self.kinds)

    def job(self, job, cfg: DictConfig) -> None:
        if job.kind in ("train", "mins_plus", "vc"):
            self.data(job, cfg.data)
        if job.kind == "train":
            self.model(job, cfg.model)
        if job.kind in ("evaluate", "vc"):
            for ckpt in [cfg.ckpt] if isinstance(cfg.ckpt, str) else list(cfg.ckpt):
                self.weights(job, ckpt, "ckpt")
        if job.kind == "evaluate":
            self.eval_data(job, cfg)
        if job.kind == "augment":
            self.augment(job, cfg.augmentation)
        self.site_fit(job, cfg if job.kind == "train" else None)

    # data ---------------------------------------------------------------------------------------------------
    def data(self, job, data: DictConfig) -> None:
        if data.get("generate"):
            return  # generated on first use (the demo)
        image_root = data.get("image_root")
        built_before = job.kind == "train" and any(self.kinds.get(a) == "mins_plus" for a in job.after)
        if job.kind == "mins_plus" or built_before:  # the set itself is built by a mins_plus job
            if job.kind == "mins_plus":
                m = data.mins_plus
                for key, value in (("instances", m.instances), ("pool", m.pool), ("generated", m.get("generated"))):
                    if value and not self.produced(value) and not _path(value).exists():
                        self.add(job, f"MIns+ input {_path(value)} is missing (data.mins_plus.{key}); put it there")
            if image_root and not _path(image_root).is_dir():
                self.add(job, f"image folder {_path(image_root)} is missing (data.image_root); put the images there")
            return
        path = _path(data.path)
        if self.produced(path):
            return
        if not path.is_file():
            self.add(job, f"data file {path} is missing (data.path); put it there, or set data.root / LIT_DATA_DIR")
            return
        root = _path(image_root) if image_root else None
        key = (str(path), str(root) if root else None)
        if key not in self.census:  # a data file several jobs read is read once
            self.census[key] = _image_census(*key)
        with_image, missing, first = self.census[key]
        if not missing:
            return
        on_invalid = data.get("on_invalid", "raise")
        where = f"under {root} (data.image_root)" if root else "(paths as given)"
        if root and not root.is_dir():
            text = f"image folder {root} is missing (data.image_root) but {with_image} records of {path} have images"
        else:
            text = f"{missing} of {with_image} images that {path} names are missing {where}, e.g. {first}"
        if on_invalid == "skip":
            self.add(job, f"{text}; data.on_invalid=skip skips those records", problem=False)
        else:
            self.add(job, f"{text}; put them there, or set data.on_invalid=skip to train without those records")

    # weights ------------------------------------------------------------------------------------------------
    def model(self, job, model: DictConfig) -> None:
        if model.get("pretrained"):
            self.weights(job, model.pretrained, "model.pretrained")
        elif model.get("compose"):
            for part in ("text", "vision"):
                if model.compose.get(part):
                    self.weights(job, model.compose[part], f"model.compose.{part}")
        if model.get("tokenizer") and not model.get("train_tokenizer"):
            self.weights(job, model.tokenizer, "model.tokenizer")

    def weights(self, job, name, key: str) -> None:
        from lit.model.hub import is_hub_id

        name = str(name)
        if self.produced(name):
            return
        if is_hub_id(name):
            if _in_hub_cache(name):
                self.add(job, f"model {name} ({key}) is in the HF cache {hub_cache()}; {OFFLINE_HINT}", problem=False)
            else:
                self.add(
                    job,
                    f"model {name} ({key}) is not in the HF cache {hub_cache()}: run `hf download {name}` with that "
                    f"HF_HOME (shared with the compute nodes) and submit with HF_HUB_OFFLINE=1, or set {key} to a "
                    "local folder",
                )
        elif not _path(name).exists():
            self.add(job, f"model weights {_path(name)} ({key}) do not exist; put them there or fix {key}")

    # evaluation data ----------------------------------------------------------------------------------------
    def eval_data(self, job, cfg: DictConfig) -> None:
        from lit.eval.evaluate import _data_hint, task_index

        e = cfg.eval
        data_dir = _path(e.data_dir)
        if cfg.data.get("generate") and data_dir == _path(cfg.data.root):
            return  # the demo's test split, generated with its training data
        index = task_index()
        for task in e.tasks:
            if task not in index:
                self.add(job, f"unknown evaluation task {task!r} (eval.tasks); known: lit/eval/tasks/*/")
                continue
            for member in index[task]["members"]:
                yaml_file = index.get(member, index[task])["yaml"]
                for rel in re.findall(r"__DATA_DIR__/(\S+)", yaml_file.read_text()):
                    if not (data_dir / rel).exists():
                        self.add(
                            job,
                            f"evaluation task {member}: data {data_dir / rel} is missing; {_data_hint(rel, data_dir)}",
                        )
        if "lit_multiinstruct" in e.tasks and e.get("multiinstruct_instructions"):
            if not _path(e.multiinstruct_instructions).exists():
                self.add(
                    job,
                    f"MultiInstruct's instructions {_path(e.multiinstruct_instructions)} are missing "
                    "(eval.multiinstruct_instructions); put the file there",
                )
        for task in e.get("builtin_tasks") or []:
            repo = lmms_task_dataset(task)
            if repo is None:
                self.add(job, f"lmms-eval task {task}: its hub data set was not found, not checked", problem=False)
            elif not _in_hub_cache(repo, "dataset"):
                self.add(
                    job,
                    f"lmms-eval task {task}: its data set {repo} is not in the HF cache {hub_cache()}: run "
                    f"`hf download {repo} --repo-type dataset` with that HF_HOME and submit with HF_HUB_OFFLINE=1",
                )

    def augment(self, job, aug: DictConfig) -> None:
        if aug.get("seeds") and not self.produced(aug.seeds) and not _path(aug.seeds).exists():
            self.add(job, f"seed instructions {_path(aug.seeds)} are missing (augmentation.seeds); put them there")
        model = OmegaConf.select(aug, "backend.args.model")
        if model:
            self.weights(job, model, "augmentation.backend.args.model")

    # the site -----------------------------------------------------------------------------------------------
    def site_fit(self, job, cfg: DictConfig | None) -> None:
        r, site = job.resources, self.site
        nodes, gpus = int(r.get("nodes", 1)), int(r.get("gpus", 1))
        have = site.gpus_per_node
        if have and gpus > have:
            fix = (
                f"pass --gpus-per-node {have} (every training job; the global batch is kept by gradient accumulation)"
                if job.kind == "train"
                else "change its resources.gpus in the recipe"
            )
            self.add(job, f"asks for {gpus} GPUs per node but the site's nodes have {have} (gpus_per_node); {fix}")
        need_gb = None
        if cfg is not None:
            try:
                batch_split(cfg, nodes, gpus if have else 0)
            except ValueError as err:
                self.add(job, f"on {nodes} node(s) x {gpus} GPU(s): {err}")
                return
            if gpus and have and site.get("gpu_mem_gb"):
                need_gb = self.memory(cfg, nodes, gpus)
        limit = time_limit(job.kind, r, site, cfg)
        if limit.segments > 1:
            self.add(job, f"needs ~{limit.need_hours:.1f} h: {limit.source}", problem=False)
        elif limit.capped:
            self.add(
                job,
                f"needs ~{limit.need_hours:.1f} h ({limit.source.split('; capped')[0]}), but the site's max_hours is "
                f"{site.max_hours:g}: Slurm would stop it at {site.max_hours:g} h (TIMEOUT); "
                + (
                    "set site.signal_s to run it as segments that resume, or "
                    if job.kind == "train" and not site.get("signal_s")
                    else ""
                )
                + "give it more GPUs or nodes, or a partition with a longer limit (site.max_hours)",
            )
        if need_gb is not None and need_gb > site.gpu_mem_gb:
            self.add(
                job,
                f"needs {need_gb:.0f} GB per GPU by the plan (lit.train.plan) but the site's GPUs have "
                f"{site.gpu_mem_gb:g} GB (gpu_mem_gb); lower train.per_device_train_batch_size "
                "(the accumulation rises), use more GPUs, or deepspeed=zero3_offload",
            )

    def memory(self, cfg: DictConfig, nodes: int, gpus: int) -> float | None:
        """GB per GPU by ``lit.train.plan`` (None: the model has no published architecture)."""
        if not cfg.model.get("architecture"):
            return None
        from lit.train.plan import GIB, plan

        return (
            plan(cfg, nodes=nodes, gpus_per_node=gpus, gpu_mem_gb=float(self.site.gpu_mem_gb))["need_gib"] * GIB / 1e9
        )


@functools.cache
def _lmms_tasks() -> dict[str, Path]:
    """lmms-eval's shipped task name -> its YAML file (read as text; lmms-eval is not imported)."""
    import importlib.util

    spec = importlib.util.find_spec("lmms_eval")
    if spec is None or not spec.submodule_search_locations:
        return {}
    index: dict[str, Path] = {}
    for path in sorted((Path(spec.submodule_search_locations[0]) / "tasks").rglob("*.yaml")):
        for m in re.finditer(r"^task:\s*[\"']?([\w.-]+)", path.read_text(errors="ignore"), re.M):
            index.setdefault(m.group(1), path)
    return index


def lmms_task_dataset(task: str) -> str | None:
    """The hub data set an lmms-eval task loads (its ``dataset_path``, following ``include:``), or None."""
    path = _lmms_tasks().get(task)
    for _ in range(4):
        if path is None or not path.is_file():
            return None
        text = path.read_text(errors="ignore")
        found = re.search(r"^dataset_path:\s*[\"']?([\w.-]+/[\w.-]+)", text, re.M)
        if found:
            return found.group(1)
        include = re.search(r"^include:\s*[\"']?([^\s\"']+)", text, re.M)
        path = path.parent / include.group(1) if include else None
    return None


def check(jobs: list, configs: dict, output_root: Path, site: DictConfig) -> list[Finding]:
    """Every finding for the jobs not yet finished; ``configs``: job id -> composed config, or the one-line
    reason it does not compose."""
    checker = Checker(output_root, site, {j.id: j.kind for j in jobs})
    for job in jobs:
        if job.done(output_root):
            continue
        cfg = configs[job.id]
        if isinstance(cfg, str):
            checker.add(job, cfg)
            checker.site_fit(job, None)
            continue
        checker.job(job, cfg)
    return merge(checker.findings)


def merge(findings: list[Finding]) -> list[Finding]:
    """Findings with the same text as one, naming every job it concerns (the order of first appearance)."""
    merged: dict[tuple[str, bool], list[str]] = {}
    for f in findings:
        jobs = merged.setdefault((f.text, f.problem), [])
        jobs += [j for j in f.jobs if j not in jobs]
    return [Finding(tuple(jobs), text, problem) for (text, problem), jobs in merged.items()]


def report(findings: list[Finding], out) -> int:
    """Print the findings, problems first, one line each; the number of problems."""
    problems = [f for f in findings if f.problem]
    notes = [f for f in findings if not f.problem]
    for f in problems + notes:
        jobs = ", ".join(f.jobs) if len(f.jobs) <= 4 else f"{', '.join(f.jobs[:3])} and {len(f.jobs) - 3} more"
        print(f"{'PROBLEM' if f.problem else 'note'} [{jobs}]: {f.text}", file=out)
    if problems:
        print(f"# preflight: {len(problems)} problem(s), {len(notes)} note(s)", file=out)
    else:
        print(f"# preflight passed ({len(notes)} note(s))", file=out)
    return len(problems)
