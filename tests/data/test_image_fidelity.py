"""Images as the original scripts fed them: LLaVA-1.5's stage 1 keeps CLIP's resize + centre crop and its stage 2
pads; TinyLLaVA resizes SigLIP's input to a square (no crop, no pad) and drops the first of SigLIP's positions; the
precision each schedule trains in; and transformers' PIL image processors wherever we build or load one.

Upstream files, at the commits issue 28 names:
- haotian-liu/LLaVA c121f04: ``scripts/v1_5/pretrain.sh`` lines 3-35 pass no ``--image_aspect_ratio``, so
  ``llava/train/train.py`` line 76's default ``'square'`` holds and ``LazySupervisedDataset.__getitem__``
  (lines 702-718) calls the CLIP processor as is (``CLIPImageProcessor``, ``clip_encoder.py`` line 29);
  ``scripts/v1_5/finetune.sh`` line 15 passes ``--image_aspect_ratio pad`` (``expand2square``, lines 703-715).
- TinyLLaVA/TinyLLaVA_Factory 53f12c7: ``scripts/train/pretrain.sh`` / ``finetune.sh`` line 33 and
  ``scripts/train/qwen2/pretrain_qwen2.sh`` / ``finetune_qwen2.sh`` line 33 pass ``--image_aspect_ratio square``;
  ``tinyllava/data/image_preprocess.py`` lines 19-26 then call the tower's processor as is, SigLIP's
  (``tinyllava/model/vision_tower/siglip.py`` line 12); ``tinyllava/model/vision_tower/base.py`` lines 47-58 take
  ``hidden_states[vision_feature_layer]`` and drop position 0 under the default ``'patch'`` selection
  (``tinyllava/utils/arguments.py`` line 22, ``configuration_tinyllava.py`` line 28); the Phi-2 scripts
  (``pretrain.sh`` / ``finetune.sh`` line 35) pass ``--fp16 True``, the Qwen2 ones (line 35) ``--bf16 True``, all
  of them ``--tf32 False`` (line 55 / 57), and ``tinyllava/training_recipe/base.py`` lines 24-25 load the LLM
  in that dtype.
- transformers 5.23.0 ``models/auto/image_processing_auto.py`` ``_resolve_backend`` (lines 338-362): with no
  ``backend`` the torchvision implementation is picked wherever torchvision is installed (the GPU env).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from tiny_runs import CONF

from lit.constants import IMAGE_MARKER
from lit.mask.chat_templates import get_template
from lit.model.families import image_inputs_for

SIZE, PATCH = 32, 8  # tiny towers: 4 x 4 = 16 patches per image


def _cfg(model: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[f"model={model}", *overrides])


def _photo(width: int = 60, height: int = 36, seed: int = 0) -> Image.Image:
    """A wide image: a centre crop loses its sides, a pad adds bands, a square resize squeezes it."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _expand2square(image: Image.Image, background: tuple[int, ...]) -> Image.Image:
    """LLaVA's ``expand2square`` (llava/train/train.py lines 703-714): centred on a square of the longer side."""
    w, h = image.size
    side = max(w, h)
    canvas = Image.new(image.mode, (side, side), background)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


@pytest.fixture(scope="module")
def towers(tmp_path_factory, tokenizers):
    """Tiny 'pretrained' parts saved as HF checkpoints (no hub): Llama, Qwen2 and Phi LMs with the test BPE
    tokenizer; a CLIP tower with CLIP's processor and a SigLIP tower with SigLIP's (the processors of
    openai/clip-vit-large-patch14-336 and google/siglip-so400m-patch14-384, scaled to 32 px)."""
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        CLIPVisionModel,
        LlamaConfig,
        LlamaForCausalLM,
        PhiConfig,
        PhiForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        SiglipImageProcessorPil,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    tok = tokenizers["bpe"]
    root = tmp_path_factory.mktemp("towers")
    torch.manual_seed(0)
    lm = {
        "vocab_size": len(tok),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    for name, config, cls in (
        ("llama", LlamaConfig(**lm, num_key_value_heads=1), LlamaForCausalLM),
        ("qwen2", Qwen2Config(**lm, num_key_value_heads=1, tie_word_embeddings=True), Qwen2ForCausalLM),
        ("phi", PhiConfig(**lm), PhiForCausalLM),
    ):
        tok.save_pretrained(root / name)
        cls(config).save_pretrained(root / name)
    tower = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": SIZE,
        "patch_size": PATCH,
    }
    CLIPVisionModel(CLIPVisionConfig(**tower)).save_pretrained(root / "clip")
    CLIPImageProcessorPil(size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE}).save_pretrained(
        root / "clip"
    )
    SiglipVisionModel(SiglipVisionConfig(**tower)).save_pretrained(root / "siglip")
    SiglipImageProcessorPil(size={"height": SIZE, "width": SIZE}).save_pretrained(root / "siglip")
    return root


