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
``conf/loss/lit.yaml``, so the audit shows exactly the mask training builds.

The image position and tokenizer-added tokens (BOS) are never supervised; so
``vit ⊂ lit ⊂ lit_nosys ⊂ lit_all`` as sets of supervised positions.

The audit CLI that shows them on real records is ``python -m lit.mask.audit``.
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
    """A loss scope: which span kinds get labels, and whether templates must be mined for it."""

    name: str
    kinds: frozenset[str]

    @property
    def uses_template_sentences(self) -> bool:
        """Only ``lit`` treats template sentences differently from the rest of the instruction."""
        return "instruction" in self.kinds and "template" not in self.kinds

    def kind_ids(self) -> np.ndarray:
        return np.array(sorted(KIND_INDEX[k] for k in self.kinds), dtype=np.int8)


def get_scope(name: str) -> MaskScope:
    if name not in SCOPES:
        raise KeyError(f"unknown loss scope {name!r}; choose one of {', '.join(SCOPES)}")
    return MaskScope(name, SCOPES[name])


def labels_for(encoded: Encoded, scope: MaskScope) -> np.ndarray:
    """Labels (T,) int64: the token id where the scope supervises the token's kind, else IGNORE_INDEX.

    Labels are *not* shifted (Hugging Face shifts inside the loss); the first token has no left
    context, so it is never a target whatever its kind.
    """
    keep = np.isin(encoded.kinds, scope.kind_ids())
    labels = np.where(keep, encoded.input_ids, IGNORE_INDEX)
    labels[:1] = IGNORE_INDEX
    return labels


def supervised_counts(encoded: Encoded, labels: np.ndarray) -> np.ndarray:
    """Number of supervised tokens per span kind, (len(SPAN_KINDS),) int64."""
    return np.bincount(encoded.kinds[labels != IGNORE_INDEX], minlength=len(SPAN_KINDS)).astype(np.int64)
