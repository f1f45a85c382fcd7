"""Meta-prompts: versioned files in ``instraug/prompts/``, each rendered as a chat (system: the prompt, user: the
seed with its placeholders protected).

Two sets:

- the official ones (``official_*.json``), the exact system messages of declare-lab/InstrAug's
  ``MultiInstruct/llama/my_chat_completion.py`` (``Generator.generate``): ``official_rephrase`` is its plain
  "Rephrase the input sentence. "; the five strategies (``official_synonyms``, ``_reorder``, ``_simplify``,
  ``_concise``, ``_active_voice``) are the first five lines of its ``gen_instr.txt`` turned into a system
  message by ``Generator.construct_prompt`` (`` for the input text`` inserted before the first colon; the
  line break the file's line ends with is kept). Each file restates its text and names its source; the text is
  sent as it is, whitespace included. Llama-2-chat answers these with a lead-in line, a blank line and the
  rewrite, the reply shape the official one-line parser (``parse.official_line``) reads.
- the project's own wording (``*.txt``): *direct* prompts asking for one rewrite by one strategy (the five
  strategies plus a plain rephrase) and ending "Reply with the rewritten instruction only", and a
  *bootstrapped* prompt asking for several rewrites at once (InstrAug's Framework figure). Surrounding
  whitespace is stripped. Their replies are read with ``reply_lines=first`` or ``all`` (``parse.candidates``).

``OFFICIAL_MIX`` (the default): per seed the official ``Generator.generate`` samples, for each of the five
strategies, one reply to the plain rephrase prompt and one to the strategy: 10 replies, 5 of them to the
rephrase prompt. ``OWN_MIX`` is the same mix in the project's wording. The official code has a "keep the braces"
hint commented out; ``hint=True`` adds ours (``KEEP_PLACEHOLDERS``). Every generated record stores the prompt
file's name and SHA-256, so a changed prompt never mixes with old cache entries.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

PROMPTS_DIR = Path(__file__).with_name("prompts")
STRATEGIES = ("synonyms", "reorder", "simplify", "concise", "active_voice")  # gen_instr.txt lines 1-5, in order
DIRECT = ("rephrase", *STRATEGIES)
BOOTSTRAP = ("bootstrap",)
OFFICIAL = tuple(f"official_{name}" for name in DIRECT)
OFFICIAL_MIX = {"official_rephrase": 5, **{f"official_{name}": 1 for name in STRATEGIES}}
OWN_MIX = {"rephrase": 5, **{name: 1 for name in STRATEGIES}}
KEEP_PLACEHOLDERS = 'Keep every placeholder written in braces, such as {A}, exactly as it is.'


def strategy_system_prompt(line: str) -> str:
    """A ``gen_instr.txt`` line as the official ``Generator.construct_prompt`` makes it a system message: the text
    before the first colon gets `` for the input text`` appended (at the end if there is no colon)."""
    head, colon, rest = line.partition(":")
    return f"{head} for the input text{colon}{rest}"


@dataclass(frozen=True)
class MetaPrompt:
    name: str
    text: str  # the system message (verbatim prompts: exactly as sent)
    sha256: str
    verbatim: bool = False  # the official prompts: sent as they are, whitespace included

    def chat(self, instruction: str, hint: bool = False) -> list[dict]:
        """The conversation sent to a chat model: the strategy as system message, the seed as user message."""
        system = self.text if self.verbatim else self.text.strip()
        if hint:
            system = f"{system.rstrip()} {KEEP_PLACEHOLDERS}"
        return [{"role": "system", "content": system}, {"role": "user", "content": instruction}]


def known() -> list[str]:
    return sorted(p.stem for p in PROMPTS_DIR.iterdir() if p.suffix in (".txt", ".json"))


def load(name: str) -> MetaPrompt:
    txt, js = PROMPTS_DIR / f"{name}.txt", PROMPTS_DIR / f"{name}.json"
    if js.exists():
        raw = js.read_text(encoding="utf-8")
        data = json.loads(raw)
        if "system" in data:
            text = data["system"]
        elif "gen_instr_line" in data:
            text = strategy_system_prompt(data["gen_instr_line"])
        else:
            raise ValueError(f"{js}: a prompt file needs a 'system' or a 'gen_instr_line' string")
        return MetaPrompt(name, text, hashlib.sha256(raw.encode()).hexdigest()[:16], verbatim=True)
    if txt.exists():
        raw = txt.read_text(encoding="utf-8")
        return MetaPrompt(name, raw, hashlib.sha256(raw.encode()).hexdigest()[:16])
    raise KeyError(f"unknown meta-prompt {name!r} (augmentation.meta_prompts); known: {', '.join(known())}")


def mix(meta_prompts, samples: int = 1) -> dict[str, int]:
    """A prompt mix (name -> replies per seed and temperature) from a mapping, or a list sampled ``samples``
    times each."""
    if isinstance(meta_prompts, dict) or hasattr(meta_prompts, "items"):
        out = {str(k): int(v) for k, v in meta_prompts.items()}
    else:
        out = {str(name): int(samples) for name in meta_prompts}
    if not out or any(v < 0 for v in out.values()):
        raise ValueError(f"a prompt mix needs at least one meta-prompt and non-negative counts, got {out}")
    return out
