"""The demo scores with its composed config's eval settings, and lit_llava's default generation length.

lmms-eval 0.7.3 (installed), ``lmms_eval/models/simple/llava_hf.py`` lines 353-354 (and
``models/chat/llava_hf.py`` lines 75-76): a task that sets no ``max_new_tokens`` generates up to 1024 new
tokens; ``lit_llava`` must do the same.
"""

from __future__ import annotations

import json

import pytest
import torch
from lmms_eval.api.instance import Instance
from PIL import Image

from lit.eval.tasks.scoring import yes_no

pytestmark = pytest.mark.integration  # a demo run, and the trained tiny checkpoint


def test_demo_eval_uses_the_configs_yes_no_rule(tmp_path, demo_data):
    """A demo run with eval.yes_no_rule=llava: every POPE prediction is the llava rule's parse of the output
    (before, the demo always scored with the default first_word rule)."""
    from lit.demo import run_one

    overrides = [
        f"data.root={demo_data}",
        "data.generate=false",
        f"paths.data_dir={tmp_path}",
        "train.max_steps=2",
        "train.disable_tqdm=true",
        "train.per_device_train_batch_size=4",
        "model.text.hidden_size=32",
        "model.vision.hidden_size=32",
        "loss.template_sentences.min_share=0.3",
        "eval.tasks=[demo_pope]",
        "eval.vc_items=2",
        "eval.batch_size=4",
        "eval.yes_no_rule=llava",
    ]
    result = run_one("lit", 0, overrides, tmp_path / "runs", fresh=True)
    run_dir = tmp_path / "runs" / "lit-s0"
    settings = json.loads((run_dir / "eval" / "lmms_tasks" / "demo_pope" / "settings.json").read_text())
    assert settings["yes_no_rule"] == "llava"
    rows = [json.loads(line) for line in (run_dir / "eval" / "samples" / "demo_pope.jsonl").read_text().splitlines()]
    outputs = [r["filtered_resps"][0] for r in rows]
    preds = [r["pope_accuracy"]["pred"] for r in rows]
    assert rows and preds == [yes_no(o, "llava") for o in outputs]
    # the rule matters on these outputs: first_word would parse some of them otherwise
    assert preds != [yes_no(o, "first_word") for o in outputs], outputs
    assert result["scores"]["demo_pope"]["pope_unparsed"] == sum(p is None for p in preds)


def _request(gen_kwargs: dict) -> Instance:
    def visual(doc):
        return [Image.new("RGB", (32, 32), (200, 30, 30))]

    return Instance(
        "generate_until",
        ("Is there a red circle?", gen_kwargs, visual, 0, "t", "test"),
        idx=0,
        metadata={"task": "t", "doc_id": 0, "repeats": 1},
    )


@pytest.mark.parametrize(
    "gen_kwargs, expected", [({"until": ["\n\n"]}, 1024), ({"until": ["\n\n"], "max_new_tokens": 4}, 4)]
)
def test_default_max_new_tokens_is_llava_hfs(trained, gen_kwargs, expected):
    """The length lit_llava asks transformers' ``generate`` for (recorded on the Hugging Face model object;
    the answer itself is not generated, 1024 tokens would exceed the tiny model's 512 positions)."""
    from lit.eval.lmms_model import LitLlava

    lmm = LitLlava(pretrained=str(trained[1] / "checkpoint"))
    lmm.task_dict = {"t": {"test": [{}]}}
    asked = []

    def record(**kwargs):
        asked.append(kwargs["max_new_tokens"])
        return torch.cat([kwargs["input_ids"], kwargs["input_ids"][:, -1:]], dim=1)

    lmm.model.generate = record
    assert len(lmm.generate_until([_request(dict(gen_kwargs))])) == 1
    assert asked == [expected]
