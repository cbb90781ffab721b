"""AbathurStore's search by query (LangGraph's ``index`` config), beside InMemoryStore's.

Both stores embed with the same deterministic function (``toy_embed``), so
their similarity scores can be compared; abathur's own bundled model is used
where noted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph.store.base", reason="the langgraph extra is not installed")

from langgraph.store.base import BaseStore, PutOp
from langgraph.store.memory import InMemoryStore

from abathur import Abathur, errors
from abathur.integrations.langgraph import AbathurStore, as_embedder, to_namespace
from tests.backends import BACKENDS, BackendHandle, handle
from tests.embedders import DIMS, toy_embed
from tests.helpers import assert_unchanged

DOCS = {
    "1": {"text": "python programming tutorial", "topic": "code"},
    "2": {"text": "italian pasta cooking recipe", "topic": "food"},
    "3": {"text": "python snake habitat and diet", "topic": "animals"},
    "4": {"text": "advanced python programming patterns", "topic": "code"},
    "5": {"text": "slow cooking beans", "topic": "food"},
}
INDEX: dict[str, Any] = {"dims": DIMS, "embed": toy_embed, "fields": ["text"]}


@pytest.fixture
async def ours(backend: BackendHandle) -> AsyncIterator[AbathurStore]:
    async with AbathurStore(backend.target, index=INDEX) as store:
        yield store


@pytest.fixture(params=["in-memory", *(spec.name for spec in BACKENDS)])
async def both(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BaseStore]:
    """LangGraph's in-memory store, then ours on each backend (tests/backends.py)."""
    if request.param == "in-memory":
        yield InMemoryStore(index=INDEX)
        return
    async with AbathurStore(handle(request.param, tmp_path, request).target, index=INDEX) as store:
        yield store


async def fill(*stores: BaseStore, docs: dict[str, dict[str, Any]] = DOCS) -> None:
    for store in stores:
        for key, value in docs.items():
            await store.aput(("docs",), key, value)


def ranked(found: list[Any]) -> list[tuple[str, float]]:
    return [(i.key, round(i.score, 5)) for i in found]


@pytest.mark.parametrize(
    "query", ["python programming", "cooking pasta", "snake diet", "beans", "unrelated words"]
)
async def test_search_by_query_ranks_and_scores_like_the_in_memory_store(
    ours: AbathurStore, query: str
) -> None:
    reference = InMemoryStore(index=INDEX)
    await fill(reference, ours)
    expected = ranked(await reference.asearch(("docs",), query=query, limit=3))
    found = await ours.asearch(("docs",), query=query, limit=3)
    # Cosine similarity on the same vectors (abathur keeps them as float32).
    assert sorted(ranked(found), key=lambda p: (-p[1], p[0])) == sorted(
        expected, key=lambda p: (-p[1], p[0])
    )
    scores = [i.score for i in found]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= s <= 1.0 for s in scores)


async def test_query_results_page_like_the_in_memory_store(ours: AbathurStore) -> None:
    reference = InMemoryStore(index=INDEX)
    await fill(reference, ours)
    query = "python programming patterns tutorial"
    for limit, offset in [(2, 0), (2, 1), (10, 2), (1, 3)]:
        mine = await ours.asearch(("docs",), query=query, limit=limit, offset=offset)
        theirs = await reference.asearch(("docs",), query=query, limit=limit, offset=offset)
        assert ranked(mine) == ranked(theirs)


async def test_a_filter_applies_before_ranking(both: BaseStore) -> None:
    docs = {f"{i:02}": {"text": "python programming", "kind": "common"} for i in range(30)}
    docs["99"] = {"text": "knitting wool", "kind": "rare"}
    await fill(both, docs=docs)
    (hit,) = await both.asearch(("docs",), query="python", filter={"kind": "rare"}, limit=1)
    assert hit.key == "99"
    found = await both.asearch(
        ("docs",), query="python", filter={"kind": {"$ne": "rare"}}, limit=50
    )
    assert len(found) == 30


async def test_a_filter_abathur_cannot_apply_in_sql_never_starves_the_result(
    ours: AbathurStore,
) -> None:
    docs = {f"{i:03}": {"text": "python programming", "n": i} for i in range(120)}
    await fill(ours, docs=docs)
    found = await ours.asearch(("docs",), query="python", filter={"n": {"$gte": 110}}, limit=5)
    assert len(found) == 5 and all(i.value["n"] >= 110 for i in found)


