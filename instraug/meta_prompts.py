"""Meta-prompts: versioned text files in ``instraug/prompts/``, each rendered as a chat.

Two kinds (InstrAug's Framework figure): *direct* prompts ask for one rewrite following one strategy
(the five rewriting strategies of the official ``gen_instr.txt`` — synonyms, reordering, simpler
language, fewer redundancies, active voice — plus a plain rephrase); *bootstrapped* prompts ask the LLM
for several rewrites at once. The wording here is the project's own. Every generated record stores the
prompt file's name and SHA-256, so a changed prompt never mixes with old cache entries.

``OFFICIAL_MIX``: per seed the official ``Generator.generate`` samples, for each of the five strategies, one
reply to the plain rephrase prompt and one to the strategy: 10 replies, 5 of them to the rephrase prompt.
The official code has a "keep the braces" hint commented out; ``hint=True`` adds ours (``KEEP_PLACEHOLDERS``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

PROMPTS_DIR = Path(__file__).with_name("prompts")
DIRECT = ("rephrase", "synonyms", "reorder", "simplify", "concise", "active_voice")
BOOTSTRAP = ("bootstrap",)
OFFICIAL_MIX = {"rephrase": 5, "synonyms": 1, "reorder": 1, "simplify": 1, "concise": 1, "active_voice": 1}
KEEP_PLACEHOLDERS = 'Keep every placeholder written in braces, such as {A}, exactly as it is.'


@dataclass(frozen=True)
class MetaPrompt:
    name: str
    text: str
    sha256: str

    def chat(self, instruction: str, hint: bool = False) -> list[dict]:
        """The conversation sent to a chat model: the strategy as system message, the seed as user message."""
        system = f"{self.text.strip()} {KEEP_PLACEHOLDERS}" if hint else self.text.strip()
        return [{"role": "system", "content": system}, {"role": "user", "content": instruction}]


def load(name: str) -> MetaPrompt:
    path = PROMPTS_DIR / f"{name}.txt"
    if not path.exists():
        known = sorted(p.stem for p in PROMPTS_DIR.glob("*.txt"))
        raise KeyError(f"unknown meta-prompt {name!r}; known: {', '.join(known)}")
    text = path.read_text(encoding="utf-8")
    return MetaPrompt(name, text, hashlib.sha256(text.encode()).hexdigest()[:16])


def mix(meta_prompts, samples: int = 1) -> dict[str, int]:
    """A prompt mix (name -> replies per seed and temperature) from a mapping, or a list sampled ``samples`` times each."""
    if isinstance(meta_prompts, dict) or hasattr(meta_prompts, "items"):
        out = {str(k): int(v) for k, v in meta_prompts.items()}
    else:
        out = {str(name): int(samples) for name in meta_prompts}
    if not out or any(v < 0 for v in out.values()):
        raise ValueError(f"a prompt mix needs at least one meta-prompt and non-negative counts, got {out}")
    return out
