"""Learning-rate schedules that Hugging Face's ``get_scheduler`` does not have, by name (``train.lr_schedule``).

``lavis_epoch_cosine``: InstructBLIP as InstrAug's LAVIS fork trains it (``linear_warmup_cosine_lr``). LAVIS
sets the rate before every micro-batch (not every optimizer step) from the epoch and the micro-batch's index
in it: in the first epoch a linear warm-up from ``warmup_start_lr`` to the peak over ``warmup_steps``
micro-batches, then the peak for the rest of that epoch; from the second epoch on one value per epoch,
``peak * (1 + cos(pi * epoch / epochs)) / 2`` (minimum 0), so 3 epochs run at 1, 0.75 and 0.25 of the
peak. An optimizer step applies the rate set for its last micro-batch. Here the same rates are given per
optimizer step: step ``k`` of the first epoch ends with micro-batch ``k * accumulation + accumulation - 1``.
"""

from __future__ import annotations

import math

SCHEDULES = ("lavis_epoch_cosine",)


def lavis_epoch_cosine(
    step: int, *, steps_per_epoch: int, accumulation: int, epochs: float, warmup_steps: int, start_factor: float
) -> float:
    """The rate of optimizer step ``step`` (from 0) as a multiple of the peak. ``warmup_steps`` counts
    micro-batches (LAVIS's ``warmup_steps``); ``start_factor`` is ``warmup_start_lr / peak``."""
    epoch, in_epoch = divmod(step, max(steps_per_epoch, 1))
    if epoch == 0:
        micro = in_epoch * accumulation + accumulation - 1
        return min(1.0, start_factor + (1.0 - start_factor) * micro / max(warmup_steps, 1))
    return 0.5 * (1.0 + math.cos(math.pi * epoch / max(math.ceil(epochs), 1)))
