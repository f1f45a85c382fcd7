"""Two processes on one node (torchrun, gloo, CPU): the global batch is kept by accumulation, the labels are
built once (by the node's main process, the other rank reads the cache) and the run files are written once."""

from __future__ import annotations

import json

import pytest
from tiny_runs import train_on_two_processes


@pytest.mark.integration
def test_two_processes_share_labels_and_write_run_files_once(tmp_path, demo_data):
    run_dir = tmp_path / "ddp"
    proc = train_on_two_processes(demo_data, tmp_path, run_dir, "train.max_steps=2", "schedule.global_batch_size=16")
    metrics = json.loads((run_dir / "train_metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["global_batch"] == 16 and metrics["steps"] == 2  # 4 x 2 x 2
    log = proc.stdout + proc.stderr
    assert log.count("labels cached in") == 1 and log.count("labels read from the cache") == 1
    assert log.count("run files written to") == 1
    (entry,) = (tmp_path / "cache" / "labels").glob("labels_*")
    assert not list(entry.parent.glob("*.tmp-*"))
    for name in ("config.yaml", "git_sha.txt", "data_audit.json", "log_history.json"):
        assert (run_dir / name).is_file()
    assert json.loads((run_dir / "data_audit.json").read_text())["n_used"] == 48
