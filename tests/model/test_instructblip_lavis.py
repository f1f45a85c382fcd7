"""InstructBLIP trained as InstrAug's LAVIS fork trains it (declare-lab/InstrAug 15242ef, ``IBLIP/lavis``), on a
tiny InstructBLIP built from a config (no hub): what is trained, the input order, the learning-rate schedule and
precision, the training image augmentation and the instruction truncation. Each test names the LAVIS lines."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from tiny_runs import CONF, tiny_model
from tokenizers import AddedToken

from lit.constants import IGNORE_INDEX, IMAGE_MARKER, KIND_INDEX
from lit.mask.chat_templates import get_template, lavis_layout

TEMPLATE = get_template("instructblip")


def _tiny(tokenizer):
    return tiny_model("tiny_iblip", tokenizer)


def _composed(*overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=["model=instructblip7b", *overrides])


def _rgb(h, w, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _dataset(tokenizer, processor, model, records, tmp_path, augment=None, template=None):
    from lit.data.dataset import SupervisedDataset
    from lit.data.labels import LabelSpec
    from lit.mask.scopes import get_scope
    from lit.model.families import image_inputs_for

    _rgb(48, 64).save(tmp_path / "img.png")
    inputs = image_inputs_for(model.config, processor)
    inputs.augment = augment
    spec = LabelSpec(template or TEMPLATE, get_scope("vit"), 4096, image_root=tmp_path)
    return SupervisedDataset(records, spec, tokenizer, inputs, progress=False)


def _record(instruction, answer="red", rid="r0"):
    return {
        "id": rid,
        "image": "img.png",
        "conversations": [
            {"from": "human", "value": f"{IMAGE_MARKER}\n{instruction}"},
            {"from": "gpt", "value": answer},
        ],
    }


# 1. What is trained -------------------------------------------------------------------------------------------------


def test_schedule_trains_vit_and_ln_vision_with_the_qformer_lm_frozen(bpe_tokenizer):
    """LAVIS ``projects/iblip/train/instr_tuning.yaml`` l.11 ``freeze_vit: False`` merged over the model yaml's
    ``freeze_vit: True`` (``configs/models/blip2/blip2_instruct_vicuna7b.yaml`` l.19; ``common/config.py``
    l.73-79: the project's ``model`` section is merged last); ``models/blip2_models/blip2_vicuna_instruct.py``
    l.58-66 freezes the ViT only under ``freeze_vit`` and never ``ln_vision`` (``blip2.py`` l.81, a LayerNorm
    applied to the ViT's output, l.149 of the forward), l.101-102 freeze the LLM; the Q-Former, query tokens
    and ``llm_proj`` train. In Hugging Face's model ``ln_vision`` is ``vision_model.post_layernorm``."""
    from lit.model.loading import apply_freeze

    model, processor, _ = _tiny(bpe_tokenizer)
    vision = model.vision_model
    pixels = processor.image_processor(images=[_rgb(40, 40)], return_tensors="pt")["pixel_values"]
    out = vision(pixel_values=pixels, output_hidden_states=True)
    # post_layernorm is the last thing applied to the ViT's output, which the Q-Former reads: LAVIS's ln_vision
    torch.testing.assert_close(out.last_hidden_state, vision.post_layernorm(out.hidden_states[-1]))

    freeze = _composed().model.freeze
    apply_freeze(model, freeze)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"vision_model.post_layernorm.weight", "vision_model.post_layernorm.bias"} <= trainable
    assert {n for n, _ in model.named_parameters() if n.startswith("vision_model.")} <= trainable
    assert any(n.startswith("qformer.") for n in trainable) and "query_tokens" in trainable
    assert any(n.startswith("language_projection.") for n in trainable)
    assert not any("language_model" in n or "lm_head" in n for n in trainable)

    image_id = bpe_tokenizer.convert_tokens_to_ids(IMAGE_MARKER)
    ids = torch.tensor([[image_id] * 4 + bpe_tokenizer("a red circle")["input_ids"]])
    q = bpe_tokenizer("What is it?", return_tensors="pt")
    model.train()
    loss = model(
        input_ids=ids,
        pixel_values=pixels,
        qformer_input_ids=q["input_ids"],
        qformer_attention_mask=q["attention_mask"],
        labels=ids.masked_fill(ids == image_id, IGNORE_INDEX),
    ).loss
    loss.backward()
    assert vision.post_layernorm.weight.grad is not None and vision.embeddings.patch_embedding.weight.grad is not None


# 2. Input order -----------------------------------------------------------------------------------------------------


def test_query_positions_come_before_bos_as_lavis_and_hf_feed_them(bpe_tokenizer, tmp_path):
    """LAVIS ``blip2_vicuna_instruct.py`` forward l.187-193 tokenizes ``text_input`` with the LLM tokenizer (BOS
    first; l.86-89 make ``</s>`` that tokenizer's BOS), l.204-209 append the answer without its BOS, and
    l.226-228 concatenate ``[inputs_llm, embedded text]``: the query embeddings before BOS; generate does the
    same (l.347-356). Hugging Face's ``InstructBlipProcessor.__call__`` prepends the image tokens to the
    tokenized text, BOS included; its ids are compared here, not text."""
    model, processor, cfg = _tiny(bpe_tokenizer)
    n = cfg.num_query_tokens
    instruction = "What colour is the circle?"
    item = _dataset(bpe_tokenizer, processor, model, [_record(instruction)], tmp_path)[0]
    ids, labels = item["input_ids"], item["labels"]
    image_id = bpe_tokenizer.convert_tokens_to_ids(IMAGE_MARKER)
    hf_processor = copy.copy(processor)  # HF reads image_token.content; the tiny tokenizer names it as a str
    hf_processor.image_token = AddedToken(IMAGE_MARKER, special=True, normalized=False)
    hf = hf_processor(images=_rgb(40, 40), text=instruction, return_tensors="pt")["input_ids"][0]
    assert torch.equal(hf[:n], torch.full((n,), image_id)) and hf[n] == bpe_tokenizer.bos_token_id
    assert torch.equal(ids[: len(hf)], hf)  # [32 query positions, BOS, instruction] as HF and LAVIS
    assert torch.equal(ids[:n], torch.full((n,), image_id)) and ids[n] == bpe_tokenizer.bos_token_id
    assert (labels[: len(hf)] == IGNORE_INDEX).all() and (labels[len(hf) :] != IGNORE_INDEX).all()
    assert ids[-1] == bpe_tokenizer.convert_tokens_to_ids("</s>")

    # generation (no truncation), as the LAVIS generate and the HF processor build the prompt
    from lit.mask.render import encode, render

    spans = render(
        {"image": "x", "conversations": [{"from": "human", "value": f"{IMAGE_MARKER}\n{instruction}"}]},
        TEMPLATE,
        add_generation_prompt=True,
    )
    enc = encode(spans, bpe_tokenizer, record_id="p", image_token_id=image_id)
    gen_ids, gen_kinds = lavis_layout(TEMPLATE, enc.input_ids, enc.kinds, truncate=False)
    assert gen_ids[0] == image_id and gen_kinds[0] == KIND_INDEX["image"] and gen_ids[1] == bpe_tokenizer.bos_token_id
    from lit.mask.render import expand_images

    assert torch.equal(torch.from_numpy(expand_images(gen_ids, gen_ids, image_id, [n], [image_id])), hf)
    # a template that asks for nothing keeps the tokenizer's order (LLaVA's stage-1 plain: BOS, image, caption)
    plain = get_template("plain")
    same = lavis_layout(plain, enc.input_ids, enc.kinds, truncate=True)
    assert np.array_equal(same[0], enc.input_ids) and enc.input_ids[0] == bpe_tokenizer.bos_token_id


# 3. Schedule and precision ------------------------------------------------------------------------------------------


def _lavis_lrs(iters_per_epoch, accum, epochs, init_lr, warmup_lr, warmup_steps):
    """The rate each optimizer step of LAVIS's inner loop applies: ``tasks/base_task.py`` l.213 sets the rate
    before every micro-batch from (epoch, index), l.226-232 step the optimizer after every ``accum``-th;
    ``common/optims.py`` l.77-94 (``LinearWarmupCosineLRScheduler.step``), l.119-125 and l.128-132."""
    lrs = []
    for epoch in range(epochs):
        for i in range(iters_per_epoch):
            if epoch == 0:
                lr = min(init_lr, warmup_lr + (init_lr - warmup_lr) * i / max(warmup_steps, 1))
            else:
                lr = init_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
            if (i + 1) % accum == 0:
                lrs.append(lr)
    return lrs


def test_lavis_schedule_steps_warmup_per_micro_batch_and_cosine_per_epoch(bpe_tokenizer, tmp_path):
    """``projects/iblip/train/instr_tuning.yaml`` l.31-37 and l.41 (linear_warmup_cosine_lr, init_lr 1e-5, min_lr 0,
    warmup_lr 1e-8, warmup_steps 1000, 3 epochs, accumulation 4), ``runners/runner_base.py`` l.132-162 (warmup_lr
    is the warm-up's start), ``tasks/base_task.py`` l.213 and l.226-232, ``common/optims.py`` l.56-132: the
    recipe's ``train.lr_schedule: lavis_epoch_cosine`` gives every optimizer step LAVIS's rate."""
    from lit.train.args import LitTrainingArguments
    from lit.train.trainer import LitTrainer

    train = _composed().train
    assert train.lr_schedule == "lavis_epoch_cosine" and train.warmup_steps == 1000
    assert train.warmup_start_lr == 1e-8 and train.learning_rate == 1e-5 and train.num_train_epochs == 3

    model, _, _ = _tiny(bpe_tokenizer)
    iters, accum, warmup = 40, 4, 26  # 10 optimizer steps per epoch; warm-up ends inside the 7th
    args = LitTrainingArguments(
        output_dir=str(tmp_path),
        use_cpu=True,
        report_to=[],
        learning_rate=1e-5,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=accum,
        num_train_epochs=3,
        lr_schedule="lavis_epoch_cosine",
        warmup_steps=warmup,
        warmup_start_lr=1e-8,
    )
    trainer = LitTrainer(model=model, args=args, train_dataset=[{"input_ids": torch.tensor([1])}] * iters)
    trainer.create_optimizer()
    scheduler = trainer.create_scheduler(num_training_steps=30)
    ours = []
    for _ in range(30):
        ours.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.optimizer.step()
        scheduler.step()
    expected = _lavis_lrs(iters, accum, 3, 1e-5, 1e-8, warmup)
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-15)
    assert ours[10] == pytest.approx(0.75e-5) and ours[20] == pytest.approx(0.25e-5)  # one value per epoch
    with pytest.raises(ValueError, match="lr_schedule"):
        LitTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], lr_schedule="cosine_per_epoch")

    # and in a real training run the Trainer creates this scheduler and steps it once per optimizer step
    from transformers import TrainerCallback

    from lit.data.collate import Collator

    class Rates(TrainerCallback):
        def __init__(self):
            self.seen = []

        def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
            self.seen.append(optimizer.param_groups[0]["lr"])

    model, processor, _ = _tiny(bpe_tokenizer)
    dataset = _dataset(
        bpe_tokenizer, processor, model, [_record(f"Question {i}?", rid=f"r{i}") for i in range(8)], tmp_path
    )
    rates = Rates()
    args = LitTrainingArguments(
        output_dir=str(tmp_path / "run"),
        use_cpu=True,
        report_to=[],
        learning_rate=1e-3,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=2,
        num_train_epochs=3,
        lr_schedule="lavis_epoch_cosine",
        warmup_steps=3,
        warmup_start_lr=1e-5,
        remove_unused_columns=False,
        save_strategy="no",
        disable_tqdm=True,
    )
    LitTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        callbacks=[rates],
        data_collator=Collator(bpe_tokenizer.pad_token_id, dataset.image_inputs),
    ).train()
    np.testing.assert_allclose(rates.seen, _lavis_lrs(8, 2, 3, 1e-3, 1e-5, 3), rtol=1e-9)


