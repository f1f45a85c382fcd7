"""The paper models' architectures as published (``conf/architecture/*.yaml``, each citing its config.json),
built without weights: on the meta device for ``lit.train.plan``, or with fewer layers for ``lit.train.smoke``."""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import (
    CLIPVisionConfig,
    InstructBlipConfig,
    InstructBlipQFormerConfig,
    InstructBlipVisionConfig,
    LlamaConfig,
)

from lit.model.loading import ARCHS, TEXT_CONFIGS, VISION_CONFIGS
from lit.paths import conf_dir

ARCH_DIR = conf_dir() / "architecture"


def load_architecture(name: str) -> DictConfig:
    path = ARCH_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in ARCH_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"no architecture {name!r} in {ARCH_DIR}; known: {', '.join(known)}")
    return OmegaConf.load(path)


def _sub(cfg: DictConfig, key: str) -> dict:
    return {k: v for k, v in OmegaConf.to_container(cfg[key]).items() if k != "arch"}


def build_config(arch: DictConfig, text_layers: int | None = None, vision_layers: int | None = None):
    """The transformers config of ``arch`` (optionally with fewer LM / vision layers)."""
    text_kwargs, vision_kwargs = _sub(arch, "text"), _sub(arch, "vision")
    if text_layers:
        text_kwargs["num_hidden_layers"] = text_layers
    if vision_layers:
        vision_kwargs["num_hidden_layers"] = vision_layers
    text = TEXT_CONFIGS.get(arch.text.arch, LlamaConfig)(**text_kwargs)
    if arch.arch == "instructblip":
        return InstructBlipConfig(
            vision_config=InstructBlipVisionConfig(**vision_kwargs),
            qformer_config=InstructBlipQFormerConfig(**_sub(arch, "qformer")),
            text_config=text,
            num_query_tokens=arch.num_query_tokens,
            image_token_index=arch.image_token_index,
        )
    vision = VISION_CONFIGS.get(arch.vision.arch, CLIPVisionConfig)(**vision_kwargs)
    extra = (
        {"image_grid_pinpoints": OmegaConf.to_container(arch.image_grid_pinpoints)} if arch.arch == "llava_next" else {}
    )
    return ARCHS[arch.arch][0](
        text_config=text,
        vision_config=vision,
        image_token_index=arch.image_token_index,
        vision_feature_layer=arch.vision_feature_layer,
        vision_feature_select_strategy=arch.vision_feature_select_strategy,
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
        **extra,
    )


def build_meta(arch: DictConfig):
    """The whole model on the meta device: every parameter's shape, no memory."""
    with torch.device("meta"):
        return ARCHS[arch.arch][1](build_config(arch))


def image_positions(arch: DictConfig) -> dict[str, int]:
    """Positions one image takes in the LM's input, counted by the architecture's own processor: LLaVA's fixed
    count, InstructBLIP's query tokens, LLaVA-NeXT's count for an image of each grid pinpoint's size."""
    from lit.constants import IMAGE_MARKER
    from lit.mask.tokenizer import train_bpe
    from lit.model.families import image_inputs_for
    from lit.model.loading import _image_processor, _processor

    config = build_config(arch, text_layers=1, vision_layers=1)
    tokenizer = train_bpe(["a stand-in tokenizer: only the image marker matters"], vocab_size=300)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_MARKER]})
    size = config.vision_config.image_size
    if arch.arch == "instructblip":
        processor = _processor(
            "instructblip", _image_processor(size, "blip"), tokenizer, config.vision_config, "default", config
        )
        return {f"{size}x{size}": int(config.num_query_tokens)}
    strategy = config.vision_feature_select_strategy
    kind = "llava_next" if arch.arch == "llava_next" else "clip"
    extra = {"image_grid_pinpoints": config.image_grid_pinpoints} if kind == "llava_next" else {}
    processor = _processor(
        arch.arch, _image_processor(size, kind, **extra), tokenizer, config.vision_config, strategy, config
    )
    inputs = image_inputs_for(config, processor)
    if arch.arch != "llava_next":
        return {f"{size}x{size}": inputs.n_tokens()}
    return {f"{w}x{h}": inputs.n_tokens(h, w) for h, w in config.image_grid_pinpoints}
