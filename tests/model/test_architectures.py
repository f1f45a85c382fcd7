"""LLaVA-NeXT (any-resolution tiling) and InstructBLIP (Q-Former inputs) through the same data, training,
checkpoint and generation code as LLaVA, on tiny CPU models built from configs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_runs import CONF, tiny_model

from lit.constants import IGNORE_INDEX, IMAGE_MARKER
from lit.mask.chat_templates import get_template
from lit.model.families import image_inputs_for
from lit.records import RecordError

SIZES = [(32, 32), (30, 70), (60, 25), (64, 64), (17, 90)]  # (height, width): every NeXT grid and odd aspects


def _tiny(arch_config: str, tokenizer):
    return tiny_model(arch_config, tokenizer)


@pytest.fixture(scope="module")
def varied_data(tmp_path_factory, demo_data):
    """Demo records whose images are resized to aspect ratios that pick different NeXT tiling grids."""
    root = tmp_path_factory.mktemp("varied")
    records = json.loads((demo_data / "train.json").read_text())[:20]
    for i, record in enumerate(records):
        h, w = SIZES[i % len(SIZES)]
        with Image.open(demo_data / record["image"]) as img:
            img.convert("RGB").resize((w, h)).save(root / f"img{i}.png")
        record["image"] = f"img{i}.png"
    (root / "train.json").write_text(json.dumps(records))
    return root


def _rgb(h, w, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def _prompt(n_tokens, tokenizer, text="What colour is the shape?"):
    ids = tokenizer(text)["input_ids"]
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_MARKER)
    return torch.tensor([ids[:1] + [image_id] * n_tokens + ids[1:]])


def _assert_llava_hf_reads_it_as_we_do(ckpt, image, chat_template="vicuna_v1"):
    """lmms-eval's own ``llava_hf`` model class loads the checkpoint and, formatting the prompt with the saved
    Jinja chat template and the saved processor, feeds the model exactly what ``lit_llava`` feeds it."""
    from lmms_eval.models.simple.llava_hf import LlavaHf

    from lit.eval.lmms_model import LitLlava

    # device_map must be given: lmms-eval 0.7.3 passes its default "" to from_pretrained, which transformers 5 refuses
    theirs = LlavaHf(pretrained=str(ckpt), device="cpu", device_map="cpu", dtype="float32")
    ours = LitLlava(pretrained=str(ckpt), chat_template=chat_template)
    question = "What shape is it?"
    text = theirs.tokenizer.apply_chat_template(
        [{"role": "user", "content": f"{IMAGE_MARKER}\n{question}"}], tokenize=False, add_generation_prompt=True
    )
    inputs = theirs._image_processor(images=[image], text=text, return_tensors="pt")
    mine = ours.prompt_inputs(question, image)
    assert torch.equal(inputs["input_ids"], mine["input_ids"])
    torch.testing.assert_close(inputs["pixel_values"], mine["pixel_values"])
    out = theirs.model.generate(**inputs, max_new_tokens=2, do_sample=False, pad_token_id=theirs.tokenizer.pad_token_id)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def expand2square(image: Image.Image, background: tuple[int, ...]) -> Image.Image:
    """haotian-liu/LLaVA ``llava/mm_utils.py`` ``expand2square`` (c121f04), used by ``train.py``'s
    ``LazySupervisedDataset`` under ``image_aspect_ratio == 'pad'`` with the processor's mean colour:
    the image centred on a square canvas of its longer side."""
    w, h = image.size
    if w == h:
        return image
    canvas = Image.new(image.mode, (max(w, h),) * 2, background)
    canvas.paste(image, ((max(w, h) - w) // 2, (max(w, h) - h) // 2))
    return canvas


def _llava_pad_pixels(processor, image):
    from lit.model.loading import with_aspect_ratio

    mean = tuple(int(x * 255) for x in processor.image_processor.image_mean)
    crop = with_aspect_ratio(processor.image_processor, "crop")  # the same processor without do_pad
    return crop(images=[expand2square(image, mean)], return_tensors="pt")["pixel_values"]


@pytest.mark.integration
def test_llava_checkpoint_reads_the_same_in_lmms_eval_llava_hf(trained):
    """A non-square image: lmms-eval's llava_hf and our evaluation see the same pixels, those of LLaVA's
    expand2square with the mean colour (not a centre crop)."""
    from lit.model.loading import load_pretrained

    _, run_dir, _ = trained
    image = _rgb(40, 30)
    _assert_llava_hf_reads_it_as_we_do(run_dir / "checkpoint", image)
    _, processor = load_pretrained(str(run_dir / "checkpoint"))
    assert processor.image_processor.do_pad
    ours = processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(ours, _llava_pad_pixels(processor, image))


@pytest.mark.parametrize("mode", ["pad", "crop"])
def test_llava_processor_pads_to_a_square_with_the_mean_colour(bpe_tokenizer, mode):
    from lit.model.loading import with_aspect_ratio

    _, processor, _ = _tiny("tiny", bpe_tokenizer)  # LLaVA's default: pad
    processor.image_processor = with_aspect_ratio(processor.image_processor, mode)
    image = _rgb(20, 50, seed=1)  # wide: a crop loses its sides, a pad keeps them on a mean-colour canvas
    pixels = processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]
    padded = _llava_pad_pixels(processor, image)
    assert torch.allclose(pixels, padded) == (mode == "pad")
    if mode == "pad":  # top and bottom rows are the mean colour, i.e. zero after normalisation
        assert pixels[0, :, :3].abs().max() < 0.02


def test_next_image_token_count_matches_processor_and_model(bpe_tokenizer):
    """Our count is the processor's own <image> expansion for every size, and the model accepts it: it raises
    when image positions and image features disagree."""
    model, processor, _ = _tiny("tiny_next", bpe_tokenizer)
    inputs = image_inputs_for(model.config, processor)
    image_id = bpe_tokenizer.convert_tokens_to_ids(IMAGE_MARKER)
    counts = {}
    for h, w in SIZES:
        n = inputs.n_tokens(h, w)
        expanded = processor(text=IMAGE_MARKER, images=[_rgb(h, w)], return_tensors="pt")["input_ids"]
        assert int((expanded == image_id).sum()) == n, (h, w)
        counts[(h, w)] = n
    assert len(set(counts.values())) >= 3  # the sizes really pick different grids
    singles = []
    for h, w in [(30, 70), (64, 64)]:
        batch = inputs.collate([inputs.pixels(_rgb(h, w))])
        with torch.no_grad():
            singles.append(model(input_ids=_prompt(counts[(h, w)], bpe_tokenizer), **batch).logits)
    assert batch["pixel_values"].ndim == 5 and batch["image_sizes"].tolist() == [[64, 64]]
    with pytest.raises(ValueError, match="[Ii]mage"):  # one position short: the model refuses
        model(input_ids=_prompt(counts[(64, 64)] - 1, bpe_tokenizer), **batch)
    # two images with different tile counts in one padded batch: each row equals its unbatched forward
    both = inputs.collate([inputs.pixels(_rgb(30, 70)), inputs.pixels(_rgb(64, 64))])
    assert both["pixel_values"].shape[1] == 5 and both["image_sizes"].tolist() == [[30, 70], [64, 64]]
    ids = [_prompt(counts[s], bpe_tokenizer)[0] for s in [(30, 70), (64, 64)]]
    longest = max(len(x) for x in ids)
    padded = torch.stack([torch.cat([x, torch.full((longest - len(x),), bpe_tokenizer.pad_token_id)]) for x in ids])
    mask = torch.stack([torch.arange(longest) < len(x) for x in ids]).long()
    with torch.no_grad():
        logits = model(input_ids=padded, attention_mask=mask, **both).logits
    for row, single in enumerate(singles):
        torch.testing.assert_close(logits[row, : single.shape[1]], single[0], atol=1e-4, rtol=1e-4)


def test_next_dataset_and_label_cache_keep_per_image_counts(varied_data, bpe_tokenizer, tmp_path):
    from lit.data.collate import Collator
    from lit.data.label_cache import labelled_dataset
    from lit.data.labels import LabelSpec
    from lit.mask.scopes import get_scope
    from lit.records import load_records

    tok = bpe_tokenizer
    model, processor, cfg = _tiny("tiny_next", tok)
    inputs = image_inputs_for(model.config, processor)
    kwargs = dict(
        spec=LabelSpec(get_template("vicuna_v1"), get_scope("lit"), 2048, image_root=varied_data),
        tokenizer=tok,
        image_inputs=inputs,
        progress=False,
    )
    records = load_records(varied_data / "train.json")
    built = labelled_dataset(records, varied_data / "train.json", tmp_path, **kwargs)
    cached = labelled_dataset(records, varied_data / "train.json", tmp_path, **kwargs)
    assert type(cached.examples).__name__ == "_ArrowExamples"
    image_id = tok.convert_tokens_to_ids(IMAGE_MARKER)
    for i in range(len(records)):
        a, b = built[i], cached[i]
        h, w = SIZES[i % len(SIZES)]
        assert int((a["input_ids"] == image_id).sum()) == inputs.n_tokens(h, w)
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
        assert (a["labels"][a["input_ids"] == image_id] == IGNORE_INDEX).all()
        assert a["image"]["image_sizes"].tolist() == [h, w]
    assert built.lengths() == cached.lengths() == [len(built[i]["input_ids"]) for i in range(len(records))]
    batch = Collator(tok.pad_token_id, inputs)([built[i] for i in range(4)])
    with torch.no_grad():  # a collated batch of four sizes goes through the model
        assert torch.isfinite(model(**{k: v for k, v in batch.items() if k != "kind_counts"}).loss)
    # another tiling (pinpoints) changes every count, so it must not read the cache entry above
    cfg.image_grid_pinpoints = [[32, 96], [96, 32]]
    from lit.model.loading import compose_tiny

    other_model, other_processor = compose_tiny(cfg, tok)
    other = labelled_dataset(
        records,
        varied_data / "train.json",
        tmp_path,
        **{**kwargs, "image_inputs": image_inputs_for(other_model.config, other_processor)},
    )
    assert len(list(tmp_path.glob("labels_*"))) == 2  # a second entry, labelled for the other tiling
    assert [len(other[i]["input_ids"]) for i in range(5)] != [len(built[i]["input_ids"]) for i in range(5)]


def test_next_freeze_covers_image_newline(bpe_tokenizer):
    from lit.model.loading import apply_freeze

    model, _, _ = _tiny("tiny_next", bpe_tokenizer)
    counts = apply_freeze(model, {"vision": False, "projector": True, "lm": True})
    assert not model.model.image_newline.requires_grad and counts["projector"] == 0
    counts = apply_freeze(model, {"vision": True, "projector": False, "lm": True})
    assert model.model.image_newline.requires_grad
    assert counts["projector"] == model.model.image_newline.numel() + sum(
        p.numel() for p in model.model.multi_modal_projector.parameters()
    )


@pytest.mark.integration
def test_next_trains_and_checkpoint_generates(varied_data, tmp_path):
    from tiny_runs import tiny_cfg
    from transformers import (
        AutoModelForImageTextToText,
        LlavaNextForConditionalGeneration,
    )

    from lit.eval.lmms_model import LitLlava
    from lit.train.run import run

    cfg = tiny_cfg(
        varied_data,
        tmp_path,
        "model=tiny_next",
        "train.max_steps=2",
        "data.label_cache_dir=null",
        "loss.template_sentences.min_share=0.5",
    )
    metrics = run(cfg, tmp_path)
    assert metrics["steps"] == 2 and metrics["instruction"] > 0
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "checkpoint")
    assert isinstance(loaded, LlavaNextForConditionalGeneration)
    lmm = LitLlava(pretrained=str(tmp_path / "checkpoint"), chat_template="vicuna_v1")
    inputs = lmm.prompt_inputs("What shape is it?", _rgb(30, 70))
    assert inputs["image_sizes"].tolist() == [[30, 70]]
    assert int((inputs["input_ids"] == lmm.image_token_id).sum()) == lmm.image_inputs.n_tokens(30, 70)
    out = lmm.model.generate(**inputs, max_new_tokens=3, do_sample=False, pad_token_id=lmm.tokenizer.pad_token_id)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    _assert_llava_hf_reads_it_as_we_do(tmp_path / "checkpoint", _rgb(30, 70))
    from lit.eval.vc import analyse
    from lit.records import load_records

    records = [r for r in load_records(varied_data / "train.json") if "image" in r][:2]
    vc = analyse(str(tmp_path / "checkpoint"), records, str(varied_data), attention_share=True)
    assert vc["n"] == sum(len(r["conversations"]) // 2 for r in records)  # tiles + image_sizes reach VC
    assert all(0 < p["attention_to_image"] < 1 for p in vc["pairs"])


def test_next_config_composes():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["loss=lit", "model=llava_next7b"])
        stage1 = compose("train", overrides=["model=llava_next7b_stage1"])
    assert cfg.model.arch == "llava_next" and not cfg.model.freeze.vision and cfg.model.part_lrs.vision == 2e-6
    assert (
        cfg.train.learning_rate == 1e-5
        and cfg.schedule.global_batch_size == 32
        and cfg.deepspeed.config.zero_optimization.stage == 3
    )
    assert stage1.model.compose.text == "lmsys/vicuna-7b-v1.5" and stage1.model.arch == "llava_next"
    assert stage1.model.freeze.lm and stage1.model.freeze.vision and not stage1.model.freeze.projector


def test_iblip_qformer_reads_the_instruction(bpe_tokenizer):
    from lit.data.dataset import SupervisedDataset
    from lit.data.labels import LabelSpec
    from lit.mask.scopes import get_scope

    model, processor, cfg = _tiny("tiny_iblip", bpe_tokenizer)
    inputs = image_inputs_for(model.config, processor)
    record = {
        "conversations": [
            {"from": "human", "value": f"{IMAGE_MARKER}\nWhat colour is the circle?"},
            {"from": "gpt", "value": "red"},
        ]
    }
    ids = inputs.text_inputs(record, "r0")["qformer_input_ids"]
    assert bpe_tokenizer.decode(ids, skip_special_tokens=True).strip() == "What colour is the circle?"
    image = inputs.collate([inputs.pixels(_rgb(40, 40))])
    prompt = _prompt(cfg.num_query_tokens, bpe_tokenizer)
    outs = []
    for question in ["What colour is the circle?", "How many squares are there?"]:
        q = inputs.collate_text([{"qformer_input_ids": torch.tensor(bpe_tokenizer(question)["input_ids"])}])
        with torch.no_grad():
            outs.append(model(input_ids=prompt, **image, **q).logits)
    assert not torch.allclose(outs[0], outs[1])  # the instruction reaches the image features through the Q-Former
    text_only = {"id": "t1", "conversations": record["conversations"]}
    with pytest.raises(RecordError, match="t1.*text-only"):
        SupervisedDataset(
            [text_only],
            LabelSpec(get_template("instructblip"), get_scope("lit"), 512),
            bpe_tokenizer,
            inputs,
            progress=False,
        )


@pytest.mark.integration
def test_iblip_trains_and_checkpoint_generates(demo_data, tmp_path):
    from tiny_runs import tiny_cfg
    from transformers import (
        AutoModelForImageTextToText,
        InstructBlipForConditionalGeneration,
    )

    from lit.eval.lmms_model import LitLlava
    from lit.train.run import run

    cfg = tiny_cfg(demo_data, tmp_path, "model=tiny_iblip", "train.max_steps=2", "data.label_cache_dir=null")
    metrics = run(cfg, tmp_path)
    assert metrics["steps"] == 2 and metrics["instruction"] > 0 and "role" not in metrics
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "checkpoint")
    assert isinstance(loaded, InstructBlipForConditionalGeneration)
    lmm = LitLlava(pretrained=str(tmp_path / "checkpoint"), chat_template="instructblip")
    inputs = lmm.prompt_inputs("What shape is it?", _rgb(32, 32))
    assert inputs["qformer_input_ids"].shape[0] == 1
    n = cfg.model.num_query_tokens
    assert int((inputs["input_ids"] == lmm.image_token_id).sum()) == n
    # LAVIS's generate feeds [query positions, BOS, prompt] (blip2_vicuna_instruct.py l.347-356), as training does
    assert (inputs["input_ids"][0, :n] == lmm.image_token_id).all() and inputs["input_ids"][
        0, n
    ] == lmm.tokenizer.bos_token_id
    out = lmm.model.generate(**inputs, max_new_tokens=3, do_sample=False, pad_token_id=lmm.tokenizer.pad_token_id)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    with pytest.raises(ValueError, match="needs an image"):
        lmm.prompt_inputs("What shape is it?", None)
    from lit.eval.evaluate import evaluate
    from lit.eval.spec import EvalSpec

    scores = evaluate(
        tmp_path / "checkpoint",
        EvalSpec(("demo_pope",), str(demo_data), limit=4),
        tmp_path / "eval",
        chat_template="instructblip",
    )  # through lmms-eval, Q-Former inputs included
    assert 0 <= scores["demo_pope"]["pope_accuracy"] <= 1


def test_iblip_config_composes():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["loss=lit", "model=instructblip7b"])
    assert cfg.model.arch == "instructblip" and cfg.model.pretrained == "Salesforce/instructblip-vicuna-7b"
    assert not cfg.model.freeze.vision and cfg.model.freeze.lm and not cfg.model.freeze.projector  # freeze_vit: False
    assert cfg.train.learning_rate == 1e-5 and cfg.train.weight_decay == 0.05 and cfg.train.num_train_epochs == 3
    assert cfg.model.chat_template == "instructblip"


def test_next_data_converter(tmp_path, demo_data):
    """Parquet rows with embedded image bytes (LLaVA-NeXT-Data's schema) -> LLaVA JSON + image files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lit.data.convert.next_data import convert
    from lit.records import load_records

    png = (demo_data / json.loads((demo_data / "train.json").read_text())[0]["image"]).read_bytes()
    turns = [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A circle."}]
    rows = {
        "id": ["a/1", "b2", "t3"],
        "conversations": [turns, turns, [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hello."}]],
        "data_source": ["coco", "sharegpt4v", "text"],
        "image": [{"bytes": png, "path": "x.png"}, {"bytes": png, "path": None}, None],
    }
    src = tmp_path / "src" / "data"
    src.mkdir(parents=True)
    pq.write_table(pa.table(rows), src / "train-00000-of-00001.parquet")
    counts = convert(tmp_path / "src", tmp_path / "out", progress=False)
    assert counts == {"records": 3, "with_image": 2, "images_written": 2}
    records = load_records(tmp_path / "out" / "llava_next_data.json")
    assert [r.get("image") for r in records] == ["coco/a_1.png", "sharegpt4v/b2.png", None]
    assert (tmp_path / "out" / "images" / "coco" / "a_1.png").read_bytes() == png
    assert records[2]["conversations"][1]["value"] == "Hello."
    assert convert(tmp_path / "src", tmp_path / "out", progress=False)["images_written"] == 0  # resumed: kept
    with pytest.raises(FileNotFoundError, match="no .parquet"):
        convert(tmp_path / "nothing", tmp_path / "out2", progress=False)


def test_hub_ids_pass_the_checkpoint_check_and_local_folders_do_not(tmp_path):
    from lit.model.loading import check_checkpoint, is_hub_id

    assert is_hub_id("Salesforce/instructblip-vicuna-7b") and not is_hub_id(tmp_path / "run" / "checkpoint")
    check_checkpoint("Salesforce/instructblip-vicuna-7b")  # resolved (or refused offline) by from_pretrained
    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError, match="not a checkpoint"):
        check_checkpoint(tmp_path / "run")
