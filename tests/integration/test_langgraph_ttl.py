"""AbathurStore's TTLs, as LangGraph defines them: minutes, refreshed by reads.

LangGraph's ``InMemoryStore`` has no TTL (test_divergence_ttl_is_supported),
so these follow ``BaseStore``'s and ``TTLConfig``'s docstrings (and what
LangGraph's SQL stores do). They wait for real time to pass: TTLs of a second
or two, with margins of most of a second.
"""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("langgraph.store.base", reason="the langgraph extra is not installed")

from abathur import Abathur
from abathur.integrations.langgraph import REFRESH_STEP, AbathurStore, to_namespace

SECOND = 1 / 60  # in LangGraph's unit, minutes


async def visible(store: AbathurStore, ns: tuple[str, ...] = ("n",), key: str = "k") -> bool:
    """Whether every read path returns the item (without refreshing it)."""
    got = await store.aget(ns, key, refresh_ttl=False)
    listed = [i.key for i in await store.asearch(ns, refresh_ttl=False)]
    namespaces = await store.alist_namespaces(prefix=ns)
    paths = {got is not None, key in listed, ns in namespaces}
    assert len(paths) == 1, "the read paths disagree"
    return paths.pop()


@pytest.mark.slow
async def test_an_expired_item_is_never_returned(ab: Abathur) -> None:
    store = AbathurStore(ab, index={"fields": ["text"]})
    # First, so loading the embedding model is not part of the item's second.
    await store.aput(("m",), "stays", {"text": "a lasting fact"})
    await store.aput(("n",), "k", {"text": "a short-lived fact"}, ttl=1.0 * SECOND)
    assert await visible(store)
    found = await store.asearch((), query="short-lived fact", limit=2)
    assert found[0].key == "k"
    await asyncio.sleep(1.2)
    assert not await visible(store)
    found = await store.asearch((), query="short-lived fact", limit=2)
    assert [i.key for i in found] == ["stays"]


@pytest.mark.slow
async def test_a_read_moves_the_expiry_and_refresh_ttl_false_does_not(ab: Abathur) -> None:
    store = AbathurStore(ab)
    await store.aput(("n",), "k", {"v": 1}, ttl=2.0 * SECOND)
    await store.aput(("n",), "untouched", {"v": 2}, ttl=2.0 * SECOND)
    await asyncio.sleep(1.2)
    assert await store.aget(("n",), "k") is not None  # refreshes: now expires at ~3.2 s
    assert await store.aget(("n",), "untouched", refresh_ttl=False) is not None
    await asyncio.sleep(1.2)  # 2.4 s: past the first expiry
    assert await visible(store, key="k")
    assert await store.aget(("n",), "untouched", refresh_ttl=False) is None
    await asyncio.sleep(1.2)  # 3.6 s
    assert not await visible(store, key="k")


@pytest.mark.slow
async def test_search_refreshes_what_it_returns(ab: Abathur) -> None:
    store = AbathurStore(ab, index={"fields": ["text"]})
    await store.aput(("warm",), "up", {"text": "loads the embedding model"})
    await store.aput(("n",), "by-filter", {"text": "tea", "kind": "a"}, ttl=2.0 * SECOND)
    await store.aput(("n",), "by-query", {"text": "coffee", "kind": "b"}, ttl=2.0 * SECOND)
    await asyncio.sleep(1.2)
    assert [i.key for i in await store.asearch(("n",), filter={"kind": "a"})] == ["by-filter"]
    found = await store.asearch(("n",), query="coffee", filter={"kind": "b"})
    assert [i.key for i in found] == ["by-query"]
    await asyncio.sleep(1.2)
    assert await visible(store, key="by-filter")
    assert await visible(store, key="by-query")


@pytest.mark.slow
async def test_the_ttl_config_sets_defaults(ab: Abathur) -> None:
    store = AbathurStore(ab, ttl={"default_ttl": 2.0 * SECOND, "refresh_on_read": False})
    await store.aput(("n",), "k", {"v": 1})  # default TTL
    await store.aput(("n",), "forever", {"v": 1}, ttl=None)  # explicitly none
    await asyncio.sleep(1.2)
    assert await store.aget(("n",), "k") is not None  # refresh_on_read=False: not moved
    await asyncio.sleep(1.2)
    assert await store.aget(("n",), "k") is None
    assert await store.aget(("n",), "forever") is not None


async def test_divergence_a_refresh_is_a_new_version_at_most_once_per_1_percent_of_the_ttl(
    ab: Abathur,
) -> None:
    # LangGraph's SQL stores move expires_at in place on every read. abathur's
    # public API writes a version to move it (history and audit show it), so
    # a read moves it only when that gains 1% of the TTL or more: an item read
    # in a loop gains a version per 1% of its TTL, not one per read, and may
    # expire up to 1% of its TTL early. updated_at is LangGraph's, unmoved.
    store = AbathurStore(ab)
    await store.aput(("n",), "k", {"v": 1}, ttl=10.0)
    first = await store.aget(("n",), "k")
    for _ in range(5):
        await store.aget(("n",), "k")
    # Reads a moment after the put would move the expiry by < 1% of 10 minutes: no write.
    versions = await ab.memory.history(to_namespace(("n",)), "k")
    assert len(versions) == 1 and REFRESH_STEP == 0.01
    await store.aput(("n",), "short", {"v": 1}, ttl=1.0)
    await asyncio.sleep(0.7)  # > 1% of a minute, and the next read comes well within 0.6 s
    before = await store.aget(("n",), "short")
    after = await store.aget(("n",), "short")
    versions = await ab.memory.history(to_namespace(("n",)), "short")
    assert len(versions) == 2
    assert versions[1].expires_at > versions[0].expires_at
    assert (before.updated_at, before.created_at) == (after.updated_at, after.created_at)
    assert after.updated_at == first.updated_at.__class__.fromtimestamp(
        versions[0].metadata["~updated"], tz=first.updated_at.tzinfo
    )


async def test_a_put_without_ttl_removes_the_expiry(ab: Abathur) -> None:
    store = AbathurStore(ab)
    await store.aput(("n",), "k", {"v": 1}, ttl=1.0)
    await store.aput(("n",), "k", {"v": 2})
    memory = await ab.memory.get(to_namespace(("n",)), "k")
    assert memory.expires_at is None and memory.metadata["~ttl"] is None
