"""OllamaEmbedder against a real HTTP server on 127.0.0.1 that speaks Ollama's API."""

from __future__ import annotations

import base64
import contextlib
import socket
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import pytest
import structlog
from structlog.testing import capture_logs

from abathur import Abathur, logs
from abathur.config import Settings
from abathur.embeddings import Embedder
from abathur.embeddings.ollama import OllamaEmbedder
from abathur.errors import (
    AbathurError,
    EmbedderError,
    EmbedderUnavailableError,
    InvalidInputError,
)
from tests.backends import BackendHandle
from tests.ollama_server import OllamaServer

MODEL = "nomic-embed-text"


@pytest.fixture
def server() -> Iterator[OllamaServer]:
    with OllamaServer(dims=8, context_length=16) as running:
        yield running


def make(server: OllamaServer, **options: object) -> OllamaEmbedder:
    """An embedder with test-sized timeouts and backoff (a test must stay fast)."""
    settings: dict[str, object] = {
        "host": server.url,
        "batch_size": 2,
        "concurrency": 2,
        "timeout_s": 2.0,
        "retries": 2,
        "backoff_s": 0.001,
        "max_backoff_s": 0.005,
    }
    model = options.pop("model", MODEL)
    settings.update(options)
    return OllamaEmbedder(model, **settings)  # type: ignore[arg-type]


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_vectors(server: OllamaServer, texts: list[str], vectors: list[list[float]]) -> None:
    assert len(vectors) == len(texts)
    for text, vector in zip(texts, vectors, strict=True):
        assert vector == pytest.approx(server.vector_for(text), abs=1e-6), text


# -- identity -------------------------------------------------------------


def test_name_provider_and_protocol(server: OllamaServer) -> None:
    e = make(server)
    assert (e.name, e.provider, e.model) == ("ollama:nomic-embed-text", "ollama", MODEL)
    assert isinstance(e, Embedder)


def test_from_settings_uses_every_ollama_setting(server: OllamaServer) -> None:
    settings = Settings(
        embedder="ollama",
        ollama_host=server.url,
        ollama_model="all-minilm",
        ollama_timeout_s=3.5,
        ollama_batch_size=5,
        ollama_concurrency=3,
        ollama_retries=4,
        ollama_keep_alive="1h",
        ollama_truncate=False,
    )
    e = OllamaEmbedder.from_settings(settings)
    assert (e.host, e.model, e.name) == (server.url, "all-minilm", "ollama:all-minilm")
    assert (e.timeout_s, e.batch_size, e.concurrency, e.retries) == (3.5, 5, 3, 4)
    assert (e.keep_alive, e.truncate, e.dims) == ("1h", False, 0)


# -- the happy path -------------------------------------------------------


async def test_batches_concurrency_and_order(server: OllamaServer) -> None:
    texts = [f"text number {i}" for i in range(7)]
    e = make(server, batch_size=2, concurrency=2)
    # The first request to arrive answers last, so answers come back out of order.
    server.delay_next(0.3, 0.0, 0.1, 0.0)

    vectors = await e.embed(texts)

    assert_vectors(server, texts, vectors)
    bodies = server.embed_bodies
    assert sorted(len(b["input"]) for b in bodies) == [1, 2, 2, 2]
    assert sorted(t for b in bodies for t in b["input"]) == sorted(texts)
    assert all(b["model"] == MODEL for b in bodies)
    assert server.max_in_flight == 2
    # Batches finished in another order than they were sent; the result is still in input order.
    assert server.completed != [b["input"][0] for b in bodies]


async def test_concurrency_one_sends_one_request_at_a_time(server: OllamaServer) -> None:
    server.delay_s = 0.02
    await make(server, batch_size=1, concurrency=1).embed(["a", "b", "c"])
    assert server.max_in_flight == 1
    assert [b["input"] for b in server.embed_bodies] == [["a"], ["b"], ["c"]]


async def test_vectors_are_unit_length_and_identical_texts_match(server: OllamaServer) -> None:
    vectors = await make(server).embed(["same", "other", "same"])
    for vector in vectors:
        assert sum(v * v for v in vector) == pytest.approx(1.0)
    assert vectors[0] == vectors[2] != vectors[1]


