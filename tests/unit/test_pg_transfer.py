"""PgTransferStore (issue 14): the rows of export and import on PostgreSQL.

The same import calls go to the PostgreSQL store and to the SQLite one; every
read then returns the same rows, of the same Python types, in the same order
(byte order of UTF-8 text, integer order of versions and seqs), whatever the
export's page size. An export written by the service is byte for byte the
file SQLite gives.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from abathur.backends.postgres.context import PgContext
from abathur.backends.postgres.transfer import PgTransferStore
from abathur.backends.sqlite import Database
from abathur.config import Settings
from abathur.transfer import TransferService

# Names whose byte order is easy to get wrong: case, ':' (0x3a) against ';'
# (0x3b) and '_', LIKE's wildcards, a 2-byte, a 3-byte (U+FFFF) and a 4-byte
# (U+1F600) character: UTF-16 or a locale would order the last two otherwise.
NAMES = ["a", "B", "b", "a:b", "a:b:c", "a;", "a_b", "a%b", "axb", "ab", "é", "\uffff", "😀"]
APPS = ["app1", "app2", "a_p", "😀"]
USERS = ["alice", "bob", "b%b"]
PREFIXES = ["a", "a:b", "a_b", "a%b", "ab", "é", "\uffff", "😀", "nope"]

FAR = 4_000_000_000.5  # an expiry in the future for every test run
# Floats that must come back bit for bit (the service compares rows with ==).
TIMES = [0.1 + 0.2, 1e-300, 1.7976931348623157e308, 1_700_000_000.123456789, 5e-324]


def _pg_store(conn: Any, url: str, page_rows: int = 500) -> PgTransferStore:
    store = PgTransferStore(conn, PgContext(url, Settings()))
    store.page_rows = page_rows
    return store


def _fill(store: Any) -> list[int]:
    """The same import calls on either backend; the ids insert_memory returned.

    Everything is inserted in reverse order, so a query that forgets its
    ORDER BY returns rows in the wrong order (a heap returns insertion order).
    """
    for i, app in enumerate(reversed(APPS)):
        for key in reversed(NAMES):
            store.insert_app_state(app, key, f'{{"n":{i},"k":"{key}"}}', TIMES[i % len(TIMES)])
            for user in reversed(USERS):
                store.insert_user_state(app, user, key, '"v\\u0000é"', TIMES[-1 - i % 3])
    for s, name in enumerate(reversed(NAMES)):
        sid = f"s-{name}"
        app, user = APPS[s % len(APPS)], USERS[s % len(USERS)]
        state = '{"x":[1,2.5,"é"],"n":null}'
        revision = 2**63 - 1 if s == 0 else s
        row = (app, user, "active" if s % 2 else "archived", state, revision, TIMES[s % 5], FAR)
        store.insert_session(sid, row, 1000 + s)
        # seq 12 down to 1: integer order puts 9 before 10, text order would not.
        for seq in range(12 if s < 2 else s % 3, 0, -1):
            content = None if seq == 3 else f'"event {seq} of {name}"'
            store.insert_event(
                (sid, seq, f"e{seq}", "user", content, "{}", '{"m":1}', 10.0 + seq), 2000 + seq
            )
        # Distinct created_at, inserted newest first; result/error NULL and not.
        for t in range(3, 0, -1):
            task = (sid, f"prompt {t}", "succeeded", f'{{"r":{t}}}' if t != 2 else None)
            task += (None if t != 1 else "boom", "{}", 100.0 - t, 200.0 + t)
            store.insert_task(f"t{t}-{name}", task, 3000 + t)
    ids: list[int] = []
    for n, namespace in enumerate(reversed(NAMES)):
        for key in ("k_", "k", "K"):
            count = 11 if key == "k" and n < 2 else 1 + n % 3
            for version in range(1, count + 1):
                last = version == count
                status = "live" if last else "superseded"
                by = (None, None) if last else (namespace, key)
                # One expired memory: its rows are exported by the store (the
                # service leaves them out); the others expire far ahead or never.
                expires = 1.0 if (key == "K" and n == 3) else (FAR if version % 2 else None)
                row = (version, "semantic", f'"{namespace}/{key} v{version}"', '{"t":["x"]}')
                row += (status, *by, TIMES[version % 5], TIMES[0], expires)
                ids.append(
                    store.insert_memory(namespace, key, row, is_current=last, audit_seq=9000 + n)
                )
    return ids


SQL_ARCHIVE = (
    "INSERT INTO archive (kind, ref, policy, app, {user}, namespace, rows, raw_bytes, "
    "stored_bytes, run_id, archived_at, payload) VALUES ({marks})"
)
ARCHIVE_ROWS = [
    ("session", "old-1", "age", "app1", "alice", None),
    ("session", "old-2", "age", "app1", "bob", None),
    ("session", "old-3", "age", "app2", "alice", None),
    ("memory", "a:b/k", "age", None, None, "a:b"),
    ("versions", "a_b/k", "age", None, None, "a_b"),
    ("memory", "axb/k", "age", None, None, "axb"),
    ("memory", "😀/k", "age", None, None, "😀"),
]


def _archive(execute: Callable[[str, tuple[Any, ...]], object], user: str, mark: str) -> None:
    sql = SQL_ARCHIVE.format(user=user, marks=", ".join([mark] * 12))
    for row in ARCHIVE_ROWS:
        execute(sql, (*row, 1, 10, 5, 1, 1.0, b"\x00zstd"))


def _typed(rows: Iterable[Any]) -> list[Any]:
    """Rows with each value's type beside it: 1 == 1.0 == Decimal(1) would hide a change."""
    return [tuple((type(v).__name__, v) for v in row) for row in rows]