def test_schedule_precision_is_fp16_amp_as_lavis():
    """``projects/iblip/train/instr_tuning.yaml`` l.51 ``amp: True``: ``runners/runner_base.py`` l.122-130 make a
    ``GradScaler`` and ``tasks/base_task.py`` l.215 runs the step under ``torch.cuda.amp.autocast`` (fp16);
    ``blip2_vicuna_instruct.py`` l.83-85 load the (frozen) LLM with ``torch_dtype=torch.float16``; the trained
    parts keep fp32 weights (``eva_vit.py`` l.410-421: the fork's fp16 conversion of the ViT does nothing)."""
    cfg = _composed()
    assert cfg.train.fp16 and not cfg.train.bf16
    assert cfg.model.dtype == "float32"  # trainable weights fp32 under autocast; DeepSpeed fp16 casts to half
    assert cfg.deepspeed.config.fp16.enabled == "auto"  # filled from train.fp16 under the schedule's ZeRO-2


# 4. Augmentation ----------------------------------------------------------------------------------------------------


def test_blip_image_train_augmentation(bpe_tokenizer, tmp_path):
    """``projects/iblip/train/instr_tuning.yaml`` l.15-21 (train: blip_image_train, eval: blip_image_eval, 224 px);
    ``processors/blip_processors.py`` l.103-141 (RandomResizedCrop scale (0.5, 1) bicubic, horizontal flip,
    RandomAugment(2, 5) over ten operations, ToTensor, Normalize with l.18-25's CLIP mean/std), l.165-178
    (eval: a bicubic resize only); ``processors/randaugment.py`` l.222-247 and l.278-285 (magnitude -> shear
    0.3 * M/10, translation 10 * M/10 pixels, rotation 30 * M/10 degrees, brightness/sharpness 1.8 * M/10 + 0.1,
    each with its random sign), l.305-307 (grey fill 128), l.326-349 (two ops drawn with replacement, each
    applied with probability 1/2)."""
    from transformers import TrainingArguments

    from lit.data import blip_augment as ba
    from lit.model.build import build_model

    assert ba.RANDAUG_OPS == (
        "Identity",
        "AutoContrast",
        "Brightness",
        "Sharpness",
        "Equalize",
        "ShearX",
        "ShearY",
        "TranslateX",
        "TranslateY",
        "Rotate",
    )
    assert _composed().model.image_augment == "blip_image_train"

    model, processor, cfg = _tiny(bpe_tokenizer)
    size = processor.image_processor.size["height"]
    aug = ba.augment_for("blip_image_train", processor.image_processor, seed=3)
    photo = _rgb(90, 120, seed=1)
    # crop: 50-100 % of the area, aspect 3/4-4/3, inside the image
    rng = np.random.default_rng(0)
    for _ in range(300):
        left, top, w, h = ba.random_resized_crop_box(120, 90, rng)
        assert 0.5 * 120 * 90 * 0.97 <= w * h <= 120 * 90 and 3 / 4 * 0.95 <= w / h <= 4 / 3 * 1.05
        assert 0 <= left and left + w <= 120 and 0 <= top and top + h <= 90
    # magnitude 5: brightness and sharpness factor 1.0 leave the image unchanged; translation is 5 pixels
    small = _rgb(20, 20, seed=2)
    for name in ("Identity", "Brightness", "Sharpness"):
        assert np.array_equal(np.asarray(ba.apply_op(small, name, 5, rng)), np.asarray(small))
    src, sides = np.asarray(small), set()
    for s in range(12):  # 5 pixels either way (the sign drawn), the uncovered columns grey
        out = np.asarray(ba.apply_op(small, "TranslateX", 5, np.random.default_rng(s)))
        if np.array_equal(out[:, :15], src[:, 5:]) and (out[:, 15:] == 128).all():
            sides.add("left")
        elif np.array_equal(out[:, 5:], src[:, :15]) and (out[:, :5] == 128).all():
            sides.add("right")
        else:
            raise AssertionError(f"TranslateX at magnitude 5 is not a 5-pixel shift (seed {s})")
    assert sides == {"left", "right"}
    # per record and per pass: the same run gives the same pixels, the next epoch other ones
    first = aug(photo, "r0")["pixel_values"]
    again = ba.augment_for("blip_image_train", processor.image_processor, seed=3)(photo, "r0")["pixel_values"]
    assert first.shape == (3, size, size) and torch.equal(first, again)
    assert not torch.equal(first, aug(photo, "r0")["pixel_values"])  # second pass over r0
    assert not torch.equal(
        first, ba.augment_for("blip_image_train", processor.image_processor, seed=4)(photo, "r0")["pixel_values"]
    )
    # normalised as the processor normalises: with every random step skipped, a resize gives its pixels back
    plain = processor.image_processor(
        images=[photo.resize((size, size), Image.Resampling.BICUBIC)], return_tensors="pt"
    )["pixel_values"][0]
    torch.testing.assert_close(
        aug.normalize(photo.resize((size, size), Image.Resampling.BICUBIC)), plain, atol=1e-5, rtol=1e-5
    )
    for s in range(5):  # the draws are a function of the generator only
        assert np.array_equal(
            np.asarray(aug.image(photo, np.random.default_rng(s))),
            np.asarray(aug.image(photo, np.random.default_rng(s))),
        )

    # the hook: training items through the augmentation, evaluation (augment None) through the processor
    records = [_record("What is it?")]
    train_item = _dataset(bpe_tokenizer, processor, model, records, tmp_path, augment=aug)[0]["image"]["pixel_values"]
    eval_item = _dataset(bpe_tokenizer, processor, model, records, tmp_path)[0]["image"]["pixel_values"]
    expected_eval = processor.image_processor(
        images=[Image.open(tmp_path / "img.png").convert("RGB")], return_tensors="pt"
    )["pixel_values"][0]
    assert torch.equal(eval_item, expected_eval) and train_item.shape == eval_item.shape
    assert not torch.allclose(train_item, eval_item)
    # and the schedule's model.image_augment reaches the training inputs through build_model
    model_cfg = OmegaConf.merge(cfg, {"image_augment": "blip_image_train", "freeze": {"vision": False}})
    adapter = OmegaConf.create({"name": "none"})
    built = build_model(
        model_cfg,
        adapter,
        TEMPLATE,
        TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[]),
        tokenizer_of=lambda: bpe_tokenizer,
    )
    assert isinstance(built.image_inputs.augment, ba.BlipTrainAugment)
    with pytest.raises(ValueError, match="image_augment"):
        ba.augment_for("blip2_image_train", processor.image_processor)


