"""SessionService: create/get/list/append_event/status/delete, scoped state, paging, errors."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from abathur import (
    Abathur,
    AbathurError,
    AlreadyExistsError,
    Event,
    InvalidIdError,
    InvalidInputError,
    InvalidTransitionError,
    Session,
    SessionNotFoundError,
    StaleSessionError,
    ValueNotSerializableError,
    ValueTooLargeError,
)
from abathur import sessions as sessions_module
from abathur.backends.sqlite import sessions as sqlite_sessions
from tests.helpers import assert_unchanged


async def expect_error(ab: Abathur, cls: type[AbathurError], code: str,
                       call: Callable[[], Awaitable[Any]]) -> AbathurError:
    """The call raises ``cls`` with ``code`` and leaves the file untouched."""
    async with assert_unchanged(ab):
        with pytest.raises(cls) as ei:
            await call()
    assert ei.value.code == code
    return ei.value


async def rows(ab: Abathur, sql: str, params: tuple = ()) -> list[tuple]:
    return await ab.db.read(lambda tx: tx.conn.execute(sql, params).fetchall())


def ev(content: Any = None, **kwargs: Any) -> Event:
    return Event(author="user", content=content, **kwargs)


# Status paths from a fresh (created) session to each status.
PATH_TO = {
    "created": [],
    "active": ["active"],
    "paused": ["active", "paused"],
    "terminated": ["terminated"],
    "archived": ["terminated", "archived"],
}
LEGAL = [
    ("created", "active"), ("created", "terminated"), ("active", "paused"),
    ("paused", "active"), ("active", "terminated"), ("paused", "terminated"),
    ("terminated", "archived"),
]
ALL_STATUSES = list(PATH_TO)
ILLEGAL = [(a, b) for a in ALL_STATUSES for b in ALL_STATUSES if (a, b) not in LEGAL]


async def session_in(ab: Abathur, status: str, **kwargs: Any) -> Session:
    s = await ab.sessions.create(app="a", user="u", **kwargs)
    for step in PATH_TO[status]:
        s = await ab.sessions.set_status(s.id, step)
    assert s.status == status
    return s


# --- create -------------------------------------------------------------------


async def test_create_defaults(ab):
    s = await ab.sessions.create(app="helpdesk", user="alice")
    assert (s.app, s.user, s.status, s.revision, s.state, s.events) == (
        "helpdesk", "alice", "created", 0, {}, [])
    assert len(s.id) == 32 and int(s.id, 16) >= 0
    assert s.created_at == s.updated_at
    assert await ab.sessions.get(s.id) == s


@pytest.mark.sqlite_only("reads the SQLite tables to check what is stored")
async def test_create_with_id_and_scoped_state(ab):
    s = await ab.sessions.create(
        app="a", user="u", session_id="s1",
        state={"app:tier": "gold", "user:lang": "fr", "temp:draft": [1], "topic": "billing"})
    assert s.id == "s1"
    assert s.state == {"app:tier": "gold", "user:lang": "fr", "topic": "billing",
                       "temp:draft": [1]}
    assert await rows(ab, "SELECT key, value FROM app_state WHERE app = 'a'") == [
        ("tier", '"gold"')]
    assert await rows(ab, "SELECT key, value FROM user_state WHERE app = 'a' AND user = 'u'") == [
        ("lang", '"fr"')]
    assert await rows(ab, "SELECT state FROM sessions WHERE id = 's1'") == [
        ('{"topic":"billing"}',)]
    got = await ab.sessions.get("s1")
    assert got.state == {"app:tier": "gold", "user:lang": "fr", "topic": "billing"}


@pytest.mark.sqlite_only("reads the SQLite tables to check what is stored")
async def test_create_stores_none_as_json_null(ab):
    s = await ab.sessions.create(app="a", user="u",
                                 state={"app:x": None, "user:y": None, "z": None})
    assert s.state == {"app:x": None, "user:y": None, "z": None}
    assert await rows(ab, "SELECT value FROM app_state") == [("null",)]
    assert await rows(ab, "SELECT value FROM user_state") == [("null",)]
    assert (await ab.sessions.get(s.id)).state == {"app:x": None, "user:y": None, "z": None}


async def test_create_returns_existing_app_and_user_state(ab):
    await ab.sessions.create(app="a", user="u", state={"app:x": 1, "user:y": 2})
    s = await ab.sessions.create(app="a", user="u")
    assert s.state == {"app:x": 1, "user:y": 2}


async def test_create_state_is_a_copy(ab):
    value = {"nested": [1]}
    s = await ab.sessions.create(app="a", user="u", state={"k": value, "temp:t": value})
    value["nested"].append(2)
    assert s.state == {"k": {"nested": [1]}, "temp:t": {"nested": [1]}}


async def test_create_duplicate_id(ab):
    await ab.sessions.create(app="a", user="u", session_id="s1")
    err = await expect_error(ab, AlreadyExistsError, "already_exists",
                             lambda: ab.sessions.create(app="b", user="v", session_id="s1",
                                                        state={"app:x": 1}))
    assert "s1" in str(err)
    assert await ab.sessions.get_app_state(app="b") == {}


async def test_create_is_audited(ab):
    s = await ab.sessions.create(app="a", user="u")
    (record,) = await ab.audit.records(entity="session", entity_id=s.id)
    assert (record.action, record.detail) == ("session.create", {"app": "a", "user": "u"})


@pytest.mark.parametrize("key", ["app:", "user:", "temp:", "", " k", "k ", "user: k", "a\tb",
                                 "x" * 257])
async def test_create_rejects_bad_state_keys(ab, key):
    await expect_error(ab, InvalidIdError, "invalid_id",
                       lambda: ab.sessions.create(app="a", user="u", state={key: 1}))


async def test_create_rejects_non_string_state_key(ab):
    await expect_error(ab, InvalidIdError, "invalid_id",
                       lambda: ab.sessions.create(app="a", user="u", state={1: "x"}))


@pytest.mark.parametrize("state", [[("k", 1)], "k=1", 5])
async def test_create_rejects_non_dict_state(ab, state):
    err = await expect_error(ab, InvalidInputError, "invalid_input",
                             lambda: ab.sessions.create(app="a", user="u", state=state))
    assert "dict" in str(err)


@pytest.mark.parametrize("value", [{1, 2}, b"x", math.nan, object(), {"n": {2: "x"}}])
async def test_create_rejects_non_json_values(ab, value):
    await expect_error(ab, ValueNotSerializableError, "invalid_json",
                       lambda: ab.sessions.create(app="a", user="u", state={"app:k": value}))


async def test_create_rejects_state_over_the_size_limit(backend):
    async with backend.open(max_value_bytes=64) as ab:
        await expect_error(ab, ValueTooLargeError, "value_too_large",
                           lambda: ab.sessions.create(app="a", user="u",
                                                      state={"user:k": "x" * 100}))


# --- scoping ------------------------------------------------------------------


async def test_app_state_is_shared_by_every_user_of_the_app(ab):
    a1 = await ab.sessions.create(app="a", user="alice")
    b1 = await ab.sessions.create(app="a", user="bob")
    other = await ab.sessions.create(app="other", user="alice")
    await ab.sessions.append_event(a1.id, ev(state_delta={"app:motd": "hello"}))
    assert (await ab.sessions.get(b1.id)).state == {"app:motd": "hello"}
    assert (await ab.sessions.get(other.id)).state == {}
    assert await ab.sessions.get_app_state(app="a") == {"motd": "hello"}
    assert await ab.sessions.get_app_state(app="other") == {}


async def test_user_state_is_shared_by_one_users_sessions_only(ab):
    a1 = await ab.sessions.create(app="a", user="alice", state={"user:lang": "fr"})
    a2 = await ab.sessions.create(app="a", user="alice")
    bob = await ab.sessions.create(app="a", user="bob")
    elsewhere = await ab.sessions.create(app="b", user="alice")
    assert (await ab.sessions.get(a2.id)).state == {"user:lang": "fr"}
    await ab.sessions.append_event(a2.id, ev(state_delta={"user:lang": "de"}))
    assert (await ab.sessions.get(a1.id)).state == {"user:lang": "de"}
    assert (await ab.sessions.get(bob.id)).state == {}
    assert (await ab.sessions.get(elsewhere.id)).state == {}
    assert await ab.sessions.get_user_state(app="a", user="alice") == {"lang": "de"}
    assert await ab.sessions.get_user_state(app="a", user="bob") == {}


async def test_session_state_is_private_to_the_session(ab):
    s1 = await ab.sessions.create(app="a", user="u", state={"topic": "x"})
    s2 = await ab.sessions.create(app="a", user="u")
    assert (await ab.sessions.get(s1.id)).state == {"topic": "x"}
    assert (await ab.sessions.get(s2.id)).state == {}


async def test_temp_state_is_never_persisted(backend):
    marker = "TEMP-VALUE-MUST-NOT-BE-STORED"
    async with backend.open() as ab:
        s = await ab.sessions.create(app="a", user="u", state={"temp:scratch": marker, "k": 1})
        assert s.state == {"k": 1, "temp:scratch": marker}
        s = await ab.sessions.append_event(
            s.id, ev("hi", state_delta={"temp:scratch": marker, "temp:other": 2, "k": 2}))
        assert s.state == {"k": 2, "temp:scratch": marker, "temp:other": 2}
        assert s.events[0].state_delta == {"k": 2}
        got = await ab.sessions.get(s.id)
        assert got.state == {"k": 2}
        assert got.events[0].state_delta == {"k": 2}
    # Reopen the database and dump every table: none holds the temp key or value.
    async with backend.open() as ab:
        for table, content in (await backend.spec.snapshot(ab)).items():
            dump = repr(content)
            assert marker not in dump, table
            assert "scratch" not in dump and "temp:" not in dump, table


async def test_state_delta_replaces_whole_values(ab):
    s = await ab.sessions.create(app="a", user="u",
                                 state={"prefs": {"a": 1, "b": 2}, "user:p": {"x": 1}})
    s = await ab.sessions.append_event(
        s.id, ev(state_delta={"prefs": {"c": 3}, "user:p": {"y": 2}}))
    assert s.state == {"prefs": {"c": 3}, "user:p": {"y": 2}}
    assert (await ab.sessions.get(s.id)).state == {"prefs": {"c": 3}, "user:p": {"y": 2}}


@pytest.mark.sqlite_only("reads the SQLite tables to check what is stored")
async def test_state_delta_stores_none_and_keeps_other_keys(ab):
    s = await ab.sessions.create(app="a", user="u", state={"a": 1, "b": 2, "app:c": 3})
    s = await ab.sessions.append_event(s.id, ev(state_delta={"a": None, "app:c": None}))
    assert s.state == {"app:c": None, "a": None, "b": 2}
    assert (await ab.sessions.get(s.id)).state == {"app:c": None, "a": None, "b": 2}
    assert await rows(ab, "SELECT value FROM app_state WHERE key = 'c'") == [("null",)]


# --- get ------------------------------------------------------------------------


async def test_get_unknown_session(ab):
    err = await expect_error(ab, SessionNotFoundError, "session.not_found",
                             lambda: ab.sessions.get("nope"))
    assert "nope" in str(err)
    assert isinstance(err, LookupError)


async def fill(ab: Abathur, n: int, *, start: float = 1000.0) -> Session:
    """A session with n events at timestamps start, start+1, ... and contents 1..n."""
    s = await ab.sessions.create(app="a", user="u")
    for i in range(1, n + 1):
        s = await ab.sessions.append_event(s.id, ev(i, timestamp=start + i - 1))
    return s


async def test_get_returns_events_in_order(ab):
    s = await fill(ab, 5)
    got = await ab.sessions.get(s.id)
    assert [(e.seq, e.content, e.timestamp) for e in got.events] == [
        (i, i, 999.0 + i) for i in range(1, 6)]
    assert all(e.author == "user" for e in got.events)


@pytest.mark.parametrize(("last_n", "expected"), [
    (None, [1, 2, 3, 4, 5]), (0, []), (1, [5]), (3, [3, 4, 5]), (5, [1, 2, 3, 4, 5]),
    (50, [1, 2, 3, 4, 5]),
])
async def test_get_last_n(ab, last_n, expected):
    s = await fill(ab, 5)
    got = await ab.sessions.get(s.id, last_n=last_n)
    assert [e.seq for e in got.events] == expected
    assert got.revision == 5


@pytest.mark.parametrize(("after", "last_n", "expected"), [
    (1001.0, None, [3, 4, 5]),          # timestamps 1000..1004: strictly after 1001
    (1001.5, None, [3, 4, 5]),
    (999, None, [1, 2, 3, 4, 5]),
    (1004.0, None, []),
    (1000.0, 2, [4, 5]),                # the newest 2 of those after
    (1002.0, 5, [4, 5]),
    (1000.0, 0, []),
])
async def test_get_after(ab, after, last_n, expected):
    s = await fill(ab, 5)
    got = await ab.sessions.get(s.id, after=after, last_n=last_n)
    assert [e.seq for e in got.events] == expected


async def test_get_after_orders_by_seq_not_timestamp(ab):
    s = await ab.sessions.create(app="a", user="u")
    for ts in (30.0, 10.0, 20.0):
        await ab.sessions.append_event(s.id, ev(ts, timestamp=ts))
    got = await ab.sessions.get(s.id, after=15.0)
    assert [(e.seq, e.content) for e in got.events] == [(1, 30.0), (3, 20.0)]


@pytest.mark.parametrize("last_n", [-1, 1.5, "3", True])
async def test_get_rejects_bad_last_n(ab, last_n):
    s = await ab.sessions.create(app="a", user="u")
    await expect_error(ab, InvalidInputError, "invalid_input",
                       lambda: ab.sessions.get(s.id, last_n=last_n))


@pytest.mark.parametrize("after", [math.nan, math.inf, "1", True])
async def test_get_rejects_bad_after(ab, after):
    s = await ab.sessions.create(app="a", user="u")
    await expect_error(ab, InvalidInputError, "invalid_input",
                       lambda: ab.sessions.get(s.id, after=after))


# --- append_event ------------------------------------------------------------------


async def test_append_event_sets_seq_timestamp_revision_and_status(ab):
    s = await ab.sessions.create(app="a", user="u")
    first = await ab.sessions.append_event(s.id, ev({"text": "hi"}, metadata={"m": 1}),
                                           expected_revision=0)
    assert (first.status, first.revision) == ("active", 1)
    (stored,) = first.events
    assert stored.seq == 1 and stored.content == {"text": "hi"} and stored.metadata == {"m": 1}
    assert stored.timestamp is not None and stored.timestamp >= s.created_at
    assert first.updated_at == stored.timestamp
    second = await ab.sessions.append_event(s.id, ev("again", timestamp=5.0),
                                            expected_revision=1)
    assert (second.revision, second.events[0].seq, second.events[0].timestamp) == (2, 2, 5.0)
    assert second.updated_at == 5.0
    got = await ab.sessions.get(s.id)
    assert [e.id for e in got.events] == [stored.id, second.events[0].id]
    assert got.events[0] == stored


async def test_append_event_without_expected_revision_skips_the_check(ab):
    s = await ab.sessions.create(app="a", user="u")
    for _ in range(3):
        await ab.sessions.append_event(s.id, ev())
    assert (await ab.sessions.get(s.id, last_n=0)).revision == 3


async def test_append_event_stale_revision_writes_nothing(ab):
    s = await ab.sessions.create(app="a", user="u")
    await ab.sessions.append_event(s.id, ev(), expected_revision=0)
    err = await expect_error(
        ab, StaleSessionError, "session.stale",
        lambda: ab.sessions.append_event(
            s.id, ev(state_delta={"app:x": 1, "user:y": 2, "z": 3}), expected_revision=0))
    assert (err.session_id, err.expected, err.actual) == (s.id, 0, 1)
    assert err.retryable
    assert "0" in str(err) and "1" in str(err)


async def test_append_event_unknown_session(ab):
    await expect_error(ab, SessionNotFoundError, "session.not_found",
                       lambda: ab.sessions.append_event("nope", ev()))


async def test_append_event_duplicate_event_id(ab):
    s = await ab.sessions.create(app="a", user="u")
    await ab.sessions.append_event(s.id, Event(id="e1", author="user"))
    await expect_error(ab, AlreadyExistsError, "already_exists",
                       lambda: ab.sessions.append_event(
                           s.id, Event(id="e1", author="user", state_delta={"k": 1})))
    # The same id in another session is fine.
    other = await ab.sessions.create(app="a", user="u")
    await ab.sessions.append_event(other.id, Event(id="e1", author="user"))


@pytest.mark.parametrize("event", [{"author": "user"}, "hello", None])
async def test_append_event_requires_an_event(ab, event):
    s = await ab.sessions.create(app="a", user="u")
    await expect_error(ab, InvalidInputError, "invalid_input",
                       lambda: ab.sessions.append_event(s.id, event))


@pytest.mark.parametrize("expected_revision", [-1, "0", 0.0, True])
async def test_append_event_rejects_bad_expected_revision(ab, expected_revision):
    s = await ab.sessions.create(app="a", user="u")
    await expect_error(ab, InvalidInputError, "invalid_input",
                       lambda: ab.sessions.append_event(
                           s.id, ev(), expected_revision=expected_revision))


@pytest.mark.parametrize("timestamp", [math.nan, math.inf, -math.inf])
async def test_append_event_rejects_non_finite_timestamp(ab, timestamp):
    s = await ab.sessions.create(app="a", user="u")
    await expect_error(ab, InvalidInputError, "invalid_input",
                       lambda: ab.sessions.append_event(s.id, ev(timestamp=timestamp)))


@pytest.mark.parametrize("bad", [" e1", "e1 ", "e\n1"])
async def test_append_event_rejects_padded_event_id(ab, bad):
    s = await ab.sessions.create(app="a", user="u")
    await expect_error(ab, InvalidIdError, "invalid_id",
                       lambda: ab.sessions.append_event(s.id, Event(id=bad, author="user")))


@pytest.mark.parametrize("author", [" user", "user ", "us\ter"])
async def test_append_event_rejects_padded_author(ab, author):
    s = await ab.sessions.create(app="a", user="u")
    await expect_error(ab, InvalidIdError, "invalid_id",
                       lambda: ab.sessions.append_event(s.id, Event(author=author)))


@pytest.mark.parametrize("delta", [{"app:": 1}, {"temp:": 1}, {" k": 1}, {"user: k": 1}])
async def test_append_event_rejects_bad_delta_keys(ab, delta):
    s = await ab.sessions.create(app="a", user="u")
    await expect_error(ab, InvalidIdError, "invalid_id",
                       lambda: ab.sessions.append_event(s.id, ev(state_delta=delta)))


async def test_append_event_rejects_non_json_content(ab):
    s = await ab.sessions.create(app="a", user="u")
    await expect_error(ab, ValueNotSerializableError, "invalid_json",
                       lambda: ab.sessions.append_event(s.id, ev(content=math.nan)))


async def test_append_event_size_limits(backend):
    async with backend.open(max_value_bytes=64) as ab:
        s = await ab.sessions.create(app="a", user="u")
        for event in (ev("x" * 100), ev(metadata={"m": "x" * 100}),
                      ev(state_delta={"k": "x" * 100})):
            await expect_error(ab, ValueTooLargeError, "value_too_large",
                               lambda event=event: ab.sessions.append_event(s.id, event))
        # Each delta fits, but the session state they add up to does not.
        await ab.sessions.append_event(s.id, ev(state_delta={"a": "x" * 30}))
        await expect_error(ab, ValueTooLargeError, "value_too_large",
                           lambda: ab.sessions.append_event(s.id, ev(state_delta={"b": "y" * 30})))


@pytest.mark.parametrize(("status", "words"), [
    ("paused", "resume"), ("terminated", "terminated"), ("archived", "archived"),
])
async def test_append_event_refused_unless_created_or_active(ab, status, words):
    s = await session_in(ab, status)
    err = await expect_error(ab, InvalidTransitionError, "invalid_transition",
                             lambda: ab.sessions.append_event(s.id, ev()))
    assert words in str(err)


async def test_append_event_after_resume(ab):
    s = await session_in(ab, "paused")
    s = await ab.sessions.set_status(s.id, "active")
    s = await ab.sessions.append_event(s.id, ev(), expected_revision=s.revision)
    assert (s.status, s.revision, s.events[0].seq) == ("active", 4, 1)


async def test_append_event_is_audited(ab):
    # Issue 11, item 12: every event has its record (tests/unit/test_audit.py
    # shows that the record covers the event's content).
    s = await ab.sessions.create(app="a", user="u")
    before = await ab.audit.records()
    for _ in range(3):
        await ab.sessions.append_event(s.id, ev(state_delta={"app:x": 1}))
    new = (await ab.audit.records())[len(before):]
    assert [(r.action, r.entity, r.entity_id, r.detail) for r in new] == [
        ("event.append", "event", s.id, {"seq": n}) for n in (1, 2, 3)
    ]


# --- list -------------------------------------------------------------------------


async def test_list_newest_update_first_with_state_and_no_events(ab):
    s1 = await ab.sessions.create(app="a", user="alice", state={"k": 1, "app:x": 1})
    s2 = await ab.sessions.create(app="a", user="bob", state={"user:y": 2})
    s3 = await ab.sessions.create(app="a", user="alice")
    await ab.sessions.create(app="elsewhere", user="alice")
    await ab.sessions.append_event(s1.id, ev("bump"))
    listed = await ab.sessions.list(app="a")
    assert [s.id for s in listed] == [s1.id, s3.id, s2.id]
    assert [s.state for s in listed] == [{"app:x": 1, "k": 1}, {"app:x": 1},
                                         {"app:x": 1, "user:y": 2}]
    assert all(s.events == [] for s in listed)
    assert listed[0] == (await ab.sessions.get(s1.id, last_n=0))


async def test_list_filters_by_user_status_and_limit(ab):
    s1 = await ab.sessions.create(app="a", user="alice")
    s2 = await ab.sessions.create(app="a", user="alice")
    s3 = await ab.sessions.create(app="a", user="bob")
    await ab.sessions.terminate(s2.id)
    assert [s.id for s in await ab.sessions.list(app="a", user="alice")] == [s2.id, s1.id]
    assert [s.id for s in await ab.sessions.list(app="a", user="bob")] == [s3.id]
    assert await ab.sessions.list(app="a", user="carol") == []
    assert [s.id for s in await ab.sessions.list(app="a", status="created")] == [s3.id, s1.id]
    assert [s.id for s in await ab.sessions.list(app="a", user="alice",
                                                 status="terminated")] == [s2.id]
    assert [s.id for s in await ab.sessions.list(app="a", limit=2)] == [s2.id, s3.id]
    assert await ab.sessions.list(app="a", limit=0) == []
    assert await ab.sessions.list(app="nobody") == []


@pytest.mark.parametrize("kwargs", [{"status": "done"}, {"status": 1}, {"limit": -1},
                                    {"limit": "10"}, {"limit": True}])
async def test_list_rejects_bad_options(ab, kwargs):
    await expect_error(ab, InvalidInputError, "invalid_input",
                       lambda: ab.sessions.list(app="a", **kwargs))


# --- lifecycle --------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new"), LEGAL)
async def test_legal_transitions(ab, old, new):
    s = await session_in(ab, old)
    after = await ab.sessions.set_status(s.id, new, expected_revision=s.revision)
    assert (after.status, after.revision) == (new, s.revision + 1)
    assert after.updated_at >= s.updated_at
    assert (await ab.sessions.get(s.id)).status == new
    records = await ab.audit.records(entity="session", entity_id=s.id)
    assert (records[-1].action, records[-1].detail) == (
        "session.status", {"from": old, "to": new, "revision": s.revision + 1})


async def test_illegal_transitions(ab):
    for old, new in ILLEGAL:
        s = await session_in(ab, old)
        err = await expect_error(ab, InvalidTransitionError, "invalid_transition",
                                 lambda s=s, new=new: ab.sessions.set_status(s.id, new))
        assert repr(old) in str(err) and repr(new) in str(err)
    assert ("active", "active") in ILLEGAL and ("terminated", "active") in ILLEGAL
    assert ("archived", "terminated") in ILLEGAL


async def test_set_status_keeps_state(ab):
    s = await ab.sessions.create(app="a", user="u", state={"k": 1, "app:a": 2})
    s = await ab.sessions.set_status(s.id, "active")
    assert s.state == {"app:a": 2, "k": 1}


@pytest.mark.parametrize("status", ["ACTIVE", "done", "", None, 1])
async def test_set_status_rejects_unknown_status(ab, status):
    s = await ab.sessions.create(app="a", user="u")
    await expect_error(ab, InvalidInputError, "invalid_input",
                       lambda: ab.sessions.set_status(s.id, status))


async def test_set_status_stale_revision(ab):
    s = await ab.sessions.create(app="a", user="u")
    await ab.sessions.append_event(s.id, ev())
    err = await expect_error(ab, StaleSessionError, "session.stale",
                             lambda: ab.sessions.set_status(s.id, "paused", expected_revision=0))
    assert (err.expected, err.actual) == (0, 1)
    await expect_error(ab, StaleSessionError, "session.stale",
                       lambda: ab.sessions.terminate(s.id, expected_revision=5))


async def test_set_status_unknown_session(ab):
    await expect_error(ab, SessionNotFoundError, "session.not_found",
                       lambda: ab.sessions.set_status("nope", "active"))
    await expect_error(ab, SessionNotFoundError, "session.not_found",
                       lambda: ab.sessions.terminate("nope"))


async def test_terminate(ab):
    s = await ab.sessions.create(app="a", user="u")
    s = await ab.sessions.append_event(s.id, ev())
    s = await ab.sessions.terminate(s.id, expected_revision=1)
    assert (s.status, s.revision) == ("terminated", 2)
    await expect_error(ab, InvalidTransitionError, "invalid_transition",
                       lambda: ab.sessions.terminate(s.id))


def test_transition_table_matches_the_design():
    legal = {(a, b) for a, targets in sessions_module.TRANSITIONS.items() for b in targets}
    assert legal == set(LEGAL)
    assert set(sessions_module.STATUSES) == set(ALL_STATUSES)


# --- delete -----------------------------------------------------------------------


@pytest.mark.sqlite_only("reads the SQLite tables to check what is stored")
async def test_delete_cascades_events_and_tasks_but_keeps_shared_state(ab):
    s = await ab.sessions.create(app="a", user="u", state={"app:x": 1, "user:y": 2, "z": 3})
    keep = await ab.sessions.create(app="a", user="u")
    for _ in range(3):
        await ab.sessions.append_event(s.id, ev())
    await ab.sessions.append_event(keep.id, ev())
    await ab.tasks.create(session_id=s.id, prompt="p")
    kept_task = await ab.tasks.create(session_id=keep.id, prompt="q")
    await ab.sessions.delete(s.id)
    await expect_error(ab, SessionNotFoundError, "session.not_found",
                       lambda: ab.sessions.get(s.id))
    assert await rows(ab, "SELECT count(*) FROM events WHERE session_id = ?", (s.id,)) == [(0,)]
    assert await rows(ab, "SELECT count(*) FROM tasks WHERE session_id = ?", (s.id,)) == [(0,)]
    assert len((await ab.sessions.get(keep.id)).events) == 1
    assert [t.id for t in await ab.tasks.list(session_id=keep.id)] == [kept_task.id]
    assert await ab.sessions.get_app_state(app="a") == {"x": 1}
    assert await ab.sessions.get_user_state(app="a", user="u") == {"y": 2}
    records = await ab.audit.records(entity="session", entity_id=s.id)
    assert records[-1].action == "session.delete"
    assert records[-1].detail["events"] == 3
    assert (await ab.audit.verify()).is_ok


async def test_delete_unknown_session(ab):
    await expect_error(ab, SessionNotFoundError, "session.not_found",
                       lambda: ab.sessions.delete("nope"))
    s = await ab.sessions.create(app="a", user="u")
    await ab.sessions.delete(s.id)
    await expect_error(ab, SessionNotFoundError, "session.not_found",
                       lambda: ab.sessions.delete(s.id))


# --- ids ----------------------------------------------------------------------------

BAD_IDS = ["", "   ", " s1", "s1 ", "s\n1", "s\x001", "x" * 257, 7, None]

# Every method that takes an id, app or user: (name, call with the bad value in place).
ID_CALLS: list[tuple[str, Callable[[Abathur, Any], Awaitable[Any]]]] = [
    ("create app", lambda ab, bad: ab.sessions.create(app=bad, user="u")),
    ("create user", lambda ab, bad: ab.sessions.create(app="a", user=bad)),
    ("create id", lambda ab, bad: ab.sessions.create(app="a", user="u", session_id=bad)),
    ("get", lambda ab, bad: ab.sessions.get(bad)),
    ("list app", lambda ab, bad: ab.sessions.list(app=bad)),
    ("list user", lambda ab, bad: ab.sessions.list(app="a", user=bad)),
    ("append_event", lambda ab, bad: ab.sessions.append_event(bad, ev())),
    ("get_user_state app", lambda ab, bad: ab.sessions.get_user_state(app=bad, user="u")),
    ("get_user_state user", lambda ab, bad: ab.sessions.get_user_state(app="a", user=bad)),
    ("get_app_state", lambda ab, bad: ab.sessions.get_app_state(app=bad)),
    ("set_status", lambda ab, bad: ab.sessions.set_status(bad, "active")),
    ("terminate", lambda ab, bad: ab.sessions.terminate(bad)),
    ("delete", lambda ab, bad: ab.sessions.delete(bad)),
]


@pytest.mark.parametrize(("name", "call"), ID_CALLS, ids=[name for name, _ in ID_CALLS])
async def test_bad_ids_are_rejected_everywhere(ab, name, call):
    # " s1" must not reach a session "s1" (or make one): ids are rejected, not trimmed.
    await ab.sessions.create(app="a", user="u", session_id="s1")
    for bad in BAD_IDS:
        if name in ("list user", "list app") and bad is None:
            continue  # user=None means "every user", app=None "every app"
        if name == "create id" and bad is None:
            continue  # session_id=None means "make one up"
        await expect_error(ab, InvalidIdError, "invalid_id", lambda bad=bad: call(ab, bad))


# --- durability and plans -------------------------------------------------------------


async def test_reopened_database_returns_the_same_data(backend):
    async with backend.open() as ab:
        s = await ab.sessions.create(app="a", user="u", state={"app:x": 1, "user:y": [2], "z": 3})
        for i in range(3):
            await ab.sessions.append_event(s.id, ev({"i": i}, state_delta={"z": i},
                                                    metadata={"n": i}))
        await ab.sessions.set_status(s.id, "paused")
        before = await ab.sessions.get(s.id)
        listed = await ab.sessions.list(app="a")
    async with backend.open() as ab:
        assert await ab.sessions.get(s.id) == before
        assert await ab.sessions.list(app="a") == listed
        assert before.status == "paused" and before.revision == 4 and len(before.events) == 3
        assert before.state == {"app:x": 1, "user:y": [2], "z": 2}


PLANS = [
    (sqlite_sessions.SQL_SESSION_BY_ID, ("s",), "USING INDEX sqlite_autoindex_sessions_1"),
    (sqlite_sessions.SQL_LAST_EVENTS, ("s", 5), "USING PRIMARY KEY"),
    (sqlite_sessions.SQL_EVENTS_AFTER, ("s", 1.0), "USING INDEX events_by_time"),
    (sqlite_sessions.SQL_LAST_EVENTS_AFTER, ("s", 1.0, 5), "USING INDEX events_by_time"),
    (sqlite_sessions.SQL_LIST_SESSIONS, {"app": "a", "user": "u", "status": None, "limit": 10},
     "sessions_by_app_user"),
    (sqlite_sessions.SQL_LIST_APP_SESSIONS, {"app": "a", "status": None, "limit": 10},
     "sessions_by_app_user"),
]


@pytest.mark.sqlite_only("EXPLAIN QUERY PLAN of the SQLite store's SQL")
@pytest.mark.parametrize(("sql", "params", "expected"), PLANS)
async def test_hot_queries_use_their_index(ab, sql, params, expected):
    plan = await rows(ab, "EXPLAIN QUERY PLAN " + sql, params)
    details = " | ".join(row[-1] for row in plan)
    assert expected in details, details
    assert "SCAN" not in details, details


@pytest.mark.sqlite_only("EXPLAIN QUERY PLAN of the SQLite store's SQL")
async def test_last_events_does_not_sort(ab):
    plan = await rows(ab, "EXPLAIN QUERY PLAN " + sqlite_sessions.SQL_LAST_EVENTS, ("s", 5))
    assert not any("TEMP B-TREE" in row[-1] for row in plan)
