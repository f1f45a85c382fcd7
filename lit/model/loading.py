"""Build a vision-language model and its processor with Hugging Face classes (no forked model code).

Architectures (``model.arch``): ``llava`` (LLaVA-1.5, TinyLLaVA), ``llava_next`` (LLaVA-NeXT, any-resolution
tiling) and ``instructblip`` (InstructBLIP: Q-Former + query tokens). Three ways to build, chosen by the
``model`` config group:
- ``pretrained: <hf id or path>``: ``AutoModelForImageTextToText.from_pretrained`` + ``AutoProcessor``
  (stage 2 from a stage-1 checkpoint, or a finished model);
- ``compose: {text, vision}``: a pretrained LM and a pretrained vision tower (HF ids or paths) joined by
  a new projector (stage 1, as LLaVA, LLaVA-NeXT and TinyLLaVA build their models);
- neither: composed from ``text``/``vision`` configs with random weights (the CPU ``tiny`` model of the
  demo and tests, or a real-size architecture for throughput measurements).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    CLIPVisionConfig,
    InstructBlipConfig,
    InstructBlipProcessor,
    InstructBlipQFormerConfig,
    InstructBlipVisionConfig,
    LlamaConfig,
    PhiConfig,
    Qwen2Config,
    SiglipVisionConfig,
)

from lit.constants import IMAGE_MARKER
from lit.model.families import FAMILIES, family_of
from lit.model.parts import PARTS, part_of

TEXT_CONFIGS = {"llama": LlamaConfig, "qwen2": Qwen2Config, "phi": PhiConfig}
VISION_CONFIGS = {"clip": CLIPVisionConfig, "siglip": SiglipVisionConfig}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# The families composed here from configs or from a pretrained LM and vision tower (the others bring their own
# ``compose_tiny``): model_type -> (config, model, processor) classes, read from lit.model.families.
ARCHS = {t: (f.config_class, f.model_class, f.processor_class) for t, f in FAMILIES.items() if f.compose_tiny is None}


def attn_implementation(name: str | None = "auto") -> str:
    """``model.attn_implementation``: ``auto`` is FlashAttention-2 (as LLaVA trains) where the ``flash_attn``
    package and a CUDA GPU are there, else PyTorch's SDPA; any other value is passed to transformers as is."""
    import importlib.util

    if name in (None, "auto"):
        return "flash_attention_2" if importlib.util.find_spec("flash_attn") and torch.cuda.is_available() else "sdpa"
    return name


def n_params(param) -> int:
    """Elements of a parameter, also when ZeRO-3 has partitioned it away (``ds_numel``)."""
    return getattr(param, "ds_numel", param.numel())


PIL_BACKEND = "pil"  # transformers 5's PIL image processors: the pixels every parity test checks


def _image_processor(size: int, kind: str = "clip", **kwargs):
    """The image processor of an architecture, always its PIL implementation (``<Name>Pil``): transformers 5
    picks the torchvision backend by default where torchvision is installed (the GPU env), and its resize
    gives other pixels than the PIL path LLaVA, TinyLLaVA and the parity tests use. ``siglip``: a plain resize
    to ``size`` x ``size`` (SigLIP's processor has no crop)."""
    import transformers

    name = {
        "clip": "CLIPImageProcessor",
        "llava_next": "LlavaNextImageProcessor",
        "blip": "BlipImageProcessor",
        "siglip": "SiglipImageProcessor",
    }[kind]
    cls = getattr(transformers, f"{name}Pil")
    if kind in ("blip", "siglip"):
        return cls(size={"height": size, "width": size}, **kwargs)
    return cls(size={"shortest_edge": size}, crop_size={"height": size, "width": size}, **kwargs)


def load_image_processor(path: str):
    """The image processor saved at ``path`` (a vision tower or a checkpoint), in its PIL implementation
    whatever transformers would default to (``backend="pil"``, transformers 5's successor of ``use_fast=False``)."""
    return AutoImageProcessor.from_pretrained(path, backend=PIL_BACKEND)


