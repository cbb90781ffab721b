"""The bundled embedder's throughput: all-MiniLM-L6-v2 on onnxruntime, two intra-op threads.

Run with ``make bench`` (or ``.venv/bin/python -m pytest benchmarks/test_embeddings.py
--benchmark-only``). Each round embeds one call's worth of texts through the public
``BundledEmbedder.embed``; ``texts_per_s`` in the extra info is texts / median round time.
Issue 3's target: >= 800 short sentences/s on 2 cores.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from abathur.embeddings.bundled import BundledEmbedder

# 8 x 8 x 8 = 512 distinct sentences of the kind an agent stores as memories.
SUBJECTS = ["Alice", "The agent", "Bob", "The user", "Our team", "The service", "A customer", "It"]
VERBS = ["prefers", "asked about", "reported", "fixed", "scheduled", "cancelled", "read", "lost"]
OBJECTS = [
    "the French invoice",
    "a refund for order 1234",
    "the database backup",
    "a login problem",
    "tomorrow's meeting",
    "the billing policy",
    "a slow search query",
    "the onboarding docs",
]


def short_sentences(n: int) -> list[str]:
    """Distinct short sentences: 5-8 words, 8-14 word pieces (10 on average) with [CLS], [SEP]."""
    return [f"{SUBJECTS[i % 8]} {VERBS[i // 8 % 8]} {OBJECTS[i // 64 % 8]}." for i in range(n)]


def long_texts(n: int) -> list[str]:
    """Abstract-sized texts that fill the model's 256 word pieces."""
    return [" ".join(short_sentences(40)[i % 7 :]) + f" ({i})" for i in range(n)]


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def embedder(loop: asyncio.AbstractEventLoop) -> BundledEmbedder:
    embedder = BundledEmbedder()
    loop.run_until_complete(embedder.embed(["warm up: load the model once"]))
    return embedder


def _run(benchmark, loop, embedder: BundledEmbedder, texts: list[str], rounds: int) -> None:
    vectors = benchmark.pedantic(
        lambda: loop.run_until_complete(embedder.embed(texts)),
        rounds=rounds,
        warmup_rounds=1,
    )
    assert len(vectors) == len(texts)
    benchmark.extra_info["texts"] = len(texts)
    benchmark.extra_info["texts_per_s"] = round(len(texts) / benchmark.stats.stats.median)


def test_short_sentences_batch_of_64(benchmark, loop, embedder) -> None:
    """One call of 64 short sentences (the worker's default batch, Settings.embed_batch_size)."""
    _run(benchmark, loop, embedder, short_sentences(64), rounds=30)


def test_short_sentences_call_of_512(benchmark, loop, embedder) -> None:
    """One call of 512 short sentences: the embedder's own length-sorted batching."""
    _run(benchmark, loop, embedder, short_sentences(512), rounds=10)


def test_one_short_sentence(benchmark, loop, embedder) -> None:
    """Latency of a single query embedding (what a vector search pays first)."""
    _run(benchmark, loop, embedder, ["what language does alice speak"], rounds=200)


def test_long_texts_256_word_pieces(benchmark, loop, embedder) -> None:
    """32 texts truncated at 256 word pieces (document chunks, abstracts)."""
    _run(benchmark, loop, embedder, long_texts(32), rounds=5)
