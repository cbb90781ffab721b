"""Every hot query uses the index that exists for it (EXPLAIN QUERY PLAN of the SQL that ships)."""

from __future__ import annotations

import time

import apsw
import pytest

from abathur import Abathur, sessions, tasks
from abathur.backends.sqlite import memories as sqlite_memories


def plan(conn: apsw.Connection, sql: str, params: tuple | dict) -> str:
    rows = conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    return " | ".join(str(row[-1]) for row in rows)


def memory_prefix_params() -> dict:
    return sqlite_memories.list_params("user:alice", now=time.time())  # what list() binds


HOT_QUERIES = [
    (
        "session by id",
        lambda: sessions.SQL_SESSION_BY_ID,
        lambda: ("s1",),
        "SEARCH sessions USING INDEX sqlite_autoindex_sessions_1 (id=?)",
    ),
    (
        "last N events",
        lambda: sessions.SQL_LAST_EVENTS,
        lambda: ("s1", 50),
        "SEARCH events USING PRIMARY KEY (session_id=?)",
    ),
    (
        "events after a time",
        lambda: sessions.SQL_EVENTS_AFTER,
        lambda: ("s1", 1.0),
        "USING INDEX events_by_time (session_id=? AND timestamp>?)",
    ),
    (
        "sessions of a user",
        lambda: sessions.SQL_LIST_SESSIONS,
        None,
        "USING INDEX sessions_by_app_user",
    ),
    (
        "memory current version",
        lambda: sqlite_memories.SQL_CURRENT_MEMORY,
        lambda: ("user:a", "k"),
        "USING INDEX memories_current (namespace=? AND key=?)",
    ),
    (
        "namespace prefix listing",
        lambda: sqlite_memories.SQL_LIST_PREFIX,
        memory_prefix_params,
        "USING INDEX memories_current (namespace>? AND namespace<?)",
    ),
    (
        "tasks of a session",
        lambda: tasks.SQL_TASKS_OF_SESSION,
        lambda: ("s1",),
        "USING INDEX tasks_by_session (session_id=?)",
    ),
]


@pytest.mark.parametrize(
    ("name", "sql", "params", "expected"), HOT_QUERIES, ids=[q[0] for q in HOT_QUERIES]
)
async def test_hot_query_uses_its_index(ab: Abathur, name, sql, params, expected) -> None:
    text = sql()
    bound = params() if params else tuple(None for _ in range(text.count("?")))
    got = await ab.db.read(lambda c: plan(c, text, bound))
    assert expected in got, f"{name}: {got}"
    assert "SCAN" not in got.replace("SCAN CONSTANT ROW", ""), f"{name} scans: {got}"
