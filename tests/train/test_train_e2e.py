"""The spine end to end on CPU: tiny LLaVA trains through the real Trainer, is saved, reloads through
`from_pretrained`, and is scored by lmms-eval on the demo tasks."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from test_configs import CONF


@pytest.mark.integration
def test_training_writes_a_loadable_checkpoint(trained):
    from transformers import LlavaForConditionalGeneration

    cfg, out, metrics = trained
    assert metrics["steps"] == 3 and metrics["instruction"] > 0 and "template" not in metrics
    history = json.loads((out / "log_history.json").read_text())
    logged = [h for h in history if "loss" in h]
    assert len(logged) == 3 and all(h["n_tokens/instruction"] > 0 for h in logged)
    assert all(h["throughput/tokens_per_s"] > h["throughput/supervised_tokens_per_s"] > 0 for h in logged)
    model = LlavaForConditionalGeneration.from_pretrained(out / "checkpoint")
    assert model.config.text_config.hidden_size == 32
    assert torch.isfinite(next(model.parameters())).all()
    audit = json.loads((out / "data_audit.json").read_text())
    assert audit["n_used"] == audit["n_records"] == 48


@pytest.mark.integration
def test_lmms_eval_scores_the_checkpoint(trained, demo_data):
    from lit.eval.evaluate import evaluate
    from lit.eval.spec import EvalSpec

    cfg, out, _ = trained
    scores = evaluate(out / "checkpoint", EvalSpec(("demo_pope", "demo_vqa"), str(demo_data), limit=4), out / "eval")
    assert set(scores) == {"demo_pope", "demo_vqa"}
    pope = scores["demo_pope"]
    assert 0 <= pope["pope_accuracy"] <= 1 and pope["pope_unparsed"] <= 4
    saved = json.loads((out / "eval" / "scores.json").read_text())
    assert saved["lmms_eval_version"] and (out / "eval" / "lmms_tasks" / "demo_pope" / "demo_pope.yaml").exists()


def test_evaluate_rejects_a_folder_that_is_not_a_checkpoint(tmp_path):
    from lit.eval.evaluate import evaluate
    from lit.eval.spec import EvalSpec

    with pytest.raises(FileNotFoundError, match="not a checkpoint"):
        evaluate(tmp_path, EvalSpec(("demo_pope",), str(tmp_path)), tmp_path / "eval")


def test_evaluate_says_where_task_data_is_missing(tmp_path):
    from lit.eval.evaluate import prepare_tasks

    with pytest.raises(FileNotFoundError, match="test_pope.jsonl is missing"):
        prepare_tasks(["demo_pope"], tmp_path, tmp_path / "eval")
    with pytest.raises(KeyError, match="known: demo_caption, demo_pope, demo_vqa"):
        prepare_tasks(["mme_full"], tmp_path, tmp_path / "eval")


@pytest.mark.integration
def test_mins_plus_data_is_built_at_epsilon_and_trained_on(demo_data, tmp_path):
    """data=demo_mins_plus: the MultiInstruct-style instances get instructions from the pool at epsilon,
    the LLaVA JSON is built once (by build_mins_plus.py's function), and train.py trains on it."""
    import yaml

    from instraug.arm import build_for
    from lit.train.run import run

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "experiment=demo_mins_plus",
                "augmentation.epsilon=0.0",
                "loss=lit",
                f"data.root={demo_data}",
                "data.generate=false",
                f"paths.data_dir={tmp_path}",
                "train.max_steps=2",
                "train.per_device_train_batch_size=4",
                "train.disable_tqdm=true",
                "model.text.hidden_size=32",
                "model.vision.hidden_size=32",
            ],
        )
    with open_dict(cfg):
        cfg.output_dir = str(tmp_path / "run")
    build_for(cfg.data)
    metrics = run(cfg, tmp_path / "run")
    assert metrics["steps"] == 2
    built = [
        json.loads(line) for line in (demo_data / "mins_plus" / "eps0.0-s0" / "train.jsonl").read_text().splitlines()
    ]
    instances = (demo_data / "train_instances.jsonl").read_text().splitlines()
    rewrites = {t for texts in yaml.safe_load(open("instraug/demo/paraphrases.yaml")).values() for t in texts}
    assert len(built) == len(instances)
    assert all(r["instruction_origin"] == "generated" and r["instruction"] in rewrites for r in built)
    audit = json.loads((tmp_path / "run" / "data_audit.json").read_text())
    assert audit["n_used"] == len(instances)


@pytest.fixture(scope="module")
def pretrained_parts(tmp_path_factory, tokenizers):
    """A tiny 'pretrained' causal LM and CLIP vision tower, saved as HF checkpoints (no hub)."""
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        CLIPVisionModel,
        LlamaConfig,
        LlamaForCausalLM,
    )

    bpe_tokenizer = tokenizers["bpe"]
    root = tmp_path_factory.mktemp("parts")
    torch.manual_seed(0)
    bpe_tokenizer.save_pretrained(root / "lm")
    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(bpe_tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            bos_token_id=bpe_tokenizer.bos_token_id,
            eos_token_id=bpe_tokenizer.eos_token_id,
        )
    ).save_pretrained(root / "lm")
    CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        )
    ).save_pretrained(root / "vision")
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        root / "vision"
    )
    return root


