"""The three parts of a vision-language model that ``model.freeze``, per-part learning rates and LoRA
address, named by markers in the parameter names: each family's ``parts`` (``lit.model.families``), merged.

LLaVA(-NeXT): vision_tower / multi_modal_projector (+ NeXT's image_newline) / language_model + lm_head;
InstructBLIP: vision_model / Q-Former, its query tokens and language_projection / language_model;
Qwen2-VL: visual / visual.merger / language_model + lm_head. The projector's markers are tried first, so
``visual.merger`` is the projector although it sits inside ``visual``.
"""

from __future__ import annotations

from lit.model.families import FAMILIES

PARTS = {
    part: tuple(dict.fromkeys(m for family in FAMILIES.values() for m in family.parts[part]))
    for part in ("projector", "vision", "lm")
}


def part_of(name: str) -> str:
    """Which part (vision/projector/lm) a parameter belongs to, from its name (peft-wrapped names too)."""
    for part, markers in PARTS.items():
        if any(f".{m}." in f".{name}." for m in markers):
            return part
    raise ValueError(
        f"parameter {name!r} is in none of {sorted(PARTS)}; add its module to its family's parts (lit/model/families/)"
    )
