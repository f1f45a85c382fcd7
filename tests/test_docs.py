"""The docs cannot drift from the code and the results.

- Generated fragments (`<!-- generated: NAME -->` … `<!-- /generated -->` in README.md, BENCHMARKS.md and
  docs/*.md) equal a fresh render from results/, benchmarks/ and conf/ (`make docs`, `lit.report.docs`).
- Every command in a fenced block with the info string `bash runnable` runs, in a cheap form: the Hydra entry
  points with `--cfg job --resolve` (a multirun once per sweep point), `make repro` with `DRY=1`, other
  `python -m` tools with `--help`, and a few cheap commands for real. A nonzero exit fails with the command and
  its stderr.
- The facts some commands and files state: the augmentation examples fit their backend, the lmms-eval commands
  score a checkpoint, the site profile shown is the committed example, the seed file is one file for all readers.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lit.report import docs

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]  # where runnable blocks may be
BIN = Path(sys.executable).parent
HYDRA_ENTRIES = {"train.py", "evaluate.py", "augment.py", "build_mins_plus.py", "vc.py"}
REAL_MODULES = {"lit.train.plan"}  # `python -m` tools cheap enough to run as written
REAL_SCRIPTS = {"scripts/import_graph.py"}
REAL_MAKE = {"plan"}  # make targets run as written (besides `repro`, which gets DRY=1)
FENCE = re.compile(r"^ *```([^\n]*)\n(.*?)^ *```", re.S | re.M)  # also fences indented in a list
PLACEHOLDER = re.compile(r"<([^<>\n]+)>")


# --- collecting the commands ------------------------------------------------------------------------------


def command_lines(path: Path, runnable: bool | None = None) -> list[tuple[str, str]]:
    """``(where, line)`` of every shell command in ``path``'s bash blocks (continuation lines joined, comment lines
    dropped); ``runnable`` True/False keeps only blocks marked / not marked ``bash runnable``."""
    text = path.read_text()
    out = []
    for match in FENCE.finditer(text):
        info = match.group(1).split()
        if not info or info[0] != "bash" or (runnable is not None and ("runnable" in info[1:]) != runnable):
            continue
        first = text[: match.start()].count("\n") + 2  # the block's first line
        lines = match.group(2).split("\n")
        i = 0
        while i < len(lines):
            number, line = first + i, lines[i]
            while line.endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line[:-1] + " " + lines[i].strip()
            i += 1
            if line.strip() and not line.strip().startswith("#"):
                out.append((f"{path.relative_to(ROOT)}:{number}", line.strip()))
    return out


def _commands(prefix: str) -> list[list[str]]:
    """Every documented shell command starting with ``prefix``, as arguments (comments dropped)."""
    return [
        shlex.split(line, comments=True)
        for path in DOC_FILES
        for _, line in command_lines(path)
        if line.startswith(prefix)
    ]


def _sweep(overrides: list[str]) -> list[list[str]]:
    """One override list per point of a Hydra multirun, as Hydra's basic sweeper splits them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return [point for batch in BasicSweeper.split_arguments(parsed, None) for point in batch]


def _make(tokens: list[str]) -> list[str]:
    """``make`` with this interpreter's environment, never rebuilding it (`make env` is not a test's business)."""
    return ["make", "-o", f"{BIN}/.installed", f"BIN={BIN}", *tokens[1:]]


def cheap_forms(line: str) -> list[tuple[list[str], dict[str, str]]]:
    """The argument lists (and environment assignments) that check ``line`` cheaply; placeholders such as
    ``<run>`` become plain words. Raises for a command with no known cheap form."""
    tokens = shlex.split(PLACEHOLDER.sub(lambda m: "_".join(m.group(1).split()), line), comments=True)
    env = {}
    while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", tokens[0]):
        key, value = tokens.pop(0).split("=", 1)
        env[key] = value
    head, second = (tokens + ["", ""])[:2]
    if head == "python" and second in HYDRA_ENTRIES:
        args = tokens[2:]
        check = ["--resolve"] if "--cfg" in args else ["--cfg", "job", "--resolve"]
        if "-m" in args or "--multirun" in args:
            points = _sweep([a for a in args if a not in ("-m", "--multirun")])
            return [(["python", second, *point, *check], env) for point in points]
        return [([*tokens, *check], env)]
    if head == "make" and second == "repro":
        return [(_make(tokens) + ([] if any(t.startswith("DRY=") for t in tokens) else ["DRY=1"]), env)]
    if head == "make" and second in REAL_MAKE:
        return [(_make(tokens), env)]
    if head == "python" and second == "-m" and len(tokens) > 2:
        real = tokens[2] in REAL_MODULES or (tokens[2] == "lit.recipes" and "--dry" in tokens)
        return [(tokens if real else [*tokens, "--help"], env)]
    if head == "python" and second in REAL_SCRIPTS:
        return [(tokens, env)]
    if head == "bash" and env.get("DRY_RUN"):
        return [(tokens, env)]
    raise ValueError(
        f"no cheap form for {line!r}: leave its block plain `bash`, or give tests/test_docs.py a cheap form for it"
    )