async def test_list_input_truncate_and_keep_alive_are_always_sent(server: OllamaServer) -> None:
    await make(server, keep_alive="10m", truncate=True, batch_size=8).embed(["one"])
    await make(server, keep_alive=0, truncate=False, batch_size=8).embed(["two"])
    first, second = server.embed_bodies
    assert first == {"model": MODEL, "input": ["one"], "truncate": True, "keep_alive": "10m"}
    assert second == {"model": MODEL, "input": ["two"], "truncate": False, "keep_alive": 0}


async def test_numeric_keep_alive_string_is_sent_as_seconds(server: OllamaServer) -> None:
    # Ollama reads a string keep_alive with Go's ParseDuration, which refuses "-1".
    e = make(server, keep_alive="-1")
    assert e.keep_alive == -1
    await e.embed(["x"])
    assert server.embed_bodies[0]["keep_alive"] == -1


async def test_truncate_true_lets_the_server_cut_long_input(server: OllamaServer) -> None:
    words = [f"w{i}" for i in range(40)]  # the server's context is 16 words
    usage = await make(server, truncate=True).embed_with_usage([" ".join(words)])
    assert usage.vectors[0] == pytest.approx(server.vector_for(" ".join(words[:16])), abs=1e-6)
    assert usage.tokens == 16


async def test_empty_input_makes_no_request(server: OllamaServer) -> None:
    e = make(server)
    assert await e.embed([]) == []
    usage = await e.embed_with_usage(())
    assert (usage.vectors, usage.tokens, usage.is_token_estimate) == ([], 0, False)
    assert server.requests == []


# -- dims -----------------------------------------------------------------


async def test_dims_are_learned_from_the_first_answer(server: OllamaServer) -> None:
    e = make(server)
    assert e.dims == 0
    await e.embed(["a"])
    assert e.dims == 8
    assert "dimensions" not in server.embed_bodies[0]


async def test_dims_given_are_requested_as_dimensions(server: OllamaServer) -> None:
    e = make(server, dims=4)
    assert e.dims == 4
    vectors = await e.embed(["a", "b", "c"])
    assert {len(v) for v in vectors} == {4}
    assert vectors[0] == pytest.approx(server.vector_for("a", 4), abs=1e-6)
    assert all(b["dimensions"] == 4 for b in server.embed_bodies)


async def test_dims_are_enforced_after_they_are_learned(server: OllamaServer) -> None:
    e = make(server)
    await e.embed(["a"])
    server.reply_next({"model": MODEL, "embeddings": [[0.6, 0.8]], "prompt_eval_count": 1})
    with pytest.raises(EmbedderError) as ei:
        await e.embed(["b"])
    assert type(ei.value) is EmbedderError
    assert "2-d vectors, expected 8-d" in ei.value.message


async def test_dims_larger_than_the_model_are_an_error(server: OllamaServer) -> None:
    # Ollama ignores `dimensions` above the model's size and sends the full vector.
    with pytest.raises(EmbedderError) as ei:
        await make(server, dims=16).embed(["a"])
    assert type(ei.value) is EmbedderError
    assert "8-d vectors, expected 16-d" in ei.value.message


# -- usage ----------------------------------------------------------------


async def test_usage_sums_the_servers_prompt_eval_count(server: OllamaServer) -> None:
    texts = ["one two three", "four five", "six", "seven eight nine ten"]
    usage = await make(server, batch_size=3).embed_with_usage(texts)
    assert usage.tokens == sum(server.tokens_for(t) for t in texts) == 10
    assert usage.is_token_estimate is False
    assert_vectors(server, texts, usage.vectors)


async def test_usage_is_an_estimate_when_the_server_gives_no_count(server: OllamaServer) -> None:
    server.reply_next({"model": MODEL, "embeddings": [[1.0] * 8]})
    # One request at a time, so the canned answer (no count) goes to the first text.
    e = make(server, batch_size=1, concurrency=1)
    usage = await e.embed_with_usage(["12345678", "a b"])
    assert usage.is_token_estimate is True
    assert usage.tokens == 2 + 2  # 8 characters ~ 2 tokens, then the counted 2


