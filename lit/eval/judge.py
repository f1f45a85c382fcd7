"""An LLM judge over an OpenAI-compatible chat-completions endpoint (HallusionBench's GPT path).

HallusionBench's official scoring asks GPT-4 whether a free-form prediction agrees with the reference
answer: *correct*, *incorrect* or *unclear* (codes 1, 0, 2 as in its evaluation script; for questions
without a visual supplement "unclear" counts as right). The prompt below is ours, written to that rubric.

The API key is read from an environment variable (``api_key_env``) at call time and never written to a
config or result file. Verdicts are cached in a JSONL file keyed by model and prompt, so a rerun or a
resumed evaluation pays each call once. Calls go through the ``openai`` client (``lit.chat_api``), which
retries transient failures (connection errors, 429, 5xx) ``retries`` times with backoff; other 4xx stop
at once. A call that still fails raises: a judge outage is never recorded as a verdict.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

from lit.files import read_appended_jsonl

VERDICTS = {"incorrect": 0, "correct": 1, "unclear": 2}

PROMPT = (
    "You grade answers to a question about an image. Compare the prediction with the reference answer.\n"
    "Reply with one word: correct if the prediction agrees with the reference, incorrect if it contradicts "
    "it, unclear if the prediction does not commit to an answer.\n\n"
    "Question: {question}\nReference answer: {reference}\nPrediction: {prediction}\nVerdict:"
)


def parse_verdict(reply: str) -> int:
    """The verdict code of a judge reply ("incorrect" is tested first: it contains "correct")."""
    text = reply.lower()
    if "incorrect" in text:
        return VERDICTS["incorrect"]
    if "correct" in text:
        return VERDICTS["correct"]
    return VERDICTS["unclear"]


@dataclass
class ChatJudge:
    api_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    cache: str | None = None
    timeout: float = 60.0
    retries: int = 3
    backoff: float = 0.5  # seconds before the first retry, doubled per retry (lit.chat_api)
    max_tokens: int = 16
    _memo: dict | None = field(default=None, init=False, repr=False)
    _client: object = field(default=None, init=False, repr=False)

    @classmethod
    def from_spec(cls, spec: dict) -> ChatJudge:
        """From the ``eval.hallusion_judge`` settings (their ``kind`` says whether a judge is used at all)."""
        return cls(**{k: v for k, v in spec.items() if k != "kind"})

    def api_key(self) -> str:
        key = os.environ.get(self.api_key_env)
        if not key:
            raise RuntimeError(
                f"the GPT judge needs an API key in ${self.api_key_env} (eval.hallusion_judge.api_key_env); "
                "set it, or score without a key: eval.hallusion_judge.kind=string_match"
            )
        return key

    def verdict(self, question: str, reference: str, prediction: str) -> int:
        prompt = PROMPT.format(question=question, reference=reference, prediction=prediction)
        digest = hashlib.sha256(f"{self.model}\n{prompt}".encode()).hexdigest()
        cached = self._cached().get(digest)
        if cached is not None:
            return cached["verdict"]
        reply = self._ask(prompt)
        code = parse_verdict(reply)
        if self.cache:
            with open(self.cache, "a") as fh:
                fh.write(json.dumps({"key": digest, "verdict": code, "reply": reply}) + "\n")
        self._memo[digest] = {"verdict": code}
        return code

    def _cached(self) -> dict:
        if self._memo is None:
            self._memo = {}
            if self.cache:  # a line cut off by a killed run is dropped (logged): that verdict is asked again
                rows, _ = read_appended_jsonl(
                    self.cache, "judge cache", "delete that line (its verdict is asked again) or the whole file"
                )
                self._memo.update((row["key"], row) for row in rows)
        return self._memo

    def _ask(self, prompt: str) -> str:
        from lit.chat_api import ChatAPIError, client, complete

        if self._client is None:
            self._client = client(
                self.api_url, self.api_key(), max_retries=self.retries, timeout=self.timeout, backoff=self.backoff
            )
        request = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,
            "max_tokens": self.max_tokens,
        }
        try:
            return complete(self._client, request)
        except ChatAPIError as err:
            raise RuntimeError(f"judge API {self.api_url}: {err}") from err