# LLaVA's and TinyLLaVA's data_args.image_aspect_ratio; "crop" is an older name of "square"
ASPECT_RATIOS = ("pad", "square", "crop")


def with_aspect_ratio(image_processor, mode: str):
    """LLaVA-1.5's and TinyLLaVA's ``image_aspect_ratio``: ``pad`` pads each image to a square with the
    processor's mean colour before resizing (LLaVA's ``expand2square``; transformers' ``LlavaImageProcessor``
    with ``do_pad``, which the saved processor carries, so lmms-eval's ``llava_hf`` sees the same pixels);
    ``square`` (their default; also ``crop``) is the vision tower's own processor: CLIP resizes the shorter
    side and centre-crops, losing a non-square image's sides; SigLIP resizes to its square size, no crop.
    Returns a PIL ``LlavaImageProcessor`` with the given processor's size, crop, resampling and normalisation."""
    if mode not in ASPECT_RATIOS:
        raise ValueError(f"model.image_aspect_ratio={mode!r}; choose one of {', '.join(ASPECT_RATIOS)}")
    ip = image_processor
    if type(ip).__name__ == "LlavaImageProcessorPil" and bool(ip.do_pad) == (mode == "pad"):
        return ip
    keep = {
        k: getattr(ip, k)
        for k in (
            "size",
            "crop_size",
            "do_center_crop",
            "resample",
            "image_mean",
            "image_std",
            "rescale_factor",
            "do_convert_rgb",
        )
        if getattr(ip, k, None) is not None
    }
    keep = {
        k: {n: v for n, v in dict(v).items() if v is not None} if k in ("size", "crop_size") else v
        for k, v in keep.items()
    }
    keep.setdefault("do_center_crop", False)  # SigLIP resizes to a fixed square and has no crop
    if "crop_size" not in keep and {"height", "width"} <= set(keep["size"]):  # the size the pixels have
        keep["crop_size"] = dict(keep["size"])  # (LlavaProcessor counts image positions from crop_size)
    import transformers

    return transformers.LlavaImageProcessorPil(**keep, do_pad=mode == "pad")


def set_aspect_ratio(model, processor, mode: str | None) -> None:
    """Apply ``model.image_aspect_ratio`` to a loaded LLaVA's processor (e.g. a hub checkpoint saved with
    CLIP's crop); other architectures tile (NeXT) or resize (InstructBLIP) as their originals do."""
    if mode and model.config.model_type == "llava":
        processor.image_processor = with_aspect_ratio(processor.image_processor, mode)


STRATEGIES = ("default", "full")


def feature_strategy(vision_cfg, strategy: str | None = None) -> str:
    """``model.vision_feature_select_strategy`` (transformers' names): ``default`` drops the vision tower's
    first position (CLIP's CLS token as LLaVA-1.5 does; for SigLIP, which has no CLS token, its first patch, as
    TinyLLaVA Factory's ``patch`` selection does: 728 of 729 positions), ``full`` keeps them all. None: by the
    tower, ``default`` for CLIP and ``full`` for SigLIP."""
    if strategy is None:
        return "full" if vision_cfg.model_type.startswith("siglip") else "default"
    if strategy not in STRATEGIES:
        raise ValueError(f"model.vision_feature_select_strategy={strategy!r}; choose one of {', '.join(STRATEGIES)}")
    return strategy


def check_feature_strategy(model, strategy: str | None) -> None:
    """A loaded LLaVA keeps the strategy its checkpoint was built with: a clear error where the model config's
    ``model.vision_feature_select_strategy`` says otherwise (e.g. a stage-1 checkpoint made before the
    config changed), instead of training on another number of image positions."""
    have = getattr(model.config, "vision_feature_select_strategy", None)
    if strategy is not None and have is not None and have != strategy:
        raise ValueError(
            f"the checkpoint selects vision features with {have!r} but the model config's "
            f"model.vision_feature_select_strategy is {strategy!r}: rebuild the stage-1 checkpoint "
            "with this config, or set the option to the checkpoint's"
        )