# -- transient failures: retried --------------------------------------------


async def test_two_500s_then_success(server: OllamaServer) -> None:
    server.fail_next(2, status=500, error="llama runner process has terminated")
    vectors = await make(server, retries=2, batch_size=8).embed(["a", "b"])
    assert_vectors(server, ["a", "b"], vectors)
    assert len(server.embed_bodies) == 3
    assert all(b["input"] == ["a", "b"] for b in server.embed_bodies)


async def test_persistent_500_is_unavailable_after_the_retries(server: OllamaServer) -> None:
    server.fail_next(10, status=500, error="llama runner process has terminated")
    with capture_logs() as logs, pytest.raises(EmbedderUnavailableError) as ei:
        await make(server, retries=2, batch_size=8).embed(["a", "b"])
    err = ei.value
    assert (err.code, err.retryable) == ("embedder.unavailable", True)
    assert server.url in err.message and repr(MODEL) in err.message
    assert "after 3 attempts" in err.message
    assert "HTTP 500: llama runner process has terminated" in err.message
    assert len(server.embed_bodies) == 3
    assert [e["event"] for e in logs] == [
        "embedder.ollama.retry",
        "embedder.ollama.retry",
        "embedder.ollama.unavailable",
    ]


@pytest.mark.parametrize("status", [502, 503, 429])
async def test_busy_answers_are_retried(server: OllamaServer, status: int) -> None:
    server.fail_next(1, status=status, error="server busy, please try again")
    assert len(await make(server).embed(["a"])) == 1
    assert len(server.embed_bodies) == 2


async def test_slow_server_times_out_retries_then_is_unavailable(server: OllamaServer) -> None:
    server.delay_s = 2.0
    started = time.monotonic()
    with pytest.raises(EmbedderUnavailableError) as ei:
        await make(server, timeout_s=0.15, retries=2).embed(["a"])
    elapsed = time.monotonic() - started
    assert "no answer within 0.15s (ReadTimeout)" in ei.value.message
    assert len(server.embed_bodies) == 3
    assert elapsed < 1.5  # three attempts of 0.15 s, not the server's 2 s


async def test_slow_then_fast_server_succeeds_on_retry(server: OllamaServer) -> None:
    server.delay_next(1.0)
    vectors = await make(server, timeout_s=0.15, retries=1).embed(["a"])
    assert_vectors(server, ["a"], vectors)
    assert len(server.embed_bodies) == 2


async def test_dropped_connection_is_retried(server: OllamaServer) -> None:
    server.drop_next(1)
    vectors = await make(server, retries=1, batch_size=8).embed(["a", "b"])
    assert_vectors(server, ["a", "b"], vectors)
    assert len(server.embed_bodies) == 2


async def test_always_dropped_connection_is_unavailable(server: OllamaServer) -> None:
    server.drop_next(5)
    with pytest.raises(EmbedderUnavailableError) as ei:
        await make(server, retries=1).embed(["a"])
    assert "connection lost (RemoteProtocolError" in ei.value.message
    assert len(server.embed_bodies) == 2


async def test_connection_refused_is_unavailable() -> None:
    host = f"http://127.0.0.1:{free_port()}"
    e = OllamaEmbedder(MODEL, host=host, retries=2, backoff_s=0.001, max_backoff_s=0.002)
    with pytest.raises(EmbedderUnavailableError) as ei:
        await e.embed(["a"])
    assert ei.value.message.startswith(f"ollama at {host} (model {MODEL!r}) is unavailable")
    assert "after 3 attempts: cannot connect (Connection refused)" in ei.value.message


async def test_a_failed_batch_fails_the_call_and_stops_the_others(server: OllamaServer) -> None:
    server.fail_next(10, status=500)
    server.delay_s = 0.05
    with pytest.raises(EmbedderUnavailableError):
        await make(server, batch_size=1, concurrency=1, retries=0).embed(["a", "b", "c", "d"])
    # Batches after the failed one were cancelled, not sent.
    assert len(server.embed_bodies) == 1


