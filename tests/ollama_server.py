"""A real HTTP/1.1 server on 127.0.0.1 that speaks Ollama's embedding API, for tests.

It implements what Ollama's API documentation (``docs/api.md``,
``docs/openapi.yaml``, ``docs/api/errors.mdx``) and its ``EmbedHandler``
specify for the calls abathur makes:

- ``POST /api/embed`` with ``model``, ``input`` (a string or a list of
  strings), ``truncate`` (default true), ``keep_alive``, ``options`` and
  ``dimensions``; it answers ``model``, ``embeddings``, ``total_duration``,
  ``load_duration`` and ``prompt_eval_count``.
- Errors as JSON ``{"error": "..."}``: 400 for a missing body, bad JSON, a
  wrongly typed field, an invalid ``keep_alive`` duration or, with
  ``truncate: false``, an input longer than the context; 404
  ``model "x" not found, try pulling it first`` for a model that is not pulled.
- ``GET /api/version``, ``GET /api/tags`` and ``GET /`` ("Ollama is running").

Embeddings are deterministic: a hash of the text, L2-normalised, ``dims``
long, rounded to float32 as Ollama sends them; :meth:`OllamaServer.vector_for`
gives the vector a text must get. "Tokens" are whitespace-separated words, so
``prompt_eval_count`` and context limits are easy to reason about in tests.

Switches for failure tests (they apply to ``POST /api/embed`` only): a delay
before every answer (``delay_s``) or before the next few (``delay_next``), the
next N answers replaced by an error (``fail_next``), the connection dropped
without an answer (``drop_next``), a canned reply (``reply_next``), or the
error page of a badly configured proxy that echoes the request's headers,
``Authorization`` included (``echo_headers_next``). Every
request is recorded (``requests``, ``embed_bodies``) so tests can assert batch
sizes and the ``truncate``/``keep_alive`` sent.

The server only listens on loopback, closes every connection when stopped, and
stops itself after ``max_lifetime_s`` in case a test forgets::

    with OllamaServer(dims=8) as server:
        ...  # point the embedder at server.url

or use the ``ollama_server`` fixture (import it into a test module or conftest).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

__all__ = ["OllamaServer", "RecordedRequest", "ollama_server"]

CONTEXT_ERROR = "the input length exceeds the context length"

# Go's time.ParseDuration grammar, which Ollama applies to a string keep_alive.
_GO_DURATION = re.compile(r"[-+]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it (before any fault was applied)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes


@dataclass
class _Fault:
    kind: str  # "fail" | "drop" | "reply" | "echo"
    status: int = 500
    payload: Any = None


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[RecordedRequest] = field(default_factory=list)
    faults: deque[_Fault] = field(default_factory=deque)
    delays: deque[float] = field(default_factory=deque)
    completed: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0


class OllamaServer:
    """An Ollama look-alike on ``127.0.0.1:<free port>``; a context manager.

    Args:
        models: the models that are "pulled"; a name without a tag means ``:latest``.
        dims: length of every embedding.
        context_length: the most words an input may have; longer inputs are cut
            (``truncate`` true, the default) or refused with 400.
        delay_s: seconds to wait before answering every embed request.
        max_lifetime_s: the server stops itself after this long, whatever happens.
    """

    def __init__(
        self,
        *,
        models: Iterable[str] = ("nomic-embed-text",),
        dims: int = 8,
        context_length: int = 64,
        delay_s: float = 0.0,
        version: str = "0.12.6",
        max_lifetime_s: float = 120.0,
    ) -> None:
        self.models = {_full_name(m) for m in models}
        self.dims = dims
        self.context_length = context_length
        self.delay_s = delay_s
        self.version = version
        self.max_lifetime_s = max_lifetime_s
        self._state = _State()
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Timer | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> OllamaServer:
        """Bind 127.0.0.1 on an OS-assigned port and serve in a background thread."""
        if self._httpd is not None:
            raise RuntimeError("the server is already running")
        self._stopping.clear()
        self._httpd = _Server(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="ollama-test-server",
            daemon=True,
        )
        self._thread.start()
        self._watchdog = threading.Timer(self.max_lifetime_s, self.stop)
        self._watchdog.daemon = True
        self._watchdog.start()
        return self

    def stop(self) -> None:
        """Stop serving, close every open connection and wait (bounded) for handlers."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.cancel()
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        httpd.join_handlers(timeout=5.0)
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def __enter__(self) -> OllamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port the server listens on."""
        if self._httpd is None:
            raise RuntimeError("the server is not running")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, the host to give the embedder."""
        return f"http://127.0.0.1:{self.port}"

    # -- switches ----------------------------------------------------------

    def fail_next(self, n: int = 1, *, status: int = 500, error: str = "boom") -> None:
        """Answer the next ``n`` embed requests with ``status`` and ``{"error": error}``."""
        self._add(n, _Fault("fail", status, error))

    def drop_next(self, n: int = 1) -> None:
        """Read the next ``n`` embed requests, then close the connection without an answer."""
        self._add(n, _Fault("drop"))

    def reply_next(self, payload: Any, *, status: int = 200, n: int = 1) -> None:
        """Answer the next ``n`` embed requests with ``payload`` (JSON, or raw str/bytes)."""
        self._add(n, _Fault("reply", status, payload))

    def echo_headers_next(self, n: int = 1, *, status: int = 500, as_json: bool = False) -> None:
        """Answer the next ``n`` embed requests with ``status`` and a body that echoes the
        request's headers verbatim (a proxy's debug page: a terminal escape, CR/LF line
        ends, ``Authorization`` first), as plain text or as Ollama's ``{"error": ...}``."""
        self._add(n, _Fault("echo", status, as_json))

    def delay_next(self, *seconds: float) -> None:
        """Delay the next embed requests, in arrival order, by these many seconds."""
        with self._state.lock:
            self._state.delays.extend(seconds)

    def _add(self, n: int, fault: _Fault) -> None:
        with self._state.lock:
            self._state.faults.extend([fault] * n)

    # -- what happened -----------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order."""
        with self._state.lock:
            return list(self._state.requests)

    @property
    def embed_bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies of the ``POST /api/embed`` requests, in arrival order."""
        return [
            r.body
            for r in self.requests
            if r.method == "POST" and r.path == "/api/embed" and isinstance(r.body, dict)
        ]

    @property
    def completed(self) -> list[str]:
        """First input text of each successful embed answer, in the order answers were sent."""
        with self._state.lock:
            return list(self._state.completed)

    @property
    def max_in_flight(self) -> int:
        """Most embed requests handled at the same time."""
        with self._state.lock:
            return self._state.max_in_flight

    def clear(self) -> None:
        """Forget recorded requests and pending switches."""
        with self._state.lock:
            self._state.requests.clear()
            self._state.faults.clear()
            self._state.delays.clear()
            self._state.completed.clear()
            self._state.max_in_flight = 0

    # -- the model ---------------------------------------------------------

    def vector_for(self, text: str, dims: int | None = None) -> list[float]:
        """The embedding this server gives ``text`` (after truncation, if any)."""
        size = self.dims if dims is None else dims
        digest = hashlib.shake_256(text.encode("utf-8")).digest(4 * self.dims)
        raw = [v / 2**31 - 1.0 for v in struct.unpack(f">{self.dims}I", digest)][:size]
        return _normalise(raw)

    @staticmethod
    def tokens_for(text: str) -> int:
        """How many "tokens" (words) the server counts for ``text``."""
        return len(text.split())


def _full_name(model: str) -> str:
    return model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"


def _normalise(values: list[float]) -> list[float]:
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    # Ollama sends float32 values; round-trip through float32 to look the same.
    return [struct.unpack("<f", struct.pack("<f", v / norm))[0] for v in values]


class _Server(HTTPServer):
    """A threading HTTP server that can close its open connections on stop."""

    allow_reuse_address = False

    def __init__(self, owner: OllamaServer) -> None:
        self.owner = owner
        self._conn_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._handlers: list[threading.Thread] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve_connection, args=(request, client_address), daemon=True
        )
        with self._conn_lock:
            self._connections.add(request)
            self._handlers = [t for t in self._handlers if t.is_alive()]
            self._handlers.append(thread)
        thread.start()

    def _serve_connection(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            pass  # a client that went away mid-answer is normal in failure tests
        finally:
            with self._conn_lock:
                self._connections.discard(request)
            self.shutdown_request(request)

    def close_connections(self) -> None:
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def join_handlers(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._conn_lock:
            handlers = list(self._handlers)
        for thread in handlers:
            thread.join(max(0.0, deadline - time.monotonic()))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ollama-test"
    # An idle keep-alive connection is closed after this many seconds.
    timeout = 10
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle plus the
        # client's delayed ACK add ~40 ms to every keep-alive request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing ----------------------------------------------------------

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, payload: Any, content_type: str = "application/json") -> None:
        if isinstance(payload, bytes):
            data = payload
        elif isinstance(payload, str):
            data = payload.encode("utf-8")
        else:
            data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": message})

    def _record(self, raw: bytes) -> None:
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        request = RecordedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            raw=raw,
        )
        state = self.server.owner._state
        with state.lock:
            state.requests.append(request)

    # -- routes ------------------------------------------------------------

    def do_GET(self) -> None:
        self._record(b"")
        owner = self.server.owner
        if self.path == "/":
            self._send(200, "Ollama is running", "text/plain; charset=utf-8")
        elif self.path == "/api/version":
            self._send(200, {"version": owner.version})
        elif self.path == "/api/tags":
            self._send(200, {"models": [_tag(name, owner.dims) for name in sorted(owner.models)]})
        else:
            self._send(404, "404 page not found", "text/plain")

    def do_POST(self) -> None:
        raw = self._read_body()
        self._record(raw)
        if self.path != "/api/embed":
            self._send(404, "404 page not found", "text/plain")
            return
        state = self.server.owner._state
        with state.lock:
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            self._embed(raw)
        finally:
            with state.lock:
                state.in_flight -= 1

    def _embed(self, raw: bytes) -> None:
        owner = self.server.owner
        state = owner._state
        with state.lock:
            delay = state.delays.popleft() if state.delays else owner.delay_s
            fault = state.faults.popleft() if state.faults else None
        if delay > 0 and owner._stopping.wait(delay):
            self.close_connection = True  # stopping: leave without an answer
            return
        if fault is not None:
            if fault.kind == "drop":
                self.close_connection = True
                return
            if fault.kind == "fail":
                self._error(fault.status, fault.payload)
                return
            if fault.kind == "echo":
                headers = sorted(
                    self.headers.items(), key=lambda kv: kv[0].lower() != "authorization"
                )
                page = "\x1b[1;31mupstream error\x1b[0m\r\nrequest headers:\r\n" + "".join(
                    f"  {name}: {value}\r\n" for name, value in headers
                )
                if fault.payload:
                    self._error(fault.status, page)
                else:
                    self._send(fault.status, page, "text/plain; charset=utf-8")
                return
            self._send(fault.status, fault.payload)
            return
        status, payload = self._answer(raw)
        if status == 200 and payload["embeddings"]:
            with state.lock:
                state.completed.append(payload.pop("_first"))
        self._send(status, payload)

    def _answer(self, raw: bytes) -> tuple[int, dict[str, Any]]:
        """What Ollama's EmbedHandler answers for this body."""
        started = time.perf_counter_ns()
        owner = self.server.owner
        if not raw:
            return 400, {"error": "missing request body"}
        try:
            req = json.loads(raw)
        except ValueError as exc:
            return 400, {"error": f"invalid character in JSON body: {exc.msg}"}
        if not isinstance(req, dict):
            return 400, {"error": "json: cannot unmarshal into Go value of type api.EmbedRequest"}
        for key, kinds, go in (
            ("model", (str,), "string"),
            ("truncate", (bool,), "bool"),
            ("dimensions", (int,), "int"),
            ("options", (dict,), "map[string]interface {}"),
        ):
            value = req.get(key)
            if value is not None and (
                not isinstance(value, kinds) or (go == "int" and isinstance(value, bool))
            ):
                return 400, {
                    "error": f"json: cannot unmarshal {type(value).__name__} into Go struct "
                    f"field EmbedRequest.{key} of type {go}"
                }
        keep_alive = req.get("keep_alive")
        if keep_alive is not None:
            problem = _keep_alive_problem(keep_alive)
            if problem:
                return 400, {"error": problem}
        model = req.get("model") or ""
        if not model:
            return 404, {"error": "model '' not found"}

        texts = req.get("input")
        if isinstance(texts, str):
            inputs = [texts] if texts else []
        elif isinstance(texts, list):
            if not all(isinstance(t, str) for t in texts):
                return 400, {"error": "invalid input type"}
            inputs = list(texts)
        elif texts is None:
            inputs = []
        else:
            return 400, {"error": "invalid input type"}

        if _full_name(model) not in owner.models:
            return 404, {"error": f'model "{model}" not found, try pulling it first'}
        loaded = time.perf_counter_ns()
        if not inputs:
            return 200, {"model": model, "embeddings": []}

        truncate = req.get("truncate") is not False
        dimensions = req.get("dimensions") or 0
        vectors: list[list[float]] = []
        tokens = 0
        for text in inputs:
            words = text.split()
            if len(words) > owner.context_length:
                if not truncate:
                    return 400, {"error": CONTEXT_ERROR}
                text = " ".join(words[: owner.context_length])
                words = words[: owner.context_length]
            size = dimensions if 0 < dimensions < owner.dims else owner.dims
            vectors.append(owner.vector_for(text, size))
            tokens += len(words)
        now = time.perf_counter_ns()
        return 200, {
            "_first": inputs[0],
            "model": model,
            "embeddings": vectors,
            "total_duration": now - started,
            "load_duration": loaded - started,
            "prompt_eval_count": tokens,
        }


def _keep_alive_problem(value: Any) -> str | None:
    """Ollama's Duration.UnmarshalJSON: a number of seconds, or a Go duration string."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return f"Unsupported type: '{type(value).__name__}'"
    if isinstance(value, str):
        if value.lstrip("+-") == "0" or _GO_DURATION.fullmatch(value):
            return None
        if re.fullmatch(r"[-+]?(\d+(\.\d*)?|\.\d+)", value):
            return f'time: missing unit in duration "{value}"'
        return f'time: invalid duration "{value}"'
    return None


def _tag(name: str, dims: int) -> dict[str, Any]:
    digest = hashlib.sha256(name.encode()).hexdigest()
    return {
        "name": name,
        "model": name,
        "modified_at": "2025-01-01T00:00:00Z",
        "size": 1000 * dims,
        "digest": digest,
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": "bert",
            "families": ["bert"],
            "parameter_size": "137M",
            "quantization_level": "F16",
        },
    }


@pytest.fixture
def ollama_server() -> Iterator[OllamaServer]:
    """A running :class:`OllamaServer` (8-d vectors, model ``nomic-embed-text``)."""
    with OllamaServer() as server:
        yield server
