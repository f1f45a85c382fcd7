"""``chat_template: auto``: a typed ``ChatTemplate`` derived from a checkpoint's Jinja chat template.

The Jinja source is rendered as ``apply_chat_template(..., tokenize=False)`` renders it (a sandboxed jinja2
environment with ``trim_blocks``/``lstrip_blocks``, ``raise_exception``, ``tojson``, ``{% generation %}``; the
tokenizer's ``bos_token``/``eos_token``; ``add_generation_prompt``) over conversations whose messages are unique
sentinels, as string contents or, where the template only takes those, ``[{"type": "text", "text": ...}]``.
The text between the sentinels is cut into the template's parts: the user prefix/suffix, the assistant
prefix/suffix, the generation prompt, the system block and the default system prompt (what is written when no
system message is given). Whitespace is ``format``; other text is ``role`` (an end-of-turn token closing a
non-assistant turn is ``format``); in the assistant turn what follows the generation prompt is ``response``,
as is what precedes the end-of-turn token. A leading ``bos_token`` is left to the tokenizer. A human turn with
an image is the message ``[{"type": "image"}, {"type": "text", "text": rest}]`` (the image first, as
``lit.mask.render`` puts it); what the template writes for the image item becomes ``image_text``. Where the user
header drops its trailing whitespace piece before an image (SmolVLM: ``User:<image>`` but ``User: text``), ``user``
is the header without it and ``user_text`` the text-only turn's.

The derived template is then checked: ``lit.mask.render`` must reproduce every probe conversation character for
character. Anything the pieces cannot express raises ``ValueError("<piece>: <why>")``; nothing is guessed.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from datetime import datetime

from jinja2 import TemplateError
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from lit.constants import IMAGE_MARKER
from lit.mask.chat_templates import ChatTemplate
from lit.mask.render import render

_CORE = {k: f"#lit-{k}#" for k in ("sys", "u1", "a1", "u2", "a2")}
_PAD = {k: f" {v}\n" for k, v in _CORE.items()}  # outer whitespace shows whether the template keeps the text as is
_FAILURES = (TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError)
_ROLE = {"sys": "system", "u1": "user", "a1": "assistant", "u2": "user", "a2": "assistant"}


class _Generation(Extension):
    """transformers' ``{% generation %}...{% endgeneration %}`` (assistant masks): renders its body unchanged."""

    tags = {"generation"}

    def parse(self, parser):
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _raise(message):
    raise TemplateError(message)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols, _Generation])
    env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, sort_keys=False: json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )
    env.globals.update(raise_exception=_raise, strftime_now=lambda fmt: datetime.now().strftime(fmt))
    return env


class _Probe:
    def __init__(self, source: str, bos_token: str | None, eos_token: str | None):
        self.template = _environment().from_string(source)
        self.bos = bos_token
        self.tokens = {k: v for k, v in (("bos_token", bos_token), ("eos_token", eos_token)) if v is not None}
        self.as_list = False

    def message(self, role: str, text: str | None, image: bool = False) -> dict:
        if not self.as_list and not image:
            return {"role": role, "content": text}
        items = [{"type": "image"}] if image else []
        return {"role": role, "content": items + ([{"type": "text", "text": text}] if text is not None else [])}

    def render(self, keys: list[str], add_generation_prompt: bool = False) -> str:
        messages = [self.message(_ROLE[k], _PAD[k]) for k in keys]
        return self.raw(messages, add_generation_prompt)

    def raw(self, messages: list[dict], add_generation_prompt: bool) -> str:
        text = self.template.render(messages=messages, add_generation_prompt=add_generation_prompt, **self.tokens)
        return text[len(self.bos) :] if self.bos and text.startswith(self.bos) else text


def _cut(text: str, keys: list[str], pad: dict[str, str] = _PAD) -> list[str]:
    """``text`` split at the sentinels of ``keys``, which must appear once each, unchanged and in order."""
    out, pos = [], 0
    for k in keys:
        at = text.find(pad[k], pos)
        if at < 0:
            role = _ROLE[k]
            why = (
                f"the {role} message is written out of order"
                if pad[k] in text
                else f"the template changes the {role} message text (e.g. trims it)"
                if _CORE[k] in text
                else f"the template does not write the {role} message text"
            )
            raise ValueError(f"content: {why}; rendered {text!r}")
        out.append(text[pos:at])
        pos = at + len(pad[k])
    return out + [text[pos:]]


