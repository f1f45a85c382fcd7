"""``LabelSpec``: the settings a record's labels depend on, besides the record, the tokenizer and the image inputs.

One frozen value is both what ``SupervisedDataset`` labels by and what the label cache keys its entries by
(``lit.data.label_cache.fingerprint``), so a setting cannot reach the labels without reaching the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

from lit.mask.chat_templates import ChatTemplate
from lit.mask.scopes import MaskScope

ON_INVALID = ("raise", "skip")
TOO_LONG = ("error", "truncate")


@dataclass(frozen=True)
class LabelSpec:
    """How records become labels: the chat template they are rendered in, the loss scope, the task-template
    sentences the scope treats apart, the length limit and what happens past it (``too_long``) or on an
    unusable record (``on_invalid``), and the folder image paths are relative to."""

    chat_template: ChatTemplate
    scope: MaskScope
    max_length: int
    template_sentences: frozenset[str] = frozenset()
    too_long: str = "error"
    on_invalid: str = "raise"
    image_root: Path | None = None

    def __post_init__(self):
        if self.on_invalid not in ON_INVALID or self.too_long not in TOO_LONG:
            raise ValueError(
                "data.on_invalid must be raise|skip and data.too_long must be error|truncate "
                f"(got {self.on_invalid!r}, {self.too_long!r})"
            )
        object.__setattr__(self, "template_sentences", frozenset(self.template_sentences))
        object.__setattr__(self, "image_root", Path(self.image_root) if self.image_root else None)

    @classmethod
    def of(
        cls, data, *, chat_template: ChatTemplate, scope: MaskScope, template_sentences: frozenset[str] = frozenset()
    ) -> LabelSpec:
        """The spec of a ``data`` group (``max_length``, ``too_long``, ``on_invalid``, ``image_root``)."""
        return cls(
            chat_template,
            scope,
            int(data.max_length),
            template_sentences,
            too_long=data.too_long,
            on_invalid=data.on_invalid,
            image_root=data.get("image_root"),
        )

    def key(self) -> dict:
        """The spec as JSON values, for the label cache's key (the sentences by the hash of their sorted list)."""
        sentences = hashlib.sha256("\n".join(sorted(self.template_sentences)).encode()).hexdigest()
        return {
            "chat_template": dataclasses.asdict(self.chat_template),
            "scope": self.scope.name,
            "supervised_kinds": sorted(self.scope.kinds),  # weights change labels only through which kinds have one
            "template_sentences_sha256": sentences,
            "max_length": self.max_length,
            "too_long": self.too_long,
            "on_invalid": self.on_invalid,
            "image_root": str(self.image_root),
        }
