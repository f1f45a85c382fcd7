"""A paper model at its real widths, run end to end on CPU: ``make smoke MODEL=llava7b``.

The published architecture (``model.architecture``) with one LM layer and one vision layer and its real
vocabulary, built by ``train.py`` under the model's own schedule (ZeRO-3, freezing, chat template, max length,
gradient checkpointing; bf16 where the CPU has it): a real-size photo (640x480 JPEG) through the real image
processor and one record cut at the schedule's max length, 2 optimizer steps, the ZeRO-3 save, then the
checkpoint reloaded through lmms-eval's ``llava_hf`` (``lit_llava`` for InstructBLIP) to generate from the photo.
Writes ``<out>/smoke.json`` (steps, loss, peak host memory, wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def write_data(out: Path, max_length: int, seed: int = 0) -> Path:
    """One photo-sized image and records: a long one (cut at ``max_length`` by ``data.too_long=truncate``) and
    a short one; the tokenizer is trained on their words."""
    from PIL import Image

    rng = random.Random(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (640, 480))
    img.putdata([(x % 256, y % 256, (x * y) % 256) for y in range(480) for x in range(640)])
    img.save(out / "images" / "photo.jpg", quality=90)
    words = [f"w{i}" for i in range(400)] + ["the", "image", "shows", "a", "red", "circle", "answer", "what"]
    long_turns = []
    for i in range(2 * max(4, max_length // 60)):
        text = " ".join(rng.choice(words) for _ in range(60))
        long_turns.append({"from": "human" if i % 2 == 0 else "gpt", "value": ("<image>\n" if i == 0 else "") + text})
    records = [
        {"id": "long", "image": "photo.jpg", "conversations": long_turns},
        {
            "id": "short",
            "image": "photo.jpg",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat does the image show?"},
                {"from": "gpt", "value": "A colour gradient."},
            ],
        },
    ]
    path = out / "train.json"
    path.write_text(json.dumps(records))
    return path


def overrides(model: str, out: Path, data: Path) -> list[str]:
    """``train.py`` overrides: the schedule of ``model`` at its published widths with one layer per tower."""
    from lit.model.architecture import load_architecture
    from lit.train.plan import compose

    cfg = compose([f"model={model}"])
    if not cfg.model.get("architecture"):
        raise ValueError(f"model {model!r} names no published architecture (model.architecture)")
    arch = load_architecture(cfg.model.architecture)
    text = {**OmegaConf.to_container(arch.text), "num_hidden_layers": 1}
    vision = {**OmegaConf.to_container(arch.vision), "num_hidden_layers": 1}

    def flow(value) -> str:
        return json.dumps(value).replace('"', "")

    args = [
        f"model={model}",
        "model.pretrained=null",
        f"model.tokenizer={out / 'tokenizer'}",
        "model.train_tokenizer=true",
        "+model.vocab_size=1000",
        f"+model.text={flow(text)}",
        f"+model.vision={flow(vision)}",
        "data=llava665k",
        f"data.root={data.parent}",
        f"data.path={data}",
        f"data.image_root={data.parent / 'images'}",
        "data.too_long=truncate",
        "data.on_invalid=raise",
        "data.generate=false",
        "data.label_cache_dir=null",
        "logger=none",
        "deepspeed=zero3",
        "+train.ddp_backend=gloo",
        "train.use_cpu=true",
        "++train.tf32=false",
        f"train.bf16={cpu_has_bf16()}",
        "++train.fp16=false",  # TinyLLaVA-3B's schedule trains in fp16, which needs a GPU
        "train.gradient_checkpointing=true",
        "train.max_steps=2",
        "train.per_device_train_batch_size=1",
        "schedule.global_batch_size=1",
        "train.dataloader_num_workers=0",
        "train.save_strategy=no",
        "train.logging_steps=1",
        "train.disable_tqdm=true",
        "schedule.group_by_modality_length=false",
        f"paths.data_dir={out}",
        f"hydra.run.dir={out / 'run'}",
    ]
    if cfg.model.get("compose"):
        args.append("~model.compose")
    if arch.arch == "llava_next" and not cfg.model.get("image_grid_pinpoints"):
        args.append(f"+model.image_grid_pinpoints={flow(OmegaConf.to_container(arch.image_grid_pinpoints))}")
    if arch.arch == "instructblip":
        args += [
            f"+model.qformer={flow(OmegaConf.to_container(arch.qformer))}",
            f"+model.num_query_tokens={arch.num_query_tokens}",
        ]
    return args


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def reload_and_generate(ckpt: Path, arch: str, chat_template: str, dtype: str) -> int:
    """Generate 2 tokens from the photo with the saved checkpoint, through lmms-eval's model class."""
    from PIL import Image

    image = Image.open(ckpt.parent.parent / "data" / "images" / "photo.jpg").convert("RGB")
    if arch == "instructblip":
        from lit.eval.lmms_model import LitLlava

        lmm = LitLlava(pretrained=str(ckpt), chat_template=chat_template)
        inputs = lmm.prompt_inputs("What does the image show?", image)
        model, pad = lmm.model, lmm.tokenizer.pad_token_id
    else:
        from lmms_eval.models.simple.llava_hf import LlavaHf

        lmm = LlavaHf(pretrained=str(ckpt), device="cpu", device_map="cpu", dtype=dtype)
        text = lmm.tokenizer.apply_chat_template(
            [{"role": "user", "content": "<image>\nWhat does the image show?"}],
            tokenize=False,
            add_generation_prompt=True,
        )
        inputs = lmm._image_processor(images=[image], text=text, return_tensors="pt")
        model, pad = lmm.model, lmm.tokenizer.pad_token_id
    out = model.generate(**inputs, max_new_tokens=2, do_sample=False, pad_token_id=pad)
    return int(out.shape[1] - inputs["input_ids"].shape[1])


