"""Score a checkpoint with lmms-eval, used as a library, on tasks kept in lmms-eval's own layout.

Task folders live in ``lit/eval/tasks/<folder>/{*.yaml, utils.py}``; a folder may hold several tasks and
a group. For a run the folders of the requested tasks are copied into ``<out>/lmms_tasks/`` with
``__DATA_DIR__`` filled in and a ``settings.json`` (data directory, yes/no rule, ...) that the hooks read,
and passed to lmms-eval as its include path, so the exact task files used are kept beside the scores.
An aggregation may return a dict of metrics; they are flattened to ``<metric>/<key>``.

Every evaluation writes ``scores.json`` and ``samples/<task>.jsonl`` (per document) in its output folder
and, when ``results_dir`` is given, one ``<results_dir>/<experiment>/<task>.json`` per task: scores, task
version, prompt, generation settings, the run's resolved config, git SHA and lmms-eval version (the store
``make tables`` reads). Score files are written atomically (a temporary name, then renamed), the results store
first and ``scores.json`` (which marks the evaluation done, ``lit.recipes``) last, so a run killed mid-write
leaves no file cut off; an earlier evaluation's ``scores.json`` is removed when one starts, so a run killed
before its end leaves no done marker. A full disk stops it with one line (``lit.files.DiskFull``) naming the file
being written or, inside lmms-eval (whose only write here is its datasets cache; it writes no samples or results
of its own, as no ``output_path`` or ``use_cache`` is passed), the cache and the output folder; no ``scores.json``
is left.

A killed evaluation started again redoes it from scratch (the same scores: generation is greedy). lmms-eval
0.7.3's response cache (``--use_cache``, ``lmms_eval.caching.response_cache``) could not resume it: it stores
the responses of a request type only once the model has returned all of them (``ResponseCache.execute`` hands
the whole list to ``generate_until``), and a killed run's responses sit under ``runs/<run id>/`` (a fresh uuid
per run unless ``LMMS_CACHE_RUN_ID`` or ``SLURM_JOB_ID`` names the same one), merged only on success.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from importlib.metadata import version
from pathlib import Path

import yaml

from lit.eval.spec import EvalSpec
from lit.files import DiskFull, atomic_write, free_bytes, is_disk_full, load_json
from lit.tracking import git_sha

log = logging.getLogger(__name__)
TASKS_DIR = Path(__file__).with_name("tasks")
MODEL_ID = "lit_llava"


def _data_hint(rel: str, data_dir: Path) -> str:
    from lit.eval.eval_data import HUB

    name = rel.split("/")[0]
    if name in HUB:
        how = f"run `python -m lit.eval.eval_data fetch {name} --out {data_dir}` on a machine with hub access"
    elif name == "multiinstruct":
        how = (
            "put MultiInstruct's test files and original instructions there "
            "(layout: `python -m lit.eval.eval_data --help`)"
        )
    else:
        how = "generate or download it"
    return f"{how}, or point eval.data_dir at the folder that holds it"


class _TaskLoader(yaml.SafeLoader):
    """Reads lmms-eval task YAML without resolving ``!function`` tags."""


_TaskLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def task_index() -> dict[str, dict]:
    """lmms-eval task or group name -> {"folder", "yaml", "members"} over all shipped task folders."""
    index: dict[str, dict] = {}
    for path in sorted(TASKS_DIR.glob("*/*.yaml")):
        spec = yaml.load(path.read_text(), Loader=_TaskLoader) or {}
        if "task" in spec and isinstance(spec["task"], str):
            index[spec["task"]] = {"folder": path.parent, "yaml": path, "members": [spec["task"]]}
        elif "group" in spec:
            index[spec["group"]] = {"folder": path.parent, "yaml": path, "members": list(spec["task"])}
    return index


def register_model() -> None:
    """Make ``lit_llava`` known to lmms-eval's model registry (idempotent)."""
    from lmms_eval.models import MODEL_REGISTRY_V2

    from lit.eval.lmms_model_manifest import manifest

    try:
        MODEL_REGISTRY_V2.register_manifest(manifest())
    except ValueError:  # already registered (e.g. through the package's entry point)
        pass