# 5. Instruction truncation ------------------------------------------------------------------------------------------


def test_instruction_is_cut_from_the_left_at_128_tokens(bpe_tokenizer, tmp_path):
    """``blip2_vicuna_instruct.py`` l.45 and l.108 (``max_txt_len`` 128), l.82 and l.185-193 (the LLM tokenizer
    truncates ``text_input`` at 128 tokens, BOS counted, from the left), l.56 with ``blip2.py`` l.31-34 (the
    Q-Former's BERT tokenizer is made with ``truncation_side='left'``) and l.156-162 (at ``max_txt_len`` too);
    generate (l.347-351) does not cut the LLM prompt."""
    model, processor, cfg = _tiny(bpe_tokenizer)
    n = cfg.num_query_tokens
    instruction = " ".join(f"word{i} circle" for i in range(150))
    body = bpe_tokenizer(instruction, add_special_tokens=False)["input_ids"]
    assert len(body) > 200
    item = _dataset(bpe_tokenizer, processor, model, [_record(instruction)], tmp_path)[0]
    ids, labels = item["input_ids"].tolist(), item["labels"]
    first_answer = int(np.nonzero(labels.numpy() != IGNORE_INDEX)[0][0])
    llm_text = ids[n:first_answer]
    assert len(llm_text) == 128 and llm_text[0] == bpe_tokenizer.bos_token_id
    assert llm_text[1:] == body[-127:]  # the end of the instruction kept, as truncation_side='left'
    short = _dataset(bpe_tokenizer, processor, model, [_record("What is it?")], tmp_path)[0]["input_ids"].tolist()
    short_body = bpe_tokenizer("What is it?", add_special_tokens=False)["input_ids"]
    assert short[n + 1 : n + 1 + len(short_body)] == short_body  # a short instruction is kept whole

    # the Q-Former's instruction: 128 tokens with its special tokens, the end kept; the tokenizer's side restored
    from lit.model.families import image_inputs_for

    inputs = image_inputs_for(model.config, processor)
    q = inputs.text_inputs(_record(instruction), "r0")["qformer_input_ids"].tolist()
    full = processor.qformer_tokenizer(instruction)["input_ids"]
    assert len(q) == 128 and q[0] == full[0] and q[1:] == full[-127:]
    assert processor.qformer_tokenizer.truncation_side == "right"

    # generation keeps the whole prompt (LAVIS generate tokenizes the prompt without truncation)
    ids_in = np.r_[bpe_tokenizer.bos_token_id, 7, body].astype(np.int64)
    kinds_in = np.r_[KIND_INDEX["special"], KIND_INDEX["image"], [KIND_INDEX["instruction"]] * len(body)].astype(
        np.int8
    )
    kept, _ = lavis_layout(TEMPLATE, ids_in, kinds_in, truncate=False)
    assert len(kept) == len(ids_in)