def _strip(text: str, *, prefix: str = "", suffix: str = "", piece: str, why: str) -> str:
    if not text.startswith(prefix) or not text.endswith(suffix) or len(prefix) + len(suffix) > len(text):
        raise ValueError(f"{piece}: {why} ({text!r} does not start with {prefix!r} and end with {suffix!r})")
    return text[len(prefix) : len(text) - len(suffix)]


def _typed(text: str, eos: str = "", eos_kind: str = "format") -> list[tuple[str, str]]:
    """Whitespace runs are format, the end-of-turn token ``eos_kind``, other text role."""
    parts = re.split(f"({re.escape(eos)}|\\s+)" if eos else r"(\s+)", text)
    return [(p, eos_kind if p == eos else "format" if p.isspace() else "role") for p in parts if p]


def _end_of_turn(tail: str, eos: str | None, eos_token: str | None, tokenizer) -> str:
    core = tail.strip()
    chosen = eos or (eos_token if eos_token and eos_token in tail else core)
    if not chosen or chosen not in tail:
        raise ValueError(f"eos: the assistant turn ends with {tail!r}, which holds no end-of-turn text {chosen!r}")
    if tokenizer is not None and len(tokenizer(chosen, add_special_tokens=False)["input_ids"]) != 1:
        raise ValueError(f"eos: {chosen!r}, which ends the assistant turn, is not one token of the tokenizer")
    return chosen


def from_jinja(
    source: str,
    *,
    name: str = "auto",
    eos: str | None = None,
    bos_token: str | None = None,
    eos_token: str | None = None,
    tokenizer=None,
) -> ChatTemplate:
    """The ``ChatTemplate`` whose ``render`` writes what the Jinja ``source`` writes (see the module docstring).

    ``eos``: the end-of-turn text, if known; else ``eos_token`` where the assistant turn ends with it, else the
    non-whitespace text after the answer. With a ``tokenizer`` it must be one token of it.
    """
    probe = _Probe(source, bos_token, eos_token)
    errors = []
    for probe.as_list in (False, True):
        try:
            pre, g1, g2, g3, tail = _cut(probe.render(["u1", "a1", "u2", "a2"]), ["u1", "a1", "u2", "a2"])
            break
        except _FAILURES as err:
            errors.append(f"{'list' if probe.as_list else 'string'} contents: {err}")
    else:
        raise ValueError("content: the template renders no conversation verbatim; " + "; ".join(errors))
    if g3 != g1:
        raise ValueError(f"user: the text between a user and an assistant message varies per turn ({g1!r}, {g3!r})")
    pre_u, x_u = _cut(probe.render(["u1"]), ["u1"])
    pre_g, x_g = _cut(probe.render(["u1"], add_generation_prompt=True), ["u1"])
    if pre_u != pre or pre_g != pre:
        raise ValueError(f"user: the conversation start depends on its length ({pre!r}, {pre_u!r}, {pre_g!r})")
    gen = _strip(x_g, prefix=x_u, piece="generation_prompt", why="not appended after the last user turn")
    p_a = _strip(g1, prefix=x_u, piece="assistant", why="the user turn's end differs when an assistant follows")
    p_u = _strip(g2, prefix=tail, piece="assistant", why="the last assistant turn ends unlike the others")
    why = "the first user turn starts unlike later ones, or the last assistant turn ends unlike the others"
    default = _strip(pre, suffix=p_u, piece="user", why=why)
    after = _strip(p_a, prefix=gen, piece="generation_prompt", why="it is not the start of the assistant turn")
    eos = _end_of_turn(tail, eos, eos_token, tokenizer)
    before_eos, after_eos = tail.split(eos, 1)

    system, system_prompt = (), ""
    try:
        cuts = _cut(probe.render(["sys", "u1", "a1", "u2", "a2"]), ["sys", "u1", "a1", "u2", "a2"])
    except _FAILURES:
        cuts = None  # the template refuses or drops system messages
    if cuts is not None:
        if cuts[2:] != [g1, g2, g3, tail]:
            raise ValueError("system: a system message changes the turns after it")
        p_s, x_s = (
            cuts[0],
            _strip(cuts[1], suffix=p_u, piece="system", why="the user turn after it starts unlike others"),
        )
        system = (*_typed(p_s), ("{system}", "system"), *_typed(x_s, eos))
        if default:
            system_prompt = _strip(default, prefix=p_s, suffix=x_s, piece="system_prompt", why="not a system block")
    elif default:
        raise ValueError(f"system_prompt: the template writes {default!r} first but takes no system message")

    t = ChatTemplate(
        name=name,
        system_prompt=system_prompt,
        system=system,
        user=(*_typed(p_u), ("{content}", "content"), *_typed(x_u, eos)),
        assistant=(
            *_typed(gen),
            (after, "response"),
            ("{content}", "content"),
            (before_eos, "response"),
            (eos, "eos"),
            *_typed(after_eos),
        ),
        generation_prompt=tuple(_typed(gen)),
        eos=eos,
    )
    t = replace(t, assistant=tuple(p for p in t.assistant if p[0]))
    t, image = _with_image(t, probe, pre, g1, tail)
    _check(t, probe, system_supported=cuts is not None, image=image)
    return t


