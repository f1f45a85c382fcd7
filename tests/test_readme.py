"""The README's commands and numbers: the augmentation examples compose and fit their backend, the recipe job
counts are the dry run's, and the demo table's numbers are the committed results'."""

from __future__ import annotations

import inspect
import re
import shlex
from io import StringIO
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lit import recipes

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _commands(prefix: str) -> list[list[str]]:
    """Every README shell command starting with ``prefix`` (continuation lines joined, comments dropped)."""
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [shlex.split(line, comments=True) for line in lines if line.startswith(prefix)]


def test_readme_augmentation_examples_compose_with_their_backend():
    from instraug import backends

    classes = {"openai": backends.OpenAIBackend, "vllm": backends.VLLMBackend,
               "transformers": backends.TransformersBackend}
    commands = _commands("python augment.py")
    assert len(commands) >= 3
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for cmd in commands:
            cfg = compose("augment", overrides=cmd[2:])
            backend = cfg.augmentation.backend
            args = OmegaConf.to_container(backend.args)
            inspect.signature(classes[backend.kind]).bind(**args)  # TypeError if the args do not fit the class
            assert OmegaConf.select(cfg, "augmentation.cache_dir")  # interpolations over the args resolve


def test_readme_job_counts_and_gpu_hours_are_the_dry_runs():
    rows = re.findall(r"^\| `(\w+)` \| [^|]+ \| (\d+) \| (\d+) \|$", README, flags=re.M)
    for name, count, hours in rows:
        out = StringIO()
        jobs = recipes.run(name, "dry", Path("/nonexistent"), out=out)
        assert (len(jobs), recipes.gpu_hours(jobs)) == (int(count), int(hours)), name
        assert f": {count} jobs (" in out.getvalue() and f"; {hours} GPU-hours requested" in out.getvalue()
    assert {name for name, _, _ in rows} == set(recipes.available()) - {"demo_t4"}


def test_readme_demo_numbers_are_the_committed_results():
    import json

    vc = {arm: json.loads((ROOT / "results" / "runs" / f"demo_{arm}" / "lit_vc.json").read_text())["scores"]
          for arm in ("vit", "lit")}
    table = (ROOT / "results" / "tables" / "demo_t4.md").read_text()
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:-1]] for r in table.splitlines()
            if r.startswith("| VIT") or r.startswith("| LIT")}
    said = README.split("The tiny recipe's output, as committed")[1].split("make demo")[0].replace("\n", " ")
    assert f"VQA accuracy is {rows['VIT'][2]} (VIT) against {rows['LIT'][2]} (LIT)" in said
    assert f"visual contribution is {rows['VIT'][4]} (VIT) against {rows['LIT'][4]} (LIT)" in said
    assert f"{vc['vit']['vc/mean']:.2f}" == rows["VIT"][4]


def test_readme_demo_table_is_the_committed_demo_result():
    """The README's `make demo` table (one row per metric, in the report's order) and its VIT per-seed line
    are results/demo/metrics.json's numbers."""
    import json

    summary = json.loads((ROOT / "results" / "demo" / "metrics.json").read_text())["summary"]["metrics"]
    section = README.split("### Result:")[1].split("###")[0]
    rows = [[c.strip() for c in r.split("|")[2:-1]] for r in section.splitlines() if r.startswith("| ")][1:]
    assert len(rows) == len(summary)

    def num(x: float, sign: str = "") -> str:  # the README's minus sign; the difference's mean shows a plus
        return f"{x:{sign}.3f}".replace("-", "−")

    for (vit, lit, diff), metric in zip(rows, summary.values()):
        arms = metric["arms"]
        assert vit == f"{arms['vit']['mean']:.3f} ± {arms['vit']['sd']:.3f}", (metric["label"], vit)
        assert lit == f"{arms['lit']['mean']:.3f} ± {arms['lit']['sd']:.3f}", (metric["label"], lit)
        lo, hi = arms["lit"]["diff"]["ci95"]
        assert diff == f"{num(arms['lit']['diff']['mean'], '+')} [{num(lo)}, {num(hi)}]", (metric["label"], diff)
    per_seed = " ".join(section.split("VIT per seed (0 / 1 / 2):")[1].split("So against")[0].split())
    for key, label in (("pope_accuracy", "POPE accuracy"), ("pope_yes_ratio", "yes-ratio"), ("vqa_accuracy", "colour VQA")):
        assert f"{label} {' / '.join(f'{v:.3f}' for v in summary[key]['arms']['vit']['values'])}" in per_seed, label


