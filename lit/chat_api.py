"""Chat completions over an OpenAI-compatible HTTP API, with bounded retries and backoff.

Used by the InstrAug ``openai`` backend (a ``vllm serve`` endpoint) and the HallusionBench GPT judge. The
``openai`` client sends the request (auth, URL, timeouts); the retries are ours, so that one policy covers
every transient failure: a connection error or timeout (a server that died or is restarting), a 408/409/429 or
5xx answer, and a 2xx answer that is not a chat completion (an empty body, non-JSON, JSON without ``choices``:
a proxy or a server half up). Each is retried ``max_retries`` times, waiting ``backoff`` seconds, doubled
per retry up to ``max_backoff``, with jitter (a ``Retry-After`` header, up to 60 s, wins). Any other 4xx
stops at once. What still fails raises ``ChatAPIError`` naming the endpoint, the model and the request.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass


class ChatAPIError(RuntimeError):
    """A chat-completions request that failed for good."""


class _Transient(Exception):
    """One attempt that may succeed if tried again; ``what`` says how it failed."""

    def __init__(self, what: str, detail: str = "", retry_after: float | None = None):
        super().__init__(what)
        self.what, self.detail, self.retry_after = what, detail, retry_after


def _one_line(text: object, limit: int = 300) -> str:
    return " ".join(str(text).split())[:limit]


def base_url_of(url: str) -> str:
    """``https://host/v1/chat/completions`` or ``https://host/v1`` -> ``https://host/v1``."""
    return url.rstrip("/").removesuffix("/chat/completions")


@dataclass
class ChatClient:
    """An ``openai`` client (its own retries off) and the retry policy used with it."""

    api: object
    max_retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 8.0

    @property
    def base_url(self) -> str:
        return str(self.api.base_url).rstrip("/")

    @property
    def api_key(self) -> str:
        return self.api.api_key

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0-based)."""
        if retry_after is not None and 0 <= retry_after <= 60:
            return retry_after
        return min(self.backoff * 2**retry, self.max_backoff) * random.uniform(0.75, 1.0)


def client(
    url: str, api_key: str, max_retries: int = 5, timeout: float = 600.0, backoff: float = 0.5, max_backoff: float = 8.0
) -> ChatClient:
    import openai

    api = openai.OpenAI(base_url=base_url_of(url), api_key=api_key or "EMPTY", max_retries=0, timeout=timeout)
    return ChatClient(api, max_retries=max_retries, backoff=backoff, max_backoff=max_backoff)


def _retry_after(err) -> float | None:
    try:
        return float(err.response.headers.get("retry-after"))
    except (AttributeError, TypeError, ValueError):
        return None


def _reply_text(body: str) -> str:
    """The message of a chat-completion body; ``_Transient`` if the body is not one."""
    if not body.strip():
        raise _Transient("answered with an empty body")
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        raise _Transient("answered with a body that is not JSON", repr(body[:120])) from None
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        content = False
    if content is not None and not isinstance(content, str):
        raise _Transient("answered with JSON that is not a chat completion (no choices[0].message)", repr(body[:120]))
    return content or ""


def _attempt(chat: ChatClient, request: dict) -> str:
    import openai

    try:
        raw = chat.api.chat.completions.with_raw_response.create(**request)
    except openai.APIStatusError as err:
        if err.status_code in (408, 409, 429) or err.status_code >= 500:
            raise _Transient(f"answered {err.status_code}", _one_line(err.message), _retry_after(err)) from err
        raise
    except openai.APIConnectionError as err:  # includes timeouts
        raise _Transient("is unreachable", _one_line(err)) from err
    return _reply_text(raw.http_response.text)


def complete(chat: ChatClient, request: dict, what: str = "") -> str:
    """The reply text of one chat-completions ``request`` (model, messages, sampling keys)."""
    import openai

    where = f"{chat.base_url} (model {request.get('model')!r})"
    label = what or repr(str(request.get("messages", [{}])[-1].get("content", ""))[:80])
    for retry in range(chat.max_retries + 1):
        try:
            return _attempt(chat, request)
        except openai.APIStatusError as err:
            raise ChatAPIError(
                f"{where} answered {err.status_code} (not retried) to request {label}: {_one_line(err.message)}"
            ) from err
        except _Transient as err:
            if retry == chat.max_retries:
                raise ChatAPIError(
                    f"{where} {err.what} (transient, retries exhausted after {chat.max_retries} retries) to request "
                    f"{label}" + (f": {err.detail}" if err.detail else "")
                ) from err
            time.sleep(chat.delay(retry, err.retry_after))
    raise AssertionError("unreachable")
