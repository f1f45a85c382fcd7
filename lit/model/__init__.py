"""The ``model`` group's code: building and loading models, parameter parts, LoRA, tokenizer preparation, the
checkpoint's chat template, the memory plan."""