def _processor(arch: str, image_processor, tokenizer, vision_cfg, strategy: str, config):
    from lit.data.image_inputs import extra_vision_positions

    if arch == "instructblip":
        return InstructBlipProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            qformer_tokenizer=tokenizer,
            num_query_tokens=config.num_query_tokens,
        )
    return ARCHS[arch][2](
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=vision_cfg.patch_size,
        vision_feature_select_strategy=strategy,
        num_additional_image_tokens=extra_vision_positions(vision_cfg),
        image_token=IMAGE_MARKER,
    )


def compose_tiny(cfg, tokenizer):
    """A model of ``cfg.arch`` composed from configs with random weights; ``cfg.text``/``cfg.vision`` carry
    the sizes (and ``cfg.qformer``/``num_query_tokens`` for InstructBLIP, ``image_grid_pinpoints`` for NeXT)."""
    arch = cfg.get("arch", "llava")
    if family_of(arch).compose_tiny is not None:  # a family that builds its own (lit.model.families)
        return family_of(arch).compose_tiny(cfg, tokenizer)
    text_kwargs = {k: v for k, v in dict(cfg.text).items() if k != "arch"}
    vocab = max(len(tokenizer), int(text_kwargs.pop("vocab_size", 0)))  # a published (padded) vocabulary is kept
    vision_kwargs = {k: v for k, v in dict(cfg.vision).items() if k != "arch"}
    text = TEXT_CONFIGS[cfg.text.arch](
        vocab_size=vocab,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **text_kwargs,
    )
    image_token = tokenizer.convert_tokens_to_ids(IMAGE_MARKER)
    strategy = "default"
    if arch == "instructblip":
        vision = InstructBlipVisionConfig(**vision_kwargs)
        qformer_kwargs = {k: v for k, v in dict(cfg.qformer).items() if k != "encoder_hidden_size"}
        qformer = InstructBlipQFormerConfig(
            vocab_size=max(len(tokenizer), int(qformer_kwargs.pop("vocab_size", 0))),
            pad_token_id=tokenizer.pad_token_id,
            encoder_hidden_size=vision.hidden_size,
            **qformer_kwargs,
        )
        config = InstructBlipConfig(
            vision_config=vision,
            qformer_config=qformer,
            text_config=text,
            num_query_tokens=cfg.num_query_tokens,
            image_token_index=image_token,
        )
        image_processor = _image_processor(vision.image_size, "blip")
    else:
        vision = VISION_CONFIGS[cfg.vision.arch](**vision_kwargs)
        strategy = feature_strategy(vision, cfg.get("vision_feature_select_strategy"))
        extra = {"image_grid_pinpoints": [list(p) for p in cfg.image_grid_pinpoints]} if arch == "llava_next" else {}
        config = ARCHS[arch][0](
            text_config=text,
            vision_config=vision,
            image_token_index=image_token,
            vision_feature_layer=-1,
            vision_feature_select_strategy=strategy,
            projector_hidden_act="gelu",
            tie_word_embeddings=False,
            **extra,
        )
        kind = "llava_next" if extra else cfg.vision.arch
        image_processor = _image_processor(vision.image_size, kind, **extra)
        if arch == "llava":
            image_processor = with_aspect_ratio(image_processor, cfg.get("image_aspect_ratio", "pad"))
    torch.manual_seed(int(cfg.get("init_seed", 0)))
    # _from_config: built partitioned under deepspeed.zero.Init when a ZeRO-3 TrainingArguments is alive
    model = ARCHS[arch][1]._from_config(config, attn_implementation=attn_implementation(cfg.get("attn_implementation")))
    return model, _processor(arch, image_processor, tokenizer, vision, strategy, config)


