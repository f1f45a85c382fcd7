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