def _stage1_cfg(parts, demo_data, out, *extra, model="llava7b_stage1"):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"model={model}",
                "deepspeed=none",
                "data=demo",
                f"data.root={demo_data}",
                "data.generate=false",
                f"model.compose.text={parts / 'lm'}",
                f"model.compose.vision={parts / 'vision'}",
                "model.dtype=float32",
                "train.bf16=false",
                "train.tf32=false",
                "train.use_cpu=true",
                "train.max_steps=2",
                "train.per_device_train_batch_size=4",
                "train.gradient_checkpointing=false",
                "train.dataloader_num_workers=0",
                "train.save_strategy=no",
                "train.disable_tqdm=true",
                "logger=none",
                *extra,
            ],
        )
    with open_dict(cfg):
        cfg.output_dir = str(out)
    return cfg


@pytest.mark.integration
def test_stage1_composes_pretrained_lm_and_vision_and_trains_only_the_projector(pretrained_parts, demo_data, tmp_path):
    from transformers import (
        CLIPVisionModel,
        LlamaForCausalLM,
        LlavaForConditionalGeneration,
    )

    from lit.train.run import run

    metrics = run(_stage1_cfg(pretrained_parts, demo_data, tmp_path), tmp_path)
    assert metrics["steps"] == 2 and metrics.get("instruction", 0) == 0  # plain template: captions only
    model = LlavaForConditionalGeneration.from_pretrained(tmp_path / "checkpoint")
    lm = LlamaForCausalLM.from_pretrained(pretrained_parts / "lm")
    vision = CLIPVisionModel.from_pretrained(pretrained_parts / "vision")
    n = lm.config.vocab_size  # rows added for <image> are new
    assert torch.equal(model.model.language_model.layers[0].mlp.up_proj.weight, lm.model.layers[0].mlp.up_proj.weight)
    assert torch.equal(model.lm_head.weight[:n], lm.lm_head.weight)
    tower, ref = model.model.vision_tower.state_dict(), vision.state_dict()
    assert tower.keys() == ref.keys() and all(torch.equal(tower[k], ref[k]) for k in ref)
    assert model.config.vision_feature_layer == -2 and model.config.vision_feature_select_strategy == "default"


@pytest.mark.integration
def test_next_stage1_composes_and_trains_projector_and_image_newline(pretrained_parts, demo_data, tmp_path):
    from transformers import (
        AutoImageProcessor,
        AutoProcessor,
        LlamaForCausalLM,
        LlavaNextForConditionalGeneration,
    )

    from lit.train.run import run

    metrics = run(
        _stage1_cfg(
            pretrained_parts,
            demo_data,
            tmp_path,
            "model.image_grid_pinpoints=[[32,64],[64,32]]",
            model="llava_next7b_stage1",
        ),
        tmp_path,
    )
    assert metrics["steps"] == 2
    model = LlavaNextForConditionalGeneration.from_pretrained(tmp_path / "checkpoint")
    lm = LlamaForCausalLM.from_pretrained(pretrained_parts / "lm")
    assert torch.equal(model.model.language_model.layers[0].mlp.up_proj.weight, lm.model.layers[0].mlp.up_proj.weight)
    assert model.config.image_grid_pinpoints == [[32, 64], [64, 32]] and model.model.image_newline.shape == (32,)
    processor, clip = (
        AutoProcessor.from_pretrained(tmp_path / "checkpoint"),
        AutoImageProcessor.from_pretrained(pretrained_parts / "vision"),
    )
    assert type(processor).__name__ == "LlavaNextProcessor"
    assert list(processor.image_processor.image_mean) == list(clip.image_mean)  # the vision tower's normalisation
    log = json.loads((tmp_path / "log_history.json").read_text())
    assert all(math.isfinite(h["loss"]) for h in log if "loss" in h)


def test_compose_builds_no_random_copy_of_the_pretrained_parts(pretrained_parts, monkeypatch):
    """The skeleton is built on the meta device: no LLaVA-sized random initialisation, nothing left on meta."""
    from transformers import LlamaForCausalLM, LlavaForConditionalGeneration

    from lit.mask.chat_templates import get_template
    from lit.model import loading as model_module

    built = []
    real_init = LlavaForConditionalGeneration.__init__

    def spy(self, config, *args, **kwargs):
        real_init(self, config, *args, **kwargs)
        built.append(next(self.parameters()).device.type)

    monkeypatch.setattr(LlavaForConditionalGeneration, "__init__", spy)
    model, _ = model_module.compose_pretrained(
        str(pretrained_parts / "lm"), str(pretrained_parts / "vision"), get_template("plain")
    )
    assert built == ["meta"]
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    lm = LlamaForCausalLM.from_pretrained(pretrained_parts / "lm")
    assert torch.equal(model.model.language_model.rotary_emb.inv_freq, lm.model.rotary_emb.inv_freq)
    out = model(input_ids=torch.tensor([[1, 2, 3]]))
    assert torch.isfinite(out.logits).all()


def test_stage1_refuses_the_lit_loss(pretrained_parts, demo_data, tmp_path):
    from lit.train.run import run

    with pytest.raises(ValueError, match="answer-only loss"):
        run(_stage1_cfg(pretrained_parts, demo_data, tmp_path, "loss=lit"), tmp_path)