# -- permanent failures: not retried ----------------------------------------


async def test_model_not_pulled_tells_how_to_pull_it(server: OllamaServer) -> None:
    with pytest.raises(EmbedderError) as ei:
        await make(server, model="mxbai-embed-large", retries=3).embed(["a"])
    err = ei.value
    assert type(err) is EmbedderError
    assert (err.code, err.retryable) == ("embedder.error", False)
    assert "run `ollama pull mxbai-embed-large`" in err.message
    assert 'model "mxbai-embed-large" not found, try pulling it first' in err.message
    assert server.url in err.message
    assert len(server.embed_bodies) == 1  # no retries


async def test_input_over_the_context_with_truncate_false_is_refused(server: OllamaServer) -> None:
    long_text = " ".join(["word"] * 40)
    with pytest.raises(EmbedderError) as ei:
        await make(server, truncate=False, retries=3).embed(["short", long_text])
    assert type(ei.value) is EmbedderError
    assert "HTTP 400: the input length exceeds the context length" in ei.value.message
    assert "truncate=True" in ei.value.message
    assert len(server.embed_bodies) == 1


async def test_wrong_credentials_are_not_retried(server: OllamaServer) -> None:
    server.fail_next(1, status=401, error="unauthorized")
    with pytest.raises(EmbedderError) as ei:
        await make(server).embed(["a"])
    assert type(ei.value) is EmbedderError
    assert "HTTP 401: unauthorized" in ei.value.message
    assert len(server.embed_bodies) == 1


async def test_wrong_number_of_vectors_is_an_error(server: OllamaServer) -> None:
    server.reply_next({"model": MODEL, "embeddings": [[1.0] * 8], "prompt_eval_count": 2})
    with pytest.raises(EmbedderError) as ei:
        await make(server, batch_size=8).embed(["a", "b"])
    assert type(ei.value) is EmbedderError
    assert "returned 1 vectors for 2 texts" in ei.value.message
    assert len(server.embed_bodies) == 1


async def test_vectors_of_different_lengths_are_an_error(server: OllamaServer) -> None:
    server.reply_next({"model": MODEL, "embeddings": [[1.0] * 8, [1.0] * 7]})
    with pytest.raises(EmbedderError) as ei:
        await make(server, batch_size=8).embed(["a", "b"])
    assert type(ei.value) is EmbedderError
    assert "vectors of different lengths [7, 8]" in ei.value.message


async def test_zero_vector_is_an_error(server: OllamaServer) -> None:
    server.reply_next({"model": MODEL, "embeddings": [[0.0] * 8]})
    with pytest.raises(EmbedderError) as ei:
        await make(server).embed(["a"])
    assert "zero or non-finite vector" in ei.value.message


# -- no raw client error reaches the caller ---------------------------------


FAILURES = {
    "refused": (lambda s: None, EmbedderUnavailableError),
    "timeout": (lambda s: setattr(s, "delay_s", 1.0), EmbedderUnavailableError),
    "dropped": (lambda s: s.drop_next(5), EmbedderUnavailableError),
    "500": (lambda s: s.fail_next(5), EmbedderUnavailableError),
    "503 not json": (lambda s: s.reply_next("<html>busy</html>", status=503, n=5), None),
    "404": (lambda s: s.fail_next(1, status=404, error="model 'x' not found"), EmbedderError),
    "400": (lambda s: s.fail_next(1, status=400, error="invalid input type"), EmbedderError),
    "200 not json": (lambda s: s.reply_next("<html>hello</html>"), EmbedderError),
    "200 no embeddings": (lambda s: s.reply_next({"model": MODEL}), EmbedderError),
    "200 not numbers": (lambda s: s.reply_next({"embeddings": [["x"] * 8]}), EmbedderError),
    "200 a list": (lambda s: s.reply_next([1, 2]), EmbedderError),
}


