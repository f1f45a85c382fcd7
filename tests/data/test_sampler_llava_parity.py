"""The modality-grouped sampler's per-device batches against LLaVA's, batch for batch.

Reference: haotian-liu/LLaVA ``llava/train/llava_trainer.py`` (c121f04):
``split_to_even_chunks`` (lines 38-57), ``get_modality_length_grouped_indices`` (lines 60-85),
``get_length_grouped_indices`` (lines 88-96), ``LengthGroupedSampler.__iter__`` (lines 125-130) and
``LLaVATrainer._get_train_sampler`` (lines 139-146), which passes ``batch_size=args.train_batch_size`` and
``world_size=args.world_size * args.gradient_accumulation_steps`` and no generator. Lengths follow
``LazySupervisedDataset.modality_lengths`` (``llava/train/train.py`` lines 683-690): positive for image records,
negative for text-only ones.

``_llava_*`` below restate that behaviour for the test (not project code). LLaVA draws its three permutations
from torch's global generator (``generator=None``); the project draws the same three, in the same order, from its
own generator. Seeding the global generator and the project's generator with the same number therefore gives both
the same permutations, and the orders can be compared exactly. Per-device batches come from accelerate's own
``BatchSamplerShard``, as the Trainer's dataloader builds them.
"""

from __future__ import annotations

import itertools
import random

import pytest
import torch
from accelerate.data_loader import BatchSamplerShard
from torch.utils.data import BatchSampler

from lit.data.sampler import ModalityLengthGroupedSampler, modality_grouped_order

# --- reference: LLaVA's behaviour (llava_trainer.py lines 38-96) ---------------------------------------------------


def _llava_even_chunks(indices, lengths, num_chunks):  # lines 38-57
    if len(indices) % num_chunks:
        return [indices[c::num_chunks] for c in range(num_chunks)]
    per_chunk = len(indices) // num_chunks
    chunks, totals = [[] for _ in range(num_chunks)], [0] * num_chunks
    for index in indices:
        target = totals.index(min(totals))
        chunks[target].append(index)
        totals[target] += lengths[index]
        if len(chunks[target]) == per_chunk:
            totals[target] = float("inf")
    return chunks


def _llava_length_grouped(lengths, batch_size, world_size):  # lines 88-96, generator=None
    perm = torch.randperm(len(lengths))
    size = world_size * batch_size
    megabatches = [perm[k : k + size].tolist() for k in range(0, len(lengths), size)]
    megabatches = [sorted(mb, key=lambda i: lengths[i], reverse=True) for mb in megabatches]
    return [i for mb in megabatches for chunk in _llava_even_chunks(mb, lengths, world_size) for i in chunk]


def _llava_modality_grouped(lengths, batch_size, world_size):  # lines 60-85, generator=None
    assert all(n != 0 for n in lengths)
    if all(n > 0 for n in lengths) or all(n < 0 for n in lengths):
        return _llava_length_grouped(lengths, batch_size, world_size)
    image = [(i, n) for i, n in enumerate(lengths) if n > 0]
    text = [(i, -n) for i, n in enumerate(lengths) if n < 0]
    image_order = [image[j][0] for j in _llava_length_grouped([n for _, n in image], batch_size, world_size)]
    text_order = [text[j][0] for j in _llava_length_grouped([n for _, n in text], batch_size, world_size)]
    size = world_size * batch_size
    image_mbs = [image_order[k : k + size] for k in range(0, len(image_order), size)]
    text_mbs = [text_order[k : k + size] for k in range(0, len(text_order), size)]
    additional = image_mbs[-1] + text_mbs[-1]
    rest = image_mbs[:-1] + text_mbs[:-1]
    rest = [rest[j] for j in torch.randperm(len(rest))]
    if additional:
        rest.append(sorted(additional))
    return [i for mb in rest for i in mb]