def _with_image(t: ChatTemplate, probe: _Probe, pre: str, g1: str, tail: str) -> tuple[ChatTemplate, str | None]:
    """``image_text``/``image_sep`` from the user messages ``[image]`` and ``[image, text]``, and what the template
    writes for the latter; ``t`` unchanged and None where the template takes no image items (the ``<image>``
    marker then stays in the text, as LLaVA has it)."""
    answer = probe.message("assistant", _PAD["a1"])
    probe.as_list, as_list = True, probe.as_list
    user, user_text = probe.message("user", None, image=True), probe.message("user", _CORE["u1"], image=True)
    try:
        alone, both = probe.raw([user, answer], False), probe.raw([user_text, answer], False)
        head, rest = _cut(alone, ["a1"])
    except _FAILURES:
        return t, None
    finally:
        probe.as_list = as_list
    if str(user["content"]) in alone:  # a string-only template writes the list as Python text
        return t, None
    if rest != tail:
        raise ValueError("image: an image in the user turn changes the assistant turn")
    why = "with an image the user turn starts or ends unlike a text-only one"
    t, pre = _header_before_an_image(t, head, pre)
    image = _strip(head, prefix=pre, suffix=g1, piece="image", why=why)
    if not image:
        return t, None
    head, between, rest = _cut(both, ["u1", "a1"], pad={"u1": _CORE["u1"], "a1": _PAD["a1"]})
    if between != g1 or rest != tail:
        raise ValueError("image: with an image and text the turn ends unlike a text-only one")
    sep = _strip(head, prefix=pre + image, piece="image", why="the image is not written before the text")
    return replace(t, image_text="" if image == IMAGE_MARKER else image, image_first=True, image_sep=sep), both


def _header_before_an_image(t: ChatTemplate, head: str, pre: str) -> tuple[ChatTemplate, str]:
    """Where a turn that opens with an image drops the whitespace that ends the user header of a text-only turn
    (SmolVLM: ``User:<image>`` but ``User: text``): ``user`` without that piece and ``user_text`` the text-only
    turn's, and the start of the conversation before an image; else ``t`` and ``pre`` unchanged. Only a whole
    trailing whitespace piece of the header may differ; any other difference stays an error of the caller."""
    if head.startswith(pre):
        return t, pre
    common = os.path.commonprefix([head, pre])
    dropped = pre[len(common) :]
    at = next(i for i, (_, kind) in enumerate(t.user) if kind == "content")
    if not dropped or not dropped.isspace() or at == 0 or t.user[at - 1] != (dropped, "format"):
        return t, pre
    return replace(t, user=t.user[: at - 1] + t.user[at:], user_text=t.user), common