def _build(cfg):
    """The model and processor a training run builds from ``cfg.model`` (lit.model.build)."""
    from lit.model.build import _load_or_compose

    return _load_or_compose(cfg.model, get_template(cfg.model.chat_template), tokenizer_of=None, args=None)


def _stage1(model: str, towers, lm: str, vision: str, *overrides: str):
    return _cfg(
        f"{model}_stage1", f"model.compose.text={towers / lm}", f"model.compose.vision={towers / vision}", *overrides
    )


# --- LLaVA-1.5: stage 1 crops, stage 2 pads -------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llava7b", "llava13b"])
def test_llava_stage1_crops_and_stage2_pads(family):
    """pretrain.sh leaves train.py's default 'square'; finetune.sh line 15 passes pad."""
    assert _cfg(f"{family}_stage1").model.image_aspect_ratio == "square"
    assert _cfg(family).model.image_aspect_ratio == "pad"


def test_llava_stage1_pixels_are_clips_resize_and_centre_crop(towers):
    """The stage-1 config, built as a run builds it, gives the pixels of ``processor.preprocess(image)`` with
    LLaVA's CLIP processor (train.py lines 717-718): shorter side resized, centre cropped. Stage 2's pad differs."""
    from transformers import CLIPImageProcessorPil

    _, processor = _build(_stage1("llava7b", towers, "llama", "clip", "model.dtype=float32"))
    image = _photo()
    ours = processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]
    clip = CLIPImageProcessorPil.from_pretrained(towers / "clip")
    theirs = clip.preprocess(image, return_tensors="pt")["pixel_values"]
    assert ours.shape == (1, 3, SIZE, SIZE)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    # the same by hand: shorter side to 32 (bicubic), the middle 32 columns, CLIP's normalisation
    w = round(image.width * SIZE / image.height)
    crop = np.asarray(image.resize((w, SIZE), Image.BICUBIC), dtype=np.float32)[
        :, (w - SIZE) // 2 : (w - SIZE) // 2 + SIZE
    ]
    by_hand = (crop / 255 - np.array(clip.image_mean)) / np.array(clip.image_std)
    torch.testing.assert_close(ours[0], torch.from_numpy(by_hand.transpose(2, 0, 1)).float(), rtol=0, atol=1e-5)
    mean = tuple(int(x * 255) for x in clip.image_mean)
    padded = clip.preprocess(_expand2square(image, mean), return_tensors="pt")["pixel_values"]
    assert not torch.allclose(ours, padded, atol=0.1)  # the image is wide enough for the two to differ


