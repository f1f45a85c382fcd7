"""Score a checkpoint with lmms-eval, used as a library, on tasks kept in lmms-eval's own layout.

Task folders live in ``lit/lmms_tasks/<task>/{<task>.yaml, utils.py}``; for a run they are copied
into ``<out>/lmms_tasks/`` with ``__DATA_DIR__`` filled in and passed to lmms-eval as its include
path, so the exact task files used are kept beside the scores.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from importlib.metadata import version
from pathlib import Path

TASKS_DIR = Path(__file__).with_name("lmms_tasks")
MODEL_ID = "lit_llava"


def register_model() -> None:
    """Make ``lit_llava`` known to lmms-eval's model registry (idempotent)."""
    from lmms_eval.models import MODEL_REGISTRY_V2

    from lit.lmms_model_manifest import manifest

    try:
        MODEL_REGISTRY_V2.register_manifest(manifest())
    except ValueError:  # already registered (e.g. through the package's entry point)
        pass


def prepare_tasks(tasks: list[str], data_dir: str | Path, out_dir: str | Path) -> Path:
    """Copy the task folders into ``out_dir/lmms_tasks`` with the data directory filled in."""
    data_dir = Path(data_dir).resolve()
    include = Path(out_dir) / "lmms_tasks"
    for task in tasks:
        src = TASKS_DIR / task
        if not src.is_dir():
            known = sorted(p.name for p in TASKS_DIR.iterdir() if p.is_dir() and not p.name.startswith("_"))
            raise KeyError(f"unknown evaluation task {task!r}; known: {', '.join(known)}")
        dst = include / task
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        for yaml_file in dst.glob("*.yaml"):
            text = yaml_file.read_text()
            for rel in re.findall(r"__DATA_DIR__/(\S+)", text):
                if not (data_dir / rel).exists():
                    raise FileNotFoundError(f"task {task}: data file {data_dir / rel} is missing; generate or "
                                            "download it, or point eval.data_dir at the folder that holds it")
            yaml_file.write_text(text.replace("__DATA_DIR__", str(data_dir)))
        (dst / "data_dir.txt").write_text(str(data_dir))
    return include


def evaluate(ckpt: str | Path, tasks: list[str], data_dir: str | Path, out_dir: str | Path, *,
             chat_template: str = "vicuna_v1", device: str = "cpu", limit: int | None = None) -> dict:
    """Run lmms-eval on ``ckpt`` and write ``out_dir/scores.json``; returns ``{task: {metric: value}}``."""
    ckpt = Path(ckpt)
    if not (ckpt / "config.json").is_file():
        raise FileNotFoundError(f"{ckpt} is not a checkpoint (no config.json); pass the 'checkpoint' folder "
                                "that train.py writes in its run directory")
    from lmms_eval import evaluator
    from lmms_eval.tasks import TaskManager

    register_model()
    include = prepare_tasks(tasks, data_dir, out_dir)
    logging.getLogger("lmms-eval").setLevel(logging.WARNING)
    manager = TaskManager("WARNING", include_path=str(include))
    raw = evaluator.simple_evaluate(model=MODEL_ID, model_args=f"pretrained={ckpt},chat_template={chat_template}",
                                    tasks=tasks, task_manager=manager, batch_size=1, device=device, limit=limit)
    scores = {task: {k.split(",")[0]: v for k, v in metrics.items() if isinstance(v, (int, float)) and "stderr" not in k
                     and k != "alias"}
              for task, metrics in raw["results"].items()}
    record = {"checkpoint": str(ckpt), "scores": scores, "lmms_eval_version": version("lmms_eval"),
              "configs": {t: raw.get("configs", {}).get(t, {}).get("generation_kwargs") for t in tasks},
              "n_samples": raw.get("n-samples", {})}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "scores.json").write_text(json.dumps(record, indent=1, default=str))
    return scores
