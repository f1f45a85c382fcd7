"""One MIns+ data set per arm, from the composed training config.

``data.mins_plus`` names the inputs (instances file, pool or seed file, optional file of rewrites) and the
drawing settings (variant = ``augmentation.name``, ``augmentation.sampling``, ``augmentation.epsilon``,
seed); ``data.path`` (``conf/data/mins_plus.yaml``) puts each arm in its own folder. The set is built
by ``python build_mins_plus.py <the training run's overrides>`` (a ``mins_plus`` job in the recipes), never
by ``train.py``: training only checks that the set exists and was built from the inputs its config names.
"""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

from omegaconf import DictConfig

from instraug.build import DatasetMismatch, build_dataset, check_existing, inputs_key

log = logging.getLogger(__name__)


def _args(cfg: DictConfig) -> dict:
    spec = cfg.data.mins_plus
    return {"instances": spec.instances, "pool": spec.pool, "generated": spec.get("generated"),
            "variant": spec.variant, "sampling": spec.sampling, "epsilon": spec.get("epsilon"), "seed": spec.seed,
            "cleanup": spec.get("cleanup", "official")}


class MissingInput(SystemExit):
    """An input file of the MIns+ set is not there: exits with one line naming it and what writes it."""


SEED_URL = "https://raw.githubusercontent.com/declare-lab/InstrAug/main/MultiInstruct/instruction_gen.py"


def check_inputs(cfg: DictConfig) -> None:
    """Stop in one line if the instances file, the pool or the file of rewrites is missing, saying how to make it."""
    spec = cfg.data.mins_plus
    if not Path(spec.instances).is_file():
        raise MissingInput(f"MultiInstruct instances file {spec.instances} (data.mins_plus.instances) does not "
                           "exist: collect MultiInstruct's per-task training files into it with `python -m "
                           f"instraug.multiinstruct training_data_1K/ {spec.instances}` (training_data_1K/: "
                           "MultiInstruct's preprocessing output), or set data.root to the folder of train.jsonl")
    if not Path(spec.pool).is_file():
        how = (f"fetch the official seeds with `curl -L -o {spec.pool} {SEED_URL}`" if Path(spec.pool).suffix == ".py"
               else "give the pool.jsonl of an augment.py run (`python augment.py augmentation=mins_plus` writes "
                    "<run dir>/pool.jsonl) as data.mins_plus.pool=<augment run>/pool.jsonl")
        raise MissingInput(f"instruction pool {spec.pool} (data.mins_plus.pool) does not exist: {how}")
    if spec.get("generated") and not Path(spec.generated).is_file():
        raise MissingInput(f"file of rewrites {spec.generated} (data.mins_plus.generated) does not exist")


def build_for(cfg: DictConfig) -> dict[str, Path]:
    """Build the arm's set at ``data.path`` (nothing to do if the same set is there; refused if another is)."""
    check_inputs(cfg)
    out_dir = Path(cfg.data.path).parent
    a = _args(cfg)
    log.info("MIns+ set %s: variant=%s sampling=%s epsilon=%s seed=%s from %s and %s", out_dir, a["variant"],
             a["sampling"], a["epsilon"], a["seed"], a["instances"], a["pool"])
    return build_dataset(out_dir=out_dir, **a)


def require(cfg: DictConfig) -> None:
    """For ``train.py``: the arm's set must exist and have been built from the inputs the config names."""
    check_inputs(cfg)
    out_dir = Path(cfg.data.path).parent
    overrides = " ".join(shlex.quote(a) for a in sys.argv[1:]) or "<the same overrides as this run>"
    a = _args(cfg)
    try:
        found = check_existing(out_dir, inputs_key(**a))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err}; the MIns+ set {cfg.data.path} cannot be checked") from err
    except DatasetMismatch as err:
        raise DatasetMismatch(f"{err}. Build this arm's set with: python build_mins_plus.py {overrides}") from err
    if not found:
        raise FileNotFoundError(f"the MIns+ set {cfg.data.path} does not exist: training does not build it. Build it "
                                f"first with: python build_mins_plus.py {overrides}")
