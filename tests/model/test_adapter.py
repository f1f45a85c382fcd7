"""LoRA through peft (adapter=lora): the schedule's config, a run on the tiny model from a saved checkpoint,
merged and adapter checkpoints that load for evaluation, and the projector's own learning rate."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_runs import tiny_cfg


def _lora_run(trained, demo_data, out, *extra):
    from lit.train.run import run

    _, base_run, _ = trained
    cfg = tiny_cfg(
        demo_data,
        out,
        f"model.pretrained={base_run / 'checkpoint'}",
        "adapter=lora",
        "adapter.r=4",
        "adapter.alpha=8",
        "train.max_steps=2",
        "logger=none",
        *extra,
    )
    return cfg, run(cfg, out)


def test_lora_config_is_llava_s():
    from hydra import compose, initialize_config_dir
    from tiny_runs import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["model=llava7b", "adapter=lora", "loss=lit"])
    assert (cfg.adapter.r, cfg.adapter.alpha, cfg.adapter.dropout) == (128, 256, 0.05)
    assert cfg.train.learning_rate == 2e-4 and cfg.adapter.projector_lr == 2e-5
    assert cfg.schedule.group_by_modality_length


@pytest.mark.integration
def test_lora_run_writes_merged_and_adapter_checkpoints_that_load(trained, demo_data, tmp_path):
    from safetensors.torch import load_file
    from transformers import LlavaForConditionalGeneration

    from lit.model.loading import load_pretrained

    _, base_run, _ = trained
    _, metrics = _lora_run(trained, demo_data, tmp_path)
    assert metrics["steps"] == 2
    adapter = tmp_path / "checkpoint_adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["base_model_name_or_path"] == str(base_run / "checkpoint")
    keys = load_file(adapter / "adapter_model.safetensors").keys()
    assert any("lora_A" in k and "language_model" in k for k in keys)
    assert any("multi_modal_projector" in k for k in keys)  # trained in full, saved with the adapter
    assert not any("vision_tower" in k for k in keys)

    base = LlavaForConditionalGeneration.from_pretrained(base_run / "checkpoint")
    merged = LlavaForConditionalGeneration.from_pretrained(tmp_path / "checkpoint")
    b, m = base.state_dict(), merged.state_dict()
    assert b.keys() == m.keys()
    assert all(torch.equal(b[k], m[k]) for k in b if "vision_tower" in k)  # frozen
    q = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(b[q], m[q])  # the LoRA update, merged in
    assert not torch.equal(
        b["model.multi_modal_projector.linear_1.weight"], m["model.multi_modal_projector.linear_1.weight"]
    )
    from_adapter, _ = load_pretrained(str(adapter))
    assert all(torch.allclose(v, m[k], atol=1e-6) for k, v in from_adapter.state_dict().items())


@pytest.mark.integration
def test_adapter_only_checkpoint_is_scored_by_lmms_eval(trained, demo_data, tmp_path):
    from lit.eval.evaluate import evaluate
    from lit.eval.spec import EvalSpec

    _lora_run(trained, demo_data, tmp_path, "adapter.save=adapter")
    assert (tmp_path / "checkpoint" / "adapter_config.json").exists()
    assert not (tmp_path / "checkpoint" / "model.safetensors").exists()
    scores = evaluate(tmp_path / "checkpoint", EvalSpec(("demo_pope",), str(demo_data), limit=2), tmp_path / "eval")
    assert 0 <= scores["demo_pope"]["pope_accuracy"] <= 1


def test_lora_needs_a_saved_base_model(demo_data, tmp_path):
    from lit.train.run import run

    with pytest.raises(ValueError, match="set model.pretrained"):
        run(tiny_cfg(demo_data, tmp_path, "adapter=lora", "train.max_steps=1", "logger=none"), tmp_path)


def test_projector_gets_its_own_learning_rate(trained, tmp_path):
    from omegaconf import OmegaConf
    from transformers import TrainingArguments

    from lit.model.loading import load_pretrained
    from lit.model.lora import apply_lora
    from lit.train.trainer import LitTrainer

    _, base_run, _ = trained
    model, _ = load_pretrained(str(base_run / "checkpoint"))
    model = apply_lora(model, OmegaConf.create({"r": 4, "alpha": 8, "dropout": 0.0}), train_projector=True)
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=2e-4, use_cpu=True, report_to=[])
    trainer = LitTrainer(model=model, args=args, part_lrs={"projector": 2e-5})
    optimizer = trainer.create_optimizer()
    by_lr = {}
    for group in optimizer.param_groups:
        by_lr.setdefault(group["lr"], set()).update(id(p) for p in group["params"])
    names = {id(p): n for n, p in model.named_parameters()}
    assert set(by_lr) == {2e-4, 2e-5}
    assert all("multi_modal_projector" in names[i] for i in by_lr[2e-5])
    assert all("lora_" in names[i] for i in by_lr[2e-4])
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert by_lr[2e-4] | by_lr[2e-5] == trainable


def test_part_learning_rates_come_from_the_model_and_adapter_groups():
    """What run() hands the Trainer: the model's own part rates (NeXT's vision tower) and LoRA's projector rate."""
    from hydra import compose, initialize_config_dir
    from tiny_runs import CONF

    from lit.train.trainer import part_lrs

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        next_lora = compose("train", overrides=["model=llava_next7b", "adapter=lora"])
        plain = compose("train", overrides=["model=llava7b"])
    assert part_lrs(next_lora.model, next_lora.adapter) == {"vision": 2e-6, "projector": 2e-5}
    assert part_lrs(plain.model, plain.adapter) == {}
