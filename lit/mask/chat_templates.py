"""Chat templates as data: each is a list of typed pieces per part of a conversation.

A piece is ``(text, kind)``; the text ``{content}`` stands for the message body, whose kind is decided
by the renderer (instruction/template sentences for a user turn, response for an assistant turn).
Lookup is exact (``get_template``): an unknown name raises and lists the known ones.

Sources for the formats:
- ``vicuna_v1``: LLaVA-1.5 ``conv_vicuna_v1`` (system prompt below, roles USER/ASSISTANT, sep " ",
  sep2 "</s>"); also used by LLaVA-NeXT-Vicuna.
- ``qwen2_base`` and ``phi``: TinyLLaVA Factory's templates for Qwen2-0.5B and Phi-2, the same layout
  with ``<|endoftext|>`` closing each assistant turn.
- ``chatml``: Qwen2-Instruct's ``<|im_start|>role\\n...<|im_end|>\\n``.
- ``mistral_instruct``: LLaVA's ``conv_mistral_instruct`` (``SeparatorStyle.LLAMA_2`` in
  ``llava/conversation.py``): ``[INST] q [/INST] a </s>``, a space on each side of the answer.
- ``instructblip``: InstructBLIP-Vicuna as LAVIS trains it (``blip2_vicuna_instruct``): no system prompt
  and no roles, the instruction, then the answer and ``</s>`` (LAVIS tokenizes the two apart, so the answer
  starts a new word); the query tokens come first, then BOS, then the instruction (no newline: LAVIS
  concatenates the query embeddings before the embedded, BOS-led text; Hugging Face's
  ``InstructBlipProcessor`` prepends the image tokens to the tokenized text), and the training instruction
  keeps at most 128 tokens with BOS, cut from the left (LAVIS's ``max_txt_len``, ``truncation_side='left'``):
  ``lavis_layout`` puts an encoded conversation in that order.
- ``plain``: LLaVA's stage-1 caption pretraining (``conv_llava_plain``): the human turn is reduced to the
  image (its text is dropped, as ``preprocess_plain`` does), the caption follows and ends in ``\n``.
- ``idefics3``: Idefics3's and SmolVLM's published Jinja template (``User:``/``Assistant:`` headers, each turn
  closed by ``<end_of_utterance>\n``, ``Assistant:`` as the generation prompt; tests/chat_template_fixtures.py
  ``SMOLVLM``). It writes ``User:<image>text`` but ``User: text``, a header that depends on whether the turn opens
  with an image, so the template has both: ``user`` for a turn that opens with an image, ``user_text`` for one
  that does not (a ``ChatTemplate`` field any template may set); ``chat_template: auto`` derives the same.
  The conversation's first token (``<|im_start|>``, Idefics3-8B's ``<|begin_of_text|>``) is the tokenizer's BOS.

Besides these names, a template may be declared in a YAML file (``get_template("path/to/template.yaml")``,
``model.chat_template=path/to/template.yaml``): the fields of ``ChatTemplate``, pieces as ``[text, kind]`` pairs
(``load_yaml``), for checkpoints whose Jinja template cannot be typed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace

import numpy as np

from lit.constants import IMAGE_MARKER, KIND_INDEX, SPAN_KINDS

Piece = tuple[str, str]

LLAVA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


@dataclass(frozen=True)
class ChatTemplate:
    """How one model family lays out a conversation.

    ``system``/``user``/``assistant`` are piece lists; ``generation_prompt`` is what is appended at
    inference time so the model writes the answer next (LLaVA: ``ASSISTANT:``).
    ``eos`` is the text of the end-of-turn token; it must be one token of the tokenizer.

    Everything an assistant turn holds after its generation prompt is what the model must write at
    inference time, so it is ``response`` (or ``eos``), never ``format``: in ``USER: ... ASSISTANT: Yes</s>``
    the space after ``ASSISTANT:`` is generated, hence supervised (LLaVA's Llama tokenizer merges it
    into the answer's first token, ``▁Yes``; a byte-level BPE may keep it apart).
    """

    name: str
    system_prompt: str
    system: tuple[Piece, ...]
    user: tuple[Piece, ...]
    assistant: tuple[Piece, ...]
    generation_prompt: tuple[Piece, ...]
    eos: str
    image_first: bool = True  # LLaVA moves <image> to the front of its turn: "<image>" + image_sep + text
    image_sep: str = "\n"  # between the image and the text of its turn (format)
    image_only: bool = False  # the human turn keeps only the image (stage-1 ``plain``)
    image_before_bos: bool = False  # the image positions precede BOS (InstructBLIP as LAVIS and HF feed it)
    max_instruction_tokens: int = 0  # training: the first instruction keeps its last N tokens, BOS counted (0: all)
    max_answer_tokens: int = 0  # training: the answer (with its end token) keeps its first N - 1 tokens (0: all)
    image_token: str = IMAGE_MARKER  # the one token that stands for an image in the text (Qwen2-VL: <|image_pad|>)
    image_text: str = ""  # what the template writes for an image around image_token (Qwen2-VL: a vision block)
    user_text: tuple[Piece, ...] = ()  # the user turn that does not open with an image, where it differs (else user)


def _vicuna_like(name: str, eos: str) -> ChatTemplate:
    return ChatTemplate(
        name=name,
        system_prompt=LLAVA_SYSTEM,
        system=(("{system}", "system"), (" ", "format")),
        user=(("USER:", "role"), (" ", "format"), ("{content}", "content"), (" ", "format")),
        assistant=(("ASSISTANT:", "role"), (" ", "response"), ("{content}", "content"), (eos, "eos")),
        generation_prompt=(("ASSISTANT:", "role"),),
        eos=eos,
    )


TEMPLATES: dict[str, ChatTemplate] = {
    "vicuna_v1": _vicuna_like("vicuna_v1", "</s>"),
    "qwen2_base": _vicuna_like("qwen2_base", "<|endoftext|>"),
    "phi": _vicuna_like("phi", "<|endoftext|>"),
    "chatml": ChatTemplate(
        name="chatml",
        system_prompt="You are a helpful assistant.",
        system=(
            ("<|im_start|>system", "role"),
            ("\n", "format"),
            ("{system}", "system"),
            ("<|im_end|>", "format"),
            ("\n", "format"),
        ),
        user=(
            ("<|im_start|>user", "role"),
            ("\n", "format"),
            ("{content}", "content"),
            ("<|im_end|>", "format"),
            ("\n", "format"),
        ),
        assistant=(
            ("<|im_start|>assistant", "role"),
            ("\n", "format"),
            ("{content}", "content"),
            ("<|im_end|>", "eos"),
            ("\n", "format"),
        ),
        generation_prompt=(("<|im_start|>assistant", "role"), ("\n", "format")),
        eos="<|im_end|>",
    ),
    "mistral_instruct": ChatTemplate(
        name="mistral_instruct",
        system_prompt="",
        system=(),
        user=(("[INST]", "role"), (" ", "format"), ("{content}", "content"), (" ", "format"), ("[/INST]", "role")),
        assistant=((" ", "response"), ("{content}", "content"), (" ", "response"), ("</s>", "eos")),
        generation_prompt=(),
        eos="</s>",
    ),
    "instructblip": ChatTemplate(
        name="instructblip",
        system_prompt="",
        system=(),
        user=(("{content}", "content"),),
        assistant=((" ", "response"), ("{content}", "content"), ("</s>", "eos")),
        generation_prompt=(),
        eos="</s>",
        image_sep="",
        image_before_bos=True,
        max_instruction_tokens=128,
        max_answer_tokens=256,
    ),
    "plain": ChatTemplate(
        name="plain",
        system_prompt="",
        system=(),
        user=(("{content}", "content"),),
        assistant=(("{content}", "content"), ("\n", "response")),
        generation_prompt=(),
        eos="",
        image_only=True,
    ),
}
# Qwen2-VL-Instruct's published template is chatml with its default system prompt, and an image is
# <|vision_start|><|image_pad|><|vision_end|> followed directly by the text (no separator). The pad is the one
# image position that the data set expands to the image's count (lit.model.families.qwen2_vl); the start and
# end tokens are image kind too, so no scope supervises them.
TEMPLATES["qwen2_vl"] = replace(
    TEMPLATES["chatml"],
    name="qwen2_vl",
    image_sep="",
    image_token="<|image_pad|>",
    image_text="<|vision_start|><|image_pad|><|vision_end|>",
)
# Qwen3-VL-Instruct's published template (tests/chat_template_fixtures.py QWEN3_VL) writes the same turns and
# vision block but no default system prompt: a conversation without a system message starts with the user turn.
TEMPLATES["qwen3_vl"] = replace(TEMPLATES["qwen2_vl"], name="qwen3_vl", system_prompt="")


# Idefics3 / SmolVLM (the module docstring): "User:<image>text<end_of_utterance>\n" "Assistant: a<end_of_utterance>\n"
TEMPLATES["idefics3"] = ChatTemplate(
    name="idefics3",
    system_prompt="",
    system=(
        ("System:", "role"),
        (" ", "format"),
        ("{system}", "system"),
        ("<end_of_utterance>", "format"),
        ("\n", "format"),
    ),
    user=(("User:", "role"), ("{content}", "content"), ("<end_of_utterance>", "format"), ("\n", "format")),
    user_text=(
        ("User:", "role"),
        (" ", "format"),
        ("{content}", "content"),
        ("<end_of_utterance>", "format"),
        ("\n", "format"),
    ),
    assistant=(
        ("Assistant:", "role"),
        (" ", "response"),
        ("{content}", "content"),
        ("<end_of_utterance>", "eos"),
        ("\n", "format"),
    ),
    generation_prompt=(("Assistant:", "role"),),
    eos="<end_of_utterance>",
    image_sep="",
)
# InternVL's -hf checkpoints (OpenGVLab/InternVL3-*-hf; tests/chat_template_fixtures.py INTERNVL): chatml with no
# default system prompt, an image item written <IMG_CONTEXT>\n before the text. The context token is the one image
# position the data set expands to <img> + the tiles' context tokens + </img> (lit.model.families.internvl); the
# newline belongs to the image text (image kind, never supervised), as ``chat_template: auto`` derives it. The text
# between two images of a record is kept (an item each, as written): "<image>\n<image>\nQ" renders
# <IMG_CONTEXT>\n\n<IMG_CONTEXT>\n\nQ; "<image><image>Q" renders the template's [image, image, text],
# <IMG_CONTEXT>\n<IMG_CONTEXT>\nQ (what InternVL's own fine-tuning code makes of "<image>\n<image>\nQ").
TEMPLATES["internvl"] = replace(
    TEMPLATES["chatml"],
    name="internvl",
    system_prompt="",
    image_sep="",
    image_token="<IMG_CONTEXT>",
    image_text="<IMG_CONTEXT>\n",
)

YAML_SUFFIXES = (".yaml", ".yml")
PIECE_KINDS = ("content", *(k for k in SPAN_KINDS if k not in ("special", "instruction", "template", "image")))
_PIECE_FIELDS = ("system", "user", "assistant", "generation_prompt", "user_text")
_CONTENT_FIELDS = ("user", "assistant")  # the parts that hold the message body once


def get_template(name: str) -> ChatTemplate:
    """Exact lookup of a name in ``TEMPLATES``, or a template declared in a YAML file (a path ending in ``.yaml`` or
    ``.yml``, ``load_yaml``); raises with the list of known names."""
    if str(name).endswith(YAML_SUFFIXES):
        return load_yaml(name)
    try:
        return TEMPLATES[name]
    except KeyError:
        raise KeyError(
            f"unknown chat template {name!r}; known: {', '.join(sorted(TEMPLATES))}, or a YAML file (*.yaml)"
        ) from None


def load_yaml(path) -> ChatTemplate:
    """The ``ChatTemplate`` a YAML file declares: its keys are ``ChatTemplate``'s fields (``name`` defaults to the
    file's stem; ``system_prompt`` and ``system`` to none), each piece list a list of ``[text, kind]`` pairs,
    ``{content}`` once in ``user`` and in ``assistant`` (kind ``content``) and ``{system}`` in ``system``; e.g.::

        system_prompt: "A chat between a curious user and an artificial intelligence assistant. ..."
        system: [["{system}", system], [" ", format]]
        user: [["USER:", role], [" ", format], ["{content}", content], [" ", format]]
        assistant: [["ASSISTANT:", role], [" ", response], ["{content}", content], ["</s>", eos]]
        generation_prompt: [["ASSISTANT:", role]]
        eos: "</s>"

    Anything else raises ``ValueError`` naming the file and the key."""
    from pathlib import Path

    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"chat template {str(path)!r}: no such YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not YAML: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a chat template is a mapping of ChatTemplate's fields, not {type(data).__name__}")
    return from_dict(data, default_name=path.stem, where=str(path))


def from_dict(data: dict, *, default_name: str = "yaml", where: str = "chat template") -> ChatTemplate:
    """``load_yaml``'s validation and construction, from the loaded mapping; errors name ``where`` and the key."""
    fields = {f.name: f for f in dataclasses.fields(ChatTemplate)}
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; the keys are ChatTemplate's: {', '.join(fields)}")
    values = {"name": default_name, "system_prompt": "", "system": [], **data}
    for key in ("user", "assistant", "generation_prompt", "eos"):
        if key not in values:
            raise ValueError(f"{where}: {key}: missing (required: user, assistant, generation_prompt, eos)")
    out = {}
    for key, value in values.items():
        if key in _PIECE_FIELDS:
            out[key] = _pieces(value, key, where)
            continue
        kind = {"bool": bool, "int": int, "str": str}[fields[key].type]
        if type(value) is not kind:  # noqa: E721 (a YAML bool is no int, a number no string)
            raise ValueError(f"{where}: {key}: expected {fields[key].type}, got {value!r}")
        out[key] = value
    template = ChatTemplate(**out)
    _check_declared(template, where)
    return template


def _pieces(value, key: str, where: str) -> tuple[Piece, ...]:
    if not isinstance(value, list):
        raise ValueError(f"{where}: {key}: a list of [text, kind] pairs, not {value!r}")
    out = []
    for i, piece in enumerate(value):
        if not (isinstance(piece, list) and len(piece) == 2 and all(isinstance(p, str) for p in piece)):
            raise ValueError(f"{where}: {key}[{i}]: a [text, kind] pair of strings, not {piece!r}")
        text, kind = piece
        if kind not in PIECE_KINDS:
            raise ValueError(f"{where}: {key}[{i}]: kind {kind!r}; one of {', '.join(PIECE_KINDS)}")
        if (kind == "content") != (text == "{content}"):
            raise ValueError(
                f"{where}: {key}[{i}]: the message body is the piece ['{{content}}', content], not {piece!r}"
            )
        if not text:
            raise ValueError(f"{where}: {key}[{i}]: an empty text")
        out.append((text, kind))
    return tuple(out)


def _check_declared(t: ChatTemplate, where: str) -> None:
    """What ``lit.mask.render`` needs of a template: the body once per turn, the system prompt in its block, the
    end-of-turn text as the assistant's ``eos`` piece."""
    for key in (*_CONTENT_FIELDS, *(("user_text",) if t.user_text else ())):
        if sum(kind == "content" for _, kind in getattr(t, key)) != 1:
            raise ValueError(f"{where}: {key}: needs the piece ['{{content}}', content] exactly once")
    for key in ("system", "generation_prompt"):
        if any(kind == "content" for _, kind in getattr(t, key)):
            raise ValueError(f"{where}: {key}: holds no message body ('{{content}}')")
    if t.system_prompt and not any(text == "{system}" for text, _ in t.system):
        raise ValueError(f"{where}: system: a system_prompt is given but no ['{{system}}', system] piece writes it")
    if any(text == "{system}" and kind != "system" for text, kind in t.system):
        raise ValueError(f"{where}: system: the piece '{{system}}' is of kind system")
    if t.eos and (t.eos, "eos") not in t.assistant:
        raise ValueError(f"{where}: eos: {t.eos!r} must close the assistant turn as the piece [{t.eos!r}, eos]")
    if any(kind == "eos" and text != t.eos for part in _PIECE_FIELDS for text, kind in getattr(t, part)):
        raise ValueError(f"{where}: eos: every piece of kind eos is the eos text {t.eos!r}")
    if not t.image_token:
        raise ValueError(f"{where}: image_token: the one token that stands for an image; empty")
    if t.image_text and t.image_text.count(t.image_token) != 1:
        raise ValueError(f"{where}: image_text: {t.image_text!r} must hold image_token {t.image_token!r} once")


def lavis_layout(
    template: ChatTemplate, ids: np.ndarray, kinds: np.ndarray, *, truncate: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``ids``/``kinds`` of an encoded conversation (``lit.mask.render.encode``: ``[BOS, <image>, text...]``) in the
    order ``template`` asks for; unchanged for a template that asks for nothing.

    ``image_before_bos``: ``[<image>, BOS, text...]``, the order in which LAVIS's ``blip2_vicuna_instruct`` (forward and
    generate) concatenates the query embeddings and the embedded text. With ``truncate`` (training: LAVIS's forward
    tokenizes the instruction with ``max_length=max_txt_len`` and ``truncation_side='left'``, generate does not cut)
    the instruction, the tokens before the first answer token other than BOS and the image, keeps its last
    ``max_instruction_tokens`` tokens, BOS counted as LAVIS's tokenizer counts it; the answer, from its first token
    to the end, its first ``max_answer_tokens - 1`` (LAVIS tokenizes ``answer + eos`` with ``max_length`` 256 and
    ``truncation_side='right'``, then drops that tokenization's BOS, so a cut answer loses its end token too)."""
    special, image = KIND_INDEX["special"], KIND_INDEX["image"]
    if template.image_before_bos and len(kinds) > 1 and kinds[0] == special and kinds[1] == image:
        order = np.r_[1, 0, 2 : len(ids)]
        ids, kinds = ids[order], kinds[order]
    if truncate and template.max_instruction_tokens:
        answer = np.isin(kinds, (KIND_INDEX["response"], KIND_INDEX["eos"]))
        end = int(np.argmax(answer)) if answer.any() else len(kinds)
        head = kinds[:end]
        text = np.nonzero((head != special) & (head != image))[0]
        budget = template.max_instruction_tokens - int((head == special).any())
        if len(text) > budget:
            drop = np.zeros(len(ids), dtype=bool)
            drop[text[: len(text) - budget]] = True
            ids, kinds = ids[~drop], kinds[~drop]
    if truncate and template.max_answer_tokens:
        answer = np.isin(kinds, (KIND_INDEX["response"], KIND_INDEX["eos"]))
        if answer.any():
            keep = int(np.argmax(answer)) + template.max_answer_tokens - 1
            ids, kinds = ids[:keep], kinds[:keep]
    return ids, kinds
