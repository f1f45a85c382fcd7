"""Documents with several images: lit_llava's prompts (lit/eval/lmms_model.py) and VC (lit/eval/vc.py) take every
image, in order, with the ids and pixels training gives the same record.

The layout of a question without markers mirrors lmms-eval's ``llava_hf`` (lmms-eval 0.7.3,
``lmms_eval/models/simple/llava_hf.py`` lines 316-321): ``" ".join(["<image>"] * len(visuals)) + "\\n" + context``;
LLaVA's own model class writes the same (``lmms_eval/models/simple/llava.py`` lines 349-358).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lmms_eval.api.instance import Instance
from PIL import Image

from lit.records import RecordError

QUESTION = "Which picture has the red square?"
ANSWER = "the second"


def _images(root, n: int = 3) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        img = Image.fromarray(rng.integers(0, 255, (32 + 8 * k, 40, 3), dtype=np.uint8))
        img.save(root / f"{k}.png")
        out.append(img)
    return out


@pytest.fixture(scope="module")
def lmm(trained):
    from lit.eval.lmms_model import LitLlava

    return LitLlava(pretrained=str(trained[1] / "checkpoint"), chat_template="vicuna_v1", batch_size=1)


def test_a_two_image_prompt_has_the_ids_and_pixels_training_gives_the_record(lmm, tmp_path):
    from lit.data.dataset import SupervisedDataset
    from lit.data.labels import LabelSpec
    from lit.mask.chat_templates import get_template
    from lit.mask.scopes import get_scope

    images = _images(tmp_path, 2)
    record = {
        "id": "two",
        "image": ["0.png", "1.png"],
        "conversations": [
            {"from": "human", "value": f"<image> <image>\n{QUESTION}"},  # llava_hf's markers for two visuals
            {"from": "gpt", "value": ANSWER},
        ],
    }
    spec = LabelSpec(get_template("vicuna_v1"), get_scope("vit"), 512, image_root=tmp_path)
    ds = SupervisedDataset([record], spec, lmm.tokenizer, lmm.image_inputs, progress=False)
    item = lmm._prompt(QUESTION, images, answer=ANSWER)
    assert item["input_ids"].tolist() == ds[0]["input_ids"].tolist()
    n_image = int((item["input_ids"] == lmm.image_token_id).sum())
    assert n_image == 2 * lmm.image_inputs.n_tokens(32, 40)
    batch = lmm._batch([item], left=False)
    assert torch.equal(batch["pixel_values"], lmm.image_inputs.collate(ds[0]["image"])["pixel_values"])
    assert batch["pixel_values"].shape[0] == 2


def test_every_image_reaches_the_model(lmm, tmp_path):
    """Changing the second picture changes the logits: it is not dropped."""
    a, b, c = _images(tmp_path)
    with torch.no_grad():
        first = lmm.model(**lmm.prompt_inputs(QUESTION, [a, b])).logits
        other = lmm.model(**lmm.prompt_inputs(QUESTION, [a, c])).logits
        alone = lmm.model(**lmm.prompt_inputs(QUESTION, a)).logits
    assert first.shape == other.shape and not torch.allclose(first, other)
    assert alone.shape[1] < first.shape[1]


def _requests(docs):
    gen = {"max_new_tokens": 5, "until": ["\n\n"]}
    return [
        Instance(
            "generate_until",
            (doc["q"], dict(gen), lambda d: d["visuals"], i, "t", "test"),
            idx=i,
            metadata={"task": "t", "doc_id": i, "repeats": 1},
        )
        for i, doc in enumerate(docs)
    ]


def test_batches_of_two_one_and_no_image_answer_as_one_at_a_time(trained, tmp_path):
    from lit.eval.lmms_model import LitLlava

    a, b, c = _images(tmp_path)
    docs = [
        {"q": QUESTION, "visuals": [a, b]},
        {"q": "What is shown?", "visuals": [c]},
        {"q": "Say hi", "visuals": []},
        {"q": "<image> left, <image> right: which is red?", "visuals": [c, a]},  # markers kept where they are
        {"q": QUESTION, "visuals": [b, c, a]},
    ]
    answers = {}
    for batch_size in (1, 5):
        lmm = LitLlava(pretrained=str(trained[1] / "checkpoint"), chat_template="vicuna_v1", batch_size=batch_size)
        lmm.task_dict = {"t": {"test": docs}}
        answers[batch_size] = lmm.generate_until(_requests(docs))
    assert answers[1] == answers[5] and len(answers[5]) == 5


def test_markers_that_do_not_match_the_images_name_the_document(lmm, tmp_path):
    a, b, _ = _images(tmp_path)
    with pytest.raises(RecordError, match=r"t doc 7.*2 images but 1 <image> markers"):
        lmm._prompt("<image> Which is red?", [a, b], where="t doc 7")
    with pytest.raises(RecordError, match=r"t doc 8.*marker but no 'image' field"):
        lmm._prompt("<image> Which is red?", [], where="t doc 8")


def test_vc_of_a_two_image_record_puts_noise_in_place_of_each_image(lmm, trained, tmp_path):
    """``logp_image`` is the answer's log-likelihood given both images, ``logp_noise`` given two noise images of
    their sizes, drawn in order from the seeded generator."""
    from lit.data.dataset import SupervisedDataset
    from lit.data.labels import LabelSpec
    from lit.eval import vc
    from lit.mask.chat_templates import get_template
    from lit.mask.scopes import get_scope

    images = _images(tmp_path, 2)
    record = {
        "id": "two",
        "image": ["0.png", "1.png"],
        "conversations": [
            {"from": "human", "value": f"<image>\n<image>\n{QUESTION}"},
            {"from": "gpt", "value": ANSWER},
        ],
    }
    elsewhere = {**record, "image": ["0.png", "x/1.png"]}
    assert vc.select_records([record, elsewhere], {"image_prefix": ""}, None, 0) == [record, elsewhere]
    assert vc.select_records([elsewhere], {"image_prefix": "x/"}, None, 0) == []  # every image under the prefix
    (pair,) = vc.analyse(str(trained[1] / "checkpoint"), [record], str(tmp_path), seed=3)["pairs"]

    spec = LabelSpec(get_template("vicuna_v1"), get_scope("vit"), 512, image_root=tmp_path)
    item = SupervisedDataset(vc.qa_pairs([record]), spec, lmm.tokenizer, lmm.image_inputs, progress=False)[0]
    eos = lmm.tokenizer.convert_tokens_to_ids("</s>")
    labels = vc.last_answer_labels(item["labels"], count_eos=False, eos_id=eos)
    rng = np.random.default_rng(3)
    noise = [lmm.image_inputs.pixels(vc.noise_image(img.size, rng)) for img in images]
    expected = []
    for pixels in (item["image"], noise):
        inputs = lmm.image_inputs.collate(pixels)
        expected.append(vc.answer_logprob(lmm.model, item["input_ids"], labels, inputs, False, lmm.image_token_id)[0])
    assert (pair["logp_image"], pair["logp_noise"]) == pytest.approx(tuple(expected), rel=1e-5)
    assert math.isfinite(pair["vc"]) and pair["vc"] == pytest.approx(expected[0] - expected[1], rel=1e-4)


def test_a_model_that_takes_one_image_refuses_two_naming_the_document(tmp_path, bpe_tokenizer):
    """InstructBLIP takes one image per prompt: two are refused, never scored on the first alone."""
    from tiny_runs import tiny_model

    from lit.eval.lmms_model import LitLlava

    model, processor, _ = tiny_model("tiny_iblip", bpe_tokenizer)
    model.save_pretrained(tmp_path / "iblip")
    processor.save_pretrained(tmp_path / "iblip")
    lmm = LitLlava(pretrained=str(tmp_path / "iblip"), chat_template="instructblip")
    a, b, _ = _images(tmp_path)
    assert lmm._prompt(QUESTION, [a])["image"] is not None
    with pytest.raises(RecordError, match=r"t doc 3.*2 images: this model \(InstructBLIP\) takes 1 per prompt"):
        lmm._prompt(QUESTION, [a, b], where="t doc 3")
