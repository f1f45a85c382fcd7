"""How much of ``conf/`` is copied: the share of YAML lines that sit in a block of ``--min-lines`` (4) or more
consecutive lines found verbatim in another config file.

A line counts once however many copies it has. Lines are compared with trailing whitespace removed; a block
made only of blank lines does not count. ``python scripts/yaml_repeats.py [--max-share 0.10]`` prints the share
overall and per group, the worst files, and exits 1 when the overall share is above ``--max-share``.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def read_lines(conf: Path) -> dict[str, list[str]]:
    return {
        str(p.relative_to(conf)): [line.rstrip() for line in p.read_text().splitlines()]
        for p in sorted(conf.rglob("*.yaml"))
    }


def repeated_lines(files: dict[str, list[str]], min_lines: int = 4) -> dict[str, set[int]]:
    """File -> indices of its lines that belong to a ``min_lines`` block also present in another file."""
    where: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for name, lines in files.items():
        for i in range(len(lines) - min_lines + 1):
            block = tuple(lines[i : i + min_lines])
            if any(block):
                where[block].add(name)
    covered: dict[str, set[int]] = {name: set() for name in files}
    for name, lines in files.items():
        for i in range(len(lines) - min_lines + 1):
            block = tuple(lines[i : i + min_lines])
            if len(where.get(block, ())) > 1:
                covered[name].update(range(i, i + min_lines))
    return covered


def report(conf: Path, min_lines: int = 4) -> tuple[float, dict[str, tuple[int, int]], list[tuple[str, int, int]]]:
    files = read_lines(conf)
    covered = repeated_lines(files, min_lines)
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for name, lines in files.items():
        group = name.split("/")[0] if "/" in name else "."
        groups[group][0] += len(covered[name])
        groups[group][1] += len(lines)
    total = sum(len(v) for v in files.values())
    share = sum(len(v) for v in covered.values()) / total if total else 0.0
    worst = sorted(((n, len(covered[n]), len(files[n])) for n in files), key=lambda t: -t[1])
    return share, {g: tuple(v) for g, v in groups.items()}, worst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conf", type=Path, default=ROOT / "conf")
    p.add_argument("--min-lines", type=int, default=4)
    p.add_argument("--max-share", type=float, default=None, help="exit 1 above this share (e.g. 0.10)")
    args = p.parse_args(argv)
    share, groups, worst = report(args.conf, args.min_lines)
    print(f"repeated YAML lines (blocks of {args.min_lines}+): {share:.1%} of {args.conf}")
    for group, (rep, n) in sorted(groups.items()):
        print(f"  {group:<14} {rep:>5} / {n:<5} {rep / n if n else 0:.0%}")
    for name, rep, n in worst[:10]:
        if rep:
            print(f"  {name}: {rep} of {n} lines")
    if args.max_share is not None and share > args.max_share:
        print(f"above the limit of {args.max_share:.0%}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
