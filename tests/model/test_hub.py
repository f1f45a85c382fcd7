"""Hub ids without a hub: the cached snapshot is used, and anything not cached stops the run at once with one
line naming it and the command that fetches it (HF_HUB_OFFLINE=1, or an endpoint that refuses connections)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNREACHABLE = {"HF_ENDPOINT": "http://127.0.0.1:9"}  # the discard port: connection refused at once


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("offline", [{"HF_HUB_OFFLINE": "1"}, UNREACHABLE], ids=["offline_flag", "no_network"])
def test_uncached_model_fails_in_one_line(tmp_path, demo_data, offline):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "WANDB_MODE": "disabled", **offline}
    env.pop("HF_HUB_OFFLINE", None) if "HF_ENDPOINT" in offline else None
    proc = subprocess.run(
        [
            sys.executable,
            "evaluate.py",
            "ckpt=Salesforce/instructblip-vicuna-7b",
            "eval=demo",
            f"eval.data_dir={demo_data}",
            f"hydra.run.dir={tmp_path / 'run'}",
            "logger=none",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("model Salesforce/instructblip-vicuna-7b is not in the Hugging Face cache")
    assert last.endswith("hf download Salesforce/instructblip-vicuna-7b")


def test_cached_snapshot_is_used_offline(tmp_path):
    """The hub cache layout as huggingface_hub writes it (refs/main -> snapshots/<commit>/)."""
    repo = tmp_path / "hf" / "hub" / "models--org--tiny"
    snap = repo / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), **UNREACHABLE}
    env.pop("HF_HUB_OFFLINE", None)
    out = subprocess.run(
        [sys.executable, "-c", "from lit.model import hub; print(hub.local('org/tiny'))"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(out) == snap


def test_uncached_id_offline_is_one_message(monkeypatch):
    from lit.model import hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hub.HubUnavailable) as err:
        hub.local("org/never-published")
    assert "\n" not in str(err.value) and str(err.value).endswith("hf download org/never-published")
    assert isinstance(err.value, SystemExit)  # the entry points exit with the line, no traceback
    assert hub.local(str(ROOT)) == str(ROOT)  # a path is never looked up


def test_evaluation_data_fetch_offline_says_what_to_run(tmp_path, monkeypatch):
    from lit.eval import eval_data
    from lit.model import hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hub.HubUnavailable, match="python -m lit.eval.eval_data fetch pope"):
        eval_data.fetch("pope", tmp_path)
