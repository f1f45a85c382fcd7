"""Build one arm's MIns+ training set, with the same overrides as its training run:
`python build_mins_plus.py experiment=instraug_llava7b_mins_plus data.root=... data.mins_plus.pool=...`."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    import json
    from pathlib import Path

    from instraug.arm import build_for
    from lit.data.build import generate_demo_data
    from lit.files import atomic_write

    if not cfg.data.get("mins_plus"):
        raise SystemExit(f"data={cfg.data.name} is not a MIns+ data set (data.mins_plus is not set)")
    generate_demo_data(cfg.data)  # the demo's instances are generated on first use
    paths = build_for(cfg.data)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "dataset.json", json.dumps({k: str(v) for k, v in paths.items()}, indent=1))  # marks it done
    print(f"MIns+ set: {paths['llava']}")


if __name__ == "__main__":
    main()
