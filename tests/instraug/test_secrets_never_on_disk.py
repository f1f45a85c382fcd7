"""An API key reaches the server and nothing else: ``augment.py`` with the OpenAI-compatible backend reads it from the
environment variable its config names (``api_key_env``), sends it as the bearer token, and no file the run writes
(the run directory with Hydra's resolved configs and logs, the generation cache) contains it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-lit-test-4f1c9b7e2d"


class _Chat(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.authorizations.append(self.headers.get("Authorization"))
        reply = {"role": "assistant", "content": "Tell me what colour {A} is."}
        body = json.dumps(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [{"index": 0, "finish_reason": "stop", "message": reply}],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.integration
def test_the_key_is_sent_and_never_written(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Chat)
    server.authorizations = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    args = f'{{model: m, base_url: "{url}", api_key_env: LIT_TEST_SECRET_KEY, concurrency: 1}}'
    cmd = [sys.executable, "augment.py", "augmentation=mins_plus", "augmentation.seeds=instraug/demo/seeds.yaml"]
    cmd += ["augmentation.backend.kind=openai", "~augmentation.backend.args", f"+augmentation.backend.args={args}"]
    cmd += [f"augmentation.cache_dir={cache}", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "LIT_TEST_SECRET_KEY": KEY, "WANDB_MODE": "disabled"}
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert server.authorizations and set(server.authorizations) == {f"Bearer {KEY}"}
    written = [p for folder in (run_dir, cache) for p in folder.rglob("*") if p.is_file()]
    assert any(p.name == "config.yaml" for p in written) and any(p.name == "pool.jsonl" for p in written)
    assert "LIT_TEST_SECRET_KEY" in (run_dir / ".hydra" / "config.yaml").read_text()  # the variable's name only
    leaks = [str(p) for p in written if KEY.encode() in p.read_bytes()]
    assert not leaks and KEY not in proc.stdout + proc.stderr