def test_readme_lmms_eval_command_scores_a_checkpoint(tmp_path, demo_data, trained):
    """The Evaluation section's two commands, run as written (paths filled in, two samples)."""
    import subprocess
    import sys

    _, run_dir, _ = trained
    fill = {"data/demo": str(demo_data), "outputs/lmms": str(tmp_path / "lmms"),
            "outputs/<run>/checkpoint": str(run_dir / "checkpoint")}

    def filled(cmd):
        return [next((a.replace(k, v) for k, v in fill.items() if k in a), a) for a in cmd]

    (prepare,) = _commands("python -m lit.eval.evaluate tasks")
    (lmms,) = _commands("lmms-eval ")
    subprocess.run([sys.executable, *filled(prepare)[1:]], cwd=ROOT, check=True, capture_output=True)
    cli = str(Path(sys.executable).with_name("lmms-eval"))
    proc = subprocess.run([cli, *filled(lmms)[1:], "--limit", "2", "--output_path", str(tmp_path / "res")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = list((tmp_path / "res").rglob("*results.json"))
    assert results and "demo_pope" in results[0].read_text()


def test_task_folders_for_lmms_eval_have_their_data_dir(tmp_path, demo_data):
    from lit.eval.evaluate import main

    main(["tasks", "demo_pope", "--data-dir", str(demo_data), "--out", str(tmp_path)])
    text = (tmp_path / "lmms_tasks" / "demo_pope" / "demo_pope.yaml").read_text()
    assert "__DATA_DIR__" not in text and str(demo_data) in text
    with pytest.raises(SystemExit, match="is missing"):
        main(["tasks", "demo_pope", "--data-dir", str(tmp_path / "nothing"), "--out", str(tmp_path)])


def _dataset_path(task_yaml: Path) -> str:
    """``dataset_path`` of an lmms-eval task YAML, following its ``include:`` (read as text: the YAML has tags)."""
    text = task_yaml.read_text()
    found = re.search(r"^dataset_path: *(\S+)", text, flags=re.M)
    if found:
        return found.group(1)
    return _dataset_path(task_yaml.parent / re.search(r"^include: *(\S+)", text, flags=re.M).group(1))


def test_builtin_task_configs_name_the_dataset_lmms_eval_loads():
    import lmms_eval

    tasks_dir = Path(lmms_eval.__file__).parent / "tasks"
    for conf in (ROOT / "conf" / "eval").glob("*.yaml"):
        cfg = OmegaConf.load(conf)
        for task in cfg.get("builtin_tasks") or []:
            (task_yaml,) = tasks_dir.rglob(f"{task}.yaml")
            dataset = _dataset_path(task_yaml)
            assert f"hf download {dataset} --repo-type dataset" in conf.read_text(), (conf.name, dataset)


def test_readme_site_profile_is_the_committed_example():
    import yaml

    block = README.split("# conf/site/mycluster.yaml (from conf/site/example_cluster.yaml)")[1].split("```")[0]
    assert yaml.safe_load(block) == yaml.safe_load((ROOT / "conf" / "site" / "example_cluster.yaml").read_text())
    local = yaml.safe_load((ROOT / "conf" / "site" / "local_cpu.yaml").read_text())
    for key, value in local.items():  # the CPU profile beside it, as comments
        shown = f"[{', '.join(value)}]" if isinstance(value, list) else str(value)
        assert f"# {key}: {shown}" in block, key


def test_environment_files_carry_the_pins():
    env = (ROOT / "environment.yml").read_text()
    assert "--extra-index-url https://download.pytorch.org/whl/cu128" in env and "-c constraints.txt" in env
    assert "flash-attn==" in env and "-e .[gpu]" in env
    assert "torch==" + re.search(r"^torch==(\S+)", (ROOT / "constraints.txt").read_text(), flags=re.M).group(1) in env
    vllm = (ROOT / "environment-vllm.yml").read_text()
    pinned = re.search(r'"vllm==([\d.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert f"vllm=={pinned}" in vllm


def test_multiinstruct_seeds_live_in_one_file(tmp_path):
    """Augmentation, the MIns arms' pool and the MultiInstruct evaluation all read the one seed file the README
    names, and the lit_multiinstruct task reads the file its settings name (here the demo seeds)."""
    import importlib.util
    import json
    import shutil

    (seed_file,) = set(re.findall(r"the seeds: `\$LIT_DATA_DIR/(\S+)`", README))
    expected = f"/data/{seed_file}"
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        paths = {compose("augment", ["paths.data_dir=/data"]).augmentation.seeds,
                 compose("train", ["experiment=instraug_llava7b_mins", "paths.data_dir=/data"]).data.mins_plus.pool,
                 compose("eval", ["eval=multiinstruct", "paths.data_dir=/data"]).eval.multiinstruct_instructions}
    assert paths == {expected}

    seeds = ROOT / "instraug" / "demo" / "seeds.yaml"
    task_dir = tmp_path / "task"
    task_dir.mkdir()
    shutil.copy(ROOT / "lit" / "eval" / "tasks" / "lit_multiinstruct" / "utils.py", task_dir / "utils.py")
    for named, found in ((seeds, True), (tmp_path / "missing.py", False)):
        (task_dir / "settings.json").write_text(json.dumps({"data_dir": str(tmp_path),
                                                            "multiinstruct_instructions": str(named)}))
        spec = importlib.util.spec_from_file_location(f"mi_utils_{found}", task_dir / "utils.py")
        utils = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(utils)
        if found:
            assert set(utils._instructions()) == set(__import__("yaml").safe_load(seeds.read_text()))
        else:
            with pytest.raises(FileNotFoundError, match="eval.multiinstruct_instructions: .*missing.py"):
                utils._instructions()