def _ranges(prefix: str | None) -> dict[str, str | None]:
    # As abathur.transfer._Scope.range computes them.
    if prefix is None:
        return {"prefix": None, "after": None, "below": None}
    return {"prefix": prefix, "after": prefix + ";", "below": prefix + ":"}


def _collect(store: Any) -> dict[str, Any]:
    """Every read of the store, over every scope the tests care about."""
    out: dict[str, Any] = {}
    for app in (None, "app1", "😀", "nope"):
        out[f"app_state {app}"] = _typed(store.export_app_state(app=app))
        for user in (None, "alice", "b%b"):
            out[f"user_state {app} {user}"] = _typed(store.export_user_state(app=app, user=user))
            out[f"sessions {app} {user}"] = _typed(store.export_sessions(app=app, user=user))
            out[f"archived {app} {user}"] = store.count_archived_sessions(app=app, user=user)
    for name in [*NAMES, "missing"]:
        sid = f"s-{name}"
        out[f"events {sid}"] = _typed(store.export_events(sid))
        out[f"tasks {sid}"] = _typed(store.export_tasks(sid))
        out[f"session_row {sid}"] = store.session_row(sid)
        out[f"count_events {sid}"] = store.count_events(sid)
        out[f"event_row {sid}"] = [store.event_row(sid, seq) for seq in (1, 3, 10, 99)]
        out[f"exists {sid}"] = store.session_exists(sid)
        out[f"task_row {sid}"] = [store.task_row(f"t{t}-{name}") for t in (1, 2, 3)]
        for key in ("k", "k_", "K", "missing"):
            out[f"history {name} {key}"] = _typed(store.memory_history(name, key))
    for app in [*APPS, "nope"]:
        for key in ("a", "😀", "nope"):
            out[f"app_state_row {app} {key}"] = store.app_state_row(app, key)
            out[f"user_state_row {app} {key}"] = store.user_state_row(app, "b%b", key)
    for prefix in [None, *PREFIXES]:
        out[f"memories {prefix}"] = _typed(store.export_memories(**_ranges(prefix)))
        out[f"archived memories {prefix}"] = store.count_archived_memories(**_ranges(prefix))
    return out


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> Any:
    db = await Database.open(tmp_path / "reference.db")
    try:
        yield db
    finally:
        await db.close()


async def _sqlite_reference(db: Database) -> tuple[list[int], dict[str, Any]]:
    def write(tx: Any) -> list[int]:
        ids = _fill(tx.transfer)
        _archive(tx.conn.execute, "user", "?")
        return ids

    ids = await db.write(write)
    return ids, await db.read(lambda tx: _collect(tx.transfer))


async def test_every_read_matches_sqlite_at_every_page_size(
    pg_conn: Any, pg_url: str, sqlite_db: Database
) -> None:
    expected_ids, expected = await _sqlite_reference(sqlite_db)
    with pg_conn.transaction():
        ids = _fill(_pg_store(pg_conn, pg_url))
        _archive(pg_conn.execute, '"user"', "%s")
    # The identity numbers imported versions as SQLite's rowid does.
    assert ids == expected_ids == list(range(1, len(ids) + 1))
    for page_rows in (1, 2, 3, 500):
        with pg_conn.transaction():
            got = _collect(_pg_store(pg_conn, pg_url, page_rows))
        for name, value in expected.items():
            assert got[name] == value, f"{name} (page_rows={page_rows})"
        assert got == expected


