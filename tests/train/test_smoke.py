"""`make smoke MODEL=llava7b`: LLaVA-1.5-7B's real widths (one layer per tower, the 32,064-token vocabulary),
a 640x480 photo through the 336-px CLIP processor, a record cut at 2,048 positions, 2 ZeRO-3 steps on CPU
through train.py, the gathered checkpoint reloaded by lmms-eval's llava_hf. About 2.5 min and 11 GiB."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from tiny_runs import ROOT


@pytest.mark.integration
@pytest.mark.slow
def test_make_smoke_llava7b(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        ["make", "-o", "env", "smoke", "MODEL=llava7b", f"ARGS=--out {tmp_path}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "smoke.json").read_text())
    assert result["steps"] == 2 and result["zero_stage"] == 3 and result["generated_tokens"] == 2
    assert result["truncated_to_max_length"] == 1 and result["max_length"] == 2048
    from safetensors import safe_open

    with safe_open(tmp_path / "run" / "checkpoint" / "model.safetensors", "pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    assert shapes["language_model.model.embed_tokens.weight"] == [32064, 4096]
    assert shapes["vision_tower.embeddings.patch_embedding.weight"] == [1024, 3, 14, 14]
    assert shapes["language_model.model.layers.0.mlp.up_proj.weight"] == [11008, 4096]
