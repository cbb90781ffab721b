"""PgSessionStore and PgTaskStore against SQLite's stores (issue 14).

The real services (:class:`~abathur.sessions.SessionService`,
:class:`~abathur.tasks.TaskService`) run the same scenario on a SQLite
:class:`~abathur.backends.sqlite.Database` and on a small PostgreSQL stand-in
for the backend (:class:`PgMini`, below: the PostgreSQL stores in one
SERIALIZABLE transaction per write), with the clock, the ids and the audit
salts fixed. Everything the services return, every row the stores hand back
and every audit hash must be the same on both.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

import abathur.audit
from abathur import Event
from abathur.backends.postgres.context import PgContext
from abathur.backends.postgres.metrics import PgMetricsStore
from abathur.backends.postgres.sessions import PgSessionStore
from abathur.backends.postgres.tasks import PgTaskStore
from abathur.backends.postgres.transaction import PgTransaction
from abathur.backends.sqlite import Database
from abathur.config import Settings
from abathur.sessions import SessionService
from abathur.stores.sessions import PurgeCounts
from abathur.stores.tasks import TaskRow
from abathur.tasks import TaskService

Conn = psycopg.Connection[tuple[Any, ...]]


class PgTx(PgTransaction):
    """The backend's transaction on one connection, outside the backend."""

    def __init__(self, conn: Conn) -> None:
        super().__init__(conn, PgContext("postgresql://test", Settings()))


class PgMini:
    """Just enough of a Backend for the session and task services, on ``conn``.

    Writes run in a SERIALIZABLE transaction, reads in REPEATABLE READ READ
    ONLY, as the contract says the PostgreSQL backend runs them.
    """

    name = "postgres-test"

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.settings = Settings()
        self.is_closed = False

    async def write(self, fn: Callable[[Any], Any]) -> Any:
        with self.conn.transaction():
            self.conn.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
            return fn(PgTx(self.conn))

    async def read(self, fn: Callable[[Any], Any]) -> Any:
        with self.conn.transaction():
            self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            return fn(PgTx(self.conn))

    async def close(self) -> None:
        self.is_closed = True


