"""An on-disk cache of the labelled data set (Hugging Face ``datasets``, Arrow, memory-mapped).

Tokenizing and labelling LLaVA-mix-665K takes minutes; a second run with the same inputs reads the
result back instead. The cache key covers everything the labels depend on: the data file's bytes, the
tokenizer (its full serialisation), the chat template, the mask scope, the template sentences,
max_length / too_long / on_invalid, how images become positions (``ImageInputs.spec``) and the image root, and the source of the code that
builds labels (so a change there invalidates old entries). Entries live in ``<cache_dir>/labels_<key>/``
(``data/`` Arrow files + ``audit.json``) and are written under a temporary name and renamed, so ranks
that build at the same time never read a half-written entry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)
LABEL_CODE = ("chat_templates.py", "data.py", "image_inputs.py", "mask.py", "records.py", "render.py", "templates.py")


def _tokenizer_state(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return body + json.dumps({"specials": tokenizer.all_special_tokens, "added": sorted(tokenizer.get_added_vocab().items()),
                              "cls": type(tokenizer).__name__, "bos": getattr(tokenizer, "add_bos_token", None)})


def fingerprint(data_path: str | Path, *, tokenizer, template, scope, templates, max_length, too_long, on_invalid,
                image_inputs, image_root) -> str:
    h = hashlib.sha256()
    with open(data_path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            h.update(block)
    code_dir = Path(__file__).parent
    for name in LABEL_CODE:
        h.update((code_dir / name).read_bytes())
    h.update(_tokenizer_state(tokenizer).encode())
    h.update(json.dumps({"template": dataclasses.asdict(template), "scope": scope.name,
                         "templates": sorted(templates), "max_length": max_length, "too_long": too_long,
                         "on_invalid": on_invalid, "image_inputs": image_inputs.spec(),
                         "image_root": str(image_root)}, sort_keys=True, default=str).encode())
    return h.hexdigest()[:20]


def labelled_dataset(records: list[dict], data_path: str | Path, cache_dir: str | Path | None, **kwargs):
    """A ``SupervisedDataset`` of ``records`` (read from ``data_path``), from the cache when it holds one."""
    from lit.data import SupervisedDataset

    if not cache_dir:
        return SupervisedDataset(records, **kwargs)
    key = fingerprint(data_path, **{k: kwargs[k] for k in ("tokenizer", "template", "scope", "max_length",
                                                           "image_inputs", "image_root")},
                      templates=kwargs.get("templates", frozenset()), too_long=kwargs.get("too_long", "error"),
                      on_invalid=kwargs.get("on_invalid", "raise"))
    entry = Path(cache_dir) / f"labels_{key}"
    if (entry / "audit.json").is_file():
        log.info("labels read from the cache %s", entry)
        return SupervisedDataset.load_labels(entry, tokenizer=kwargs["tokenizer"], image_inputs=kwargs["image_inputs"],
                                             image_root=kwargs["image_root"])
    dataset = SupervisedDataset(records, **kwargs)
    tmp = entry.with_name(f"{entry.name}.tmp-{os.getpid()}")
    dataset.save_labels(tmp)
    try:
        tmp.rename(entry)
        log.info("labels cached in %s", entry)
    except OSError:  # another rank finished first: its entry is the same
        shutil.rmtree(tmp, ignore_errors=True)
    return dataset
