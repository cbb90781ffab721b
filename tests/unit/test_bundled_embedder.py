"""The bundled MiniLM embedder, run for real on the shipped model (no torch).

The reference check against sentence-transformers needs torch and lives in model_tests/
(``make test-model``); these tests pin down everything else: shape, norm, order,
truncation, token counts, typed errors, lazy and shared loading, and the provenance of
the shipped files.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from abathur.embeddings import Embedder, EmbedResult, bundled
from abathur.embeddings.bundled import BundledEmbedder
from abathur.errors import EmbedderError, InvalidInputError

MODEL_DIR = Path(bundled.__file__).parent / "model"

TEXTS = [
    "hi",
    "A man is playing a guitar on stage.",
    "Die Katze schläft auf dem Sofa.",
    "猫はソファの上で寝ています。",
    "!!! ??? ...",
    "",
    "What language does Alice speak? She prefers to be answered in French, always.",
]

# Far past 256 word pieces; the two differ only after the first 1,000.
LONG = "The nightly backup was verified and copied offsite. " * 120
LONG_OTHER_TAIL = LONG + "An entirely different ending about cats, jazz and volcanoes."


@pytest.fixture(scope="module")
def embedder() -> BundledEmbedder:
    return BundledEmbedder()


def cosine(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_identity_is_what_the_database_records(embedder):
    assert isinstance(embedder, Embedder)
    assert embedder.name == "bundled:all-MiniLM-L6-v2"
    assert (embedder.provider, embedder.model, embedder.dims) == (
        "bundled",
        "all-MiniLM-L6-v2",
        384,
    )
    assert embedder.max_tokens == 256


async def test_vectors_have_384_floats_and_unit_norm(embedder):
    vectors = await embedder.embed(TEXTS)
    assert len(vectors) == len(TEXTS)
    assert all(len(v) == 384 and all(type(x) is float for x in v) for v in vectors)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert len({tuple(v) for v in vectors}) == len(TEXTS)


async def test_same_texts_give_the_same_vectors(embedder):
    first = await embedder.embed(TEXTS)
    again = await embedder.embed(tuple(TEXTS))
    assert first == again
    # Alone (no padding) or among longer neighbours (padded), a text embeds the same.
    alone = await embedder.embed([TEXTS[1]])
    np.testing.assert_allclose(alone[0], first[1], atol=1e-5)


async def test_input_order_is_kept_across_length_sorted_batches(embedder):
    # 100 texts of scrambled lengths: sorted into more than one batch internally.
    texts = [f"item {i}: " + " ".join(["backup"] * ((i * 37) % 41)) for i in range(100)]
    assert len(texts) > bundled.BATCH_TEXTS
    vectors = await embedder.embed(texts)
    backwards = await embedder.embed(texts[::-1])
    np.testing.assert_allclose(vectors, backwards[::-1], atol=1e-5)
    for i in (0, 1, 38, 99):
        (alone,) = await embedder.embed([texts[i]])
        np.testing.assert_allclose(alone, vectors[i], atol=1e-5)


def test_batches_are_length_sorted_and_bounded():
    lengths = [(i * 53) % 256 + 3 for i in range(500)]
    batches = bundled._batches([[1] * n for n in lengths])
    assert sorted(i for batch in batches for i in batch) == list(range(500))
    flat = [lengths[i] for batch in batches for i in batch]
    assert flat == sorted(flat)
    for batch in batches:
        assert len(batch) <= bundled.BATCH_TEXTS
        assert len(batch) * max(lengths[i] for i in batch) <= bundled.BATCH_TOKENS


async def test_concurrent_calls_get_their_own_results(embedder):
    sequential = [await embedder.embed([t]) for t in TEXTS]
    concurrent = await asyncio.gather(*(embedder.embed([t]) for t in TEXTS))
    assert concurrent == sequential


async def test_paraphrases_are_closer_than_unrelated_sentences(embedder):
    guitar, strum, stocks, french, language, invoice = await embedder.embed(
        [
            "A man is playing a guitar.",
            "Someone is strumming a guitar.",
            "The stock market fell sharply today.",
            "Alice prefers to be answered in French.",
            "What language does Alice speak?",
            "The invoice was paid three weeks late.",
        ]
    )
    assert cosine(guitar, strum) > cosine(guitar, stocks) + 0.3
    assert cosine(french, language) > cosine(french, invoice) + 0.2


async def test_long_input_is_truncated_at_256_word_pieces(embedder):
    result = await embedder.embed_with_usage([LONG, LONG_OTHER_TAIL])
    assert result.tokens == 2 * 256
    np.testing.assert_allclose(result.vectors[0], result.vectors[1], atol=1e-6)


async def test_token_counts_are_exact(embedder):
    # [CLS] hello world [SEP] = 4; [CLS] hi [SEP] = 3; [CLS] [SEP] = 2.
    result = await embedder.embed_with_usage(["hello world", "hi", ""])
    assert result.tokens == 4 + 3 + 2
    assert result.is_token_estimate is False
    assert len(result.vectors) == 3


async def test_empty_list(embedder):
    assert await embedder.embed([]) == []
    assert await embedder.embed_with_usage(()) == EmbedResult(vectors=[], tokens=0)


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ("one string", "texts must be a list or tuple of str, not str"),
        (b"bytes", "not bytes"),
        (None, "not NoneType"),
        (42, "not int"),
        ({"a": "b"}, "not dict"),
        (iter(["a generator"]), "not list_iterator"),
        (["ok", 3], r"texts\[1\] must be a str, not int"),
        ([None], r"texts\[0\] must be a str, not NoneType"),
        (["ok", b"bytes"], r"texts\[1\] must be a str, not bytes"),
        (["fine", "lone \ud800 surrogate"], r"texts\[1\] is not valid Unicode"),
    ],
)
async def test_bad_input_is_a_typed_error(embedder, texts, message):
    for call in (embedder.embed, embedder.embed_with_usage):
        with pytest.raises(InvalidInputError, match=message) as raised:
            await call(texts)
        assert raised.value.code == "invalid_input"
        assert isinstance(raised.value, ValueError)


def test_onnxruntime_errors_become_embedder_errors():
    tokenizer_json = (MODEL_DIR / "tokenizer.json").read_text("utf-8")
    with pytest.raises(EmbedderError, match="cannot load the bundled all-MiniLM-L6-v2") as raised:
        bundled._Runtime.from_bytes(b"not an onnx model", tokenizer_json)
    assert raised.value.code == "embedder.error"
    assert not raised.value.retryable
    model = (MODEL_DIR / "model.onnx").read_bytes()
    with pytest.raises(EmbedderError, match="cannot load") as raised:
        bundled._Runtime.from_bytes(model, "{not a tokenizer")
    assert raised.value.code == "embedder.error"


def test_the_model_loads_lazily_and_once_per_process():
    code = """
import asyncio, sys
from abathur.embeddings import bundled
from abathur.embeddings.bundled import BundledEmbedder
first, second = BundledEmbedder(), BundledEmbedder()
assert "onnxruntime" not in sys.modules, "constructing an embedder loaded onnxruntime"
asyncio.run(first.embed(["load it now"]))
assert "onnxruntime" in sys.modules
runtime = bundled._runtime()
asyncio.run(second.embed(["and share it"]))
assert bundled._runtime() is runtime, "a second embedder loaded its own model"
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "ok"


def test_shipped_files_match_their_provenance():
    provenance = (MODEL_DIR / "PROVENANCE.md").read_text("utf-8")
    listed = dict(re.findall(r"^\| `([\w.]+)` \|[^|\n]*\| `([0-9a-f]{64})` \|$", provenance, re.M))
    assert set(listed) == {"model.onnx", "tokenizer.json", "LICENSE"}
    for name, digest in listed.items():
        assert hashlib.sha256((MODEL_DIR / name).read_bytes()).hexdigest() == digest, name
    assert "Apache License" in (MODEL_DIR / "LICENSE").read_text("utf-8")
