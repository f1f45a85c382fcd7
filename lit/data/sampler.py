"""LLaVA's ``group_by_modality_length``: batches that are all image records or all text-only records, each of
similar length, with every device's batch carrying about the same number of tokens.

One optimizer step across all ranks consumes a megabatch of ``per-device batch x chunks`` records, where
``chunks = world size x gradient accumulation`` is the number of per-device batches in the step. The Trainer's
dataloader cuts the order into per-device batches and accelerate hands batch ``j`` of a step to rank
``j % world size`` at micro-step ``j // world size``, so chunk ``j`` of a megabatch is exactly one device batch.

Per modality (image records, then text-only records, each in dataset order):

1. the records are shuffled and cut into megabatches (the last one may be partial);
2. each megabatch is sorted by length, longest first (ties keep the shuffled order);
3. the sorted megabatch is dealt into ``chunks`` device batches: each record goes to the batch with the smallest
   total length so far, and a batch that has ``per-device batch`` records takes no more. A megabatch whose size
   does not divide into ``chunks`` (only a last, partial one) is dealt round-robin instead.

With both modalities present, the last megabatch of each modality (partial or not) is set aside; the other
megabatches are shuffled, and the two set-aside megabatches follow as one final group in dataset-index order.
With a single modality the megabatches keep their shuffled order, the partial one last.

This is the behaviour of LLaVA's ``LengthGroupedSampler(group_by_modality=True)`` as ``LLaVATrainer`` builds it
(``llava/train/llava_trainer.py``; ``tests/data/test_sampler_llava_parity.py`` checks it batch for batch), drawing the
same three permutations in the same order from one generator. LLaVA draws them from torch's global generator; here
the generator is seeded with ``seed + epoch``, so the order depends only on those and a resumed run skips exactly
the batches it has seen. One deliberate difference: LLaVA marks text-only records by a negative length, and a data
set made only of text-only records reaches its splitting code with those negative lengths, which sorts shortest
first and fills the device batches one after another; here lengths are magnitudes in every case, so such a data
set is balanced like any other.
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


def _deal(megabatch: list[int], lengths: list[int], chunks: int) -> list[list[int]]:
    """Deal a length-sorted megabatch into ``chunks`` device batches of about equal total length."""
    if len(megabatch) % chunks:
        return [megabatch[c::chunks] for c in range(chunks)]
    size = len(megabatch) // chunks
    batches: list[list[int]] = [[] for _ in range(chunks)]
    load = [0.0] * chunks
    for i in megabatch:
        lightest = min(range(chunks), key=load.__getitem__)  # the first of equally light batches
        batches[lightest].append(i)
        load[lightest] = float("inf") if len(batches[lightest]) == size else load[lightest] + lengths[i]
    return batches


def _grouped(
    records: list[int], lengths: list[int], batch_size: int, chunks: int, generator: torch.Generator
) -> list[list[int]]:
    """One modality's megabatches, shuffled, each sorted by length and laid out as its device batches in turn."""
    shuffled = [records[j] for j in torch.randperm(len(records), generator=generator).tolist()]
    size = batch_size * chunks
    out = []
    for k in range(0, len(shuffled), size):
        ranked = sorted(shuffled[k : k + size], key=lambda i: -lengths[i])  # stable: ties keep the shuffled order
        out.append([i for batch in _deal(ranked, lengths, chunks) for i in batch])
    return out


def modality_grouped_order(
    lengths: list[int], has_image: list[bool], batch_size: int, chunks: int, generator: torch.Generator
) -> list[int]:
    """The epoch's record order; ``batch_size`` is the per-device batch, ``chunks`` = world size x accumulation."""
    if len(lengths) != len(has_image) or batch_size < 1 or chunks < 1:
        raise ValueError("lengths and has_image need one entry per record; batch_size and chunks must be >= 1")
    lengths = [abs(n) for n in lengths]
    image = [i for i, m in enumerate(has_image) if m]
    text = [i for i, m in enumerate(has_image) if not m]
    if not image or not text:
        return [i for mb in _grouped(image or text, lengths, batch_size, chunks, generator) for i in mb]
    image_mbs = _grouped(image, lengths, batch_size, chunks, generator)
    text_mbs = _grouped(text, lengths, batch_size, chunks, generator)
    rest = image_mbs[:-1] + text_mbs[:-1]
    order = [rest[j] for j in torch.randperm(len(rest), generator=generator).tolist()]
    order.append(sorted(image_mbs[-1] + text_mbs[-1]))
    return [i for mb in order for i in mb]


class ModalityLengthGroupedSampler(Sampler[int]):
    """``batch_size``: the dataloader's per-device batch; ``chunks``: world size x gradient accumulation."""

    def __init__(self, lengths: list[int], has_image: list[bool], batch_size: int, chunks: int, seed: int = 0):
        if len(lengths) != len(has_image) or batch_size < 1 or chunks < 1:
            raise ValueError("lengths and has_image need one entry per record; batch_size and chunks must be >= 1")
        self.lengths, self.has_image, self.seed = list(lengths), list(has_image), seed
        self.batch_size, self.chunks = batch_size, chunks
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(modality_grouped_order(self.lengths, self.has_image, self.batch_size, self.chunks, generator))
