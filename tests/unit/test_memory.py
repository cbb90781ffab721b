"""MemoryService: versions, optimistic concurrency, segment-aware prefixes, TTL on
every read path, tombstones, consolidation, and bad input that changes nothing."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from abathur import (
    Abathur,
    InvalidIdError,
    InvalidInputError,
    InvalidMemoryTypeError,
    InvalidNamespaceError,
    MemoryNotFoundError,
    MemoryRef,
    ValueNotSerializableError,
    ValueTooLargeError,
    VersionConflictError,
)
from abathur.backends.sqlite.memories import SQL_CURRENT_MEMORY, SQL_LIST_PREFIX, list_params
from tests.backends import BACKENDS, BackendHandle, TestBackend, handle
from tests.helpers import MemoryClock, assert_unchanged

TTL = 0.05  # seconds; expire() moves the memory service's clock past it
_clock: list[MemoryClock] = []


@pytest.fixture(autouse=True)
def _use_memory_clock(memory_clock: MemoryClock) -> Iterator[None]:
    _clock.append(memory_clock)
    yield
    _clock.clear()


async def expire() -> None:
    _clock[0].advance(TTL * 2)


async def audit_actions(ab: Abathur) -> list[tuple[str, str, int]]:
    records = await ab.audit.records(entity="memory", limit=1000)
    return [(r.action, r.entity_id, r.detail["version"]) for r in records]


def refs(memories: list) -> list[tuple[str, str]]:
    return [(m.namespace, m.key) for m in memories]


# --------------------------------------------------------------------------- put / get


async def test_put_then_get_returns_the_version_written(ab: Abathur) -> None:
    m = await ab.memory.put(
        "user:alice:preferences", "language", {"value": "French"},
        type="procedural", metadata={"source": "chat"},
    )
    assert (m.namespace, m.key, m.version, m.status) == (
        "user:alice:preferences", "language", 1, "live")
    assert (m.value, m.type, m.metadata) == ({"value": "French"}, "procedural", {"source": "chat"})
    assert m.created_at == m.updated_at and m.expires_at is None and m.superseded_by is None
    assert await ab.memory.get("user:alice:preferences", "language") == m


async def test_defaults_and_json_round_trip(ab: Abathur) -> None:
    m = await ab.memory.put("ns", "k", (1, "é", None, {"x": [True]}))
    assert (m.type, m.metadata) == ("semantic", {})
    assert m.value == [1, "é", None, {"x": [True]}]  # what comes back is what get returns
    assert (await ab.memory.get("ns", "k")).value == m.value


async def test_get_absent_is_none(ab: Abathur) -> None:
    assert await ab.memory.get("user:alice", "nothing") is None


async def test_versions_count_up_and_created_at_is_version_one(ab: Abathur) -> None:
    first = await ab.memory.put("ns", "k", "a")
    second = await ab.memory.put("ns", "k", "b")
    third = await ab.memory.put("ns", "k", "c", type="episodic")
    assert [first.version, second.version, third.version] == [1, 2, 3]
    assert third.created_at == first.created_at < second.updated_at < third.updated_at
    current = await ab.memory.get("ns", "k")
    assert (current.version, current.value, current.type) == (3, "c", "episodic")
    assert current.created_at == first.created_at


async def test_versions_keep_counting_after_delete_and_expiry(ab: Abathur) -> None:
    await ab.memory.put("ns", "k", 1)
    await ab.memory.delete("ns", "k")  # v2
    again = await ab.memory.put("ns", "k", 3)
    assert again.version == 3
    await ab.memory.put("ns", "k", 4, ttl=TTL)
    await expire()
    after_expiry = await ab.memory.put("ns", "k", 5)
    assert after_expiry.version == 5
    assert [m.version for m in await ab.memory.history("ns", "k")] == [1, 2, 3, 4, 5]


async def test_a_put_without_ttl_clears_an_earlier_ttl(ab: Abathur) -> None:
    await ab.memory.put("ns", "k", 1, ttl=TTL)
    m = await ab.memory.put("ns", "k", 2)
    assert m.expires_at is None
    await expire()
    assert (await ab.memory.get("ns", "k")).value == 2


async def test_ttl_sets_expires_at(ab: Abathur) -> None:
    m = await ab.memory.put("ns", "k", 1, ttl=3600)
    assert m.expires_at == pytest.approx(m.updated_at + 3600)


# --------------------------------------------------------------------------- expected_version


async def test_expected_version_matching_writes(ab: Abathur) -> None:
    m = await ab.memory.put("ns", "k", "a", expected_version=0)
    m = await ab.memory.put("ns", "k", "b", expected_version=m.version)
    assert m.version == 2


async def test_stale_expected_version_conflicts_and_changes_nothing(ab: Abathur) -> None:
    await ab.memory.put("ns", "k", "a")
    await ab.memory.put("ns", "k", "b")
    async with assert_unchanged(ab):
        with pytest.raises(VersionConflictError) as ei:
            await ab.memory.put("ns", "k", "c", expected_version=1)
    err = ei.value
    assert (err.code, err.retryable, err.expected, err.actual) == (
        "memory.version_conflict", True, 1, 2)
    assert "'ns'/'k'" in str(err) and "version 2" in str(err)


async def test_expected_version_zero_is_create_only(ab: Abathur) -> None:
    await ab.memory.put("ns", "k", "first", expected_version=0)
    async with assert_unchanged(ab):
        with pytest.raises(VersionConflictError) as ei:
            await ab.memory.put("ns", "k", "second", expected_version=0)
    assert (ei.value.code, ei.value.expected, ei.value.actual) == (
        "memory.version_conflict", 0, 1)
    assert (await ab.memory.get("ns", "k")).value == "first"


async def test_expected_version_on_a_memory_that_never_existed(ab: Abathur) -> None:
    async with assert_unchanged(ab):
        with pytest.raises(VersionConflictError) as ei:
            await ab.memory.put("ns", "k", "x", expected_version=3)
    assert (ei.value.code, ei.value.actual) == ("memory.version_conflict", None)
    assert "does not exist" in str(ei.value)


async def test_create_only_works_again_once_the_memory_reads_as_absent(ab: Abathur) -> None:
    await ab.memory.put("ns", "deleted", 1)
    await ab.memory.delete("ns", "deleted")
    assert (await ab.memory.put("ns", "deleted", 2, expected_version=0)).version == 3
    await ab.memory.put("ns", "expired", 1, ttl=TTL)
    await expire()
    assert (await ab.memory.put("ns", "expired", 2, expected_version=0)).version == 2


# --------------------------------------------------------------------------- bad input

BAD_NAMESPACES = [
    ("", "must not be empty"),
    ("user::x", "namespace 'user::x' has an empty segment"),
    (":x", "has an empty segment"),
    ("x:", "has an empty segment"),
    ("a: b", "segment ' b' with leading or trailing whitespace"),
    ("a:b ", "segment 'b ' with leading or trailing whitespace"),
    (" ", "with leading or trailing whitespace"),
    ("a:\tb", "control character"),
    ("a\nb", "control character"),
    ("a\x85b", "control character"),
    ("x" * 513, "the limit is 512"),
    (5, "must be a string, got int"),
    (None, "must be a string, got NoneType"),
]


@pytest.mark.parametrize(("namespace", "message"), BAD_NAMESPACES)
async def test_put_rejects_bad_namespace(ab: Abathur, namespace, message) -> None:
    async with assert_unchanged(ab):
        with pytest.raises(InvalidNamespaceError) as ei:
            await ab.memory.put(namespace, "k", 1)
    assert ei.value.code == "memory.invalid_namespace"
    assert message in str(ei.value)


async def test_a_512_character_namespace_is_fine(ab: Abathur) -> None:
    namespace = ":".join(["x" * 15] * 32)
    assert len(namespace) == 511
    await ab.memory.put(namespace + "y", "k", 1)
    assert (await ab.memory.get(namespace + "y", "k")).value == 1


@pytest.mark.parametrize(
    "call",
    [
        lambda ab: ab.memory.get("a::b", "k"),
        lambda ab: ab.memory.history("a::b", "k"),
        lambda ab: ab.memory.list("a::b"),
        lambda ab: ab.memory.delete("a::b", "k"),
        lambda ab: ab.memory.restore("a::b", "k"),
        lambda ab: ab.memory.namespaces("a::b"),
        lambda ab: ab.memory.consolidate("a::b"),
        lambda ab: ab.memory.consolidate("a::b", dry_run=True),
    ],
    ids=["get", "history", "list", "delete", "restore", "namespaces", "consolidate", "dry_run"],
)
async def test_every_method_rejects_bad_namespace(ab: Abathur, call) -> None:
    await ab.memory.put("a:b", "k", 1)
    async with assert_unchanged(ab):
        with pytest.raises(InvalidNamespaceError) as ei:
            await call(ab)
    assert ei.value.code == "memory.invalid_namespace"
    assert "empty segment" in str(ei.value)


@pytest.mark.parametrize("key", ["", " k", "k ", "a\nb", "x" * 257, 7, None])
@pytest.mark.parametrize("method", ["put", "get", "history", "delete", "restore"])
async def test_every_method_rejects_bad_key(ab: Abathur, method, key) -> None:
    args = ("ns", key, 1) if method == "put" else ("ns", key)
    async with assert_unchanged(ab):
        with pytest.raises(InvalidIdError) as ei:
            await getattr(ab.memory, method)(*args)
    assert ei.value.code == "invalid_id"
    assert "memory key" in str(ei.value)


@pytest.mark.parametrize("bad_type", ["fact", "Semantic", "", None, 3])
async def test_bad_memory_type(ab: Abathur, bad_type) -> None:
    async with assert_unchanged(ab):
        with pytest.raises(InvalidMemoryTypeError) as ei:
            await ab.memory.put("ns", "k", 1, type=bad_type)
    assert ei.value.code == "memory.invalid_type"
    assert repr(bad_type) in str(ei.value) and "semantic, episodic, procedural" in str(ei.value)
    async with assert_unchanged(ab):
        with pytest.raises(InvalidMemoryTypeError) as ei:
            await ab.memory.list("ns", type="fact")
    assert ei.value.code == "memory.invalid_type"


@pytest.mark.parametrize(
    ("kwargs", "error", "code", "message"),
    [
        ({"value": {1, 2}}, ValueNotSerializableError, "invalid_json", "memory value"),
        ({"value": float("nan")}, ValueNotSerializableError, "invalid_json", "memory value"),
        ({"value": {1: "a"}}, ValueNotSerializableError, "invalid_json", "non-string key"),
        ({"metadata": {"a": object()}}, ValueNotSerializableError, "invalid_json", "metadata"),
        ({"metadata": {2: "a"}}, ValueNotSerializableError, "invalid_json", "metadata"),
        ({"metadata": ["a"]}, InvalidInputError, "invalid_input", "metadata must be a dict"),
        ({"metadata": "a"}, InvalidInputError, "invalid_input", "got str"),
        ({"ttl": 0}, InvalidInputError, "invalid_input", "positive"),
        ({"ttl": -1.5}, InvalidInputError, "invalid_input", "positive"),
        ({"ttl": float("inf")}, InvalidInputError, "invalid_input", "finite"),
        ({"ttl": float("nan")}, InvalidInputError, "invalid_input", "finite"),
        ({"ttl": True}, InvalidInputError, "invalid_input", "got bool"),
        ({"ttl": "60"}, InvalidInputError, "invalid_input", "got str"),
        ({"expected_version": -1}, InvalidInputError, "invalid_input", ">= 0"),
        ({"expected_version": True}, InvalidInputError, "invalid_input", "got bool"),
        ({"expected_version": 1.0}, InvalidInputError, "invalid_input", "got float"),
        ({"expected_version": "1"}, InvalidInputError, "invalid_input", "got str"),
    ],
)
async def test_put_rejects_bad_arguments(ab: Abathur, kwargs, error, code, message) -> None:
    await ab.memory.put("ns", "k", "existing")
    args = {"value": "v", **kwargs}
    value = args.pop("value")
    async with assert_unchanged(ab):
        with pytest.raises(error) as ei:
            await ab.memory.put("ns", "k", value, **args)
    assert ei.value.code == code
    assert message in str(ei.value)


async def test_put_rejects_a_value_over_the_size_limit(backend: BackendHandle) -> None:
    # No worker: its claim of the first put's job would write between the snapshots.
    async with backend.open(max_value_bytes=100, embed_worker=False) as ab:
        await ab.memory.put("ns", "k", "x" * 90)
        async with assert_unchanged(ab):
            with pytest.raises(ValueTooLargeError) as ei:
                await ab.memory.put("ns", "k", "x" * 120)
        assert ei.value.code == "value_too_large" and "limit is 100" in str(ei.value)
        async with assert_unchanged(ab):
            with pytest.raises(ValueTooLargeError) as ei:
                await ab.memory.put("ns", "k", 1, metadata={"m": "x" * 120})
        assert ei.value.code == "value_too_large" and "metadata" in str(ei.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 0}, "limit must be between 1 and 10000"),
        ({"limit": 10_001}, "limit must be between 1 and 10000"),
        ({"limit": True}, "got bool"),
        ({"limit": 1.5}, "got float"),
        ({"offset": -1}, "offset must be >= 0"),
        ({"offset": None}, "got NoneType"),
        ({"filter": ["source"]}, "filter must be a dict"),
        ({"filter": {"tags": ["a"]}}, "must be a str, int, float, bool or None, got list"),
        ({"filter": {"nested": {"a": 1}}}, "got dict"),
        ({"filter": {"x": float("nan")}}, "must be finite"),
        ({"filter": {'a"b': 1}}, "contains a double quote"),
        ({"filter": {3: 1}}, "must be a string, got int"),
    ],
)
async def test_list_rejects_bad_arguments(ab: Abathur, kwargs, message) -> None:
    await ab.memory.put("ns", "k", 1, metadata={"source": "chat"})
    async with assert_unchanged(ab):
        with pytest.raises(InvalidInputError) as ei:
            await ab.memory.list("ns", **kwargs)
    assert ei.value.code == "invalid_input"
    assert message in str(ei.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_depth": 0}, "max_depth must be >= 1"),
        ({"max_depth": True}, "got bool"),
        ({"limit": 0}, "limit must be between 1 and 10000"),
        ({"limit": "5"}, "got str"),
    ],
)
async def test_namespaces_rejects_bad_arguments(ab: Abathur, kwargs, message) -> None:
    await ab.memory.put("ns", "k", 1)
    async with assert_unchanged(ab):
        with pytest.raises(InvalidInputError) as ei:
            await ab.memory.namespaces(**kwargs)
    assert ei.value.code == "invalid_input"
    assert message in str(ei.value)


async def test_consolidate_rejects_a_non_bool_dry_run(ab: Abathur) -> None:
    await ab.memory.put("ns:a", "k", 1)
    await ab.memory.put("ns:b", "k", 1)
    async with assert_unchanged(ab):
        with pytest.raises(InvalidInputError) as ei:
            await ab.memory.consolidate("ns", dry_run="yes")
    assert ei.value.code == "invalid_input" and "dry_run must be a bool" in str(ei.value)


# --------------------------------------------------------------------------- history


async def test_history_is_every_version_oldest_first(ab: Abathur) -> None:
    await ab.memory.put("ns", "k", "a", metadata={"n": 1})
    await ab.memory.put("ns", "k", "b")
    await ab.memory.delete("ns", "k")
    await ab.memory.restore("ns", "k")
    history = await ab.memory.history("ns", "k")
    assert [(m.version, m.value, m.status) for m in history] == [
        (1, "a", "live"), (2, "b", "live"), (3, "b", "deleted"), (4, "b", "live")]
    assert len({m.created_at for m in history}) == 1
    assert [m.updated_at for m in history] == sorted(m.updated_at for m in history)


async def test_history_of_a_memory_that_never_existed_is_empty(ab: Abathur) -> None:
    await ab.memory.put("ns", "other", 1)
    assert await ab.memory.history("ns", "k") == []


# --------------------------------------------------------------------------- TTL


async def test_ttl_is_enforced_on_every_read_path(ab: Abathur) -> None:
    await ab.memory.put("user:alice:notes", "short", "soon gone", ttl=TTL)
    await ab.memory.put("user:alice", "long", "stays")
    # Before expiry: visible everywhere.
    assert (await ab.memory.get("user:alice:notes", "short")).value == "soon gone"
    assert refs(await ab.memory.list("user:alice")) == [
        ("user:alice", "long"), ("user:alice:notes", "short")]
    assert len(await ab.memory.history("user:alice:notes", "short")) == 1
    assert await ab.memory.namespaces("user") == ["user:alice", "user:alice:notes"]
    await expire()
    # After expiry: gone from every read path, though nothing swept it.
    assert await ab.memory.get("user:alice:notes", "short") is None
    assert refs(await ab.memory.list("user:alice")) == [("user:alice", "long")]
    assert await ab.memory.history("user:alice:notes", "short") == []
    assert await ab.memory.namespaces("user") == ["user:alice"]
    assert await ab.memory.namespaces() == ["user:alice"]
    rows = await ab.db.read(lambda c: c.conn.execute("SELECT count(*) FROM memories").fetchall())
    assert rows == [(2,)]


async def test_expired_memories_cannot_be_deleted_or_restored(ab: Abathur) -> None:
    await ab.memory.put("ns", "live", 1, ttl=TTL)
    await ab.memory.put("ns", "tomb", 1, ttl=TTL)
    await ab.memory.delete("ns", "tomb")
    await expire()
    for call in (ab.memory.delete("ns", "live"), ab.memory.restore("ns", "live"),
                 ab.memory.restore("ns", "tomb")):
        async with assert_unchanged(ab):
            with pytest.raises(MemoryNotFoundError) as ei:
                await call
        assert ei.value.code == "memory.not_found"
    assert await ab.memory.history("ns", "tomb") == []


async def test_expired_memories_are_not_consolidated(ab: Abathur) -> None:
    await ab.memory.put("ns:a", "k", "same", ttl=TTL)
    await ab.memory.put("ns:b", "k", "same")
    await expire()
    async with assert_unchanged(ab):
        report = await ab.memory.consolidate("ns")
    assert (report.examined, report.actions) == (1, [])


# --------------------------------------------------------------------------- delete / restore


async def test_delete_and_restore_round_trip(ab: Abathur) -> None:
    await ab.memory.put("ns", "k", {"v": 1}, type="episodic", metadata={"src": "x"}, ttl=3600)
    tombstone = await ab.memory.delete("ns", "k", expected_version=1)
    assert (tombstone.version, tombstone.status, tombstone.value) == (2, "deleted", {"v": 1})
    assert await ab.memory.get("ns", "k") is None
    assert await ab.memory.list("ns") == []
    assert await ab.memory.namespaces() == []
    restored = await ab.memory.restore("ns", "k")
    assert (restored.version, restored.status) == (3, "live")
    assert (restored.value, restored.type) == ({"v": 1}, "episodic")
    assert restored.metadata == {"src": "x"}
    assert restored.expires_at == tombstone.expires_at is not None
    assert await ab.memory.get("ns", "k") == restored
    assert await audit_actions(ab) == [
        ("memory.put", "ns/k", 1), ("memory.delete", "ns/k", 2), ("memory.restore", "ns/k", 3)]


async def test_delete_of_an_absent_memory_is_not_found(ab: Abathur) -> None:
    await ab.memory.put("ns", "gone", 1)
    await ab.memory.delete("ns", "gone")
    for key in ("never", "gone"):
        async with assert_unchanged(ab):
            with pytest.raises(MemoryNotFoundError) as ei:
                await ab.memory.delete("ns", key)
        assert ei.value.code == "memory.not_found" and f"'ns'/'{key}'" in str(ei.value)


async def test_delete_with_a_stale_expected_version_conflicts(ab: Abathur) -> None:
    await ab.memory.put("ns", "k", 1)
    await ab.memory.put("ns", "k", 2)
    async with assert_unchanged(ab):
        with pytest.raises(VersionConflictError) as ei:
            await ab.memory.delete("ns", "k", expected_version=1)
    assert (ei.value.code, ei.value.actual) == ("memory.version_conflict", 2)
    async with assert_unchanged(ab):
        with pytest.raises(InvalidInputError) as ei:
            await ab.memory.delete("ns", "k", expected_version=-2)
    assert ei.value.code == "invalid_input"


async def test_restore_of_a_live_memory_changes_nothing(ab: Abathur) -> None:
    m = await ab.memory.put("ns", "k", 1)
    async with assert_unchanged(ab):
        assert await ab.memory.restore("ns", "k") == m


async def test_restore_of_a_memory_that_never_existed_is_not_found(ab: Abathur) -> None:
    async with assert_unchanged(ab):
        with pytest.raises(MemoryNotFoundError) as ei:
            await ab.memory.restore("ns", "k")
    assert ei.value.code == "memory.not_found" and "never existed" in str(ei.value)


async def test_put_after_delete_makes_it_live_again(ab: Abathur) -> None:
    await ab.memory.put("ns", "k", 1)
    await ab.memory.delete("ns", "k")
    m = await ab.memory.put("ns", "k", 2)
    assert (m.version, m.status, (await ab.memory.get("ns", "k")).value) == (3, "live", 2)


# --------------------------------------------------------------------------- list / prefixes


async def test_prefix_matches_whole_segments_only(ab: Abathur) -> None:
    for namespace in ("user:al", "user:al:x", "user:alice", "user:alice:preferences",
                      "acme", "acme:team", "acme-corp", "acme0", "acme;", "acmeZ", "ac"):
        await ab.memory.put(namespace, "k", namespace)
    assert [m.namespace for m in await ab.memory.list("user:al")] == ["user:al", "user:al:x"]
    assert [m.namespace for m in await ab.memory.list("user:alice")] == [
        "user:alice", "user:alice:preferences"]
    assert [m.namespace for m in await ab.memory.list("acme")] == ["acme", "acme:team"]
    assert await ab.memory.list("user:a") == []
    assert await ab.memory.namespaces("acme") == ["acme", "acme:team"]
    assert await ab.memory.namespaces("user:al") == ["user:al", "user:al:x"]


async def test_list_orders_filters_by_type_and_pages(ab: Abathur) -> None:
    await ab.memory.put("p:b", "a", 1, type="episodic")
    await ab.memory.put("p", "z", 2)
    await ab.memory.put("p:a", "b", 3)
    await ab.memory.put("p:a", "a", 4, type="episodic")
    everything = await ab.memory.list("p")
    assert refs(everything) == [("p", "z"), ("p:a", "a"), ("p:a", "b"), ("p:b", "a")]
    assert refs(await ab.memory.list("p", type="episodic")) == [("p:a", "a"), ("p:b", "a")]
    assert refs(await ab.memory.list("p", limit=2)) == refs(everything)[:2]
    assert refs(await ab.memory.list("p", limit=2, offset=2)) == refs(everything)[2:]
    assert await ab.memory.list("p", offset=10) == []


async def test_list_shows_only_the_current_live_version(ab: Abathur) -> None:
    await ab.memory.put("ns", "k", "old")
    await ab.memory.put("ns", "k", "new")
    await ab.memory.put("ns", "dead", 1)
    await ab.memory.delete("ns", "dead")
    assert [(m.key, m.value, m.version) for m in await ab.memory.list("ns")] == [("k", "new", 2)]


async def test_metadata_filter(ab: Abathur) -> None:
    await ab.memory.put("m", "str", 0, metadata={"source": "chat", "n": 1})
    await ab.memory.put("m", "real", 0, metadata={"source": "doc", "n": 1.0})
    await ab.memory.put("m", "true", 0, metadata={"flag": True, "n": 2})
    await ab.memory.put("m", "one", 0, metadata={"flag": 1})
    await ab.memory.put("m", "false", 0, metadata={"flag": False})
    await ab.memory.put("m", "null", 0, metadata={"flag": None})
    await ab.memory.put("m", "none", 0, metadata={})
    await ab.memory.put("m", "odd", 0, metadata={"a.b": "dot", "c[0]": "br", "x\\y": "bs"})

    async def keys(filter_: dict) -> list[str]:
        return sorted(m.key for m in await ab.memory.list("m", filter=filter_))

    assert await keys({"source": "chat"}) == ["str"]
    assert await keys({"n": 1}) == ["real", "str"]  # numbers compare as numbers
    assert await keys({"n": 1.0}) == ["real", "str"]
    assert await keys({"flag": True}) == ["true"]  # True is not 1
    assert await keys({"flag": 1}) == ["one"]
    assert await keys({"flag": False}) == ["false"]
    assert await keys({"flag": None}) == ["null"]  # a JSON null, not a missing key
    assert await keys({"source": "chat", "n": 1}) == ["str"]
    assert await keys({"source": "chat", "n": 2}) == []
    assert await keys({"a.b": "dot"}) == ["odd"]  # '.' in a key is not a path step
    assert await keys({"c[0]": "br"}) == ["odd"]
    assert await keys({"x\\y": "bs"}) == ["odd"]
    assert await keys({"source": "nope"}) == []
    assert await keys({}) == sorted(["str", "real", "true", "one", "false", "null", "none", "odd"])


SEGMENT = st.text(alphabet="ab-0;é", min_size=1, max_size=3)
NAMESPACE = st.lists(SEGMENT, min_size=1, max_size=3).map(":".join)


# Parametrised by the registered backends themselves, not the ``backend``
# fixture: each Hypothesis example needs a fresh database (handle() below).
@pytest.mark.parametrize("backend", BACKENDS, ids=lambda spec: spec.name)
@settings(max_examples=30, deadline=None)
@given(namespaces=st.sets(NAMESPACE, min_size=1, max_size=12), data=st.data())
def test_list_matches_a_pure_python_segment_filter(
    backend: TestBackend, namespaces: set[str], data
) -> None:
    # A prefix drawn from the namespaces themselves (cut at any character, so
    # 'a:b' and 'a:' and 'a' all get tried) or from scratch.
    prefix = data.draw(
        st.one_of(
            NAMESPACE,
            st.sampled_from(sorted(namespaces)).flatmap(
                lambda ns: st.integers(1, len(ns)).map(lambda n: ns[:n])
            ).filter(lambda p: not p.endswith(":") and "::" not in p),
        )
    )
    expected = sorted(ns for ns in namespaces if ns == prefix or ns.startswith(prefix + ":"))

    async def run() -> tuple[list[str], list[str]]:
        with tempfile.TemporaryDirectory() as tmp:
            async with handle(backend.name, Path(tmp)).open() as ab:
                for ns in namespaces:
                    await ab.memory.put(ns, "k", ns)
                listed = [m.namespace for m in await ab.memory.list(prefix, limit=10_000)]
                return listed, await ab.memory.namespaces(prefix)

    listed, names = asyncio.run(run())
    assert listed == expected
    assert names == expected


# --------------------------------------------------------------------------- namespaces


async def test_namespaces_are_sorted_distinct_and_truncated(ab: Abathur) -> None:
    for namespace, key in [("user:bob", "a"), ("user:alice:prefs", "a"), ("user:alice:prefs", "b"),
                           ("user:alice", "a"), ("org:acme", "a"), ("user:b!x", "a"),
                           ("user:b:c", "a")]:
        await ab.memory.put(namespace, key, 1)
    await ab.memory.put("user:carol", "a", 1)
    await ab.memory.delete("user:carol", "a")
    assert await ab.memory.namespaces() == [
        "org:acme", "user:alice", "user:alice:prefs", "user:b!x", "user:b:c", "user:bob"]
    assert await ab.memory.namespaces("user:alice") == ["user:alice", "user:alice:prefs"]
    assert await ab.memory.namespaces(max_depth=1) == ["org", "user"]
    assert await ab.memory.namespaces("user", max_depth=2) == [
        "user:alice", "user:b", "user:b!x", "user:bob"]
    assert await ab.memory.namespaces("user", max_depth=2, limit=2) == ["user:alice", "user:b"]
    assert await ab.memory.namespaces(limit=2) == ["org:acme", "user:alice"]
    assert await ab.memory.namespaces("nobody") == []


# --------------------------------------------------------------------------- consolidation


async def seed_for_consolidation(ab: Abathur) -> None:
    # Duplicates: one value under three places; 'user:alice:b'/'y' is written last.
    await ab.memory.put("user:alice:a", "x", {"lang": "fr", "n": 1})
    await ab.memory.put("user:alice", "z", {"n": 1, "lang": "fr"})  # same JSON, other key order
    await ab.memory.put("user:alice:b", "y", {"lang": "fr", "n": 1})
    # Same value but another type: not a duplicate.
    await ab.memory.put("user:alice:c", "w", {"lang": "fr", "n": 1}, type="episodic")
    # Conflicts: key 'city' in two namespaces, the second written last.
    await ab.memory.put("user:alice:a", "city", "Paris")
    await ab.memory.put("user:alice:b", "city", "Lyon")
    # Same key, other type: no conflict.
    await ab.memory.put("user:alice:c", "city", "Nice", type="episodic")
    # Outside the prefix: never touched.
    await ab.memory.put("user:alicia", "y", {"lang": "fr", "n": 1})
    await ab.memory.put("user:alicia", "city", "Rome")


EXPECTED_ACTIONS = [
    ("duplicate", ("user:alice", "z"), ("user:alice:b", "y")),
    ("duplicate", ("user:alice:a", "x"), ("user:alice:b", "y")),
    ("conflict", ("user:alice:a", "city"), ("user:alice:b", "city")),
]


def actions_of(report) -> list[tuple[str, tuple[str, str], tuple[str, str]]]:
    return [
        (a.reason, (a.loser.namespace, a.loser.key), (a.winner.namespace, a.winner.key))
        for a in report.actions
    ]


async def test_consolidation_supersedes_duplicates_and_conflicts(ab: Abathur) -> None:
    await seed_for_consolidation(ab)
    report = await ab.memory.consolidate("user:alice")
    assert (report.prefix, report.is_dry_run, report.examined) == ("user:alice", False, 7)
    assert actions_of(report) == EXPECTED_ACTIONS
    assert [a.loser_version for a in report.actions] == [2, 2, 2]

    for _reason, (ns, key), (winner_ns, winner_key) in EXPECTED_ACTIONS:
        assert await ab.memory.get(ns, key) is None
        first, superseded = await ab.memory.history(ns, key)  # nothing deleted or rewritten
        assert (first.status, superseded.status) == ("live", "superseded")
        assert superseded.value == first.value
        assert superseded.superseded_by == MemoryRef(namespace=winner_ns, key=winner_key)
        assert (await ab.memory.get(winner_ns, winner_key)).version == 1
    assert refs(await ab.memory.list("user:alice")) == [
        ("user:alice:b", "city"), ("user:alice:b", "y"), ("user:alice:c", "city"),
        ("user:alice:c", "w")]
    assert len(await ab.memory.list("user:alicia")) == 2
    records = await ab.audit.records(entity="memory", limit=1000)
    supersedes = [(r.entity_id, r.detail) for r in records if r.action == "memory.supersede"]
    assert supersedes == [
        ("user:alice/z", {"version": 2, "reason": "duplicate", "winner": "user:alice:b/y"}),
        ("user:alice:a/x", {"version": 2, "reason": "duplicate", "winner": "user:alice:b/y"}),
        ("user:alice:a/city", {"version": 2, "reason": "conflict",
                               "winner": "user:alice:b/city"}),
    ]
    assert (await ab.audit.verify()).is_ok
    # Consolidating again finds nothing left to do.
    async with assert_unchanged(ab):
        again = await ab.memory.consolidate("user:alice")
    assert (again.examined, again.actions) == (4, [])


async def test_restore_reverses_consolidation(ab: Abathur) -> None:
    await seed_for_consolidation(ab)
    await ab.memory.consolidate("user:alice")
    back = await ab.memory.restore("user:alice:a", "city")
    assert (back.version, back.status, back.value, back.superseded_by) == (3, "live", "Paris", None)
    assert (await ab.memory.get("user:alice:a", "city")).value == "Paris"
    assert (await ab.memory.history("user:alice:a", "city"))[1].status == "superseded"


async def test_dry_run_reports_the_same_actions_and_writes_nothing(ab: Abathur) -> None:
    await seed_for_consolidation(ab)
    async with assert_unchanged(ab):
        dry = await ab.memory.consolidate("user:alice", dry_run=True)
    assert (dry.is_dry_run, dry.examined) == (True, 7)
    assert actions_of(dry) == EXPECTED_ACTIONS
    assert [a.loser_version for a in dry.actions] == [0, 0, 0]
    real = await ab.memory.consolidate("user:alice")
    assert actions_of(real) == actions_of(dry)


async def test_consolidation_skips_deleted_memories(ab: Abathur) -> None:
    await ab.memory.put("ns:a", "k", "same")
    await ab.memory.put("ns:b", "k", "same")
    await ab.memory.delete("ns:b", "k")
    async with assert_unchanged(ab):
        report = await ab.memory.consolidate("ns")
    assert (report.examined, report.actions) == (1, [])


async def test_superseded_memories_read_as_absent_until_restored(ab: Abathur) -> None:
    await ab.memory.put("ns:a", "k", 1)
    await ab.memory.put("ns:b", "k", 2)
    await ab.memory.consolidate("ns")
    assert await ab.memory.namespaces("ns") == ["ns:b"]
    async with assert_unchanged(ab):
        with pytest.raises(MemoryNotFoundError) as ei:
            await ab.memory.delete("ns:a", "k")
    assert ei.value.code == "memory.not_found"
    m = await ab.memory.put("ns:a", "k", 3)  # a new write makes it live again
    assert (m.version, m.superseded_by) == (3, None)


# --------------------------------------------------------------------------- durability, audit


async def test_a_reopened_database_returns_the_same_data(backend: BackendHandle) -> None:
    async with backend.open() as ab:
        await ab.memory.put("user:alice", "lang", "fr", metadata={"s": 1}, ttl=3600)
        await ab.memory.put("user:alice", "lang", "en")
        await ab.memory.put("user:alice:x", "gone", 1)
        await ab.memory.delete("user:alice:x", "gone")
        before = (
            await ab.memory.get("user:alice", "lang"),
            await ab.memory.history("user:alice", "lang"),
            await ab.memory.history("user:alice:x", "gone"),
            await ab.memory.list("user"),
            await ab.memory.namespaces(),
        )
    async with backend.open() as ab:
        after = (
            await ab.memory.get("user:alice", "lang"),
            await ab.memory.history("user:alice", "lang"),
            await ab.memory.history("user:alice:x", "gone"),
            await ab.memory.list("user"),
            await ab.memory.namespaces(),
        )
        assert after == before
        assert before[0].value == "en" and len(before[2]) == 2
        assert (await ab.memory.put("user:alice", "lang", "de")).version == 3


async def test_every_write_leaves_an_audit_record(ab: Abathur) -> None:
    await ab.memory.put("a", "k", 1)
    await ab.memory.put("a", "k", 2)
    await ab.memory.delete("a", "k")
    await ab.memory.restore("a", "k")
    await ab.memory.restore("a", "k")  # no-op: no record
    await ab.memory.put("b", "k", 3)
    await ab.memory.consolidate("a", dry_run=True)  # no record
    await ab.memory.put("c:x", "k", 9)
    await ab.memory.put("c:y", "j", 9)
    await ab.memory.consolidate("c")
    assert await audit_actions(ab) == [
        ("memory.put", "a/k", 1),
        ("memory.put", "a/k", 2),
        ("memory.delete", "a/k", 3),
        ("memory.restore", "a/k", 4),
        ("memory.put", "b/k", 1),
        ("memory.put", "c:x/k", 1),
        ("memory.put", "c:y/j", 1),
        ("memory.supersede", "c:x/k", 2),
    ]
    report = await ab.audit.verify()
    assert report.is_ok and report.records == 8


# --------------------------------------------------------------------------- query plans


@pytest.mark.sqlite_only("EXPLAIN QUERY PLAN of SQLite's SQL (PostgreSQL: test_pg_inspection)")
async def test_hot_queries_use_memories_current(ab: Abathur) -> None:
    def plan(sql: str, params: tuple | dict) -> str:
        async def run() -> str:
            rows = await ab.db.read(
                lambda c: c.conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
            )
            return " | ".join(str(r[-1]) for r in rows)

        return run()

    current = await plan(SQL_CURRENT_MEMORY, ("user:a", "k"))
    assert "SEARCH memories USING INDEX memories_current (namespace=? AND key=?)" in current
    listing = await plan(SQL_LIST_PREFIX, list_params("user:alice", now=0.0))
    assert "SEARCH memories USING INDEX memories_current (namespace>? AND namespace<?)" in listing
    assert "TEMP B-TREE" not in listing  # the index already gives (namespace, key) order
