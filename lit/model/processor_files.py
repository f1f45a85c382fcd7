"""Saving a processor so that code outside this repository loads it: the ``processor_class`` it names."""

from __future__ import annotations

import json
from pathlib import Path

from lit.files import atomic_write


def upstream_processor_class(processor) -> str:
    """The name of the transformers processor class ``processor`` is or derives from. Some families subclass
    transformers' processor to leave out its video processor (whose class needs torchvision); the checkpoint names
    the transformers class, so ``AutoProcessor``, lmms-eval's model classes and vLLM load it outside this
    repository (our own loaders build the processor from the family, whatever the name)."""
    for cls in type(processor).__mro__:
        if cls.__module__.startswith("transformers."):
            return cls.__name__
    raise TypeError(f"{type(processor).__name__} derives from no transformers processor class")


def save_processor(processor, path: str | Path) -> None:
    """``processor.save_pretrained(path)``, every ``processor_class`` it writes (``processor_config.json``,
    ``tokenizer_config.json``) naming the transformers class (``upstream_processor_class``)."""
    processor.save_pretrained(str(path))
    name = upstream_processor_class(processor)
    for file in sorted(Path(path).glob("*.json")):
        data = json.loads(file.read_text())
        if isinstance(data, dict) and data.get("processor_class") not in (None, name):
            data["processor_class"] = name
            atomic_write(file, json.dumps(data, indent=2, ensure_ascii=False) + "\n", what="the processor's config")
