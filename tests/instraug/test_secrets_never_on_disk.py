"""An API key reaches the server and nothing else: ``augment.py`` with the OpenAI-compatible backend reads it from the
environment variable its config names (``api_key_env``), sends it as the bearer token, and no file the run writes
(the run directory with Hydra's resolved configs and logs, the generation cache) contains it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-lit-test-4f1c9b7e2d"


@pytest.mark.integration
def test_the_key_is_sent_and_never_written(tmp_path, chat_server):
    chat_server.reply = lambda body: "Tell me what colour {A} is."
    url = chat_server.url
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    args = f'{{model: m, base_url: "{url}", api_key_env: LIT_TEST_SECRET_KEY, concurrency: 1}}'
    cmd = [sys.executable, "augment.py", "augmentation=mins_plus", "augmentation.seeds=instraug/demo/seeds.yaml"]
    cmd += ["augmentation.backend.kind=openai", "~augmentation.backend.args", f"+augmentation.backend.args={args}"]
    cmd += [f"augmentation.cache_dir={cache}", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "LIT_TEST_SECRET_KEY": KEY, "WANDB_MODE": "disabled"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    authorizations = [r["headers"].get("authorization") for r in chat_server.requests]
    assert authorizations and set(authorizations) == {f"Bearer {KEY}"}
    written = [p for folder in (run_dir, cache) for p in folder.rglob("*") if p.is_file()]
    assert any(p.name == "config.yaml" for p in written) and any(p.name == "pool.jsonl" for p in written)
    assert "LIT_TEST_SECRET_KEY" in (run_dir / ".hydra" / "config.yaml").read_text()  # the variable's name only
    leaks = [str(p) for p in written if KEY.encode() in p.read_bytes()]
    assert not leaks and KEY not in proc.stdout + proc.stderr
