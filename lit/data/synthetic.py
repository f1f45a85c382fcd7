"""The embedded demo data set: rendered scenes of coloured shapes, in LLaVA's JSON format.

Each image is a 2x2 grid of cells holding 1-3 shapes (circle, square, triangle), each shape type at
most once, so "the circle" is unambiguous. Each training conversation starts with 2-3 yes/no probes
("Is there a red circle in the image?") and goes on with 1-2 of colour VQA, counting and captioning; every
task has a frequent template sentence (the kind LIT masks). Answering needs the image. Two language-prior
traps make the prior answer wrong at test time:

- colour: in training, triangles are red 70% of the time; in the test split their colour is uniform;
- yes/no: in training 60% of the probes ask about an object that is present ("yes"); the POPE-style
  test split is balanced. Half the test negatives are near misses of a present object (its shape in another
  colour, or its colour on another shape), so answering needs shape-colour binding; training negatives are
  near misses at the rate ``near_miss_share`` (by default the test split's 0.5).

Written: ``<out>/images/{train,test}/*.png``, ``<out>/train.json`` (LLaVA list), for lmms-eval
``<out>/test_pope.jsonl``, ``<out>/test_vqa.jsonl``, ``<out>/test_vqa_unseen.jsonl`` (the colour questions in
held-out phrasings) and ``<out>/test_caption.jsonl`` (caption requests with the scene's objects, for CHAIR),
``<out>/test.json`` (the probes and colour questions with their answers as LLaVA records, for the
visual-contribution analysis), and ``<out>/train_instances.jsonl``: the training turns as MultiInstruct-style
single-turn instances (``task_name``, ``image_path``, fields, ``target_txt``) from which ``instraug.build``
makes MIns+-style data sets.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw
from tqdm import tqdm

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40)}
SHAPES = ("circle", "square", "triangle")
CELLS = ("top left", "top right", "bottom left", "bottom right")
NUMBERS = ("zero", "one", "two", "three")
SHORT = "Answer the question using a single word or phrase."
YESNO = "Answer yes or no."
CAPTION = "Describe the image briefly."
YES_SHARE = 0.6  # share of training probes answered "Yes" (conf/data/demo.yaml's default)
NEAR_MISS_SHARE = 0.5  # share of "No" probes that are near misses of a present object (the test split's rate)


def _draw(scene: list[tuple[str, str, int]], size: int) -> Image.Image:
    img = Image.new("RGB", (size, size), (245, 245, 245))
    draw = ImageDraw.Draw(img)
    half, pad = size // 2, max(1, size // 16)
    for shape, colour, cell in scene:
        x0, y0 = (cell % 2) * half + pad, (cell // 2) * half + pad
        x1, y1 = x0 + half - 2 * pad, y0 + half - 2 * pad
        fill = COLOURS[colour]
        if shape == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif shape == "square":
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        else:
            draw.polygon(((x0 + x1) / 2, y0, x1, y1, x0, y1), fill=fill)
    return img


def _scene(rng: random.Random, biased: bool) -> list[tuple[str, str, int]]:
    shapes = rng.sample(SHAPES, rng.randint(1, 3))
    cells = rng.sample(range(4), len(shapes))
    scene = []
    for shape, cell in zip(shapes, cells):
        if biased and shape == "triangle" and rng.random() < 0.7:
            colour = "red"
        else:
            colour = rng.choice(list(COLOURS))
        scene.append((shape, colour, cell))
    return scene


def _caption(scene) -> str:
    parts = [f"a {c} {s} in the {CELLS[cell]}" for s, c, cell in sorted(scene, key=lambda x: x[2])]
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return text[0].upper() + text[1:] + "."


def _absent_probe(rng: random.Random, scene, near_miss_share: float = NEAR_MISS_SHARE) -> tuple[str, str]:
    """An object not in the scene; with probability ``near_miss_share`` an adversarial near miss of a present
    one (a present shape in another colour or a present colour on another shape), else any absent object."""
    present = {(s, c) for s, c, _ in scene}
    while True:
        if rng.random() < near_miss_share:
            shape, colour, _ = rng.choice(scene)
            if rng.random() < 0.5:
                colour = rng.choice([c for c in COLOURS if c != colour])
            else:
                shape = rng.choice([s for s in SHAPES if s != shape])
        else:
            shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
        if (shape, colour) not in present:
            return shape, colour


def _probe_turn(rng: random.Random, scene, yes_share: float, near_miss_share: float) -> dict:
    if rng.random() < yes_share:
        (shape, colour, _), answer = rng.choice(scene), "Yes"
    else:
        (shape, colour), answer = _absent_probe(rng, scene, near_miss_share), "No"
    return {
        "task": "object_probe",
        "fields": {"shape": shape, "colour": colour},
        "answer": answer,
        "question": f"Is there a {colour} {shape} in the image? {YESNO}",
    }


def _train_turns(
    rng: random.Random,
    scene,
    probes: tuple[int, int] = (2, 3),
    others: tuple[int, int] = (1, 2),
    yes_share: float = YES_SHARE,
    near_miss_share: float = NEAR_MISS_SHARE,
) -> list[dict]:
    """The turns of one training conversation: ``{"task", "fields", "question", "answer"}`` (the question is the
    fixed demo phrasing; ``task`` and ``fields`` are what MultiInstruct-style instances carry).

    ``probes`` yes/no probes come first, then ``others`` of colour, count and caption in that order. Probes
    first: every probe is answered from the image, as at test time, not copied from a caption or a colour
    answer earlier in the conversation (which a tiny model learns instead of looking)."""
    turns = [_probe_turn(rng, scene, yes_share, near_miss_share) for _ in range(rng.randint(*probes))]
    for task in sorted(
        rng.sample(["colour", "count", "caption"], rng.randint(*others)), key=["colour", "count", "caption"].index
    ):
        if task == "colour":
            shape, colour, _ = rng.choice(scene)
            turns.append(
                {
                    "task": "colour_vqa",
                    "fields": {"shape": shape},
                    "answer": colour,
                    "question": f"What color is the {shape}? {SHORT}",
                }
            )
        elif task == "count":
            turns.append(
                {
                    "task": "counting",
                    "fields": {},
                    "answer": NUMBERS[len(scene)],
                    "question": f"How many shapes are there? {SHORT}",
                }
            )
        else:
            turns.append({"task": "captioning", "fields": {}, "answer": _caption(scene), "question": CAPTION})
    return turns


# What ``generate`` writes besides the images (all present = the data set is complete).
FILES = (
    "train.json",
    "train_instances.jsonl",
    "test_pope.jsonl",
    "test_vqa.jsonl",
    "test_vqa_unseen.jsonl",
    "test_caption.jsonl",
    "test.json",
)

# Colour questions in phrasings that appear neither in the training data nor in the demo instruction
# pool (instraug/demo/): the demo's test of robustness to unseen instructions (InstrAug's question).
UNSEEN_COLOUR = (
    "Which colour does the {shape} have? Give one word.",
    "Name the colour of the {shape} shown here. Be brief.",
    "The {shape} in this picture: what colour is it? One word please.",
)


# The settings a data set was generated with (``generate`` writes them last: present = complete).
STAMP = "generated_with.json"
# ``data=demo`` config keys passed to ``generate``
SETTINGS = ("n_train", "n_test", "image_size", "seed", "n_caption", "probes", "others", "yes_share", "near_miss_share")


def _settings(data_cfg) -> dict:
    return {k: (list(v) if k in ("probes", "others") else v) for k in SETTINGS if (v := data_cfg.get(k)) is not None}


def is_current(data_cfg) -> bool:
    """Whether ``data_cfg.root`` holds a complete demo data set generated with ``data_cfg``'s settings."""
    root = Path(data_cfg.root)
    stamp = root / STAMP
    return (
        stamp.is_file()
        and json.loads(stamp.read_text()) == _settings(data_cfg)
        and all((root / f).exists() for f in FILES)
    )


