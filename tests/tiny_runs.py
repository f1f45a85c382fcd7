"""The tiny CPU training run the tests share: its Hydra overrides and a composed config (test helper); and what the
per-family model tests (tests/model/test_<family>.py) share: their checkpoints and datasets, and the checks they make
alike (labels, parts, templates read back, padding-free parity)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
TINY = [
    "experiment=demo_lit",
    "train.logging_steps=1",
    "train.per_device_train_batch_size=4",
    "train.disable_tqdm=true",
    "model.text.hidden_size=32",
    "model.vision.hidden_size=32",
    "loss.template_sentences.min_share=0.3",
    "data.generate=false",
]


def tiny_cfg(demo_data: Path, out: Path, *extra: str):
    """``train.py``'s config for the tiny model on ``demo_data``, writing to ``out`` (its tokenizer too)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[*TINY, f"data.root={demo_data}", f"paths.data_dir={out}", *extra])
    with open_dict(cfg):
        cfg.output_dir = str(out)
    return cfg


def labelled_tiny(records_path: Path, tokenizer, cache: Path, scope: str = "lit", workers=None, **settings):
    """``lit.data.label_cache.labelled_dataset`` over the records of ``records_path`` (images beside it) in the
    ``vicuna_v1`` template under ``scope``, 16 image positions of a 32-pixel CLIP processor, caching in ``cache``.
    ``settings``: ``min_shard``, or ``LabelSpec`` fields other than the template, scope and image root (max_length
    512)."""
    from lit.data.image_inputs import ImageInputs
    from lit.data.label_cache import MIN_SHARD, labelled_dataset
    from lit.data.labels import LabelSpec
    from lit.mask.chat_templates import get_template
    from lit.mask.scopes import get_scope
    from lit.model.loading import _image_processor
    from lit.records import load_records

    min_shard = settings.pop("min_shard", MIN_SHARD)
    spec = LabelSpec(
        get_template("vicuna_v1"), get_scope(scope), **{"max_length": 512, **settings}, image_root=records_path.parent
    )
    return labelled_dataset(
        load_records(records_path),
        records_path,
        cache,
        spec,
        tokenizer=tokenizer,
        image_inputs=ImageInputs(_image_processor(32), 16),
        workers=workers,
        min_shard=min_shard,
        progress=False,
    )


def model_config(name: str):
    """``conf/model/<name>.yaml`` over its ``defaults`` (other model configs, as Hydra composes the group), without
    the ``defaults`` key."""
    from omegaconf import OmegaConf

    own = OmegaConf.load(CONF / "model" / f"{name}.yaml")
    bases = [d for d in own.pop("defaults", []) if d != "_self_"]
    return OmegaConf.merge(*(model_config(b) for b in bases), own)


def tiny_model(config: str, tokenizer, template: str | None = None, **overrides):
    """A model with random weights and its processor from ``conf/model/<config>.yaml`` (over ``tiny.yaml``, its
    default), both towers 32 wide (then ``overrides``), the tokenizer prepared for ``template`` (default: the
    config's chat template): ``(model in eval mode, processor, cfg)``."""
    from lit.mask.chat_templates import get_template
    from lit.mask.tokenizer import prepare_tokenizer
    from lit.model.loading import compose_tiny

    cfg = model_config(config)
    cfg.text.hidden_size = cfg.vision.hidden_size = 32
    cfg.merge_with(overrides)
    prepare_tokenizer(tokenizer, get_template(template or cfg.chat_template))
    model, processor = compose_tiny(cfg, tokenizer)
    return model.eval(), processor, cfg


def tiny_training_args(cfg, out: Path):
    """``TrainingArguments`` built from ``cfg``'s groups exactly as ``lit.train.run.run`` passes them."""
    from lit.train.args import training_args

    return training_args(
        cfg.train,
        out,
        schedule=cfg.schedule,
        deepspeed=cfg.deepspeed,
        logger=cfg.logger,
        run_name=cfg.run_name,
        seed=cfg.seed,
    )


