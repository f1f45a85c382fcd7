"""A checkpoint's own Python code never runs: loading (``lit.model.loading.load_pretrained``, which training's
``model.pretrained``, evaluation and ``vc.py`` go through) never passes ``trust_remote_code``.

The trap is a saved tiny LLaVA whose ``config.json`` and processor files carry an ``auto_map`` (the Hub's way to ship
model code, transformers' ``dynamic_module_utils``) pointing at a module that leaves a marker file when imported.
The control loads it with ``trust_remote_code=True`` and the marker appears, so the trap is armed.
"""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from lit.mask.chat_templates import get_template
from lit.mask.tokenizer import prepare_tokenizer, train_bpe
from lit.model.loading import compose_tiny, load_pretrained
from lit.paths import conf_dir

TRAP = """from pathlib import Path

Path({marker!r}).write_text("imported")
from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor


class EvilConfig(LlavaConfig):
    pass


class EvilModel(LlavaForConditionalGeneration):
    config_class = EvilConfig


class EvilProcessor(LlavaProcessor):
    pass
"""


@pytest.fixture
def trapped(demo_data, tmp_path):
    records = json.loads((demo_data / "train.json").read_text())
    tokenizer = train_bpe([t["value"] for r in records for t in r["conversations"]], vocab_size=400)
    prepare_tokenizer(tokenizer, get_template("vicuna_v1"))
    model, processor = compose_tiny(OmegaConf.load(conf_dir() / "model" / "tiny.yaml"), tokenizer)
    folder, marker = tmp_path / "checkpoint", tmp_path / "remote_code_ran"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / "evil.py").write_text(TRAP.format(marker=str(marker)))
    auto_map = {
        "AutoConfig": "evil.EvilConfig",
        "AutoModelForImageTextToText": "evil.EvilModel",
        "AutoProcessor": "evil.EvilProcessor",
    }
    for name in ("config.json", "processor_config.json", "tokenizer_config.json", "preprocessor_config.json"):
        path = folder / name
        if path.exists():
            fields = json.loads(path.read_text())
            fields["auto_map"] = auto_map
            path.write_text(json.dumps(fields))
    return folder, marker


def test_loading_a_checkpoint_never_runs_its_code(trapped):
    folder, marker = trapped
    model, processor = load_pretrained(str(folder))
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert type(processor).__name__ == "LlavaProcessor"
    assert not marker.exists()


def test_the_trap_is_armed(trapped):
    from transformers import AutoConfig

    folder, marker = trapped
    AutoConfig.from_pretrained(folder, trust_remote_code=True)
    assert marker.read_text() == "imported"