def prepare_tasks(tasks: list[str], data_dir: str | Path, out_dir: str | Path, settings: dict | None = None) -> Path:
    """Copy the folders of ``tasks`` into ``out_dir/lmms_tasks`` with the data directory filled in; check
    that every data file the requested tasks read exists, saying how to get it if not."""
    data_dir = Path(data_dir).resolve()
    include = Path(out_dir) / "lmms_tasks"
    index = task_index()
    unknown = [t for t in tasks if t not in index]
    if unknown:
        known = sorted(n for n in index if not n.startswith("_"))
        raise KeyError(f"unknown evaluation task {unknown[0]!r}; known: {', '.join(known)}")
    requested = {index[m]["yaml"].name: m for t in tasks for m in index[t]["members"]}  # yaml file -> task
    for folder in sorted({index[t]["folder"] for t in tasks}):
        dst = include / folder.name
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(folder, dst, ignore=shutil.ignore_patterns("__pycache__"))
        for yaml_file in dst.glob("*.yaml"):
            text = yaml_file.read_text()
            if yaml_file.name in requested:
                for rel in re.findall(r"__DATA_DIR__/(\S+)", text):
                    if not (data_dir / rel).exists():
                        raise FileNotFoundError(
                            f"task {requested[yaml_file.name]}: data {data_dir / rel} is missing; "
                            f"{_data_hint(rel, data_dir)}"
                        )
            yaml_file.write_text(text.replace("__DATA_DIR__", str(data_dir)))
        (dst / "settings.json").write_text(json.dumps({"data_dir": str(data_dir), **(settings or {})}, indent=1))
    return include