async def test_rows_come_back_as_they_were_written(pg_conn: Any, pg_url: str) -> None:
    """Independently of SQLite: exports equal the written rows sorted in code-point
    order (which is UTF-8 byte order), and the look-ups return them exactly."""
    written: list[tuple[Any, ...]] = []

    class Recorder:
        def __init__(self, store: PgTransferStore) -> None:
            self.store = store

        def insert_memory(self, namespace: str, key: str, row: Any, **kw: Any) -> int:
            written.append((namespace, key, *row))
            return self.store.insert_memory(namespace, key, row, **kw)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.store, name)

    with pg_conn.transaction():
        store = _pg_store(pg_conn, pg_url, page_rows=4)
        _fill(Recorder(store))
        exported = list(store.export_memories(prefix=None, after=None, below=None))
        assert _typed(exported) == _typed(sorted(written, key=lambda r: r[:3]))
        under = list(store.export_memories(**_ranges("a")))
        assert {r[0] for r in under} == {"a", "a:b", "a:b:c"}  # not a;, a_b, a%b, ab, axb
        assert {r[0] for r in store.export_memories(**_ranges("a_b"))} == {"a_b"}
        apps = [r[0] for r in store.export_app_state(app=None)]
        assert apps == sorted(apps) and apps[-1] == "😀"
        sessions = list(store.export_sessions(app=None, user=None))
        assert sessions[0][0] == "s-B" and sessions[0][8] == 2
        assert sessions[-1][0] == "s-😀" and sessions[-1][5] == 2**63 - 1
        assert sessions[-1][8] == 12
        # Every float back bit for bit, and the row equal to what was written.
        state = '{"x":[1,2.5,"é"],"n":null}'
        row = ("app1", "alice", "archived", state, 2**63 - 1, TIMES[0], FAR)
        assert store.session_row("s-😀") == row
        stamps = [r[3] for r in store.export_app_state(app=None)]
        assert set(stamps) == set(TIMES[: len(APPS)])
        seqs = [r[0] for r in store.export_events("s-😀")]
        assert seqs == list(range(1, 13))
        assert store.event_row("s-😀", 3) == ("e3", "user", None, "{}", '{"m":1}', 13.0)
        assert store.user_state_row("a_p", "bob", "é") == ('"v\\u0000é"', TIMES[-2])


async def test_export_file_is_byte_for_byte_sqlites(
    pg_conn: Any, pg_url: str, sqlite_db: Database
) -> None:
    """The service's export (it only reads tx.transfer) over both stores."""
    await _sqlite_reference(sqlite_db)
    with pg_conn.transaction():
        _fill(_pg_store(pg_conn, pg_url))
        _archive(pg_conn.execute, '"user"', "%s")

    class PgReads:
        """Just enough of a Backend for export: a REPEATABLE READ READ ONLY snapshot."""

        async def read(self, fn: Callable[[Any], Any]) -> Any:
            with pg_conn.transaction():
                pg_conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                return fn(SimpleNamespace(transfer=_pg_store(pg_conn, pg_url, page_rows=3)))

    scopes: list[dict[str, str | None]] = [
        {},
        {"prefix": "a"},
        {"prefix": "😀"},
        {"app": "app1"},
        {"user": "alice"},
        {"app": "app2", "user": "b%b", "prefix": "a_b"},
    ]
    for scope in scopes:
        files = []
        reports = []
        for db in (sqlite_db, PgReads()):
            buffer = io.BytesIO()
            report = await TransferService(db).export_to(buffer, **scope)  # type: ignore[arg-type]
            files.append(buffer.getvalue())
            reports.append((report.counts, report.expired, report.archived))
        assert files[0] == files[1], scope
        assert reports[0] == reports[1], scope
    assert reports[0][1] == 0 and len(files[0].splitlines()) > 3


async def test_identity_continues_after_an_import(pg_conn: Any, pg_url: str) -> None:
    """Import never inserts an explicit memory id: the next ordinary insert
    (memory.put's, without an id) takes the next number, no collision."""
    with pg_conn.transaction():
        ids = _fill(_pg_store(pg_conn, pg_url))
        fresh = pg_conn.execute(
            "INSERT INTO memories (namespace, key, version, type, value, created_at, "
            "first_created_at) VALUES ('z', 'k', 1, 'semantic', '1', 1, 1) RETURNING id"
        ).fetchone()[0]
    assert fresh == max(ids) + 1
    with pg_conn.transaction():
        again = _pg_store(pg_conn, pg_url).insert_memory(
            "z", "k2", (1, "semantic", "2", "{}", "live", None, None, 1.0, 1.0, None),
            is_current=True, audit_seq=1,
        )  # fmt: skip
    assert again == fresh + 1


async def test_tasks_with_the_same_created_at_page_by_id(pg_conn: Any, pg_url: str) -> None:
    """Ties in created_at: SQLite orders them by rowid (insertion order), the
    tasks table here has no such column, so by id; paging must neither skip
    nor repeat a tied task."""
    with pg_conn.transaction():
        store = _pg_store(pg_conn, pg_url, page_rows=1)
        store.insert_session("s", ("a", "u", "active", "{}", 0, 1.0, 1.0), 1)
        for tid in ("t3", "t1", "t4", "t2"):
            row = ("s", "p", "pending", None, None, "{}", 5.0 if tid != "t4" else 4.0, 5.0)
            store.insert_task(tid, row, 1)
        order = [r[0] for r in store.export_tasks("s")]
    assert order == ["t4", "t1", "t2", "t3"]


async def test_wrong_row_length_is_refused(pg_conn: Any, pg_url: str) -> None:
    """A row is matched to columns by position: a short one is a bug, not a NULL."""
    with pg_conn.transaction():
        store = _pg_store(pg_conn, pg_url)
        with pytest.raises(ValueError, match="session row has 6 columns"):
            store.insert_session("s", ("a", "u", "active", "{}", 0, 1.0), 1)
