"""A ``ChatTemplate`` as a Hugging Face Jinja chat template, saved with every checkpoint.

Tools that format prompts themselves (lmms-eval's ``llava_hf``, vLLM's chat API, ``apply_chat_template``)
then produce the text that ``lit.mask.render`` produced in training. Messages are ``{"role": "user" |
"assistant" | "system", "content": str | [{"type": "image"} | {"type": "text", "text": str}, ...]}``; an image
in a user turn goes to its front as ``<image>\\n`` (as ``lit.mask.render`` does), a ``system`` message replaces
the template's system prompt.
"""

from __future__ import annotations

import json

from lit.constants import IMAGE_MARKER
from lit.mask.chat_templates import ChatTemplate

_BODY = """{%- if message['content'] is string -%}
{%- set text = message['content'] -%}{%- set images = text.count('IMG') -%}
{%- else -%}
{%- set text = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') -%}
{%- set images = message['content'] | selectattr('type', 'equalto', 'image') | list | length
                 + text.count('IMG') -%}
{%- endif -%}""".replace("IMG", IMAGE_MARKER)


def _literal(text: str) -> str:
    return "{{ " + json.dumps(text) + " }}" if text else ""


def _pieces(pieces, content: str) -> str:
    out = []
    for text, kind in pieces:
        if kind == "content":
            out.append(content)
        elif text == "{system}":
            out.append("{{ system_prompt }}")
        else:
            out.append(_literal(text))
    return "".join(out)


def _user_pieces(template: ChatTemplate, user_body: str) -> str:
    """The user turn; with ``user_text``, the header chosen by whether the turn opens with an image, as ``render``
    chooses it (an image-first template puts a turn's image at its front)."""
    if not template.user_text:
        return _pieces(template.user, user_body)
    opens = (
        "images" if template.image_first or template.image_only else "text.startswith(" + json.dumps(IMAGE_MARKER) + ")"
    )
    return (
        "{%- if "
        + opens
        + " -%}"
        + _pieces(template.user, user_body)
        + "{%- else -%}"
        + _pieces(template.user_text, user_body)
        + "{%- endif -%}"
    )


def to_jinja(template: ChatTemplate) -> str:
    """The Jinja source that renders a conversation exactly as ``lit.mask.render.render`` does."""
    marker = json.dumps(IMAGE_MARKER)
    image = template.image_text or template.image_token  # what training renders for an image
    if template.image_only:  # stage-1 plain: the human turn is the image alone
        user_body = "{% if images %}" + _literal(image) + "{% endif %}"
    elif template.image_first:
        rest = "text.replace(" + marker + ", '') | trim"  # an image-only turn is the marker alone, no separator
        user_body = (
            "{% if images %}{% set rest = "
            + rest
            + " %}"
            + _literal(image)
            + "{% if rest %}"
            + _literal(template.image_sep)
            + "{{ rest }}{% endif %}"
            "{% else %}{{ text }}{% endif %}"
        )
    else:
        user_body = "{{ text }}"
    system = ""
    if template.system_prompt:
        system = (
            "{%- set system_prompt = messages[0]['content'] if messages and messages[0]['role'] == 'system' "
            "else " + json.dumps(template.system_prompt) + " -%}" + _pieces(template.system, "")
        )
    return (
        system
        + "{%- for message in messages -%}"
        + "{%- if message['role'] == 'user' -%}"
        + _BODY
        + _user_pieces(template, user_body)
        + "{%- elif message['role'] == 'assistant' -%}"
        + _BODY
        + _pieces(template.assistant, "{{ text }}")
        + "{%- endif -%}{%- endfor -%}"
        + "{%- if add_generation_prompt -%}"
        + _pieces(template.generation_prompt, "")
        + "{%- endif -%}"
    )


def chat_template_of(name: str, processor, model_config) -> ChatTemplate:
    """The ``ChatTemplate`` called ``name``, or for ``auto`` the one derived from the checkpoint's own Jinja template
    (training saves ``to_jinja`` of the template it trained with, so ``auto`` reads that back)."""
    from lit.mask.chat_templates import get_template
    from lit.mask.jinja_template import template_of

    return template_of(processor, model_config) if name == "auto" else get_template(name)