async def test_the_namespace_prefix_scopes_a_query(both: BaseStore) -> None:
    await both.aput(("users", "alice"), "1", {"text": "likes green tea"})
    await both.aput(("users", "alicia"), "2", {"text": "likes green tea"})
    await both.aput(("users", "alice", "old"), "3", {"text": "liked black tea"})
    found = await both.asearch(("users", "alice"), query="tea", limit=10)
    assert sorted((i.namespace, i.key) for i in found) == [
        (("users", "alice"), "1"),
        (("users", "alice", "old"), "3"),
    ]


async def test_fields_choose_what_is_embedded(both_fields: BaseStore) -> None:
    await both_fields.aput(("n",), "1", {"title": "gardening", "body": "python snakes"})
    await both_fields.aput(("n",), "2", {"title": "python snakes", "body": "gardening"})
    # A put's own index list replaces the configured fields.
    await both_fields.aput(("n",), "3", {"title": "gardening", "body": "python snakes"}, ["body"])
    found = await both_fields.asearch(("n",), query="python snakes", limit=3)
    assert [(i.key, round(i.score, 5)) for i in found] == [("2", 1.0), ("3", 1.0), ("1", 0.0)]


# Found a bug in abathur.search (vec0 reuses a deleted vector's slot); fixed there,
# with its own regression test in tests/unit/test_search.py.
async def test_an_updated_item_is_found_by_its_new_text(ours: AbathurStore) -> None:
    await ours.aput(("n",), "1", {"text": "gardening"})
    await ours.aput(("n",), "2", {"text": "python snakes"})
    assert [i.key for i in await ours.asearch(("n",), query="python snakes", limit=1)] == ["2"]
    await ours.aput(("n",), "1", {"text": "python snakes"})
    found = await ours.asearch(("n",), query="python snakes", limit=2)
    # Both now hold the same text: an exact tie, so their order is not specified.
    assert sorted((i.key, round(i.score, 5), i.value) for i in found) == [
        ("1", 1.0, {"text": "python snakes"}),
        ("2", 1.0, {"text": "python snakes"}),
    ]


@pytest.fixture(params=["in-memory", *(spec.name for spec in BACKENDS)])
async def both_fields(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BaseStore]:
    """LangGraph's in-memory store, then ours on each backend (tests/backends.py)."""
    index = {**INDEX, "fields": ["title"]}
    if request.param == "in-memory":
        yield InMemoryStore(index=index)
        return
    async with AbathurStore(handle(request.param, tmp_path, request).target, index=index) as store:
        yield store


async def test_json_paths_pick_nested_and_array_fields(ours: AbathurStore) -> None:
    value = {"meta": {"title": "gardening"}, "notes": [{"t": "python"}, {"t": "snakes"}]}
    await ours.aput(("n",), "1", value, index=["notes[*].t"])
    await ours.aput(("n",), "2", value, index=["meta.title"])
    found = await ours.asearch(("n",), query="python snakes", limit=2)
    assert [i.key for i in found] == ["1", "2"]
    assert found[1].score == pytest.approx(0.0, abs=1e-6)


async def test_without_an_index_config_a_query_is_ignored(ab: Abathur) -> None:
    # LangGraph's stores without an index config ignore the query: a filtered listing.
    for store in (InMemoryStore(), AbathurStore(ab)):
        await fill(store)
        found = await store.asearch(("docs",), query="python", filter={"topic": "food"})
        assert [(i.key, i.score) for i in found] == [("2", None), ("5", None)]


async def test_a_blank_query_is_no_query(both: BaseStore) -> None:
    await fill(both)
    found = await both.asearch(("docs",), query="", limit=2)
    assert [(i.key, i.score) for i in found] == [("1", None), ("2", None)]


async def test_search_by_meaning_with_abathurs_own_model(ab: Abathur) -> None:
    store = AbathurStore(ab, index={"fields": ["text"]})
    await store.aput(("users", "alice"), "drink", {"text": "Alice drinks green tea every morning"})
    await store.aput(("users", "alice"), "job", {"text": "Alice works as a civil engineer"})
    await store.aput(("users", "alice"), "pet", {"text": "Alice has a grey cat named Miso"})
    (hit,) = await store.asearch(("users", "alice"), query="what beverage does she like", limit=1)
    assert hit.key == "drink" and 0.2 < hit.score <= 1.0
    (hit,) = await store.asearch(("users", "alice"), query="her occupation", limit=1)
    assert hit.key == "job"


