"""The supervised data set: LLaVA records -> (input_ids, labels, pixel_values), labels by mask scope.

Labels are built once, up front, with a progress bar (or read back from the on-disk label cache,
``lit.data.label_cache``); images are read lazily in ``__getitem__``.
Bad records raise a ``RecordError`` naming the record, or, with ``on_invalid: skip``, are skipped and
counted with their reason in the audit report (``data_audit.json`` in the run directory).
A record may have several images (``"image": [...]``, one ``<image>`` marker each, ``lit.records.record_images``):
each marker is expanded to the positions its image takes, and the item's ``image`` is then the list of the
images' inputs, in order.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from lit.constants import IGNORE_INDEX, SPAN_KINDS
from lit.data.image_inputs import ImageInputs, open_image
from lit.data.labels import LabelSpec
from lit.files import atomic_write
from lit.mask.chat_templates import lavis_layout
from lit.mask.render import encode, expand_images, render
from lit.mask.scopes import labels_for, supervised_counts, token_weights
from lit.records import RecordError, record_id, record_images


def check_image_root(records: list[dict], image_root: str | Path | None) -> None:
    """A clear error, before anything is built, if image records point into a folder that is not there."""
    if image_root and not Path(image_root).is_dir() and any(record_images(r) for r in records):
        n = sum(bool(record_images(r)) for r in records)
        raise FileNotFoundError(
            f"image root {image_root} does not exist but {n} records have images "
            "(set data.image_root, or LIT_DATA_DIR for the default layout)"
        )


@dataclass
class Example:
    record_id: object
    input_ids: np.ndarray  # (T,) with the image as one position
    labels: np.ndarray  # (T,)
    kinds: np.ndarray  # (T,) int8: each token's span kind (``KIND_INDEX``), which its loss weight follows
    kind_counts: np.ndarray  # (len(SPAN_KINDS),) supervised tokens per kind
    image: Path | Image.Image | list | None  # a file, or an image in memory (never saved to the label cache); a
    # list of them for a record with several images
    n_image_tokens: int | list[int] = 0  # positions the image takes in the model's input (0: no image); a list
    # (one count per image) where ``image`` is a list
    extra: dict = field(default_factory=dict)  # other token inputs, e.g. InstructBLIP's qformer_input_ids


@dataclass
class Audit:
    """What happened to every record: used, skipped (with reason) or truncated."""

    n_records: int = 0
    skipped: list[dict] = field(default_factory=list)
    truncated: list[object] = field(default_factory=list)
    supervised_by_kind: Counter = field(default_factory=Counter)
    tokens_by_kind: Counter = field(default_factory=Counter)  # every token of the used records, supervised or not

    def template_share(self) -> float | None:
        """Share of the user's words (instruction + template tokens) that are template sentences; None if none."""
        words = self.tokens_by_kind["instruction"] + self.tokens_by_kind["template"]
        return self.tokens_by_kind["template"] / words if words else None

    def to_json(self) -> dict:
        reasons = Counter(s["reason"].split(":")[0] for s in self.skipped)
        return {
            "n_records": self.n_records,
            "n_used": self.n_records - len(self.skipped),
            "n_skipped": len(self.skipped),
            "skipped_by_reason": dict(reasons),
            "skipped": self.skipped,
            "n_truncated": len(self.truncated),
            "truncated": self.truncated,
            "supervised_tokens_by_kind": dict(self.supervised_by_kind),
            "tokens_by_kind": dict(self.tokens_by_kind),
        }


