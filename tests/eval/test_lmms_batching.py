"""lit_llava generates several requests at once (left padding) with the same greedy answers as one at a time,
in the checkpoint's dtype."""

from __future__ import annotations

import pytest
import torch
from lmms_eval.api.instance import Instance
from PIL import Image


def _requests(n_docs: int, task: str = "t"):
    questions = [
        "What shape is it?",
        "Is there a red circle in the image? Answer yes or no.",
        "Describe the image briefly.",
        "How many shapes are there?",
        "Say hi",
    ]
    docs = [
        {"q": questions[i % len(questions)], "colour": (40 * i % 255, 90, 200 - 30 * i % 200), "text_only": i % 4 == 3}
        for i in range(n_docs)
    ]

    def visual(doc):
        return [] if doc["text_only"] else [Image.new("RGB", (32 + 8 * (len(doc["q"]) % 3), 32), doc["colour"])]

    gen = {"max_new_tokens": 6, "until": ["\n\n"]}
    return docs, [
        Instance(
            "generate_until",
            (doc["q"], dict(gen), visual, i, task, "test"),
            idx=i,
            metadata={"task": task, "doc_id": i, "repeats": 1},
        )
        for i, doc in enumerate(docs)
    ]


@pytest.mark.parametrize("which", ["llava", "instructblip"])
def test_batched_greedy_answers_equal_one_at_a_time(trained, tmp_path, which, bpe_tokenizer):
    """LLaVA (the trained tiny checkpoint; text-only requests mixed in) and InstructBLIP (random weights; its
    Q-Former inputs are padded per batch too)."""
    from lit.eval.lmms_model import LitLlava

    if which == "llava":
        ckpt = trained[1] / "checkpoint"
    else:
        from tiny_runs import tiny_model

        model, processor, _ = tiny_model("tiny_iblip", bpe_tokenizer)
        ckpt = tmp_path / "iblip"
        model.save_pretrained(ckpt)
        processor.save_pretrained(ckpt)
    docs, requests = _requests(7)
    if which == "instructblip":
        for d in docs:
            d["text_only"] = False
    answers = {}
    for batch_size in (1, 4):
        lmm = LitLlava(
            pretrained=str(ckpt),
            chat_template="vicuna_v1" if which == "llava" else "instructblip",
            batch_size=batch_size,
        )
        lmm.task_dict = {"t": {"test": docs}}
        answers[batch_size] = lmm.generate_until(requests)
    assert answers[1] == answers[4] and len(answers[4]) == 7
    assert len(set(answers[4])) > 1 or any(answers[4])  # not a degenerate all-empty output


def test_model_loads_in_its_checkpoint_dtype(trained, tmp_path):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from lit.eval.lmms_model import LitLlava

    LlavaForConditionalGeneration.from_pretrained(trained[1] / "checkpoint", dtype=torch.bfloat16).save_pretrained(
        tmp_path / "bf16"
    )
    AutoProcessor.from_pretrained(trained[1] / "checkpoint").save_pretrained(tmp_path / "bf16")
    lmm = LitLlava(pretrained=str(tmp_path / "bf16"))
    assert lmm.model.dtype == torch.bfloat16
    assert lmm.prompt_inputs("What?", Image.new("RGB", (32, 32)))["pixel_values"].dtype == torch.bfloat16
