"""A local OpenAI-compatible chat-completions endpoint for tests: a real HTTP server in a thread that answers
with scripted replies and records every request (headers and body).

``script`` holds what the next requests get, one item each, in order; once it is empty, ``reply(body)``
gives the message of a 200 chat completion. An item is
- ``None``: the normal answer, ``reply(body)``; a ``str``: a 200 chat completion with that message;
- an ``int``: that HTTP status, with an OpenAI-style error body;
- ``EMPTY``: 200 with an empty body; ``GARBAGE``: 200 with an HTML page; ``NO_CHOICES``: 200 with JSON that is
  not a chat completion;
- ``DROP``: the connection is closed without an answer;
- ``STOP``: the server dies (this request is dropped, later ones are refused) until ``start()`` again.
``stop_after=n`` makes it die right after answering its ``n``-th request: between two requests.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EMPTY, GARBAGE, NO_CHOICES, DROP, STOP = "<empty>", "<garbage>", "<no choices>", "<drop>", "<stop>"
ACTIONS = (EMPTY, GARBAGE, NO_CHOICES, DROP, STOP)


def completion(content: str) -> dict:
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
    }


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        chat: ChatServer = self.server.chat
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            body = raw
        with chat.lock:
            if chat.dead:  # died while this request was on its way
                self.close_connection = True
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            chat.requests.append({"path": self.path, "headers": headers, "body": body})
            action = chat.script.pop(0) if chat.script else None
            stop_now = action == STOP or (chat.stop_after is not None and len(chat.requests) >= chat.stop_after)
            if action == STOP:
                chat.dead = True
        if action in (DROP, STOP):
            self.close_connection = True
        elif isinstance(action, int):
            self._send(action, json.dumps({"error": {"message": f"status {action}", "type": "test"}}).encode())
        elif action == EMPTY:
            self._send(200, b"")
        elif action == GARBAGE:
            self._send(200, b"<html><body>502 Bad Gateway</body></html>", "text/html")
        elif action == NO_CHOICES:
            self._send(200, json.dumps({"id": "x", "object": "chat.completion"}).encode())
        else:
            content = action if isinstance(action, str) else chat.reply(body)
            self._send(200, json.dumps(completion(content)).encode())
        if stop_now:
            chat.die()

    def _send(self, status: int, data: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def log_message(self, *args):
        pass


class ChatServer:
    """``url`` is the ``/v1`` base URL; ``completions_url`` the full chat-completions URL."""

    def __init__(self, reply: Callable[[object], str] | None = None, script: list | None = None):
        self.reply = reply or (lambda body: "Rewritten {A}.")
        self.script: list = list(script or [])
        self.requests: list[dict] = []
        self.stop_after: int | None = None
        self.lock = threading.Lock()
        self.port = 0
        self.dead = True
        self._server: ThreadingHTTPServer | None = None
        self._dying: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def completions_url(self) -> str:
        return self.url + "/chat/completions"

    def start(self) -> ChatServer:
        """Serve (again, on the same port after a stop)."""
        if self._dying is not None:
            self._dying.join()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        self._server.daemon_threads = True
        self._server.chat = self
        self.port = self._server.server_address[1]
        self.dead = False
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def die(self) -> None:
        """Stop serving from inside a request (``shutdown`` waits for the serving thread, so in another one)."""
        self.dead = True
        self._dying = threading.Thread(target=self.stop, daemon=True)
        self._dying.start()

    def stop(self) -> None:
        with self.lock:
            server, self._server = self._server, None
            self.dead = True
        if server is not None:
            server.shutdown()
            server.server_close()

    def bodies(self) -> list:
        return [r["body"] for r in self.requests]

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
