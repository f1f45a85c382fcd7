"""The three parts of a vision-language model that ``model.freeze``, per-part learning rates and LoRA
address, named by markers in the parameter names.

LLaVA(-NeXT): vision_tower / multi_modal_projector (+ NeXT's image_newline) / language_model + lm_head;
InstructBLIP: vision_model / Q-Former, its query tokens and language_projection / language_model.
"""

from __future__ import annotations

PARTS = {
    "projector": ("multi_modal_projector", "image_newline", "qformer", "query_tokens", "language_projection"),
    "vision": ("vision_tower", "vision_model"),
    "lm": ("language_model", "lm_head"),
}


def part_of(name: str) -> str:
    """Which part (vision/projector/lm) a parameter belongs to, from its name (peft-wrapped names too)."""
    for part, markers in PARTS.items():
        if any(f"{m}." in f"{name}." for m in markers):
            return part
    raise ValueError(f"parameter {name!r} is in none of {sorted(PARTS)}; add its module to lit.model.parts.PARTS")