def free_port() -> str:
    """A TCP port free on this machine now (for MASTER_PORT)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def one_process_ds_env() -> dict:
    """The environment of a one-process DeepSpeed run on CPU (gloo), as a launcher would set it."""
    return {
        "DS_ACCELERATOR": "cpu",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": free_port(),
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
    }


def train_auto_and_score(given: Path, tmp_path: Path, demo_data: Path, *overrides: str):
    """The round trip every family's test makes: ``python train.py model=auto model.pretrained=<given> loss=lit``
    (plus ``overrides``) for 2 steps under ZeRO-3 on CPU on the demo data, the checkpoint reloaded through
    ``load_pretrained``, scored by lmms-eval (``chat_template=auto``: the template training saved) and run through
    VC, with the checks they share. Returns the data audit's tokens by kind, the reloaded model and processor."""
    import json
    import os
    import subprocess
    import sys

    import numpy as np

    from lit.eval.evaluate import evaluate
    from lit.eval.spec import EvalSpec
    from lit.eval.vc import analyse
    from lit.model.loading import load_pretrained

    records = json.loads((demo_data / "train.json").read_text())
    env = {**os.environ, "WANDB_MODE": "disabled", **one_process_ds_env()}
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "train.py", "model=auto", f"model.pretrained={given}", *overrides, "loss=lit"]
    cmd += ["train.max_steps=2", "logger=none", "deepspeed=zero3", "+train.ddp_backend=gloo"]
    cmd += ["train.per_device_train_batch_size=4", f"data.root={demo_data}", "data.generate=false"]
    cmd += [f"paths.data_dir={tmp_path}", f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run_dir / "train_metrics.json").read_text())["zero_stage"] == 3
    audit = json.loads((run_dir / "data_audit.json").read_text())
    supervised, seen = audit["supervised_tokens_by_kind"], audit["tokens_by_kind"]
    assert supervised["response"] > 0 and set(supervised) <= {"instruction", "response", "eos"}  # loss=lit's kinds
    assert seen["image"] > 0 and seen["role"] > 0  # in the input, never supervised

    checkpoint = run_dir / "checkpoint"
    loaded, loaded_processor = load_pretrained(str(checkpoint))
    assert all(p.numel() > 0 for p in loaded.parameters())  # gathered from the ZeRO-3 partitions

    spec = EvalSpec(("demo_pope", "demo_vqa"), str(demo_data), limit=4)
    scores = evaluate(checkpoint, spec, tmp_path / "eval", chat_template="auto")
    assert set(scores) == {"demo_pope", "demo_vqa"} and "pope_accuracy" in scores["demo_pope"]

    vc = analyse(str(checkpoint), records[:2], str(demo_data), "auto", attention_share=True)
    assert vc["n"] >= 2 and np.isfinite(vc["vc_mean"]) and 0 < vc["attention_to_image_mean"] < 1
    return seen, loaded, loaded_processor