def _flatten(metrics: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = key.split(",")[0]
        if "stderr" in name or name == "alias":
            continue
        if isinstance(value, dict):
            out.update({f"{name}/{k}": v for k, v in value.items() if isinstance(v, (int, float))})
        elif isinstance(value, (int, float)):
            out[name] = value
    return out


def evaluate(
    ckpt: str | Path,
    spec: EvalSpec,
    out_dir: str | Path,
    *,
    chat_template: str = "vicuna_v1",
    experiment: str | None = None,
    results_dir: str | Path | None = None,
    config: dict | None = None,
) -> dict:
    """Run lmms-eval on ``ckpt`` for ``spec``; returns ``{task: {metric: value}}`` and writes the files described
    above. ``spec.builtin_tasks`` are lmms-eval's own tasks (e.g. ``mmmu_val``), run as lmms-eval ships them."""
    from lit.model.loading import check_checkpoint

    ckpt = Path(ckpt)
    check_checkpoint(ckpt)
    done = Path(out_dir) / "scores.json"
    if done.exists():  # an earlier evaluation's: this one is not done until it writes its own (a kill leaves none)
        log.info("%s is an earlier evaluation's: removed until this one is done", done)
        done.unlink()
    tasks, settings, limit = list(spec.tasks), spec.settings(out_dir), spec.limit
    batch_size, dtype, device = spec.batch_size, spec.dtype, spec.device
    _check_judge(tasks, settings)
    include = prepare_tasks(tasks, spec.data_dir, out_dir, settings)
    from lmms_eval import evaluator
    from lmms_eval.tasks import TaskManager

    register_model()
    logging.getLogger("lmms-eval").setLevel(logging.WARNING)
    manager = TaskManager("WARNING", include_path=str(include))
    missing = [t for t in spec.builtin_tasks if t not in manager.all_tasks]
    if missing:
        raise KeyError(f"lmms-eval {version('lmms_eval')} has no task {missing[0]!r}")
    try:
        raw = evaluator.simple_evaluate(
            model=MODEL_ID,
            model_args=f"pretrained={ckpt},chat_template={chat_template},dtype={dtype}",
            tasks=[*tasks, *spec.builtin_tasks],
            task_manager=manager,
            batch_size=batch_size,
            device=device,
            limit=limit,
        )
    except Exception as err:  # lmms-eval wraps it (tenacity's RetryError, datasets' DatasetGenerationError)
        if is_disk_full(err):
            raise _lmms_eval_disk_full(err, [*tasks, *spec.builtin_tasks], Path(out_dir)) from err
        raise
    scores = {task: _flatten(metrics) for task, metrics in raw["results"].items() if task not in raw.get("groups", {})}
    meta = {
        "checkpoint": str(ckpt),
        "lmms_eval_version": version("lmms_eval"),
        "git_sha": git_sha(),
        "limit": limit,
        "settings": settings,
        "batch_size": batch_size,
        "dtype": dtype,
    }
    task_meta = {}
    for task in scores:
        cfg = raw.get("configs", {}).get(task, {})
        task_meta[task] = {
            "version": raw.get("versions", {}).get(task),
            "n_samples": raw.get("n-samples", {}).get(task),
            "generation_kwargs": cfg.get("generation_kwargs"),
            "prompt": cfg.get("lmms_eval_specific_kwargs"),
        }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_samples(raw.get("samples") or {}, out_dir / "samples")
    if results_dir is not None:
        for task, metrics in scores.items():
            store_result(
                results_dir,
                experiment or ckpt.parent.name,
                task,
                metrics,
                {**meta, **task_meta[task], "config": config},
            )
    record = {**meta, "scores": scores, "tasks": task_meta}
    atomic_write(out_dir / "scores.json", json.dumps(record, indent=1, default=str))  # marks it done: last, whole
    return scores


def _lmms_eval_disk_full(err: BaseException, tasks: list[str], out_dir: Path) -> DiskFull:
    """The one-line stop for a full disk inside ``simple_evaluate``: where lmms-eval writes there (its datasets
    cache, ``lmms_eval.api.task.ConfigurableTask.download``; a task hook's cache in ``out_dir``), named by the
    failed write's file where the error keeps one (Python's own writes), else the datasets cache and ``out_dir``
    (pyarrow's writes keep none). Nothing of ours is written yet: no samples, no results, no ``scores.json``."""
    named, seen = None, set()
    while err is not None and id(err) not in seen and named is None:
        seen.add(id(err))
        named = err.filename if isinstance(err, OSError) and err.filename else None
        err = err.__cause__ or err.__context__
    if named is None:
        from lmms_eval.api.task import _resolve_hf_datasets_cache_dir

        cache = _resolve_hf_datasets_cache_dir()
        where, room = f"its datasets cache {cache} or that folder", cache
    else:
        where, room = str(named), named
    left = free_bytes(room)
    free = "" if left is None else f" ({left / 2**20:.0f} MiB free there now)"
    return DiskFull(
        f"no space left on the device while lmms-eval evaluated {', '.join(tasks)} for {out_dir}, writing "
        f"{where}{free}: the evaluation is not done (no scores.json there); free space on that filesystem (or "
        "point LMMS_EVAL_DATASETS_CACHE or the output folder at another one), then run the same command again, "
        "which generates every answer again"
    )


def write_samples(samples: dict[str, list[dict]], folder: Path) -> None:
    """One ``<task>.jsonl`` per task: each document's id, fields (images left out), model output and the rows
    its ``process_results`` returned, in document order (what per-item statistics are computed from)."""
    keep = ("doc_id", "doc", "target", "filtered_resps")
    for task, rows in samples.items():
        folder.mkdir(parents=True, exist_ok=True)
        lines = [
            json.dumps({k: v for k, v in row.items() if k in keep or k not in _SAMPLE_EXTRA}, default=str)
            for row in sorted(rows, key=lambda r: r["doc_id"])
        ]
        atomic_write(folder / f"{task}.jsonl", "".join(line + "\n" for line in lines))


# lmms-eval's logged-sample bookkeeping that is not needed to recompute a score
_SAMPLE_EXTRA = ("arguments", "resps", "token_counts", "doc_hash", "input_media")


def _check_judge(tasks: list[str], settings: dict) -> None:
    """Fail before any generation if HallusionBench is to be judged by GPT and no API key is set."""
    spec = settings.get("hallusion_judge") or {"kind": "string_match"}
    if spec["kind"] not in ("gpt", "string_match"):
        raise ValueError(f"eval.hallusion_judge.kind must be string_match or gpt, not {spec['kind']!r}")
    if spec["kind"] == "gpt":
        from lit.eval.judge import ChatJudge

        index = task_index()
        if any("lit_hallusion" in index[t]["members"] for t in tasks if t in index):
            ChatJudge.from_spec(spec).api_key()


def store_result(results_dir: str | Path, experiment: str, task: str, scores: dict, meta: dict) -> Path:
    """Write ``<results_dir>/<experiment>/<task>.json``: the scores with what produced them, atomically (a reader
    sees the old file or the whole new one)."""
    path = Path(results_dir) / experiment / f"{task}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(
        path, json.dumps({**meta, "experiment": experiment, "task": task, "scores": scores}, indent=1, default=str)
    )
    return path


