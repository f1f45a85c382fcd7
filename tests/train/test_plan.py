"""lit.train.plan on the published architectures (meta device, no hub): parameter counts as published, image
positions from the real processors, DeepSpeed's memory estimators, fit / no fit, the repro dry-run hook."""

from __future__ import annotations

import pytest

from lit.train.plan import compose, format_plan, main, plan


@pytest.mark.parametrize(
    "model,published",
    [
        ("llava7b", 7.06e9),
        ("llava13b", 13.35e9),
        ("llava_next7b", 7.06e9),
        ("instructblip7b", 7.91e9),
        ("tinyllava05b", 0.92e9),
        ("tinyllava3b", 3.22e9),
    ],
)
def test_parameter_counts_match_the_published_models(model, published):
    p = plan(compose([f"model={model}"]))
    assert abs(p["params_total"] / published - 1) < 0.005
    assert 0 < p["params_trainable"] <= p["params_total"]  # NeXT trains its vision tower too


def test_image_positions_per_image():
    assert plan(compose(["model=llava7b"]))["image_positions"] == {"336x336": 576}
    assert plan(compose(["model=instructblip7b"]))["image_positions"] == {"224x224": 32}
    # SigLIP-so400m/14 at 384 px, no CLS token: 27 x 27 = 729, less the first, as TinyLLaVA Factory's
    # tinyllava/model/vision_tower/base.py (53f12c7) lines 51-52 drop it under its default 'patch' selection
    for tiny in ("tinyllava05b", "tinyllava3b"):
        assert plan(compose([f"model={tiny}"]))["image_positions"] == {"384x384": 728}
    next_positions = plan(compose(["model=llava_next7b"]))["image_positions"]
    assert max(next_positions.values()) == 2928 and min(next_positions.values()) > 576  # 2x2 tiles + base view


def test_memory_plan_follows_the_gpu_count_and_size():
    cfg = compose(["model=llava7b"])
    eight = plan(cfg, gpus_per_node=8, gpu_mem_gb=80)
    four = plan(cfg, gpus_per_node=4, gpu_mem_gb=80)
    assert eight["fits"] and eight["accumulation"] == 1 and four["accumulation"] == 2
    assert four["states_gib"] > eight["states_gib"]  # ZeRO-3 shards the states over the GPUs
    assert not plan(cfg, gpus_per_node=8, gpu_mem_gb=24)["fits"]
    sixteen = plan(cfg, nodes=2, gpus_per_node=8)  # 16 x 16 > 128: 8 per GPU, as training derives it
    assert sixteen["accumulation"] == 1 and sixteen["batch"].startswith("8 per GPU x 16 GPUs")
    assert sixteen["activations_gib"] < eight["activations_gib"]
    offload = plan(compose(["model=llava7b", "deepspeed=zero3_offload"]))
    assert offload["states_gib"] < eight["states_gib"]
    assert eight["gpu_hours_per_epoch"] == pytest.approx(eight["steps_per_epoch"] * eight["step_s"] * 8 / 3600)


def test_cli_prints_the_published_count(capsys):
    main(["model=llava13b", "gpus_per_node=8", "gpu_mem_gb=80"])
    out = capsys.readouterr().out
    assert "13.351B total (published 13.35B" in out and "fits" in out and "GPU-hours" in out


def test_repro_dry_run_prints_the_plan_of_each_training_job(tmp_path):
    import io

    from lit import recipes

    out = io.StringIO()
    recipes.run("l2t_t4", "dry", tmp_path, out=out)
    text = out.getvalue()
    assert text.count("plan: llava7b (llava-1.5-7b)") == 4 and "plan: llava7b_stage1" in text
    assert format_plan(plan(compose(["model=llava7b"]))).splitlines()[1] in text


def test_repro_dry_run_of_l2t_t1_plans_every_training_job(tmp_path):
    """TinyLLaVA-0.5B/3B (Qwen2-0.5B / Phi-2 + SigLIP) are planned like the LLaVA rows: no job lacks a plan."""
    import io

    from lit import recipes

    out = io.StringIO()
    jobs = recipes.run("l2t_t1", "dry", tmp_path, out=out)
    text = out.getvalue()
    train = [j for j in jobs if j.kind == "train"]
    assert len(train) == 15 and "no published architecture" not in text
    assert text.count("  plan: ") == len(train) and text.count("GPU-hours\n") >= len(train)
    for model, arch in (
        ("tinyllava05b", "tinyllava-qwen2-0.5b-siglip"),
        ("tinyllava3b", "tinyllava-phi-2-siglip-3.1b"),
    ):
        assert text.count(f"plan: {model} ({arch})") == 2 and text.count(f"plan: {model}_stage1 ({arch})") == 1
