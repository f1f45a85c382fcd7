"""An lmms-eval model class for checkpoints written by ``train.py``.

Registered in lmms-eval's model registry as ``lit_llava`` (entry point group ``lmms_eval.models`` in
``pyproject.toml``, and at runtime by ``lit.eval.evaluate``), so ``lmms-eval --model lit_llava
--model_args pretrained=DIR,chat_template=vicuna_v1`` works too. The prompt is rendered by the same
``lit.mask.render`` code and chat template as training, so evaluation sees exactly the training format.
"""

from __future__ import annotations

import json

import torch
from lmms_eval.api.model import lmms
from tqdm import tqdm
from transformers import LogitsProcessor, LogitsProcessorList

from lit.constants import IMAGE_MARKER, KIND_INDEX
from lit.data.image_inputs import item_images
from lit.mask.chat_templates import lavis_layout
from lit.mask.render import encode, expand_images, render
from lit.mask.tokenizer import prepare_tokenizer
from lit.model.chat_jinja import chat_template_of
from lit.model.families import image_inputs_for
from lit.model.loading import load_pretrained
from lit.records import RecordError

# New tokens when a task sets no ``max_new_tokens``: lmms-eval's llava_hf default (lmms-eval 0.7.3,
# lmms_eval/models/simple/llava_hf.py lines 353-354; models/chat/llava_hf.py lines 75-76).
DEFAULT_MAX_NEW_TOKENS = 1024
# Task generation settings handed on to ``generate`` as they are (beam search, a floor on the answer length).
PASSED_GENERATION_KWARGS = ("num_beams", "min_new_tokens", "length_penalty")


class NewTokenRepetitionPenalty(LogitsProcessor):
    """The CTRL repetition penalty (a seen token's logit divided by ``penalty`` if positive, multiplied if
    negative), over the tokens generated so far only, not the prompt's. LAVIS's InstructBLIP generates from
    embeddings, so the ``input_ids`` its penalty looks at hold the generated tokens alone
    (declare-lab/InstrAug ``IBLIP/lavis/models/blip2_models/blip2_vicuna_instruct.py::generate``)."""

    def __init__(self, penalty: float, prompt_length: int) -> None:
        self.penalty = float(penalty)
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        seen = input_ids[:, self.prompt_length :]
        if seen.shape[1] == 0:
            return scores
        picked = torch.gather(scores, 1, seen)
        picked = torch.where(picked < 0, picked * self.penalty, picked / self.penalty)
        return scores.scatter(1, seen, picked)


