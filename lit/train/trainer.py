"""Hugging Face ``Trainer`` with the supervised-token loss and per-span-kind token logging."""

from __future__ import annotations

import os
import signal
import time

import torch
from transformers import Trainer, TrainerCallback

from lit.constants import SPAN_KINDS
from lit.model.parts import part_of
from lit.train.loss import SpanWeightedLoss


class LitTrainer(SpanWeightedLoss, Trainer):
    """Adds ``n_tokens/<kind>`` (supervised tokens per span kind since the last log), with weighted spans
    ``weight_mass/<kind>`` (those tokens times their kind's weight), and this rank's ``throughput/tokens_per_s`` /
    ``supervised_tokens_per_s`` to every log line, so VIT and LIT runs can be compared on how much they supervise
    and how fast they go. The loss: ``lit.train.loss`` (``normalization`` for weighted spans)."""

    def __init__(
        self,
        *args,
        group_by_modality_length: bool = False,
        part_lrs: dict[str, float] | None = None,
        kind_weights=None,
        **kwargs,
    ):
        """``kind_weights``: each span kind's loss weight (``MaskScope.kind_weights``) where the scope is weighted."""
        super().__init__(*args, **kwargs)
        self.kind_weights = None if kind_weights is None else [float(w) for w in kind_weights]
        self._kind_tokens = torch.zeros(len(SPAN_KINDS), dtype=torch.long)
        self._tokens_seen, self._last_log = 0, time.perf_counter()
        self.group_by_modality_length = group_by_modality_length
        self.part_lrs = dict(part_lrs or {})

    def _get_train_sampler(self, train_dataset=None):
        """LLaVA's modality-grouped, length-sorted order (``lit.data.sampler``) when asked, else the default."""
        if not self.group_by_modality_length:
            return super()._get_train_sampler(train_dataset)
        from lit.data.sampler import ModalityLengthGroupedSampler

        dataset = train_dataset if train_dataset is not None else self.train_dataset

        # As LLaVATrainer: batch_size = the dataloader's per-device batch (``args.train_batch_size`` unless
        # auto_find_batch_size shrank it), world_size = processes x accumulation, so one megabatch is one optimizer
        # step over all ranks and each of its chunks is one device batch.
        args = self.args
        return ModalityLengthGroupedSampler(
            dataset.lengths(),
            dataset.has_image(),
            self._train_batch_size,
            args.world_size * args.gradient_accumulation_steps,
            seed=args.seed,
        )

    def create_optimizer(self, model=None):
        """The default optimizer, except that the parts named in ``part_lrs`` (``lit.model.parts.PARTS``) get their
        own learning rate: LLaVA's ``mm_projector_lr`` (the projector at 2e-5 beside LoRA's 2e-4) and
        LLaVA-NeXT's ``mm_vision_tower_lr`` (the vision tower at 2e-6 beside 1e-5)."""
        if not self.part_lrs or self.optimizer is not None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        groups: dict[tuple[str, bool], list] = {}
        for name, param in opt_model.named_parameters():
            if param.requires_grad:
                part = part_of(name)
                groups.setdefault((part if part in self.part_lrs else "", name in decay), []).append(param)
        param_groups = [
            {
                "params": params,
                "weight_decay": self.args.weight_decay if decayed else 0.0,
                "part": part,
                **({"lr": self.part_lrs[part]} if part else {}),
            }
            for (part, decayed), params in sorted(groups.items())
        ]
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """Hugging Face's scheduler (``train.lr_scheduler_type``), or the one named by ``train.lr_schedule``
        (``lit.train.schedule``: ``lavis_epoch_cosine``, LAVIS's per-micro-batch warm-up and per-epoch cosine)."""
        name = getattr(self.args, "lr_schedule", "")
        if not name or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        from functools import partial

        from lit.train import schedule

        args = self.args
        batches = len(self.get_train_dataloader())  # per process, as the Trainer counts an epoch's update steps
        accumulation = args.gradient_accumulation_steps
        peak = args.learning_rate
        factor = partial(
            getattr(schedule, name),
            steps_per_epoch=-(-batches // accumulation),
            accumulation=accumulation,
            epochs=args.num_train_epochs,
            warmup_steps=int(args.warmup_steps),
            start_factor=args.warmup_start_lr / peak if peak else 0.0,
        )
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, factor)
        self._created_lr_scheduler = True
        return self.lr_scheduler

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        counts = inputs.pop("kind_counts", None)
        if counts is not None and model.training:
            self._kind_tokens += counts.detach().cpu()
        if model.training:  # padding-free batches have no attention mask and no padding
            mask = inputs.get("attention_mask")
            self._tokens_seen += int(mask.sum()) if mask is not None else inputs["input_ids"].numel()
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """Resume the weights strictly.

        transformers 5.23 saves checkpoints with its original-format key names
        (``language_model.model.layers...``) but ``Trainer._load_from_checkpoint`` loads them with
        ``load_state_dict(strict=False)`` into the model's own names (``model.language_model.layers...``):
        nothing matches, nothing is loaded, and training silently continues from the in-memory weights.
        Here the checkpoint goes through ``from_pretrained`` (which maps the names) and is copied with
        ``strict=True``. DeepSpeed runs resume through the engine's own checkpoint and keep the default path.
        """
        model = model if model is not None else self.model
        if self.is_deepspeed_enabled or self.is_fsdp_enabled or hasattr(model, "peft_config"):  # peft: adapter only
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        loaded = type(model).from_pretrained(resume_from_checkpoint, dtype=next(model.parameters()).dtype)
        model.load_state_dict(loaded.state_dict(), strict=True)

    def log(self, logs: dict, start_time=None) -> None:
        if "loss" in logs:
            for i, (kind, n) in enumerate(zip(SPAN_KINDS, self._kind_tokens.tolist())):
                if n:
                    logs[f"n_tokens/{kind}"] = n
                    if self.kind_weights is not None:
                        logs[f"weight_mass/{kind}"] = n * self.kind_weights[i]
            now = time.perf_counter()
            logs["throughput/tokens_per_s"] = self._tokens_seen / max(now - self._last_log, 1e-9)  # this rank's
            logs["throughput/supervised_tokens_per_s"] = int(self._kind_tokens.sum()) / max(now - self._last_log, 1e-9)
            for group in getattr(self.optimizer, "param_groups", []):  # what the optimizer applies, by part
                if group.get("part"):
                    logs[f"learning_rate/{group['part']}"] = group["lr"]
            self._kind_tokens.zero_()
            self._tokens_seen, self._last_log = 0, now
        super().log(logs, start_time)


