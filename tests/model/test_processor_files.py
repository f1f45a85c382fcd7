"""A saved processor names transformers' class (lit/model/processor_files.py): the families that subclass one to
leave out its video processor (Qwen2-VL, Qwen3-VL, LLaVA-OneVision, InternVL, SmolVLM2) must not write their own
class's name, which ``AutoProcessor`` (and so lmms-eval's ``llava_hf`` and vLLM) cannot resolve, or worse, resolves
to something else (Qwen2-VL's subclass was once called ``Qwen2VLImageProcessor``, the name of transformers' Qwen2-VL
*image* processor)."""

from __future__ import annotations

import json

import pytest
from tiny_runs import tiny_model
from transformers.models.auto.processing_auto import processor_class_from_name

from lit.mask.tokenizer import train_bpe
from lit.model.processor_files import save_processor, upstream_processor_class

SUBCLASSED = {
    "tiny_qwen2_vl": "Qwen2VLProcessor",
    "tiny_qwen3_vl": "Qwen3VLProcessor",
    "tiny_llava_onevision": "LlavaOnevisionProcessor",
    "tiny_internvl": "InternVLProcessor",
    "tiny_smolvlm": "SmolVLMProcessor",
    "tiny": "LlavaProcessor",  # transformers' own class: written as it is
}


@pytest.mark.parametrize("config", sorted(SUBCLASSED))
def test_the_saved_processor_class_is_transformers_own(config, tmp_path):
    tokenizer = train_bpe(["What colour is the square? Red. user assistant system"] * 30, vocab_size=300)
    _, processor, _ = tiny_model(config, tokenizer)
    save_processor(processor, tmp_path)
    assert upstream_processor_class(processor) == SUBCLASSED[config]
    written = {}
    for file in tmp_path.glob("*.json"):
        data = json.loads(file.read_text())
        if isinstance(data, dict) and "processor_class" in data:
            written[file.name] = data["processor_class"]
    assert written.get("processor_config.json") == SUBCLASSED[config]
    assert set(written.values()) == {SUBCLASSED[config]}
    upstream = processor_class_from_name(SUBCLASSED[config])  # what AutoProcessor builds from the name
    assert upstream is not None and isinstance(processor, upstream)