def ensure(data_cfg) -> bool:
    """Generate the demo data set at ``data_cfg.root`` if it is missing or was generated with other settings
    (then the folder, its tokenizer included, is replaced). Returns whether it generated."""
    import shutil

    if is_current(data_cfg):
        return False
    root = Path(data_cfg.root)
    if root.exists():
        shutil.rmtree(root)
    settings = _settings(data_cfg)
    generate(root, **{k: (tuple(v) if isinstance(v, list) else v) for k, v in settings.items()})
    (root / STAMP).write_text(json.dumps(settings))
    return True


def generate(
    out: str | Path,
    n_train: int = 2000,
    n_test: int = 300,
    image_size: int = 32,
    seed: int = 0,
    n_caption: int = 100,
    probes: tuple[int, int] = (2, 3),
    others: tuple[int, int] = (1, 2),
    yes_share: float = YES_SHARE,
    near_miss_share: float = NEAR_MISS_SHARE,
    progress: bool = True,
) -> dict[str, Path]:
    """Write the demo data set under ``out``; returns the paths written. Deterministic in its arguments.
    Each training image gets one conversation of ``probes`` (min, max) yes/no probes, a share ``yes_share``
    of them answered "Yes" and a share ``near_miss_share`` of the "No" ones near misses, and ``others``
    (min, max) of the colour, count and caption tasks; the first ``n_caption`` test images are also asked for
    a caption (CHAIR)."""
    out = Path(out)
    rng = random.Random(seed)
    for split in ("train", "test"):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
    records, instances = [], []
    for i in tqdm(range(n_train), desc="demo data: train images", disable=not progress):
        scene = _scene(rng, biased=True)
        rel = f"images/train/{i:06d}.png"
        _draw(scene, image_size).save(out / rel)
        conv = []
        for k, turn in enumerate(_train_turns(rng, scene, probes, others, yes_share, near_miss_share)):
            conv.append({"from": "human", "value": f"<image>\n{turn['question']}" if k == 0 else turn["question"]})
            conv.append({"from": "gpt", "value": turn["answer"]})
            instances.append(
                {
                    "unique_id": f"train-{i}-{k}",
                    "task_name": turn["task"],
                    "image_path": rel,
                    "target_txt": turn["answer"],
                    **turn["fields"],
                }
            )
        records.append({"id": f"train-{i}", "image": rel, "conversations": conv})
    (out / "train.json").write_text(json.dumps(records, indent=0))

    (out / "train_instances.jsonl").write_text("".join(json.dumps(r) + "\n" for r in instances))

    pope, vqa, unseen, captions = [], [], [], []
    for i in tqdm(range(n_test), desc="demo data: test images", disable=not progress):
        scene = _scene(rng, biased=False)
        rel = f"images/test/{i:06d}.png"
        _draw(scene, image_size).save(out / rel)
        if i < n_caption:
            captions.append(
                {
                    "question_id": f"{i}-caption",
                    "image": rel,
                    "question": CAPTION,
                    "caption": _caption(scene),
                    "objects": sorted(f"{c} {s}" for s, c, _ in scene),
                }
            )
        shape, colour, _ = rng.choice(scene)
        pope.append(
            {
                "question_id": f"{i}-pos",
                "image": rel,
                "answer": "yes",
                "question": f"Is there a {colour} {shape} in the image? {YESNO}",
            }
        )
        shape, colour = _absent_probe(rng, scene)
        pope.append(
            {
                "question_id": f"{i}-neg",
                "image": rel,
                "answer": "no",
                "question": f"Is there a {colour} {shape} in the image? {YESNO}",
            }
        )
        shape, colour, _ = rng.choice(scene)
        vqa.append(
            {
                "question_id": f"{i}-colour",
                "image": rel,
                "answer": colour,
                "shape": shape,
                "question": f"What color is the {shape}? {SHORT}",
            }
        )
        unseen.append(
            {
                **vqa[-1],
                "question_id": f"{i}-colour-unseen",
                "question": UNSEEN_COLOUR[i % len(UNSEEN_COLOUR)].format(shape=shape),
            }
        )
    paths = {
        "train": out / "train.json",
        "instances": out / "train_instances.jsonl",
        "pope": out / "test_pope.jsonl",
        "vqa": out / "test_vqa.jsonl",
        "vqa_unseen": out / "test_vqa_unseen.jsonl",
        "caption": out / "test_caption.jsonl",
        "test_records": out / "test.json",
    }
    for key, rows in (("pope", pope), ("vqa", vqa), ("vqa_unseen", unseen), ("caption", captions)):
        paths[key].write_text("".join(json.dumps(r) + "\n" for r in rows))
    # the probes and colour questions with the answers in the training format, as LLaVA records (for VC)
    paths["test_records"].write_text(
        json.dumps(
            [
                {
                    "id": r["question_id"],
                    "image": r["image"],
                    "conversations": [
                        {"from": "human", "value": f"<image>\n{r['question']}"},
                        {
                            "from": "gpt",
                            "value": r["answer"].capitalize() if r["answer"] in ("yes", "no") else r["answer"],
                        },
                    ],
                }
                for i in range(len(vqa))
                for r in (pope[2 * i], pope[2 * i + 1], vqa[i])
            ],
            indent=0,
        )
    )
    return paths
