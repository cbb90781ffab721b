"""OpenAICompatEmbedder against a real HTTP server on 127.0.0.1 (tests/openai_server.py)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from abathur.config import Settings
from abathur.embeddings import Embedder
from abathur.embeddings.openai_compat import OpenAICompatEmbedder
from abathur.errors import EmbedderError, EmbedderUnavailableError, InvalidInputError
from tests.backends import BackendHandle
from tests.openai_server import Fault, OpenAIServer

MODEL = "text-embedding-3-small"
KEY = "sk-test-0123456789abcdef"


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(dims=8) as running:
        yield running


def make(server: OpenAIServer, **options: object) -> OpenAICompatEmbedder:
    """An embedder with test-sized timeouts and backoff."""
    settings: dict[str, object] = {
        "base_url": server.url,
        "batch_size": 2,
        "timeout_s": 2.0,
        "retries": 2,
        "backoff_s": 0.001,
        "max_backoff_s": 0.005,
    }
    settings.update(options)
    return OpenAICompatEmbedder(str(settings.pop("model", MODEL)), **settings)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_is_an_embedder_named_after_its_provider(server: OpenAIServer) -> None:
    e = make(server)
    assert isinstance(e, Embedder)
    assert (e.name, e.provider, e.model, e.dims) == (f"openai:{MODEL}", "openai", MODEL, 0)


def test_embeds_in_batches_in_input_order_with_usage(server: OpenAIServer) -> None:
    texts = ["one fish", "two fish", "red fish blue fish", "four"]
    result = asyncio.run(make(server).embed_with_usage(texts))
    # Two requests in flight at once: they may arrive in either order.
    assert sorted(r["body"]["input"] for r in server.requests) == [texts[:2], texts[2:]]
    assert all(r["path"] == "/v1/embeddings" for r in server.requests)
    assert all(r["body"] == {"model": MODEL, "input": r["body"]["input"]} for r in server.requests)
    for text, vector in zip(texts, result.vectors, strict=True):
        assert vector == pytest.approx(server.vector_for(text), abs=1e-9)
    assert (result.tokens, result.is_token_estimate) == (9, False)


def test_orders_by_index_when_the_server_shuffles_data() -> None:
    with OpenAIServer(reverse=True) as server:
        vectors = asyncio.run(make(server, batch_size=10).embed(["a", "b", "c"]))
        assert vectors == [pytest.approx(server.vector_for(t)) for t in ["a", "b", "c"]]


def test_estimates_tokens_when_usage_is_missing() -> None:
    with OpenAIServer(usage=False) as server:
        result = asyncio.run(make(server).embed_with_usage(["12345678"]))
        assert (result.tokens, result.is_token_estimate) == (2, True)


def test_dims_is_sent_and_enforced(server: OpenAIServer) -> None:
    e = make(server, dims=8)
    asyncio.run(e.embed(["x"]))
    assert server.requests[0]["body"]["dimensions"] == 8
    wrong = make(server, dims=4)
    with pytest.raises(EmbedderError, match="8-d vectors, expected 4-d"):
        asyncio.run(wrong.embed(["x"]))


def test_the_api_key_is_a_bearer_token_and_never_shown() -> None:
    with OpenAIServer(api_key=KEY) as server:
        assert len(asyncio.run(make(server, api_key=KEY).embed(["hi"]))) == 1
        assert server.requests[0]["headers"]["Authorization"] == f"Bearer {KEY}"
        wrong = make(server, api_key=KEY + "x")
        with pytest.raises(EmbedderError, match="refused the API key") as caught:
            asyncio.run(wrong.embed(["hi"]))
        assert not isinstance(caught.value, EmbedderUnavailableError)
        # The server echoed the key it was given; the message must not carry it.
        assert KEY not in str(caught.value)
        assert KEY not in repr(wrong)
        assert KEY not in repr(Settings(openai_api_key=KEY))


def test_an_unknown_model_fails_at_once(server: OpenAIServer) -> None:
    with pytest.raises(EmbedderError, match="no model 'nope'") as caught:
        asyncio.run(make(server, model="nope").embed(["x"]))
    assert not isinstance(caught.value, EmbedderUnavailableError)
    assert len(server.requests) == 1


def test_transient_failures_are_retried(server: OpenAIServer) -> None:
    server.fail(Fault(status=503), Fault(status=429, headers={"Retry-After": "0"}))
    vectors = asyncio.run(make(server, batch_size=10).embed(["a"]))
    assert vectors == [pytest.approx(server.vector_for("a"))]
    assert len(server.requests) == 3


def test_at_most_concurrency_requests_are_in_flight() -> None:
    with OpenAIServer(delay_s=0.05) as server:
        texts = [f"text {i}" for i in range(12)]
        vectors = asyncio.run(make(server, batch_size=2, concurrency=3).embed(texts))
        assert vectors == [pytest.approx(server.vector_for(t)) for t in texts]
        assert len(server.requests) == 6
        # Six requests of 50 ms each, three at a time: the gate is full, never over.
        assert server.max_in_flight == 3


def test_a_429_waits_for_retry_after(server: OpenAIServer) -> None:
    server.fail(Fault(status=429, headers={"Retry-After": "0.3"}))
    started = time.perf_counter()
    asyncio.run(make(server, max_backoff_s=5.0).embed(["a"]))
    assert time.perf_counter() - started >= 0.3
    assert len(server.requests) == 2


def test_a_dropped_connection_is_retried(server: OpenAIServer) -> None:
    server.fail(Fault(drop=True))
    assert len(asyncio.run(make(server).embed(["a"]))) == 1
    assert len(server.requests) == 2


def test_unavailable_after_the_last_retry(server: OpenAIServer) -> None:
    server.fail(*[Fault(status=500)] * 3)
    with pytest.raises(EmbedderUnavailableError, match="after 3 attempts: HTTP 500") as caught:
        asyncio.run(make(server).embed(["a"]))
    assert caught.value.retryable


def test_a_timeout_is_unavailable(server: OpenAIServer) -> None:
    server.fail(Fault(delay_s=1.0))
    with pytest.raises(EmbedderUnavailableError, match=r"no answer within 0\.2s"):
        asyncio.run(make(server, timeout_s=0.2, retries=0).embed(["a"]))


def test_nothing_listening_is_unavailable() -> None:
    e = OpenAICompatEmbedder(MODEL, base_url=f"http://127.0.0.1:{free_port()}/v1", retries=0)
    with pytest.raises(EmbedderUnavailableError, match="connection failed"):
        asyncio.run(e.embed(["a"]))


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"data": [{"embedding": [1.0, 0.0]}]}, "1 vectors for 2 texts"),
        ({"vectors": []}, "not an embeddings response"),
        ({"data": [{"embedding": [1.0]}, {"embedding": [1.0, 2.0]}]}, "different lengths"),
        ({"data": [{"embedding": [0.0]}, {"embedding": [0.0]}]}, "zero or non-finite"),
        ({"data": [{"embedding": [1.0], "index": 0}, {"embedding": [1.0], "index": 0}]}, "indexes"),
    ],
)
def test_an_answer_that_breaks_the_api_is_an_error(
    server: OpenAIServer, body: object, match: str
) -> None:
    server.fail(Fault(status=200, body=body))
    with pytest.raises(EmbedderError, match=match) as caught:
        asyncio.run(make(server).embed(["a", "b"]))
    assert not isinstance(caught.value, EmbedderUnavailableError)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"base_url": "ftp://host/v1"}, "http:// or https://"),
        ({"base_url": "http://bob:s3cret@host/v1"}, "no user, password"),
        ({"base_url": ""}, "non-blank URL"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"timeout_s": float("nan")}, "finite number"),
        ({"api_key": " "}, "api_key"),
        ({"dims": True}, "dims must be an integer"),
    ],
)
def test_bad_arguments_are_invalid_input(options: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match) as caught:
        OpenAICompatEmbedder(MODEL, **options)  # type: ignore[arg-type]
    assert "s3cret" not in str(caught.value)


def test_texts_must_be_a_list_of_strings(server: OpenAIServer) -> None:
    with pytest.raises(InvalidInputError, match="wrap a single text"):
        asyncio.run(make(server).embed("hello"))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"texts\[1\] is int"):
        asyncio.run(make(server).embed(["a", 1]))  # type: ignore[list-item]
    assert server.requests == []


def test_selected_by_abathur_embedder_and_priced_in_the_ledger(
    server: OpenAIServer, backend: BackendHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ABATHUR_EMBEDDER", "openai")
    monkeypatch.setenv("ABATHUR_OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("ABATHUR_OPENAI_API_KEY", KEY)

    async def run() -> None:
        prices = {f"openai/{MODEL}": 1000.0}
        async with backend.open(embed_worker=False, prices=prices) as ab:
            assert isinstance(ab.embeddings.embedder, OpenAICompatEmbedder)
            await ab.memory.put("user:alice", "lang", "alice speaks French")
            await ab.memory.put("user:alice", "pet", "alice has a cat named Tom")
            report = await ab.embeddings.drain()
            assert (report.embedded, report.remaining) == (2, 0)
            hits = await ab.memory.search("alice speaks French", prefix="user:alice", mode="vector")
            assert (hits.mode, len(hits.hits)) == ("vector", 2)
            costs = await ab.costs.report(since="1d", by="model")
            line = {g.key: g for g in costs.groups}[f"openai/{MODEL}"]
            # The server counts words: the two memories' texts (key and value), then the query.
            assert line.tokens == sum(r["usage"] for r in answered()) == 14
            assert line.cost_usd == pytest.approx(14 * 1000.0 / 1e6)
            assert costs.unpriced == []

    def answered() -> list[dict[str, int]]:
        return [{"usage": sum(len(t.split()) for t in r["body"]["input"])} for r in server.requests]

    asyncio.run(run())
    assert all(r["headers"]["Authorization"] == f"Bearer {KEY}" for r in server.requests)
