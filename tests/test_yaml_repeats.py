"""scripts/yaml_repeats.py: blocks of 4+ YAML lines copied verbatim into another file are at most 10% of conf/."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "yaml_repeats.py"

SCHEDULE = """train:
  learning_rate: 2.0e-5
  num_train_epochs: 1
  per_device_train_batch_size: 16
  bf16: true
"""


def _run(conf: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--conf", str(conf), *args], capture_output=True, text=True, check=False
    )


def test_a_block_copied_into_another_file_is_flagged(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "a.yaml").write_text("name: a\n" + SCHEDULE)
    (tmp_path / "model" / "b.yaml").write_text("name: b\n" + SCHEDULE)
    (tmp_path / "c.yaml").write_text("seed: 0\nrun_name: x\n")
    proc = _run(tmp_path, "--max-share", "0.10")
    assert proc.returncode == 1, proc.stdout
    assert "71.4% of" in proc.stdout and "model/a.yaml: 5 of 6 lines" in proc.stdout  # 10 of 14 lines copied


def test_lines_in_no_shared_block_of_four_are_not_flagged(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\n" + SCHEDULE)
    other = SCHEDULE.replace("  num_train_epochs: 1\n", "  num_train_epochs: 3\n")  # no 4 lines in a row shared
    (tmp_path / "b.yaml").write_text("name: b\n" + other)
    proc = _run(tmp_path, "--max-share", "0.10")
    assert proc.returncode == 0 and "0.0% of" in proc.stdout, proc.stdout


def test_conf_repeats_at_most_a_tenth_of_its_lines():
    proc = _run(ROOT / "conf", "--max-share", "0.10")
    assert proc.returncode == 0, proc.stdout + proc.stderr