def train_on_two_processes(demo_data: Path, data_dir: Path, run_dir: Path, *overrides: str):
    """``train.py`` with the tiny model (``TINY``) on the demo data, on 2 CPU processes (torchrun, gloo); the
    finished process, its run having succeeded."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    cmd += ["train.py", *TINY, *overrides, f"data.root={demo_data}", f"paths.data_dir={data_dir}"]
    cmd += [f"hydra.run.dir={run_dir}", "+train.ddp_backend=gloo", "hydra/job_logging=default"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def demo_turn_texts(demo_data: Path) -> list[str]:
    """Every turn's text in the demo's training records (``train.json``): what a family's round trip trains its
    tokenizer on."""
    import json

    records = json.loads((demo_data / "train.json").read_text())
    return [turn["value"] for record in records for turn in record["conversations"]]


def save_as_published(model, processor, folder: Path, chat_template: str | None = None) -> Path:
    """``folder`` holding ``model`` and ``processor`` (``save_pretrained``), the processor and its tokenizer carrying
    the Jinja ``chat_template`` (a published one; given none, the processor's own): a checkpoint as a hub repository
    publishes it, for ``model=auto`` to read."""
    if chat_template is not None:
        processor.chat_template = processor.tokenizer.chat_template = chat_template
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def write_noise_images(folder: Path, sizes: dict[str, tuple[int, int]]) -> Path:
    """``folder`` holding one RGB noise image per name of ``sizes`` (``(height, width)``), drawn in that order from
    one generator seeded 0: a family test's image folder."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, (height, width) in sizes.items():
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(folder / name)
    return folder


def supervised_dataset(family, records: list[dict], template, scope: str, sentences=frozenset(), max_length=1024):
    """``records`` as ``SupervisedDataset`` items for a family's tiny model: rendered in the chat template
    ``template``, labelled under the loss scope ``scope`` with the template sentences ``sentences``, tokenized by the
    family's tokenizer, the images read from its folder; ``family`` is a test's ``(model, processor, image inputs,
    image folder)``."""
    from lit.data.dataset import SupervisedDataset
    from lit.data.labels import LabelSpec
    from lit.mask.scopes import get_scope

    _, processor, inputs, root = family
    spec = LabelSpec(template, get_scope(scope), max_length, template_sentences=sentences, image_root=root)
    return SupervisedDataset(records, spec, processor.tokenizer, inputs, progress=False)


def template_typed_by_auto(processor, config, jinja: str):
    """The template ``chat_template: auto`` types from the Jinja ``jinja`` on ``processor`` and the model's
    ``config`` (``template_of``); the processor's own chat template is restored after."""
    from lit.mask.jinja_template import template_of

    own, processor.chat_template = processor.chat_template, jinja
    try:
        return template_of(processor, config)
    finally:
        processor.chat_template = own


def template_read_back(processor, template):
    """The template evaluation's ``chat_template: auto`` derives (``from_tokenizer``) from the Jinja training saves
    for ``template`` (``to_jinja``, lit/model/chat_jinja.py) on ``processor``; its own chat template is restored
    after."""
    from lit.mask.jinja_template import from_tokenizer
    from lit.model.chat_jinja import to_jinja

    own, processor.chat_template = processor.chat_template, to_jinja(template)
    try:
        return from_tokenizer(processor)
    finally:
        processor.chat_template = own


def assert_same_ids_and_labels(ours, theirs):
    """Two ``SupervisedDataset``s over the same records (say, one template and the template read back from its
    saved Jinja) give every record the same input ids and the same labels."""
    import torch

    assert len(ours) == len(theirs)
    assert all(torch.equal(ours[i]["input_ids"], theirs[i]["input_ids"]) for i in range(len(ours)))
    assert all(torch.equal(ours[i]["labels"], theirs[i]["labels"]) for i in range(len(ours)))


def assert_vit_supervises_the_answers_alone(vit, records: list[dict], tokenizer, answer: str):
    """Under ``vit`` (a ``SupervisedDataset`` over ``records`` with the ``vit`` scope) each record's supervised tokens
    decode to its answers alone, in order, each written as ``answer.format(<the answer>)`` (with the template's end
    of turn, e.g. ``"{}<|im_end|>"``)."""
    from lit.constants import IGNORE_INDEX

    for i, record in enumerate(records):
        ids, labels = vit[i]["input_ids"], vit[i]["labels"]
        answers = [turn["value"] for turn in record["conversations"] if turn["from"] == "gpt"]
        assert tokenizer.decode(ids[labels != IGNORE_INDEX]) == "".join(answer.format(a) for a in answers), record["id"]


def assert_lit_adds_the_instructions_alone(
    vit, lit, records: list[dict], tokenizer, instructions: dict, never: tuple[str, ...], vision_ids: set[int]
):
    """``vit`` and ``lit`` (``SupervisedDataset``s over ``records`` with those scopes): for each record, ``lit``
    supervises every token ``vit`` does (it adds, never removes), its supervised text holds each of the record's
    ``instructions[record id]`` and none of ``never`` (the system prompt, template sentences, role headers), and no
    supervised id is one of ``vision_ids`` (the image blocks' tokens)."""
    from lit.constants import IGNORE_INDEX

    for i, record in enumerate(records):
        ids, v, li = vit[i]["input_ids"], vit[i]["labels"], lit[i]["labels"]
        assert ((v != IGNORE_INDEX) <= (li != IGNORE_INDEX)).all(), record["id"]
        supervised = tokenizer.decode(ids[li != IGNORE_INDEX])
        assert all(instruction in supervised for instruction in instructions[record["id"]]), record["id"]
        assert not [text for text in never if text in supervised], record["id"]
        assert not set(ids[li != IGNORE_INDEX].tolist()) & vision_ids, record["id"]


def assert_parts_split_the_model_and_the_projector_trains_alone(model, projector_modules: tuple[str, ...]) -> set:
    """``lit.model.parts``' split of ``model``: every parameter is in ``vision``, ``projector`` or ``lm``, the
    projector's being exactly those whose names hold one of ``projector_modules`` (paths such as ``".connector."``);
    ``apply_freeze`` with the vision tower and the LM frozen leaves the projector alone trainable (all unfrozen
    after). Returns the projector's parameter names."""
    from lit.model.loading import apply_freeze
    from lit.model.parts import part_of

    parts = {name: part_of(name) for name, _ in model.named_parameters()}
    assert set(parts.values()) == {"vision", "projector", "lm"}
    projector = {name for name, part in parts.items() if part == "projector"}
    assert projector == {name for name in parts if any(module in name for module in projector_modules)}
    counts = apply_freeze(model, {"vision": True, "projector": False, "lm": True})
    apply_freeze(model, {})
    assert counts["vision"] == counts["lm"] == 0 < counts["projector"]
    return projector


def assert_padding_free_gives_the_padded_loss(family, ds):
    """``train.padding_free``'s parity for a family whose LM reads packed records apart by their position ids:
    ``check_padding_free`` accepts the family's model; the items of ``ds`` (a ``SupervisedDataset``) packed into one
    row by ``PaddingFreeCollator`` give the loss (atol 1e-5) of the same items padded by ``Collator``, one row each,
    and without the packed row's per-record ``position_ids`` another one (the records would attend to each other).
    ``family`` is a test's ``(model, processor, image inputs, image folder)``. Returns the padded and the packed
    batch, ``kind_counts`` dropped."""
    import torch

    from lit.data.collate import Collator, PaddingFreeCollator
    from lit.train.padding_free import check_padding_free

    model, processor, inputs, _ = family
    check_padding_free(model.config)
    items = [ds[i] for i in range(len(ds))]
    padded = Collator(processor.tokenizer.pad_token_id, inputs)(items)
    packed = PaddingFreeCollator(processor.tokenizer.pad_token_id, inputs)(items)
    for batch in (padded, packed):
        batch.pop("kind_counts")
    assert packed["input_ids"].shape[0] == 1 and padded["input_ids"].shape[0] == len(items)
    with torch.no_grad():
        assert torch.allclose(model(**padded).loss, model(**packed).loss, atol=1e-5)
        unmarked = {k: v for k, v in packed.items() if k != "position_ids"}
        assert not torch.allclose(model(**padded).loss, model(**unmarked).loss, atol=1e-5)
    return padded, packed
