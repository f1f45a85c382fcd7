"""Chat completions over an OpenAI-compatible HTTP API, with the ``openai`` client's own retries.

Used by the InstrAug ``openai`` backend (a ``vllm serve`` endpoint) and the HallusionBench GPT judge.
Transient failures (connection errors, timeouts, 408/409/429, 5xx) are retried by the client with
exponential backoff and jitter (``max_retries`` times, honouring ``Retry-After``); any other 4xx stops at
once. What still fails raises ``ChatAPIError`` naming the endpoint, the model and the request.
"""

from __future__ import annotations


class ChatAPIError(RuntimeError):
    """A chat-completions request that failed for good."""


def base_url_of(url: str) -> str:
    """``https://host/v1/chat/completions`` or ``https://host/v1`` -> ``https://host/v1``."""
    return url.rstrip("/").removesuffix("/chat/completions")


def client(url: str, api_key: str, max_retries: int = 5, timeout: float = 600.0):
    import openai

    return openai.OpenAI(
        base_url=base_url_of(url), api_key=api_key or "EMPTY", max_retries=max_retries, timeout=timeout
    )


def complete(api, request: dict, what: str = "") -> str:
    """The reply text of one chat-completions ``request`` (model, messages, sampling keys)."""
    import openai

    where = f"{api.base_url} (model {request.get('model')!r})"
    label = what or repr(str(request.get("messages", [{}])[-1].get("content", ""))[:80])
    try:
        response = api.chat.completions.create(**request)
    except openai.APIStatusError as err:
        kind = (
            "transient, retries exhausted"
            if err.status_code in (408, 409, 429) or err.status_code >= 500
            else "not retried"
        )
        raise ChatAPIError(
            f"{where} answered {err.status_code} ({kind}) to request {label}: {str(err.message)[:300]}"
        ) from err
    except openai.APIConnectionError as err:  # includes timeouts
        raise ChatAPIError(f"{where} unreachable after {api.max_retries} retries for request {label}: {err}") from err
    try:
        return response.choices[0].message.content or ""
    except (AttributeError, IndexError) as err:
        raise ChatAPIError(f"{where} sent a reply without a message to request {label}: {response!r:.300}") from err