def as_list(value) -> list:
    """An ``Example``'s ``image`` or ``n_image_tokens`` (or an item's ``image``) as a list, one entry per image."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


class SupervisedDataset(Dataset):
    """LLaVA-format records rendered in ``spec.chat_template``, tokenized and labelled by ``spec.scope``.

    Each item: ``input_ids``/``labels`` (T',) with the image placeholder expanded to as many positions
    as ``image_inputs`` says the image takes (labels IGNORE_INDEX there), ``image``: the per-image model
    inputs (``pixel_values``, and ``image_sizes`` for LLaVA-NeXT) or None (a list of them, in order, for a
    record with several images), ``kind_counts``
    (len(SPAN_KINDS),), ``loss_weights`` (T',) float32 where the scope is weighted (``loss.weights``: each labelled
    token's kind weight, 0 elsewhere), and any per-record token inputs (InstructBLIP's ``qformer_input_ids``).
    """

    def __init__(
        self,
        records: list[dict],
        spec: LabelSpec,
        tokenizer,
        image_inputs: ImageInputs,
        *,
        progress: bool = True,
        first_index: int = 0,
        allow_empty: bool = False,
    ):
        """``spec``: how the records are labelled (``lit.data.labels.LabelSpec``); ``first_index``: the position of
        ``records[0]`` in the data file (record ids of id-less records, when a shard of the file is labelled);
        ``allow_empty``: a shard may have no usable record."""
        self.spec = spec
        self._set_inputs(tokenizer, image_inputs)
        self.audit = Audit(n_records=len(records))
        self.examples: list[Example] = []
        check_image_root(records, spec.image_root)
        for i, record in enumerate(
            tqdm(records, desc=f"building labels ({spec.scope.name})", disable=not progress, mininterval=1.0)
        ):
            rid = record_id(record, first_index + i)
            try:
                example = self._build(record, rid, tokenizer)
            except RecordError as err:
                if spec.on_invalid == "raise":
                    raise
                self.audit.skipped.append({"id": rid, "reason": err.reason})
                continue
            self.examples.append(example)
            for k, n in zip(SPAN_KINDS, example.kind_counts.tolist()):
                if n:
                    self.audit.supervised_by_kind[k] += n
        if not self.examples and not allow_empty:
            raise ValueError(f"no usable records out of {len(records)}; first problems: {self.audit.skipped[:3]}")

    def _set_inputs(self, tokenizer, image_inputs: ImageInputs) -> None:
        """What ``__getitem__`` needs besides the examples: the image inputs and the image token id."""
        self.image_inputs = image_inputs
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.spec.chat_template.image_token)
        self.pad_token_id = tokenizer.pad_token_id

    def _build(self, record, rid, tokenizer) -> Example:
        spec, template, max_length = self.spec, self.spec.chat_template, self.spec.max_length
        images, counts = self._images(record, rid)
        image = None if not images else images[0] if len(images) == 1 else images
        n_image = 0 if not counts else counts[0] if len(counts) == 1 else counts
        enc = encode(
            render(record, template, template_sentences=spec.template_sentences, record_id=rid),
            tokenizer,
            record_id=rid,
            image_token_id=self.image_token_id,
        )
        enc.input_ids, enc.kinds = lavis_layout(template, enc.input_ids, enc.kinds, truncate=True)  # InstructBLIP
        labels = labels_for(enc, spec.scope, tokenizer)
        if len(images) > 1 and np.count_nonzero(enc.input_ids == self.image_token_id) != len(images):
            raise RecordError(rid, f"the text holds {template.image_token} besides its {len(images)} image markers")
        extra = sum(max(n - 1, 0) for n in counts)
        truncated = len(labels) + extra > max_length
        if truncated:
            if spec.too_long == "error":
                raise RecordError(
                    rid,
                    f"too long: {len(labels) + extra} tokens > max_length {max_length}; "
                    "raise data.max_length or set data.too_long=truncate",
                )
            keep = max_length - extra  # text positions left beside the image's; the item is cut to max_length
            at = np.nonzero(enc.input_ids == self.image_token_id)[0][: len(images)] if images else ()
            if len(at) == 1 and keep <= at[0]:
                raise RecordError(
                    rid,
                    f"too long: the image ({n_image} positions after {at[0]} tokens) does not fit "
                    f"in max_length {max_length}; raise data.max_length",
                )
            if len(at) > 1 and keep <= at[-1]:  # the text is cut after the last image, never inside the images
                raise RecordError(
                    rid,
                    f"too long: the {len(images)} images ({sum(counts)} positions, the last after {at[-1]} "
                    f"tokens) do not fit in max_length {max_length}; raise data.max_length",
                )
            enc.input_ids, enc.kinds, labels = enc.input_ids[:keep], enc.kinds[:keep], labels[:keep]
        if not (labels != IGNORE_INDEX).any():
            raise RecordError(rid, "no supervised tokens: every label is masked (after truncation)")
        if truncated:
            self.audit.truncated.append(rid)
        for k, n in zip(SPAN_KINDS, np.bincount(enc.kinds, minlength=len(SPAN_KINDS)).tolist()):
            if n:
                self.audit.tokens_by_kind[k] += n
        return Example(
            rid,
            enc.input_ids.astype(np.int64),
            labels.astype(np.int64),
            enc.kinds.astype(np.int8),
            supervised_counts(enc, labels),
            image,
            n_image,
            self.image_inputs.text_inputs(record, rid),
        )

    def _images(self, record: dict, rid) -> tuple[list, list[int]]:
        """The record's images (files under the image root, or images in memory) and the positions each takes."""
        spec, given = self.spec, record_images(record)
        if not given:
            if self.image_inputs.requires_image:
                raise RecordError(rid, "text-only record: this model (InstructBLIP) needs an image in every record")
            return [], []
        most = self.image_inputs.max_images
        if most is not None and len(given) > most:
            raise RecordError(
                rid, f"{len(given)} images: this model ({self.image_inputs.model_name}) takes {most} per record"
            )
        images = []
        for entry in given:
            if isinstance(entry, Image.Image):  # an image in memory (a decoded ``datasets`` image column)
                images.append(entry)
                continue
            path = (spec.image_root / entry) if spec.image_root else Path(entry)
            if not path.is_file():
                raise RecordError(rid, f"missing image: {path} does not exist (check data.image_root)")
            images.append(path)
        return images, self.image_inputs.n_tokens_of_record(images, rid)

    def save_labels(self, folder: str | Path) -> None:
        """Write the labelled examples (Arrow, via ``datasets``) and the audit; ``load_labels`` reads them."""
        from datasets import Dataset as ArrowDataset

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "audit.json").write_text(json.dumps(self.audit.to_json(), default=str))
        if not self.examples:  # an empty shard: its audit only
            return
        in_memory = next(
            (e.record_id for e in self.examples if any(isinstance(im, Image.Image) for im in as_list(e.image))), None
        )
        if in_memory is not None:
            raise RecordError(in_memory, "its image is in memory, not a file: such labels are not cached")
        columns = {
            "record_id": [json.dumps(e.record_id) for e in self.examples],
            "input_ids": [e.input_ids.astype(np.int32) for e in self.examples],
            "labels": [e.labels.astype(np.int32) for e in self.examples],
            "kinds": [e.kinds for e in self.examples],
            "kind_counts": [e.kind_counts for e in self.examples],
            "image": [[str(im) for im in as_list(e.image)] for e in self.examples],
            "n_image_tokens": [[int(n) for n in as_list(e.n_image_tokens)] for e in self.examples],
            "length": self.lengths(),
        }
        for key in self.examples[0].extra:
            columns[f"extra.{key}"] = [e.extra[key].astype(np.int32) for e in self.examples]
        ArrowDataset.from_dict(columns).save_to_disk(str(folder / "data"))

    @classmethod
    def load_labels(
        cls, folder: str | Path, spec: LabelSpec, tokenizer, image_inputs: ImageInputs
    ) -> SupervisedDataset:
        """A data set whose examples are read (memory-mapped) from ``save_labels``' folder."""
        from datasets import load_from_disk

        self = cls.__new__(cls)
        self.spec = spec
        self._set_inputs(tokenizer, image_inputs)
        report = json.loads((Path(folder) / "audit.json").read_text())
        self.audit = Audit(
            n_records=report["n_records"],
            skipped=report["skipped"],
            truncated=report["truncated"],
            supervised_by_kind=Counter(report["supervised_tokens_by_kind"]),
            tokens_by_kind=Counter(report.get("tokens_by_kind", {})),
        )
        self.examples = _ArrowExamples(load_from_disk(str(Path(folder) / "data")))
        return self

    def __len__(self) -> int:
        return len(self.examples)

    def lengths(self) -> list[int]:
        """Token lengths after image expansion (for length-grouped sampling)."""
        if isinstance(self.examples, _ArrowExamples):
            return list(self.examples.table["length"])
        return [len(e.input_ids) + sum(max(n - 1, 0) for n in as_list(e.n_image_tokens)) for e in self.examples]

    def has_image(self) -> list[bool]:
        """Whether each example carries an image (for modality-grouped sampling)."""
        if isinstance(self.examples, _ArrowExamples):
            return [bool(paths) for paths in self.examples.table["image"]]
        return [e.image is not None for e in self.examples]

    def _pixels(self, ex: Example) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        rgbs = []
        for image in as_list(ex.image):
            if isinstance(image, Image.Image):
                rgbs.append(image.convert("RGB"))
            else:
                with open_image(image, ex.record_id) as img:
                    rgbs.append(img.convert("RGB"))
        if self.image_inputs.augment is not None:  # training-only augmentation (lit.data.blip_augment)
            out = [self.image_inputs.augment(rgb, ex.record_id) for rgb in rgbs]
        else:
            out = self.image_inputs.record_pixels(rgbs)
        return out[0] if len(out) == 1 else out

    def __getitem__(self, idx: int) -> dict:
        ex = self.examples[idx]
        ids, labels = ex.input_ids, ex.labels
        weights = token_weights(ex.kinds, labels, self.spec.scope) if self.spec.scope.weighted else None
        image = None
        if ex.image is not None:
            counts = as_list(ex.n_image_tokens)
            labels = expand_images(labels, ids, self.image_token_id, counts, [IGNORE_INDEX] * len(counts))
            if weights is not None:
                weights = expand_images(weights, ids, self.image_token_id, counts, [0.0] * len(counts))
            image_ids = [self.image_inputs.image_ids(n, self.image_token_id) for n in counts]
            ids = expand_images(ids, ids, self.image_token_id, counts, image_ids)
            image = self._pixels(ex)
        return {
            "input_ids": torch.from_numpy(ids),
            "labels": torch.from_numpy(labels),
            "image": image,
            "kind_counts": torch.from_numpy(ex.kind_counts),
            **({"loss_weights": torch.from_numpy(weights)} if weights is not None else {}),
            **{key: torch.from_numpy(value) for key, value in ex.extra.items()},
        }

    def write_audit(self, path: str | Path) -> dict:
        report = self.audit.to_json()
        atomic_write(Path(path), json.dumps(report, indent=1, default=str), what="the data audit")
        return report


class _ArrowExamples:
    """``Example``s read row by row from a memory-mapped Arrow table (the label cache)."""

    def __init__(self, table):
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, idx: int) -> Example:
        row = self.table[int(idx)]
        extra = {
            key[len("extra.") :]: np.asarray(value, dtype=np.int64)
            for key, value in row.items()
            if key.startswith("extra.")
        }
        return Example(
            json.loads(row["record_id"]),
            np.asarray(row["input_ids"], dtype=np.int64),
            np.asarray(row["labels"], dtype=np.int64),
            np.asarray(row["kinds"], dtype=np.int8),
            np.asarray(row["kind_counts"], dtype=np.int64),
            _one_or_list([Path(p) for p in row["image"]]),
            _one_or_list([int(n) for n in row["n_image_tokens"]]) or 0,
            extra,
        )


def _one_or_list(values: list):
    """None for no entry, the entry for one, the list for several (``Example.image`` / ``n_image_tokens``)."""
    return None if not values else values[0] if len(values) == 1 else values
