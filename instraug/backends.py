"""LLM backends behind one small interface: ``generate(chats, sampling, seeds) -> replies`` (one per chat).

``seeds`` holds one sampling seed per chat (derived from the job key), so a job's output does not depend
on which batch it landed in — exactly so for ``openai`` and ``vllm`` (per-request seeds); the batched
``transformers`` backend seeds each batch with its first job's seed.

- ``transformers``: in-process Hugging Face model (CPU or GPU), batched with left padding;
- ``openai``: any OpenAI-compatible server (``vllm serve``, ``transformers serve``, ...), concurrent
  requests — the way to use vLLM 0.33, whose torch/transformers pins cannot share this environment;
- ``vllm``: in-process ``vllm.LLM`` (GPU, tensor parallel), all chats submitted at once so the engine's
  continuous batching sees the whole workload. Imported only when used.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.6
    top_p: float = 0.9
    max_new_tokens: int = 128
    seed: int = 0


class TransformersBackend:
    def __init__(self, model: str, batch_size: int = 16, device: str = "cpu", dtype: str = "auto"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.name = model
        self.tokenizer = AutoTokenizer.from_pretrained(model, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).to(device).eval()
        self.batch_size, self.device = batch_size, device

    def generate(self, chats: list[list[dict]], sampling: Sampling, seeds: list[int]) -> list[str]:
        replies = []
        for start in range(0, len(chats), self.batch_size):
            batch = chats[start : start + self.batch_size]
            texts = [self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in batch]
            enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            self.torch.manual_seed(seeds[start])
            with self.torch.no_grad():
                out = self.model.generate(
                    **enc,
                    do_sample=sampling.temperature > 0,
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                    max_new_tokens=sampling.max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            replies += self.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        return replies


class OpenAIBackend:
    """Requests through the ``openai`` client (``lit.chat_api``): transient failures (server unreachable, 429,
    5xx, a reply that is not a chat completion) are retried ``max_retries`` times, ``backoff`` seconds first,
    doubled up to ``max_backoff``; other 4xx stop at once. A request that fails for good raises
    ``ChatAPIError`` with its sampling ``seed`` attached, and the requests not yet sent are cancelled.

    The API key is read from the environment variable ``api_key_env`` when the backend is built, never from the
    config: a config value would be written into the run's ``config.yaml`` and wandb's config. Unset, the key is
    ``EMPTY`` (a local ``vllm serve`` needs none)."""

    def __init__(
        self,
        model: str,
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 32,
        timeout: float = 600,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        **unknown,
    ):
        from lit.chat_api import client

        if "api_key" in unknown:
            raise ValueError(
                "augmentation.backend.args.api_key would be written into the run's config.yaml (and wandb's config): "
                f"put the key in an environment variable and name it with augmentation.backend.args.api_key_env "
                f"(default {api_key_env})"
            )
        if unknown:
            raise TypeError(f"unknown OpenAI backend settings {sorted(unknown)}")
        self.name, self.concurrency = model, concurrency
        key = os.environ.get(api_key_env) or "EMPTY"
        self.client = client(
            base_url, key, max_retries=max_retries, timeout=timeout, backoff=backoff, max_backoff=max_backoff
        )

    def _one(self, chat: list[dict], sampling: Sampling, seed: int) -> str:
        from lit.chat_api import ChatAPIError, complete

        request = {
            "model": self.name,
            "messages": chat,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_new_tokens,
            "seed": seed,
        }
        try:
            return complete(self.client, request, what=f"(seed {seed}) {chat[-1]['content'][:80]!r}")
        except ChatAPIError as err:
            err.seed = seed  # which job failed (instraug.generate names it)
            raise

    def generate(self, chats: list[list[dict]], sampling: Sampling, seeds: list[int]) -> list[str]:
        with ThreadPoolExecutor(self.concurrency) as pool:
            futures = [pool.submit(self._one, chat, sampling, seed) for chat, seed in zip(chats, seeds)]
            try:
                return [f.result() for f in futures]
            except BaseException:  # one request failed for good: do not start the others
                pool.shutdown(wait=True, cancel_futures=True)
                raise


def vllm_sampling_kwargs(sampling: Sampling, seed: int) -> dict:
    """What ``vllm.SamplingParams`` receives (kept apart so it is checked without vLLM installed)."""
    return {
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_new_tokens,
        "seed": seed,
    }


class BackendUnavailable(SystemExit):
    """The configured backend cannot run in this environment: exits with its one-line message (no traceback)."""


def require_backend(kind: str, model: str = "<model>") -> None:
    """Stop at once, in one line, if ``kind`` needs a package this environment lacks (vLLM lives in its own
    environment: its torch/transformers pins cannot share this one)."""
    import importlib.util

    if kind == "vllm" and importlib.util.find_spec("vllm") is None:
        raise BackendUnavailable(
            "augmentation.backend.kind=vllm runs vLLM in-process, but vllm is not installed here: run augment.py in "
            "the vLLM environment (conda env create -f environment-vllm.yml && conda activate lit-vllm), or serve the "
            f"model (vllm serve {model}) and use the OpenAI-compatible backend: augmentation.backend.kind=openai "
            "'~augmentation.backend.args' "
            f"'+augmentation.backend.args={{model: {model}, base_url: \"http://127.0.0.1:8000/v1\"}}'"
        )


class VLLMBackend:
    def __init__(self, model: str, tensor_parallel_size: int = 1, **engine_kwargs):
        require_backend("vllm", model)
        from vllm import LLM

        self.name = model
        self.llm = LLM(model=model, tensor_parallel_size=tensor_parallel_size, **engine_kwargs)

    def generate(self, chats: list[list[dict]], sampling: Sampling, seeds: list[int]) -> list[str]:
        from vllm import SamplingParams

        params = [SamplingParams(**vllm_sampling_kwargs(sampling, seed)) for seed in seeds]
        outputs = self.llm.chat(chats, params, use_tqdm=True)
        return [o.outputs[0].text for o in outputs]


def build_backend(kind: str, **kwargs):
    backends = {"transformers": TransformersBackend, "openai": OpenAIBackend, "vllm": VLLMBackend}
    if kind not in backends:
        raise KeyError(f"unknown LLM backend {kind!r}; choose one of {', '.join(backends)}")
    return backends[kind](**kwargs)
