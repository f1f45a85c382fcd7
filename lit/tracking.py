"""What a run records about itself: the git SHA of the code, and the wandb summaries a dashboard reads (one run
per scored checkpoint and one per paper table). Used by training, evaluation and the reports alike.

Runs share ``group = <table>`` (``WANDB_RUN_GROUP``, set by ``lit.recipes`` for every job), so one wandb
group holds a table's training runs (loss, lr, supervised tokens per span kind), its evaluation runs
(``job_type=evaluate``: every score in the summary) and its table run (``job_type=table``: a
``wandb.Table`` of our cells, the plot, and ``<row>/<column>`` summary keys for bar-chart panels).
Offline by default (``WANDB_MODE=offline``);
``wandb sync <dir>/wandb/offline-run-*``
uploads later. Without wandb installed these calls log a warning and return None.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)
PROJECT = "lit-instraug"


def git_sha() -> str:
    """The commit of the code that runs, or ``unknown`` outside a git checkout."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def set_logger_env(logger_cfg) -> None:
    """Export the ``logger`` group's ``env`` (WANDB_MODE, WANDB_PROJECT, WANDB_DIR) unless already set."""
    for key, value in (logger_cfg.get("env") or {}).items():
        os.environ.setdefault(key, str(value))


def log_summary(
    name: str,
    job_type: str,
    summary: dict[str, float],
    *,
    group: str | None = None,
    table: tuple[list[str], list[list]] | None = None,
    images: dict[str, Path] | None = None,
    config: dict | None = None,
    directory: str | Path | None = None,
) -> Path | None:
    """One wandb run holding ``summary`` (flat metric -> value), optionally a table ``(columns, rows)``
    and images; returns the run's local directory."""
    try:
        import wandb
    except ImportError:
        log.warning("wandb is not installed: no dashboard run for %s", name)
        return None
    mode = os.environ.get("WANDB_MODE", "offline")
    if mode == "disabled":
        return None
    run = wandb.init(
        project=os.environ.get("WANDB_PROJECT", PROJECT),
        group=group or os.environ.get("WANDB_RUN_GROUP"),
        job_type=job_type,
        name=name,
        config=config,
        mode=mode,
        dir=str(directory or os.environ.get("WANDB_DIR", ".")),
        reinit="create_new",
    )
    logged = {key: wandb.Image(str(path)) for key, path in (images or {}).items() if Path(path).exists()}
    if table is not None:
        logged["table"] = wandb.Table(columns=table[0], data=table[1])
    if logged:
        run.log(logged)
    for key, value in summary.items():
        if value is not None:
            run.summary[key] = value
    run_dir = Path(run.dir).parent
    run.finish()
    return run_dir
