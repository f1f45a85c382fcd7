"""Render a LLaVA conversation into typed spans, and tokenize it into ids with one kind per token.

The text the model sees is the concatenation of the spans, tokenized as LLaVA's ``tokenizer_image_token``
tokenizes a prompt: once per chunk between image markers, the image one position between them (training
and inference both call ``encode``, so they see the same ids); each token then takes the kind of the span
its characters come from, read off the fast tokenizer's offsets mapping of its chunk. Nothing is recounted:
any disagreement between spans and tokens raises a ``RecordError`` naming the record.

Choices the papers leave open (L2T, arXiv 2503.22215; SOURCES.md [A][B]), made here:
- every human turn of a multi-turn conversation is an instruction (not only the first);
- text-only records are rendered and masked like image records (their instructions are supervised
  under the LIT scopes);
- the ``<image>`` marker is moved to the front of its turn as ``<image>\\n`` (LLaVA's
  ``preprocess_multimodal``); the marker is one token, the ``\\n`` after it is format; a turn that is only
  the marker stays ``<image>`` (as LLaVA's strip leaves it);
- a conversation that starts with a gpt turn is an error (LLaVA drops that turn silently);
- a record with several images (``"image": [...]``) has one ``<image>`` marker per picture, in the human turns,
  in the images' order; a turn with several markers keeps them where they are (interleaved with its text, as
  LLaVA-NeXT's ``preprocess_multimodal`` moves a marker to the front only when its turn has one), each marker
  an image span and the whitespace beside it format.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lit.constants import IMAGE_MARKER, KIND_INDEX
from lit.mask.chat_templates import ChatTemplate
from lit.mask.mining import is_option, sentence_spans
from lit.records import RecordError, record_images

ROLES = ("human", "gpt")


@dataclass(frozen=True)
class Span:
    text: str
    kind: str


def _check_turns(rid: object, turns: list, n_images: int, open_ended: bool) -> None:
    if not turns:
        raise RecordError(rid, "empty 'conversations' list")
    markers = 0
    for k, turn in enumerate(turns):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise RecordError(rid, f"turn {k} must be an object with 'from' and 'value'")
        role, value = turn["from"], turn["value"]
        if role not in ROLES:
            raise RecordError(rid, f"turn {k} has unknown role {role!r}; expected 'human' or 'gpt'")
        if not isinstance(value, str) or not (value.replace(IMAGE_MARKER, "").strip() or IMAGE_MARKER in value):
            raise RecordError(rid, f"turn {k} ({role}) has an empty value")  # an image-only turn is not empty
        expected = ROLES[k % 2]
        if role != expected:
            if k == 0:
                raise RecordError(
                    rid,
                    "conversation starts with a gpt turn (LLaVA drops such a turn "
                    "silently; we do not): remove it or prepend the human turn it answers",
                )
            raise RecordError(rid, f"roles do not alternate: turn {k} is {role!r}, expected {expected!r}")
        if role == "gpt" and IMAGE_MARKER in value:
            raise RecordError(rid, f"turn {k}: {IMAGE_MARKER} marker in a gpt turn; the image belongs to a human turn")
        markers += value.count(IMAGE_MARKER)
    if turns[-1]["from"] != "gpt" and not open_ended:
        raise RecordError(rid, "conversation ends with a human turn that has no answer")
    if n_images == 1 and markers != 1:
        raise RecordError(rid, f"record has one image but {markers} {IMAGE_MARKER} markers; exactly one is needed")
    if n_images > 1 and markers != n_images:
        raise RecordError(
            rid,
            f"record has {n_images} images but {markers} {IMAGE_MARKER} markers; one marker per image is needed",
        )
    if not n_images and markers:
        raise RecordError(rid, f"{IMAGE_MARKER} marker but no 'image' field")


def _content_spans(text: str, template_sentences: frozenset[str]) -> list[Span]:
    """Split a user message into instruction and template-sentence spans (gaps are instruction); an answer
    option (``A. red``) stays instruction even if a hand-made template file lists it."""
    spans: list[Span] = []
    pos = 0
    for start, end in sentence_spans(text) if template_sentences else ():
        if text[start:end] in template_sentences and not is_option(text[start:end]):
            if start > pos:
                spans.append(Span(text[pos:start], "instruction"))
            spans.append(Span(text[start:end], "template"))
            pos = end
    if pos < len(text):
        spans.append(Span(text[pos:], "instruction"))
    return spans


def _user_body(text: str, chat_template: ChatTemplate, template_sentences: frozenset[str]) -> list[Span]:
    image = chat_template.image_text or chat_template.image_token  # the record marks it with IMAGE_MARKER
    if chat_template.image_only:
        return [Span(image, "image")] * text.count(IMAGE_MARKER)
    if IMAGE_MARKER not in text:
        return _content_spans(text, template_sentences)
    if text.count(IMAGE_MARKER) > 1:
        return _interleaved(text, image, template_sentences)
    if chat_template.image_first:
        rest = text.replace(IMAGE_MARKER, "").strip()
        if not rest:  # an image-only turn: the marker alone, no separator (LLaVA strips "<image>\n" to "<image>")
            return [Span(image, "image")]
        return [
            Span(image, "image"),
            Span(chat_template.image_sep, "format"),
            *_content_spans(rest, template_sentences),
        ]
    before, after = text.split(IMAGE_MARKER)
    return [
        *_content_spans(before, template_sentences),
        Span(image, "image"),
        *_content_spans(after, template_sentences),
    ]


def _interleaved(text: str, image: str, template_sentences: frozenset[str]) -> list[Span]:
    """A turn with several image markers, each where it is: the text between them is instruction (or template
    sentences), the whitespace right beside a marker format (``<image>\\n<image>\\nCompare them.``)."""
    spans: list[Span] = []
    pieces = text.split(IMAGE_MARKER)
    for k, piece in enumerate(pieces):
        lead = len(piece) - len(piece.lstrip()) if k else 0  # after a marker
        trail = len(piece) - len(piece.rstrip()) if k < len(pieces) - 1 else 0  # before a marker
        if lead + trail >= len(piece):  # only whitespace between two markers (or at an end)
            lead, trail = len(piece), 0
        spans += [Span(piece[:lead], "format")] if lead else []
        spans += _content_spans(piece[lead : len(piece) - trail], template_sentences)
        spans += [Span(piece[len(piece) - trail :], "format")] if trail else []
        if k < len(pieces) - 1:
            spans.append(Span(image, "image"))
    return [s for s in spans if s.text]


def _fill(pieces, body: list[Span] | None = None, system: str = "") -> list[Span]:
    out: list[Span] = []
    for text, kind in pieces:
        if kind == "content":
            out.extend(body or [])
        elif text == "{system}":
            out.append(Span(system, kind))
        else:
            out.append(Span(text, kind))
    return out


def render(
    record: dict,
    chat_template: ChatTemplate,
    *,
    template_sentences: frozenset[str] = frozenset(),
    record_id: object = None,
    add_generation_prompt: bool = False,
) -> list[Span]:
    """Spans of a record's conversation in ``chat_template``'s format.

    ``template_sentences`` are the sentences rendered as kind ``template`` instead of ``instruction``.
    With ``add_generation_prompt`` the conversation must end with a human turn, and the assistant's
    generation prompt is appended (inference).
    """
    rid = record.get("id") if record_id is None else record_id
    turns = record.get("conversations")
    _check_turns(rid, turns if isinstance(turns, list) else [], len(record_images(record)), add_generation_prompt)
    if add_generation_prompt and turns[-1]["from"] != "human":
        raise RecordError(rid, "a prompt for generation must end with a human turn")
    system = chat_template.system_prompt
    spans = _fill(chat_template.system, system=system) if system else []
    for turn in turns:
        if turn["from"] == "human":
            body = _user_body(turn["value"], chat_template, template_sentences)
            opens_with_image = next((s.kind for s in body if s.text), None) == "image"
            pieces = chat_template.user_text if chat_template.user_text and not opens_with_image else chat_template.user
            spans += _fill(pieces, body)
        else:
            spans += _fill(chat_template.assistant, [Span(turn["value"], "response")])
    if add_generation_prompt:
        spans += _fill(chat_template.generation_prompt)
    return [s for s in spans if s.text]


@dataclass
class Encoded:
    """Token ids of a rendered conversation and the span kind (``KIND_INDEX``) of every token."""

    input_ids: np.ndarray  # (T,) int64
    kinds: np.ndarray  # (T,) int8


def encode(
    spans: list[Span], tokenizer, *, record_id: object, image_token_id: int | None, eos_token: str | None = None
) -> Encoded:
    """Tokenize the rendered text as LLaVA's ``tokenizer_image_token`` does, and give each token the kind of its span.

    The text is split at the image span; each chunk is tokenized once on its own (so the text after the image
    starts a new SentencePiece word, whatever the tokenizer's ``legacy`` setting), the image is one position
    between the chunks, and where the tokenizer starts a chunk with BOS only the first chunk keeps it.
    Every token's kind is read off its chunk's offsets mapping.

    Raises ``RecordError`` if the image or an end-of-turn is not exactly one token, if a token's
    visible characters come from two spans of different kinds, or if text is left uncovered.
    """
    spans, images = _split_image_text(spans, tokenizer, image_token_id)
    text = "".join(s.text for s in spans)
    lengths = np.fromiter((len(s.text) for s in spans), dtype=np.int64, count=len(spans))
    span_start = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    span_kind = np.fromiter((KIND_INDEX[s.kind] for s in spans), dtype=np.int8, count=len(spans))
    marker_id = _image_id(tokenizer, spans[images[0]].text, record_id, image_token_id) if images else None
    ids, offsets = _tokenize_chunks(
        tokenizer, text, [(int(span_start[i]), int(span_start[i] + lengths[i])) for i in images], marker_id
    )
    starts_tok, ends_tok = offsets[:, 0], offsets[:, 1]

    has_text = ends_tok > starts_tok
    first = np.searchsorted(span_start, starts_tok, side="right") - 1
    last = np.searchsorted(span_start, np.maximum(ends_tok - 1, 0), side="right") - 1
    kinds = np.where(has_text, span_kind[first], KIND_INDEX["special"]).astype(np.int8)
    for t in np.nonzero(has_text & (first != last))[0]:
        kinds[t] = _boundary_kind(
            spans, span_start, int(first[t]), int(last[t]), int(starts_tok[t]), int(ends_tok[t]), text, record_id
        )

    _check_coverage(text, starts_tok[has_text], ends_tok[has_text], record_id)
    for i, span in enumerate(spans):
        if span.kind == "eos":
            hit = np.nonzero((starts_tok == span_start[i]) & (ends_tok == span_start[i] + len(span.text)))[0]
            if len(hit) != 1:
                raise RecordError(
                    record_id,
                    f"{span.kind} text {span.text!r} is not a single token of the tokenizer; "
                    "add it as a special token (see lit.mask.tokenizer.prepare_tokenizer)",
                )
    return Encoded(ids, kinds)


def _split_image_text(spans: list[Span], tokenizer, image_token_id: int | None) -> tuple[list[Span], list[int]]:
    """The spans with each image text of several tokens (a template's ``image_text``, Qwen2-VL's
    ``<|vision_start|><|image_pad|><|vision_end|>``) cut around its ``image_token_id`` token, and the index of
    each image position: that token. The text around it stays kind ``image``, so no scope supervises it."""
    out: list[Span] = []
    images: list[int] = []
    for span in spans:
        enc = tokenizer._tokenizer.encode(span.text, add_special_tokens=False) if span.kind == "image" else None
        if enc is not None and image_token_id is None and len(enc.ids) > 1:  # no image position asked for: the
            out.append(span)  # block is tokenized as text of kind image (``lit.mask.audit --chat-template auto``)
            continue
        if enc is None or len(enc.ids) == 1 or enc.ids.count(image_token_id) != 1:
            if span.kind == "image":  # a single token, or one ``_image_id`` reports
                images.append(len(out))
            out.append(span)
            continue
        lo, hi = enc.offsets[enc.ids.index(image_token_id)]
        for text, position in ((span.text[:lo], False), (span.text[lo:hi], True), (span.text[hi:], False)):
            if text:
                images += [len(out)] if position else []
                out.append(Span(text, "image"))
    return out, images


def _image_id(tokenizer, marker: str, record_id, image_token_id: int | None) -> int:
    """The id of the image marker, which must be one (added) token of the tokenizer."""
    alone = tokenizer._tokenizer.encode(marker, add_special_tokens=False)
    if len(alone.ids) != 1 or tuple(alone.offsets[0]) != (0, len(marker)):
        raise RecordError(
            record_id,
            f"image text {marker!r} is not a single token of the tokenizer; "
            "add it as a special token (see lit.mask.tokenizer.prepare_tokenizer)",
        )
    if image_token_id is not None and alone.ids[0] != image_token_id:
        raise RecordError(record_id, f"{marker} became id {alone.ids[0]}, not the image token id {image_token_id}")
    return alone.ids[0]


def _tokenize_chunks(tokenizer, text: str, images: list[tuple[int, int]], marker_id: int | None):
    """Ids and character offsets (into ``text``) of LLaVA's ``tokenizer_image_token`` (``llava/mm_utils.py``):
    each chunk between image spans tokenized alone with the tokenizer's special tokens; if the first chunk
    starts with BOS, the BOS of every later chunk is dropped; one image position at each image span."""
    bounds = [0] + [b for span in images for b in span] + [len(text)]
    ids: list[np.ndarray] = []
    offsets: list[np.ndarray] = []
    drop_bos = False
    backend = tokenizer._tokenizer  # keeps the truncation/padding of the last __call__ that asked for them
    if backend.truncation is not None:
        backend.no_truncation()
    if backend.padding is not None:
        backend.no_padding()
    for c in range(len(images) + 1):
        lo, hi = bounds[2 * c], bounds[2 * c + 1]
        enc = tokenizer._tokenizer.encode(text[lo:hi], add_special_tokens=True)
        chunk_ids = np.asarray(enc.ids, dtype=np.int64)
        chunk_offsets = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2) + lo
        if c == 0:
            drop_bos = len(chunk_ids) > 0 and chunk_ids[0] == tokenizer.bos_token_id
        elif drop_bos:
            chunk_ids, chunk_offsets = chunk_ids[1:], chunk_offsets[1:]
        ids.append(chunk_ids)
        offsets.append(chunk_offsets)
        if c < len(images):
            ids.append(np.array([marker_id], dtype=np.int64))
            offsets.append(np.array([images[c]], dtype=np.int64))
    return np.concatenate(ids), np.concatenate(offsets)


def expand_images(values: np.ndarray, ids: np.ndarray, image_token_id: int, counts, fills) -> np.ndarray:
    """``values`` (aligned with ``ids``) with the k-th image position replaced by ``counts[k]`` positions of
    ``fills[k]`` (one value, or ``counts[k]`` of them), for a record with several images; ``ids`` must hold the
    image token exactly once per image."""
    at = np.nonzero(ids == image_token_id)[0]
    if len(at) != len(counts) or len(counts) != len(fills):
        raise ValueError(f"{len(at)} image positions in the ids for {len(counts)} images")
    pieces, prev = [], 0
    for pos, n, fill in zip(at.tolist(), counts, fills):
        pieces += [values[prev:pos], np.broadcast_to(np.asarray(fill, dtype=values.dtype), (int(n),))]
        prev = pos + 1
    return np.concatenate([*pieces, values[prev:]])


def _boundary_kind(spans, span_start, first, last, start, end, text, record_id) -> int:
    """Kind of a token whose characters cross span boundaries: that of its visible characters."""
    visible = set()
    for i in range(first, last + 1):
        lo, hi = max(start, int(span_start[i])), min(end, int(span_start[i]) + len(spans[i].text))
        if text[lo:hi].strip():
            visible.add(spans[i].kind)
    if len(visible) > 1:
        raise RecordError(
            record_id,
            f"token {text[start:end]!r} merges text of kinds {sorted(visible)}; "
            "the tokenizer joins characters across a span boundary",
        )
    return KIND_INDEX[visible.pop() if visible else spans[first].kind]


def _check_coverage(text: str, starts: np.ndarray, ends: np.ndarray, record_id) -> None:
    """Every visible character of the text must belong to a token."""
    if len(starts) == 0:
        if text.strip():
            raise RecordError(record_id, "tokenizer produced no tokens for a non-empty text")
        return
    bounds = np.concatenate([[0], ends])
    gap_starts = bounds[:-1]
    gaps = np.nonzero(starts > gap_starts)[0]
    pieces = [text[gap_starts[g] : starts[g]] for g in gaps] + [text[int(ends.max()) :]]
    for piece in pieces:
        if piece.strip():
            raise RecordError(
                record_id, f"text {piece!r} is covered by no token (offsets mapping disagrees with the text)"
            )