@pytest.mark.parametrize("case", sorted(FAILURES))
async def test_no_raw_client_error_reaches_the_caller(server: OllamaServer, case: str) -> None:
    arrange, expected = FAILURES[case]
    arrange(server)
    host = f"http://127.0.0.1:{free_port()}" if case == "refused" else server.url
    e = OllamaEmbedder(
        MODEL, host=host, timeout_s=0.15, retries=1, backoff_s=0.001, max_backoff_s=0.002
    )
    with pytest.raises(AbathurError) as ei:
        await e.embed(["a"])
    err = ei.value
    assert type(err) is (expected or EmbedderUnavailableError)
    assert not isinstance(err, httpx.HTTPError | ollama.ResponseError | ConnectionError)
    assert isinstance(err, EmbedderError)


# -- credentials in the host ------------------------------------------------


async def test_host_credentials_are_sent_as_basic_auth_and_never_shown(
    server: OllamaServer,
) -> None:
    secret = "s3cr%40t"  # percent-encoded "s3cr@t"
    host = f"http://alice:{secret}@127.0.0.1:{server.port}"
    e = make(server, host=host, retries=1)
    assert e.host == server.url
    assert "s3cr" not in repr(e)

    await e.embed(["a"])
    auth = server.requests[0].headers["authorization"]
    assert auth == "Basic " + base64.b64encode(b"alice:s3cr@t").decode()

    server.fail_next(5)
    with capture_logs() as logs, pytest.raises(EmbedderUnavailableError) as ei:
        await e.embed(["b"])
    assert server.url in ei.value.message
    assert "s3cr" not in ei.value.message and "alice" not in ei.value.message
    assert logs and all(entry["host"] == server.url for entry in logs)
    assert "s3cr" not in repr(logs)


# -- secrets (issue 11, item 11) ------------------------------------------------

PASSWORD = "S3C#r/t?x"  # every character that breaks a URL's userinfo unencoded
TOKEN = "sk-live-7f3a9c2e1b"


def secrets_of(e: OllamaEmbedder | None = None) -> list[str]:
    """What must never be shown: the password, its pieces, the tokens on the wire."""
    basic = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    return [PASSWORD, "S3C", "r/t", "t?x", urllib.parse.quote(PASSWORD, safe=""), basic, TOKEN]


def assert_hidden(*texts: object) -> None:
    for text in texts:
        shown = text if isinstance(text, str) else repr(text)
        for secret in secrets_of():
            assert secret not in shown, f"{secret!r} leaked in {shown!r}"


@pytest.mark.parametrize(
    "host",
    [
        f"http://alice:{PASSWORD}@127.0.0.1:11434",  # urllib: "Port could not be cast ... 'S3C'"
        "http://alice:S3C/r/t@127.0.0.1:11434",
        "http://alice:9999/r/t@127.0.0.1:11434",  # parses, as host 'alice' port 9999: wrong
        "http://alice:S3C?r/t@127.0.0.1:11434",
        "alice:S3C#r/t@127.0.0.1:11434",  # no scheme
        "http://alice:S3C[r/t@127.0.0.1:11434",  # urllib: "Invalid IPv6 URL"
        "http://alice:S3C%r/t@127.0.0.1:11434/api?api_key=sk-live-7f3a9c2e1b",
    ],
)
def test_a_host_url_that_cannot_be_parsed_is_a_typed_error_that_hides_the_password(
    host: str,
) -> None:
    with capture_logs() as captured, pytest.raises(InvalidInputError) as ei:
        OllamaEmbedder(MODEL, host=host)
    err = ei.value
    assert "127.0.0.1:11434" in err.message and "***@" in err.message
    assert "percent-encode" in err.message
    assert_hidden(err.message, str(err), err.to_dict(), captured)


async def test_an_unparsable_host_from_the_settings_fails_open_without_showing_it(
    backend: BackendHandle,
) -> None:
    settings = Settings(embedder="ollama", ollama_host=f"http://alice:{PASSWORD}@127.0.0.1:1")
    assert_hidden(repr(settings), str(settings))
    with pytest.raises(InvalidInputError) as ei:
        await backend.open(settings=settings)
    assert_hidden(ei.value.message)