async def test_a_put_waits_for_its_vector_unless_told_not_to(backend: BackendHandle) -> None:
    embedder = as_embedder(toy_embed, dims=DIMS)
    async with backend.open(embedder=embedder, embed_worker=False) as ab:
        waiting = AbathurStore(ab, index={"fields": ["text"]})
        await waiting.aput(("docs",), "1", {"text": "python tutorial"})
        assert [i.key for i in await waiting.asearch(("docs",), query="python")] == ["1"]
        eager = AbathurStore(ab, index={"fields": ["text"]}, wait_for_vectors=False)
        await eager.aput(("docs",), "2", {"text": "python tutorial"})
        assert (await ab.embeddings.status()).queue_depth == 1
        assert [i.key for i in await eager.asearch(("docs",), query="python")] == ["1"]
        await ab.embeddings.drain()
        assert [i.key for i in await eager.asearch(("docs",), query="python")] == ["1", "2"]


async def test_what_is_embedded_is_the_memorys_value(ab: Abathur) -> None:
    store = AbathurStore(ab, index={"fields": ["title", "tags[*]"]})
    await store.aput(("n",), "k", {"title": "Trip", "tags": ["ski", "alps"], "body": "long text"})
    memory = await ab.memory.get(to_namespace(("n",)), "k")
    assert memory.value == "Trip\nski\nalps"
    assert memory.metadata["~index"] is True
    await store.aput(("n",), "k", {"title": "Trip"}, index=False)
    memory = await ab.memory.get(to_namespace(("n",)), "k")
    assert (memory.value, memory.metadata["~index"]) == ("", False)
    # The whole value, as LangGraph embeds it: JSON with sorted keys.
    whole = AbathurStore(ab, index={"dims": 384})
    await whole.aput(("n",), "w", {"b": 1, "a": "x"})
    assert (await ab.memory.get(to_namespace(("n",)), "w")).value == '{"a": "x", "b": 1}'


async def test_an_index_config_with_embed_records_that_embedder(backend: BackendHandle) -> None:
    async with AbathurStore(backend.target, index=INDEX) as store:
        await store.aput(("n",), "k", {"text": "hello"})
    async with backend.open(embedder=as_embedder(toy_embed, dims=DIMS)) as ab:
        status = await ab.embeddings.status()
        assert status.recorded_embedder == (
            "langchain:tests.embedders.toy_embed"  # the function's module and name
        )
        assert status.vectors == 1

    def other(texts: list[str]) -> list[list[float]]:
        return [[1.0] * DIMS for _ in texts]

    async with AbathurStore(backend.target, index={**INDEX, "embed": other}) as store:
        with pytest.raises(errors.EmbedderMismatchError):
            await store.aget(("n",), "k")


async def test_a_query_search_is_refused_past_1000_results(settled_store: AbathurStore) -> None:
    with pytest.raises(errors.InvalidInputError, match="1000") as ei:
        await settled_store.asearch(("docs",), query="python", limit=10, offset=995)
    assert ei.value.code == "invalid_input"


@pytest.fixture
async def settled_store(ab: Abathur) -> AbathurStore:
    store = AbathurStore(ab, index={"fields": ["text"]})
    await fill(store)
    await ab.embeddings.drain()
    return store


async def test_divergence_query_search_is_capped_at_1000_and_changes_nothing(
    ab: Abathur, settled_store: AbathurStore
) -> None:
    # abathur's search returns at most 1000 hits; LangGraph's stores page on
    # without a bound. A deeper page raises instead of coming back short.
    async with assert_unchanged(ab):
        with pytest.raises(errors.InvalidInputError):
            await settled_store.asearch(("docs",), query="python", limit=1, offset=1000)
    # Without a query there is no such bound.
    assert await settled_store.asearch(("docs",), limit=1, offset=1000) == []


