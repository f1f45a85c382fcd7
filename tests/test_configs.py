"""Every config composes; the paper configs show their real settings; unknown options fail clearly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def _compose(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment):
    cfg = _compose(f"experiment={experiment}")
    OmegaConf.to_container(cfg.train, resolve=True)
    from lit.mask.chat_templates import get_template
    from lit.mask.scopes import get_scope

    get_scope(cfg.loss.name)
    get_template(cfg.model.chat_template)


def test_demo_arms_share_one_schedule_and_the_mins_plus_arm_is_step_matched():
    """The scope arms train for epochs, the MIns+ arm (about 4x the records) for a fixed number of steps: that
    number must be the scope arms' step count as the HF Trainer derives it (ceil(epochs * batches per epoch))."""
    import math

    scopes = [_compose(f"experiment=demo_{scope}") for scope in ("vit", "lit_all", "lit_nosys", "lit")]
    mins_plus = _compose("experiment=demo_mins_plus", "augmentation.epsilon=0.5")
    keys = ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "warmup_steps")
    for cfg in scopes[1:] + [mins_plus]:
        assert {k: cfg.train[k] for k in keys} == {k: scopes[0].train[k] for k in keys}
    train, n_train = scopes[0].train, scopes[0].data.n_train
    assert all(cfg.train.max_steps <= 0 and cfg.train.num_train_epochs == train.num_train_epochs for cfg in scopes)
    per_epoch = math.ceil(n_train / train.per_device_train_batch_size) // train.gradient_accumulation_steps
    assert mins_plus.train.max_steps == math.ceil(train.num_train_epochs * per_epoch)


@pytest.mark.parametrize("scope", ["vit", "lit_all", "lit_nosys", "lit"])
def test_loss_group_selects_the_scope(scope):
    assert _compose(f"loss={scope}").loss.name == scope


def test_llava7b_schedule_values():
    cfg = _compose("loss=lit", "model=llava7b")
    t = cfg.train
    assert cfg.model.pretrained.endswith("llava7b_stage1/checkpoint") and cfg.schedule.stage == "sft"
    assert cfg.deepspeed.enabled and cfg.deepspeed.config.zero_optimization.stage == 3
    assert t.bf16 and t.learning_rate == 2e-5 and t.num_train_epochs == 1 and t.lr_scheduler_type == "cosine"
    assert t.warmup_steps == 0.03 and t.gradient_checkpointing and cfg.data.max_length == 2048
    assert t.per_device_train_batch_size * 8 == cfg.schedule.global_batch_size == 128  # accumulation 1 on 8 GPUs
    assert t.save_strategy == "steps" and t.save_steps <= 500 and t.save_total_limit >= 1  # resumable after preemption
    assert cfg.model.freeze.vision and not cfg.model.freeze.lm and cfg.loss.name == "lit"


def test_cli_cfg_job_prints_the_schedule():
    out = subprocess.run(
        [sys.executable, "train.py", "loss=lit", "model=llava7b", "--cfg", "job"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for needle in ("llava7b_stage1/checkpoint", "stage: 3", "learning_rate: 2.0e-05", "bf16: true", "max_length: 2048"):
        assert needle in out


def test_unknown_option_names_it():
    with pytest.raises(ConfigCompositionException, match="loss"):
        _compose("loss=answer_only")


@pytest.mark.parametrize("group", sorted(p.stem for p in (CONF / "eval").glob("*.yaml") if p.stem != "default"))
def test_every_eval_group_composes_and_names_known_tasks(group):
    from dataclasses import fields

    from lit.eval.evaluate import task_index
    from lit.eval.spec import EvalSpec

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("eval", overrides=[f"eval={group}", "ckpt=x"])
    e = OmegaConf.to_container(cfg.eval, resolve=True)
    assert e["tasks"] or e["builtin_tasks"]
    assert set(e["tasks"]) <= set(task_index())
    from lit.eval.tasks.scoring import YES_NO_RULES

    assert e["yes_no_rule"] in YES_NO_RULES
    spec = EvalSpec.from_config(cfg.eval)
    assert {f.name for f in fields(EvalSpec)} <= set(e)  # every setting comes from the group, none from a default
    assert list(spec.tasks) == e["tasks"] and spec.device == e["device"] and spec.batch_size == e["batch_size"]


def test_the_eval_base_holds_every_setting_the_spec_reads():
    from dataclasses import fields

    from lit.eval.spec import EvalSpec

    base = OmegaConf.load(CONF / "eval" / "default.yaml")
    assert {f.name for f in fields(EvalSpec)} | {"name"} == set(base)


@pytest.mark.parametrize("model", ["llava7b", "llava13b", "tinyllava05b", "tinyllava3b"])
def test_stage1_configs_compose_pretrained_parts_and_train_only_the_projector(model):
    cfg = _compose(f"model={model}_stage1", "loss=lit")
    assert cfg.schedule.stage == "pretrain" and cfg.model.chat_template == "plain" and cfg.model.compose.text
    assert cfg.model.freeze.vision and cfg.model.freeze.lm and not cfg.model.freeze.projector
    assert cfg.deepspeed.config.zero_optimization.stage == 2 and cfg.train.learning_rate == 1e-3
    assert cfg.data.name == "llava558k"
    sft = _compose(f"model={model}", "loss=lit")
    assert sft.schedule.stage == "sft" and sft.model.pretrained.endswith(f"{model}_stage1/checkpoint")
    assert sft.train.learning_rate == 2e-5 and sft.schedule.global_batch_size == 128
