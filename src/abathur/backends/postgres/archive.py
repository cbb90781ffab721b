"""PostgreSQL's :class:`~abathur.stores.archive.ArchiveStore` (issue 14).

Mirrors :mod:`abathur.backends.sqlite.archive`: the archive lives in the
same database as the hot tables (``archive``, ``archive_dicts``,
``archive_runs``; migration 040), so moving an item out and writing its
archive row commit in one transaction (see :mod:`abathur.archival`).

What differs from SQLite, and why:

- Ids come from identity columns (``RETURNING id``, not ``last_insert_rowid``).
  A restore that puts memory versions back under their original ids moves
  the ``memories`` identity sequence forward past them, never back, so the
  next ``INSERT`` without an id cannot collide with a restored row.
- ``stored_entries`` reads through a server-side cursor a few rows at a time:
  a client-side cursor would hold every payload in memory at once.
- Space: PostgreSQL's ``VACUUM`` cannot run inside a transaction, and a
  store only ever runs inside one, so the store has no ``reclaim_space``
  (the backend's own maintenance, outside any transaction, would run it).
  :meth:`PgArchiveStore.auto_vacuum` says ``"none"`` (freed space is reused
  by new rows, the files do not shrink without ``VACUUM FULL``) and
  :meth:`PgArchiveStore.free_bytes` says 0 (only the ``pg_freespacemap``
  extension can read the free space map; we install no extension for it).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql

from abathur.backends.postgres.context import PgContext
from abathur.stores.archive import (
    ARCHIVED_TABLES,
    EVENT_COLUMNS,
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
    "PgArchiveStore",
]

_INT64_MAX = (1 << 63) - 1


def _names(columns: Sequence[str]) -> str:
    # Our own constant column lists only (never a payload's): every name quoted,
    # since "user" is reserved in PostgreSQL.
    return ", ".join(f'"{c}"' for c in columns)


# -- hot rows a run moves ------------------------------------------------------

# Terminated sessions last updated before a cutoff, keyset-paged by
# (updated_at, id) on the partial index sessions_terminated. The first page's
# cursor is (-inf, ''): float8 holds -Infinity, so the row comparison is as on SQLite.
SQL_TERMINATED_SESSIONS = (
    "SELECT id, app, updated_at FROM sessions "
    "WHERE status = 'terminated' AND updated_at < %(cutoff)s "
    "AND (updated_at, id) > (%(after_at)s, %(after_id)s) "
    "ORDER BY updated_at, id LIMIT %(limit)s"
)
SQL_SESSION_ROW = f"SELECT {_names(SESSION_COLUMNS)} FROM sessions WHERE id = %(id)s"
SQL_SESSION_EVENTS = (
    f"SELECT {_names(EVENT_COLUMNS)} FROM events WHERE session_id = %(id)s ORDER BY seq"
)
# The stub left behind: same id, revision and times; status archived, no state.
SQL_SESSION_STUB = (
    "UPDATE sessions SET status = 'archived', state = '{}' "
    "WHERE id = %(id)s AND status = 'terminated'"
)
SQL_DELETE_EVENTS = "DELETE FROM events WHERE session_id = %(id)s"

# Current versions after an id, in id order: every memory once per run.
SQL_CURRENT_MEMORIES_AFTER = (
    "SELECT id, namespace, key, version, type, status, created_at, expires_at FROM memories "
    "WHERE id > %(after)s AND is_current = 1 ORDER BY id LIMIT %(limit)s"
)
# Every version of one memory (the UNIQUE (namespace, key, version) index).
SQL_MEMORY_ROWS = (
    f"SELECT {_names(MEMORY_COLUMNS)} FROM memories WHERE namespace = %(namespace)s "
    "AND key = %(key)s ORDER BY version"
)
SQL_OLD_VERSIONS = (
    f"SELECT {_names(MEMORY_COLUMNS)} FROM memories WHERE namespace = %(namespace)s "
    "AND key = %(key)s AND version <= %(up_to)s AND is_current = 0 AND created_at <= %(before)s "
    "ORDER BY version"
)
SQL_DELETE_MEMORY = "DELETE FROM memories WHERE namespace = %(namespace)s AND key = %(key)s"
# An array parameter where SQLite reads json_each: cast, so an empty list or
# a list of small ints still compares as bigint.
SQL_DELETE_IDS = "DELETE FROM memories WHERE id = ANY(%(ids)s::bigint[])"

# -- putting rows back ---------------------------------------------------------

SQL_SESSION_STATUS = "SELECT status FROM sessions WHERE id = %(id)s"
SQL_SESSION_HAS_EVENTS = "SELECT 1 FROM events WHERE session_id = %(id)s LIMIT 1"
SQL_MEMORY_VERSION_COUNT = (
    "SELECT count(*) FROM memories WHERE namespace = %(namespace)s AND key = %(key)s"
)
SQL_MEMORY_ID_TAKEN = "SELECT 1 FROM memories WHERE id = %(id)s"
SQL_IS_LIVE_MEMORY = "SELECT 1 FROM memories WHERE id = %(id)s AND status = 'live'"
# The partial index memories_current.
SQL_CURRENT_VERSION = (
    "SELECT version FROM memories WHERE namespace = %(namespace)s AND key = %(key)s "
    "AND is_current = 1"
)
# SQLite returns these in the unique index's order (version ascending); said here.
SQL_EXISTING_VERSIONS = (
    "SELECT version FROM memories WHERE namespace = %(namespace)s AND key = %(key)s "
    "AND version = ANY(%(versions)s::bigint[]) ORDER BY version"
)
# Move an identity sequence forward to a table's highest id, never back: rows
# restored with their original ids may lie above what the sequence handed out
# (an import, or a sequence reset), and the next INSERT without an id must
# not collide with them. pg_sequence_last_value is NULL before the first nextval.
# The table name is ours (ARCHIVED_TABLES), passed as a value, never formatted in.
SQL_ADVANCE_IDENTITY = (
    "SELECT setval(seq, top) FROM ("
    "SELECT pg_get_serial_sequence(%(table)s, 'id')::regclass AS seq, max(id) AS top "
    "FROM {table}) AS t "
    "WHERE top > coalesce(pg_sequence_last_value(seq), 0)"
)
# The tables of ARCHIVED_TABLES whose id is an identity column (sessions and
# events have text ids, which no sequence hands out).
_IDENTITY_TABLES = frozenset({"memories"})

# -- archive entries -------------------------------------------------------------

_ENTRY_COLUMNS = (
    'id, kind, ref, policy, app, "user", namespace, rows, raw_bytes, stored_bytes, run_id, '
    "archived_at"
)
SQL_ARCHIVE_INSERT = (
    'INSERT INTO archive (kind, ref, policy, app, "user", namespace, rows, raw_bytes, '
    "stored_bytes, dict_id, run_id, archived_at, payload, payload_sha256, raw_sha256) "
    "VALUES (%(kind)s, %(ref)s, %(policy)s, %(app)s, %(user)s, %(namespace)s, %(rows)s, "
    "%(raw_bytes)s, %(stored_bytes)s, %(dict_id)s, %(run_id)s, %(archived_at)s, %(payload)s, "
    "%(payload_sha256)s, %(raw_sha256)s) RETURNING id"
)
# archive list: newest first, paged by id. ``last`` is the highest id wanted
# (before - 1, or the largest bigint when there is no page before): SQLite
# compares with +inf, which a bigint parameter cannot hold.
SQL_ARCHIVE_LIST = (
    f"SELECT {_ENTRY_COLUMNS} FROM archive WHERE id <= %(last)s ORDER BY id DESC LIMIT %(limit)s"
)
# archive list --kind K --ref R: index archive_by_ref (kind, ref), then sorted.
SQL_ARCHIVE_BY_REF = (
    f"SELECT {_ENTRY_COLUMNS} FROM archive WHERE kind = %(kind)s AND ref = %(ref)s "
    "AND id <= %(last)s ORDER BY id DESC LIMIT %(limit)s"
)
# archive list --kind K: newest first along the primary key, skipping other kinds.
SQL_ARCHIVE_BY_KIND = (
    f"SELECT {_ENTRY_COLUMNS} FROM archive WHERE kind = %(kind)s AND id <= %(last)s "
    "ORDER BY id DESC LIMIT %(limit)s"
)
_STORED_COLUMNS = (
    "id, kind, ref, raw_bytes, stored_bytes, dict_id, payload, payload_sha256, raw_sha256"
)
SQL_ARCHIVE_ONE = f"SELECT {_ENTRY_COLUMNS}, {_STORED_COLUMNS} FROM archive WHERE id = %(id)s"
SQL_ARCHIVE_DELETE = "DELETE FROM archive WHERE id = %(id)s"
# abathur check: every row, through a server-side cursor (see stored_entries).
SQL_ARCHIVE_ALL = f"SELECT {_STORED_COLUMNS} FROM archive ORDER BY id"
# The protocol's shape for a file without checksums; a PostgreSQL database
# always has them (040 creates the columns), so only a caller asking gets this.
SQL_ARCHIVE_ALL_UNCHECKSUMMED = (
    "SELECT id, kind, ref, raw_bytes, stored_bytes, dict_id, payload, NULL::text, NULL::text "
    "FROM archive ORDER BY id"
)
# 3 once the checksum columns exist: always, here (migration 040 has them).
SQL_HAS_CHECKSUMS = (
    "SELECT count(*) FROM pg_attribute "
    "WHERE ((attrelid = to_regclass('archive') AND attname IN ('payload_sha256', 'raw_sha256')) "
    "OR (attrelid = to_regclass('archive_dicts') AND attname = 'sha256')) "
    "AND attnum > 0 AND NOT attisdropped"
)

# -- dictionaries ----------------------------------------------------------------

SQL_LATEST_DICT = (
    "SELECT id, kind, dict, sha256 FROM archive_dicts WHERE kind = %(kind)s "
    "ORDER BY id DESC LIMIT 1"
)
SQL_DICT = "SELECT id, kind, dict, sha256 FROM archive_dicts WHERE id = %(id)s"
SQL_DICT_UNCHECKSUMMED = "SELECT id, kind, dict, NULL::text FROM archive_dicts WHERE id = %(id)s"
SQL_DICTS_ALL = "SELECT id, kind, dict, sha256 FROM archive_dicts ORDER BY id"
SQL_DICTS_ALL_UNCHECKSUMMED = "SELECT id, kind, dict, NULL::text FROM archive_dicts ORDER BY id"
SQL_DICT_INSERT = (
    "INSERT INTO archive_dicts (kind, created_at, dict, sha256) "
    "VALUES (%(kind)s, %(created_at)s, %(dict)s, %(sha256)s) RETURNING id"
)

# -- runs --------------------------------------------------------------------------

SQL_RUNNING = "SELECT max(id) FROM archive_runs WHERE status = 'running'"
SQL_INTERRUPT_RUNS = (
    "UPDATE archive_runs SET status = 'interrupted', finished_at = %(now)s WHERE status = 'running'"
)
SQL_START_RUN = (
    "INSERT INTO archive_runs (started_at, status) VALUES (%(now)s, 'running') RETURNING id"
)
SQL_COUNT_BATCH = (
    "UPDATE archive_runs SET entries = entries + %(entries)s, rows = rows + %(rows)s "
    "WHERE id = %(id)s"
)
SQL_FINISH_RUN = (
    "UPDATE archive_runs SET status = 'done', finished_at = %(now)s, detail = %(detail)s "
    "WHERE id = %(id)s"
)

# -- space -----------------------------------------------------------------------

SQL_HAS_DOCUMENT_TABLES = "SELECT to_regclass('chunks') IS NOT NULL"

# Rows a server-side cursor brings over per round trip in stored_entries: a
# bounded number of payloads in memory at once, as SQLite's one row at a time.
_STORED_ENTRIES_PER_FETCH = 16
# Server-side cursor names, unique within this process (a connection may have
# two of our cursors open at once, e.g. a check that stops early and restarts).
_cursor_numbers = itertools.count(1)


def _entry_row(row: Sequence[Any]) -> EntryRow:
    return EntryRow(*row)


def _stored_row(row: Sequence[Any]) -> StoredRow:
    return StoredRow(*row)


def _dictionary(row: Sequence[Any]) -> Dictionary:
    return Dictionary(*row)


def _value(value: Any) -> Any:
    # SQLite stores a payload's JSON true/false as 1/0; psycopg would send a
    # boolean, which an integer or text column refuses. The services' own rows
    # never hold one (archival.payload checks what a restore reads itself).
    return int(value) if isinstance(value, bool) else value


class PgArchiveStore:
    """:class:`~abathur.stores.archive.ArchiveStore` on one psycopg connection, in its transaction.

    Example:
        >>> from abathur.backends.postgres.archive import SQL_ARCHIVE_LIST
        >>> "ORDER BY id DESC" in SQL_ARCHIVE_LIST
        True
    """

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]], context: PgContext) -> None:
        self._conn = conn
        self._context = context

    def _rows(self, query: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return self._conn.execute(query, params).fetchall()

    def _one(self, query: str, params: dict[str, Any] | None = None) -> tuple[Any, ...] | None:
        return self._conn.execute(query, params).fetchone()

    # -- archive entries ---------------------------------------------------------

    def entries(
        self, *, kind: str | None, ref: str | None, before: int | None, limit: int
    ) -> list[EntryRow]:
        """Entries newest first, below id ``before``; ``ref`` only with ``kind``."""
        last = _INT64_MAX if before is None else min(before, _INT64_MAX + 1) - 1
        params: dict[str, Any] = {"kind": kind, "ref": ref, "last": last, "limit": limit}
        if kind is None:
            query = SQL_ARCHIVE_LIST
        elif ref is None:
            query = SQL_ARCHIVE_BY_KIND
        else:
            query = SQL_ARCHIVE_BY_REF
        return [_entry_row(row) for row in self._rows(query, params)]

    def entry(self, entry_id: int) -> tuple[EntryRow, StoredRow] | None:
        """One entry with its stored bytes, or None if there is none with this id."""
        row = self._one(SQL_ARCHIVE_ONE, {"id": entry_id})
        if row is None:
            return None
        return _entry_row(row[:12]), _stored_row(row[12:])

    def insert_entry(self, entry: NewEntry) -> int:
        """Write one archive entry; return its id."""
        row = self._one(SQL_ARCHIVE_INSERT, entry._asdict())
        assert row is not None  # INSERT ... RETURNING one row
        return int(row[0])

    def delete_entry(self, entry_id: int) -> None:
        """Remove one archive entry (it was restored)."""
        self._conn.execute(SQL_ARCHIVE_DELETE, {"id": entry_id})

    def has_checksums(self) -> bool:
        """Whether the archive's checksum columns exist: always, on PostgreSQL (040)."""
        row = self._one(SQL_HAS_CHECKSUMS)
        return row is not None and int(row[0]) == 3

    def stored_entries(self, *, checksummed: bool) -> Iterator[StoredRow]:
        """Every entry's stored bytes in id order, a few at a time (for a check).

        A named (server-side) cursor, which lives as long as the transaction
        the backend runs this in; closed when the iteration ends or is dropped.
        """
        query = SQL_ARCHIVE_ALL if checksummed else SQL_ARCHIVE_ALL_UNCHECKSUMMED
        name = f"abathur_archive_{next(_cursor_numbers)}"
        with self._conn.cursor(name=name) as cur:
            cur.itersize = _STORED_ENTRIES_PER_FETCH
            cur.execute(query)
            for row in cur:
                yield _stored_row(row)

    # -- compression dictionaries --------------------------------------------------

    def latest_dictionary(self, kind: str) -> Dictionary | None:
        """The newest dictionary of ``kind``, if any."""
        row = self._one(SQL_LATEST_DICT, {"kind": kind})
        return _dictionary(row) if row is not None else None

    def dictionary(self, dict_id: int, *, checksummed: bool) -> Dictionary | None:
        """Dictionary ``dict_id`` (its sha256 None unless ``checksummed``), if it exists."""
        query = SQL_DICT if checksummed else SQL_DICT_UNCHECKSUMMED
        row = self._one(query, {"id": dict_id})
        return _dictionary(row) if row is not None else None

    def dictionaries(self, *, checksummed: bool) -> Iterator[Dictionary]:
        """Every dictionary in id order (for a check); few and small, read at once."""
        query = SQL_DICTS_ALL if checksummed else SQL_DICTS_ALL_UNCHECKSUMMED
        for row in self._rows(query):
            yield _dictionary(row)

    def insert_dictionary(self, kind: str, data: bytes, sha256: str, created_at: float) -> int:
        """Store a newly trained dictionary; return its id."""
        params = {"kind": kind, "created_at": created_at, "dict": data, "sha256": sha256}
        row = self._one(SQL_DICT_INSERT, params)
        assert row is not None  # INSERT ... RETURNING one row
        return int(row[0])

    # -- runs ----------------------------------------------------------------------

    def start_run(self, now: float) -> tuple[int, int | None]:
        """Mark runs still running as interrupted and start one: (its id, last interrupted)."""
        running = self._one(SQL_RUNNING)
        interrupted = None if running is None else running[0]
        self._conn.execute(SQL_INTERRUPT_RUNS, {"now": now})
        row = self._one(SQL_START_RUN, {"now": now})
        assert row is not None  # INSERT ... RETURNING one row
        return int(row[0]), None if interrupted is None else int(interrupted)

    def count_batch(self, run_id: int, entries: int, rows: int) -> None:
        """Add one batch's entries and rows to its run's totals."""
        self._conn.execute(SQL_COUNT_BATCH, {"entries": entries, "rows": rows, "id": run_id})

    def finish_run(self, run_id: int, now: float, detail: str) -> None:
        """Mark a run done, with its per-policy ``detail`` (JSON, stored as text)."""
        self._conn.execute(SQL_FINISH_RUN, {"now": now, "detail": detail, "id": run_id})

    # -- hot rows a run moves out --------------------------------------------------

    def terminated_sessions(
        self, cutoff: float, after: tuple[float, str], limit: int
    ) -> list[TerminatedSession]:
        """Sessions terminated before ``cutoff``, in (updated_at, id) order after ``after``."""
        after_at, after_id = after
        params = {"cutoff": cutoff, "after_at": after_at, "after_id": after_id, "limit": limit}
        return [TerminatedSession(*row) for row in self._rows(SQL_TERMINATED_SESSIONS, params)]

    def session_rows(self, session_id: str) -> tuple[list[HotRow], list[HotRow]]:
        """A session's row (zero or one) and its events in order, in the archived columns."""
        session = self._rows(SQL_SESSION_ROW, {"id": session_id})
        events = self._rows(SQL_SESSION_EVENTS, {"id": session_id})
        return session, events

    def move_session_out(self, session_id: str) -> None:
        """Leave an archived stub of a terminated session and delete its events."""
        self._conn.execute(SQL_SESSION_STUB, {"id": session_id})
        self._conn.execute(SQL_DELETE_EVENTS, {"id": session_id})

    def current_memories(self, after_id: int, limit: int) -> list[CurrentMemory]:
        """Current versions of memories with an id above ``after_id``, in id order."""
        rows = self._rows(SQL_CURRENT_MEMORIES_AFTER, {"after": after_id, "limit": limit})
        return [CurrentMemory(*row) for row in rows]

    def memory_rows(self, namespace: str, key: str) -> list[HotRow]:
        """Every version of one memory, oldest first, in the archived columns."""
        return self._rows(SQL_MEMORY_ROWS, {"namespace": namespace, "key": key})

    def old_versions(
        self, namespace: str, key: str, *, up_to: int, written_before: float
    ) -> list[HotRow]:
        """Old (not current) versions up to ``up_to`` written before a time, oldest first."""
        params = {"namespace": namespace, "key": key, "up_to": up_to, "before": written_before}
        return self._rows(SQL_OLD_VERSIONS, params)

    def delete_memory(self, namespace: str, key: str) -> None:
        """Delete every version of one memory."""
        self._conn.execute(SQL_DELETE_MEMORY, {"namespace": namespace, "key": key})

    def delete_versions(self, ids: Sequence[int]) -> None:
        """Delete memory versions by id."""
        self._conn.execute(SQL_DELETE_IDS, {"ids": list(ids)})

    # -- putting rows back ---------------------------------------------------------

    def session_status(self, session_id: str) -> str | None:
        """The status of a session in the hot tables, or None if there is none."""
        row = self._one(SQL_SESSION_STATUS, {"id": session_id})
        return str(row[0]) if row is not None else None

    def session_has_events(self, session_id: str) -> bool:
        """Whether a session has any event in the hot tables."""
        return self._one(SQL_SESSION_HAS_EVENTS, {"id": session_id}) is not None

    def memory_version_count(self, namespace: str, key: str) -> int:
        """How many versions of one memory the hot tables hold."""
        row = self._one(SQL_MEMORY_VERSION_COUNT, {"namespace": namespace, "key": key})
        return int(row[0]) if row is not None else 0

    def memory_id_taken(self, memory_id: int) -> bool:
        """Whether a memory version with this id exists."""
        return self._one(SQL_MEMORY_ID_TAKEN, {"id": memory_id}) is not None

    def is_live_memory(self, memory_id: int) -> bool:
        """Whether the memory version with this id exists with status live."""
        return self._one(SQL_IS_LIVE_MEMORY, {"id": memory_id}) is not None

    def current_version(self, namespace: str, key: str) -> int | None:
        """The current version number of one memory, or None if it has none."""
        row = self._one(SQL_CURRENT_VERSION, {"namespace": namespace, "key": key})
        return int(row[0]) if row is not None and row[0] is not None else None

    def existing_versions(self, namespace: str, key: str, versions: Sequence[int]) -> list[int]:
        """Which of ``versions`` of one memory the hot tables hold, in version order."""
        params = {"namespace": namespace, "key": key, "versions": list(versions)}
        return [int(v) for (v,) in self._rows(SQL_EXISTING_VERSIONS, params)]

    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[HotRow]) -> int:
        """Insert rows into one of ``ARCHIVED_TABLES``; return the last row's id.

        Only ``memories`` has an integer id; for ``sessions`` and ``events``
        (text ids, no rowid on SQLite either, whose answer there is stale)
        this returns 0, as it does when ``rows`` is empty. Rows inserted with
        their own ids move the identity sequence past them.
        """
        # Table and column names are checked against our own lists, so nothing
        # from a payload is ever formatted into SQL.
        known = ARCHIVED_TABLES[table]
        if any(c not in known for c in columns):
            raise ValueError(f"columns {list(columns)} are not all columns of {table}")
        if not rows:
            return 0
        names = [f"v{i}" for i in range(len(columns))]
        query = sql.SQL("INSERT INTO {table} ({columns}) VALUES ({values})").format(
            table=sql.Identifier(table),
            columns=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
            values=sql.SQL(", ").join(sql.Placeholder(n) for n in names),
        )
        params = [dict(zip(names, map(_value, row), strict=True)) for row in rows]
        last = 0
        with self._conn.cursor() as cur:
            if table in _IDENTITY_TABLES:
                query += sql.SQL(" RETURNING id")
                cur.executemany(query, params, returning=True)
                while True:
                    returned = cur.fetchone()
                    if returned is not None:
                        last = int(returned[0])
                    if not cur.nextset():
                        break
            else:
                cur.executemany(query, params)
        if table in _IDENTITY_TABLES and "id" in columns:
            advance = sql.SQL(SQL_ADVANCE_IDENTITY).format(table=sql.Identifier(table))
            self._conn.execute(advance, {"table": table})
        return last

    def update_session(self, session_id: str, columns: Sequence[str], row: HotRow) -> None:
        """Overwrite a session's columns (of ``SESSION_COLUMNS``) with ``row``."""
        if any(c not in SESSION_COLUMNS for c in columns):
            raise ValueError(f"columns {list(columns)} are not all columns of sessions")
        names = [f"v{i}" for i in range(len(columns))]
        sets = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder(n))
            for c, n in zip(columns, names, strict=True)
        )
        query = sql.SQL("UPDATE sessions SET {sets} WHERE id = {id}").format(
            sets=sets, id=sql.Placeholder("session_id")
        )
        params: dict[str, Any] = dict(zip(names, map(_value, row), strict=True))
        params["session_id"] = session_id
        self._conn.execute(query, params)

    # -- space -------------------------------------------------------------------

    def has_document_tables(self) -> bool:
        """Whether this database holds the document tables (always, after 030)."""
        row = self._one(SQL_HAS_DOCUMENT_TABLES)
        return bool(row is not None and row[0])

    def auto_vacuum(self) -> str:
        """``"none"``: freed space is reused by new rows; nothing here shrinks the files.

        PostgreSQL's (auto)vacuum marks dead rows' space reusable, as SQLite's
        freelist does with auto_vacuum NONE; giving it back to the file system
        takes ``VACUUM FULL``, outside any transaction, which no store runs.
        """
        return "none"

    def free_bytes(self) -> int:
        """0: PostgreSQL's free space map is readable only through an extension we do not use."""
        return 0