def test_answer_is_cut_from_the_right_at_256_tokens_with_bos_counted(bpe_tokenizer, tmp_path):
    """``blip2_vicuna_instruct.py`` l.195-202: ``answer + eos`` tokenized with ``max_length=max_output_txt_len``
    (256, l.46) and ``truncation_side='right'``; ``concat_text_input_output`` (l.155-172) then drops that
    tokenization's BOS, so at most 255 answer tokens train and a cut answer has no end token."""
    model, processor, cfg = _tiny(bpe_tokenizer)
    from dataclasses import replace

    answer = " ".join(f"circle{i}" for i in range(120))
    record = _record("Describe it.", answer)
    uncut = _dataset(
        bpe_tokenizer, processor, model, [record], tmp_path, template=replace(TEMPLATE, max_answer_tokens=0)
    )[0]
    body = uncut["labels"][uncut["labels"] != IGNORE_INDEX].tolist()  # the answer's tokens as rendered, end token last
    assert len(body) > 256 and body[-1] == bpe_tokenizer.eos_token_id
    item = _dataset(bpe_tokenizer, processor, model, [record], tmp_path)[0]
    supervised = item["labels"][item["labels"] != IGNORE_INDEX].tolist()
    assert supervised == body[:255] and bpe_tokenizer.eos_token_id not in supervised
    assert item["input_ids"].tolist() == uncut["input_ids"].tolist()[: len(item["input_ids"])]
    short = _dataset(bpe_tokenizer, processor, model, [_record("What is it?")], tmp_path)[0]
    assert short["labels"][-1] == bpe_tokenizer.eos_token_id  # a short answer keeps its end token
