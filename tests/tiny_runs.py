"""The tiny CPU training run the tests share: its Hydra overrides and a composed config (test helper)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
TINY = [
    "experiment=demo_lit",
    "train.logging_steps=1",
    "train.per_device_train_batch_size=4",
    "train.disable_tqdm=true",
    "model.text.hidden_size=32",
    "model.vision.hidden_size=32",
    "loss.template_sentences.min_share=0.3",
    "data.generate=false",
]


def tiny_cfg(demo_data: Path, out: Path, *extra: str):
    """``train.py``'s config for the tiny model on ``demo_data``, writing to ``out`` (its tokenizer too)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[*TINY, f"data.root={demo_data}", f"paths.data_dir={out}", *extra])
    with open_dict(cfg):
        cfg.output_dir = str(out)
    return cfg


def model_config(name: str):
    """``conf/model/<name>.yaml`` over its ``defaults`` (other model configs, as Hydra composes the group), without
    the ``defaults`` key."""
    from omegaconf import OmegaConf

    own = OmegaConf.load(CONF / "model" / f"{name}.yaml")
    bases = [d for d in own.pop("defaults", []) if d != "_self_"]
    return OmegaConf.merge(*(model_config(b) for b in bases), own)


def tiny_model(config: str, tokenizer, template: str | None = None, **overrides):
    """A model with random weights and its processor from ``conf/model/<config>.yaml`` (over ``tiny.yaml``, its
    default), both towers 32 wide (then ``overrides``), the tokenizer prepared for ``template`` (default: the
    config's chat template): ``(model in eval mode, processor, cfg)``."""
    from lit.mask.chat_templates import get_template
    from lit.mask.tokenizer import prepare_tokenizer
    from lit.model.loading import compose_tiny

    cfg = model_config(config)
    cfg.text.hidden_size = cfg.vision.hidden_size = 32
    cfg.merge_with(overrides)
    prepare_tokenizer(tokenizer, get_template(template or cfg.chat_template))
    model, processor = compose_tiny(cfg, tokenizer)
    return model.eval(), processor, cfg


def tiny_training_args(cfg, out: Path):
    """``TrainingArguments`` built from ``cfg``'s groups exactly as ``lit.train.run.run`` passes them."""
    from lit.train.args import training_args

    return training_args(
        cfg.train,
        out,
        schedule=cfg.schedule,
        deepspeed=cfg.deepspeed,
        logger=cfg.logger,
        run_name=cfg.run_name,
        seed=cfg.seed,
    )


def free_port() -> str:
    """A TCP port free on this machine now (for MASTER_PORT)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def one_process_ds_env() -> dict:
    """The environment of a one-process DeepSpeed run on CPU (gloo), as a launcher would set it."""
    return {
        "DS_ACCELERATOR": "cpu",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": free_port(),
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
    }


def train_auto_and_score(given: Path, tmp_path: Path, demo_data: Path, *overrides: str):
    """The round trip every family's test makes: ``python train.py model=auto model.pretrained=<given> loss=lit``
    (plus ``overrides``) for 2 steps under ZeRO-3 on CPU on the demo data, the checkpoint reloaded through
    ``load_pretrained``, scored by lmms-eval (``chat_template=auto``: the template training saved) and run through
    VC, with the checks they share. Returns the data audit's tokens by kind, the reloaded model and processor."""
    import json
    import os
    import subprocess
    import sys

    import numpy as np

    from lit.eval.evaluate import evaluate
    from lit.eval.spec import EvalSpec
    from lit.eval.vc import analyse
    from lit.model.loading import load_pretrained

    records = json.loads((demo_data / "train.json").read_text())
    env = {**os.environ, "WANDB_MODE": "disabled", **one_process_ds_env()}
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "train.py", "model=auto", f"model.pretrained={given}", *overrides, "loss=lit"]
    cmd += ["train.max_steps=2", "logger=none", "deepspeed=zero3", "+train.ddp_backend=gloo"]
    cmd += ["train.per_device_train_batch_size=4", f"data.root={demo_data}", "data.generate=false"]
    cmd += [f"paths.data_dir={tmp_path}", f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run_dir / "train_metrics.json").read_text())["zero_stage"] == 3
    audit = json.loads((run_dir / "data_audit.json").read_text())
    supervised, seen = audit["supervised_tokens_by_kind"], audit["tokens_by_kind"]
    assert supervised["response"] > 0 and set(supervised) <= {"instruction", "response", "eos"}  # loss=lit's kinds
    assert seen["image"] > 0 and seen["role"] > 0  # in the input, never supervised

    checkpoint = run_dir / "checkpoint"
    loaded, loaded_processor = load_pretrained(str(checkpoint))
    assert all(p.numel() > 0 for p in loaded.parameters())  # gathered from the ZeRO-3 partitions

    spec = EvalSpec(("demo_pope", "demo_vqa"), str(demo_data), limit=4)
    scores = evaluate(checkpoint, spec, tmp_path / "eval", chat_template="auto")
    assert set(scores) == {"demo_pope", "demo_vqa"} and "pope_accuracy" in scores["demo_pope"]

    vc = analyse(str(checkpoint), records[:2], str(demo_data), "auto", attention_share=True)
    assert vc["n"] >= 2 and np.isfinite(vc["vc_mean"]) and 0 < vc["attention_to_image_mean"] < 1
    return seen, loaded, loaded_processor


def train_on_two_processes(demo_data: Path, data_dir: Path, run_dir: Path, *overrides: str):
    """``train.py`` with the tiny model (``TINY``) on the demo data, on 2 CPU processes (torchrun, gloo); the
    finished process, its run having succeeded."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    cmd += ["train.py", *TINY, *overrides, f"data.root={demo_data}", f"paths.data_dir={data_dir}"]
    cmd += [f"hydra.run.dir={run_dir}", "+train.ddp_backend=gloo", "hydra/job_logging=default"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc
