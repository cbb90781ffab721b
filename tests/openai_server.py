"""A real HTTP server on 127.0.0.1 that speaks OpenAI's ``POST /v1/embeddings``.

Vectors are a deterministic function of the text (as in tests/ollama_server.py),
usage counts words, and faults can be queued: an HTTP status with a body and
headers, a dropped connection, or a delay.
"""

from __future__ import annotations

import collections
import hashlib
import json
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Fault:
    """What the next request gets instead of an answer."""

    status: int = 500
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    delay_s: float = 0.0


class OpenAIServer:
    """Context manager: ``with OpenAIServer() as s: s.url`` is ``http://127.0.0.1:PORT/v1``.

    Args:
        dims: length of the vectors it returns.
        models: model names it knows; others get OpenAI's 404.
        api_key: when set, requests without ``Authorization: Bearer <key>`` get 401.
        usage: whether answers carry ``usage``.
        reverse: send ``data`` in reverse order (each item keeps its ``index``).
        delay_s: how long each answer takes (to see requests in flight at once).
    """

    def __init__(
        self,
        *,
        dims: int = 8,
        models: tuple[str, ...] = ("text-embedding-3-small",),
        api_key: str | None = None,
        usage: bool = True,
        reverse: bool = False,
        delay_s: float = 0.0,
    ) -> None:
        self.dims = dims
        self.models = models
        self.api_key = api_key
        self.usage = usage
        self.reverse = reverse
        self.delay_s = delay_s
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.faults: collections.deque[Fault] = collections.deque()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.owner = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> OpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def fail(self, *faults: Fault) -> None:
        """Queue faults: each is used by one request, in order."""
        with self.lock:
            self.faults.extend(faults)

    def vector_for(self, text: str) -> list[float]:
        """The (unit-length) embedding this server gives ``text``."""
        digest = hashlib.shake_256(text.encode("utf-8")).digest(4 * self.dims)
        raw = [v / 2**31 - 1.0 for v in struct.unpack(f">{self.dims}I", digest)]
        norm = sum(v * v for v in raw) ** 0.5
        return [v / norm for v in raw]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        owner: OpenAIServer = self.server.owner  # type: ignore[attr-defined]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.loads(raw) if raw else None
        with owner.lock:
            owner.requests.append(
                {"path": self.path, "headers": dict(self.headers.items()), "body": body}
            )
            fault = owner.faults.popleft() if owner.faults else None
        with owner.lock:
            owner.in_flight += 1
            owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
        try:
            self._answer(owner, body, fault)
        finally:
            with owner.lock:
                owner.in_flight -= 1

    def _answer(self, owner: OpenAIServer, body: Any, fault: Fault | None) -> None:
        if owner.delay_s:
            threading.Event().wait(owner.delay_s)
        if fault is not None:
            if fault.delay_s:
                threading.Event().wait(fault.delay_s)
            if fault.drop:
                self.close_connection = True
                return
            self._send(fault.status, fault.body or {"error": {"message": "boom"}}, fault.headers)
            return
        if self.path != "/v1/embeddings":
            self._send(404, {"error": {"message": "Not Found"}})
            return
        if owner.api_key and self.headers.get("Authorization") != f"Bearer {owner.api_key}":
            given = self.headers.get("Authorization", "")
            # Like some proxies: the refused credential is echoed back.
            self._send(401, {"error": {"message": f"Incorrect API key provided: {given}"}})
            return
        if not isinstance(body, dict) or body.get("model") not in owner.models:
            model = body.get("model") if isinstance(body, dict) else None
            self._send(404, {"error": {"message": f"The model `{model}` does not exist"}})
            return
        texts = body["input"]
        data = [
            {"object": "embedding", "index": i, "embedding": owner.vector_for(t)}
            for i, t in enumerate(texts)
        ]
        if owner.reverse:
            data.reverse()
        answer: dict[str, Any] = {"object": "list", "data": data, "model": body["model"]}
        if owner.usage:
            tokens = sum(len(t.split()) for t in texts)
            answer["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        self._send(200, answer)
