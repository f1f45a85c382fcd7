"""`conf/local/default.yaml` (site values, git-ignored) applies over every entry point's config, whether or not
it starts with `# @package _global_` (written into a copy of conf/, never into conf/local/)."""

from __future__ import annotations

import shutil

import pytest
from hydra import compose, initialize_config_dir
from tiny_runs import CONF

BODY = "paths:\n  data_dir: /site/data\nseed: 7\n"


@pytest.mark.parametrize("header", ["", "# @package _global_\n"], ids=["no_header", "global_header"])
@pytest.mark.parametrize("config", ["train", "augment", "eval", "vc"])
def test_local_default_applies_with_and_without_the_header(tmp_path, header, config):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf, ignore=shutil.ignore_patterns("local"))
    (conf / "local").mkdir()
    (conf / "local" / "default.yaml").write_text(header + BODY)
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config, overrides=["experiment=demo_lit"] if config == "train" else [])
    assert cfg.paths.data_dir == "/site/data" and cfg.seed == 7  # over the defaults and an experiment
    assert "local" not in cfg  # nothing lands in a `local` node that no code reads


def test_without_a_local_file_nothing_changes(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf, ignore=shutil.ignore_patterns("local"))
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("train")
    assert cfg.seed == 0 and cfg.paths.data_dir.endswith("/data")
