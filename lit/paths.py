"""Where the configs are: ``conf/`` sits at the top of the repository and ships inside the package as ``lit/conf``
(in a checkout ``lit/conf`` is a link to it), so a checkout, an editable install and an installed wheel all find
it through the package, ``importlib.resources.files("lit")``."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path


@cache
def conf_dir() -> Path:
    """The Hydra config directory (the one holding ``train.yaml``) of the installed ``lit`` package."""
    path = Path(str(files("lit") / "conf")).resolve()
    if not (path / "train.yaml").is_file():
        raise FileNotFoundError(
            f"{path} holds no train.yaml: this copy of lit was installed without conf/ "
            "(it is package data: tool.setuptools.package-data in pyproject.toml)"
        )
    return path