def is_hub_id(path: str | Path) -> bool:
    """Whether ``path`` reads as a hub model id (``org/name``) rather than a local folder."""
    text = str(path)
    return not Path(text).exists() and not text.startswith((".", "/", "~")) and text.count("/") == 1


def check_checkpoint(path: str | Path) -> None:
    """A clear error unless ``path`` is a folder that train.py (or HF) wrote: a model or a LoRA adapter,
    or a hub id (``Salesforce/instructblip-vicuna-7b``), which ``load_pretrained`` resolves."""
    from lit.model.lora import is_adapter_checkpoint

    if is_hub_id(path):
        return
    if not ((Path(path) / "config.json").is_file() or is_adapter_checkpoint(path)):
        raise FileNotFoundError(
            f"{path} is not a checkpoint (no config.json or adapter_config.json); point to the "
            "'checkpoint' folder train.py writes in its run directory, or to an HF model id"
        )


def load_pretrained(path: str, dtype: str = "float32", attn: str | None = "auto"):
    """Load a full checkpoint (HF id or directory) of any architecture in ``ARCHS``, or a LoRA adapter
    checkpoint (merged on load); a clear error if it is not there (e.g. offline). ``dtype`` ``auto``: the
    checkpoint's own. Under a live ZeRO-3 ``TrainingArguments`` the weights load partitioned (zero.Init)."""
    from lit.model import hub
    from lit.model.lora import is_adapter_checkpoint, load_adapter_checkpoint

    path = hub.local(path)  # offline: the cached snapshot, or one line naming what to download
    check_checkpoint(path)
    try:
        if is_adapter_checkpoint(path):  # a LoRA run saved with adapter.save=adapter
            model = load_adapter_checkpoint(path, DTYPES.get(dtype, dtype))
            return model, load_processor(path, model.config.model_type)
        config = AutoConfig.from_pretrained(path)
        if config.model_type not in FAMILIES:
            raise ValueError(f"{path} is a {config.model_type!r} model; supported: {', '.join(sorted(FAMILIES))}")
        processor = load_processor(path, config.model_type)
        model = AutoModelForImageTextToText.from_pretrained(
            path, config=config, dtype=DTYPES.get(dtype, dtype), attn_implementation=attn_implementation(attn)
        )
    except OSError as err:
        raise FileNotFoundError(
            f"cannot load model {path!r}: {err}. Offline? Download it first "
            "(huggingface-cli download) and set model.pretrained to the local path."
        ) from err
    return model, processor


def load_processor(path: str, model_type: str):
    """The saved processor of ``path`` with transformers' PIL image processor, whatever the machine has."""
    family = family_of(model_type)
    if family.load_processor is not None:
        return family.load_processor(path)
    processor = AutoProcessor.from_pretrained(path)
    processor.image_processor = load_image_processor(path)
    return processor


def apply_freeze(model, freeze) -> dict[str, int]:
    """Freeze the parts named in ``freeze`` (vision/projector/lm); returns trainable parameter counts."""
    counts = dict.fromkeys(PARTS, 0)
    for name, param in model.named_parameters():
        part = part_of(name)
        param.requires_grad_(not bool(freeze.get(part, False)))
        counts[part] += n_params(param) if param.requires_grad else 0
    return counts