def _llava_order(signed_lengths, batch_size, world_size, accumulation, seed):
    """``LLaVATrainer``'s sampler order with torch's global generator seeded to ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _llava_modality_grouped(signed_lengths, batch_size, world_size * accumulation)


# --- helpers ------------------------------------------------------------------------------------------------------


def _records(n_image, n_text, seed, low=8, high=2048):
    rng = random.Random(seed)
    lengths = [rng.randint(low, high) for _ in range(n_image + n_text)]
    has_image = [True] * n_image + [False] * n_text
    rng.shuffle(has_image)  # modalities interleaved in dataset order, as in mix-665K
    return lengths, has_image


def _signed(lengths, has_image):
    return [n if img else -n for n, img in zip(lengths, has_image)]


def _device_batches(order, batch_size, world_size):
    """Each rank's batches, as accelerate shards the Trainer's dataloader (split_batches=False, even_batches=True)."""
    return [
        list(
            BatchSamplerShard(
                BatchSampler(order, batch_size, drop_last=False),
                world_size,
                rank,
                split_batches=False,
                even_batches=True,
            )
        )
        for rank in range(world_size)
    ]


WORLD, BATCH, ACCUM = (1, 2, 8), (1, 4, 16), (1, 2)
MIXES = [(300, 77), (256, 128), (37, 5), (3, 2), (200, 0), (1, 40)]  # image records, text-only records


@pytest.mark.parametrize("world_size, batch_size, accumulation", list(itertools.product(WORLD, BATCH, ACCUM)))
@pytest.mark.parametrize("n_image, n_text", MIXES)
def test_device_batches_equal_llava(world_size, batch_size, accumulation, n_image, n_text):
    seed = 1000 * world_size + 10 * batch_size + accumulation
    lengths, has_image = _records(n_image, n_text, seed)
    theirs = _llava_order(_signed(lengths, has_image), batch_size, world_size, accumulation, seed)
    sampler = ModalityLengthGroupedSampler(lengths, has_image, batch_size, world_size * accumulation, seed=seed - 3)
    sampler.set_epoch(3)  # seed + epoch is the generator's seed
    ours = list(sampler)
    assert ours == theirs
    assert _device_batches(ours, batch_size, world_size) == _device_batches(theirs, batch_size, world_size)


@pytest.mark.parametrize("world_size, batch_size, accumulation", [(8, 16, 1), (2, 4, 2), (1, 4, 2)])
def test_ties_keep_llava_order(world_size, batch_size, accumulation):
    """Few distinct lengths: the sort's tie order and the first-lightest choice decide the batches."""
    lengths, has_image = _records(150, 90, 7, low=1, high=4)
    theirs = _llava_order(_signed(lengths, has_image), batch_size, world_size, accumulation, 11)
    ours = modality_grouped_order(
        lengths, has_image, batch_size, world_size * accumulation, torch.Generator().manual_seed(11)
    )
    assert ours == theirs


def test_text_only_data_set_is_balanced_by_magnitude():
    """Deliberate difference (see lit/data/sampler.py): LLaVA's all-negative branch sorts shortest first and fills
    the device batches one after another; ours treats the lengths as magnitudes, as LLaVA does for an all-image set."""
    lengths, has_image = _records(0, 200, 5)
    ours = modality_grouped_order(lengths, has_image, 4, 8, torch.Generator().manual_seed(2))
    assert ours == _llava_order(lengths, 4, 8, 1, 2)  # LLaVA given the same lengths as image (positive) lengths
    assert ours != _llava_order(_signed(lengths, has_image), 4, 8, 1, 2)


def _heaviest_over_mean(order, lengths, batch_size, world_size, accumulation, n_megabatches):
    """Per micro-step of the first ``n_megabatches``: the heaviest rank's token total over the ranks' mean; the
    worst step."""
    ranks = _device_batches(order, batch_size, world_size)
    n_steps = n_megabatches * accumulation
    ratios = []
    for step in range(n_steps):
        totals = [sum(lengths[i] for i in ranks[r][step]) for r in range(world_size)]
        ratios.append(max(totals) / (sum(totals) / world_size))
    return max(ratios)


@pytest.mark.parametrize("accumulation", [1, 2])
def test_heaviest_device_batch_is_the_mean_at_llava_1_5_scale(accumulation):
    """LLaVA-1.5 fine-tunes at 16 per device on 8 GPUs: every device of a step carries about the same tokens.
    16 image and 8 text megabatches; the last of each form LLaVA's final group (index order, not balanced), so the
    22 shuffled ones are measured."""
    lengths, has_image = _records(2048 * accumulation, 1024 * accumulation, 3)
    theirs = _llava_order(_signed(lengths, has_image), 16, 8, accumulation, 4)
    ours = modality_grouped_order(lengths, has_image, 16, 8 * accumulation, torch.Generator().manual_seed(4))
    ratio = _heaviest_over_mean(ours, lengths, 16, 8, accumulation, 22)
    assert ratio == _heaviest_over_mean(theirs, lengths, 16, 8, accumulation, 22)
    assert ratio < 1.02
