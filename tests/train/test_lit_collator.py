"""lit.collator.LitCollator: train.py's labels, for TRL's SFTTrainer and Hugging Face's Trainer.

The reference is train.py's own path (``lit.train.run.prepare``: the data set it labels, the collator it batches
with) on records with the LLaVA system prompt, task-template sentences ("Answer yes or no.", mined by loss=lit),
images and text-only records. The collator is fed the same records as LLaVA records and as TRL's conversational
vision examples; those mirror the format TRL 1.16 documents and reads in
``trl/trainer/sft_trainer.py`` (``DataCollatorForVisionLanguageModeling``: ``{"messages": [...], "images": [...]}``)
and ``trl/data_utils.py`` (``prepare_multimodal_messages``: content blocks ``{"type": "image"}`` /
``{"type": "text", "text": ...}``, one image placeholder per image).
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from tiny_runs import tiny_cfg

from lit.collator import LitCollator
from lit.constants import IGNORE_INDEX, IMAGE_MARKER
from lit.data.collate import Collator
from lit.records import RecordError
from lit.train.loss import supervised_token_loss

FAMILIES = ("tiny", "tiny_qwen2_vl")
TEXT_ONLY = [
    {
        "id": f"text-{i}",
        "conversations": [
            {"from": "human", "value": "Name a colour of the shapes. Answer yes or no." + " Please." * i},
            {"from": "gpt", "value": "Red" if i else "Blue"},
        ],
    }
    for i in range(2)
]


@pytest.fixture(scope="module", params=FAMILIES)
def prepared(request, demo_data, tmp_path_factory):
    """train.py's data set and model for 8 demo records and 2 text-only ones (``lit.train.run.prepare``)."""
    from lit.train.run import prepare

    out = tmp_path_factory.mktemp(request.param)
    records = json.loads((demo_data / "train.json").read_text())[:8]
    records[3:3] = TEXT_ONLY
    (out / "train.json").write_text(json.dumps(records))
    cfg = tiny_cfg(
        demo_data,
        out,
        f"model={request.param}",
        f"data.path={out / 'train.json'}",
        f"data.image_root={demo_data}",
        "data.label_cache_dir=null",
    )
    return records, prepare(cfg, out)


def _collator(p, demo_data, **kwargs) -> LitCollator:
    return LitCollator(
        p.built.processor,
        p.built.model.config,
        chat_template=p.built.template,
        scope="lit",
        template_sentences=p.dataset.spec.template_sentences,
        image_root=demo_data,
        **kwargs,
    )


def trl_example(record: dict, image_root, system: str | None = None) -> dict:
    """A LLaVA record as a TRL conversational vision example: structured content, the image as a placeholder block
    in its user message and the decoded image in ``images``."""
    messages = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
    for turn in record["conversations"]:
        text = turn["value"]
        blocks = [{"type": "text", "text": text.replace(IMAGE_MARKER + "\n", "")}]
        if IMAGE_MARKER in text:
            blocks.insert(0, {"type": "image", "text": None})
        messages.append({"role": "user" if turn["from"] == "human" else "assistant", "content": blocks})
    images = [Image.open(image_root / record["image"]).convert("RGB")] if "image" in record else []
    return {"id": record["id"], "messages": messages, "images": images}


def _expected(p, ids: list) -> dict:
    """train.py's batch of the records ``ids``."""
    index = {p.dataset.examples[i].record_id: i for i in range(len(p.dataset))}
    return Collator(p.built.tokenizer.pad_token_id, p.built.image_inputs)([p.dataset[index[r]] for r in ids])


def _assert_same_batch(batch: dict, expected: dict) -> None:
    expected = {k: v for k, v in expected.items() if k != "kind_counts"}
    assert sorted(batch) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(batch[key], value), key


def test_llava_records_get_train_py_labels(prepared, demo_data):
    records, p = prepared
    batch = _collator(p, demo_data)(records)
    assert (batch["labels"] != IGNORE_INDEX).sum() > 0
    _assert_same_batch(batch, _expected(p, [r["id"] for r in records]))


def test_trl_messages_get_train_py_labels(prepared, demo_data):
    records, p = prepared
    batch = _collator(p, demo_data)([trl_example(r, demo_data) for r in records])
    _assert_same_batch(batch, _expected(p, [r["id"] for r in records]))


def test_auto_reads_the_template_a_saved_checkpoint_carries(prepared, demo_data):
    """``chat_template="auto"``: the Jinja template train.py saves with a checkpoint (``to_jinja``), read back into
    typed pieces, labels as the named template did."""
    import copy

    from lit.model.chat_jinja import to_jinja

    records, p = prepared
    processor = copy.deepcopy(p.built.processor)
    processor.chat_template = to_jinja(p.built.template)
    collator = LitCollator(
        processor,
        p.built.model.config,
        chat_template="auto",
        template_sentences=p.dataset.spec.template_sentences,
        image_root=demo_data,
    )
    _assert_same_batch(collator(records), _expected(p, [r["id"] for r in records]))