def compose_pretrained(
    text: str,
    vision: str,
    template,
    dtype: str = "float32",
    vision_feature_layer: int = -2,
    arch: str = "llava",
    image_grid_pinpoints=None,
    image_aspect_ratio: str = "pad",
    attn: str | None = "auto",
    vision_feature_select_strategy: str | None = None,
):
    """A LLaVA (``arch: llava``) or LLaVA-NeXT (``llava_next``) from a pretrained causal LM and a pretrained
    vision tower (CLIP or SigLIP) with a new, randomly initialised projector (and NeXT's ``image_newline``).
    The skeleton is built on the meta device and the loaded modules are put into it, so a 7B/13B model is
    held once in memory, not a random copy plus the loaded one; under a live ZeRO-3 ``TrainingArguments`` the
    LM and the vision tower load partitioned (zero.Init) and DeepSpeed partitions the new projector.
    LLaVA-1.5 takes the penultimate vision layer (``vision_feature_layer`` -2) and drops CLIP's CLS token;
    ``vision_feature_select_strategy`` (``feature_strategy``): None keeps all of SigLIP's patches, ``default``
    drops its first as TinyLLaVA does.
    ``image_aspect_ratio`` (LLaVA only, ``with_aspect_ratio``): ``pad`` to a square with the mean colour, as
    LLaVA-1.5's stage 2; ``square``: the tower's own processor, as LLaVA-1.5's stage 1 and both TinyLLaVA stages."""
    from lit.mask.tokenizer import prepare_tokenizer
    from lit.model import hub

    text, vision = hub.local(text), hub.local(vision)  # offline: cached snapshots, or one line naming the download
    if arch not in ("llava", "llava_next"):
        raise ValueError(
            f"model.compose builds llava or llava_next, not {arch!r}: InstructBLIP starts from a "
            "complete checkpoint (model.pretrained, e.g. Salesforce/instructblip-vicuna-7b)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(text)
        text_cfg = AutoConfig.from_pretrained(text)
        vision_cfg = AutoConfig.from_pretrained(vision)
        image_processor = load_image_processor(vision)
    except OSError as err:
        raise FileNotFoundError(
            f"cannot load {text!r} / {vision!r}: {err}. Offline? Download them first and set "
            "model.compose.text / model.compose.vision to local paths."
        ) from err
    prepare_tokenizer(tokenizer, template)
    vision_cfg = getattr(vision_cfg, "vision_config", vision_cfg)
    strategy = feature_strategy(vision_cfg, vision_feature_select_strategy)
    extra = {}
    if arch == "llava_next":  # NeXT's any-resolution processor with the vision tower's normalisation
        extra = {"image_grid_pinpoints": [list(p) for p in image_grid_pinpoints]}
        image_processor = _image_processor(
            vision_cfg.image_size,
            "llava_next",
            image_mean=image_processor.image_mean,
            image_std=image_processor.image_std,
            **extra,
        )
    else:
        image_processor = with_aspect_ratio(image_processor, image_aspect_ratio)
    config = ARCHS[arch][0](
        text_config=text_cfg,
        vision_config=vision_cfg,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_MARKER),
        vision_feature_layer=vision_feature_layer,
        vision_feature_select_strategy=strategy,
        projector_hidden_act="gelu",
        tie_word_embeddings=text_cfg.tie_word_embeddings,
        **extra,
    )
    attn = attn_implementation(attn)
    config._attn_implementation = attn
    with torch.device("meta"):  # the skeleton takes no memory and no init time; its parts are put in below
        model = ARCHS[arch][1](config)
    lm = AutoModelForCausalLM.from_pretrained(text, dtype=DTYPES[dtype], attn_implementation=attn)
    model.model.language_model = lm.get_decoder()
    model.lm_head = lm.get_output_embeddings()
    model.model.vision_tower = type(model.model.vision_tower).from_pretrained(
        vision, dtype=DTYPES[dtype], attn_implementation=attn
    )
    projector = type(model.model.multi_modal_projector)(config)  # new weights, initialised as HF does
    model.model.multi_modal_projector = projector.to(DTYPES[dtype])
    if arch == "llava_next":  # the row separator of the tiled feature map, initialised as HF does
        std = 1 / torch.sqrt(torch.tensor(text_cfg.hidden_size, dtype=torch.float32))
        model.model.image_newline = nn.Parameter((torch.randn(text_cfg.hidden_size) * std).to(DTYPES[dtype]))
    on_meta = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if on_meta:
        raise RuntimeError(f"composed model has uninitialised tensors: {on_meta[:3]}")
    if len(tokenizer) != model.config.text_config.vocab_size:
        model.resize_token_embeddings(len(tokenizer))
    return model, _processor(arch, image_processor, tokenizer, vision_cfg, strategy, config)
