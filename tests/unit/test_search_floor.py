"""The relevance floor (issue 12): every hit has a ``relevance`` whose meaning does not
depend on the query (cosine for vector and hybrid, share of the query's words for
keyword), ``min_score`` keeps the hits that reach it in memory.search,
documents.search and memory.context, and context has a default floor so an
unrelated prompt gets no memories.

Hand-written data only (the eval data never enters the tests). ``WordHashEmbedder``
is the test double of tests/unit/test_embedding_queue.py; the context tests run the
bundled MiniLM, whose scale the default floor is for.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from abathur import Abathur, InvalidInputError
from abathur.memory import CONTEXT_MIN_SCORE
from tests.backends import BackendHandle
from tests.embedders import WordHashEmbedder
from tests.helpers import assert_unchanged

BOB = {
    "pet": "Bob has a cat named Tom",
    "car": "Bob drives a red Tesla",
    "lunch": "Bob had tomato soup for lunch",
    "job": "Bob works as a nurse at the city hospital",
}


@pytest.fixture
async def hashed(backend: BackendHandle):
    async with backend.open(embedder=WordHashEmbedder(), embed_worker=False) as ab:
        yield ab


async def test_vector_relevance_is_the_cosine_and_the_floor_keeps_what_reaches_it(
    hashed: Abathur,
) -> None:
    ab = hashed
    for key, text in BOB.items():
        await ab.memory.put("user:bob", key, text)
    await ab.embeddings.drain()
    everything = await ab.memory.search("red Tesla car", prefix="user:bob", mode="vector")
    assert len(everything) == 4
    for hit in everything:
        assert hit.relevance == hit.score and -1.0 <= hit.relevance <= 1.0
    floor = (everything[0].relevance + everything[1].relevance) / 2
    kept = await ab.memory.search(
        "red Tesla car", prefix="user:bob", mode="vector", min_score=floor
    )
    assert [h.key for h in kept] == [everything[0].key] == ["car"]


async def test_hybrid_relevance_is_the_cosine_even_for_a_hit_only_keyword_ranked(
    hashed: Abathur,
) -> None:
    # 60 memories share "tea" with the query; "running shoes" shares only the stem
    # of "run" (FTS stems it, the hashed vectors do not), so the vector side ranks
    # it below its top 50 and only the keyword side brings it into the fusion.
    # Its relevance must still be its cosine, read from the embedding cache.
    ab = hashed
    for n in range(60):
        await ab.memory.put("user:zoe", f"tea{n:02}", f"tea {n}")
    await ab.memory.put("user:zoe", "shoes", "running shoes")
    await ab.embeddings.drain()
    hybrid = await ab.memory.search("run tea", prefix="user:zoe", mode="hybrid", k=100)
    vector = await ab.memory.search("run tea", prefix="user:zoe", mode="vector", k=100)
    cosine = {h.key: h.score for h in vector}
    assert "shoes" in [h.key for h in hybrid]
    assert [h.key for h in vector].index("shoes") >= 50, "the scenario needs it outside"
    for hit in hybrid:
        assert math.isclose(hit.relevance, cosine[hit.key], abs_tol=1e-6), hit.key


async def test_keyword_relevance_is_the_share_of_query_words(backend: BackendHandle) -> None:
    async with backend.open(embedder="none") as ab:
        await ab.memory.put("user:bob", "nvda", "NVIDIA stocks rose")
        await ab.memory.put("user:bob", "soup", "Bob paid a fair price for soup")
        found = await ab.memory.search("stock price of nvidia", prefix="user:bob")
        assert found.mode == "keyword"
        relevance = {h.key: h.relevance for h in found}
        # stock, price, nvidia ("of" is a stop word); stems and case do not count.
        assert relevance == {"nvda": pytest.approx(2 / 3), "soup": pytest.approx(1 / 3)}
        kept = await ab.memory.search("stock price of nvidia", prefix="user:bob", min_score=0.5)
        assert [h.key for h in kept] == ["nvda"]


@pytest.mark.parametrize(
    ("min_score", "message"),
    [
        (1.5, "between -1 and 1"),
        (-2, "between -1 and 1"),
        (math.nan, "between -1 and 1"),
        ("0.3", "must be a number"),
        (True, "must be a number"),
    ],
)
async def test_a_bad_floor_is_refused(ab: Abathur, min_score: object, message: str) -> None:
    await ab.memory.put("user:bob", "k", "x")
    async with assert_unchanged(ab):
        for call in (
            ab.memory.search("x", prefix="user:bob", min_score=min_score),  # type: ignore[arg-type]
            ab.memory.context("user:bob", "x", min_score=min_score),  # type: ignore[arg-type]
            ab.documents.search("x", min_score=min_score),  # type: ignore[arg-type]
        ):
            with pytest.raises(InvalidInputError, match=message):
                await call


async def test_documents_search_takes_a_floor(
    tmp_path: Path, backend: BackendHandle
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "restore.md").write_text("# Restore\n\nVerify the backup copy, then swap the file.\n")
    (docs / "tea.md").write_text("# Tea\n\nSteep green tea for two minutes.\n")
    async with backend.open(embedder=WordHashEmbedder()) as ab:
        await ab.documents.sync(docs)
        await ab.embeddings.drain()
        for mode in ("vector", "hybrid"):
            everything = await ab.documents.search("verify the backup", mode=mode)
            assert everything[0].path == "restore.md"
            assert len(everything) == 2, mode
            floor = (everything[0].relevance + everything[1].relevance) / 2
            kept = await ab.documents.search("verify the backup", mode=mode, min_score=floor)
            assert [h.path for h in kept] == ["restore.md"], mode
        keyword = await ab.documents.search("verify backup tea", mode="keyword")
        assert {h.path: round(h.relevance, 3) for h in keyword} == {
            "restore.md": 0.667,
            "tea.md": 0.333,
        }


async def test_context_packs_nothing_for_an_unrelated_prompt(backend: BackendHandle) -> None:
    # The case, bundled MiniLM: three unrelated memories used to be packed.
    async with backend.open(embed_worker=False) as ab:
        for key, text in BOB.items():
            await ab.memory.put("user:bob", key, text)
        await ab.embeddings.drain()
        ctx = await ab.memory.context("user:bob", "stock price of nvidia", max_tokens=60)
        assert ctx.mode == "hybrid"
        assert ctx.min_score == CONTEXT_MIN_SCORE["hybrid"]
        assert ctx.text == "" and len(ctx) == 0
        # The floor is the default only: None turns it off, as before.
        unfloored = await ab.memory.context(
            "user:bob", "stock price of nvidia", max_tokens=60, min_score=None
        )
        assert len(unfloored) >= 3
        # A related prompt still gets its memory, first.
        ctx = await ab.memory.context("user:bob", "what is Bob's pet", max_tokens=60)
        assert [m.key for m in ctx][:1] == ["pet"]
        assert all(m.relevance >= CONTEXT_MIN_SCORE["hybrid"] for m in ctx)


async def test_context_uses_the_keyword_floor_after_a_fallback(backend: BackendHandle) -> None:
    async with backend.open(embedder="none") as ab:
        await ab.memory.put("user:bob", "nvda", "NVIDIA stock closed higher")
        await ab.memory.put("user:bob", "soup", "Bob paid a fair price for soup")
        # stock, price, nvidia, shares, today: nvda has 2 of the 5 words, soup 1.
        ctx = await ab.memory.context(
            "user:bob", "stock price of nvidia shares today", max_tokens=60
        )
        assert ctx.mode == "keyword" and ctx.min_score == CONTEXT_MIN_SCORE["keyword"]
        assert [m.key for m in ctx] == ["nvda"]


# Terse key/value facts, as agents store them, and questions a prompt would ask.
FACTS = {
    "language": {"value": "French"},
    "diet": "vegetarian",
    "city": "lives in Lyon",
    "pet": "cat named Tom",
    "birthday": "12 March",
    "employer": "works at Acme Corp",
    "allergy": "peanuts",
}
ASKED = [
    ("what language should I reply in", "language"),
    ("does she eat meat", "diet"),
    ("which city", "city"),
    ("does the user have animals", "pet"),
    ("when is her birthday", "birthday"),
    ("company", "employer"),
    ("is the user allergic to anything", "allergy"),
]
UNRELATED = ["stock price of nvidia", "weather in Tokyo tomorrow", "how to fix a flat tire"]


async def test_the_default_floor_keeps_relevant_facts_and_drops_unrelated_ones(
    backend: BackendHandle,
) -> None:
    # The default was chosen on chat turns (LoCoMo); it must not hide the short
    # facts agents store, whose cosines to a question are lower (bundled MiniLM).
    async with backend.open(embed_worker=False) as ab:
        for key, value in FACTS.items():
            await ab.memory.put("user:ann", key, value)
        await ab.embeddings.drain()
        for question, key in ASKED:
            ctx = await ab.memory.context("user:ann", question, max_tokens=200)
            assert key in [m.key for m in ctx], question
        for question in UNRELATED:
            ctx = await ab.memory.context("user:ann", question, max_tokens=200)
            assert len(ctx) == 0, (question, [(m.key, m.relevance) for m in ctx])