def test_instruction_supervised_templates_and_system_not(prepared, demo_data):
    """Under lit the instruction's words are targets, the template sentence and the system prompt are not."""
    records, p = prepared
    collator = _collator(p, demo_data)
    record = records[0]
    batch = collator([record])
    tok = p.built.tokenizer
    targets = tok.decode(batch["labels"][0][batch["labels"][0] != IGNORE_INDEX])
    assert "yellow triangle" in targets and "Answer yes or no" not in targets
    system_word = max(p.built.template.system_prompt.replace(".", "").split(), key=len)  # artificial, assistant
    assert system_word in tok.decode(batch["input_ids"][0]) and system_word not in targets
    vit = LitCollator(
        p.built.processor, p.built.model.config, chat_template=p.built.template, scope="vit", image_root=demo_data
    )([record])
    assert (vit["labels"] != IGNORE_INDEX).sum() < (batch["labels"] != IGNORE_INDEX).sum()


def test_a_system_message_replaces_the_prompt_and_stays_unsupervised(prepared, demo_data):
    records, p = prepared
    collator = _collator(p, demo_data)
    plain = collator([trl_example(records[0], demo_data)])
    custom = collator([trl_example(records[0], demo_data, system="You judge coloured shapes with care.")])
    assert "judge coloured shapes" in p.built.tokenizer.decode(custom["input_ids"][0])
    targets = [b["labels"][0][b["labels"][0] != IGNORE_INDEX] for b in (plain, custom)]
    assert torch.equal(*targets)  # the same supervised tokens: the system prompt is never a target


def test_bad_examples_name_the_example_and_the_fix(prepared, demo_data):
    records, p = prepared
    collator = _collator(p, demo_data)
    with pytest.raises(RecordError, match="remove_unused_columns=False"):
        collator([{"id": "x", "input_ids": [1, 2]}])
    two = trl_example(records[0], demo_data)
    two["images"] = two["images"] * 2
    with pytest.raises(RecordError, match=r"'train-0'.*1 image placeholders but 2 images"):
        collator([two])
    answer_image = trl_example(records[0], demo_data)
    answer_image["messages"][1]["content"].append({"type": "image", "text": None})
    with pytest.raises(RecordError, match="image in an assistant message"):
        collator([answer_image])


class _Recording:
    """A collator that keeps the ids and batches it produced."""

    def __init__(self, collator):
        self.collator, self.batches = collator, []

    def __call__(self, examples):
        batch = self.collator(examples)
        self.batches.append(([e["id"] for e in examples], {k: v.clone() for k, v in batch.items()}))
        return batch


def sft_config(output_dir):
    """TRL's SFTConfig of the collator tests: 3 CPU steps of 3 records, logged each, nothing saved, every column
    the collator needs kept."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=3,
        max_steps=3,
        logging_steps=1,
        learning_rate=1e-3,
        gradient_checkpointing=False,
        bf16=False,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )


def _check_training(p, recording, log_history, initial_model) -> None:
    """Every batch the trainer saw is train.py's; the first logged loss is train.py's loss on the first batch."""
    assert len(recording.batches) >= 3  # the data loader may fetch one batch ahead
    for ids, batch in recording.batches:
        _assert_same_batch(batch, _expected(p, ids))
    first = dict(recording.batches[0][1])
    labels = first.pop("labels")
    with torch.no_grad():
        expected = supervised_token_loss(initial_model(**first), labels).item()
    losses = [h["loss"] for h in log_history if "loss" in h]
    assert len(losses) == 3
    assert losses[0] == pytest.approx(expected, abs=2e-4)


@pytest.mark.integration
def test_trl_sft_trainer_trains_on_train_py_labels(prepared, demo_data, tmp_path):
    import copy

    from datasets import Dataset
    from trl import SFTTrainer

    records, p = prepared
    model = copy.deepcopy(p.built.model).train()
    initial = copy.deepcopy(model).eval()
    dataset = Dataset.from_list([trl_example(r, demo_data) for r in records])
    recording = _Recording(_collator(p, demo_data))
    args = sft_config(tmp_path)
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=p.built.processor, data_collator=recording
    )
    trainer.train()
    _check_training(p, recording, trainer.state.log_history, initial)


@pytest.mark.integration
def test_hf_trainer_trains_on_train_py_labels(prepared, demo_data, tmp_path):
    import copy

    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    records, p = prepared
    model = copy.deepcopy(p.built.model).train()
    initial = copy.deepcopy(model).eval()
    dataset = Dataset.from_list([{"id": r["id"], "image": r.get("image"), **r} for r in records])
    recording = _Recording(_collator(p, demo_data))
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=3,
        max_steps=3,
        logging_steps=1,
        learning_rate=1e-3,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=recording)
    trainer.train()
    _check_training(p, recording, trainer.state.log_history, initial)
