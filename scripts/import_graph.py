"""List every import between the project's modules (top-level and function-local); fail on a cycle or an upward import.

    python scripts/import_graph.py            # prints cycles, upward imports and unplaced modules (exit 1), or "clean"
    python scripts/import_graph.py --edges    # also prints every edge, ``a -> b``, and the lit/instraug crossings

Imports are read with ``ast`` (nothing is imported or executed). ``from pkg import name`` counts as an import of
``pkg.name`` when that is a module of the project, else of ``pkg``. A package's ``__init__`` is the package itself.

Every module sits in one layer, and a module imports only from its own layer or the layers below it.
From the bottom up (``LAYERS``; ``x.*`` is ``x`` and everything under it):

    ground    lit.constants, lit.records, lit.files, lit.tracking, lit.chat_api, lit.paths
    instraug  instraug.*                      builds MIns+; reads the ground floor only
    mask      lit.mask.*                      chat templates, tokenizer preparation, render, scopes, mining
    data      lit.data.*                      datasets, image inputs, collate, sampler, label cache
    model     lit.model.*                     build, load, checkpoint, architectures
    interop   lit.collator                    the LIT mask as a collator for TRL's and Hugging Face's trainers
    eval      lit.eval.*                      evaluates a checkpoint through lit.model and lit.data
    train     lit.train.*                     training, its plan, and the smoke run (which evaluates)
    launch    lit.recipes, lit.slurm, lit.job_config, lit.preflight
                                              the paper-table job graph, its cluster jobs, each job's composed
                                              config and node shape, and the preflight before submission
    report    lit.report.*                    tables, plots and docs fragments from results and recipes
    top       lit, lit.demo                   the end-to-end demo

A module in no layer is an error too, so a new module is placed deliberately.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("lit", "instraug")
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (  # bottom first; see the module docstring
    ("ground", ("lit.constants", "lit.records", "lit.files", "lit.tracking", "lit.chat_api", "lit.paths")),
    ("instraug", ("instraug.*",)),
    ("mask", ("lit.mask.*",)),
    ("data", ("lit.data.*",)),
    ("model", ("lit.model.*",)),
    ("interop", ("lit.collator",)),
    ("eval", ("lit.eval.*",)),
    ("train", ("lit.train.*",)),
    ("launch", ("lit.recipes", "lit.slurm", "lit.job_config", "lit.preflight")),
    ("report", ("lit.report.*",)),
    ("top", ("lit", "lit.demo")),
)


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under the project's packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest project module that ``name`` is or lies inside."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _base_of_relative(module: str, is_package: bool, level: int) -> str:
    parts = module.split(".")
    if not is_package:
        parts = parts[:-1]
    return ".".join(parts[: len(parts) - (level - 1)] if level > 1 else parts)


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules that ``module`` imports anywhere in its file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                prefix = _base_of_relative(module, path.name == "__init__.py", node.level)
                base = f"{prefix}.{base}" if base else prefix
            names = [f"{base}.{alias.name}" for alias in node.names] or [base]
            names = [n if n in modules else base for n in names]
        else:
            continue
        for name in names:
            target = _resolve(name, modules)
            if target and target != module:
                targets.add(target)
    return targets


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = project_modules(root)
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def _is_parent_package(a: str, b: str) -> bool:
    """``lit.eval`` importing ``lit.eval.tasks`` (or back) through ``__init__`` re-exports is not a layering cycle."""
    return b.startswith(a + ".") or a.startswith(b + ".")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if _is_parent_package(v, w):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def layer_of(module: str, layers=LAYERS) -> int | None:
    """The index of ``module``'s layer (0 is the bottom), or None when no layer names it."""
    for i, (_, patterns) in enumerate(layers):
        for pattern in patterns:
            if pattern.endswith(".*"):
                package = pattern[:-2]
                if module == package or module.startswith(package + "."):
                    return i
            elif module == pattern:
                return i
    return None


def unplaced(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    """Modules that no layer names."""
    return sorted(m for m in graph if layer_of(m, layers) is None)


def upward(graph: dict[str, set[str]], layers=LAYERS) -> list[tuple[str, str]]:
    """Imports from a module into a higher layer than its own."""
    found = []
    for a, targets in graph.items():
        la = layer_of(a, layers)
        for b in targets:
            lb = layer_of(b, layers)
            if la is not None and lb is not None and lb > la:
                found.append((a, b))
    return sorted(found)


def crossings(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Edges between the two top-level packages."""
    return sorted((a, b) for a, targets in graph.items() for b in targets if a.split(".")[0] != b.split(".")[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", action="store_true", help="print every edge and the package crossings")
    parser.add_argument(
        "--root", type=Path, default=ROOT, help="the tree holding lit/ and instraug/ (default: this repository)"
    )
    args = parser.parse_args(argv)
    graph = import_graph(args.root)
    if args.edges:
        for a in sorted(graph):
            for b in sorted(graph[a]):
                print(f"{a} -> {b}")
        print("\ncrossings between packages:")
        for a, b in crossings(graph):
            print(f"  {a} -> {b}")
    found = cycles(graph)
    for component in found:
        print("import cycle: " + " <-> ".join(component))
    names = [name for name, _ in LAYERS]
    up = upward(graph)
    for a, b in up:
        print(f"upward import: {a} ({names[layer_of(a)]}) -> {b} ({names[layer_of(b)]})")
    lost = unplaced(graph)
    for module in lost:
        print(f"module in no layer: {module} (add it to LAYERS in scripts/import_graph.py)")
    if found or up or lost:
        return 1
    print(f"clean: no cycle and no upward import among {len(graph)} modules ({' < '.join(names)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
