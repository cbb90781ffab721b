"""AbathurStore against LangGraph's BaseStore contract (langgraph 1.2.22, checkpoint 4.3.2).

The contract is ``BaseStore``'s and the ops' docstrings and what LangGraph's
``InMemoryStore`` does; tests using ``both`` run the same calls against it and
ours. Deliberate differences are the ``test_divergence_*`` tests, each saying why.
Search by query, TTLs and graphs are in the sibling test_langgraph_*.py files.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

pytest.importorskip("langgraph.store.base", reason="the langgraph extra is not installed")

from hypothesis import given
from hypothesis import strategies as st
from langgraph.store.base import (
    BaseStore,
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    PutOp,
    SearchItem,
    SearchOp,
)
from langgraph.store.memory import InMemoryStore

from abathur import Abathur, errors
from abathur.integrations.langgraph import (
    MAX_NAMESPACES,
    AbathurStore,
    from_key,
    from_namespace,
    to_key,
    to_namespace,
)
from abathur.memory import check_namespace
from abathur.values import check_id
from tests.backends import BackendHandle
from tests.embedders import DIMS, toy_embed
from tests.helpers import assert_unchanged


@pytest.fixture
async def store(ab: Abathur) -> AbathurStore:
    # Built inside the test's event loop, where ``ab`` lives.
    return AbathurStore(ab)


@pytest.fixture(params=["in-memory", "abathur"])
async def both(request: pytest.FixtureRequest, ab: Abathur) -> BaseStore:
    return InMemoryStore() if request.param == "in-memory" else AbathurStore(ab)


@pytest.fixture
async def settled(ab: Abathur) -> AsyncIterator[Abathur]:
    """``ab``, for a test that snapshots it: embedding jobs are drained first."""
    await ab.embeddings.drain()
    yield ab


# --- get / put / delete -----------------------------------------------------------------------


async def test_a_put_item_is_got_back(both: BaseStore) -> None:
    before = datetime.now(UTC)
    await both.aput(("users", "alice"), "prefs", {"theme": "dark", "n": [1, {"x": None}]})
    item = await both.aget(("users", "alice"), "prefs")
    assert type(item) is Item
    assert item.value == {"theme": "dark", "n": [1, {"x": None}]}
    assert (item.namespace, item.key) == (("users", "alice"), "prefs")
    assert item.created_at.tzinfo is not None and before <= item.created_at <= item.updated_at
    assert item.dict()["namespace"] == ["users", "alice"]


async def test_a_missing_item_is_none(both: BaseStore) -> None:
    await both.aput(("users", "alice"), "prefs", {"theme": "dark"})
    assert await both.aget(("users", "alice"), "nope") is None
    assert await both.aget(("users",), "prefs") is None
    assert await both.aget(("users", "alice", "deeper"), "prefs") is None


async def test_a_put_replaces_the_value(both: BaseStore) -> None:
    await both.aput(("n",), "k", {"a": 1, "b": 2})
    first = await both.aget(("n",), "k")
    await both.aput(("n",), "k", {"c": 3})
    second = await both.aget(("n",), "k")
    assert second.value == {"c": 3}
    assert second.updated_at >= first.updated_at


async def test_delete_removes_and_deleting_nothing_is_fine(both: BaseStore) -> None:
    await both.aput(("n",), "k", {"a": 1})
    await both.adelete(("n",), "k")
    assert await both.aget(("n",), "k") is None
    await both.adelete(("n",), "k")
    await both.adelete(("never",), "k")
    assert await both.asearch(("n",)) == []


async def test_a_deleted_item_can_be_put_again(both: BaseStore) -> None:
    await both.aput(("n",), "k", {"a": 1})
    await both.adelete(("n",), "k")
    await both.aput(("n",), "k", {"a": 2})
    assert (await both.aget(("n",), "k")).value == {"a": 2}


async def test_divergence_a_returned_value_is_a_copy(both: BaseStore) -> None:
    # The in-memory store hands out the dict it holds, so changing a returned
    # value changes the store; abathur's values are decoded afresh on each read.
    await both.aput(("n",), "k", {"list": [1]})
    got = await both.aget(("n",), "k")
    got.value["list"].append(2)
    expected = [1, 2] if isinstance(both, InMemoryStore) else [1]
    assert (await both.aget(("n",), "k")).value == {"list": expected}


# --- batch --------------------------------------------------------------------------------------


def _shape(result: Any) -> Any:
    """A result without timestamps, comparable across stores."""
    if isinstance(result, Item):
        return (type(result).__name__, result.namespace, result.key, result.value)
    if isinstance(result, list):
        return [_shape(r) for r in result]
    return result


async def test_batch_results_follow_the_ops_and_reads_see_the_state_before_its_puts(
    both: BaseStore,
) -> None:
    await both.aput(("docs",), "a", {"v": 1})
    ops = [
        PutOp(("docs",), "a", {"v": 2}),
        GetOp(("docs",), "a"),
        PutOp(("docs", "x"), "b", {"v": 3}),
        SearchOp(("docs",)),
        ListNamespacesOp(),
        GetOp(("docs", "x"), "b"),
        PutOp(("docs",), "a", {"v": 4}),
    ]
    results = await both.abatch(ops)
    assert _shape(results) == [
        None,
        ("Item", ("docs",), "a", {"v": 1}),
        None,
        [("SearchItem", ("docs",), "a", {"v": 1})],
        [("docs",)],
        None,
        None,
    ]
    # Then the puts, the last one of a key winning.
    assert (await both.aget(("docs",), "a")).value == {"v": 4}
    assert (await both.aget(("docs", "x"), "b")).value == {"v": 3}


def test_the_sync_batch_of_a_store_is_the_same(tmp_path) -> None:
    in_memory = InMemoryStore()
    with AbathurStore(tmp_path / "s.db") as ours:
        for s in (in_memory, ours):
            s.put(("n",), "k", {"v": 1})
        ops = [GetOp(("n",), "k"), PutOp(("n",), "k", None), GetOp(("n",), "k")]
        assert _shape(ours.batch(ops)) == _shape(in_memory.batch(ops))
        assert ours.get(("n",), "k") is None and in_memory.get(("n",), "k") is None


async def test_a_batch_with_a_bad_op_changes_nothing(settled: Abathur) -> None:
    store = AbathurStore(settled)
    await store.aput(("n",), "keep", {"v": 1})
    await settled.embeddings.drain()
    async with assert_unchanged(settled):
        with pytest.raises(errors.InvalidInputError) as ei:
            await store.abatch(
                [PutOp(("n",), "keep", None), PutOp(("n",), "new", {"v": 2}), PutOp(("n",), "x", 1)]
            )
    assert ei.value.code == "invalid_input"


# --- namespaces and keys ------------------------------------------------------------------------


async def test_namespaces_with_colons_never_collide(store: AbathurStore) -> None:
    await store.aput(("a:b",), "k", {"v": "one label"})
    await store.aput(("a", "b"), "k", {"v": "two labels"})
    assert (await store.aget(("a:b",), "k")).value == {"v": "one label"}
    assert (await store.aget(("a", "b"), "k")).value == {"v": "two labels"}
    assert await store.alist_namespaces() == [("a", "b"), ("a:b",)]
    assert [i.namespace for i in await store.asearch(("a",))] == [("a", "b")]
    assert [i.namespace for i in await store.asearch(("a:b",))] == [("a:b",)]
    assert to_namespace(("a:b",)) != to_namespace(("a", "b"))


async def test_labels_and_keys_with_any_character_round_trip(store: AbathurStore) -> None:
    odd = [
        (("50%", " padded "), "key with spaces "),
        (("tab\there", "ünïcödé", "%3A"), ""),
        (("a::b", "*"), "user:42"),
        (("\x7f\x1b",), "%"),
    ]
    for namespace, key in odd:
        await store.aput(namespace, key, {"ns": list(namespace), "key": key})
    for namespace, key in odd:
        item = await store.aget(namespace, key)
        assert (item.namespace, item.key, item.value["key"]) == (namespace, key, key)
    listed = {(i.namespace, i.key) for i in await store.asearch((), limit=100)}
    assert listed == set(odd)
    assert sorted(await store.alist_namespaces()) == sorted(ns for ns, _ in odd)


labels = st.text(min_size=1, max_size=12)


@given(st.lists(labels, min_size=0, max_size=5), st.lists(labels, min_size=0, max_size=5))
def test_the_namespace_mapping_round_trips_and_is_injective(a: list[str], b: list[str]) -> None:
    encoded = to_namespace(tuple(a))
    assert check_namespace(encoded) == encoded
    assert from_namespace(encoded) == (tuple(a) if a else None)
    assert (to_namespace(tuple(b)) == encoded) == (a == b)
    # Segment-aware prefixes carry over: a's tuple prefixes are the string's segment prefixes.
    if a and b:
        is_prefix = tuple(a[: len(b)]) == tuple(b)
        assert (
            encoded == to_namespace(tuple(b)) or encoded.startswith(to_namespace(tuple(b)) + ":")
        ) == is_prefix


@given(st.text(max_size=40), st.text(max_size=40))
def test_the_key_mapping_round_trips_and_is_injective(a: str, b: str) -> None:
    encoded = to_key(a)
    assert check_id(encoded, "key") == encoded
    assert from_key(encoded) == a
    assert (to_key(b) == encoded) == (a == b)


async def test_items_are_stored_as_abathur_memories_under_the_root(
    ab: Abathur, store: AbathurStore
) -> None:
    await store.aput(("users", "a:b"), "k~", {"name": "x", "~odd": 1})
    (memory,) = await ab.memory.list("langgraph")
    assert (memory.namespace, memory.key, memory.type) == (
        "langgraph:users:a%3Ab",
        "k~",
        "semantic",
    )
    # No index config: nothing to embed, and the value's keys are in the metadata.
    assert memory.value == ""
    assert {k: v for k, v in memory.metadata.items() if not k.startswith("~") or k[1] == "~"} == {
        "name": "x",
        "~~odd": 1,
    }
    assert memory.metadata["~index"] is False and memory.metadata["~ttl"] is None
    # The history, tombstones and restore of abathur apply.
    await store.adelete(("users", "a:b"), "k~")
    await ab.memory.restore("langgraph:users:a%3Ab", "k~")
    assert (await store.aget(("users", "a:b"), "k~")).value == {"name": "x", "~odd": 1}


async def test_two_roots_share_a_file_without_seeing_each_other(ab: Abathur) -> None:
    first, second = AbathurStore(ab), AbathurStore(ab, root="other")
    await first.aput(("n",), "k", {"v": 1})
    assert await second.aget(("n",), "k") is None
    assert await second.alist_namespaces() == []
    assert await second.asearch(()) == []


async def test_memories_written_through_abathur_read_as_items(
    ab: Abathur, store: AbathurStore
) -> None:
    await ab.memory.put("langgraph:notes", "plain", "just text")
    await ab.memory.put("langgraph:notes", "obj", {"a": 1})
    assert (await store.aget(("notes",), "plain")).value == {"value": "just text"}
    assert [(i.key, i.value) for i in await store.asearch(("notes",))] == [
        ("obj", {"a": 1}),
        ("plain", {"value": "just text"}),
    ]


# --- list_namespaces ----------------------------------------------------------------------------

TREE = [
    ("a", "b", "c"),
    ("a", "b", "d", "e"),
    ("a", "b", "d", "i"),
    ("a", "b", "f"),
    ("a", "c", "f"),
    ("x", "b"),
    ("users", "alice", "v1"),
    ("users", "bob", "v1"),
    ("users", "bob", "v2"),
]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"prefix": ("a", "b"), "max_depth": 3},  # the docstring's example
        {"prefix": ("a",)},
        {"prefix": ("a", "b")},
        {"prefix": ("a", "b", "d", "e", "zz")},
        {"prefix": ("b",)},
        {"suffix": ("f",)},
        {"suffix": ("v1",)},
        {"suffix": ("b", "d", "*")},
        {"prefix": ("users", "*", "v1")},
        {"prefix": ("*", "b")},
        {"prefix": ("a",), "suffix": ("f",)},
        {"max_depth": 1},
        {"max_depth": 2},
        {"prefix": ("a", "b"), "max_depth": 1},
        {"suffix": ("f",), "max_depth": 2},
        {"limit": 3},
        {"limit": 3, "offset": 2},
        {"offset": 100},
        {"prefix": ("users",), "max_depth": 2, "limit": 1, "offset": 1},
    ],
)
async def test_list_namespaces_matches_the_in_memory_store(
    store: AbathurStore, kwargs: dict[str, Any]
) -> None:
    reference = InMemoryStore()
    for s in (reference, store):
        for namespace in TREE:
            await s.aput(namespace, "k", {"v": 1})
    expected = await reference.alist_namespaces(**kwargs)
    assert await store.alist_namespaces(**kwargs) == expected
    if kwargs == {"prefix": ("a", "b"), "max_depth": 3}:
        assert expected == [("a", "b", "c"), ("a", "b", "d"), ("a", "b", "f")]


async def test_list_namespaces_takes_match_conditions_directly(store: AbathurStore) -> None:
    for namespace in TREE:
        await store.aput(namespace, "k", {"v": 1})
    op = ListNamespacesOp(
        match_conditions=(
            MatchCondition("prefix", ("users",)),
            MatchCondition("suffix", ("v2",)),
        )
    )
    assert await store.abatch([op]) == [[("users", "bob", "v2")]]


async def test_list_namespaces_is_segment_aware(both: BaseStore) -> None:
    await both.aput(("user",), "k", {"v": 1})
    await both.aput(("users",), "k", {"v": 1})
    await both.aput(("user", "x"), "k", {"v": 1})
    assert await both.alist_namespaces(prefix=("user",)) == [("user",), ("user", "x")]
    assert await both.alist_namespaces(suffix=("x",)) == [("user", "x")]


async def test_divergence_list_namespaces_lists_only_namespaces_holding_items(
    both: BaseStore,
) -> None:
    # The in-memory store keeps a namespace once anything touched it (a delete,
    # even a get of a missing item); abathur, like LangGraph's SQL stores,
    # lists the namespaces that hold at least one live item.
    await both.aput(("a", "b"), "k", {"v": 1})
    await both.aput(("a", "c"), "k", {"v": 1})
    await both.adelete(("a", "c"), "k")
    await both.aget(("a", "d"), "k")
    listed = await both.alist_namespaces()
    if isinstance(both, InMemoryStore):
        assert listed == [("a", "b"), ("a", "c"), ("a", "d")]
    else:
        assert listed == [("a", "b")]


# --- search without a query: namespaces, filters, pages ----------------------------------------

ITEMS = [
    (("docs",), "1", {"kind": "note", "score": 4.5, "tags": ["a", "b"], "flag": True}),
    (("docs",), "2", {"kind": "note", "score": 3, "meta": {"lang": "en", "len": 2}}),
    (("docs",), "3", {"kind": "task", "score": 5, "owner": None}),
    (("docs", "deep"), "4", {"kind": "task", "score": 1.0, "meta": {"lang": "fr", "len": 1}}),
    (("docs", "deep"), "5", {"kind": "note", "score": 2, "name": "zed", "flag": False}),
    (("docsx",), "6", {"kind": "note", "score": 9}),
]


@pytest.fixture
async def filled(both: BaseStore) -> BaseStore:
    # Inserted in (namespace, key) order: the in-memory store's insertion
    # order is then abathur's order, and pages can be compared exactly.
    for namespace, key, value in ITEMS:
        await both.aput(namespace, key, value)
    return both


async def keys(store: BaseStore, prefix: tuple[str, ...] = ("docs",), **kw: Any) -> list[str]:
    found = await store.asearch(prefix, **kw)
    assert all(type(i) is SearchItem and i.score is None for i in found)
    return [i.key for i in found]


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (None, ["1", "2", "3", "4", "5"]),
        ({"kind": "note"}, ["1", "2", "5"]),
        ({"kind": {"$eq": "task"}}, ["3", "4"]),
        ({"kind": {"$ne": "task"}}, ["1", "2", "5"]),
        ({"score": {"$gt": 3}}, ["1", "3"]),
        ({"score": {"$gte": 3}}, ["1", "2", "3"]),
        ({"score": {"$lt": 3}}, ["4", "5"]),
        ({"score": {"$lte": 3}}, ["2", "4", "5"]),
        ({"score": {"$gte": 3, "$lt": 5}}, ["1", "2"]),
        ({"score": 3.0}, ["2"]),
        ({"score": 1}, ["4"]),
        ({"kind": "note", "score": {"$gt": 4}}, ["1"]),
        ({"tags": ["a", "b"]}, ["1"]),
        ({"tags": ["b", "a"]}, []),
        ({"meta": {"lang": "en"}}, ["2"]),
        ({"meta": {"len": {"$gt": 1}}}, ["2"]),
        ({"flag": True}, ["1"]),
        ({"flag": False}, ["5"]),
        ({"owner": None}, ["1", "2", "3", "4", "5"]),
        ({"name": {"$ne": "zed"}}, ["1", "2", "3", "4"]),
        ({"missing": "x"}, []),
    ],
)
async def test_filters_match_the_in_memory_store(
    filled: BaseStore, flt: dict[str, Any] | None, expected: list[str]
) -> None:
    assert await keys(filled, filter=flt) == expected


async def test_search_is_segment_aware_and_covers_deeper_namespaces(filled: BaseStore) -> None:
    assert await keys(filled, ("docs", "deep")) == ["4", "5"]
    assert await keys(filled, ("docsx",)) == ["6"]
    assert await keys(filled, ()) == ["1", "2", "3", "4", "5", "6"]
    assert await keys(filled, ("doc",)) == []
    found = await filled.asearch(("docs", "deep"))
    assert (found[0].namespace, found[0].value) == (ITEMS[3][0], ITEMS[3][2])


@pytest.mark.parametrize(("limit", "offset"), [(2, 0), (2, 2), (2, 4), (10, 1), (0, 0), (3, 10)])
async def test_limit_and_offset_page_like_the_in_memory_store(
    filled: BaseStore, limit: int, offset: int
) -> None:
    everything = ["1", "2", "3", "4", "5", "6"]
    assert await keys(filled, (), limit=limit, offset=offset) == everything[offset : offset + limit]
    notes = ["1", "2", "5", "6"]
    assert (
        await keys(filled, (), filter={"kind": "note"}, limit=limit, offset=offset)
        == notes[offset : offset + limit]
    )
    # A filter abathur cannot apply in SQL is counted here, pages stay exact.
    big = ["1", "3", "6"]
    assert (
        await keys(filled, (), filter={"score": {"$gt": 4}}, limit=limit, offset=offset)
        == big[offset : offset + limit]
    )


async def test_pages_stay_exact_past_one_abathur_page(store: AbathurStore) -> None:
    await store.abatch(
        [PutOp(("many",), f"{i:04}", {"i": i, "even": i % 2 == 0}) for i in range(250)]
    )
    found = await store.asearch(("many",), filter={"i": {"$gte": 10}}, limit=100, offset=150)
    assert [i.value["i"] for i in found] == list(range(160, 250))
    evens = await store.asearch(("many",), filter={"even": True}, limit=20, offset=110)
    assert [i.value["i"] for i in evens] == list(range(220, 250, 2))


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "error", "code"),
    [
        (PutOp(("n",), "k", ["not", "a", "dict"]), errors.InvalidInputError, "invalid_input"),
        (PutOp(("n",), "k", {"s": {1, 2}}), errors.ValueNotSerializableError, "invalid_json"),
        (PutOp(("n",), "k", {"x": float("nan")}), errors.ValueNotSerializableError, "invalid_json"),
        (PutOp(("n",), "k", {"v": "x" * 2_000_000}), errors.ValueTooLargeError, "value_too_large"),
        (PutOp(("n",), "k", {"v": 1}, ttl=0), errors.InvalidInputError, "invalid_input"),
        (PutOp(("n",), "k", {"v": 1}, ttl=-1.5), errors.InvalidInputError, "invalid_input"),
        (PutOp(("n",), "k", {"v": 1}, ttl="5"), errors.InvalidInputError, "invalid_input"),
        (PutOp(("n",), "k", {"v": 1}, index=True), errors.InvalidInputError, "invalid_input"),
        (PutOp(("n",), "k", {"v": 1}, index=[""]), errors.InvalidInputError, "invalid_input"),
        (PutOp((), "k", {"v": 1}), errors.InvalidNamespaceError, "memory.invalid_namespace"),
        (PutOp(("n",), 7, {"v": 1}), errors.InvalidInputError, "invalid_input"),
        (PutOp(("n",), "k" * 300, {"v": 1}), errors.InvalidIdError, "invalid_id"),
        (
            PutOp(("n" * 600,), "k", {"v": 1}),
            errors.InvalidNamespaceError,
            "memory.invalid_namespace",
        ),
        (GetOp("n", "k"), errors.InvalidNamespaceError, "memory.invalid_namespace"),
        (SearchOp(("n",), {"v": {"$in": [1]}}), errors.InvalidInputError, "invalid_input"),
        (SearchOp(("n",), {"v": {"$gt": None}}), errors.InvalidInputError, "invalid_input"),
        (SearchOp(("n",), {"v": {"$gt": True}}), errors.InvalidInputError, "invalid_input"),
        (
            SearchOp(("n",), {"v": {"a": {"$regex": "x"}}}),
            errors.InvalidInputError,
            "invalid_input",
        ),
        (SearchOp(("n",), {"v": {1, 2}}), errors.InvalidInputError, "invalid_input"),
        (SearchOp(("n",), ["not a dict"]), errors.InvalidInputError, "invalid_input"),
        (SearchOp(("n",), limit=-1), errors.InvalidInputError, "invalid_input"),
        (SearchOp(("n",), offset=-1), errors.InvalidInputError, "invalid_input"),
        (SearchOp(("n",), query=5), errors.InvalidInputError, "invalid_input"),
        (ListNamespacesOp(max_depth=0), errors.InvalidInputError, "invalid_input"),
        (ListNamespacesOp(limit=-1), errors.InvalidInputError, "invalid_input"),
        (
            ListNamespacesOp(match_conditions=(MatchCondition("middle", ("a",)),)),
            errors.InvalidInputError,
            "invalid_input",
        ),
        ("not an op", errors.InvalidInputError, "invalid_input"),
    ],
)
async def test_bad_ops_raise_typed_errors_and_change_nothing(
    settled: Abathur, op: Any, error: type[errors.AbathurError], code: str
) -> None:
    store = AbathurStore(settled)
    async with assert_unchanged(settled):
        with pytest.raises(error) as ei:
            await store.abatch([op])
    assert ei.value.code == code


@pytest.mark.parametrize("namespace", [("a.b",), ("",), ("a", ""), ("nul\x00",), ("a", 1)])
async def test_bad_labels_raise_langgraphs_error_and_change_nothing(
    settled: Abathur, namespace: tuple[Any, ...]
) -> None:
    store = AbathurStore(settled)
    async with assert_unchanged(settled):
        for op in (PutOp(namespace, "k", {"v": 1}), GetOp(namespace, "k"), SearchOp(namespace)):
            with pytest.raises(InvalidNamespaceError):
                await store.abatch([op])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"index": ["text"]}, "IndexConfig"),
        ({"index": {"fields": "text"}}, "list of non-empty JSON paths"),
        ({"index": {"dims": 384, "ann_index_config": {}}}, "not supported"),
        ({"index": {"distance_type": "l2"}}, "cosine"),
        ({"index": {"embed": toy_embed}}, "needs 'dims'"),
        ({"index": {"dims": 0}}, "index dims"),
        ({"ttl": {"default_ttl": 0}}, "default_ttl"),
        ({"ttl": {"refresh_on_read": "yes"}}, "refresh_on_read"),
        ({"ttl": {"sweep": 1}}, "not supported"),
        ({"root": "a:b"}, "single segment"),
        ({"wait_for_vectors": 1}, "wait_for_vectors"),
        ({"synchronous": "SOMETIMES"}, "synchronous"),
    ],
)
def test_bad_configuration_is_refused_at_construction(
    tmp_path, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(errors.InvalidInputError, match=message) as ei:
        AbathurStore(tmp_path / "x.db", **kwargs)
    assert ei.value.code in ("invalid_input", "memory.invalid_namespace")
    assert not (tmp_path / "x.db").exists()


def test_db_must_be_an_abathur_or_a_path() -> None:
    with pytest.raises(errors.InvalidInputError, match="Abathur or a path"):
        AbathurStore(42)  # type: ignore[arg-type]


async def test_an_open_abathur_takes_no_settings_and_no_embed(ab: Abathur) -> None:
    with pytest.raises(errors.InvalidInputError, match="already open"):
        AbathurStore(ab, synchronous="FULL")
    with pytest.raises(errors.InvalidInputError, match="as_embedder"):
        AbathurStore(ab, index={"dims": DIMS, "embed": toy_embed})
    with pytest.raises(errors.InvalidInputError, match="384 dims"):
        AbathurStore(ab, index={"dims": 1536})


# --- divergences --------------------------------------------------------------------------------


async def test_divergence_filters_compare_json_types(filled: BaseStore) -> None:
    # The in-memory store compares with Python's ==, so 1 matches True and 1.0;
    # abathur compares JSON values like PostgreSQL's jsonb: true is not 1.
    found = await keys(filled, filter={"flag": 1})
    assert found == (["1"] if isinstance(filled, InMemoryStore) else [])
    assert await keys(filled, filter={"flag": True}) == ["1"]


async def test_divergence_range_filters_compare_strings_and_skip_other_types(
    filled: BaseStore,
) -> None:
    # The in-memory store converts both sides with float() and raises on a
    # string or a missing field; abathur compares two numbers or two strings
    # and treats anything else as not matching.
    if isinstance(filled, InMemoryStore):
        with pytest.raises((TypeError, ValueError)):
            await filled.asearch(("docs",), filter={"name": {"$gt": "a"}})
    else:
        assert await keys(filled, filter={"name": {"$gt": "a"}}) == ["5"]
        assert await keys(filled, filter={"kind": {"$lt": 5}}) == []


async def test_divergence_search_without_a_query_is_ordered_by_namespace_and_key(
    both: BaseStore,
) -> None:
    # The in-memory store returns insertion order, LangGraph's SQL stores the
    # newest update first; abathur returns (namespace, key) order, which is
    # stable from page to page whatever is written meanwhile.
    await both.aput(("n",), "b", {"v": 1})
    await both.aput(("n",), "a", {"v": 2})
    await both.aput(("n", "z"), "c", {"v": 3})
    await both.aput(("m",), "d", {"v": 4})
    order = await keys(both, ())
    assert order == (
        ["b", "a", "c", "d"] if isinstance(both, InMemoryStore) else ["d", "a", "b", "c"]
    )


async def test_divergence_an_update_keeps_created_at(both: BaseStore) -> None:
    # The in-memory (and SQLite) store stamps created_at on every put; abathur
    # keeps the first put's time until the item is deleted, as PostgresStore does.
    await both.aput(("n",), "k", {"v": 1})
    first = await both.aget(("n",), "k")
    await both.aput(("n",), "k", {"v": 2})
    second = await both.aget(("n",), "k")
    assert second.updated_at > first.updated_at
    if isinstance(both, InMemoryStore):
        assert second.created_at > first.created_at
    else:
        assert second.created_at == first.created_at
        await both.adelete(("n",), "k")
        await both.aput(("n",), "k", {"v": 3})
        assert (await both.aget(("n",), "k")).created_at > first.created_at


async def test_divergence_values_must_be_json(both: BaseStore) -> None:
    # The in-memory store keeps any Python object; abathur stores JSON (as
    # LangGraph's SQL stores do), and refuses what JSON cannot hold rather than
    # changing it. A tuple comes back as a list.
    when = datetime(2026, 1, 1, tzinfo=UTC)
    if isinstance(both, InMemoryStore):
        await both.aput(("n",), "k", {"when": when, "pair": (1, 2)})
        assert (await both.aget(("n",), "k")).value == {"when": when, "pair": (1, 2)}
        return
    with pytest.raises(errors.ValueNotSerializableError):
        await both.aput(("n",), "k", {"when": when})
    await both.aput(("n",), "k", {"pair": (1, 2)})
    assert (await both.aget(("n",), "k")).value == {"pair": [1, 2]}


async def test_divergence_keys_longer_than_256_characters_are_refused(both: BaseStore) -> None:
    # abathur's ids are at most 256 characters (escaped); LangGraph sets no limit.
    long_key = "k" * 257
    if isinstance(both, InMemoryStore):
        await both.aput(("n",), long_key, {"v": 1})
        return
    with pytest.raises(errors.InvalidIdError):
        await both.aput(("n",), long_key, {"v": 1})


@pytest.mark.slow
async def test_divergence_list_namespaces_sorts_through_at_most_10000_namespaces(
    backend: BackendHandle,
) -> None:
    # The in-memory and SQL stores list any number of namespaces. abathur's
    # namespace listing returns at most 10,000, and LangGraph's tuple order is
    # not abathur's string order, so past that a listing cannot be paged
    # correctly: it raises and asks for a narrower prefix or a max_depth.
    async with backend.open(embedder="none") as ab:
        for i in range(MAX_NAMESPACES):
            await ab.memory.put(f"langgraph:many:{i}", "k", "")
        store = AbathurStore(ab)
        with pytest.raises(errors.InvalidInputError, match="longer prefix"):
            await store.alist_namespaces(prefix=("many",))
        assert await store.alist_namespaces(prefix=("many",), max_depth=1) == [("many",)]


async def test_divergence_ttl_is_supported(both: BaseStore) -> None:
    # The in-memory store has no TTL and refuses one; abathur expires items
    # (see test_langgraph_ttl.py).
    if isinstance(both, InMemoryStore):
        with pytest.raises(NotImplementedError):
            await both.aput(("n",), "k", {"v": 1}, ttl=5)
        return
    await both.aput(("n",), "k", {"v": 1}, ttl=5)
    assert (await both.aget(("n",), "k")).value == {"v": 1}