@contextlib.contextmanager
def json_logs() -> Iterator[None]:
    """The CLI's logging set-up (JSON lines on stderr, every level), reset afterwards."""
    logs.configure(json=True, level="DEBUG")  # binds the sys.stderr capfd installed
    try:
        yield
    finally:
        structlog.reset_defaults()


@pytest.mark.parametrize("credential", ["basic", "bearer"])
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
async def test_an_error_body_echoing_authorization_is_redacted_cleaned_and_capped(
    server: OllamaServer,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    credential: str,
    as_json: bool,
) -> None:
    if credential == "basic":
        host = f"http://alice:{urllib.parse.quote(PASSWORD, safe='')}@127.0.0.1:{server.port}"
    else:
        host = server.url
        monkeypatch.setenv("OLLAMA_API_KEY", TOKEN)  # the client sends it as a bearer token
    e = make(server, host=host, retries=1)
    await e.embed(["a"])  # the credential is sent...
    sent = server.requests[0].headers["authorization"]
    assert (
        PASSWORD in base64.b64decode(sent.split()[1]).decode()
        if credential == "basic"
        else (sent == f"Bearer {TOKEN}")
    )
    server.echo_headers_next(2, as_json=as_json)  # ...and a proxy echoes it back on a 500
    with json_logs(), pytest.raises(EmbedderUnavailableError) as ei:
        await e.embed(["b"])
    out, logged = capfd.readouterr()
    with capture_logs() as captured, pytest.raises(EmbedderUnavailableError) as ei:
        server.echo_headers_next(2, as_json=as_json)
        await e.embed(["c"])
    err = ei.value
    assert '"event": "embedder.ollama.retry"' in logged and "***" in logged
    assert "upstream error request headers:" in err.message  # the body is shown, cleaned...
    assert f"authorization: {sent.split()[0].lower()} ***" in err.message.lower()  # masked
    assert not any(ch in err.message for ch in "\x1b\r\n")
    body = err.message.split("HTTP 500: ", 1)[1]
    assert len(body) <= 200
    retry = [c for c in captured if c["event"] == "embedder.ollama.retry"]
    assert retry and "***" in retry[0]["error"]
    assert_hidden(err.message, str(err), err.to_dict(), captured, out, logged)


@pytest.mark.sqlite_only("reads the queue through tx.conn and the SQLite file's bytes")
async def test_the_degraded_reason_and_the_queue_hide_an_echoed_credential(
    server: OllamaServer, tmp_path: Path
) -> None:
    host = f"http://alice:{urllib.parse.quote(PASSWORD, safe='')}@127.0.0.1:{server.port}"
    path = tmp_path / "a.db"
    async with Abathur.open(path, embedder=make(server, host=host, retries=0)) as ab:
        await ab.memory.put("user:a", "k", "green tea")
        await ab.embeddings.drain()
        server.echo_headers_next(100)
        await ab.memory.put("user:a", "k2", "black tea")
        with pytest.raises(EmbedderUnavailableError) as ei:
            await ab.embeddings.drain()
        found = await ab.memory.search("tea", prefix="user:a")
        status = await ab.embeddings.status()
        queued = await ab.db.read(
            lambda tx: tx.conn.execute("SELECT last_error FROM embedding_queue").fetchall()
        )
    assert found.is_degraded and "***" in (found.degraded_reason or "")
    assert "***" in (status.last_error or "")
    assert_hidden(ei.value.message, found.degraded_reason, status.last_error, status, queued)
    raw = path.read_bytes() + (
        path.with_name("a.db-wal").read_bytes() if path.with_name("a.db-wal").exists() else b""
    )
    for secret in secrets_of():
        assert secret.encode() not in raw, f"{secret!r} was written to the database file"


def test_a_bare_host_name_gets_ollamas_port() -> None:
    assert OllamaEmbedder(MODEL, host="gpu-box").host == "http://gpu-box:11434"
    assert OllamaEmbedder(MODEL, host="10.0.0.5:8080/").host == "http://10.0.0.5:8080"
    assert OllamaEmbedder(MODEL, host="https://x.example/ollama/").host == (
        "https://x.example/ollama"
    )


# -- bad arguments ----------------------------------------------------------


