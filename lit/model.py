"""Build a LLaVA model and its processor with Hugging Face classes (no forked model code).

Three ways, chosen by the ``model`` config group:
- ``pretrained: <hf id or path>``: ``LlavaForConditionalGeneration.from_pretrained`` + ``AutoProcessor``
  (stage 2 from a stage-1 checkpoint, or a finished LLaVA);
- ``compose: {text, vision}``: a pretrained LM and a pretrained vision tower (HF ids or paths) joined by
  a new projector (stage 1, as LLaVA and TinyLLaVA build their models);
- neither: composed from ``text``/``vision`` configs with random weights (the CPU ``tiny`` model of the
  demo and tests, or a real-size architecture for throughput measurements).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (AutoConfig, AutoImageProcessor, AutoModelForCausalLM, AutoProcessor, AutoTokenizer,
                          CLIPImageProcessor, CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig,
                          LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor, Qwen2Config, SiglipVisionConfig)
from transformers.utils import is_torchvision_available

from lit.constants import IMAGE_MARKER

TEXT_CONFIGS = {"llama": LlamaConfig, "qwen2": Qwen2Config}
VISION_CONFIGS = {"clip": CLIPVisionConfig, "siglip": SiglipVisionConfig}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _image_processor(size: int):
    """CLIP preprocessing: the torchvision backend where torchvision is installed (GPU machines), else its
    PIL implementation (CPU machines, where PyPI's CUDA-only torchvision is removed)."""
    cls = CLIPImageProcessor if is_torchvision_available() else CLIPImageProcessorPil
    return cls(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def compose_tiny(cfg, tokenizer) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """A LLaVA composed from configs with random weights; ``cfg.text``/``cfg.vision`` carry the sizes."""
    text_kwargs = {k: v for k, v in dict(cfg.text).items() if k != "arch"}
    vision_kwargs = {k: v for k, v in dict(cfg.vision).items() if k != "arch"}
    text = TEXT_CONFIGS[cfg.text.arch](vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                       **text_kwargs)
    vision = VISION_CONFIGS[cfg.vision.arch](**vision_kwargs)
    strategy = "default" if cfg.vision.arch == "clip" else "full"  # SigLIP has no CLS token to drop
    config = LlavaConfig(text_config=text, vision_config=vision, image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_MARKER),
                         vision_feature_layer=-1, vision_feature_select_strategy=strategy,
                         projector_hidden_act="gelu", tie_word_embeddings=False)
    torch.manual_seed(int(cfg.get("init_seed", 0)))
    model = LlavaForConditionalGeneration(config)
    processor = LlavaProcessor(image_processor=_image_processor(vision.image_size), tokenizer=tokenizer,
                               patch_size=vision.patch_size, vision_feature_select_strategy=strategy,
                               num_additional_image_tokens=1 if strategy == "default" else 0,
                               image_token=IMAGE_MARKER)
    return model, processor


def check_checkpoint(path: str | Path) -> None:
    """A clear error unless ``path`` is a folder that train.py (or HF) wrote: a model or a LoRA adapter."""
    from lit.adapter import is_adapter_checkpoint

    if not ((Path(path) / "config.json").is_file() or is_adapter_checkpoint(path)):
        raise FileNotFoundError(f"{path} is not a checkpoint (no config.json or adapter_config.json); point to the "
                                "'checkpoint' folder train.py writes in its run directory, or to an HF model id")


def load_pretrained(path: str, dtype: str = "float32") -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """Load a full checkpoint (HF id or directory) or a LoRA adapter checkpoint (merged on load); a clear
    error if it is not there (e.g. offline)."""
    from lit.adapter import is_adapter_checkpoint, load_adapter_checkpoint

    if Path(path).exists():
        check_checkpoint(path)
    try:
        processor = AutoProcessor.from_pretrained(path)
        if is_adapter_checkpoint(path):  # a LoRA run saved with adapter.save=adapter
            return load_adapter_checkpoint(path, DTYPES[dtype]), processor
        model = LlavaForConditionalGeneration.from_pretrained(path, dtype=DTYPES[dtype])
    except OSError as err:
        raise FileNotFoundError(f"cannot load model {path!r}: {err}. Offline? Download it first "
                                "(huggingface-cli download) and set model.pretrained to the local path.") from err
    return model, processor


def num_image_tokens(model: LlavaForConditionalGeneration) -> int:
    """How many positions one image occupies in input_ids (LLaVA-1.5 at 336 px: 576)."""
    vision = model.config.vision_config
    return (vision.image_size // vision.patch_size) ** 2  # CLIP's CLS is dropped ("default"); SigLIP has none


def apply_freeze(model: LlavaForConditionalGeneration, freeze) -> dict[str, int]:
    """Freeze the parts named in ``freeze`` (vision/projector/lm); returns trainable parameter counts."""
    parts = {"vision": model.model.vision_tower, "projector": model.model.multi_modal_projector,
             "lm": [model.model.language_model, model.lm_head]}
    counts = {}
    for name, modules in parts.items():
        modules = modules if isinstance(modules, list) else [modules]
        for module in modules:
            module.requires_grad_(not bool(freeze.get(name, False)))
        counts[name] = sum(p.numel() for m in modules for p in m.parameters() if p.requires_grad)
    return counts


def compose_pretrained(text: str, vision: str, template, dtype: str = "float32", vision_feature_layer: int = -2) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """A LLaVA from a pretrained causal LM and a pretrained vision tower (CLIP or SigLIP) with a new,
    randomly initialised projector. The LLaVA skeleton is built on the meta device and the loaded modules
    are put into it, so a 7B/13B model is held once in memory, not a random copy plus the loaded one. LLaVA-1.5 takes the penultimate vision layer (``vision_feature_layer``
    -2) and drops CLIP's CLS token; SigLIP has none, so all its patches are kept."""
    from lit.tokenizer import ensure_special_tokens

    try:
        tokenizer = AutoTokenizer.from_pretrained(text)
        text_cfg = AutoConfig.from_pretrained(text)
        vision_cfg = AutoConfig.from_pretrained(vision)
        image_processor = AutoImageProcessor.from_pretrained(vision)
    except OSError as err:
        raise FileNotFoundError(f"cannot load {text!r} / {vision!r}: {err}. Offline? Download them first and set "
                                "model.compose.text / model.compose.vision to local paths.") from err
    ensure_special_tokens(tokenizer, template)
    vision_cfg = getattr(vision_cfg, "vision_config", vision_cfg)
    strategy = "default" if vision_cfg.model_type.startswith("clip") else "full"
    config = LlavaConfig(text_config=text_cfg, vision_config=vision_cfg,
                         image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_MARKER),
                         vision_feature_layer=vision_feature_layer, vision_feature_select_strategy=strategy,
                         projector_hidden_act="gelu", tie_word_embeddings=text_cfg.tie_word_embeddings)
    with torch.device("meta"):  # the skeleton takes no memory and no init time; its parts are put in below
        model = LlavaForConditionalGeneration(config)
    lm = AutoModelForCausalLM.from_pretrained(text, dtype=DTYPES[dtype])
    model.model.language_model = lm.get_decoder()
    model.lm_head = lm.get_output_embeddings()
    model.model.vision_tower = type(model.model.vision_tower).from_pretrained(vision, dtype=DTYPES[dtype])
    projector = type(model.model.multi_modal_projector)(config)  # the only new weights, initialised as HF does
    model.model.multi_modal_projector = projector.to(DTYPES[dtype])
    on_meta = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if on_meta:
        raise RuntimeError(f"composed model has uninitialised tensors: {on_meta[:3]}")
    if len(tokenizer) != model.config.text_config.vocab_size:
        model.resize_token_embeddings(len(tokenizer))
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=vision_cfg.patch_size,
                               vision_feature_select_strategy=strategy,
                               num_additional_image_tokens=1 if strategy == "default" else 0, image_token=IMAGE_MARKER)
    return model, processor
