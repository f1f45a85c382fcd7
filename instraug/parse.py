"""Turn an LLM's reply into candidate instructions.

Handles what chat models wrap around the answer: preambles ("Sure! Here's a rephrased version:"),
quotes, numbered or bulleted lists (several candidates), trailing notes ("Note: ..."), blank lines.
The official code kept one line per reply (index 2, after Llama-2's "Sure! Here's ...:" and a blank line;
it crashed on two-line replies); ``candidates(reply)[0]`` is that line, found without indexing, and
``generate.candidate_rows(reply_lines="all")`` keeps every candidate instead.
"""

from __future__ import annotations

import re

_PREAMBLE = re.compile(r"^(sure|certainly|of course|here('s| is| are)|okay|ok)\b.*:\s*$", re.I)
_NOTE = re.compile(r"^(note|i hope|i've|i have|this (version|rephrased)|let me know)\b", re.I)
_BULLET = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+")
_QUOTES = "\"'“”‘’`"


def candidates(reply: str) -> list[str]:
    """Candidate instructions in order of appearance, stripped of wrappers; may be empty."""
    out = []
    for raw in reply.strip().splitlines():
        line = raw.strip()
        if not line or _PREAMBLE.match(line) or _NOTE.match(line):
            continue
        line = _BULLET.sub("", line).strip().strip(_QUOTES).strip()
        if line.lower().startswith(("rephrased instruction:", "instruction:", "rewritten instruction:")):
            line = line.split(":", 1)[1].strip().strip(_QUOTES).strip()
        if line:
            out.append(line)
    return out
