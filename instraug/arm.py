"""One MIns+ data set per arm, from the ``data`` group of the composed training config.

``data.mins_plus`` names the inputs (instances file, pool or seed file, optional file of rewrites) and the
drawing settings (variant = ``augmentation.name``, ``augmentation.sampling``, ``augmentation.epsilon``,
seed); ``data.path`` (``conf/data/mins_plus.yaml``) puts each arm in its own folder. The set is built
by ``python build_mins_plus.py <the training run's overrides>`` (a ``mins_plus`` job in the recipes), never
by ``train.py``: training only checks that the set exists and was built from the inputs its config names.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from instraug.build import DatasetMismatch, build_dataset, check_existing, inputs_key

log = logging.getLogger(__name__)


def _args(data: DictConfig) -> dict:
    spec = data.mins_plus
    return {
        "instances": spec.instances,
        "pool": spec.pool,
        "generated": spec.get("generated"),
        "variant": spec.variant,
        "sampling": spec.sampling,
        "epsilon": spec.get("epsilon"),
        "seed": spec.seed,
        "cleanup": spec.get("cleanup", "official"),
    }


class MissingInput(SystemExit):
    """An input file of the MIns+ set is not there: exits with one line naming it and what writes it."""


SEED_URL = "https://raw.githubusercontent.com/declare-lab/InstrAug/main/MultiInstruct/instruction_gen.py"


def check_inputs(data: DictConfig) -> None:
    """Stop in one line if the instances file, the pool or the file of rewrites is missing, saying how to make it."""
    spec = data.mins_plus
    if not Path(spec.instances).is_file():
        raise MissingInput(
            f"MultiInstruct instances file {spec.instances} (data.mins_plus.instances) does not "
            "exist: collect MultiInstruct's per-task training files into it with `python -m "
            f"instraug.multiinstruct training_data_1K/ {spec.instances}` (training_data_1K/: "
            "MultiInstruct's preprocessing output), or set data.root to the folder of train.jsonl"
        )
    if not Path(spec.pool).is_file():
        how = (
            f"fetch the official seeds with `curl -L -o {spec.pool} {SEED_URL}`"
            if Path(spec.pool).suffix == ".py"
            else "give the pool.jsonl of an augment.py run (`python augment.py augmentation=mins_plus` writes "
            "<run dir>/pool.jsonl) as data.mins_plus.pool=<augment run>/pool.jsonl"
        )
        raise MissingInput(f"instruction pool {spec.pool} (data.mins_plus.pool) does not exist: {how}")
    if spec.get("generated") and not Path(spec.generated).is_file():
        raise MissingInput(f"file of rewrites {spec.generated} (data.mins_plus.generated) does not exist")


def build_for(data: DictConfig) -> dict[str, Path]:
    """Build the arm's set at ``data.path`` (nothing to do if the same set is there; refused if another is)."""
    check_inputs(data)
    out_dir = Path(data.path).parent
    a = _args(data)
    log.info(
        "MIns+ set %s: variant=%s sampling=%s epsilon=%s seed=%s from %s and %s",
        out_dir,
        a["variant"],
        a["sampling"],
        a["epsilon"],
        a["seed"],
        a["instances"],
        a["pool"],
    )
    return build_dataset(out_dir=out_dir, **a)


def run_overrides() -> list[str] | None:
    """The command-line overrides of the running Hydra app (``train.py``), or None outside one."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None


def require(data: DictConfig, overrides: Sequence[str] | None = None) -> None:
    """For training: the arm's set (the ``data`` group) must exist and have been built from the inputs it names.
    The errors give the command that builds it: ``build_mins_plus.py`` with the run's ``overrides`` (by default
    those of the running Hydra app)."""
    check_inputs(data)
    out_dir = Path(data.path).parent
    if overrides is None:
        overrides = run_overrides()
    command = "python build_mins_plus.py " + (
        " ".join(shlex.quote(o) for o in overrides) if overrides else "<the same overrides as this run>"
    )
    a = _args(data)
    try:
        found = check_existing(out_dir, inputs_key(**a))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err}; the MIns+ set {data.path} cannot be checked") from err
    except DatasetMismatch as err:
        raise DatasetMismatch(f"{err}. Build this arm's set with: {command}") from err
    if not found:
        raise FileNotFoundError(
            f"the MIns+ set {data.path} does not exist: training does not build it. Build it first with: {command}"
        )
