"""Tokenizers: load one (any HF fast tokenizer), prepare it for a chat template (one function for every entry point),
and train a small byte-level BPE for the embedded demo (no hub access needed)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from lit.constants import IMAGE_MARKER
from lit.mask.chat_templates import ChatTemplate

DEMO_SPECIALS = ["<s>", "</s>", "<unk>", "<pad>", IMAGE_MARKER]


def load_tokenizer(path: str | Path, **kwargs) -> PreTrainedTokenizerFast:
    """Load a fast tokenizer from a directory or (online) hub id; offsets mapping requires a fast one."""
    try:
        tok = AutoTokenizer.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(f"cannot load a tokenizer from {path!r}: {err}") from err
    if not getattr(tok, "is_fast", False) or not hasattr(tok, "_tokenizer"):
        raise TypeError(f"{path}: a fast (tokenizers-backed) tokenizer is needed for span offsets")
    return tok


def prepare_tokenizer(tokenizer, template: ChatTemplate, *, frozen_vocab: bool = False) -> list[str]:
    """The one preparation every entry point applies (training, ``lit.mask.audit``, evaluation, ``vc.py``):
    add the template's image token (``<image>``, as llava-hf does) and its end-of-turn token where the vocabulary
    lacks them, and set a pad token; returns the tokens added.

    A Vicuna/Llama SentencePiece tokenizer has no ``<image>``; training adds it and resizes the model's
    embeddings to ``len(tokenizer)``. With ``frozen_vocab`` (a trained checkpoint whose embeddings are
    fixed) a missing token is an error instead.
    """
    vocab = tokenizer.get_vocab()
    missing = [t for t in (template.image_token, template.eos) if t and t not in vocab]
    if missing and frozen_vocab:
        raise ValueError(
            f"the checkpoint's tokenizer lacks {missing} that chat template {template.name!r} needs; "
            "was the model trained with this template? (train.py saves the prepared tokenizer)"
        )
    if missing:
        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or template.eos or tokenizer.unk_token
    return missing


def load_prepared(path: str | Path, template: ChatTemplate) -> PreTrainedTokenizerFast:
    """``load_tokenizer`` + ``prepare_tokenizer``: the tokenizer exactly as training uses it."""
    tok = load_tokenizer(path)
    prepare_tokenizer(tok, template)
    return tok


def train_bpe(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE in the Llama layout (<s> BOS, </s> EOS) trained on ``texts``."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=DEMO_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer)
    bos = core.token_to_id("<s>")
    core.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]),
        ]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_MARKER},
    )
