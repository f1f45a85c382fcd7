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
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from lit.constants import IMAGE_MARKER, KIND_INDEX

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


def get_template(name: str) -> ChatTemplate:
    """Exact lookup; raises with the list of known names."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise KeyError(f"unknown chat template {name!r}; known: {', '.join(sorted(TEMPLATES))}") from None


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
