"""The listings behind ``abathur memory|session|task`` (issue 12).

memory.namespace_counts, memory.get_version, sessions.list without an app and
tasks.list without a session: what they return, and bad input as typed errors
that change nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

from abathur import (
    Abathur,
    Event,
    InvalidIdError,
    InvalidInputError,
    InvalidNamespaceError,
    NamedCount,
    SessionNotFoundError,
)
from abathur.backends.ranges import range_params
from abathur.backends.sqlite.memories import (
    SQL_LIST_PREFIX_ANY_STATUS,
    SQL_MEMORY_VERSION,
    SQL_NAMESPACE_COUNTS_ALL,
    SQL_NAMESPACE_COUNTS_PREFIX,
    list_params,
)
from tests.helpers import MemoryClock, assert_unchanged


def counts(found: list[NamedCount]) -> list[tuple[str, int]]:
    return [(c.name, c.count) for c in found]


# --------------------------------------------------------------------------- namespace_counts


async def test_namespace_counts_count_live_memories_per_exact_namespace(
    ab: Abathur, memory_clock: MemoryClock
) -> None:
    for key in ("a", "b", "c"):
        await ab.memory.put("user:alice", key, key)
    await ab.memory.put("user:alice:prefs", "lang", "fr")
    await ab.memory.put("user:alicia", "lang", "es")
    await ab.memory.put("team", "x", 1)
    await ab.memory.delete("user:alice", "c")  # a tombstone is not counted
    await ab.memory.put("user:alice", "b", "b2")  # a second version is one memory
    await ab.memory.put("user:gone", "x", 1, ttl=0.05)
    await ab.memory.delete("team", "x")  # a namespace left with nothing live is not listed
    memory_clock.advance(0.1)  # user:gone has expired

    assert counts(await ab.memory.namespace_counts()) == [
        ("user:alice", 2),
        ("user:alice:prefs", 1),
        ("user:alicia", 1),
    ]
    # Whole segments: user:alice is not user:alicia.
    assert counts(await ab.memory.namespace_counts("user:alice")) == [
        ("user:alice", 2),
        ("user:alice:prefs", 1),
    ]
    assert counts(await ab.memory.namespace_counts("user:alice:prefs")) == [("user:alice:prefs", 1)]
    assert await ab.memory.namespace_counts("user:al") == []
    assert counts(await ab.memory.namespace_counts("user", limit=1)) == [("user:alice", 2)]
    # The same namespaces as namespaces() lists.
    assert [c.name for c in await ab.memory.namespace_counts()] == await ab.memory.namespaces()


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        (("user::x",), {}, InvalidNamespaceError),
        (("",), {}, InvalidNamespaceError),
        ((1,), {}, InvalidNamespaceError),
        ((None,), {"limit": 0}, InvalidInputError),
        ((None,), {"limit": 10_001}, InvalidInputError),
        ((None,), {"limit": "5"}, InvalidInputError),
        ((None,), {"limit": True}, InvalidInputError),
    ],
)
async def test_namespace_counts_rejects_bad_input(
    ab: Abathur, args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception]
) -> None:
    await ab.memory.put("user:alice", "a", 1)
    async with assert_unchanged(ab):
        with pytest.raises(error):
            await ab.memory.namespace_counts(*args, **kwargs)


@pytest.mark.sqlite_only("EXPLAIN QUERY PLAN of SQLite's SQL (PostgreSQL: test_pg_inspection)")
async def test_namespace_counts_walk_the_current_index_without_sorting(ab: Abathur) -> None:
    async def plan(sql: str, params: tuple[Any, ...] | dict[str, Any]) -> str:
        rows = await ab.db.read(
            lambda c: c.conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
        )
        return " | ".join(str(r[-1]) for r in rows)

    prefixed = await plan(
        SQL_NAMESPACE_COUNTS_PREFIX, {**range_params("u"), "now": 0.0, "limit": 10}
    )
    assert "USING INDEX memories_current (namespace>? AND namespace<?)" in prefixed, prefixed
    assert "TEMP B-TREE" not in prefixed, prefixed
    everything = await plan(SQL_NAMESPACE_COUNTS_ALL, {"now": 0.0, "limit": 10})
    assert "memories_current" in everything and "TEMP B-TREE" not in everything, everything
    any_status = await plan(SQL_LIST_PREFIX_ANY_STATUS, list_params("u", now=0.0, limit=10))
    assert "USING INDEX memories_current (namespace>? AND namespace<?)" in any_status, any_status
    assert "TEMP B-TREE" not in any_status, any_status
    one = await plan(SQL_MEMORY_VERSION, ("u", "k", 1))
    assert "SEARCH memories USING INDEX" in one and "SCAN" not in one, one


# --------------------------------------------------------------------------- list(include_deleted)


async def test_list_include_deleted_adds_tombstones_and_superseded(
    ab: Abathur, memory_clock: MemoryClock
) -> None:
    await ab.memory.put("user:alice", "a", "kept", metadata={"source": "chat"})
    await ab.memory.put("user:alice", "b", "gone", metadata={"source": "chat"})
    await ab.memory.delete("user:alice", "b")
    await ab.memory.put("user:alice", "c", "same")
    await ab.memory.put("user:alice", "d", "same")  # consolidation supersedes c by d
    await ab.memory.consolidate("user:alice")
    await ab.memory.put("user:alice", "e", "brief", ttl=0.05)
    await ab.memory.delete("user:alice", "e")
    memory_clock.advance(0.1)  # e has expired: never listed, deleted or not

    live = await ab.memory.list("user:alice")
    assert [(m.key, m.status) for m in live] == [("a", "live"), ("d", "live")]
    every = await ab.memory.list("user:alice", include_deleted=True)
    assert [(m.key, m.status) for m in every] == [
        ("a", "live"),
        ("b", "deleted"),
        ("c", "superseded"),
        ("d", "live"),
    ]
    assert every[1].value == "gone" and every[2].superseded_by is not None
    # The other options apply as before.
    chat = await ab.memory.list("user:alice", include_deleted=True, filter={"source": "chat"})
    assert [m.key for m in chat] == ["a", "b"]
    page = await ab.memory.list("user:alice", include_deleted=True, limit=2, offset=1)
    assert [m.key for m in page] == ["b", "c"]


@pytest.mark.parametrize("bad", [1, "yes", None, [True]])
async def test_list_include_deleted_must_be_a_bool(ab: Abathur, bad: Any) -> None:
    await ab.memory.put("user:alice", "a", 1)
    async with assert_unchanged(ab):
        with pytest.raises(InvalidInputError, match="include_deleted must be a bool"):
            await ab.memory.list("user:alice", include_deleted=bad)


# --------------------------------------------------------------------------- get_version


async def test_get_version_returns_any_version_as_written(ab: Abathur) -> None:
    await ab.memory.put("user:alice", "lang", "fr", metadata={"source": "chat"})
    await ab.memory.put("user:alice", "lang", "en")
    await ab.memory.delete("user:alice", "lang")
    first = await ab.memory.get_version("user:alice", "lang", 1)
    assert first is not None
    assert (first.value, first.metadata, first.status) == ("fr", {"source": "chat"}, "live")
    tomb = await ab.memory.get_version("user:alice", "lang", 3)
    assert tomb is not None and (tomb.value, tomb.status) == ("en", "deleted")
    history = await ab.memory.history("user:alice", "lang")
    assert [await ab.memory.get_version("user:alice", "lang", v) for v in (1, 2, 3)] == history
    assert await ab.memory.get_version("user:alice", "lang", 4) is None
    assert await ab.memory.get_version("user:alice", "nope", 1) is None


async def test_get_version_of_an_expired_memory_is_none(
    ab: Abathur, memory_clock: MemoryClock
) -> None:
    await ab.memory.put("user:alice", "otp", "1234", ttl=0.05)
    assert await ab.memory.get_version("user:alice", "otp", 1) is not None
    memory_clock.advance(0.1)
    # As history: once the current version expires, the memory has no versions.
    assert await ab.memory.get_version("user:alice", "otp", 1) is None


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("user:alice", "lang", 0), InvalidInputError),
        (("user:alice", "lang", -1), InvalidInputError),
        (("user:alice", "lang", True), InvalidInputError),
        (("user:alice", "lang", "1"), InvalidInputError),
        (("user:alice", "lang", 2**63), InvalidInputError),
        (("user::alice", "lang", 1), InvalidNamespaceError),
        (("user:alice", " lang", 1), InvalidIdError),
    ],
)
async def test_get_version_rejects_bad_input(
    ab: Abathur, args: tuple[Any, ...], error: type[Exception]
) -> None:
    await ab.memory.put("user:alice", "lang", "fr")
    async with assert_unchanged(ab):
        with pytest.raises(error):
            await ab.memory.get_version(*args)


# --------------------------------------------------------------------------- sessions.list


async def test_sessions_list_without_an_app_lists_every_app(ab: Abathur) -> None:
    await ab.sessions.create(app="a", user="alice", session_id="a1", state={"app:tier": "gold"})
    await ab.sessions.create(app="b", user="alice", session_id="b1", state={"user:lang": "fr"})
    await ab.sessions.create(app="a", user="bob", session_id="a2")
    await ab.sessions.append_event("a1", Event(author="user", content="hi"))  # now the newest
    await ab.sessions.terminate("a2")

    assert [s.id for s in await ab.sessions.list()] == ["a2", "a1", "b1"]
    assert [s.id for s in await ab.sessions.list(app=None, user="alice")] == ["a1", "b1"]
    assert [s.id for s in await ab.sessions.list(status="terminated")] == ["a2"]
    assert [s.id for s in await ab.sessions.list(user="alice", status="created")] == ["b1"]
    assert [s.id for s in await ab.sessions.list(limit=1)] == ["a2"]
    assert await ab.sessions.list(user="carol") == []
    # Each session's state is its own app's and user's, as get shows it.
    for listed in await ab.sessions.list():
        assert listed == await ab.sessions.get(listed.id, last_n=0)
    by_id = {s.id: s.state for s in await ab.sessions.list()}
    assert by_id == {
        "a1": {"app:tier": "gold"},
        "a2": {"app:tier": "gold"},
        "b1": {"user:lang": "fr"},
    }


@pytest.mark.parametrize(
    "kwargs",
    [{"user": " x"}, {"status": "done"}, {"limit": -1}, {"limit": "1"}, {"app": ""}],
)
async def test_sessions_list_without_an_app_rejects_bad_input(
    ab: Abathur, kwargs: dict[str, Any]
) -> None:
    await ab.sessions.create(app="a", user="alice")
    async with assert_unchanged(ab):
        with pytest.raises((InvalidIdError, InvalidInputError)):
            await ab.sessions.list(**kwargs)


# --------------------------------------------------------------------------- tasks.list


async def test_tasks_list_without_a_session_lists_every_session_newest_first(
    ab: Abathur,
) -> None:
    s1 = await ab.sessions.create(app="a", user="alice")
    s2 = await ab.sessions.create(app="b", user="bob")
    t1 = await ab.tasks.create(session_id=s1.id, prompt="one", task_id="t1")
    await ab.tasks.create(session_id=s2.id, prompt="two", task_id="t2")
    await ab.tasks.create(session_id=s1.id, prompt="three", task_id="t3")
    await ab.tasks.update(t1.id, status="running")

    assert [t.id for t in await ab.tasks.list()] == ["t3", "t2", "t1"]
    assert [t.id for t in await ab.tasks.list(limit=2)] == ["t3", "t2"]
    assert [t.id for t in await ab.tasks.list(status="running")] == ["t1"]
    assert [t.id for t in await ab.tasks.list(status="pending", limit=1)] == ["t3"]
    # With a session: its tasks oldest first, as before, now with a limit too.
    assert [t.id for t in await ab.tasks.list(session_id=s1.id)] == ["t1", "t3"]
    assert [t.id for t in await ab.tasks.list(session_id=s1.id, limit=1)] == ["t1"]
    assert [t.id for t in await ab.tasks.list(session_id=s1.id, status="pending", limit=5)] == [
        "t3"
    ]
    assert (await ab.tasks.list())[2] == await ab.tasks.get("t1")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"limit": 0}, InvalidInputError),
        ({"limit": -3}, InvalidInputError),
        ({"limit": True}, InvalidInputError),
        ({"limit": "2"}, InvalidInputError),
        ({"status": "done"}, InvalidInputError),
        ({"session_id": " s"}, InvalidIdError),
        ({"session_id": "nope", "limit": 1}, SessionNotFoundError),
    ],
)
async def test_tasks_list_rejects_bad_input(
    ab: Abathur, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    s = await ab.sessions.create(app="a", user="alice")
    await ab.tasks.create(session_id=s.id, prompt="p")
    async with assert_unchanged(ab):
        with pytest.raises(error):
            await ab.tasks.list(**kwargs)
