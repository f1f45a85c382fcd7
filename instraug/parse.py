"""Turn an LLM's reply into candidate instructions.

Two parsers (``augmentation.reply_lines``):

- ``official`` (``official_line``): the official one-line parse (declare-lab/InstrAug
  ``MultiInstruct/llama/my_chat_completion.py`` lines 122-127): the reply is split at each ``\\n``; from three or
  more pieces the third (index 2, what follows Llama-2's "Sure! Here's ...:" and a blank line) is taken with the
  double quotes at its ends removed; a one-line reply is taken whole, as it is. A two-line reply has no third
  piece: the official code raised ``IndexError`` there and stopped; here it yields no candidate and is counted as
  an unparsable reply. Nothing else is cleaned (no whitespace strip, no bullet or preamble removal); the
  instruction is stripped of surrounding whitespace only when it is filled (``build.build``), as the official
  build does.
- ``first`` / ``all`` (``candidates``): the project's lenient parser for any reply shape, handling what chat
  models wrap around the answer: preambles ("Sure! Here's a rephrased version:"), quotes, numbered or bulleted
  lists (several candidates), trailing notes ("Note: ..."), blank lines. ``first`` keeps the first candidate,
  ``all`` every one.
"""

from __future__ import annotations

import re

_PREAMBLE = re.compile(r"^(sure|certainly|of course|here('s| is| are)|okay|ok)\b.*:\s*$", re.I)
_NOTE = re.compile(r"^(note|i hope|i've|i have|this (version|rephrased)|let me know)\b", re.I)
_BULLET = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+")
_QUOTES = "\"'“”‘’`"


def official_line(reply: str) -> str | None:
    """The instruction the official parser takes from ``reply``; None where it raised (a two-line reply)."""
    pieces = reply.split("\n")
    if len(pieces) == 1:
        return pieces[0]
    if len(pieces) == 2:
        return None
    return pieces[2].strip('"')


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
