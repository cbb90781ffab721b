"""PostgreSQL's :class:`~abathur.stores.transfer.TransferStore`: the rows of export and import.

The SQLite sibling (``backends/sqlite/transfer.py``) is the reference: same
columns in the same order, same ordering, same Python types (``bigint`` comes
back as ``int``, ``double precision`` as ``float``, JSON as the ``text`` the
service wrote). Every text column is ``COLLATE "C"``, so ``ORDER BY`` and the
prefix ranges compare bytes as SQLite does.

What differs, and why:

* **Export pages by key.** SQLite's export methods return a lazy apsw cursor
  that steps through the rows. psycopg's ordinary cursor fetches a whole
  result set at once, and a server-side (named) cursor must be closed with a
  ``CLOSE`` that, if a half-read iterator is collected later, would land in
  whatever transaction the pooled connection runs then. So each export method
  reads :attr:`PgTransferStore.page_rows` rows at a time, continuing after the
  last key it returned (``(a, b) > (last_a, last_b)`` on the same unique key
  the ``ORDER BY`` uses). Inside the backend's one REPEATABLE READ (or
  SERIALIZABLE) transaction every page reads the same snapshot, so the rows
  are those one query would return, in the same order.
* **A session's tasks** are ordered ``created_at, id``: SQLite breaks a tie in
  ``created_at`` by ``rowid`` (insertion order), and the ``tasks`` table here
  has no insertion-order column (010). Equal ``created_at`` within one session
  is the only case where the two backends can list tasks in a different order.
* **Ids.** Import inserts no explicit integer id here (as on SQLite):
  :meth:`PgTransferStore.insert_memory` takes its id from the identity and
  returns it (``RETURNING id``), so the sequence never falls behind.
* **NUL.** PostgreSQL text cannot hold ``\\x00``. Every value this store
  writes is JSON (which escapes it), a status, or an id or namespace (which the services
  refuse with control characters), except a task's ``prompt`` and ``error``:
  one holding ``\\x00`` makes psycopg raise ``DataError`` where SQLite stores it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import psycopg

from abathur.backends.postgres.context import PgContext

__all__ = ["PgTransferStore"]

#: One row, in the column order of its query.
Row = tuple[Any, ...]

# ---------------------------------------------------------------------------
# SQL. Each export is a pair: the first page, and the page after a key
# (``k0``, ``k1``, ... the ORDER BY columns of the last row read). Integer
# keys are cast to bigint: psycopg types a Python int by its value (int2 ..
# numeric), and the cast keeps every page's plan the same bigint index walk.
# ---------------------------------------------------------------------------

_APP_STATE = (
    "SELECT app, key, value, updated_at FROM app_state "
    "WHERE (%(app)s::text IS NULL OR app = %(app)s)"
)
SQL_EXPORT_APP_STATE = f"{_APP_STATE} ORDER BY app, key LIMIT %(limit)s"
SQL_EXPORT_APP_STATE_NEXT = (
    f"{_APP_STATE} AND (app, key) > (%(k0)s, %(k1)s) ORDER BY app, key LIMIT %(limit)s"
)

_USER_STATE = (
    'SELECT app, "user", key, value, updated_at FROM user_state '
    "WHERE (%(app)s::text IS NULL OR app = %(app)s) "
    'AND (%(user)s::text IS NULL OR "user" = %(user)s)'
)
SQL_EXPORT_USER_STATE = f'{_USER_STATE} ORDER BY app, "user", key LIMIT %(limit)s'
SQL_EXPORT_USER_STATE_NEXT = (
    f'{_USER_STATE} AND (app, "user", key) > (%(k0)s, %(k1)s, %(k2)s) '
    'ORDER BY app, "user", key LIMIT %(limit)s'
)

_SESSIONS = (
    'SELECT id, app, "user", status, state, revision, created_at, updated_at, '
    "(SELECT count(*) FROM events WHERE events.session_id = sessions.id) FROM sessions "
    "WHERE (%(app)s::text IS NULL OR app = %(app)s) "
    'AND (%(user)s::text IS NULL OR "user" = %(user)s)'
)
SQL_EXPORT_SESSIONS = f"{_SESSIONS} ORDER BY id LIMIT %(limit)s"
SQL_EXPORT_SESSIONS_NEXT = f"{_SESSIONS} AND id > %(k0)s ORDER BY id LIMIT %(limit)s"

_EVENT_COLUMNS = "seq, id, author, content, state_delta, metadata, timestamp"
_EVENTS = f"SELECT {_EVENT_COLUMNS} FROM events WHERE session_id = %(session_id)s"
SQL_EXPORT_EVENTS = f"{_EVENTS} ORDER BY seq LIMIT %(limit)s"
SQL_EXPORT_EVENTS_NEXT = f"{_EVENTS} AND seq > %(k0)s::bigint ORDER BY seq LIMIT %(limit)s"

# A session's tasks in creation order (index tasks_by_session). SQLite breaks
# ties by rowid (insertion order); there is no such column here, so by id.
_TASK_COLUMNS = "id, session_id, prompt, status, result, error, metadata, created_at, updated_at"
_TASKS = f"SELECT {_TASK_COLUMNS} FROM tasks WHERE session_id = %(session_id)s"
SQL_EXPORT_TASKS = f"{_TASKS} ORDER BY created_at, id LIMIT %(limit)s"
SQL_EXPORT_TASKS_NEXT = (
    f"{_TASKS} AND (created_at, id) > (%(k0)s::double precision, %(k1)s) "
    "ORDER BY created_at, id LIMIT %(limit)s"
)

_MEMORY_COLUMNS = (
    "version, type, value, metadata, status, superseded_by_namespace, superseded_by_key, "
    "created_at, first_created_at, expires_at"
)
# Every version of every memory, grouped by memory (UNIQUE (namespace, key, version)).
_MEMORIES = f"SELECT namespace, key, {_MEMORY_COLUMNS} FROM memories WHERE true"
# The same under a prefix, whole segments (see abathur.memory: never a LIKE).
_MEMORIES_PREFIX = (
    f"SELECT namespace, key, {_MEMORY_COLUMNS} FROM memories "
    "WHERE namespace >= %(prefix)s AND namespace < %(after)s AND "
    "(namespace = %(prefix)s OR namespace >= %(below)s)"
)
_MEMORIES_ORDER = " ORDER BY namespace, key, version LIMIT %(limit)s"
_MEMORIES_AFTER = " AND (namespace, key, version) > (%(k0)s, %(k1)s, %(k2)s::bigint)"
SQL_EXPORT_MEMORIES = _MEMORIES + _MEMORIES_ORDER
SQL_EXPORT_MEMORIES_NEXT = _MEMORIES + _MEMORIES_AFTER + _MEMORIES_ORDER
SQL_EXPORT_MEMORIES_PREFIX = _MEMORIES_PREFIX + _MEMORIES_ORDER
SQL_EXPORT_MEMORIES_PREFIX_NEXT = _MEMORIES_PREFIX + _MEMORIES_AFTER + _MEMORIES_ORDER

# Archive entries in scope: not exported (restore them first), but counted.
SQL_ARCHIVED_SESSIONS = (
    "SELECT count(*) FROM archive WHERE kind = 'session' "
    "AND (%(app)s::text IS NULL OR app = %(app)s) "
    'AND (%(user)s::text IS NULL OR "user" = %(user)s)'
)
SQL_ARCHIVED_MEMORIES = (
    "SELECT count(*) FROM archive WHERE kind IN ('memory', 'versions') "
    "AND (%(prefix)s::text IS NULL OR "
    "(namespace >= %(prefix)s AND namespace < %(after)s "
    "AND (namespace = %(prefix)s OR namespace >= %(below)s)))"
)

SQL_APP_STATE_ROW = "SELECT value, updated_at FROM app_state WHERE app = %(app)s AND key = %(key)s"
SQL_INSERT_APP_STATE = (
    "INSERT INTO app_state (app, key, value, updated_at) "
    "VALUES (%(app)s, %(key)s, %(value)s, %(updated_at)s)"
)
SQL_USER_STATE_ROW = (
    "SELECT value, updated_at FROM user_state "
    'WHERE app = %(app)s AND "user" = %(user)s AND key = %(key)s'
)
SQL_INSERT_USER_STATE = (
    'INSERT INTO user_state (app, "user", key, value, updated_at) '
    "VALUES (%(app)s, %(user)s, %(key)s, %(value)s, %(updated_at)s)"
)
SQL_SESSION_ROW = (
    'SELECT app, "user", status, state, revision, created_at, updated_at FROM sessions '
    "WHERE id = %(id)s"
)
SQL_INSERT_SESSION = (
    'INSERT INTO sessions (id, app, "user", status, state, revision, created_at, updated_at, '
    "audit_seq) VALUES (%(id)s, %(app)s, %(user)s, %(status)s, %(state)s, %(revision)s, "
    "%(created_at)s, %(updated_at)s, %(audit_seq)s)"
)
SQL_EVENT_ROW = (
    "SELECT id, author, content, state_delta, metadata, timestamp FROM events "
    "WHERE session_id = %(session_id)s AND seq = %(seq)s"
)
SQL_COUNT_EVENTS = "SELECT count(*) FROM events WHERE session_id = %(session_id)s"
SQL_INSERT_EVENT = (
    "INSERT INTO events (session_id, seq, id, author, content, state_delta, metadata, timestamp, "
    "audit_seq) VALUES (%(session_id)s, %(seq)s, %(id)s, %(author)s, %(content)s, "
    "%(state_delta)s, %(metadata)s, %(timestamp)s, %(audit_seq)s)"
)
SQL_SESSION_EXISTS = "SELECT 1 FROM sessions WHERE id = %(id)s"
SQL_TASK_ROW = (
    "SELECT session_id, prompt, status, result, error, metadata, created_at, updated_at "
    "FROM tasks WHERE id = %(id)s"
)
SQL_INSERT_TASK = (
    "INSERT INTO tasks (id, session_id, prompt, status, result, error, metadata, created_at, "
    "updated_at, audit_seq) VALUES (%(id)s, %(session_id)s, %(prompt)s, %(status)s, "
    "%(result)s, %(error)s, %(metadata)s, %(created_at)s, %(updated_at)s, %(audit_seq)s)"
)
SQL_MEMORY_HISTORY = (
    f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE namespace = %(namespace)s AND key = %(key)s "
    "ORDER BY version"
)
# No id: the identity numbers the row, as SQLite's rowid does, and RETURNING
# gives it back (SQLite reads last_insert_rowid()).
SQL_INSERT_MEMORY = (
    "INSERT INTO memories (namespace, key, version, type, value, metadata, status, "
    "superseded_by_namespace, superseded_by_key, created_at, first_created_at, expires_at, "
    "is_current, audit_seq) VALUES (%(namespace)s, %(key)s, %(version)s, %(type)s, %(value)s, "
    "%(metadata)s, %(status)s, %(by_namespace)s, %(by_key)s, %(created_at)s, "
    "%(first_created_at)s, %(expires_at)s, %(is_current)s, %(audit_seq)s) RETURNING id"
)

_SESSION_FIELDS = ("app", "user", "status", "state", "revision", "created_at", "updated_at")
_EVENT_FIELDS = (
    "session_id", "seq", "id", "author", "content", "state_delta", "metadata", "timestamp"
)  # fmt: skip
_TASK_FIELDS = (
    "session_id", "prompt", "status", "result", "error", "metadata", "created_at", "updated_at"
)  # fmt: skip
_MEMORY_FIELDS = (
    "version", "type", "value", "metadata", "status", "by_namespace", "by_key",
    "created_at", "first_created_at", "expires_at",
)  # fmt: skip


def _named(fields: tuple[str, ...], row: Sequence[Any], what: str) -> dict[str, Any]:
    """A positional row as named parameters; a row of the wrong length is a bug."""
    if len(row) != len(fields):
        raise ValueError(f"{what} row has {len(row)} columns, expected {len(fields)}")
    return dict(zip(fields, row, strict=True))


class PgTransferStore:
    """The rows an export reads and an import writes, on one connection in its transaction.

    Export methods return iterators that read page by page (see the module
    docstring); consume them inside the transaction, as on SQLite. Reach it
    as ``tx.transfer``; built directly, it is
    ``PgTransferStore(conn, PgContext(url, settings))`` on a connection that is
    inside a transaction.
    """

    #: Rows one export query reads at a time.
    page_rows: int = 500

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]], context: PgContext) -> None:
        self._conn = conn
        self._context = context

    # -- export ------------------------------------------------------------------

    def export_app_state(self, *, app: str | None) -> Iterator[Row]:
        """(app, key, value, updated_at) of every app state key, of ``app`` if given."""
        return self._pages(
            SQL_EXPORT_APP_STATE, SQL_EXPORT_APP_STATE_NEXT, {"app": app}, lambda r: r[:2]
        )

    def export_user_state(self, *, app: str | None, user: str | None) -> Iterator[Row]:
        """(app, user, key, value, updated_at) of every user state key in scope."""
        return self._pages(
            SQL_EXPORT_USER_STATE,
            SQL_EXPORT_USER_STATE_NEXT,
            {"app": app, "user": user},
            lambda r: r[:3],
        )

    def export_sessions(self, *, app: str | None, user: str | None) -> Iterator[Row]:
        """Sessions in scope with their number of events, by id."""
        return self._pages(
            SQL_EXPORT_SESSIONS,
            SQL_EXPORT_SESSIONS_NEXT,
            {"app": app, "user": user},
            lambda r: r[:1],
        )

    def export_events(self, session_id: str) -> Iterator[Row]:
        """(seq, id, author, content, state_delta, metadata, timestamp) of a session's events."""
        return self._pages(
            SQL_EXPORT_EVENTS, SQL_EXPORT_EVENTS_NEXT, {"session_id": session_id}, lambda r: r[:1]
        )

    def export_tasks(self, session_id: str) -> Iterator[Row]:
        """A session's tasks in creation order (ties by id), every column."""
        return self._pages(
            SQL_EXPORT_TASKS,
            SQL_EXPORT_TASKS_NEXT,
            {"session_id": session_id},
            lambda r: (r[7], r[0]),
        )

    def count_archived_sessions(self, *, app: str | None, user: str | None) -> int:
        """Archived sessions in scope (not exported, counted)."""
        return self._count(SQL_ARCHIVED_SESSIONS, {"app": app, "user": user})

    def export_memories(
        self, *, prefix: str | None, after: str | None, below: str | None
    ) -> Iterator[Row]:
        """Every version of every memory (under ``prefix``), grouped by memory, oldest first."""
        if prefix is None:
            return self._pages(SQL_EXPORT_MEMORIES, SQL_EXPORT_MEMORIES_NEXT, {}, lambda r: r[:3])
        params = {"prefix": prefix, "after": after, "below": below}
        return self._pages(
            SQL_EXPORT_MEMORIES_PREFIX, SQL_EXPORT_MEMORIES_PREFIX_NEXT, params, lambda r: r[:3]
        )

    def count_archived_memories(
        self, *, prefix: str | None, after: str | None, below: str | None
    ) -> int:
        """Archived memories and old versions in scope (not exported, counted)."""
        params = {"prefix": prefix, "after": after, "below": below}
        return self._count(SQL_ARCHIVED_MEMORIES, params)

    # -- import ------------------------------------------------------------------

    def app_state_row(self, app: str, key: str) -> Row | None:
        """(value, updated_at) of one app state key, if set."""
        return self._first(SQL_APP_STATE_ROW, {"app": app, "key": key})

    def insert_app_state(self, app: str, key: str, value: str, updated_at: float) -> None:
        """Set one app state key."""
        params = {"app": app, "key": key, "value": value, "updated_at": updated_at}
        self._conn.execute(SQL_INSERT_APP_STATE, params)

    def user_state_row(self, app: str, user: str, key: str) -> Row | None:
        """(value, updated_at) of one user state key, if set."""
        return self._first(SQL_USER_STATE_ROW, {"app": app, "user": user, "key": key})

    def insert_user_state(
        self, app: str, user: str, key: str, value: str, updated_at: float
    ) -> None:
        """Set one user state key."""
        params = {"app": app, "user": user, "key": key, "value": value, "updated_at": updated_at}
        self._conn.execute(SQL_INSERT_USER_STATE, params)

    def session_row(self, session_id: str) -> Row | None:
        """(app, user, status, state, revision, created_at, updated_at) of a session, if any."""
        return self._first(SQL_SESSION_ROW, {"id": session_id})

    def count_events(self, session_id: str) -> int:
        """How many events a session has."""
        return self._count(SQL_COUNT_EVENTS, {"session_id": session_id})

    def insert_session(self, session_id: str, row: Sequence[Any], audit_seq: int) -> None:
        """Insert a session: ``row`` as :meth:`session_row` returns it."""
        params = _named(_SESSION_FIELDS, row, "session")
        self._conn.execute(SQL_INSERT_SESSION, {**params, "id": session_id, "audit_seq": audit_seq})

    def event_row(self, session_id: str, seq: int) -> Row | None:
        """(id, author, content, state_delta, metadata, timestamp) of one event, if any."""
        return self._first(SQL_EVENT_ROW, {"session_id": session_id, "seq": seq})

    def insert_event(self, row: Sequence[Any], audit_seq: int) -> None:
        """Insert an event: (session_id, seq, *what :meth:`event_row` returns)."""
        params = _named(_EVENT_FIELDS, row, "event")
        self._conn.execute(SQL_INSERT_EVENT, {**params, "audit_seq": audit_seq})

    def session_exists(self, session_id: str) -> bool:
        """Whether a session with this id exists."""
        return self._conn.execute(SQL_SESSION_EXISTS, {"id": session_id}).fetchone() is not None

    def task_row(self, task_id: str) -> Row | None:
        """(session_id, prompt, status, result, error, metadata, created_at, updated_at)."""
        return self._first(SQL_TASK_ROW, {"id": task_id})

    def insert_task(self, task_id: str, row: Sequence[Any], audit_seq: int) -> None:
        """Insert a task: ``row`` as :meth:`task_row` returns it."""
        params = _named(_TASK_FIELDS, row, "task")
        self._conn.execute(SQL_INSERT_TASK, {**params, "id": task_id, "audit_seq": audit_seq})

    def memory_history(self, namespace: str, key: str) -> list[Row]:
        """Every version of one memory, oldest first, in the export's version columns."""
        params = {"namespace": namespace, "key": key}
        return self._conn.execute(SQL_MEMORY_HISTORY, params).fetchall()

    def insert_memory(
        self,
        namespace: str,
        key: str,
        row: Sequence[Any],
        *,
        is_current: bool,
        audit_seq: int,
    ) -> int:
        """Insert one memory version (``row`` as :meth:`memory_history` returns); its id."""
        params = {
            **_named(_MEMORY_FIELDS, row, "memory version"),
            "namespace": namespace,
            "key": key,
            "is_current": int(is_current),
            "audit_seq": audit_seq,
        }
        found = self._conn.execute(SQL_INSERT_MEMORY, params).fetchone()
        if found is None:  # pragma: no cover - INSERT ... RETURNING always returns the row
            raise RuntimeError("INSERT INTO memories returned no id")
        return int(found[0])

    # -- helpers -----------------------------------------------------------------

    def _pages(
        self,
        first: str,
        following: str,
        params: Mapping[str, Any],
        key: Callable[[Row], Sequence[Any]],
    ) -> Iterator[Row]:
        """The rows of ``first``, then of ``following`` after the key of the last row read.

        The first page is read now (an error surfaces at the call, as a SQLite
        cursor's does); the rest as the iterator is consumed.
        """
        limit = self.page_rows
        rows = self._conn.execute(first, {**params, "limit": limit}).fetchall()

        def rest(rows: list[Row]) -> Iterator[Row]:
            while True:
                yield from rows
                if len(rows) < limit:
                    return
                after = {f"k{i}": value for i, value in enumerate(key(rows[-1]))}
                rows = self._conn.execute(following, {**params, **after, "limit": limit}).fetchall()

        return rest(rows)

    def _count(self, sql: str, params: Mapping[str, Any]) -> int:
        found = self._conn.execute(sql, params).fetchone()
        if found is None or not isinstance(found[0], int):  # pragma: no cover - count(*)
            raise RuntimeError(f"expected one integer from {sql!r}, got {found!r}")
        return found[0]

    def _first(self, sql: str, params: Mapping[str, Any]) -> Row | None:
        found = self._conn.execute(sql, params).fetchone()
        return None if found is None else tuple(found)