def runnable_cases() -> list:
    seen, cases = set(), []
    for path in DOC_FILES:
        for where, line in command_lines(path, runnable=True):
            try:
                forms = cheap_forms(line)
            except ValueError:
                continue  # reported by test_every_runnable_command_has_a_cheap_form
            for argv, env in forms:
                key = (tuple(argv), tuple(sorted(env.items())))
                if key not in seen:
                    seen.add(key)
                    cases.append(pytest.param(argv, env, line, id=f"{where} {shlex.join(argv)[:90]}"))
    return cases


def run_cheap(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    full_env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HYDRA_FULL_ERROR": "1",
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        **env,
    }
    return subprocess.run(argv, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=600)


# --- runnable commands ------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("argv, env, line", runnable_cases())
def test_runnable_command_runs(argv, env, line):
    proc = run_cheap(argv, env)
    assert proc.returncode == 0, (
        f"documented command: {line}\nran as: {shlex.join(argv)}\nexit {proc.returncode}; "
        f"stderr:\n{proc.stderr[-4000:]}"
    )


def test_every_runnable_command_has_a_cheap_form():
    lines = [(where, line) for path in DOC_FILES for where, line in command_lines(path, runnable=True)]
    assert len(lines) >= 20  # the blocks were found
    bad = []
    for where, line in lines:
        try:
            cheap_forms(line)
        except ValueError as err:
            bad.append(f"{where}: {err}")
    assert not bad, "\n".join(bad)


def test_every_hydra_command_in_the_readme_is_runnable():
    plain = [
        (where, line)
        for where, line in command_lines(ROOT / "README.md", runnable=False)
        if re.match(r"python (\S+\.py)\b", line) and line.split()[1] in HYDRA_ENTRIES
    ]
    assert not plain, f"README Hydra commands outside a `bash runnable` block: {plain}"
    assert any(line.startswith("python train.py") for _, line in command_lines(ROOT / "README.md", runnable=True))


def test_a_broken_command_fails():
    """The check can fail: a Hydra command with an option that does not exist exits nonzero."""
    ((argv, env),) = cheap_forms("python train.py loss=no_such_scope")
    assert argv[-3:] == ["--cfg", "job", "--resolve"]
    proc = run_cheap(argv, env)
    assert proc.returncode != 0 and "no_such_scope" in proc.stderr


def test_cheap_forms_of_a_sweep_and_a_make_target():
    points = cheap_forms("python train.py -m loss=vit,lit model=llava7b  # the ladder")
    assert [argv[2:4] for argv, _ in points] == [["loss=vit", "model=llava7b"], ["loss=lit", "model=llava7b"]]
    ((argv, _),) = cheap_forms("make repro TABLE=demo_t4 LOCAL=1")
    assert argv[-3:] == ["TABLE=demo_t4", "LOCAL=1", "DRY=1"]
    ((argv, _),) = cheap_forms("python evaluate.py ckpt=outputs/<run>/checkpoint eval=pope")
    assert argv[2] == "ckpt=outputs/run/checkpoint"
    with pytest.raises(ValueError, match="no cheap form"):
        cheap_forms("sbatch slurm/train.sbatch model=llava7b")


# --- generated fragments ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", docs.doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_generated_fragments_are_the_fresh_render(path):
    text = path.read_text()
    fresh = docs.render_text(text, ROOT, str(path.relative_to(ROOT)))
    assert fresh == text, f"{path.relative_to(ROOT)}: a generated fragment is stale; run `make docs`"


def test_the_docs_have_their_fragments():
    names = {n for p in docs.doc_files() for n in docs.OPEN.findall(p.read_text())}
    assert names == set(docs.RENDERERS), f"renderers without a fragment, or the reverse: {names ^ set(docs.RENDERERS)}"


def test_a_changed_result_changes_the_render(tmp_path):
    """Editing a result without `make docs` fails the render test: the README renders otherwise."""
    for rel in ("results", "conf", "benchmarks"):
        shutil.copytree(ROOT / rel, tmp_path / rel)
    metrics_file = tmp_path / "results" / "demo" / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    metrics["summary"]["metrics"]["pope_accuracy"]["arms"]["vit"]["mean"] = 0.123456
    metrics_file.write_text(json.dumps(metrics))
    readme = (ROOT / "README.md").read_text()
    assert docs.render_text(readme, ROOT) == readme
    changed = docs.render_text(readme, tmp_path)
    assert changed != readme and "| POPE-style accuracy | 600 | 0.123 ± " in changed


def test_render_refuses_unknown_and_unclosed_fragments():
    with pytest.raises(KeyError, match="no-such-table"):
        docs.render_text("<!-- generated: no-such-table -->\nx\n<!-- /generated -->\n")
    with pytest.raises(ValueError, match="without its"):
        docs.render_text("<!-- generated: demo-table -->\nx\n")


