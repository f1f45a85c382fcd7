"""`python augment.py augmentation=mins_plus` in an environment without vLLM (its default backend runs vLLM
in-process): one line on stderr naming the vLLM environment and the OpenAI-compatible override, no traceback."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed in this environment")
def test_missing_vllm_stops_in_one_line_naming_both_ways_out(tmp_path):
    proc = subprocess.run(
        [sys.executable, "augment.py", "augmentation=mins_plus", f"hydra.run.dir={tmp_path}/run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert "Traceback" not in proc.stderr and "No module named" not in line
    assert "conda env create -f environment-vllm.yml" in line
    assert "augmentation.backend.kind=openai" in line and "'~augmentation.backend.args'" in line
    assert "meta-llama/Llama-2-13b-chat-hf" in line  # the configured model, in the suggested override
    assert not (tmp_path / "run" / "config.yaml").exists()  # stopped before the run wrote anything


def test_the_suggested_override_composes_into_the_openai_backend():
    import inspect
    import shlex

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from instraug import backends

    try:
        backends.require_backend("vllm", "some/model")
        pytest.skip("vllm is installed in this environment")
    except backends.BackendUnavailable as err:
        message = str(err)
    overrides = shlex.split(message[message.index("augmentation.backend.kind=openai") :])
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("augment", overrides=["augmentation=mins_plus", *overrides])
    assert cfg.augmentation.backend.kind == "openai"
    inspect.signature(backends.OpenAIBackend).bind(**OmegaConf.to_container(cfg.augmentation.backend.args))


def test_the_openai_backends_key_comes_from_the_environment_never_from_the_config(monkeypatch):
    """A key given as a config value would be written into the run's config.yaml and wandb's config: refused,
    naming the environment variable to use instead; the variable's key is what the client sends."""
    from instraug.backends import build_backend

    monkeypatch.setenv("LIT_TEST_AUGMENT_KEY", "sk-from-the-environment")
    backend = build_backend("openai", model="m", base_url="http://127.0.0.1:9/v1", api_key_env="LIT_TEST_AUGMENT_KEY")
    assert backend.client.api_key == "sk-from-the-environment"
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert build_backend("openai", model="m", base_url="http://127.0.0.1:9/v1").client.api_key == "EMPTY"
    with pytest.raises(ValueError, match=r"api_key would be written into the run's config.yaml.*api_key_env"):
        build_backend("openai", model="m", base_url="http://127.0.0.1:9/v1", api_key="sk-secret")