async def test_divergence_items_not_indexed_are_never_found_by_query(both: BaseStore) -> None:
    # The in-memory store pads a short result with unembedded items (score
    # None); abathur, like LangGraph's SQLite store, finds by query only what
    # was embedded. Both still find them by filter.
    await both.aput(("n",), "1", {"text": "python tutorial"})
    await both.aput(("n",), "2", {"text": "python tutorial"}, index=False)
    await both.aput(("n",), "3", {"other": "no text field"})
    found = await both.asearch(("n",), query="python", limit=10)
    if isinstance(both, InMemoryStore):
        assert [(i.key, i.score is None) for i in found] == [
            ("1", False),
            ("2", True),
            ("3", True),
        ]
    else:
        assert [i.key for i in found] == ["1"]
    assert {i.key for i in await both.asearch(("n",), limit=10)} == {"1", "2", "3"}


async def test_divergence_an_item_has_one_vector_for_all_its_fields(backend: BackendHandle) -> None:
    # The in-memory store embeds each field (and each array element) apart
    # and scores an item by its best one; abathur embeds the fields' texts
    # joined, one vector per item: an item matching on one field of several
    # scores lower, one matching across fields higher.
    index = {**INDEX, "fields": ["title", "body"]}
    reference = InMemoryStore(index=index)
    async with AbathurStore(backend.target, index=index) as ours:
        for store in (reference, ours):
            await store.aput(("n",), "1", {"title": "python snakes", "body": "gardening tools"})
            await store.aput(("n",), "2", {"title": "python", "body": "snakes"})
        theirs = {i.key: i.score for i in await reference.asearch(("n",), query="python snakes")}
        mine = {i.key: i.score for i in await ours.asearch(("n",), query="python snakes")}
    assert theirs == pytest.approx({"1": 1.0, "2": 0.7071}, abs=1e-3)
    assert mine == pytest.approx({"1": 0.7071, "2": 1.0}, abs=1e-3)


async def test_divergence_the_key_is_embedded_with_the_value(backend: BackendHandle) -> None:
    # abathur embeds "<key>: <text>" (a key often says what a value is about);
    # LangGraph embeds the text alone. A key made of words moves the score.
    reference = InMemoryStore(index=INDEX)
    async with AbathurStore(backend.target, index=INDEX) as ours:
        for store in (reference, ours):
            await store.aput(("n",), "python", {"text": "gardening"})
        (theirs,) = await reference.asearch(("n",), query="python")
        (mine,) = await ours.asearch(("n",), query="python")
    assert theirs.score == pytest.approx(0.0)
    assert mine.score == pytest.approx(0.7071, abs=1e-3)


async def test_divergence_without_an_embedder_a_query_ranks_by_keyword(
    backend: BackendHandle,
) -> None:
    # A LangGraph store cannot have an index without an embedding model. An
    # abathur file may have none (embedder="none") or it may be down: search
    # then falls back to keyword ranking, and the hits carry no score.
    async with AbathurStore(backend.target, index={"fields": ["text"]}, embedder="none") as store:
        await fill(store)
        found = await store.asearch(("docs",), query="python programming", limit=10)
        assert {i.key for i in found} == {"1", "3", "4"}
        assert found[0].key in ("1", "4") and all(i.score is None for i in found)


async def test_a_batch_of_puts_is_embedded_together(ours: AbathurStore) -> None:
    await ours.abatch([PutOp(("docs",), k, v) for k, v in DOCS.items()])
    found = await ours.asearch(("docs",), query="cooking", limit=2)
    assert sorted(i.key for i in found) == ["2", "5"]


def down(texts: list[str]) -> list[list[float]]:
    raise ConnectionError("embedding service unreachable")


async def test_divergence_a_put_succeeds_while_the_embedder_is_down(backend: BackendHandle) -> None:
    # LangGraph's stores embed inside put, so a failing model fails the put.
    # abathur stores the item and queues its embedding (DESIGN.md: writes never
    # wait for an embedder); meanwhile a query ranks by keyword, with no score.
    index = {"dims": DIMS, "embed": down, "fields": ["text"]}
    with pytest.raises(ConnectionError):
        await InMemoryStore(index=index).aput(("n",), "1", {"text": "python tutorial"})
    async with AbathurStore(backend.target, index=index) as store:
        await store.aput(("n",), "1", {"text": "python tutorial"})
        await store.aput(("n",), "2", {"text": "pasta recipe"})
        assert (await store.aget(("n",), "1")).value == {"text": "python tutorial"}
        found = await store.asearch(("n",), query="python", limit=5)
        assert [(i.key, i.score) for i in found] == [("1", None)]
