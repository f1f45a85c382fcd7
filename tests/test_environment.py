"""The installed environment is the committed lock, and the lock is the project's pins.

`make env` installs lock/cpu.txt with `uv pip sync` (Makefile); these tests check the result from inside the
environment that runs them. LIT_LOCK names another lock for an environment built from it (e.g. lock/gpu.txt
for the conda environment of environment.yml).
"""

import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / os.environ.get("LIT_LOCK", "lock/cpu.txt")
PROJECT = "lit-instraug"
# What `pip check` may report in the CPU environment, each for a stated reason:
KNOWN_PIP_CHECK = {
    # The registry's torchvision is a CUDA build that fails to import beside the CPU torch; lock/cpu.txt leaves it
    # out (scripts/lock.sh: --no-emit-package torchvision) and transformers uses its PIL image processors.
    "lmms-eval 0.7.3 requires torchvision, which is not installed.",
    "timm 1.0.31 requires torchvision, which is not installed.",
    # decord 0.6.0's only Linux wheel is tagged cp36-cp36m although it works on CPython 3.11 (lmms-eval imports it).
    "decord 0.6.0 is not supported on this platform",
}
ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def read_lock(path: Path) -> dict[str, str]:
    """{canonical name: version} of a uv-compiled lock; every entry must be exact and hash-checked."""
    pins, blocks = {}, re.split(r"\n(?=\S)", path.read_text())
    for block in blocks:
        line = block.splitlines()[0]
        if line.startswith("#") or not line.strip():
            continue
        match = ENTRY.match(line)
        assert match, f"{path.name}: {line!r} is not an exact pin"
        assert "--hash=sha256:" in block, f"{path.name}: {match.group(1)} has no hash"
        pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def installed() -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}


def test_installed_distributions_are_exactly_the_lock():
    locked, have = read_lock(LOCK), installed()
    assert have.pop(canonicalize_name(PROJECT)) is not None
    missing = sorted(set(locked) - set(have))
    extra = sorted(set(have) - set(locked))
    wrong = sorted(f"{n} {have[n]} (lock: {v})" for n, v in locked.items() if n in have and have[n] != v)
    fix = f"run `make env` (it installs {LOCK.relative_to(ROOT)} exactly)"
    assert not missing, f"not installed: {missing}; {fix}"
    assert not extra, f"installed but not in the lock: {extra}; {fix}, or add them to pyproject.toml and `make lock`"
    assert not wrong, f"versions differ from the lock: {wrong}; {fix}"


def test_pip_check_reports_only_the_known_gaps():
    out = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True).stdout
    reports = {line.strip() for line in out.splitlines() if line.strip()}
    assert reports <= KNOWN_PIP_CHECK, f"pip check: {sorted(reports - KNOWN_PIP_CHECK)}"


def project_requirements(extra: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"][extra]]


def in_file_requirements(path: Path) -> list[Requirement]:
    reqs = []
    for raw in path.read_text().splitlines():
        line = raw.split("#")[0].strip()
        if line.startswith("-r "):
            reqs += in_file_requirements(path.parent / line[3:].strip())
        elif line:
            reqs.append(Requirement(line))
    return reqs


def unsatisfied(reqs: list[Requirement], pins: dict[str, str]) -> list[str]:
    bad = []
    for req in reqs:
        version = pins.get(canonicalize_name(req.name))
        if version is None or not req.specifier.contains(Version(version), prereleases=True):
            bad.append(f"{req} (lock: {version})")
    return bad


def test_every_lock_satisfies_its_inputs():
    """Editing pyproject.toml, lock/*.in or constraints.txt without `make lock` fails here."""
    constraints = in_file_requirements(ROOT / "constraints.txt")
    cases = {
        "cpu.txt": project_requirements("test") + in_file_requirements(ROOT / "lock/cpu.in") + constraints,
        "gpu.txt": project_requirements("gpu") + in_file_requirements(ROOT / "lock/gpu.in") + constraints,
        "vllm.txt": in_file_requirements(ROOT / "lock/vllm.in"),
        "build.txt": in_file_requirements(ROOT / "lock/build.in"),
    }
    for name, reqs in cases.items():
        pins = read_lock(ROOT / "lock" / name)
        if name == "cpu.txt":  # left out on purpose (KNOWN_PIP_CHECK); every other requirement must be there
            reqs = [r for r in reqs if r.name != "torchvision"]
        assert not unsatisfied(reqs, pins), f"lock/{name} is stale, run `make lock`: {unsatisfied(reqs, pins)}"


def test_the_cpu_lock_has_the_cpu_torch_and_a_working_filelock():
    pins = read_lock(ROOT / "lock/cpu.txt")
    assert pins["torch"].endswith("+cpu") and "torchvision" not in pins
    assert Version(pins["filelock"]) < Version("4.3")  # 4.3 dropped filelock._api, which lmms-eval imports
    from lmms_eval.evaluator import _enable_reentrant_filelocks

    _enable_reentrant_filelocks()  # what simple_evaluate runs first; it needs filelock._api.FileLockMeta


def test_conda_environment_files_install_their_locks():
    for env_file, lock in [("environment.yml", "lock/gpu.txt"), ("environment-vllm.yml", "lock/vllm.txt")]:
        deps = yaml.safe_load((ROOT / env_file).read_text())["dependencies"]
        pip_lines = next(d["pip"] for d in deps if isinstance(d, dict))
        assert pip_lines == [f"-r {lock}"], f"{env_file} must install {lock} and nothing else"
        assert (ROOT / lock).exists()
