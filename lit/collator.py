"""``LitCollator``: L2T's loss mask on image data for trainers other than ``train.py`` (TRL's ``SFTTrainer``,
Hugging Face's ``Trainer``).

Each example is labelled by the code ``train.py`` labels with (``lit.data.dataset.SupervisedDataset``: render into
typed spans, encode, labels by the scope's span kinds, the image expanded to the positions the model gives it) and
batched by ``train.py``'s collator, so its ``labels`` are ``train.py``'s for the same record, chat template, scope
and template sentences::

    from trl import SFTConfig, SFTTrainer
    from lit.collator import LitCollator

    collator = LitCollator(processor, model.config, chat_template="auto", scope="lit",
                           template_sentences="template_sentences.json")
    SFTTrainer(model=model, args=SFTConfig(..., remove_unused_columns=False), train_dataset=dataset,
               processing_class=processor, data_collator=collator).train()

Examples are LLaVA records (``conversations``, an optional ``image``: a path under ``image_root``, or an image in
memory) or TRL's conversational vision examples (``messages`` and ``images``, ``lit.data.convert.messages``; a
system message replaces the template's system prompt). ``remove_unused_columns=False`` keeps a LLaVA record's
columns for the collator (TRL keeps ``messages`` and ``images`` by itself).

A batch holds what the model's forward takes: ``input_ids``, ``attention_mask``, ``labels`` and the family's image
and token inputs (``pixel_values``; ``image_sizes``, ``image_grid_thw``, ``mm_token_type_ids``,
``qformer_input_ids`` where the family has them).

Weighted spans (``weights={"instruction": 0.1}``) add ``loss_weights``, which is not a model input: train with the
Trainer mixin that takes it out of the batch and weighs the loss by it::

    from lit.train.loss import SpanWeightedLoss

    class WeightedSFTTrainer(SpanWeightedLoss, SFTTrainer): ...

    WeightedSFTTrainer(..., data_collator=LitCollator(processor, model.config, weights={"instruction": 0.1}),
                       normalization="tokens")
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from lit.data.collate import Collator
from lit.data.convert.messages import record_of_messages
from lit.data.dataset import SupervisedDataset
from lit.data.labels import LabelSpec
from lit.mask.chat_templates import ChatTemplate
from lit.mask.mining import TemplateSentences
from lit.mask.scopes import get_scope
from lit.mask.tokenizer import prepare_tokenizer
from lit.model.chat_jinja import chat_template_of
from lit.model.families import image_inputs_for
from lit.records import RecordError


def _sentences(template_sentences) -> frozenset[str]:
    """A set of sentences, or the path of a ``python -m lit.mask.mining mine`` file."""
    if isinstance(template_sentences, (str, Path)):
        return TemplateSentences.load(template_sentences).sentences
    return frozenset(template_sentences)


class LitCollator:
    """Examples -> a padded batch labelled under a loss scope of the L2T ladder (``lit.mask.scopes``).

    ``processor``: the model's processor (its tokenizer must hold the template's image token: a model ``train.py``
    saved, or a Hugging Face checkpoint of a supported family); ``model_config``: the model's config (it decides how
    many positions an image takes); ``chat_template``: ``auto`` (the processor's own Jinja template, as
    ``model.chat_template=auto``), a name in ``lit.mask.chat_templates.TEMPLATES`` or a ``ChatTemplate``;
    ``scope``: vit, lit, lit_nosys or lit_all; ``weights``: span kind -> loss weight, as ``loss.weights`` (the batches
    then carry ``loss_weights``, which a Trainer with ``lit.train.loss.SpanWeightedLoss`` weighs the loss by);
    ``template_sentences``: the sentences ``lit`` leaves unsupervised (a
    set, or a mined file); ``max_length``/``too_long``: as ``data.max_length``/``data.too_long``; ``image_root``:
    the folder image paths are relative to. A bad example raises a ``RecordError`` naming it.
    """

    def __init__(
        self,
        processor,
        model_config,
        *,
        chat_template: str | ChatTemplate = "auto",
        scope: str = "lit",
        weights: dict[str, float] | None = None,
        template_sentences=frozenset(),
        max_length: int = 2048,
        too_long: str = "error",
        image_root: str | Path | None = None,
    ):
        self.tokenizer = getattr(processor, "tokenizer", processor)
        if isinstance(chat_template, ChatTemplate):
            template = chat_template
        else:
            template = chat_template_of(chat_template, processor, model_config)
        prepare_tokenizer(self.tokenizer, template, frozen_vocab=True)  # the model's embeddings are not resized here
        self.image_inputs = image_inputs_for(model_config, processor)
        self.spec = LabelSpec(
            template,
            get_scope(scope, weights),
            max_length,
            _sentences(template_sentences),
            too_long=too_long,
            image_root=image_root,
        )
        self.collate = Collator(self.tokenizer.pad_token_id, self.image_inputs)

    def record(self, example: dict, rid) -> tuple[dict, LabelSpec]:
        """The LLaVA record of an example and the label spec it is labelled by (its own system prompt, if any)."""
        if "conversations" in example:
            record = {k: v for k, v in example.items() if not (k == "image" and v is None)}  # a text-only row
            return record, self.spec
        if "messages" not in example:
            raise RecordError(
                rid,
                f"expected 'conversations' (LLaVA) or 'messages' (TRL), got columns {sorted(example)}; "
                "with Trainer or SFTTrainer set remove_unused_columns=False so the columns reach the collator",
            )
        record, system = record_of_messages(example, rid)
        if system is None:
            return record, self.spec
        template = self.spec.chat_template
        if not template.system:
            raise RecordError(rid, f"a system message, but chat template {template.name!r} has no system turn")
        return record, replace(self.spec, chat_template=replace(template, system_prompt=system))

    def item(self, example: dict, index: int) -> dict:
        """One example as ``SupervisedDataset`` gives it to ``train.py``'s collator."""
        rid = example.get("id", f"#{index} of the batch")
        record, spec = self.record(example, rid)
        record.setdefault("id", rid)  # errors name the example
        labelled = SupervisedDataset([record], spec, self.tokenizer, self.image_inputs, progress=False)
        return labelled[0]

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.collate([self.item(example, i) for i, example in enumerate(examples)])
        batch.pop("kind_counts")  # train.py's logging; not a model input
        return batch
