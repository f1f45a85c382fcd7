"""The four loss-mask scopes of the L2T ablation ladder.

========== ================================================ ============================
scope      supervised span kinds                            paper row (v2 Table 4)
========== ================================================ ============================
vit        response, eos                                    answer-only baseline (VIT)
lit_all    + instruction, template, system, role, format    full instruction (+~6%)
lit_nosys  + instruction, template                          minus system/roles (+~9%)
lit        + instruction                                    minus templates (+~11%)
========== ================================================ ============================

The tokenizer is prepared as training prepares it (``lit.mask.tokenizer.prepare_tokenizer``: ``<image>`` is
added to a Vicuna/Llama tokenizer that lacks it), and ``--loss lit`` takes its template settings from
``conf/loss/default.yaml``, so the audit shows exactly the mask training builds.

The image position and tokenizer-added tokens (BOS) are never supervised; so
``vit ⊂ lit ⊂ lit_nosys ⊂ lit_all`` as sets of supervised positions.

Weighted spans (``loss.weights``, ``get_scope(name, weights)``): a weight per span kind instead of on/off, e.g.
``loss=lit loss.weights={instruction:0.1}`` (the prompt-loss-weight study, arXiv 2401.13586, and Weighted
Instruction Tuning, arXiv 2507.07817). A kind with a weight above 0 gets labels; the batches then carry each
token's weight, and the loss (``lit.train.loss``) weighs its tokens by them. Weights of 0 and 1 only are the binary
scope itself, labelled and trained exactly as without ``loss.weights``.

The audit CLI that shows them on real records is ``python -m lit.mask.audit``.

Baselines as their authors defined them (``BASELINES``, ``loss=<name>``), beside the ladder: a rule on tokens
as well as kinds, so a reproduction states which baseline it compares LIT against.
``onevision_baseline`` is LLaVA-OneVision's own mask, ``preprocess_qwen`` in LLaVA-NeXT's ``llava/train/train.py``
(LLaVA-VL/LLaVA-NeXT): each assistant turn is supervised whole, its header ``<|im_start|>assistant\\n`` included,
and every ``\\n``, ``<|im_start|>`` and ``<|im_end|>`` token of the sequence is supervised as well, in the system
and user turns too (its ``unmask_tokens_idx``); the image and tokenizer-added tokens still never are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lit.constants import IGNORE_INDEX, KIND_INDEX, NEVER_SUPERVISED, SPAN_KINDS
from lit.mask.render import Encoded

SCOPES: dict[str, frozenset[str]] = {
    "vit": frozenset({"response", "eos"}),
    "lit": frozenset({"instruction", "response", "eos"}),
    "lit_nosys": frozenset({"instruction", "template", "response", "eos"}),
    "lit_all": frozenset({"system", "role", "format", "instruction", "template", "response", "eos"}),
}
assert all(not (kinds & NEVER_SUPERVISED) for kinds in SCOPES.values())


@dataclass(frozen=True)
class MaskScope:
    """A loss scope: which span kinds get labels, with what weight, and whether templates must be mined for it.

    ``weights``: the kinds whose weight is not the scope's own 0 or 1 (``loss.weights``), as sorted (kind, weight)
    pairs; empty for the four binary scopes. A kind is supervised (gets a label) exactly when its weight is above 0.
    """

    name: str
    kinds: frozenset[str]
    weights: tuple[tuple[str, float], ...] = ()
    header: bool = False  # also the assistant header before each answer (its role tokens and the format after)
    tokens: tuple[str, ...] = ()  # texts of tokens supervised wherever they are, whatever their kind

    def weight_of(self, kind: str) -> float:
        return dict(self.weights).get(kind, 1.0 if kind in self.kinds else 0.0)

    @property
    def weighted(self) -> bool:
        """Whether a supervised kind has a weight other than 1: only then do batches carry per-token weights."""
        return any(self.weight_of(kind) != 1.0 for kind in self.kinds)

    @property
    def uses_template_sentences(self) -> bool:
        """Whether template sentences are weighed apart from the rest of the instruction (in the binary ladder:
        only ``lit``, which supervises the instruction and not its template sentences)."""
        return self.weight_of("instruction") != self.weight_of("template")

    def kind_ids(self) -> np.ndarray:
        return np.array(sorted(KIND_INDEX[k] for k in self.kinds), dtype=np.int8)

    def kind_weights(self) -> np.ndarray:
        """(len(SPAN_KINDS),) float32: each kind's weight, indexed by ``KIND_INDEX``."""
        return np.array([self.weight_of(kind) for kind in SPAN_KINDS], dtype=np.float32)

    def describe(self) -> str:
        """The scope as the logs and errors name it: ``lit`` or ``lit (instruction=0.1)``."""
        if not self.weights:
            return self.name
        return f"{self.name} ({', '.join(f'{kind}={weight:g}' for kind, weight in self.weights)})"


BASELINES: dict[str, MaskScope] = {
    # llava/train/train.py, preprocess_qwen: target = encode_id for the assistant turns (header included), then
    # target[idx] = encode_id wherever encode_id is in unmask_tokens_idx = [198 ("\n" in Qwen2's vocabulary),
    # im_start, im_end]
    "onevision_baseline": MaskScope(
        "onevision_baseline",
        frozenset({"response", "eos"}),
        header=True,
        tokens=("\n", "<|im_start|>", "<|im_end|>"),
    ),
}


