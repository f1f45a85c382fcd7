"""The ``model`` (and ``adapter``) group's part of a training run: tokenizer, model, frozen parts, LoRA.

``build_model`` returns the model ready to train with its processor and prepared tokenizer, whichever way
``cfg.model`` asks for it: a saved checkpoint or hub id (``pretrained``), a new LLaVA composed from a pretrained
LM and vision tower (``compose``), or a tiny model from a config (the demo and the tests).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

log = logging.getLogger(__name__)


@dataclass
class BuiltModel:
    model: object
    processor: object
    tokenizer: object
    image_inputs: object  # lit.data.image_inputs.ImageInputs: pixels and image-token counts for this architecture
    lora: bool
    template: object  # the chat template trained with (``model.chat_template: auto``: the checkpoint's own)


def _template_text(template) -> str:
    """The fixed text a chat template adds around one turn pair (system prompt, role names, separators)."""
    pieces = (*template.system, *template.user, *template.user_text, *template.assistant)
    return "".join(text.replace("{system}", template.system_prompt) for text, kind in pieces if kind != "content")


def tokenizer_for(model_cfg: DictConfig, data_cfg: DictConfig, records: list[dict] | None, template):
    """The tokenizer at ``model.tokenizer``; for a tiny model with ``train_tokenizer``, a BPE trained on the
    training corpus (or ``data.tokenizer_corpus``) the first time."""
    from lit.mask.tokenizer import load_tokenizer, train_bpe
    from lit.records import load_records

    path = model_cfg.tokenizer or model_cfg.pretrained
    if path and Path(path).exists() or not model_cfg.get("train_tokenizer"):
        return load_tokenizer(path)
    corpus = data_cfg.get("tokenizer_corpus")
    if corpus:  # one tokenizer for every data variant built from the same base corpus (e.g. MIns+ arms)
        records = load_records(corpus)
    elif records is None:
        records = load_records(data_cfg.path)
    log.info("training a %d-token BPE tokenizer on %s -> %s", model_cfg.vocab_size, corpus or data_cfg.path, path)
    # the template's own text once per record, as the model sees it, so the BPE does not spell it byte by byte
    texts = [t["value"] for r in records for t in r["conversations"]] + [_template_text(template)] * len(records)
    tok = train_bpe(texts, vocab_size=model_cfg.vocab_size)
    tok.save_pretrained(path)
    return tok


def _load_or_compose(model_cfg: DictConfig, template, tokenizer_of: Callable[[], object], args):
    from lit.mask.tokenizer import prepare_tokenizer
    from lit.model.loading import (
        check_feature_strategy,
        compose_pretrained,
        compose_tiny,
        load_pretrained,
        set_aspect_ratio,
    )

    attn = model_cfg.get("attn_implementation")
    if model_cfg.pretrained:
        model, processor = load_pretrained(model_cfg.pretrained, dtype=model_cfg.dtype, attn=attn)
        set_aspect_ratio(model, processor, model_cfg.get("image_aspect_ratio"))
        check_feature_strategy(model, model_cfg.get("vision_feature_select_strategy"))
        return model, processor
    if model_cfg.get("compose"):
        c = model_cfg.compose
        return compose_pretrained(
            c.text,
            c.vision,
            template,
            dtype=model_cfg.dtype,
            vision_feature_layer=c.get("vision_feature_layer", -2),
            arch=model_cfg.get("arch", "llava"),
            image_grid_pinpoints=model_cfg.get("image_grid_pinpoints"),
            image_aspect_ratio=model_cfg.get("image_aspect_ratio", "pad"),
            attn=attn,
            vision_feature_select_strategy=model_cfg.get("vision_feature_select_strategy"),
        )
    with args.main_process_first(local=False, desc="building the tokenizer"):
        tokenizer = tokenizer_of()
    prepare_tokenizer(tokenizer, template)
    return compose_tiny(model_cfg, tokenizer)


def build_model(
    model_cfg: DictConfig, adapter_cfg: DictConfig, template, args, *, tokenizer_of: Callable[[], object]
) -> BuiltModel:
    """Model, processor and prepared tokenizer; parts frozen as ``model.freeze`` says, LoRA where
    ``adapter=lora``, training images augmented as ``model.image_augment`` says (``lit.data.blip_augment``).
    ``args`` (the run's ``TrainingArguments``) must exist already, so that under ZeRO-3 the weights are
    partitioned as they are built or loaded. ``tokenizer_of`` gives the tokenizer of a tiny model."""
    from lit.data.blip_augment import augment_for
    from lit.mask.tokenizer import prepare_tokenizer
    from lit.model.families import image_inputs_for
    from lit.model.loading import apply_freeze, n_params

    if template is None and not model_cfg.pretrained:
        raise ValueError("model.chat_template=auto reads the template saved with a checkpoint: set model.pretrained")
    model, processor = _load_or_compose(model_cfg, template, tokenizer_of, args)
    if template is None:  # model.chat_template: auto
        from lit.mask.jinja_template import template_of

        template = template_of(processor, model.config)
        log.info("chat template read from %s: %s", model_cfg.pretrained, template)
    tokenizer = processor.tokenizer
    resized = prepare_tokenizer(tokenizer, template)
    if resized:
        model.resize_token_embeddings(len(tokenizer))
    trainable = apply_freeze(model, model_cfg.freeze)
    lora = adapter_cfg.name == "lora"
    if lora:
        from lit.model.lora import apply_lora

        if not model_cfg.pretrained:
            raise ValueError(
                "adapter=lora adds LoRA to a saved model: set model.pretrained (e.g. the stage-1 checkpoint)"
            )
        model = apply_lora(
            model,
            adapter_cfg,
            train_projector=not model_cfg.freeze.projector,
            extra_trainable=["embed_tokens", "lm_head"] if resized else [],
        )
        trainable = {"lora+full": sum(n_params(p) for p in model.parameters() if p.requires_grad)}
    log.info("trainable parameters: %s", trainable)
    inputs = image_inputs_for(model.config, processor)
    inputs.augment = augment_for(model_cfg.get("image_augment"), processor.image_processor, seed=args.seed)
    return BuiltModel(model, processor, tokenizer, inputs, lora, template)
