"""Model families as plug-ins: one module per Hugging Face vision-language class (``base.Family``).

Adding a family is one module here (its classes, parameter parts, image inputs, default chat template, and a
tiny builder for the tests), one entry in ``FAMILIES``, one ``conf/model/tiny_<family>.yaml`` and its tests.
"""

from __future__ import annotations

from lit.model.families import idefics3, instructblip, internvl, llava, llava_next, llava_onevision, qwen2_vl, qwen3_vl
from lit.model.families.base import Family

FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in (
        llava.FAMILY,
        llava_next.FAMILY,
        instructblip.FAMILY,
        qwen2_vl.FAMILY,
        qwen2_vl.FAMILY_2_5,
        qwen3_vl.FAMILY,
        llava_onevision.FAMILY,
        idefics3.FAMILY,
        idefics3.FAMILY_SMOLVLM,
        internvl.FAMILY,
    )
}


def family_of(model_type: str) -> Family:
    """The family of a ``model_type`` (``config.json``'s), or an error listing the supported ones."""
    try:
        return FAMILIES[model_type]
    except KeyError:
        raise ValueError(
            f"model_type {model_type!r} is not supported; supported: {', '.join(sorted(FAMILIES))} "
            "(a new family is one module in lit/model/families/, see docs/extending.md)"
        ) from None


def image_inputs_for(model_config, processor):
    """The ``ImageInputs`` of a model (by its config's ``model_type``) and its processor."""
    return family_of(model_config.model_type).image_inputs(model_config, processor)