def get_scope(name: str, weights=None) -> MaskScope:
    """The scope ``name`` of the ladder, its kinds' weights changed by ``weights`` (kind -> weight >= 0; a kind left
    out keeps 1 if the scope supervises it, else 0), as ``loss.weights`` sets them; or a baseline of ``BASELINES``
    (no weights: it is its authors' mask, as they defined it)."""
    if name in BASELINES:
        if any(w is not None for w in dict(weights or {}).values()):
            raise ValueError(f"loss={name} is a published baseline mask: loss.weights do not apply to it")
        return BASELINES[name]
    if name not in SCOPES:
        raise KeyError(f"unknown loss scope {name!r}; choose one of {', '.join([*SCOPES, *BASELINES])}")
    given = {str(kind): weight for kind, weight in dict(weights or {}).items() if weight is not None}
    unknown = sorted(set(given) - set(SPAN_KINDS))
    if unknown:
        raise ValueError(f"loss.weights names unknown span kinds {unknown}; the kinds are {', '.join(SPAN_KINDS)}")
    for kind, weight in given.items():
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not 0 <= weight < float("inf"):
            raise ValueError(f"loss.weights.{kind}={weight!r}: a weight is a finite number >= 0")
        if weight and kind in NEVER_SUPERVISED:
            raise ValueError(f"loss.weights.{kind}={weight}: {kind} tokens are never supervised: set it to 0")
    base = MaskScope(name, SCOPES[name])
    changed = tuple(sorted((k, float(w)) for k, w in given.items() if float(w) != base.weight_of(k)))
    kinds = frozenset(k for k in SPAN_KINDS if dict(changed).get(k, base.weight_of(k)) > 0)
    if not kinds:
        raise ValueError(f"loss={name} with loss.weights={given}: every weight is 0, nothing would be supervised")
    return MaskScope(name, kinds, changed)


def token_weights(kinds: np.ndarray, labels: np.ndarray, scope: MaskScope) -> np.ndarray:
    """Per-token loss weights (T,) float32: each supervised token's kind weight, 0 where there is no label."""
    return np.where(labels != IGNORE_INDEX, scope.kind_weights()[kinds], 0.0).astype(np.float32)


def labels_for(encoded: Encoded, scope: MaskScope, tokenizer=None) -> np.ndarray:
    """Labels (T,) int64: the token id where the scope supervises the token's kind, else IGNORE_INDEX; for a
    baseline with token rules (``header``, ``tokens``) also the assistant headers and the named tokens (their ids
    from ``tokenizer``, which such a scope needs), never an image or tokenizer-added token.

    Labels are *not* shifted (Hugging Face shifts inside the loss); the first token has no left
    context, so it is never a target whatever its kind.
    """
    keep = np.isin(encoded.kinds, scope.kind_ids())
    if scope.header:
        keep |= answer_headers(encoded.kinds)
    if scope.tokens:
        if tokenizer is None:
            raise ValueError(f"loss={scope.name} supervises tokens by their text: its labels need the tokenizer")
        never = np.isin(encoded.kinds, [KIND_INDEX[k] for k in NEVER_SUPERVISED])
        keep |= np.isin(encoded.input_ids, [_one_token(tokenizer, t, scope) for t in scope.tokens]) & ~never
    labels = np.where(keep, encoded.input_ids, IGNORE_INDEX)
    labels[:1] = IGNORE_INDEX
    return labels


def answer_headers(kinds: np.ndarray) -> np.ndarray:
    """(T,) bool: the assistant header before each answer, the role tokens and the format tokens after them that
    lead into the answer's first token (chatml: ``<|im_start|>assistant`` and its ``\\n``); nothing where a
    template gives the assistant no role."""
    role, fmt, response = KIND_INDEX["role"], KIND_INDEX["format"], KIND_INDEX["response"]
    out = np.zeros(len(kinds), dtype=bool)
    starts = np.nonzero((kinds == response) & np.r_[True, kinds[:-1] != response])[0]
    for start in starts.tolist():
        i = start - 1
        while i >= 0 and kinds[i] == fmt:
            i -= 1
        if i < 0 or kinds[i] != role:
            continue
        while i >= 0 and kinds[i] == role:
            i -= 1
        out[i + 1 : start] = True
    return out


def _one_token(tokenizer, text: str, scope: MaskScope) -> int:
    ids = tokenizer._tokenizer.encode(text, add_special_tokens=False).ids
    if len(ids) != 1:
        raise ValueError(
            f"loss={scope.name} supervises the token {text!r}, which this tokenizer splits into {len(ids)} tokens: "
            "the baseline is defined on tokenizers where it is one (Qwen2's; add it as a special token)"
        )
    return ids[0]


def supervised_counts(encoded: Encoded, labels: np.ndarray) -> np.ndarray:
    """Number of supervised tokens per span kind, (len(SPAN_KINDS),) int64."""
    return np.bincount(encoded.kinds[labels != IGNORE_INDEX], minlength=len(SPAN_KINDS)).astype(np.int64)
