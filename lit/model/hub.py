"""Hugging Face hub ids without a reachable hub: use the local cache, or stop at once with one line that says
what is missing and the command that fetches it (instead of minutes of retries and a long traceback).

The hub counts as unreachable with ``HF_HUB_OFFLINE=1`` or when its host (``HF_ENDPOINT``) does not accept a
connection within a few seconds.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlparse


class HubUnavailable(SystemExit):
    """A hub id that is neither reachable nor cached: exits with its one-line message (no traceback)."""


def _offline_flag() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@functools.cache
def _reachable(endpoint: str, timeout_s: float = 3.0) -> bool:
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def offline_reason() -> str | None:
    """Why the hub cannot be used now, or None if it can."""
    if _offline_flag():
        return "HF_HUB_OFFLINE=1"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    return None if _reachable(endpoint) else f"{endpoint} is unreachable"


def is_hub_id(name: str) -> bool:
    return not Path(name).exists() and name.count("/") == 1 and not name.startswith((".", "/", "~"))


def local(name: str, repo_type: str = "model") -> str:
    """``name`` unchanged if it is a path or the hub is reachable; else the cached snapshot of the hub id (so
    nothing tries the network), or ``HubUnavailable`` naming the id and the download command."""
    if not is_hub_id(name):
        return name
    reason = offline_reason()
    if reason is None:
        return name
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(name, repo_type=repo_type, local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        from huggingface_hub.constants import HF_HUB_CACHE

        kind = "" if repo_type == "model" else f" --repo-type {repo_type}"
        raise HubUnavailable(
            f"{repo_type} {name} is not in the Hugging Face cache ({HF_HUB_CACHE}) and the hub "
            f"cannot be used ({reason}); fetch it where the hub is reachable: "
            f"hf download {name}{kind}"
        ) from None


def require(what: str, command: str) -> None:
    """Stop at once, in one line, if the hub cannot be used for ``what``."""
    reason = offline_reason()
    if reason is not None:
        raise HubUnavailable(
            f"{what} needs the Hugging Face hub, which cannot be used ({reason}); run "
            f"`{command}` where the hub is reachable and copy its output here"
        )
