"""Meta-prompts: versioned text files in ``instraug/prompts/``, each rendered as a chat.

Two kinds (InstrAug's Framework figure): *direct* prompts ask for one rewrite following one strategy
(the five rewriting strategies of the official ``gen_instr.txt`` — synonyms, reordering, simpler
language, fewer redundancies, active voice — plus a plain rephrase); *bootstrapped* prompts ask the LLM
for several rewrites at once. The wording here is the project's own. Every generated record stores the
prompt file's name and SHA-256, so a changed prompt never mixes with old cache entries.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

PROMPTS_DIR = Path(__file__).with_name("prompts")
DIRECT = ("rephrase", "synonyms", "reorder", "simplify", "concise", "active_voice")
BOOTSTRAP = ("bootstrap",)
KEEP_PLACEHOLDERS = 'Keep every placeholder written in braces, such as {A}, exactly as it is.'


@dataclass(frozen=True)
class MetaPrompt:
    name: str
    text: str
    sha256: str

    def chat(self, instruction: str) -> list[dict]:
        """The conversation sent to a chat model: the strategy as system message, the seed as user message."""
        return [{"role": "system", "content": f"{self.text.strip()} {KEEP_PLACEHOLDERS}"},
                {"role": "user", "content": instruction}]


def load(name: str) -> MetaPrompt:
    path = PROMPTS_DIR / f"{name}.txt"
    if not path.exists():
        known = sorted(p.stem for p in PROMPTS_DIR.glob("*.txt"))
        raise KeyError(f"unknown meta-prompt {name!r}; known: {', '.join(known)}")
    text = path.read_text(encoding="utf-8")
    return MetaPrompt(name, text, hashlib.sha256(text.encode()).hexdigest()[:16])
