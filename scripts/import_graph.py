"""List every import between the project's modules (top-level and function-local) and fail on a cycle.

    python scripts/import_graph.py            # prints cycles (exit 1) or "no cycle" (exit 0)
    python scripts/import_graph.py --edges    # also prints every edge, ``a -> b``, and the lit/instraug crossings

Imports are read with ``ast`` (nothing is imported or executed). ``from pkg import name`` counts as an import of
``pkg.name`` when that is a module of the project, else of ``pkg``. A package's ``__init__`` is the package itself.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("lit", "instraug")


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


def crossings(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Edges between the two top-level packages."""
    return sorted((a, b) for a, targets in graph.items() for b in targets if a.split(".")[0] != b.split(".")[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", action="store_true", help="print every edge and the package crossings")
    args = parser.parse_args(argv)
    graph = import_graph()
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
    if not found:
        print(f"no cycle among {len(graph)} modules")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
