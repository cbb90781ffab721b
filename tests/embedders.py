"""Test doubles of the :class:`~abathur.embeddings.Embedder` protocol, shared by the tests.

abathur ships the bundled MiniLM, Ollama and OpenAI-compatible providers,
never these. ``WordHashEmbedder``: bag-of-words hashed into a few dimensions,
deterministic, fast, countable, and switchable off. ``GatedEmbedder``: the
same, answering only once its gate is set, so a batch can be held mid-embed.
``toy_embed``: LangGraph's kind of embedding function (texts in, vectors out),
``DIMS`` wide, for the adapter's tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import zlib
from collections.abc import Sequence

import numpy as np

from abathur import EmbedderError, EmbedderUnavailableError
from abathur.embeddings import EmbedResult

__all__ = ["DIMS", "GatedEmbedder", "WordHashEmbedder", "toy_embed"]

_WORD = re.compile(r"\w+")


class WordHashEmbedder:
    """TEST DOUBLE: hashed bag of words; ``available``/``fail_on``/``delay_s`` simulate trouble.

    Texts sharing words get similar vectors, so search results are predictable.
    ``calls`` and ``texts`` record every call, to prove what was (not) embedded.
    """

    provider = "test"

    def __init__(self, *, dims: int = 64, model: str = "word-hash") -> None:
        self.model = model
        self.name = f"test:{model}"
        self.dims = dims
        self.available = True
        self.fail_on: set[str] = set()  # a text containing one of these fails for good
        self.delay_s = 0.0
        self.calls = 0
        self.texts: list[str] = []
        self.started = asyncio.Event()

    def vector(self, text: str) -> list[float]:
        v = np.zeros(self.dims, dtype=np.float64)
        for word in _WORD.findall(text.lower()):
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            v[digest[0] % self.dims] += 1.0 if digest[1] & 1 else -1.0
            v[digest[2] % self.dims] += 0.5 if digest[3] & 1 else -0.5
        norm = np.linalg.norm(v)
        return (v / norm if norm else np.full(self.dims, self.dims**-0.5)).tolist()

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return (await self.embed_with_usage(texts)).vectors

    async def embed_with_usage(self, texts: Sequence[str]) -> EmbedResult:
        self.started.set()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if not self.available:
            raise EmbedderUnavailableError("test embedder switched off")
        bad = [t for t in texts if any(marker in t for marker in self.fail_on)]
        if bad:
            raise EmbedderError(f"test embedder refuses {bad[0]!r}")
        self.calls += 1
        self.texts += list(texts)
        return EmbedResult(
            vectors=[self.vector(t) for t in texts],
            tokens=sum(len(_WORD.findall(t)) for t in texts),
            is_token_estimate=True,
        )


class GatedEmbedder(WordHashEmbedder):
    """TEST DOUBLE: answers only once ``gate`` is set, so a batch can be held mid-embed."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def embed_with_usage(self, texts: Sequence[str]) -> EmbedResult:
        self.started.set()
        await self.gate.wait()
        return await super().embed_with_usage(texts)


DIMS = 256


def toy_embed(texts: list[str]) -> list[list[float]]:
    """Bag of words hashed into 256 dims: deterministic, instant, and shared by both stores.

    Only letters make words, so a digits-only key (which abathur embeds as
    ``"<key>: "`` before the text) changes nothing and scores can be compared.
    """
    vectors = []
    for text in texts:
        vector = [0.0] * DIMS
        for word in re.findall(r"[a-z]+", text.lower()):
            vector[zlib.crc32(word.encode()) % DIMS] += 1.0
        vectors.append(vector)
    return vectors