def read_result(path: str | Path) -> dict:
    """One file of the results store; ``lit.files.DamagedFile`` naming it if it is cut off (written by a
    version of ``store_result`` that was not atomic, or by a full disk)."""
    remedy = (
        "it was cut off while being written; delete it and score that run again (evaluate.py, or vc.py for "
        "lit_vc.json, with results_dir set) to write it whole"
    )
    return load_json(path, remedy)


def trained_run(ckpt: str | Path, fallback_template: str) -> tuple[dict | None, str, str]:
    """What the training run that wrote ``ckpt`` says of it: its resolved config (``<run>/config.yaml``, None
    if there is none), its chat template (else ``fallback_template``) and its name (``run_name``, else the
    run folder's name)."""
    from omegaconf import OmegaConf

    path = Path(ckpt).parent / "config.yaml"
    run_cfg = OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else None
    if run_cfg is None:
        return None, fallback_template, Path(ckpt).parent.name
    return run_cfg, run_cfg["model"]["chat_template"], run_cfg.get("run_name") or Path(ckpt).parent.name


def evaluate_from_config(cfg) -> dict:
    """The ``evaluate.py`` job. The chat template and experiment name come from the training run that wrote
    the checkpoint (``<run>/config.yaml``) when there is one, else from the eval config."""
    from omegaconf import OmegaConf

    ckpt = Path(cfg.ckpt)
    run_cfg, template, run_name = trained_run(ckpt, cfg.model.chat_template)
    e = cfg.eval
    experiment = cfg.result_name or run_name
    scores = evaluate(
        ckpt,
        EvalSpec.from_config(e),
        cfg.output_dir,
        chat_template=template,
        experiment=experiment,
        results_dir=cfg.results_dir,
        config={"train": run_cfg, "eval": OmegaConf.to_container(e)},
    )
    if "wandb" in cfg.logger.report_to:
        from lit.tracking import log_summary, set_logger_env

        set_logger_env(cfg.logger)
        log_summary(
            experiment,
            "evaluate",
            {f"{task}/{k}": v for task, metrics in scores.items() for k, v in metrics.items()},
            config={"checkpoint": str(ckpt), "eval": OmegaConf.to_container(e), "train": run_cfg},
        )
    return scores


def main(argv=None) -> None:
    """``python -m lit.eval.evaluate tasks demo_pope --data-dir data/demo --out outputs/lmms``: the task folders, data
    directory filled in, for running the ``lmms-eval`` CLI by hand (``--include_path <out>/lmms_tasks``)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lit.eval.evaluate", description=main.__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    tasks = sub.add_parser("tasks", help="write the task folders for lmms-eval's --include_path")
    tasks.add_argument("tasks", nargs="+")
    tasks.add_argument("--data-dir", required=True, help="the folder the tasks' data files are in")
    tasks.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        print(prepare_tasks(args.tasks, args.data_dir, args.out))
    except (KeyError, FileNotFoundError) as err:
        raise SystemExit(f"lit.eval.evaluate: {err}") from None


if __name__ == "__main__":
    main()
