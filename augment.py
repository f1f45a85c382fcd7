"""Expand seed instructions with an LLM and build the MIns+ data set: `python augment.py augmentation=mins_plus`."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="augment")
def main(cfg: DictConfig) -> None:
    from instraug.run import run

    run(cfg)


if __name__ == "__main__":
    main()
