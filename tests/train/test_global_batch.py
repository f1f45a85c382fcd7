"""The schedule's global batch holds on any number of processes: gradient accumulation is derived from it."""

from __future__ import annotations

import pytest

from lit.train.distributed import accumulation_steps


@pytest.mark.parametrize("world,steps", [(8, 1), (4, 2), (2, 4), (1, 8)])
def test_accumulation_keeps_the_llava_batch_of_128(world, steps):
    assert accumulation_steps(128, 16, world) == steps
    assert 16 * world * accumulation_steps(128, 16, world) == 128


def test_an_indivisible_global_batch_says_what_to_set():
    with pytest.raises(ValueError, match=r"per_device_train_batch_size=8.*global_batch_size"):
        accumulation_steps(128, 16, 16)  # 16 x 16 GPUs = 256 > 128: a smaller per-device batch
    with pytest.raises(ValueError, match="per_device_train_batch_size=14"):
        accumulation_steps(126, 16, 3)  # 14 x 3 x 3 = 126


def test_training_args_take_the_derived_accumulation(demo_data, tmp_path, monkeypatch):
    """Through train.py's own TrainingArguments (one process, per-device 4, global 32 -> 8 steps; the
    2-process run in test_distributed_run.py checks world size 2); a contradicting explicit accumulation is
    refused."""
    from tiny_runs import tiny_cfg, tiny_training_args

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    cfg = tiny_cfg(demo_data, tmp_path, "schedule.global_batch_size=32")
    args = tiny_training_args(cfg, tmp_path)
    assert args.gradient_accumulation_steps == 8 and args.per_device_train_batch_size == 4
    bad = tiny_cfg(demo_data, tmp_path, "schedule.global_batch_size=32", "train.gradient_accumulation_steps=2")
    with pytest.raises(ValueError, match="disagrees with schedule.global_batch_size"):
        tiny_training_args(bad, tmp_path)


@pytest.mark.parametrize("world,split", [(16, (8, 1)), (8, (16, 1)), (1, (16, 8))])
def test_the_llava_batch_of_128_on_16_8_and_1_processes(world, split):
    """The schedule's 16 per device on 16 GPUs would make 256: the per-device batch follows from the global one."""
    from lit.train.distributed import split_global_batch

    per_device, steps = split_global_batch(128, 16, world)
    assert (per_device, steps) == split and per_device * world * steps == 128


def test_a_global_batch_that_no_process_count_divides_is_refused():
    from lit.train.distributed import split_global_batch

    with pytest.raises(ValueError, match=r"schedule.global_batch_size=8 cannot be split evenly over 16 processes"):
        split_global_batch(8, 1, 16)  # InstructBLIP's global batch 8 on 2 nodes x 8 GPUs
    with pytest.raises(ValueError, match="per_device_train_batch_size=14"):
        split_global_batch(126, 16, 3)  # fits per device, but no whole accumulation: as before


def test_training_args_derive_the_per_device_batch_and_log_it(demo_data, tmp_path, monkeypatch, caplog):
    """Through train.py's own TrainingArguments on one process: per-device 4 over a global batch of 2."""
    import logging

    from tiny_runs import tiny_cfg, tiny_training_args

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    with caplog.at_level(logging.INFO, logger="lit.train.args"):
        args = tiny_training_args(tiny_cfg(demo_data, tmp_path, "schedule.global_batch_size=2"), tmp_path)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (2, 1)
    assert "train.per_device_train_batch_size=4 x 1 processes exceeds schedule.global_batch_size=2: 2" in caplog.text


def test_the_plan_uses_the_derived_split():
    from lit.train.plan import compose, plan

    sixteen = plan(compose(["model=llava7b"]), nodes=2, gpus_per_node=8)
    assert sixteen["accumulation"] == 1 and sixteen["batch"].startswith("8 per GPU x 16 GPUs x 1 accumulation = 128")
