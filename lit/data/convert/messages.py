"""TRL's conversational vision format -> a LLaVA record and its system prompt.

TRL's vision data sets (``trl.trainer.sft_trainer.DataCollatorForVisionLanguageModeling``, ``trl.data_utils.
prepare_multimodal_messages`` in TRL 1.16) hold ``{"messages": [{"role": "system"|"user"|"assistant", "content":
str | [{"type": "text", "text": ...}, {"type": "image"}, ...]}, ...], "images": [PIL.Image, ...]}`` (or ``"image"``:
one image). As TRL reads them: a string-content user message gets the images in front of its text when it is the
first user message; a structured one has an ``{"type": "image"}`` block where its image goes, filled from
``images`` in order (or carrying its own ``"image"``).

The record is LLaVA's: ``human``/``gpt`` turns, the image as the ``<image>`` marker in its turn and the image
itself (in memory) under ``"image"``. A system message is returned apart: it replaces the chat template's system
prompt for this record. Several images become a list under ``"image"``, one marker each where its block is
(``lit.records.record_images``).
"""

from __future__ import annotations

from lit.constants import IMAGE_MARKER
from lit.records import RecordError

ROLE = {"user": "human", "assistant": "gpt"}


def _text_and_images(content, rid, role: str) -> tuple[str, int, list]:
    """A message's text with ``<image>`` where its image blocks are, the number of blocks, and the images they
    carry themselves."""
    if isinstance(content, str):
        return content, 0, []
    if not isinstance(content, list):
        raise RecordError(rid, f"a {role} message's content must be a string or a list of blocks")
    parts, n, own = [], 0, []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append(block.get("text") or "")
        elif kind == "image":
            parts.append(IMAGE_MARKER)
            n += 1
            if block.get("image") is not None:
                own.append(block["image"])
        else:
            raise RecordError(rid, f"a {role} message has a content block of type {kind!r}; expected text or image")
    return "".join(parts), n, own


def record_of_messages(example: dict, rid) -> tuple[dict, str | None]:
    """The LLaVA record of one TRL conversational example, and its system prompt (None: the template's)."""
    messages = example.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RecordError(rid, "expected a non-empty 'messages' list")
    images = list(example.get("images") or ([example["image"]] if example.get("image") is not None else []))
    system, turns, placed, first_user = None, [], 0, True
    for k, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role == "system":
            if k:
                raise RecordError(rid, "a system message is only supported as the first message")
            system, _, _ = _text_and_images(message.get("content"), rid, role)
            continue
        if role not in ROLE:
            raise RecordError(rid, f"message {k} has role {role!r}; expected system, user or assistant")
        text, n, own = _text_and_images(message.get("content"), rid, role)
        if role == "user" and isinstance(message.get("content"), str) and first_user and images:
            text, n = IMAGE_MARKER * len(images) + "\n" + text, len(images)  # TRL: the images before the text
        if role == "user":
            first_user = False
        if n and role != "user":
            raise RecordError(rid, f"message {k}: an image in an {role} message; the image belongs to a user message")
        images += own
        placed += n
        turns.append({"from": ROLE[role], "value": text})
    if placed != len(images):
        raise RecordError(rid, f"{placed} image placeholders but {len(images)} images")
    record = {"conversations": turns}
    if "id" in example:
        record["id"] = example["id"]
    if images:
        record["image"] = images[0] if len(images) == 1 else images
    return record, system
