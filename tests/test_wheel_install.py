"""An installed lit finds conf/ through the package: the wheel carries the configs (and instraug's prompts), and a
temporary venv that has only the wheel (the dependencies come from .venv, nothing from this checkout) composes a
training config from outside the repository. The editable install does the same."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.integration

# Runs in the temporary venv, with the working directory outside the repository.
PROBE = """
import json, sys
from pathlib import Path
import lit, lit.recipes, lit.slurm
from lit.paths import conf_dir
from lit.train.plan import compose
from instraug.meta_prompts import PROMPTS_DIR
from hydra import compose as hydra_compose, initialize_config_dir
with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
    cfg = hydra_compose("train", overrides=["model=tiny"])
planned = compose(["model=tiny"])
print(json.dumps({"lit": lit.__file__, "conf": str(conf_dir()), "model": cfg.model.name,
                  "plan_model": planned.model.name, "recipes": lit.recipes.RECIPES.is_dir(),
                  "sites": lit.slurm.SITES.is_dir(), "prompts": len(list(PROMPTS_DIR.glob("*.txt")))}))
"""


def _copy_project(dst: Path) -> Path:
    """The files a build reads, copied (lit/conf stays a link to the copy's conf/), so the checkout gets no build/."""
    junk = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("lit", "instraug", "conf"):
        shutil.copytree(ROOT / name, dst / name, symlinks=True, ignore=junk)
    shutil.copy2(ROOT / "pyproject.toml", dst / "pyproject.toml")
    (dst / "conf" / "local" / "default.yaml").write_text("seed: 123\n")  # this machine's own: must stay out
    return dst


def _venv(path: Path) -> Path:
    """A venv without the project; .venv's site-packages (the dependencies) is read through a .pth line, which
    does not run .venv's own .pth files, so the editable install of this checkout is not seen."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=300)
    python = path / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _install(python: Path, *args: str) -> None:
    uv = Path(sys.executable).with_name("uv")
    subprocess.run(
        [
            str(uv),
            "pip",
            "install",
            "-q",
            "--offline",
            "--python",
            str(python),
            "--no-deps",
            "--no-build-isolation",
            *args,
        ],
        check=True,
        timeout=600,
    )


def _probe(python: Path, cwd: Path) -> dict:
    done = subprocess.run(
        [str(python), "-c", PROBE],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_wheel_carries_conf_and_composes_outside_the_repository(tmp_path):
    project = _copy_project(tmp_path / "project")
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(project),
            "-w",
            str(dist),
        ],
        check=True,
        timeout=600,
        cwd=tmp_path,
    )
    (wheel,) = dist.glob("lit_instraug-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    conf_files = {
        p.relative_to(ROOT / "conf").as_posix()
        for p in (ROOT / "conf").rglob("*.yaml")
        if p.relative_to(ROOT / "conf").parts[0] != "local"
    }
    assert {n.removeprefix("lit/conf/") for n in names if n.startswith("lit/conf/")} == conf_files
    assert "instraug/prompts/bootstrap.txt" in names and "instraug/demo/seeds.yaml" in names

    shutil.rmtree(project)  # the installed copy is all there is
    python = _venv(tmp_path / "venv")
    _install(python, str(wheel))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    found = _probe(python, elsewhere)
    site = Path(found["lit"]).parent.parent
    assert site.name == "site-packages" and str(tmp_path / "venv") in found["lit"]
    assert found["conf"] == str(site / "lit" / "conf")
    assert found["model"] == found["plan_model"] == "tiny"
    assert found["recipes"] and found["sites"] and found["prompts"] > 0


def test_an_editable_install_finds_the_checkouts_conf(tmp_path):
    project = _copy_project(tmp_path / "project")
    python = _venv(tmp_path / "venv")
    _install(python, "-e", str(project))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    found = _probe(python, elsewhere)
    assert found["lit"] == str(project / "lit" / "__init__.py")
    assert found["conf"] == str(project / "conf")  # the top-level conf/, through the link lit/conf
    assert found["model"] == found["plan_model"] == "tiny"