class Clock:
    """``time.time`` for the services: the scenario sets ``now`` before each step."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fixed(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """A settable clock, and audit salts that repeat: the same scenario gives the same hashes."""
    clock = Clock()
    monkeypatch.setattr(time, "time", clock)
    monkeypatch.setattr(abathur.audit.os, "urandom", counter_urandom())
    return clock


def counter_urandom() -> Callable[[int], bytes]:
    """``os.urandom`` giving 0, 1, 2, ... as big-endian bytes: salts that repeat per run."""
    salts = itertools.count()
    return lambda n: next(salts).to_bytes(n, "big")


async def scenario(db: Any, clock: Clock) -> list[Any]:
    """Every session and task call worth comparing; returns what each gave back."""
    sessions, tasks = SessionService(db), TaskService(db)
    out: list[Any] = []
    clock.now = 1_000_000.5
    # s1 and s3 are created at the same instant: the listing breaks the tie
    # by insertion order, newest first (SQLite's rowid).
    out.append(await sessions.create(
        app="a", user="alice", session_id="s1",
        state={"k": 1, "user:lang": "fr", "app:theme": "dark", "temp:t": 0},
    ))
    out.append(await sessions.create(app="a", user="bob", session_id="s2"))
    out.append(await sessions.create(app="a", user="alice", session_id="s3"))
    out.append(await sessions.create(app="b", user="alice", session_id="s4"))
    # Events: two at one timestamp, one with no content, unicode and a NUL escaped in JSON.
    for i, (at, content) in enumerate(
        [(1_000_010.0, "hi"), (1_000_010.0, None), (1_000_020.25, {"x": "é\u0000☃"}),
         (1_000_030.0, [1, 2.5, None])]
    ):
        clock.now = at
        out.append(await sessions.append_event("s1", Event(
            id=f"e{i}", author="user", content=content,
            state_delta={"k": i, "user:lang": f"l{i}", "temp:z": 1}, metadata={"i": i},
        )))
    out.append(await sessions.append_event("s3", Event(id="e0", author="agent", content="x",
                                                       timestamp=5.0)))
    out.append(await sessions.get("s1"))
    out.append(await sessions.get("s1", last_n=2))
    out.append(await sessions.get("s1", after=1_000_010.0))
    out.append(await sessions.get("s1", after=1_000_010.0, last_n=1))
    out.append(await sessions.get("s1", last_n=0))
    out.append(await sessions.list(app="a"))
    out.append(await sessions.list(app="a", user="alice"))
    out.append(await sessions.list())
    out.append(await sessions.list(user="alice", limit=2))
    out.append(await sessions.list(status="created"))
    clock.now = 1_000_040.0
    out.append(await sessions.terminate("s2"))
    out.append(await sessions.list(app="a", status="terminated"))
    out.append(await sessions.set_status("s1", "paused"))
    out.append(await sessions.get_user_state(app="a", user="alice"))
    out.append(await sessions.get_app_state(app="a"))
    # Tasks: two created at one instant (ties in creation order), then moved along.
    clock.now = 1_000_050.0
    for tid in ("t2", "t1", "t3"):
        out.append(await tasks.create(session_id="s1", prompt=f"do {tid}", task_id=tid,
                                      metadata={"n": tid}))
    out.append(await tasks.create(session_id="s2", prompt="other", task_id="t4"))
    clock.now = 1_000_060.0
    out.append(await tasks.update("t1", status="running"))
    out.append(await tasks.update("t1", status="succeeded", result={"ok": [1, "two"]}))
    out.append(await tasks.update("t3", status="cancelled"))
    out.append(await tasks.list(session_id="s1"))
    out.append(await tasks.list())
    out.append(await tasks.list(status="pending"))
    out.append(await tasks.list(limit=2))
    out.append(await tasks.get("t1"))
    clock.now = 1_000_070.0
    await sessions.delete("s3")
    out.append(await sessions.purge(app="a", user="alice", dry_run=True))
    out.append(await sessions.purge(app="a", user="alice"))
    out.append(await sessions.list())
    out.append(await tasks.list())
    out.append(await db.read(abathur.audit.verify))
    out.append(await db.read(lambda tx: tx.audit.records(
        entity=None, entity_id=None, after_seq=0, limit=-1)))
    out.append(await db.read(lambda tx: list(tx.audit.chain())))
    return out


async def _sqlite(tmp_path: Path, run: Callable[[Any], Awaitable[Any]]) -> Any:
    path = tmp_path / "ref.db"
    db = await Database.open(path, Settings(db=path))
    try:
        return await run(db)
    finally:
        await db.close()


async def test_services_give_the_same_results_and_hashes_as_on_sqlite(
    pg_conn: Conn, tmp_path: Path, fixed: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = await _sqlite(tmp_path, lambda db: scenario(db, fixed))
    monkeypatch.setattr(abathur.audit.os, "urandom", counter_urandom())
    got = await scenario(PgMini(pg_conn), fixed)
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g == e, f"step {i}"
    report = got[-3]
    assert report.is_ok and report.records == 20 and report.rows_verified == 3, report
    # The purge redacted alice's records and left bob's alone.
    chain = got[-1]
    assert any(r.redacted for r in chain)
    assert any(r.entity_id == "s2" and not r.redacted for r in chain)


def test_listings_break_ties_by_insertion_order_and_take_limit_minus_one(pg_conn: Conn) -> None:
    store = PgSessionStore(pg_conn, PgContext("x", Settings()))
    tasks = PgTaskStore(pg_conn, PgContext("x", Settings()))
    with pg_conn.transaction():
        # Ids in the reverse of insertion order: an id tie-break would flip them.
        for sid in ("z", "m", "a"):
            store.insert_session(sid, app="p", user="u", state="{}", at=5.0, audit_seq=1)
        for tid in ("tz", "tm", "ta"):
            tasks.insert(TaskRow(tid, "z", "p", "pending", None, None, "{}", 7.0, 7.0),
                         audit_seq=2)
        for seq in (1, 2, 3):
            store.insert_event("z", (seq, f"e{seq}", "u", None, "{}", "{}", 9.0), audit_seq=3)
        listed = [r.id for r in store.list_sessions(app=None, user=None, status=None, limit=-1)]
        assert listed == ["a", "m", "z"]
        assert [r.id for r in store.list_sessions(app="p", user="u", status=None, limit=2)] == [
            "a", "m"]
        assert [r.id for r in tasks.tasks_of_session("z")] == ["tz", "tm", "ta"]
        assert [r.id for r in tasks.all_tasks(status=None, limit=-1)] == ["ta", "tm", "tz"]
        assert [r.id for r in tasks.all_tasks(status="pending", limit=1)] == ["ta"]
        assert tasks.all_tasks(status="running", limit=-1) == []
        assert [e[0] for e in store.last_events("z", -1)] == [3, 2, 1]
        assert [e[0] for e in store.last_events_after("z", 8.5, -1)] == [3, 2, 1]
        assert store.last_events_after("z", 9.0, -1) == []
        # An update moves a session to the front; among equal updated_at, rowid decides.
        store.set_status("z", status="active", revision=1, at=6.0)
        assert [r.id for r in store.list_sessions(app="p", user=None, status=None, limit=-1)] == [
            "z", "a", "m"]


def test_event_rows_are_typed_tuples(pg_conn: Conn) -> None:
    store = PgSessionStore(pg_conn, PgContext("x", Settings()))
    with pg_conn.transaction():
        store.insert_session("s", app="p", user="u", state="{}", at=5, audit_seq=1)
        store.insert_event("s", (1, "e", "u", None, '{"a":1}', "{}", 3), audit_seq=2)
        (row,) = store.last_events("s", 1)
        session = store.session_row("s")
    assert type(row) is tuple
    # Integers given for REAL columns come back as floats, as SQLite's STRICT REAL does.
    assert row == (1, "e", "u", None, '{"a":1}', "{}", 3.0)
    assert [type(v) for v in row] == [int, str, str, type(None), str, str, float]
    assert session is not None and type(session.created_at) is float


def test_purge_removes_only_the_users_rows_and_counts_them(pg_conn: Conn) -> None:
    store = PgSessionStore(pg_conn, PgContext("x", Settings()))
    tasks = PgTaskStore(pg_conn, PgContext("x", Settings()))
    with pg_conn.transaction():
        for sid, user in (("s1", "al_"), ("s2", "al_"), ("s3", "alx"), ("s4", "al%")):
            store.insert_session(sid, app="a", user=user, state="{}", at=1.0, audit_seq=1)
            store.insert_event(sid, (1, "e", "u", None, "{}", "{}", 1.0), audit_seq=1)
            tasks.insert(TaskRow("t" + sid, sid, "p", "pending", None, None, "{}", 1.0, 1.0),
                         audit_seq=1)
            store.put_user_state("a", user, {"k": "1", "j": "2"}, at=1.0)
        store.put_user_state("b", "al_", {"k": "1"}, at=1.0)
        ids = store.user_session_ids("a", "al_")
        assert sorted(ids) == ["s1", "s2"]
        assert store.task_ids(ids) == {"ts1", "ts2"}
        assert store.task_ids([]) == set()
        assert store.purge_counts(ids, "a", "al_") == PurgeCounts(2, 2, 2, 0)
        store.purge(ids, "a", "al_")
        assert store.user_session_ids("a", "al_") == []
        assert sorted(store.user_session_ids("a", "alx") + store.user_session_ids("a", "al%")) == [
            "s3", "s4"]
        assert store.user_state("a", "al_") == {}
        assert store.user_state("b", "al_") == {"k": "1"}
        assert store.user_state("a", "al%") == {"k": "1", "j": "2"}
        assert store.count_events("s3") == 1 and store.count_events("s1") == 0
        assert {t.id for t in tasks.all_tasks(status=None, limit=-1)} == {"ts3", "ts4"}


def test_state_upserts_keep_other_keys(pg_conn: Conn) -> None:
    store = PgSessionStore(pg_conn, PgContext("x", Settings()))
    with pg_conn.transaction():
        store.put_app_state("a", {"x": "1", "y": "2"}, at=1.0)
        store.put_app_state("a", {"y": "null"}, at=2.0)
        store.put_app_state("a", {}, at=3.0)
        store.put_user_state("a", "u", {"x": '"v"'}, at=1.0)
        assert store.app_state("a") == {"x": "1", "y": "null"}
        assert store.user_state("a", "u") == {"x": '"v"'}
        assert store.app_state("nope") == {}
        updated = pg_conn.execute("SELECT key, updated_at FROM app_state ORDER BY key").fetchall()
    assert updated == [("x", 1.0), ("y", 2.0)]


# -- PgMetricsStore ------------------------------------------------------------


def test_metrics_add_refuses_bad_values_without_breaking_the_transaction(pg_conn: Conn) -> None:
    from abathur.stores.metrics import MetricRow, MetricWindow

    metrics = PgMetricsStore(pg_conn, PgContext("x", Settings()))
    good = MetricRow(at=20.0, seconds=60.0, kind="call", name="memory.put", count=3, errors=1,
                     total_ms=4.5, max_ms=2.0, histogram='{"1":3}')
    with pg_conn.transaction():
        assert metrics.has_metrics()
        metrics.add(MetricRow(at=30.0, seconds=60.0, kind="counter", name="late", count=1))
        with pytest.raises(OverflowError):
            metrics.add(MetricRow(at=10.0, seconds=60.0, kind="counter", name="n", count=2**70))
        with pytest.raises(ValueError):
            metrics.add(MetricRow(at=10.0, seconds=60.0, kind="counter", name="n\x00", count=1))
        with pytest.raises(ValueError):
            metrics.add(MetricRow(at=10.0, seconds=60.0, kind="reads", name="\ud800", count=1))
        with pytest.raises(TypeError):
            metrics.add(MetricRow(at=10.0, seconds=60.0, kind="counter", name="n",
                                  count=[1]))  # type: ignore[arg-type]
        metrics.add(good)
        metrics.add(MetricRow(at=5.0, seconds=60.0, kind="counter", name="old", count=1))
        metrics.prune(10.0)
        windows = metrics.windows(0.0)
    # The transaction went on after each refusal; windows in (at, id) order.
    assert windows == [
        MetricWindow("call", "memory.put", 3, 1, 4.5, 2.0, '{"1":3}'),
        MetricWindow("counter", "late", 1, 0, 0.0, 0.0, None),
    ]


# Rows for table_stats on both backends: (table, columns, rows). Days are
# truncated toward zero as SQLite's CAST does: 1.6 days is day 1, -0.5 is 0.
_DAY = 86400.0
_STATS_ROWS: list[tuple[str, tuple[str, ...], list[tuple[Any, ...]]]] = [
    ("sessions", ("id", "app", "user", "status", "created_at", "updated_at"), [
        ("s1", "a", "u", "created", 1.6 * _DAY, 1.6 * _DAY),
        ("s2", "a", "u", "terminated", 1.2 * _DAY, 2 * _DAY),
        ("s3", "a", "v", "terminated", -0.5 * _DAY, 0.0),
        ("s4", "b", "v", "active", 3.99 * _DAY, 4 * _DAY),
    ]),
    ("events", ("session_id", "seq", "id", "author", "timestamp"), [
        ("s1", 1, "e1", "u", 1.7 * _DAY), ("s1", 2, "e2", "u", 2.5 * _DAY),
        ("s1", 3, "e3", "u", 2.6 * _DAY), ("s2", 1, "e1", "u", -0.25 * _DAY),
    ]),
    ("memories", ("namespace", "key", "version", "type", "value", "created_at",
                  "first_created_at", "is_current", "status", "expires_at"), [
        ("user:a", "k", 1, "semantic", "1", 1.0, 1.5 * _DAY, 0, "live", None),
        ("user:a", "k", 2, "semantic", "2", 2.0, 1.5 * _DAY, 1, "live", None),
        ("user:a", "j", 1, "episodic", "1", 1.0, 2.5 * _DAY, 1, "live", None),
        ("user:b", "k", 1, "semantic", "1", 1.0, 0.5 * _DAY, 1, "deleted", None),
        ("user:b", "x", 1, "procedural", "1", 1.0, 2.2 * _DAY, 1, "live", 3 * _DAY),
        ("User:b", "y", 1, "semantic", "1", 1.0, 2.2 * _DAY, 1, "live", 10 * _DAY),
    ]),
]


def _stats(tx: Any) -> Any:
    return tx.metrics.table_stats(2.8 * _DAY, growth_since=-1 * _DAY, new_since=2.0 * _DAY)


async def test_table_stats_match_sqlite(pg_conn: Conn, tmp_path: Path) -> None:
    def fill_sqlite(tx: Any) -> None:
        for table, columns, rows in _STATS_ROWS:
            marks = ", ".join("?" for _ in columns)
            for row in rows:
                tx.conn.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                                row)

    async def on_sqlite(db: Any) -> Any:
        await db.write(fill_sqlite)
        return await db.read(_stats)

    expected = await _sqlite(tmp_path, on_sqlite)
    with pg_conn.transaction():
        for table, columns, rows in _STATS_ROWS:
            names = ", ".join('"user"' if c == "user" else c for c in columns)
            marks = ", ".join("%s" for _ in columns)
            for row in rows:
                pg_conn.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", row)
        got = _stats(PgTx(pg_conn))
        sizes = PgTx(pg_conn).metrics.sizes()
    assert got == expected
    assert got.session_growth == {1: 2, 0: 1, 3: 1}
    assert got.event_growth == {1: 1, 2: 2, 0: 1}
    # Same order as SQLite's GROUP BY, not only the same members.
    assert got.namespaces == expected.namespaces and [n.namespace for n in got.namespaces] == [
        "User:b", "user:a", "user:b"]
    assert sizes.db_bytes > sizes.archive_bytes > 0
    assert (sizes.wal_bytes, sizes.free_bytes) == (0, 0)
