"""PgAuditStore against SQLite's audit store (issue 14): purge look-ups over
JSON details, redaction, paging, and what two concurrent audited writes get.

The same records go into both stores; every look-up must give the same
answer. The service-level chain (hashes byte-identical to SQLite's) is
tests/unit/test_pg_sessions.py's scenario.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors

import abathur.audit
import abathur.backends.postgres.audit as pg_audit
from abathur.backends.postgres.audit import PgAuditStore
from abathur.backends.postgres.context import PgContext
from abathur.backends.sqlite import Database
from abathur.config import Settings
from abathur.stores.audit import AuditHead, AuditRow, MemoryBounds, Rehash

Conn = psycopg.Connection[tuple[Any, ...]]


def _store(conn: Conn) -> PgAuditStore:
    return PgAuditStore(conn, PgContext("x", Settings()))


def _rec(seq: int, action: str, entity: str, entity_id: str, detail: str) -> AuditRow:
    return AuditRow(seq, seq + 0.5, action, entity, entity_id, detail, "p", "h",
                    bytes([seq]) * 16, "b", None)


# Names chosen to sit on the edges of the byte ranges: 'p/' .. 'p0' is the
# prefix's own namespace, 'p:' .. 'p;' the ones under it; '_' and '%' are
# plain characters, never patterns; 'é' sorts after every ASCII byte.
RECORDS = [
    _rec(1, "memory.put", "memory", "p/k", "{}"),
    _rec(2, "memory.put", "memory", "p:sub/k", "{}"),
    _rec(3, "memory.put", "memory", "p_/k", "{}"),
    _rec(4, "memory.put", "memory", "pé/k", "{}"),
    _rec(5, "memory.put", "memory", "p0", "{}"),
    _rec(6, "memory.supersede", "memory", "q/loser", '{"winner":"p/w"}'),
    _rec(7, "memory.supersede", "memory", "q/loser", '{"winner":"q/w"}'),
    _rec(8, "archive.restore", "archive", "1", '{"kind":"versions","ref":"p:x/k"}'),
    _rec(9, "archive.restore", "archive", "2", '{"kind":"session","ref":"s1"}'),
    _rec(10, "archive.restore", "archive", "3", '{"kind":"memory","ref":"q/k"}'),
    # A NUL escaped in a detail: jsonb would refuse to parse it, json reads it.
    _rec(11, "session.create", "session", "s1",
         '{"app":"a","state":"\\u0000","user":"al_"}'),
    _rec(12, "session.create", "session", "s2", '{"app":"a","user":"alx"}'),
    _rec(13, "session.delete", "session", "s3", '{"app":"a","user":"al_"}'),
    _rec(14, "session.update", "session", "s4", '{"app":"a","user":"al_"}'),
    _rec(15, "event.append", "event", "s1", '{"seq":1}'),
    _rec(16, "task.create", "task", "t1", '{"session_id":"s1"}'),
    _rec(17, "task.create", "task", "t2", '{"session_id":"s2"}'),
    _rec(18, "task.update", "task", "t1", '{"status":"running"}'),
    _rec(19, "document_root.add", "document_root", "/r/a_b", "{}"),
    _rec(20, "document_root.add", "document_root", "/r/axb", "{}"),
    _rec(21, "memory.put", "memory", "p/zz", "{}"),
    # A NUL in a supersede's free-text reason (as the service's encoder writes it).
    _rec(22, "memory.supersede", "memory", "q/l2", '{"reason":"a\\u0000b","winner":"p:n/w"}'),
    # An id holding a backslash and 'u0000' as text: not a NUL, must still match.
    _rec(23, "session.create", "session", "s5",
         '{"app":"a","user":"al_\\\\u0000","x":"\\u0000"}'),
    _rec(24, "task.create", "task", "t5", '{"session_id":"s1","note":"\\\\\\u0000"}'),
]

BOUNDS = [
    MemoryBounds("p/", "p0", "p:", "p;"),
    MemoryBounds("p_/", "p_0", "p_:", "p_;"),
    MemoryBounds("q/", "q0", "q:", "q;"),
    MemoryBounds("pé/", "pé0", "pé:", "pé;"),
]


def _lookups(tx: Any) -> list[Any]:
    audit = tx.audit
    return [
        *(audit.memory_record_seqs(b) for b in BOUNDS),
        audit.user_session_ids("a", "al_"),
        audit.user_session_ids("a", "al%"),
        audit.user_session_ids("a", "al_\\u0000"),
        audit.session_task_ids({"s1", "s3"}),
        audit.session_task_ids(set()),
        audit.session_record_seqs({"s1", "s3"}, {"t1"}),
        audit.session_record_seqs(set(), set()),
        audit.root_record_seqs("/r/a_b"),
        audit.records(entity="task", entity_id=None, after_seq=0, limit=-1),
        audit.records(entity="task", entity_id="t1", after_seq=16, limit=5),
        audit.records(entity=None, entity_id=None, after_seq=3, limit=2),
        audit.first_format(),
        audit.head(),
    ]


def _fill(tx: Any) -> None:
    for record in RECORDS:
        tx.audit.insert(record)
    tx.audit.set_head(AuditHead(RECORDS[-1].seq, RECORDS[-1].hash))


def _redact(tx: Any) -> tuple[int, int, list[Any]]:
    first = tx.audit.redact([1, 11, 99])
    again = tx.audit.redact([11, 12])  # 11 is already redacted
    return first, again, list(tx.audit.chain())


async def _on_sqlite(tmp_path: Path, fn: Callable[[Any], Any]) -> Any:
    path = tmp_path / "ref.db"
    db = await Database.open(path, Settings(db=path))
    try:
        await db.write(_fill)
        return await db.write(fn)
    finally:
        await db.close()


async def test_lookups_and_redaction_match_sqlite(pg_conn: Conn, tmp_path: Path) -> None:
    expected = await _on_sqlite(tmp_path, lambda tx: (_lookups(tx), _redact(tx)))
    store = _store(pg_conn)
    tx = type("Tx", (), {"audit": store})()
    with pg_conn.transaction():
        _fill(tx)
        got = (_lookups(tx), _redact(tx))
    assert got[0] == expected[0]
    assert got[1] == expected[1]
    # Not vacuous: the look-ups found something, and the redaction blanked 1 and 11.
    assert expected[0][0] == {1, 2, 6, 8, 21, 22}
    assert expected[0][6] == {"s5"}
    assert expected[0][7] == {"t1", "t5"}
    assert got[1][0] == 2 and got[1][1] == 1


def test_chain_and_covered_rows_page_on_their_keys(
    pg_conn: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(pg_conn)
    with pg_conn.transaction():
        for record in RECORDS:
            store.insert(record)
        pg_conn.execute(
            "INSERT INTO sessions (id, app, \"user\", status, created_at, updated_at, audit_seq) "
            "VALUES ('s2', 'a', 'u', 'created', 1, 1, 12), ('s1', 'a', 'u', 'created', 2, 2, NULL)"
        )
        for sid, seq, audit_seq in (("s2", 1, 15), ("s1", 1, 99), ("s1", 2, 15), ("s2", 2, 15),
                                    ("s1", 3, 15)):
            pg_conn.execute(
                "INSERT INTO events (session_id, seq, id, author, timestamp, audit_seq) "
                "VALUES (%(s)s, %(q)s, %(i)s, 'u', 1.5, %(a)s)",
                {"s": sid, "q": seq, "i": f"e{seq}", "a": audit_seq},
            )
        columns = ("session_id", "seq", "id", "author", "content", "state_delta", "metadata",
                   "timestamp")
        whole_events = list(store.covered_rows("events", columns))
        whole_sessions = list(store.covered_rows("sessions", ("id", "app", "user", "created_at")))
        whole_chain = list(store.chain())
        pg_conn.execute(
            "INSERT INTO memories (namespace, key, version, type, value, created_at, "
            "first_created_at, expires_at, audit_seq) "
            "VALUES ('user:a', 'k', 3, 'semantic', '\"v\"', 2.5, 1.5, NULL, 21)"
        )
        (memory,) = store.covered_rows("memories", abathur.audit.COVERED["memories"])
        monkeypatch.setattr(pg_audit, "_PAGE", 2)
        assert list(store.covered_rows("events", columns)) == whole_events
        assert list(store.chain()) == whole_chain
        assert list(store.covered_rows("sessions", ("id", "app", "user", "created_at"))) == (
            whole_sessions
        )
    assert [r.seq for r in whole_chain] == list(range(1, 25))
    # The events' primary key order, as SQLite's WITHOUT ROWID table gives them.
    assert [r.label for r in whole_events] == [
        "event s1 #1", "event s1 #2", "event s1 #3", "event s2 #1", "event s2 #2"]
    first = whole_events[0]
    assert (first.audit_seq, first.record_seq, first.salt) == (99, None, None)
    second = whole_events[1]
    assert (second.record_seq, second.salt, second.redacted) == (15, bytes([15]) * 16, 0)
    assert second.values == ("s1", 2, "e2", "u", None, "{}", "{}", 1.5)
    assert (memory.label, memory.record_seq) == ("memory user:a/k v3", 21)
    assert memory.values == ("user:a", "k", 3, "semantic", '"v"', "{}", "live", None, None, 1.5,
                             2.5, None)
    # Sessions in insertion order (their rowid), "user" quoted as an identifier.
    assert [(r.label, r.values) for r in whole_sessions] == [
        ("session s2", ("s2", "a", "u", 1.0)), ("session s1", ("s1", "a", "u", 2.0))]


def test_columns_rows_without_record_and_rehash(pg_conn: Conn) -> None:
    store = _store(pg_conn)
    with pg_conn.transaction():
        assert store.has_column("audit_log", "content_hash")
        assert store.has_column("sessions", "user")
        assert not store.has_column("sessions", "nope")
        assert not store.has_column("nope", "id")
        assert store.first_format() is None and store.head() is None
        assert not store.has_rows_without_record(["sessions", "tasks", "events", "memories"])
        pg_conn.execute(
            "INSERT INTO sessions (id, app, \"user\", status, created_at, updated_at) "
            "VALUES ('s', 'a', 'u', 'created', 1, 1)"
        )
        assert store.has_rows_without_record(["tasks", "sessions"])
        assert store.rows_without_record(["sessions", "tasks"]) == {"sessions": 1, "tasks": 0}
        store.insert(_rec(1, "x", "x", "x", "{}"))
        store.insert(_rec(2, "x", "x", "x", "{}"))
        store.rehash([Rehash(1, None, None, "p1", "h1"), Rehash(2, b"\x00" * 16, "b2", "p2", "h2")])
        rows = store.records_after(0, -1)
        assert [(r.salt, r.body_hash, r.prev_hash, r.hash, r.format) for r in rows] == [
            (None, None, "p1", "h1", 2), (b"\x00" * 16, "b2", "p2", "h2", 2)]
        assert store.records_after(1, 1) == rows[1:]
        assert store.archived_rows() == ({}, 0)


def test_memories_not_at_newest_matches_sqlite_order(pg_conn: Conn) -> None:
    store = _store(pg_conn)
    rows = [
        # (namespace, key, version, is_current)
        ("b", "k", 1, 1), ("b", "k", 2, 0),  # current is not the newest
        ("a", "k", 1, 0), ("a", "k", 2, 0),  # none current
        ("a", "j", 1, 1),  # fine
        ("c", "k", 1, 0),  # none current
    ]
    with pg_conn.transaction():
        for ns, key, version, current in rows:
            pg_conn.execute(
                "INSERT INTO memories (namespace, key, version, type, value, created_at, "
                "first_created_at, is_current) VALUES (%s, %s, %s, 'semantic', '1', 1, 1, %s)",
                (ns, key, version, current),
            )
        assert store.memories_not_at_newest(2) == [("a", "k", 2, 0, None), ("b", "k", 2, 1, 1)]
        assert len(store.memories_not_at_newest(-1)) == 3


def test_a_visible_duplicate_seq_raises_unique_violation(pg_conn: Conn) -> None:
    store = _store(pg_conn)
    with pg_conn.transaction():
        store.insert(_rec(1, "x", "x", "x", "{}"))
        with pytest.raises(errors.UniqueViolation):
            store.insert(_rec(1, "y", "y", "y", "{}"))
        assert [r.action for r in store.chain()] == ["x"]


def _append_concurrently(url: str, seq: int) -> dict[str, str]:
    """Two SERIALIZABLE writers read the same head, then append the same next record."""
    conns = [psycopg.connect(url, autocommit=True) for _ in range(2)]
    results: dict[str, str] = {}
    try:
        for conn in conns:
            conn.execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
            _store(conn).head()
        order = threading.Event()

        def append(name: str, conn: Conn) -> None:
            store = _store(conn)
            try:
                store.insert(_rec(seq, name, "x", "x", "{}"))
                order.set()
                store.set_head(AuditHead(seq, "h"))
                conn.execute("COMMIT")
                results[name] = "committed"
            except psycopg.Error as exc:
                results[name] = type(exc).__name__
                conn.rollback()

        first = threading.Thread(target=append, args=("first", conns[0]))
        first.start()
        order.wait(10)
        second = threading.Thread(target=append, args=("second", conns[1]))
        second.start()
        first.join(10)
        second.join(10)
    finally:
        for conn in conns:
            conn.close()
    return results


@pytest.mark.parametrize("existing", [0, 1], ids=["first-record", "later-record"])
def test_concurrent_appends_get_a_retryable_serialization_failure(
    pg_conn: Conn, pg_url: str, existing: int
) -> None:
    # The backend retries serialization failures; a unique violation on the
    # audit seq (what a plain INSERT gives here) it would not.
    with pg_conn.transaction():
        for seq in range(1, existing + 1):
            _store(pg_conn).insert(_rec(seq, "x", "x", "x", "{}"))
            _store(pg_conn).set_head(AuditHead(seq, "h"))
    results = _append_concurrently(pg_url, existing + 1)
    assert results == {"first": "committed", "second": "SerializationFailure"}
    with pg_conn.transaction():
        assert [r.action for r in _store(pg_conn).chain()][existing:] == ["first"]
