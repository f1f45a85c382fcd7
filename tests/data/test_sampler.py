"""LLaVA's modality-grouped, length-sorted sampling: the order's properties, and the Trainer's batches."""

from __future__ import annotations

import json

import pytest
import torch

from lit.data.sampler import ModalityLengthGroupedSampler, modality_grouped_order


def _order(lengths, has_image, batch, chunks, seed=0):
    return modality_grouped_order(lengths, has_image, batch, chunks, torch.Generator().manual_seed(seed))


def _megabatch_sizes(n, megabatch):
    return [megabatch] * ((n - 1) // megabatch) + [n - megabatch * ((n - 1) // megabatch)] if n else []


# The layout changed from contiguous length-sorted slices (rank 0 got the longest records) to LLaVA's equal-length
# deal of each megabatch over its device batches, and LLaVA's final group in index order; batch-for-batch parity
# with LLaVA is in tests/data/test_sampler_llava_parity.py, these are the properties that hold for any seed.
@pytest.mark.parametrize(
    "n_image, n_text, batch, chunks", [(37, 11, 2, 2), (8, 0, 2, 2), (0, 5, 1, 2), (3, 2, 4, 2), (64, 64, 4, 4)]
)
def test_order_is_single_modality_megabatches_of_sorted_device_batches(n_image, n_text, batch, chunks):
    gen = torch.Generator().manual_seed(1)
    lengths = torch.randint(5, 500, (n_image + n_text,), generator=gen).tolist()
    has_image = [True] * n_image + [False] * n_text
    order = _order(lengths, has_image, batch, chunks)
    assert sorted(order) == list(range(n_image + n_text))
    megabatch = batch * chunks
    image_sizes, text_sizes = _megabatch_sizes(n_image, megabatch), _megabatch_sizes(n_text, megabatch)
    if n_image and n_text:  # shuffled megabatches, then the last of each modality as one group in index order
        sizes = [megabatch] * (len(image_sizes) + len(text_sizes) - 2) + [image_sizes[-1] + text_sizes[-1]]
        final = order[len(order) - sizes[-1] :]
        assert final == sorted(final)
        assert sorted(has_image[i] for i in final) == [False] * text_sizes[-1] + [True] * image_sizes[-1]
        sizes.pop()
    else:
        sizes = image_sizes or text_sizes
    start = 0
    for size in sizes:
        mb = order[start : start + size]
        start += size
        assert len({has_image[i] for i in mb}) == 1
        per_batch = size // chunks if size % chunks == 0 else None
        batches = (
            [mb[k : k + per_batch] for k in range(0, size, per_batch)]
            if per_batch
            else [mb[c::chunks] for c in range(chunks)]
        )
        for b in batches:  # each device batch is dealt longest first
            assert [lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True)
        if per_batch:  # no device batch holds all the longest records
            assert max(sum(lengths[i] for i in b) for b in batches) - min(
                sum(lengths[i] for i in b) for b in batches
            ) <= max(lengths[i] for i in mb)


def test_order_depends_on_seed_and_epoch_only():
    lengths, has_image = list(range(40)), [i % 3 == 0 for i in range(40)]
    assert _order(lengths, has_image, 2, 2, seed=3) == _order(lengths, has_image, 2, 2, seed=3)
    sampler = ModalityLengthGroupedSampler(lengths, has_image, 2, 2, seed=3)
    first = list(sampler)
    assert list(sampler) == first and len(sampler) == 40
    sampler.set_epoch(1)
    assert list(sampler) != first


def _dataset(demo_data, bpe_tokenizer):
    """20 demo image records and 12 text-only ones, labelled by the real dataset."""
    from lit.data.dataset import SupervisedDataset
    from lit.data.image_inputs import ImageInputs
    from lit.data.labels import LabelSpec
    from lit.mask.chat_templates import get_template
    from lit.mask.scopes import get_scope
    from lit.mask.tokenizer import prepare_tokenizer
    from lit.model.loading import _image_processor

    template = get_template("vicuna_v1")
    prepare_tokenizer(bpe_tokenizer, template)
    records = json.loads((demo_data / "train.json").read_text())[:20]
    records += [
        {
            "id": f"text-{i}",
            "conversations": [
                {"from": "human", "value": "Say hello " * (1 + i % 5)},
                {"from": "gpt", "value": "hello"},
            ],
        }
        for i in range(12)
    ]
    spec = LabelSpec(template, get_scope("lit"), 512, image_root=demo_data)
    return SupervisedDataset(records, spec, bpe_tokenizer, ImageInputs(_image_processor(32), 16), progress=False)


def test_trainer_batches_hold_one_modality(demo_data, bpe_tokenizer, tmp_path):
    """Through the real Trainer dataloader: every batch is all-image or all-text."""
    from transformers import TrainingArguments

    from lit.data.collate import Collator
    from lit.train.trainer import LitTrainer

    ds = _dataset(demo_data, bpe_tokenizer)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        use_cpu=True,
        report_to=[],
        remove_unused_columns=False,
        seed=0,
    )
    model = torch.nn.Linear(1, 1)
    for grouped in (True, False):
        trainer = LitTrainer(
            model=model,
            args=args,
            train_dataset=ds,
            data_collator=Collator(bpe_tokenizer.pad_token_id, ds.image_inputs),
            group_by_modality_length=grouped,
        )
        kinds = [
            batch.get("pixel_values") is not None and len(batch["pixel_values"]) == len(batch["input_ids"])
            for batch in trainer.get_train_dataloader()
        ]
        mixed = [
            batch
            for batch in trainer.get_train_dataloader()
            if batch.get("pixel_values") is not None and len(batch["pixel_values"]) < len(batch["input_ids"])
        ]
        if grouped:
            assert not mixed and sum(kinds) == 5  # 20 image records in batches of 4, 12 text records in 3
        else:
            assert mixed  # the default shuffle mixes them (seed 0)


def test_trainer_sampler_is_one_optimizer_step_per_megabatch(demo_data, bpe_tokenizer, tmp_path):
    """As LLaVATrainer (llava/train/llava_trainer.py lines 139-146, c121f04): batch_size = the per-device batch,
    world_size = processes x accumulation; the dataloader's batches are the sampler order cut per device batch."""
    from transformers import TrainingArguments

    from lit.data.collate import Collator
    from lit.train.trainer import LitTrainer

    ds = _dataset(demo_data, bpe_tokenizer)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=3,
        use_cpu=True,
        report_to=[],
        remove_unused_columns=False,
        seed=5,
    )
    trainer = LitTrainer(
        model=torch.nn.Linear(1, 1),
        args=args,
        train_dataset=ds,
        data_collator=Collator(bpe_tokenizer.pad_token_id, ds.image_inputs),
        group_by_modality_length=True,
    )
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, ModalityLengthGroupedSampler)
    assert (sampler.batch_size, sampler.chunks, sampler.seed) == (2, 3 * args.world_size, 5)
    order = _order(ds.lengths(), ds.has_image(), 2, 3, seed=5)
    assert list(sampler) == order
    collate = Collator(bpe_tokenizer.pad_token_id, ds.image_inputs)
    batches = list(trainer.get_train_dataloader())
    assert len(batches) == 16
    for k, batch in enumerate(batches):
        assert torch.equal(batch["input_ids"], collate([ds[i] for i in order[2 * k : 2 * k + 2]])["input_ids"])