KILL_AFTER_SAVE = "LIT_TEST_KILL_AFTER_SAVE"


class KillAfterSave(TrainerCallback):
    """Test hook (``LIT_TEST_KILL_AFTER_SAVE=<step>``): the process SIGKILLs itself right after ``checkpoint-<step>``
    is completely written (``on_save`` runs after the Trainer has written ``trainer_state.json`` and rotated the
    checkpoints), so kill-and-resume is tested at a known point instead of whenever a signal happens to land."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
        return control


def part_lrs(model, adapter) -> dict[str, float]:
    """Per-part learning rates of the ``model`` and ``adapter`` groups: the model's (``model.part_lrs``, e.g.
    NeXT's vision tower) and LoRA's projector (``adapter.projector_lr``)."""
    lrs = dict(model.get("part_lrs") or {})
    if adapter.get("projector_lr") is not None:
        lrs["projector"] = adapter.projector_lr
    return lrs


def build_trainer(
    built,
    args,
    dataset,
    *,
    group_by_modality_length: bool = False,
    part_lrs: dict[str, float] | None = None,
    normalization: str = "tokens",
) -> LitTrainer:
    """The Trainer of a run (``args``: its ``TrainingArguments``, ``lit.train.args.training_args``): the
    supervised-token loss (weighted by the data set's scope where ``loss.weights`` sets weights, normalised by
    ``normalization``), LLaVA's modality-length grouping when asked, the per-part learning rates, the collator
    of the model's image inputs (padded, or padding-free with ``train.padding_free``), and the
    ``LIT_TEST_KILL_AFTER_SAVE`` hook when set."""
    from lit.data.collate import Collator
    from lit.train.padding_free import padding_free_collator
    from lit.train.preemption import StopOnSignal

    kill_step = os.environ.get(KILL_AFTER_SAVE)
    scope = dataset.spec.scope
    pad = built.tokenizer.pad_token_id
    if args.padding_free:
        collator = padding_free_collator(built.model, pad, built.image_inputs)
    else:
        collator = Collator(pad, built.image_inputs)
    return LitTrainer(
        model=built.model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        group_by_modality_length=group_by_modality_length,
        part_lrs=part_lrs,
        normalization=normalization,
        kind_weights=scope.kind_weights() if scope.weighted else None,
        callbacks=[StopOnSignal(), *([KillAfterSave(int(kill_step))] if kill_step else [])],  # lit.train.preemption
    )


def train_metrics(trainer: LitTrainer, result, audit: dict) -> dict:
    """What a run reports: loss, steps, the batch as run, the optimizer chain that stepped (Accelerate ->
    DeepSpeed ZeRO -> the optimizer), the ZeRO stage, the gradient clipping that was applied (under DeepSpeed
    the engine's ``gradient_clipping()``, which its ZeRO optimizer clips at; else ``train.max_grad_norm``;
    0: none) and the supervised tokens by span kind."""
    args = trainer.args
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    engine = getattr(trainer, "deepspeed", None)
    clipping = float(engine.gradient_clipping()) if engine is not None else float(args.max_grad_norm or 0.0)
    optimizer, names = trainer.optimizer, []
    while optimizer is not None and len(names) < 5:
        names.append(type(optimizer).__name__)
        optimizer = getattr(optimizer, "optimizer", None)
    return {
        "train_loss": result.training_loss,
        "steps": result.global_step,
        "world_size": args.world_size,
        "optimizer": names,
        "global_batch": args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps,
        "zero_stage": plugin.zero_stage if plugin is not None else 0,
        "gradient_clipping": clipping,
        **audit["supervised_tokens_by_kind"],
    }
