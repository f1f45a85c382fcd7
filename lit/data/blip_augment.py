"""InstructBLIP's training image augmentation, as InstrAug's LAVIS fork trains it (``blip_image_train``).

LAVIS (``IBLIP/lavis/processors/blip_processors.py``, ``BlipImageTrainProcessor``; its ``randaugment.py``)
turns a training image into pixels in four steps, written here with PIL and numpy:

1. a random resized crop: a region of 50-100 % of the image's area, aspect ratio 3/4-4/3, resized to the
   model's size (224 px) with bicubic resampling (torchvision's ``RandomResizedCrop`` algorithm: ten tries,
   then a centre crop);
2. a horizontal flip with probability 1/2;
3. RandAugment with 2 operations drawn (with replacement) from Identity, AutoContrast, Brightness, Sharpness,
   Equalize, ShearX, ShearY, TranslateX, TranslateY and Rotate at magnitude 5 of 10, each applied with
   probability 1/2: shear 0.15, translation 5 pixels, rotation 15 degrees (each with a random sign), the
   uncovered area filled with grey (128, 128, 128); Brightness and Sharpness at magnitude 5 have factor
   0.5 * 1.8 + 0.1 = 1.0, so they leave the image as it is, as in LAVIS;
4. scaling to [0, 1] and normalising with the processor's mean and std (LAVIS: OpenAI CLIP's, which the
   InstructBLIP processor carries too).

Evaluation (``blip_image_eval``) is a plain bicubic resize and normalisation, which is what the model's own
image processor does, so only training pixels come from here.

Randomness: each call draws from its own generator, seeded by the run's seed, the record's id, how many
times this process has produced that record (in the main process: the epoch) and the DataLoader worker's
seed (torch draws it anew each epoch from the seeded run, so it tells epochs apart in workers, which are
re-created every epoch). The same run therefore sees the same augmented images, and a record looks
different from one epoch to the next.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch
from PIL import Image, ImageOps

GREY = (128, 128, 128)
RANDAUG_OPS = (
    "Identity",
    "AutoContrast",
    "Brightness",
    "Sharpness",
    "Equalize",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
)
MAX_LEVEL = 10


def random_resized_crop_box(
    width: int, height: int, rng: np.random.Generator, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3)
) -> tuple[int, int, int, int]:
    """(left, top, crop width, crop height) of a crop covering a random share ``scale`` of the area with a
    random aspect ratio in ``ratio`` (log-uniform); ten tries, then the largest centred crop within ``ratio``."""
    area = width * height
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(lo, hi))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def _affine(img: Image.Image, inverse: tuple[float, ...]) -> Image.Image:
    """``img`` under the affine map whose inverse (output -> input pixel) is ``inverse``, bilinear, grey fill."""
    return img.transform(img.size, Image.Transform.AFFINE, inverse, resample=Image.Resampling.BILINEAR, fillcolor=GREY)


def _sign(value: float, rng: np.random.Generator) -> float:
    return -value if rng.random() > 0.5 else value


def apply_op(img: Image.Image, name: str, magnitude: float, rng: np.random.Generator) -> Image.Image:
    """One RandAugment operation at ``magnitude`` (of ``MAX_LEVEL``); the geometric ones draw their sign."""
    level = magnitude / MAX_LEVEL
    if name == "Identity":
        return img
    if name == "AutoContrast":
        return ImageOps.autocontrast(img)
    if name == "Equalize":
        return ImageOps.equalize(img)
    if name in ("Brightness", "Sharpness"):
        return _enhance(img, name, level * 1.8 + 0.1)
    if name == "ShearX":  # output x = input x + s * y
        return _affine(img, (1, -_sign(level * 0.3, rng), 0, 0, 1, 0))
    if name == "ShearY":  # output y = input y + s * x
        return _affine(img, (1, 0, 0, -_sign(level * 0.3, rng), 1, 0))
    if name == "TranslateX":  # the content moves by -t pixels (LAVIS's translate_const 10 at full magnitude)
        return _affine(img, (1, 0, _sign(level * 10, rng), 0, 1, 0))
    if name == "TranslateY":
        return _affine(img, (1, 0, 0, 0, 1, _sign(level * 10, rng)))
    if name == "Rotate":  # counter-clockwise about the centre; the sign is drawn the other way round in LAVIS
        degrees = level * 30
        degrees = -degrees if rng.random() < 0.5 else degrees
        return img.rotate(degrees, resample=Image.Resampling.BILINEAR, fillcolor=GREY)
    raise ValueError(f"unknown RandAugment operation {name!r}; known: {', '.join(RANDAUG_OPS)}")


def _enhance(img: Image.Image, name: str, factor: float) -> Image.Image:
    """LAVIS's brightness (a lookup table of ``value * factor``) and sharpness (a blend with the 3x3 smoothed
    image, borders kept); factor 1 returns the image unchanged."""
    if factor == 1.0:
        return img
    arr = np.asarray(img).astype(np.float32)
    if name == "Brightness":
        return Image.fromarray(np.clip(arr * factor, 0, 255).astype(np.uint8))
    kernel = np.ones((3, 3), dtype=np.float32)
    kernel[1, 1] = 5
    kernel /= kernel.sum()
    padded = np.pad(arr, ((1, 1), (1, 1), (0, 0)), mode="edge")
    smooth = sum(kernel[i, j] * padded[i : i + arr.shape[0], j : j + arr.shape[1]] for i in range(3) for j in range(3))
    out = arr.copy()
    out[1:-1, 1:-1] = smooth[1:-1, 1:-1] + factor * (arr[1:-1, 1:-1] - smooth[1:-1, 1:-1])
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def rand_augment(
    img: Image.Image, rng: np.random.Generator, n_ops: int = 2, magnitude: float = 5, ops: tuple[str, ...] = RANDAUG_OPS
) -> Image.Image:
    """``n_ops`` operations drawn with replacement from ``ops``, each applied with probability 1/2."""
    for name in rng.choice(ops, n_ops):
        if rng.random() > 0.5:
            continue
        img = apply_op(img, str(name), magnitude, rng)
    return img


class BlipTrainAugment:
    """``blip_image_train``: a PIL RGB image and its record's id -> ``{"pixel_values": (3, size, size)}``."""

    def __init__(self, size: int, mean, std, *, seed: int = 0, scale=(0.5, 1.0), n_ops: int = 2, magnitude: float = 5):
        self.size, self.seed, self.scale, self.n_ops, self.magnitude = int(size), int(seed), scale, n_ops, magnitude
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
        self._visits: dict[int, int] = {}

    @classmethod
    def for_processor(cls, image_processor, *, seed: int = 0) -> BlipTrainAugment:
        """At the size and with the normalisation of the model's image processor (``BlipImageProcessor``)."""
        size = image_processor.size
        size = int(size) if isinstance(size, (int, float)) else int(size["height"])  # dict or SizeDict
        return cls(size, image_processor.image_mean, image_processor.image_std, seed=seed)

    def generator(self, record_id) -> np.random.Generator:
        """The generator of the next draw for ``record_id`` (see the module's note on randomness)."""
        key = zlib.crc32(repr(record_id).encode())
        visit = self._visits.get(key, 0)
        self._visits[key] = visit + 1
        worker = torch.utils.data.get_worker_info()
        return np.random.default_rng([self.seed, key, visit, worker.seed if worker is not None else 0])

    def image(self, rgb: Image.Image, rng: np.random.Generator) -> Image.Image:
        """Crop, flip and RandAugment (steps 1-3), as a ``size`` x ``size`` RGB image."""
        left, top, w, h = random_resized_crop_box(rgb.width, rgb.height, rng, self.scale)
        img = rgb.crop((left, top, left + w, top + h)).resize((self.size, self.size), Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            img = ImageOps.mirror(img)
        return rand_augment(img, rng, self.n_ops, self.magnitude)

    def normalize(self, img: Image.Image) -> torch.Tensor:
        arr = np.asarray(img.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0
        return torch.from_numpy((arr - self.mean) / self.std)

    def __call__(self, rgb: Image.Image, record_id) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.normalize(self.image(rgb, self.generator(record_id)))}


AUGMENTS = {"blip_image_train": BlipTrainAugment}


def augment_for(name: str | None, image_processor, *, seed: int = 0):
    """The training augmentation ``name`` (``model.image_augment``) at the processor's size, or None for none."""
    if name in (None, "", "none"):
        return None
    if name not in AUGMENTS:
        raise ValueError(f"unknown model.image_augment {name!r}; known: none, {', '.join(AUGMENTS)}")
    return AUGMENTS[name].for_processor(image_processor, seed=seed)