def test_committed_demo_recipe_table_is_the_results_store_render():
    """results/tables/demo_t4.md is what `make tables` renders from results/runs/ (so the docs' copy is too)."""
    from lit import recipes
    from lit.report import tables

    recipe = recipes.load("demo_t4")
    rows = tables.collect(recipe["table"], ROOT / "results" / "runs")
    md = tables.markdown(recipe["title"], [c["label"] for c in recipe["table"]["columns"]], rows, None, None)
    assert (ROOT / "results" / "tables" / "demo_t4.md").read_text() == md
    vc = json.loads((ROOT / "results" / "runs" / "demo_vit" / "lit_vc.json").read_text())["scores"]
    assert f"{vc['vc/mean']:.2f}" == tables._fmt(rows[0]["values"][-1])  # the VC column is the VC analysis's mean


# --- facts the documented commands and files state --------------------------------------------------------


def test_augmentation_examples_compose_with_their_backend():
    from instraug import backends

    classes = {
        "openai": backends.OpenAIBackend,
        "vllm": backends.VLLMBackend,
        "transformers": backends.TransformersBackend,
    }
    commands = _commands("python augment.py")
    assert len(commands) >= 3
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for cmd in commands:
            cfg = compose("augment", overrides=cmd[2:])
            backend = cfg.augmentation.backend
            args = OmegaConf.to_container(backend.args)
            inspect.signature(classes[backend.kind]).bind(**args)  # TypeError if the args do not fit the class
            assert OmegaConf.select(cfg, "augmentation.cache_dir")  # interpolations over the args resolve


@pytest.mark.integration
def test_lmms_eval_command_scores_a_checkpoint(tmp_path, demo_data, trained):
    """docs/evaluation.md's two commands, run as written (paths filled in, two samples)."""
    _, run_dir, _ = trained
    fill = {
        "data/demo": str(demo_data),
        "outputs/lmms": str(tmp_path / "lmms"),
        "outputs/<run>/checkpoint": str(run_dir / "checkpoint"),
    }

    def filled(cmd):
        return [next((a.replace(k, v) for k, v in fill.items() if k in a), a) for a in cmd]

    (prepare,) = _commands("python -m lit.eval.evaluate tasks")
    (lmms,) = _commands("lmms-eval ")
    subprocess.run([sys.executable, *filled(prepare)[1:]], cwd=ROOT, check=True, capture_output=True)
    cli = str(Path(sys.executable).with_name("lmms-eval"))
    proc = subprocess.run(
        [cli, *filled(lmms)[1:], "--limit", "2", "--output_path", str(tmp_path / "res")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
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


def test_site_profile_shown_is_the_committed_example():
    import yaml

    cluster = (ROOT / "docs" / "cluster.md").read_text()
    block = cluster.split("# conf/site/mycluster.yaml (from conf/site/example_cluster.yaml)")[1].split("```")[0]
    assert yaml.safe_load(block) == yaml.safe_load((ROOT / "conf" / "site" / "example_cluster.yaml").read_text())
    local = yaml.safe_load((ROOT / "conf" / "site" / "local_cpu.yaml").read_text())
    for key, value in local.items():  # the CPU profile beside it, as comments
        shown = f"[{', '.join(value)}]" if isinstance(value, list) else str(value)
        assert f"# {key}: {shown}" in block, key


def test_multiinstruct_seeds_live_in_one_file(tmp_path):
    """Augmentation, the MIns arms' pool and the MultiInstruct evaluation all read the one seed file docs/data.md
    names, and the lit_multiinstruct task reads the file its settings name (here the demo seeds)."""
    import importlib.util

    (seed_file,) = set(re.findall(r"the seeds: `\$LIT_DATA_DIR/(\S+)`", (ROOT / "docs" / "data.md").read_text()))
    expected = f"/data/{seed_file}"
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        paths = {
            compose("augment", ["paths.data_dir=/data"]).augmentation.seeds,
            compose("train", ["experiment=instraug_llava7b_mins", "paths.data_dir=/data"]).data.mins_plus.pool,
            compose("eval", ["eval=multiinstruct", "paths.data_dir=/data"]).eval.multiinstruct_instructions,
        }
    assert paths == {expected}

    seeds = ROOT / "instraug" / "demo" / "seeds.yaml"
    task_dir = tmp_path / "task"
    task_dir.mkdir()
    shutil.copy(ROOT / "lit" / "eval" / "tasks" / "lit_multiinstruct" / "utils.py", task_dir / "utils.py")
    for named, found in ((seeds, True), (tmp_path / "missing.py", False)):
        (task_dir / "settings.json").write_text(
            json.dumps({"data_dir": str(tmp_path), "multiinstruct_instructions": str(named)})
        )
        spec = importlib.util.spec_from_file_location(f"mi_utils_{found}", task_dir / "utils.py")
        utils = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(utils)
        if found:
            assert set(utils._instructions()) == set(__import__("yaml").safe_load(seeds.read_text()))
        else:
            with pytest.raises(FileNotFoundError, match="eval.multiinstruct_instructions: .*missing.py"):
                utils._instructions()