class LitLlava(lmms):
    """Greedy, beam-search or sampled generation with a LLaVA, LLaVA-NeXT or InstructBLIP checkpoint, and the
    log-likelihood of answers (``multiple_choice`` and ``loglikelihood`` tasks), ``batch_size`` requests at a
    time, in ``dtype`` (``auto``: the checkpoint's own, bf16 for the paper models) on ``device``.

    Generation settings read from a task: ``max_new_tokens``, ``temperature`` (> 0 samples), ``until``,
    ``num_beams``, ``min_new_tokens``, ``length_penalty``, and ``repetition_penalty``, which counts the
    generated tokens only (``NewTokenRepetitionPenalty``)."""

    def __init__(
        self,
        pretrained: str,
        chat_template: str = "vicuna_v1",
        device: str = "cpu",
        dtype: str = "auto",
        batch_size: int | str = 1,
        **kwargs,
    ) -> None:
        super().__init__()
        self.model, self.processor = load_pretrained(pretrained, dtype=dtype)
        self.model.to(device).eval()
        self.device = device
        self.batch_size = max(1, int(batch_size))
        self.tokenizer = self.processor.tokenizer
        self.template = chat_template_of(chat_template, self.processor, self.model.config)
        prepare_tokenizer(self.tokenizer, self.template, frozen_vocab=True)  # as training prepared it
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(self.template.image_token)
        self.image_inputs = image_inputs_for(self.model.config, self.processor)
        self.n_empty = 0  # generations that decoded to empty text (scored, never dropped)

    def _prompt(self, question: str, images=(), answer: str | None = None, where: str = "prompt") -> dict:
        """One prompt: ``input_ids`` (rendered and expanded exactly as in training), its images' inputs (none,
        one, or a list for several) and any per-record token inputs (InstructBLIP's ``qformer_input_ids``). A
        question without ``<image>`` markers gets one per image in front of it, space-separated on one line, as
        lmms-eval's ``llava_hf`` writes them (lmms-eval 0.7.3, ``lmms_eval/models/simple/llava_hf.py`` lines
        316-321); a question that has markers keeps them where they are and must hold one per image (a
        ``RecordError`` naming ``where``, the task's document, otherwise). With ``answer`` the assistant turn
        holding it is rendered too, as in training, and ``answer_mask`` marks its ``response`` tokens (the
        answer, without the end-of-turn token)."""
        rgbs = [image.convert("RGB") for image in images]
        if rgbs and IMAGE_MARKER not in question:
            question = " ".join([IMAGE_MARKER] * len(rgbs)) + "\n" + question
        turns = [{"from": "human", "value": question}]
        if answer is not None:
            turns.append({"from": "gpt", "value": answer})
        record = {"conversations": turns}
        if rgbs:
            record["image"] = ["<in memory>"] * len(rgbs) if len(rgbs) > 1 else "<in memory>"
        spans = render(record, self.template, record_id=where, add_generation_prompt=answer is None)
        encoded = encode(spans, self.tokenizer, record_id=where, image_token_id=self.image_token_id)
        ids, kinds = lavis_layout(self.template, encoded.input_ids, encoded.kinds, truncate=False)  # generate: no cut
        item = {key: torch.from_numpy(v) for key, v in self.image_inputs.text_inputs(record, where).items()}
        item["image"] = None
        if rgbs:
            most = self.image_inputs.max_images
            if most is not None and len(rgbs) > most:
                name = self.image_inputs.model_name
                raise RecordError(where, f"{len(rgbs)} images: this model ({name}) takes {most} per prompt")
            counts = [self.image_inputs.n_tokens(rgb.height, rgb.width) for rgb in rgbs]
            image_ids = [self.image_inputs.image_ids(n, self.image_token_id) for n in counts]
            kinds = expand_images(kinds, ids, self.image_token_id, counts, [KIND_INDEX["image"]] * len(counts))
            ids = expand_images(ids, ids, self.image_token_id, counts, image_ids)
            pixels = [self.image_inputs.pixels(rgb) for rgb in rgbs]
            item["image"] = pixels[0] if len(pixels) == 1 else pixels
        elif self.image_inputs.requires_image:
            raise ValueError("this model (InstructBLIP) needs an image for every question")
        if answer is not None:
            item["answer_mask"] = torch.from_numpy(kinds == KIND_INDEX["response"])
        item["input_ids"] = torch.from_numpy(ids)
        return item

    def _batch(self, items: list[dict], left: bool = True) -> dict[str, torch.Tensor]:
        """Prompts padded to one length, on the left (generation appends on the right) or on the right
        (scoring: every token keeps the positions it has alone), images in order."""
        longest = max(len(it["input_ids"]) for it in items)
        ids = torch.full((len(items), longest), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(items), longest), dtype=torch.long)
        for row, it in enumerate(items):
            n = len(it["input_ids"])
            cols = slice(longest - n, longest) if left else slice(0, n)
            ids[row, cols], mask[row, cols] = it["input_ids"], 1
        batch = {
            "input_ids": ids,
            "attention_mask": mask,
            **self.image_inputs.collate_text(items),
            **self.image_inputs.token_inputs(ids),
        }
        images = [image for it in items for image in item_images(it)]  # in order, a prompt's several in a row
        if images:
            batch.update(self.image_inputs.collate(images))
            batch["pixel_values"] = batch["pixel_values"].to(self.model.dtype)
        return batch

    def prompt_inputs(self, question: str, image=None) -> dict[str, torch.Tensor]:
        """The model inputs (batch of one) for ``question`` about ``image``: a PIL image, a list of them, or None."""
        images = [] if image is None else list(image) if isinstance(image, (list, tuple)) else [image]
        return self._batch([self._prompt(question, images)])

    def _generate(self, items: list[dict], gen_kwargs: dict) -> list[str]:
        inputs = {k: v.to(self.device) for k, v in self._batch(items).items()}
        sample = float(gen_kwargs.get("temperature", 0) or 0) > 0
        new_tokens = int(gen_kwargs.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
        passed = {k: gen_kwargs[k] for k in PASSED_GENERATION_KWARGS if gen_kwargs.get(k) is not None}
        processors = LogitsProcessorList()
        if gen_kwargs.get("repetition_penalty") not in (None, 1, 1.0):
            processors.append(NewTokenRepetitionPenalty(gen_kwargs["repetition_penalty"], inputs["input_ids"].shape[1]))
        out = self.model.generate(
            **inputs,
            max_new_tokens=new_tokens,
            do_sample=sample,
            temperature=gen_kwargs.get("temperature") if sample else None,
            pad_token_id=self.tokenizer.pad_token_id,
            logits_processor=processors,
            **passed,
        )
        texts = []
        for row in out[:, inputs["input_ids"].shape[1] :]:
            text = self.tokenizer.decode(row, skip_special_tokens=True)
            for stop in gen_kwargs.get("until", []) or []:
                text = text.split(stop)[0]
            texts.append(text.strip())
        return texts

    @torch.no_grad()
    def generate_until(self, requests) -> list[str]:
        """Requests with the same generation settings are generated ``batch_size`` at a time; answers come back
        in request order."""
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(json.dumps(request.args[1], sort_keys=True, default=str), []).append(i)
        outputs: list[str | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), desc="generating", disable=len(requests) < 20)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                items = []
                for i in chunk:
                    context, _, doc_to_visual, doc_id, task, split = requests[i].args
                    visuals = [v for v in (doc_to_visual(self.task_dict[task][split][doc_id]) or []) if v is not None]
                    items.append(self._prompt(context, visuals, where=f"{task} doc {doc_id}"))
                for i, text in zip(chunk, self._generate(items, requests[chunk[0]].args[1])):
                    self.n_empty += not text
                    outputs[i] = text
                bar.update(len(chunk))
        bar.close()
        return outputs

    @torch.no_grad()
    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        """``(log p(continuation | context), greedy)`` per request: the context is rendered as the question of
        the human turn (with its image), the continuation as the assistant's answer, as in training; the
        log-probability is the sum over the answer's tokens (the end-of-turn token left out), as LAVIS's
        ``predict_class`` scores candidates (its per-candidate loss is a mean over one padded length shared by
        all candidates, so it ranks them as the sum does). The template places the answer after its own
        separator, so leading whitespace of the continuation (lmms-eval's ``target_delimiter``) is dropped.
        ``greedy``: every answer token is the model's most likely next token. A log-probability (higher is
        likelier), as lmms-eval's API documents, not a loss."""
        outputs: list[tuple[float, bool] | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), desc="scoring", disable=len(requests) < 20)
        for start in range(0, len(requests), self.batch_size):
            chunk = list(range(start, min(start + self.batch_size, len(requests))))
            items = []
            for i in chunk:
                context, continuation, doc_to_visual, doc_id, task, split = requests[i].args
                doc = self.task_dict[task][split][doc_id]
                if callable(continuation):  # ``output_type: loglikelihood`` passes its doc_to_target
                    continuation = continuation(doc)
                visuals = [v for v in (doc_to_visual(doc) or []) if v is not None]
                answer = str(continuation).lstrip()
                items.append(self._prompt(context, visuals, answer=answer, where=f"{task} doc {doc_id}"))
            batch = {k: v.to(self.device) for k, v in self._batch(items, left=False).items()}
            logits = self.model(**batch).logits
            for row, (i, it) in enumerate(zip(chunk, items)):
                positions = torch.nonzero(it["answer_mask"]).squeeze(1).to(self.device)
                targets = batch["input_ids"][row, positions]
                step = logits[row, positions - 1].float()  # position t is predicted at t - 1
                logp = torch.log_softmax(step, dim=-1).gather(1, targets[:, None]).sum()
                outputs[i] = (float(logp), bool((step.argmax(-1) == targets).all()))
            bar.update(len(chunk))
        bar.close()
        return outputs

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("lit_llava does not support multi-round generation tasks")