def test_llava_stage2_pads_a_loaded_checkpoint(towers, tmp_path):
    """Stage 2 loads the stage-1 checkpoint (saved with CLIP's crop) and pads as finetune.sh does."""
    model, processor = _build(_stage1("llava7b", towers, "llama", "clip", "model.dtype=float32"))
    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    _, loaded = _build(_cfg("llava7b", f"model.pretrained={tmp_path / 'ckpt'}", "model.dtype=float32"))
    image = _photo()
    ip = loaded.image_processor
    assert ip.do_pad
    mean = tuple(int(x * 255) for x in ip.image_mean)
    expected = processor.image_processor(images=[_expand2square(image, mean)], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(ip(images=[image], return_tensors="pt")["pixel_values"], expected)


# --- TinyLLaVA: square resize, 728-style positions, its precision ----------------------------------------------


@pytest.mark.parametrize("family", ["tinyllava05b", "tinyllava3b"])
def test_tinyllava_resizes_square_and_drop_the_first_siglip_position(family):
    for cfg in (_cfg(f"{family}_stage1"), _cfg(family)):
        assert cfg.model.image_aspect_ratio == "square"
        assert cfg.model.vision_feature_select_strategy == "default"


@pytest.mark.parametrize("family,lm", [("tinyllava05b", "qwen2"), ("tinyllava3b", "phi")])
def test_tinyllava_siglip_model_round_trip_positions_features_and_forward(family, lm, towers, tmp_path):
    """Built from the stage-1 config with a tiny SigLIP tower: SigLIP's own resize (no crop, no pad), 16 - 1 image
    features (as 729 - 1 = 728 at 384 px) equal to TinyLLaVA's selection (hidden_states[-2][:, 1:] through the
    projector); saved and loaded, the model's image features, the processor's <image> expansion and our position
    count agree, and a forward pass runs. The stage-2 config loads the checkpoint; a mismatched strategy stops."""
    from transformers import SiglipImageProcessorPil

    from lit.model.loading import load_pretrained

    model, processor = _build(_stage1(family, towers, lm, "siglip", "model.dtype=float32"))
    model.eval()
    assert model.config.vision_feature_select_strategy == "default"
    image = _photo()
    pixels = processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]
    siglip = SiglipImageProcessorPil.from_pretrained(towers / "siglip")
    torch.testing.assert_close(pixels, siglip(image, return_tensors="pt")["pixel_values"], rtol=0, atol=0)
    by_hand = (np.asarray(image.resize((SIZE, SIZE), Image.BICUBIC), dtype=np.float32) / 255 - 0.5) / 0.5
    torch.testing.assert_close(pixels[0], torch.from_numpy(by_hand.transpose(2, 0, 1)), rtol=0, atol=1e-5)

    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    loaded, loaded_processor = load_pretrained(str(tmp_path / "ckpt"))
    loaded.eval()
    n = image_inputs_for(loaded.config, loaded_processor).n_tokens()
    assert n == (SIZE // PATCH) ** 2 - 1
    inputs = loaded_processor(text=f"{IMAGE_MARKER}\na caption", images=[image], return_tensors="pt")
    image_id = loaded.config.image_token_index
    assert int((inputs["input_ids"] == image_id).sum()) == n
    assert loaded_processor._get_num_multimodal_tokens(image_sizes=[(36, 60)]).num_image_tokens == [n]  # vLLM's count
    with torch.no_grad():
        features = loaded.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output[0]
        hidden = loaded.model.vision_tower(inputs["pixel_values"], output_hidden_states=True).hidden_states
        tinyllava = loaded.model.multi_modal_projector(hidden[-2][:, 1:])[0]  # base.py lines 48-52, 'patch'
        out = loaded(**inputs)
    assert features.shape[0] == n
    torch.testing.assert_close(features, tinyllava)
    assert out.logits.shape[1] == inputs["input_ids"].shape[1] and torch.isfinite(out.logits).all()

    stage2, _ = _build(_cfg(family, f"model.pretrained={tmp_path / 'ckpt'}", "model.dtype=float32"))
    assert image_inputs_for(stage2.config, loaded_processor).n_tokens() == n
    with pytest.raises(ValueError, match="selects vision features with 'default'"):
        _build(
            _cfg(
                family,
                f"model.pretrained={tmp_path / 'ckpt'}",
                "model.dtype=float32",
                "model.vision_feature_select_strategy=full",
            )
        )


def test_siglip_full_strategy_keeps_every_patch(towers):
    """The named alternative: ``full`` keeps all 16 (729 at 384 px) positions."""
    model, processor = _build(
        _stage1(
            "tinyllava05b",
            towers,
            "qwen2",
            "siglip",
            "model.dtype=float32",
            "model.vision_feature_select_strategy=full",
        )
    )
    n = image_inputs_for(model.config, processor).n_tokens()
    inputs = processor(text=IMAGE_MARKER, images=[_photo()], return_tensors="pt")
    assert n == (SIZE // PATCH) ** 2 == int((inputs["input_ids"] == model.config.image_token_index).sum())


@pytest.mark.parametrize(
    "model,dtype,fp16,bf16",
    [
        ("tinyllava3b", "float16", True, False),
        ("tinyllava05b", "bfloat16", False, True),
        ("llava7b", "bfloat16", False, True),
    ],
)
def test_precision_per_schedule(model, dtype, fp16, bf16):
    """TinyLLaVA-3B (Phi-2) trains in fp16, TinyLLaVA-0.5B (Qwen2) in bf16, both without TF32 (TinyLLaVA's
    scripts, lines 35 and 55/57); LLaVA-1.5 in bf16 with TF32 (pretrain.sh lines 15 and 30)."""
    for cfg in (_cfg(f"{model}_stage1"), _cfg(model)):
        assert cfg.model.dtype == dtype
        assert bool(cfg.train.get("fp16", False)) is fp16 and bool(cfg.train.bf16) is bf16
        assert bool(cfg.train.tf32) is model.startswith("llava")


def test_tinyllava3b_stage1_loads_its_parts_in_fp16(towers):
    model, _ = _build(_stage1("tinyllava3b", towers, "phi", "siglip"))  # the schedule's model.dtype: float16
    assert {p.dtype for p in model.parameters()} == {torch.float16}


# --- the image processor backend -------------------------------------------------------------------------------


@pytest.fixture
def torchvision_default(monkeypatch):
    """transformers as on a machine with torchvision: ``_resolve_backend`` picks ``torchvision`` when no backend is
    asked for, and the default class names (``LlavaImageProcessor``, ``CLIPImageProcessor``, ...) are the
    torchvision implementations. The CPU env has no torchvision, so those are stood in for by subclasses of the PIL
    classes that carry a marker (they compute the same pixels; only the class says which one was picked)."""
    import transformers
    from transformers.models.auto import image_processing_auto as auto

    names = [
        "CLIPImageProcessor",
        "SiglipImageProcessor",
        "LlavaImageProcessor",
        "LlavaNextImageProcessor",
        "BlipImageProcessor",
    ]
    stand_ins = {
        name: type(name, (getattr(transformers, f"{name}Pil"),), {"torchvision_stand_in": True}) for name in names
    }
    real = auto.get_image_processor_class_from_name
    monkeypatch.setattr(auto, "is_torchvision_available", lambda: True)
    monkeypatch.setattr(auto, "get_image_processor_class_from_name", lambda name: stand_ins.get(name) or real(name))
    for name, cls in stand_ins.items():
        monkeypatch.setattr(transformers, name, cls)
    return stand_ins


def _is_pil(image_processor) -> bool:
    from transformers.image_processing_backends import PilBackend

    return isinstance(image_processor, PilBackend) and not getattr(image_processor, "torchvision_stand_in", False)


def test_the_stand_in_is_what_transformers_would_load_by_default(towers, torchvision_default):
    """The fixture works: without a backend transformers loads the (stand-in) torchvision class."""
    from transformers import AutoImageProcessor

    assert not _is_pil(AutoImageProcessor.from_pretrained(towers / "clip"))
    assert _is_pil(AutoImageProcessor.from_pretrained(towers / "clip", backend="pil"))


@pytest.mark.parametrize(
    "family,lm,vision",
    [("llava7b", "llama", "clip"), ("tinyllava05b", "qwen2", "siglip"), ("llava_next7b", "llama", "clip")],
)
def test_processors_built_and_loaded_use_the_pil_backend(family, lm, vision, towers, tmp_path, torchvision_default):
    from lit.model.loading import load_pretrained

    extra = ["model.image_grid_pinpoints=[[32,64],[64,32]]"] if family.startswith("llava_next") else []
    model, processor = _build(_stage1(family, towers, lm, vision, "model.dtype=float32", *extra))
    assert _is_pil(processor.image_processor), type(processor.image_processor)
    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    _, loaded = load_pretrained(str(tmp_path / "ckpt"))
    assert _is_pil(loaded.image_processor), type(loaded.image_processor)


def test_tiny_models_built_from_configs_use_the_pil_backend(tokenizers, torchvision_default):
    from tiny_runs import tiny_model

    for extra in ("tiny", "tiny_next", "tiny_iblip"):
        _, processor, _ = tiny_model(extra, tokenizers["bpe"])
        assert _is_pil(processor.image_processor), (extra, type(processor.image_processor))


@pytest.mark.skipif(
    not __import__("transformers").utils.is_torchvision_available(), reason="needs torchvision (GPU env)"
)
def test_with_real_torchvision_ours_stay_pil_and_give_the_pil_pixels(towers, tmp_path):
    """On the GPU env itself: transformers' default is the torchvision class, ours the PIL one, whose pixels are
    those of LLaVA's CLIP processor (the parity tests' reference)."""
    from transformers import AutoImageProcessor, CLIPImageProcessorPil
    from transformers.image_processing_backends import PilBackend

    assert not isinstance(AutoImageProcessor.from_pretrained(towers / "clip"), PilBackend)
    _, processor = _build(_stage1("llava7b", towers, "llama", "clip", "model.dtype=float32"))
    assert isinstance(processor.image_processor, PilBackend)
    image = _photo()
    torch.testing.assert_close(
        processor.image_processor(images=[image], return_tensors="pt")["pixel_values"],
        CLIPImageProcessorPil.from_pretrained(towers / "clip")(image, return_tensors="pt")["pixel_values"],
    )