def smoke(model: str, out: Path) -> dict:
    from lit.train.plan import compose

    out.mkdir(parents=True, exist_ok=True)
    cfg = compose([f"model={model}"])
    data = write_data(out / "data", int(cfg.data.max_length))
    env = {
        **os.environ,
        "WANDB_MODE": "disabled",
        "DS_ACCELERATOR": "cpu",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": _port(),
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "PYTHONPATH": str(ROOT),
    }
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "rss_probe.py"),
        str(ROOT / "train.py"),
        *overrides(model, out, data),
    ]
    env["RSS_PROBE_DIR"] = str(out)
    print("+ " + " ".join(cmd[2:]), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, text=True, capture_output=True)
    wall = time.perf_counter() - start
    (out / "train.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        raise RuntimeError(f"train.py failed (log: {out / 'train.log'}):\n{proc.stderr[-3000:]}")
    run = out / "run"
    metrics = json.loads((run / "train_metrics.json").read_text())
    audit = json.loads((run / "data_audit.json").read_text())
    from lit.model.architecture import load_architecture

    arch = load_architecture(cfg.model.architecture)
    new_tokens = reload_and_generate(
        run / "checkpoint", arch.arch, cfg.model.chat_template, "bfloat16" if cpu_has_bf16() else "float32"
    )
    result = {
        "model": model,
        "architecture": arch.name,
        "steps": metrics["steps"],
        "train_loss": metrics["train_loss"],
        "zero_stage": metrics["zero_stage"],
        "bf16": cpu_has_bf16(),
        "max_length": int(cfg.data.max_length),
        "truncated_to_max_length": audit["n_truncated"],
        "generated_tokens": new_tokens,
        "peak_rss_gib": json.loads((out / "rank0.json").read_text())["exit"] / 1024,
        "train_wall_s": round(wall, 1),
    }
    (out / "smoke.json").write_text(json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m lit.train.smoke", description=__doc__.split("\n")[0])
    p.add_argument("model", help="a model config with model.architecture, e.g. llava7b, llava13b, instructblip7b")
    p.add_argument("--out", default=None, help="output folder (default outputs/smoke/<model>)")
    args = p.parse_args(argv)
    result = smoke(args.model, Path(args.out or ROOT / "outputs" / "smoke" / args.model))
    print(json.dumps(result, indent=1))
    if result["steps"] != 2 or result["generated_tokens"] < 1:
        raise SystemExit("smoke run incomplete")


if __name__ == "__main__":
    main()
