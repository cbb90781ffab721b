"""PgArchiveStore (issue 14): archiving and restoring through the store, compared to SQLite.

Each scenario is one plain ``fn(tx)`` that drives the store methods the
archival service uses (:mod:`abathur.archival.runs` and ``restore``) and
returns what it saw. It runs on PostgreSQL (a ``tx`` holding only the
``PgArchiveStore``, inside one transaction) and on a SQLite file through the
real backend; the two answers must be equal, and the rows and bytes that
come back must be the ones that left.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest

from abathur.archival.codecs import Codecs, sha256
from abathur.archival.payload import Stored, encode, open_payload, verify_archive
from abathur.archival.restore import restore_memory, restore_session, restore_versions
from abathur.backends.postgres.archive import PgArchiveStore
from abathur.backends.postgres.context import PgContext
from abathur.backends.sqlite import Database
from abathur.config import Settings
from abathur.stores.archive import (
    EVENT_COLUMNS,
    MEMORY_COLUMNS,
    SESSION_COLUMNS,
    NewEntry,
)

Scenario = Callable[[Any], Any]


def on_postgres(conn: psycopg.Connection[Any], url: str, fn: Scenario) -> Any:
    """``fn(tx)`` in one transaction, ``tx.archive`` a PgArchiveStore."""
    tx = SimpleNamespace(archive=PgArchiveStore(conn, PgContext(url, Settings())))
    with conn.transaction():
        return fn(tx)


async def on_sqlite(path: Path, fn: Scenario) -> Any:
    """``fn(tx)`` in one write transaction of the SQLite backend."""
    db = await Database.open(path)
    try:
        return await db.write(fn)
    finally:
        await db.close()


def archive_item(tx: Any, kind: str, ref: str, raw: bytes, rows: int, **who: Any) -> int:
    """Compress ``raw`` as a run does and write its archive entry; its id."""
    dict_id, (blob,) = Codecs().compress(tx.archive, kind, [raw], may_train=True)
    return int(
        tx.archive.insert_entry(
            NewEntry(
                kind=kind,
                ref=ref,
                policy={"session": "sessions", "memory": "memories"}.get(kind, kind),
                app=who.get("app"),
                user=who.get("user"),
                namespace=who.get("namespace"),
                rows=rows,
                raw_bytes=len(raw),
                stored_bytes=len(blob),
                dict_id=dict_id,
                run_id=who.get("run_id", 1),
                archived_at=1234.5,
                payload=blob,
                payload_sha256=sha256(blob),
                raw_sha256=sha256(raw),
            )
        )
    )


def restore(tx: Any, entry_id: int, how: Callable[[Any, Any], Any]) -> Any:
    """Read an entry back verified, put its rows back, drop the entry (the service's restore)."""
    found = tx.archive.entry(entry_id)
    assert found is not None
    tables = open_payload(tx.archive, Codecs(), Stored.of(found[1]))
    result = how(tx, tables)
    tx.archive.delete_entry(entry_id)
    return result


# -- a session and its events ----------------------------------------------------

# Bytes that are easy to get wrong: non-ASCII, JSON text, NULL content, a
# literal % and _, floats with no short decimal, a large audit_seq; session ids
# whose byte order ("B" < "a" < "é") differs from a linguistic collation's.
SESSIONS = [
    ("a", "app", "alice", "terminated", '{"k":"é☃ 100%_"}', 3, 0.1 + 0.2, 100.0, 2**62),
    ("B", "app", "bob", "terminated", "{}", 1, 1.0, 100.0, None),
    ("é", "app", "carol", "terminated", "{}", 0, 1.0, 50.0, 5),
    ("late", "app", "dave", "terminated", "{}", 0, 1.0, 500.0, None),
    ("live", "app", "erin", "active", "{}", 0, 1.0, 10.0, None),
]
EVENTS = [
    ("a", 1, "e1", "user", "hello 👋", '{"x":1}', "{}", 100.0 / 3, 8),
    ("a", 2, "e2", "agent", None, "{}", '{"m":"\\u0000 escaped"}', 1e-300, None),
    ("a", 3, "e3", "user", "x" * 5000, "{}", "{}", 2.5, 9),
    ("B", 1, "e1", "user", "bob's", "{}", "{}", 3.0, None),
]


def session_scenario(tx: Any) -> dict[str, Any]:
    store = tx.archive
    seen: dict[str, Any] = {}
    store.insert_rows("sessions", SESSION_COLUMNS, SESSIONS)
    store.insert_rows("events", EVENT_COLUMNS, EVENTS)
    # Keyset pages of two, from the run's first cursor (-inf, "").
    page1 = store.terminated_sessions(200.0, (-math.inf, ""), 2)
    page2 = store.terminated_sessions(200.0, (page1[-1].updated_at, page1[-1].id), 2)
    seen["pages"] = [page1, page2]
    before = {s.id: store.session_rows(s.id) for s in page1 + page2}
    seen["before"] = before
    entries = {}
    for s in page1 + page2:
        session, events = before[s.id]
        raw = encode({"sessions": (SESSION_COLUMNS, session), "events": (EVENT_COLUMNS, events)})
        entries[s.id] = archive_item(tx, "session", s.id, raw, 1 + len(events), app=s.app)
        store.move_session_out(s.id)
    seen["entries"] = entries
    seen["stub"] = (store.session_rows("a"), store.session_status("a"))
    seen["has_events"] = [store.session_has_events(i) for i in ("a", "B", "live")]
    seen["status_of_none"] = store.session_status("nobody")
    seen["listing"] = store.entries(kind="session", ref=None, before=None, limit=10)
    # Stored bytes as written, through a check's verification.
    seen["verify"] = verify_archive(tx)
    for entry_id in entries.values():
        restore(tx, entry_id, restore_session)
    seen["after"] = {s: store.session_rows(s) for s in before}
    seen["gone"] = [store.entry(i) for i in entries.values()]
    return seen


async def test_a_session_goes_into_the_archive_and_back_as_on_sqlite(
    pg_conn: psycopg.Connection[Any], pg_url: str, tmp_path: Path
) -> None:
    pg = on_postgres(pg_conn, pg_url, session_scenario)
    lite = await on_sqlite(tmp_path / "a.db", session_scenario)
    # Sessions in (updated_at, id) byte order: B before a at 100.0; late and live never.
    assert [[s.id for s in page] for page in pg["pages"]] == [["é", "B"], ["a"]]
    assert pg["stub"] == (
        ([("a", "app", "alice", "archived", "{}", 3, 0.1 + 0.2, 100.0, 2**62)], []),
        "archived",
    )
    assert pg["has_events"] == [False, False, False]
    assert pg["verify"] == ([], "3 archive row(s) and 0 dictionaries verified")
    # Every row and byte is back, exactly.
    assert pg["after"] == pg["before"]
    assert pg["before"]["a"] == ([SESSIONS[0]], EVENTS[:3])
    assert pg["gone"] == [None, None, None]
    assert pg == lite


# -- a memory's versions, and a whole memory -----------------------------------------


def memory_row(mid: int, version: int, *, current: bool, status: str = "live") -> tuple[Any, ...]:
    """One version of ``user:alice``/``lang`` in MEMORY_COLUMNS (``mid`` its id)."""
    return (
        mid,
        "user:alice",
        "lang",
        version,
        "semantic",
        f"v{version} é",
        f'{{"n":{version}}}',
        status,
        None,
        None,
        10.0 * version,
        10.0,
        None if version % 2 else 1e12,
        int(current),
        version if version > 2 else None,
    )


VERSIONS = [memory_row(100 + v, v, current=v == 5) for v in range(1, 6)]
# A tombstone: restoring it whole never asks the search index to reindex it.
TOMBSTONE = (
    "user:bob",
    "k_%",
    1,
    "episodic",
    "gone",
    "{}",
    "deleted",
    None,
    None,
    7.0,
    7.0,
    None,
    1,
    None,
)


def memory_scenario(tx: Any) -> dict[str, Any]:
    store = tx.archive
    seen: dict[str, Any] = {}
    # Explicit ids above anything handed out yet: the next id must still be free.
    seen["last_explicit"] = store.insert_rows("memories", MEMORY_COLUMNS, VERSIONS)
    seen["next_id"] = store.insert_rows("memories", MEMORY_COLUMNS[1:], [TOMBSTONE])
    seen["current"] = store.current_memories(0, 10)
    seen["current_after"] = store.current_memories(105, 10)
    seen["all_versions"] = store.memory_rows("user:alice", "lang")
    # Old versions: up to 3, written at or before 20.0 (versions 1 and 2).
    old = store.old_versions("user:alice", "lang", up_to=3, written_before=20.0)
    seen["old"] = old
    raw = encode({"memories": (MEMORY_COLUMNS, old)})
    versions_entry = archive_item(tx, "versions", "user:alice/lang", raw, len(old))
    store.delete_versions([row[0] for row in old])
    store.delete_versions([])
    seen["left"] = store.memory_rows("user:alice", "lang")
    seen["count"] = store.memory_version_count("user:alice", "lang")
    seen["existing"] = store.existing_versions("user:alice", "lang", [5, 1, 2, 3, 9])
    seen["current_version"] = (
        store.current_version("user:alice", "lang"),
        store.current_version("user:nobody", "lang"),
    )
    # The whole tombstone memory.
    (tomb_id,) = [m.id for m in seen["current"] if m.namespace == "user:bob"]
    whole = store.memory_rows("user:bob", "k_%")
    tomb_entry = archive_item(
        tx, "memory", "user:bob/k_%", encode({"memories": (MEMORY_COLUMNS, whole)}), 1
    )
    store.delete_memory("user:bob", "k_%")
    seen["tomb_gone"] = (
        store.memory_version_count("user:bob", "k_%"),
        store.memory_id_taken(tomb_id),
    )
    # And back: old versions under their memory, then the tombstone, ids kept.
    restore(tx, versions_entry, restore_versions)
    seen["restored_whole"] = restore(tx, tomb_entry, restore_memory)
    seen["after"] = store.memory_rows("user:alice", "lang")
    seen["tomb_after"] = store.memory_rows("user:bob", "k_%")
    seen["flags"] = (
        store.memory_id_taken(101),
        store.is_live_memory(101),
        store.is_live_memory(tomb_id),
        store.memory_id_taken(99),
    )
    # Restored ids are below the top: the next id is still after every row.
    seen["next_after_restore"] = store.insert_rows(
        "memories", MEMORY_COLUMNS[1:], [("user:carol", "x", *TOMBSTONE[2:])]
    )
    return seen


async def test_memory_versions_go_into_the_archive_and_back_as_on_sqlite(
    pg_conn: psycopg.Connection[Any], pg_url: str, tmp_path: Path
) -> None:
    pg = on_postgres(pg_conn, pg_url, memory_scenario)
    lite = await on_sqlite(tmp_path / "a.db", memory_scenario)
    assert pg["last_explicit"] == 105
    # Without moving the identity sequence past 105 this would be 1.
    assert pg["next_id"] == 106
    assert [m.id for m in pg["current"]] == [105, 106]
    assert [m.id for m in pg["current_after"]] == [106]
    assert [row[3] for row in pg["old"]] == [1, 2]
    assert [row[3] for row in pg["left"]] == [3, 4, 5]
    assert pg["existing"] == [3, 5]
    assert pg["current_version"] == (5, None)
    assert pg["tomb_gone"] == (0, False)
    assert pg["restored_whole"] == (0, False)
    assert pg["after"] == pg["all_versions"] == VERSIONS
    assert pg["tomb_after"] == [(106, *TOMBSTONE)]
    assert pg["flags"] == (True, True, False, False)
    assert pg["next_after_restore"] == 107
    assert pg == lite


def test_an_identity_sequence_never_moves_back(
    pg_conn: psycopg.Connection[Any], pg_url: str
) -> None:
    def fn(tx: Any) -> list[int]:
        store = tx.archive

        def with_id(row: tuple[Any, ...]) -> int:
            return int(store.insert_rows("memories", MEMORY_COLUMNS, [row]))

        def new_id(row: tuple[Any, ...]) -> int:
            return int(store.insert_rows("memories", MEMORY_COLUMNS[1:], [row[1:]]))

        ids = [with_id(memory_row(50, 1, current=False))]
        ids.append(new_id(memory_row(0, 2, current=False)))
        store.delete_versions([50])
        # Put back below the sequence: it must stay at 51, not fall back to 50.
        ids.append(with_id(memory_row(50, 1, current=False)))
        ids.append(new_id(memory_row(0, 3, current=True)))
        return ids

    assert on_postgres(pg_conn, pg_url, fn) == [50, 51, 50, 52]


# -- the archive's own rows --------------------------------------------------------


def entries_scenario(tx: Any) -> dict[str, Any]:
    store = tx.archive
    seen: dict[str, Any] = {}
    seen["runs"] = [store.start_run(1.0), store.start_run(2.0)]
    run_id = seen["runs"][-1][0]
    store.count_batch(run_id, 2, 7)
    store.finish_run(run_id, 3.0, '{"sessions":{"items":2}}')
    seen["run_after"] = store.start_run(4.0)
    # A dictionary with every byte value, unchecked and checked.
    data = bytes(range(256)) * 3
    dict_id = store.insert_dictionary("memory", data, sha256(data), 5.0)
    seen["dicts"] = (
        store.latest_dictionary("memory"),
        store.latest_dictionary("session"),
        store.dictionary(dict_id, checksummed=True),
        store.dictionary(dict_id, checksummed=False),
        store.dictionary(dict_id + 1, checksummed=True),
        list(store.dictionaries(checksummed=True)),
        list(store.dictionaries(checksummed=False)),
    )
    refs = ["a%/b_c", "a%/b_c", "axx/bzc", "s1", "s1", "user:x/k"]
    kinds = ["memory", "versions", "memory", "session", "session", "versions"]
    ids = []
    for n, (kind, ref) in enumerate(zip(kinds, refs, strict=True)):
        raw = encode({"t": ([], [])}) + b" " * n
        who = {"app": "app", "user": "u"} if kind == "session" else {"namespace": ref[:4]}
        ids.append(archive_item(tx, kind, ref, raw, n + 1, run_id=run_id, **who))
    seen["ids"] = ids
    top = 2**63 - 1
    seen["lists"] = [
        store.entries(kind=None, ref=None, before=None, limit=100),
        store.entries(kind=None, ref=None, before=top, limit=2),
        store.entries(kind=None, ref=None, before=ids[3], limit=100),
        store.entries(kind=None, ref=None, before=1, limit=100),
        store.entries(kind="memory", ref=None, before=None, limit=100),
        store.entries(kind="memory", ref="a%/b_c", before=None, limit=100),
        store.entries(kind="session", ref="s1", before=ids[4], limit=100),
        store.entries(kind="versions", ref="a_/b%c", before=None, limit=100),
    ]
    one = store.entry(ids[0])
    seen["one"] = one
    seen["checks"] = (store.has_checksums(), store.has_document_tables())
    stored = list(store.stored_entries(checksummed=True))
    seen["stored"] = stored
    seen["stored_unchecked"] = list(store.stored_entries(checksummed=False))
    store.delete_entry(ids[1])
    listing = store.entries(kind=None, ref=None, before=None, limit=100)
    seen["after_delete"] = [e.id for e in listing]
    return seen


async def test_entries_dictionaries_and_runs_as_on_sqlite(
    pg_conn: psycopg.Connection[Any], pg_url: str, tmp_path: Path
) -> None:
    pg = on_postgres(pg_conn, pg_url, entries_scenario)
    lite = await on_sqlite(tmp_path / "a.db", entries_scenario)
    assert pg["runs"] == [(1, None), (2, 1)]
    assert pg["run_after"] == (3, None)
    latest, none, checked, unchecked, missing, every, every_unchecked = pg["dicts"]
    assert latest == checked and checked.data == bytes(range(256)) * 3
    assert isinstance(checked.data, bytes) and checked.sha256 == sha256(checked.data)
    assert none is None and missing is None and unchecked.sha256 is None
    assert every == [checked] and every_unchecked == [unchecked]
    all_, top2, below4, below1, memory, by_ref, by_ref_below, like = pg["lists"]
    assert [e.id for e in all_] == [6, 5, 4, 3, 2, 1]
    assert [e.id for e in top2] == [6, 5]
    assert [e.id for e in below4] == [3, 2, 1]
    assert below1 == [] and like == []
    assert [e.id for e in memory] == [3, 1]
    # % and _ in a ref are bytes, not patterns: axx/bzc is not a%/b_c.
    assert [e.id for e in by_ref] == [1]
    assert [e.id for e in by_ref_below] == [4]
    row, stored = pg["one"]
    assert row == all_[-1] and stored.payload == pg["stored"][0].payload
    assert pg["checks"] == (True, True)
    assert [s.id for s in pg["stored"]] == [1, 2, 3, 4, 5, 6]
    assert {(s.payload_sha256, s.raw_sha256) for s in pg["stored_unchecked"]} == {(None, None)}
    assert pg["after_delete"] == [6, 5, 4, 3, 1]
    assert pg == lite


def test_stored_entries_stream_through_a_server_side_cursor(
    pg_conn: psycopg.Connection[Any], pg_url: str
) -> None:
    """More rows than one fetch, other queries between them, and an early stop."""
    payloads = [bytes([n, 0, 255]) * (n + 1) for n in range(39)]
    payloads.append(random.Random(7).randbytes(300_000))  # stored out of line (TOAST)

    def fn(tx: Any) -> tuple[list[int], list[bytes], list[int], list[int]]:
        store = tx.archive
        for n, payload in enumerate(payloads):
            store.insert_entry(
                NewEntry(
                    *("memory", f"n/{n}", "memories", None, None, "n", 1, 3, len(payload)),
                    *(None, 1, 1.0, payload, sha256(payload), sha256(b"x")),
                )
            )
        ids, got = [], []
        for row in store.stored_entries(checksummed=True):
            # Queries on the same connection while the cursor is open.
            assert store.entry(row.id) is not None
            ids.append(row.id)
            got.append(row.payload)
        first = []
        for row in store.stored_entries(checksummed=True):
            first.append(row.id)
            if len(first) == 3:
                break
        # The early stop closed its cursor: none is left open in the transaction.
        assert pg_conn.execute("SELECT count(*) FROM pg_cursors").fetchone() == (0,)
        again = [row.id for row in store.stored_entries(checksummed=False)]
        return ids, got, first, again

    ids, got, first, again = on_postgres(pg_conn, pg_url, fn)
    assert ids == list(range(1, 41)) and got == payloads
    assert first == [1, 2, 3] and again == ids
    # Compressed bytes are stored as they are: TOAST never compresses them again.
    storage = pg_conn.execute(
        "SELECT attrelid::regclass::text, attstorage FROM pg_attribute "
        "WHERE (attrelid, attname) IN (('archive'::regclass, 'payload'), "
        "('archive_dicts'::regclass, 'dict')) ORDER BY 1"
    ).fetchall()
    assert storage == [("archive", "e"), ("archive_dicts", "e")]


def test_insert_rows_refuses_names_not_ours(pg_conn: psycopg.Connection[Any], pg_url: str) -> None:
    def fn(tx: Any) -> None:
        tx.archive.insert_rows("sessions", ["id", "app; DROP TABLE memories"], [("x", "y")])

    with pytest.raises(ValueError, match="not all columns of sessions"):
        on_postgres(pg_conn, pg_url, fn)

    def update(tx: Any) -> None:
        tx.archive.update_session("x", ["status", "payload"], ("archived", "y"))

    with pytest.raises(ValueError, match="not all columns of sessions"):
        on_postgres(pg_conn, pg_url, update)