def _check(t: ChatTemplate, probe: _Probe, *, system_supported: bool, image: str | None) -> None:
    """``render`` with ``t`` must write exactly what the Jinja template writes for every probe conversation."""
    keys = ["u1", "a1", "u2", "a2"]
    turns = [{"from": "human" if k[0] == "u" else "gpt", "value": _PAD[k]} for k in keys]
    cases = [
        ("user", t, {"conversations": turns}, probe.render(keys), False),
        ("generation_prompt", t, {"conversations": turns[:1]}, probe.render(["u1"], True), True),
    ]
    if system_supported:
        sys_t = replace(t, system_prompt=_PAD["sys"])
        cases.append(("system", sys_t, {"conversations": turns}, probe.render(["sys", *keys]), False))
    if image is not None:
        record = {"image": "x", "conversations": [{"from": "human", "value": IMAGE_MARKER + _CORE["u1"]}, turns[1]]}
        cases.append(("image", t, record, image, False))
    for piece, template, record, expected, prompt in cases:
        got = "".join(s.text for s in render(record, template, record_id="probe", add_generation_prompt=prompt))
        if got != expected:
            raise ValueError(f"{piece}: the derived pieces render {got!r} where the template renders {expected!r}")


DECLARE_INSTEAD = (
    "This Jinja template cannot be typed: declare the template instead, model.chat_template (--chat-template) = a "
    "name in lit.mask.chat_templates.TEMPLATES or a YAML file (docs/extending.md)"
)


def from_tokenizer(tokenizer_or_processor, *, name: str = "auto", eos: str | None = None) -> ChatTemplate:
    """``from_jinja`` of a processor's or tokenizer's ``chat_template`` (of a dict of named ones, ``"default"``),
    with that tokenizer's BOS/EOS tokens; ``eos`` must then be one token of it. A processor's ``image_token``
    (Qwen2-VL's ``<|image_pad|>``) is the template's ``image_token`` and must lie in its ``image_text``."""
    tok = getattr(tokenizer_or_processor, "tokenizer", tokenizer_or_processor)
    source = getattr(tokenizer_or_processor, "chat_template", None) or getattr(tok, "chat_template", None)
    if isinstance(source, dict):
        if "default" not in source:
            raise ValueError(f"chat_template: named templates {sorted(source)} but no 'default'")
        source = source["default"]
    if not source:
        raise ValueError(f"chat_template: {type(tokenizer_or_processor).__name__} has no chat template")
    try:
        template = from_jinja(
            source, name=name, eos=eos, bos_token=tok.bos_token, eos_token=tok.eos_token, tokenizer=tok
        )
    except ValueError as err:  # the piece first, as from_jinja names it; then the way around it
        raise ValueError(f"{err}. {DECLARE_INSTEAD}") from None
    image_token = getattr(tokenizer_or_processor, "image_token", None) if tok is not tokenizer_or_processor else None
    return with_image_token(template, image_token) if image_token and template.image_text else template


def with_image_token(template: ChatTemplate, token: str) -> ChatTemplate:
    """``template`` whose image position is ``token``, which must stand once in its ``image_text`` (if it has one)."""
    if template.image_text and template.image_text.count(token) != 1:
        raise ValueError(f"image: the template writes {template.image_text!r}, not one {token!r}")
    return replace(template, image_token=token)


def config_image_token_id(config) -> int | None:
    """The image token id a model config names (``image_token_id``, LLaVA's ``image_token_index``): a config object
    or the dict of a ``config.json``."""
    get = config.get if isinstance(config, dict) else lambda key: getattr(config, key, None)
    token_id = get("image_token_id")
    token_id = get("image_token_index") if token_id is None else token_id
    return token_id if isinstance(token_id, int) else None


def template_of(processor, model_config) -> ChatTemplate:
    """``chat_template: auto`` for a loaded checkpoint: ``from_tokenizer`` of its processor, the image token the
    model's config names (``image_token_id`` / ``image_token_index``) where the template writes an image block."""
    template = from_tokenizer(processor)
    token_id = config_image_token_id(model_config)
    if token_id is None:
        return template
    return with_image_token(template, getattr(processor, "tokenizer", processor).convert_ids_to_tokens(token_id))