@pytest.mark.parametrize(
    "texts",
    ["a single string", b"bytes", None, 42, ["ok", 3], [None], {"a"}],
    ids=["str", "bytes", "None", "int", "int-item", "None-item", "set"],
)
async def test_texts_must_be_a_list_of_strings(server: OllamaServer, texts: object) -> None:
    with pytest.raises(InvalidInputError) as ei:
        await make(server).embed(texts)  # type: ignore[arg-type]
    assert ei.value.code == "invalid_input"
    assert server.requests == []


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("model", ""),
        ("model", " nomic-embed-text"),
        ("model", None),
        ("host", ""),
        ("host", "ftp://127.0.0.1"),
        ("host", "http://127.0.0.1:99999"),
        ("dims", 0),
        ("batch_size", 0),
        ("batch_size", 2.5),
        ("concurrency", 0),
        ("concurrency", True),
        ("timeout_s", 0),
        ("timeout_s", float("inf")),
        ("retries", -1),
        ("backoff_s", -0.1),
        ("keep_alive", "five minutes"),
        ("keep_alive", True),
        ("keep_alive", float("nan")),
        ("truncate", "yes"),
    ],
)
def test_bad_options_are_refused(option: str, value: object) -> None:
    options: dict[str, object] = {"host": "http://127.0.0.1:11434"}
    model = MODEL
    if option == "model":
        model = value  # type: ignore[assignment]
    else:
        options[option] = value
    with pytest.raises(InvalidInputError) as ei:
        OllamaEmbedder(model, **options)  # type: ignore[arg-type]
    assert ei.value.code == "invalid_input"


@pytest.mark.parametrize("keep_alive", ["5m", "1h30m", "0", "300ms", "-1", 600, 2.5])
async def test_every_documented_keep_alive_is_accepted_by_the_server(
    server: OllamaServer, keep_alive: object
) -> None:
    await make(server, keep_alive=keep_alive).embed(["a"])
    assert len(server.embed_bodies) == 1


# -- the test server itself -------------------------------------------------


def test_server_speaks_ollamas_api(server: OllamaServer) -> None:
    with httpx.Client(base_url=server.url) as http:
        assert http.get("/api/version").json() == {"version": "0.12.6"}
        tags = http.get("/api/tags").json()["models"]
        assert [t["name"] for t in tags] == ["nomic-embed-text:latest"]
        one = http.post("/api/embed", json={"model": MODEL, "input": "hello world"}).json()
        assert one["embeddings"] == [server.vector_for("hello world")]
        assert one["prompt_eval_count"] == 2 and one["model"] == MODEL
        assert one["total_duration"] >= one["load_duration"] >= 0
        empty = http.post("/api/embed", json={"model": MODEL, "input": []})
        assert empty.json() == {"model": MODEL, "embeddings": []}
        cases = [
            ({"model": "nope", "input": "x"}, 404, 'model "nope" not found, try pulling it first'),
            ({"model": MODEL, "input": [1]}, 400, "invalid input type"),
            ({"model": MODEL, "input": "x", "keep_alive": "-1"}, 400, "missing unit"),
            ({"model": MODEL, "input": "x", "keep_alive": "soon"}, 400, "invalid duration"),
            ({"model": MODEL, "input": "x", "truncate": "no"}, 400, "cannot unmarshal"),
        ]
        for body, status, error in cases:
            answer = http.post("/api/embed", json=body)
            assert answer.status_code == status, body
            assert error in answer.json()["error"], body
        assert http.post("/api/embed", content=b"").json() == {"error": "missing request body"}


def test_server_stops_promptly_with_requests_in_flight() -> None:
    server = OllamaServer(delay_s=30.0).start()
    url = server.url
    with socket.create_connection(("127.0.0.1", server.port)) as conn:
        conn.sendall(b"POST /api/embed HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        deadline = time.monotonic() + 5.0
        while not server.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.requests, "the server never got the request"
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 2.0
        assert conn.recv(100) == b""  # closed without an answer
    with pytest.raises(httpx.ConnectError), httpx.Client() as http:
        http.get(url + "/api/version", timeout=1.0)
