"""abathur.redact: what counts as a credential, and what the text looks like after."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from abathur import Abathur
from abathur.embeddings.base import EmbedResult
from abathur.redact import BODY_LIMIT, MASK, echoed, redact, redact_url


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://bob:pw@host:1/x", "http://***@host:1/x"),
        ("see https://bob:S3C#r/t?x@host:1 now", "see https://***@host:1 now"),
        ("Authorization: Basic YWxpY2U6czNjcmV0", "Authorization: Basic ***"),
        ("authorization=Bearer abc.def-ghi", "authorization=Bearer ***"),
        ('{"Authorization": "Bearer sk-123456789"}', '{"Authorization": "Bearer ***"}'),
        ("Proxy-Authorization: Digest xyz", "Proxy-Authorization: Digest ***"),
        ("x-api-key: abc123", "x-api-key: ***"),
        ("sent bearer sk-live-1234567890 twice", "sent bearer *** twice"),
        ("Cookie: session=abc; theme=dark", "Cookie: ***"),
        ("GET /api?api_key=sk-1&model=m", "GET /api?api_key=***&model=m"),
        ('{"password": "hunter2", "user": "bob"}', '{"password": "***", "user": "bob"}'),
        ("client_secret=s; access_token=t", "client_secret=***; access_token=***"),
    ],
)
def test_credentials_are_masked_and_the_rest_kept(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "ollama at http://127.0.0.1:11434 (model 'nomic-embed-text') is unavailable",
        "HTTP 401: unauthorized: check the credentials in the host URL or OLLAMA_API_KEY",
        "tokens: 42, basic auth",
        "namespace user:alice:preferences, key language",
        "mailto bob@example.com",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == text


def test_known_secrets_are_masked_as_written_and_percent_encoded() -> None:
    text = "pw S3C#r/t?x, encoded S3C%23r%2Ft%3Fx, short ab"
    assert redact(text, secrets=["S3C#r/t?x", "ab"]) == f"pw {MASK}, encoded {MASK}, short ab"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://alice:S3C#r/t?x@127.0.0.1:11434", "http://***@127.0.0.1:11434"),
        ("alice:pw@gpu:11434", "***@gpu:11434"),
        ("https://ollama.example/api?token=t0k&x=1", "https://ollama.example/api?token=***&x=1"),
        ("http://127.0.0.1:11434", "http://127.0.0.1:11434"),
    ],
)
def test_urls_lose_userinfo_and_secret_parameters(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_echoed_text_is_one_clean_line_redacted_before_it_is_cut() -> None:
    body = (
        "\x1b[1;31mupstream error\x1b[0m\r\n\x00\u202e\u2028"
        "Authorization: Basic " + "Q" * 300 + "\r\n" + "y" * 1000
    )
    shown = echoed(body)
    assert shown.startswith("upstream error Authorization: Basic ***")
    assert len(shown) <= BODY_LIMIT and shown.endswith("...")
    assert "Q" not in shown  # masked whole, not cut in half
    assert not any(ord(ch) < 32 or ch in "\x7f\u202e\u2028" for ch in shown)
    assert echoed("\ud800 lone") == "lone"  # no lone surrogate: the result is valid UTF-8
    assert echoed(ValueError("bad value")) == "bad value"
    assert echoed("abcdefghij", limit=8) == "abcde..."


def test_hostile_input_stays_fast() -> None:
    # Bounded patterns: no quadratic blow-up on a long body built to provoke one.
    bodies = [
        "http://" * 20_000,
        "a" * 200_000 + "@",
        "Authorization:" * 20_000,
        "password=" * 20_000,
        "x://" + "@" * 100_000,
    ]
    started = time.perf_counter()
    for body in bodies:
        echoed(body)
        redact(body)
    assert time.perf_counter() - started < 5.0


class LeakyEmbedder:
    """A custom embedder whose HTTP library puts the request's credential in its error."""

    name = "custom:leaky"
    provider = "custom"
    model = "leaky"
    dims = 8

    def __init__(self) -> None:
        self.failing = False

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return (await self.embed_with_usage(texts)).vectors

    async def embed_with_usage(self, texts: list[str]) -> EmbedResult:
        if self.failing:
            raise RuntimeError(
                "\x1b[31m502\x1b[0m from https://bob:hunter22@api.example/v1 with "
                "Authorization: Bearer sk-live-abcdef123456\n" + "trace " * 200
            )
        return EmbedResult(vectors=[[1.0] + [0.0] * 7 for _ in texts], tokens=len(texts))


@pytest.mark.sqlite_only("reads the embedding queue through tx.conn")
async def test_a_custom_embedders_error_is_redacted_and_capped_before_it_reaches_a_caller(
    tmp_path: Path,
) -> None:
    # The queue translates any exception of a custom embedder into EmbedderError;
    # the foreign text goes through abathur.redact like the Ollama provider's.
    leaky = LeakyEmbedder()
    async with Abathur.open(tmp_path / "a.db", embedder=leaky, embed_worker=False) as ab:
        await ab.memory.put("user:a", "k", "green tea")
        await ab.embeddings.drain()
        leaky.failing = True
        await ab.memory.put("user:a", "k2", "black tea")
        drained = await ab.embeddings.drain()  # the job is marked failed, with its error
        found = await ab.memory.search("tea", prefix="user:a")
        status = await ab.embeddings.status()
        queued = await ab.db.read(
            lambda tx: tx.conn.execute("SELECT last_error FROM embedding_queue").fetchall()
        )
    with pytest.raises(RuntimeError, match="hunter22"):
        await leaky.embed(["x"])  # what the queue was given
    assert drained.failed == 1 and found.is_degraded
    shown = [found.degraded_reason or "", status.last_error or "", queued[0][0]]
    for text in shown:
        assert "hunter22" not in text and "sk-live-abcdef123456" not in text, text
        assert "\x1b" not in text and "\n" not in text
        assert len(text) < 400  # the 1,200 characters of trace are cut
    assert "https://***@api.example/v1" in status.last_error
