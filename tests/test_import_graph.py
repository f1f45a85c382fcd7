"""scripts/import_graph.py: it sees top-level, function-local and relative imports, and reports a cycle, an import
into a higher layer and a module in no layer; the real tree has none of them."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load_script():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


import_graph = _load_script()


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return tmp_path


def test_function_local_import_closes_a_cycle(tmp_path):
    root = _tree(
        tmp_path,
        {
            "lit/__init__.py": "",
            "lit/a.py": "from lit.b import f\n",
            "lit/b.py": "def f():\n    from lit import a\n    return a\n",
            "instraug/__init__.py": "",
        },
    )
    graph = import_graph.import_graph(root)
    assert graph["lit.a"] == {"lit.b"} and graph["lit.b"] == {"lit.a"}
    assert import_graph.cycles(graph) == [["lit.a", "lit.b"]]


def test_relative_imports_and_crossings(tmp_path):
    root = _tree(
        tmp_path,
        {
            "lit/__init__.py": "",
            "lit/data/__init__.py": "from .dataset import load\n",
            "lit/data/dataset.py": "import json\nfrom ..records import X\n",
            "lit/records.py": "X = 1\n",
            "instraug/__init__.py": "",
            "instraug/build.py": "from lit.records import X\n",
        },
    )
    graph = import_graph.import_graph(root)
    assert graph["lit.data"] == {"lit.data.dataset"}
    assert graph["lit.data.dataset"] == {"lit.records"}
    assert import_graph.cycles(graph) == []
    assert import_graph.crossings(graph) == [("instraug.build", "lit.records")]


def test_three_module_cycle_is_one_component(tmp_path):
    root = _tree(
        tmp_path,
        {
            "lit/__init__.py": "",
            "lit/x.py": "import lit.y\n",
            "lit/y.py": "from lit import z\n",
            "lit/z.py": "from lit.x import *\n",
            "instraug/__init__.py": "",
        },
    )
    assert import_graph.cycles(import_graph.import_graph(root)) == [["lit.x", "lit.y", "lit.z"]]


def _run(root: Path | None = None) -> subprocess.CompletedProcess:
    args = [sys.executable, str(ROOT / "scripts" / "import_graph.py")] + (["--root", str(root)] if root else [])
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def test_an_import_into_a_higher_layer_fails(tmp_path):
    """mask sits below data: a function-local import of lit.data from lit.mask is reported, and the script exits 1."""
    root = _tree(
        tmp_path,
        {
            "lit/__init__.py": "",
            "lit/records.py": "",
            "lit/mask/__init__.py": "",
            "lit/mask/render.py": (
                "from lit.records import *\ndef f():\n    from lit.data.dataset import D\n    return D\n"
            ),
            "lit/data/__init__.py": "",
            "lit/data/dataset.py": "from lit.mask.render import f\nD = 1\n",
            "instraug/__init__.py": "",
            "instraug/build.py": "from lit.train.run import run\n",
            "lit/train/__init__.py": "",
            "lit/train/run.py": "import instraug.build\n",
        },
    )
    graph = import_graph.import_graph(root)
    assert import_graph.upward(graph) == [("instraug.build", "lit.train.run"), ("lit.mask.render", "lit.data.dataset")]
    done = _run(root)
    assert done.returncode == 1
    assert "upward import: lit.mask.render (mask) -> lit.data.dataset (data)" in done.stdout
    assert "upward import: instraug.build (instraug) -> lit.train.run (train)" in done.stdout


def test_downhill_imports_pass(tmp_path):
    root = _tree(
        tmp_path,
        {
            "lit/__init__.py": "",
            "lit/records.py": "",
            "lit/demo.py": "from lit.train.run import run\nfrom lit.report import tables\n",
            "lit/mask/__init__.py": "",
            "lit/mask/render.py": "from lit.records import *\n",
            "lit/data/__init__.py": "",
            "lit/data/dataset.py": "from lit.mask.render import f\nimport instraug.arm\n",
            "lit/report/__init__.py": "",
            "lit/report/tables.py": "from lit.recipes import RECIPES\n",
            "lit/recipes.py": "def f():\n    from lit.train.run import run\n",
            "lit/train/__init__.py": "",
            "lit/train/run.py": "from lit.data.dataset import D\nfrom . import loss\n",
            "lit/train/loss.py": "",
            "instraug/__init__.py": "",
            "instraug/arm.py": "from lit.records import load_records\n",
        },
    )
    graph = import_graph.import_graph(root)
    assert import_graph.upward(graph) == [] and import_graph.unplaced(graph) == []
    done = _run(root)
    assert done.returncode == 0, done.stdout
    assert done.stdout.startswith("clean: no cycle and no upward import among 15 modules")


def test_a_module_in_no_layer_fails(tmp_path):
    root = _tree(
        tmp_path,
        {
            "lit/__init__.py": "",
            "lit/helpers.py": "",
            "instraug/__init__.py": "",
        },
    )
    assert import_graph.unplaced(import_graph.import_graph(root)) == ["lit.helpers"]
    done = _run(root)
    assert done.returncode == 1 and "module in no layer: lit.helpers" in done.stdout


def test_the_real_tree_imports_only_downhill():
    """Every module is in a layer and every import, function-local ones included, stays in its layer or goes down."""
    graph = import_graph.import_graph(ROOT)
    assert len(graph) > 40  # the real packages were read, not an empty tree
    assert import_graph.unplaced(graph) == []
    assert import_graph.upward(graph) == []
    done = _run()
    assert done.returncode == 0, done.stdout
    assert done.stdout.startswith("clean:")


def test_the_layer_order_is_written_in_the_docstring():
    """The docstring's table names the layers in LAYERS' order, with the same modules."""
    doc = import_graph.__doc__.split("From the bottom up")[1]
    rows = re.findall(r"^    (\w+) +((?:[\w.*]+(?:, )?)+)", doc, re.M)
    assert [(name, tuple(mods.split(", "))) for name, mods in rows] == list(import_graph.LAYERS)


def test_the_project_has_no_import_cycle():
    """Every import between lit/ and instraug/ modules, function-local ones included, points one way."""
    graph = import_graph.import_graph(ROOT)
    assert len(graph) > 40  # the real packages were read, not an empty tree
    assert import_graph.cycles(graph) == []


def test_the_readme_lists_every_import_between_lit_and_instraug():
    """The code map's list of crossings is the whole list: a new one is a deliberate README edit."""
    readme = (ROOT / "README.md").read_text()
    listed = set(re.findall(r"^- `([\w.]+)` → `([\w.]+)`:", readme, re.M))
    assert listed  # the list is there
    assert set(import_graph.crossings(import_graph.import_graph(ROOT))) == listed
