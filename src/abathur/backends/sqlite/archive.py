"""SQLite's :class:`~abathur.stores.archive.ArchiveStore`.

The archive lives in the same file as the hot tables (``archive``,
``archive_dicts``, ``archive_runs``; migrations 005-006), so moving an item
out and writing its archive row commit in one transaction (see
:mod:`abathur.archival`). :func:`reclaim_space` is the maintenance a run ends
with, on a connection of its own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import apsw

from abathur.backends.sqlite.connection import connect, scalar_int, table_exists, translate_errors
from abathur.backends.sqlite.context import SqliteContext
from abathur.config import Settings
from abathur.stores.archive import (
    ARCHIVED_TABLES,
    MEMORY_COLUMNS,
    SESSION_COLUMNS,
    CurrentMemory,
    Dictionary,
    EntryRow,
    HotRow,
    NewEntry,
    StoredRow,
    TerminatedSession,
)

__all__ = [
    "SQL_ARCHIVE_BY_KIND",
    "SQL_ARCHIVE_BY_REF",
    "SQL_ARCHIVE_LIST",
    "SQL_CURRENT_MEMORIES_AFTER",
    "SQL_TERMINATED_SESSIONS",
    "SqliteArchiveStore",
    "reclaim_space",
]

# -- hot rows a run moves ------------------------------------------------------

# Terminated sessions last updated before a cutoff, keyset-paged by
# (updated_at, id) on the partial index sessions_terminated.
# Params: cutoff, last updated_at, last id, limit.
SQL_TERMINATED_SESSIONS = (
    "SELECT id, app, updated_at FROM sessions INDEXED BY sessions_terminated "
    "WHERE status = 'terminated' AND updated_at < ? AND (updated_at, id) > (?, ?) "
    "ORDER BY updated_at, id LIMIT ?"
)
# One session by its primary key.
SQL_SESSION_ROW = f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions WHERE id = ?"
# A session's events along the primary key (session_id, seq).
SQL_SESSION_EVENTS = (
    f"SELECT {', '.join(ARCHIVED_TABLES['events'])} FROM events WHERE session_id = ? ORDER BY seq"
)
# The stub left behind: same id, revision and times; status archived, no state.
SQL_SESSION_STUB = (
    "UPDATE sessions SET status = 'archived', state = '{}' WHERE id = ? AND status = 'terminated'"
)
SQL_DELETE_EVENTS = "DELETE FROM events WHERE session_id = ?"

# Current versions after an id, in id order (the rowid): every memory once per run.
# Params: last id, limit.
SQL_CURRENT_MEMORIES_AFTER = (
    "SELECT id, namespace, key, version, type, status, created_at, expires_at FROM memories "
    "WHERE id > ? AND is_current = 1 ORDER BY id LIMIT ?"
)
# Every version of one memory (the UNIQUE (namespace, key, version) index).
SQL_MEMORY_ROWS = (
    f"SELECT {', '.join(MEMORY_COLUMNS)} FROM memories WHERE namespace = :namespace "
    "AND key = :key ORDER BY version"
)
# Old versions of one memory (the UNIQUE (namespace, key, version) index).
SQL_OLD_VERSIONS = (
    f"SELECT {', '.join(MEMORY_COLUMNS)} FROM memories WHERE namespace = :namespace "
    "AND key = :key AND version <= :up_to AND is_current = 0 AND created_at <= :before "
    "ORDER BY version"
)
# The same index.
SQL_DELETE_MEMORY = "DELETE FROM memories WHERE namespace = :namespace AND key = :key"
# By rowid, one per id.
SQL_DELETE_IDS = "DELETE FROM memories WHERE id IN (SELECT value FROM json_each(?))"

# -- putting rows back ---------------------------------------------------------

SQL_SESSION_STATUS = "SELECT status FROM sessions WHERE id = ?"
SQL_SESSION_HAS_EVENTS = "SELECT 1 FROM events WHERE session_id = ? LIMIT 1"
SQL_MEMORY_VERSION_COUNT = (
    "SELECT count(*) FROM memories WHERE namespace = :namespace AND key = :key"
)
SQL_MEMORY_ID_TAKEN = "SELECT 1 FROM memories WHERE id = ?"
SQL_IS_LIVE_MEMORY = "SELECT 1 FROM memories WHERE id = ? AND status = 'live'"
# The partial index memories_current.
SQL_CURRENT_VERSION = (
    "SELECT version FROM memories WHERE namespace = :namespace AND key = :key AND is_current = 1"
)
# Covered by the UNIQUE (namespace, key, version) index.
SQL_EXISTING_VERSIONS = (
    "SELECT version FROM memories WHERE namespace = :namespace AND key = :key "
    "AND version IN (SELECT value FROM json_each(:versions))"
)

# -- archive entries -------------------------------------------------------------

_ENTRY_COLUMNS = (
    "id, kind, ref, policy, app, user, namespace, rows, raw_bytes, stored_bytes, run_id, "
    "archived_at"
)
SQL_ARCHIVE_INSERT = (
    "INSERT INTO archive (kind, ref, policy, app, user, namespace, rows, raw_bytes, "
    "stored_bytes, dict_id, run_id, archived_at, payload, payload_sha256, raw_sha256) "
    "VALUES (:kind, :ref, :policy, :app, :user, :namespace, :rows, :raw_bytes, "
    ":stored_bytes, :dict_id, :run_id, :archived_at, :payload, :payload_sha256, :raw_sha256)"
)
# archive list: newest first, paged by id. Params: before id, limit.
SQL_ARCHIVE_LIST = f"SELECT {_ENTRY_COLUMNS} FROM archive WHERE id < ? ORDER BY id DESC LIMIT ?"
# archive list --kind K --ref R: index archive_by_ref, whose rowid suffix gives
# the order. Params: kind, ref, before id, limit.
SQL_ARCHIVE_BY_REF = (
    f"SELECT {_ENTRY_COLUMNS} FROM archive WHERE kind = ? AND ref = ? AND id < ? "
    "ORDER BY id DESC LIMIT ?"
)
# archive list --kind K: newest first along the primary key, skipping other kinds.
# Params: kind, before id, limit.
SQL_ARCHIVE_BY_KIND = (
    f"SELECT {_ENTRY_COLUMNS} FROM archive NOT INDEXED WHERE kind = ? AND id < ? "
    "ORDER BY id DESC LIMIT ?"
)
# What a restore or check reads of a row to verify it (see StoredRow).
_STORED_COLUMNS = (
    "id, kind, ref, raw_bytes, stored_bytes, dict_id, payload, payload_sha256, raw_sha256"
)
SQL_ARCHIVE_ONE = f"SELECT {_ENTRY_COLUMNS}, {_STORED_COLUMNS} FROM archive WHERE id = ?"
SQL_ARCHIVE_DELETE = "DELETE FROM archive WHERE id = ?"
# abathur check: every row, one at a time (payloads are never all in memory).
SQL_ARCHIVE_ALL = f"SELECT {_STORED_COLUMNS} FROM main.archive ORDER BY id"
# The same on a file migrated before the checksums existed (migration 006).
SQL_ARCHIVE_ALL_UNCHECKSUMMED = (
    "SELECT id, kind, ref, raw_bytes, stored_bytes, dict_id, payload, NULL, NULL "
    "FROM main.archive ORDER BY id"
)
# 3 on a file with the checksum columns (migration 006), 0 before.
SQL_HAS_CHECKSUMS = (
    "SELECT (SELECT count(*) FROM pragma_table_info('archive', 'main') "
    "WHERE name IN ('payload_sha256', 'raw_sha256')) + "
    "(SELECT count(*) FROM pragma_table_info('archive_dicts', 'main') WHERE name = 'sha256')"
)

# -- dictionaries ----------------------------------------------------------------

SQL_LATEST_DICT = (
    "SELECT id, kind, dict, sha256 FROM archive_dicts WHERE kind = ? ORDER BY id DESC LIMIT 1"
)
SQL_DICT = "SELECT id, kind, dict, sha256 FROM archive_dicts WHERE id = ?"
SQL_DICT_UNCHECKSUMMED = "SELECT id, kind, dict, NULL FROM archive_dicts WHERE id = ?"
SQL_DICTS_ALL = "SELECT id, kind, dict, sha256 FROM main.archive_dicts ORDER BY id"
SQL_DICTS_ALL_UNCHECKSUMMED = "SELECT id, kind, dict, NULL FROM main.archive_dicts ORDER BY id"
SQL_DICT_INSERT = "INSERT INTO archive_dicts (kind, created_at, dict, sha256) VALUES (?, ?, ?, ?)"

# -- runs --------------------------------------------------------------------------

SQL_RUNNING = "SELECT max(id) FROM archive_runs WHERE status = 'running'"
SQL_INTERRUPT_RUNS = (
    "UPDATE archive_runs SET status = 'interrupted', finished_at = ? WHERE status = 'running'"
)
SQL_START_RUN = "INSERT INTO archive_runs (started_at, status) VALUES (?, 'running')"
SQL_COUNT_BATCH = (
    "UPDATE archive_runs SET entries = entries + :entries, rows = rows + :rows WHERE id = :id"
)
SQL_FINISH_RUN = (
    "UPDATE archive_runs SET status = 'done', finished_at = :now, detail = :detail WHERE id = :id"
)

_AUTO_VACUUM = {0: "none", 1: "full", 2: "incremental"}


def _entry_row(row: Sequence[object]) -> EntryRow:
    return EntryRow(*row)  # type: ignore[arg-type]  # columns as _ENTRY_COLUMNS


def _stored_row(row: Sequence[object]) -> StoredRow:
    return StoredRow(*row)  # type: ignore[arg-type]  # columns as _STORED_COLUMNS


def _dictionary(row: Sequence[object]) -> Dictionary:
    return Dictionary(*row)  # type: ignore[arg-type]  # id, kind, dict, sha256


class SqliteArchiveStore:
    """:class:`~abathur.stores.archive.ArchiveStore` on one apsw connection, in its transaction.

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur import Abathur
        >>> async def demo():
        ...     with tempfile.TemporaryDirectory() as tmp:
        ...         async with Abathur.open(pathlib.Path(tmp) / "a.db", embedder="none") as ab:
        ...             return await ab.db.read(
        ...                 lambda tx: (tx.archive.has_checksums(), tx.archive.auto_vacuum())
        ...             )
        >>> asyncio.run(demo())
        (True, 'none')
    """

    def __init__(self, conn: apsw.Connection, context: SqliteContext) -> None:
        self._conn = conn
        self._context = context

    # -- archive entries ---------------------------------------------------------

    def entries(
        self, *, kind: str | None, ref: str | None, before: int | None, limit: int
    ) -> list[EntryRow]:
        below = math.inf if before is None else before
        if kind is None:
            rows = self._conn.execute(SQL_ARCHIVE_LIST, (below, limit))
        elif ref is None:
            rows = self._conn.execute(SQL_ARCHIVE_BY_KIND, (kind, below, limit))
        else:
            rows = self._conn.execute(SQL_ARCHIVE_BY_REF, (kind, ref, below, limit))
        return [_entry_row(row) for row in rows]

    def entry(self, entry_id: int) -> tuple[EntryRow, StoredRow] | None:
        rows = self._conn.execute(SQL_ARCHIVE_ONE, (entry_id,)).fetchall()
        if not rows:
            return None
        return _entry_row(rows[0][:12]), _stored_row(rows[0][12:])

    def insert_entry(self, entry: NewEntry) -> int:
        self._conn.execute(SQL_ARCHIVE_INSERT, entry._asdict())
        return int(self._conn.last_insert_rowid())

    def delete_entry(self, entry_id: int) -> None:
        self._conn.execute(SQL_ARCHIVE_DELETE, (entry_id,))

    def has_checksums(self) -> bool:
        return scalar_int(self._conn, SQL_HAS_CHECKSUMS) == 3

    def stored_entries(self, *, checksummed: bool) -> Iterator[StoredRow]:
        sql = SQL_ARCHIVE_ALL if checksummed else SQL_ARCHIVE_ALL_UNCHECKSUMMED
        for row in self._conn.execute(sql):
            yield _stored_row(row)

    # -- compression dictionaries --------------------------------------------------

    def latest_dictionary(self, kind: str) -> Dictionary | None:
        rows = self._conn.execute(SQL_LATEST_DICT, (kind,)).fetchall()
        return _dictionary(rows[0]) if rows else None

    def dictionary(self, dict_id: int, *, checksummed: bool) -> Dictionary | None:
        sql = SQL_DICT if checksummed else SQL_DICT_UNCHECKSUMMED
        rows = self._conn.execute(sql, (dict_id,)).fetchall()
        return _dictionary(rows[0]) if rows else None

    def dictionaries(self, *, checksummed: bool) -> Iterator[Dictionary]:
        sql = SQL_DICTS_ALL if checksummed else SQL_DICTS_ALL_UNCHECKSUMMED
        for row in self._conn.execute(sql):
            yield _dictionary(row)

    def insert_dictionary(self, kind: str, data: bytes, sha256: str, created_at: float) -> int:
        self._conn.execute(SQL_DICT_INSERT, (kind, created_at, data, sha256))
        return int(self._conn.last_insert_rowid())

    # -- runs ----------------------------------------------------------------------

    def start_run(self, now: float) -> tuple[int, int | None]:
        (interrupted,) = self._conn.execute(SQL_RUNNING).fetchall()[0]
        self._conn.execute(SQL_INTERRUPT_RUNS, (now,))
        self._conn.execute(SQL_START_RUN, (now,))
        run_id = int(self._conn.last_insert_rowid())
        return run_id, None if interrupted is None else int(interrupted)

    def count_batch(self, run_id: int, entries: int, rows: int) -> None:
        self._conn.execute(SQL_COUNT_BATCH, {"entries": entries, "rows": rows, "id": run_id})

    def finish_run(self, run_id: int, now: float, detail: str) -> None:
        self._conn.execute(SQL_FINISH_RUN, {"now": now, "detail": detail, "id": run_id})

    # -- hot rows a run moves out --------------------------------------------------

    def terminated_sessions(
        self, cutoff: float, after: tuple[float, str], limit: int
    ) -> list[TerminatedSession]:
        rows = self._conn.execute(SQL_TERMINATED_SESSIONS, (cutoff, *after, limit))
        return [TerminatedSession(*row) for row in rows]

    def session_rows(self, session_id: str) -> tuple[list[HotRow], list[HotRow]]:
        session = self._conn.execute(SQL_SESSION_ROW, (session_id,)).fetchall()
        events = self._conn.execute(SQL_SESSION_EVENTS, (session_id,)).fetchall()
        return session, events

    def move_session_out(self, session_id: str) -> None:
        self._conn.execute(SQL_SESSION_STUB, (session_id,))
        self._conn.execute(SQL_DELETE_EVENTS, (session_id,))

    def current_memories(self, after_id: int, limit: int) -> list[CurrentMemory]:
        rows = self._conn.execute(SQL_CURRENT_MEMORIES_AFTER, (after_id, limit))
        return [CurrentMemory(*row) for row in rows]

    def memory_rows(self, namespace: str, key: str) -> list[HotRow]:
        params = {"namespace": namespace, "key": key}
        return self._conn.execute(SQL_MEMORY_ROWS, params).fetchall()

    def old_versions(
        self, namespace: str, key: str, *, up_to: int, written_before: float
    ) -> list[HotRow]:
        params = {"namespace": namespace, "key": key, "up_to": up_to, "before": written_before}
        return self._conn.execute(SQL_OLD_VERSIONS, params).fetchall()

    def delete_memory(self, namespace: str, key: str) -> None:
        self._conn.execute(SQL_DELETE_MEMORY, {"namespace": namespace, "key": key})

    def delete_versions(self, ids: Sequence[int]) -> None:
        self._conn.execute(SQL_DELETE_IDS, (json.dumps(list(ids)),))

    # -- putting rows back ---------------------------------------------------------

    def session_status(self, session_id: str) -> str | None:
        rows = self._conn.execute(SQL_SESSION_STATUS, (session_id,)).fetchall()
        return str(rows[0][0]) if rows else None

    def session_has_events(self, session_id: str) -> bool:
        return bool(self._conn.execute(SQL_SESSION_HAS_EVENTS, (session_id,)).fetchall())

    def memory_version_count(self, namespace: str, key: str) -> int:
        params = {"namespace": namespace, "key": key}
        return scalar_int(self._conn, SQL_MEMORY_VERSION_COUNT, params)

    def memory_id_taken(self, memory_id: int) -> bool:
        return bool(self._conn.execute(SQL_MEMORY_ID_TAKEN, (memory_id,)).fetchall())

    def is_live_memory(self, memory_id: int) -> bool:
        return bool(self._conn.execute(SQL_IS_LIVE_MEMORY, (memory_id,)).fetchall())

    def current_version(self, namespace: str, key: str) -> int | None:
        params = {"namespace": namespace, "key": key}
        rows = self._conn.execute(SQL_CURRENT_VERSION, params).fetchall()
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def existing_versions(self, namespace: str, key: str, versions: Sequence[int]) -> list[int]:
        params = {"namespace": namespace, "key": key, "versions": json.dumps(list(versions))}
        return [int(v) for (v,) in self._conn.execute(SQL_EXISTING_VERSIONS, params)]

    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[HotRow]) -> int:
        # Table and column names are checked against our own lists, so nothing
        # from a payload is ever formatted into SQL.
        known = ARCHIVED_TABLES[table]
        if any(c not in known for c in columns):
            raise ValueError(f"columns {list(columns)} are not all columns of {table}")
        names = ", ".join(f'"{c}"' for c in columns)
        marks = ", ".join("?" * len(columns))
        self._conn.executemany(f'INSERT INTO "{table}" ({names}) VALUES ({marks})', rows)
        return int(self._conn.last_insert_rowid())

    def update_session(self, session_id: str, columns: Sequence[str], row: HotRow) -> None:
        if any(c not in SESSION_COLUMNS for c in columns):
            raise ValueError(f"columns {list(columns)} are not all columns of sessions")
        sets = ", ".join(f'"{c}" = ?' for c in columns)
        self._conn.execute(f"UPDATE sessions SET {sets} WHERE id = ?", (*row, session_id))

    # -- space -------------------------------------------------------------------

    def has_document_tables(self) -> bool:
        return table_exists(self._conn, "chunks")

    def auto_vacuum(self) -> str:
        return _AUTO_VACUUM.get(scalar_int(self._conn, "PRAGMA auto_vacuum"), "none")

    def free_bytes(self) -> int:
        free = scalar_int(self._conn, "PRAGMA freelist_count")
        return free * scalar_int(self._conn, "PRAGMA page_size")


def reclaim_space(path: Path, settings: Settings, vacuum: bool) -> tuple[str, int, str | None]:
    """VACUUM (if asked), incremental vacuum and a WAL checkpoint on a connection of their own.

    VACUUM and checkpoints cannot run inside a transaction, which is how the
    writer runs everything; this connection waits on busy_timeout like any writer.

    Returns:
        ``(auto_vacuum mode, bytes given back, a note or None)``.
    """
    with translate_errors(f"reclaiming space in {path}"):
        conn = connect(path, settings, readonly=False)
        try:
            if vacuum:
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
                conn.execute("VACUUM")
            mode = _AUTO_VACUUM.get(scalar_int(conn, "PRAGMA auto_vacuum"), "none")
            vacuumed = 0
            if mode == "incremental":
                free = scalar_int(conn, "PRAGMA freelist_count")
                conn.execute("PRAGMA incremental_vacuum").fetchall()
                freed = free - scalar_int(conn, "PRAGMA freelist_count")
                vacuumed = freed * scalar_int(conn, "PRAGMA page_size")
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0]
            note = None
            if busy:
                note = (
                    "the WAL checkpoint could not finish (a reader held an old snapshot): "
                    "the WAL shrinks at the next checkpoint"
                )
            return mode, vacuumed, note
        finally:
            conn.close()
