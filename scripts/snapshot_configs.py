"""Write ``tests/fixtures/composed_configs.json``: every composed training config, unresolved.

It holds ``python train.py model=<m>`` for every ``conf/model`` option, ``experiment=<e>`` for every
``conf/experiment`` option, and every job of every recipe (``lit.recipes.jobs``: id, kind, overrides,
dependencies, resources), with the composed config of each ``train`` and ``mins_plus`` job, and every recipe's
``table`` (rows, columns). Interpolations stay
unresolved (``${paths.output_root}``, ``${now:...}``), so the file is the same on every machine; of the ``hydra``
node it keeps what the configs set (``run``, ``sweep``, ``job.chdir``) and the group choices.
``tests/test_composed_configs.py`` recomposes everything and compares it key for key with this file.

    python scripts/snapshot_configs.py        (after a deliberate config change: review the diff of the file)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
FIXTURE = ROOT / "tests" / "fixtures" / "composed_configs.json"
OUTPUT_ROOT = Path("/output_root")  # where the recipes' {run:<job id>} directories point in the snapshot
COMPOSED_KINDS = ("train", "mins_plus")  # the job kinds whose entry point composes conf/train.yaml


def options(group: str) -> list[str]:
    return sorted(str(p.relative_to(CONF / group).with_suffix("")) for p in (CONF / group).rglob("*.yaml"))


def compose(overrides: list[str]) -> dict:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose("train", overrides=list(overrides), return_hydra_config=True)
    out = OmegaConf.to_container(cfg, resolve=False)
    hydra = out.pop("hydra")
    out["hydra"] = {
        "run": hydra["run"],
        "sweep": hydra["sweep"],
        "job": {"chdir": hydra["job"]["chdir"]},
        "choices": hydra["runtime"]["choices"],
    }
    return out


def recipe_jobs() -> dict:
    sys.path.insert(0, str(ROOT))
    from lit import recipes

    out = {}
    for name in recipes.available():
        jobs = []
        for job in recipes.jobs(recipes.load(name), OUTPUT_ROOT):
            entry = {
                "id": job.id,
                "kind": job.kind,
                "overrides": job.overrides,
                "after": job.after,
                "resources": job.resources,
            }
            if job.kind in COMPOSED_KINDS:
                entry["config"] = compose(job.overrides)
            jobs.append(entry)
        out[name] = jobs
    return out


def recipe_tables() -> dict:
    sys.path.insert(0, str(ROOT))
    from lit import recipes

    return {name: recipes.load(name).get("table") for name in recipes.available()}


def snapshot() -> dict:
    return {
        "model": {m: compose([f"model={m}"]) for m in options("model")},
        "experiment": {e: compose([f"experiment={e}"]) for e in options("experiment")},
        "recipe": recipe_jobs(),
        "recipe_table": recipe_tables(),
    }


def main() -> None:
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(snapshot(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
