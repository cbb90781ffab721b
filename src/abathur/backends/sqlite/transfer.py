"""SQLite's :class:`~abathur.stores.transfer.TransferStore`: the rows of export and import.

Transfer copies whole rows of sessions, events, tasks, state and memories in
the export format's column order (see the protocol), so it has its own store
rather than borrowing those concepts' typed rows.

Export reads one snapshot (one read transaction); import runs in one write
transaction. Rows travel as tuples in the column order of each query.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import apsw

from abathur.backends.sqlite.connection import scalar_int
from abathur.backends.sqlite.context import SqliteContext
from abathur.backends.sqlite.tasks import SQL_TASKS_OF_SESSION

__all__ = ["SqliteTransferStore"]

#: One row, in the column order of its query.
Row = tuple[Any, ...]

# ---------------------------------------------------------------------------
# SQL. Named parameters where a value binds twice.
# ---------------------------------------------------------------------------

SQL_EXPORT_APP_STATE = (
    "SELECT app, key, value, updated_at FROM app_state "
    "WHERE (:app IS NULL OR app = :app) ORDER BY app, key"
)
SQL_EXPORT_USER_STATE = (
    "SELECT app, user, key, value, updated_at FROM user_state "
    "WHERE (:app IS NULL OR app = :app) AND (:user IS NULL OR user = :user) "
    "ORDER BY app, user, key"
)
SQL_EXPORT_SESSIONS = (
    "SELECT id, app, user, status, state, revision, created_at, updated_at, "
    "(SELECT count(*) FROM events WHERE events.session_id = sessions.id) FROM sessions "
    "WHERE (:app IS NULL OR app = :app) AND (:user IS NULL OR user = :user) ORDER BY id"
)
_EVENT_COLUMNS = "seq, id, author, content, state_delta, metadata, timestamp"
SQL_EXPORT_EVENTS = f"SELECT {_EVENT_COLUMNS} FROM events WHERE session_id = ? ORDER BY seq"
# A session's tasks in creation order (index tasks_by_session): the task store's query.
SQL_EXPORT_TASKS = SQL_TASKS_OF_SESSION
_MEMORY_COLUMNS = (
    "version, type, value, metadata, status, superseded_by_namespace, superseded_by_key, "
    "created_at, first_created_at, expires_at"
)
# Every version of every memory, grouped by memory (UNIQUE (namespace, key, version)).
SQL_EXPORT_MEMORIES = (
    f"SELECT namespace, key, {_MEMORY_COLUMNS} FROM memories ORDER BY namespace, key, version"
)
# The same under a prefix, whole segments (see abathur.memory: never a LIKE).
SQL_EXPORT_MEMORIES_PREFIX = (
    f"SELECT namespace, key, {_MEMORY_COLUMNS} FROM memories "
    "WHERE namespace >= :prefix AND namespace < :after AND "
    "(namespace = :prefix OR namespace >= :below) ORDER BY namespace, key, version"
)
# Archive entries in scope: not exported (restore them first), but counted.
SQL_ARCHIVED_SESSIONS = (
    "SELECT count(*) FROM archive WHERE kind = 'session' "
    "AND (:app IS NULL OR app = :app) AND (:user IS NULL OR user = :user)"
)
SQL_ARCHIVED_MEMORIES = (
    "SELECT count(*) FROM archive WHERE kind IN ('memory', 'versions') AND (:prefix IS NULL OR "
    "(namespace >= :prefix AND namespace < :after "
    "AND (namespace = :prefix OR namespace >= :below)))"
)

SQL_APP_STATE_ROW = "SELECT value, updated_at FROM app_state WHERE app = ? AND key = ?"
SQL_INSERT_APP_STATE = "INSERT INTO app_state (app, key, value, updated_at) VALUES (?, ?, ?, ?)"
SQL_USER_STATE_ROW = (
    "SELECT value, updated_at FROM user_state WHERE app = ? AND user = ? AND key = ?"
)
SQL_INSERT_USER_STATE = (
    "INSERT INTO user_state (app, user, key, value, updated_at) VALUES (?, ?, ?, ?, ?)"
)
SQL_SESSION_ROW = (
    "SELECT app, user, status, state, revision, created_at, updated_at FROM sessions WHERE id = ?"
)
SQL_INSERT_SESSION = (
    "INSERT INTO sessions (id, app, user, status, state, revision, created_at, updated_at, "
    "audit_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
SQL_EVENT_ROW = (
    "SELECT id, author, content, state_delta, metadata, timestamp FROM events "
    "WHERE session_id = ? AND seq = ?"
)
SQL_COUNT_EVENTS = "SELECT count(*) FROM events WHERE session_id = ?"
SQL_INSERT_EVENT = (
    "INSERT INTO events (session_id, seq, id, author, content, state_delta, metadata, timestamp, "
    "audit_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
SQL_SESSION_EXISTS = "SELECT 1 FROM sessions WHERE id = ?"
SQL_TASK_ROW = (
    "SELECT session_id, prompt, status, result, error, metadata, created_at, updated_at "
    "FROM tasks WHERE id = ?"
)
SQL_INSERT_TASK = (
    "INSERT INTO tasks (id, session_id, prompt, status, result, error, metadata, created_at, "
    "updated_at, audit_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
SQL_MEMORY_HISTORY = (
    f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE namespace = ? AND key = ? ORDER BY version"
)
SQL_INSERT_MEMORY = (
    "INSERT INTO memories (namespace, key, version, type, value, metadata, status, "
    "superseded_by_namespace, superseded_by_key, created_at, first_created_at, expires_at, "
    "is_current, audit_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class SqliteTransferStore:
    """The rows an export reads and an import writes, on one connection in its transaction.

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur import Abathur
        >>> async def demo():
        ...     with tempfile.TemporaryDirectory() as tmp:
        ...         async with Abathur.open(pathlib.Path(tmp) / "a.db", embedder="none") as ab:
        ...             await ab.sessions.create(app="helpdesk", user="alice", session_id="s1")
        ...             return await ab.db.read(
        ...                 lambda tx: [r[:3] for r in
        ...                             tx.transfer.export_sessions(app="helpdesk", user=None)]
        ...             )
        >>> asyncio.run(demo())
        [('s1', 'helpdesk', 'alice')]
    """

    def __init__(self, conn: apsw.Connection, context: SqliteContext) -> None:
        self._conn = conn
        self._context = context

    # -- export ------------------------------------------------------------------

    def export_app_state(self, *, app: str | None) -> Iterator[Row]:
        """(app, key, value, updated_at) of every app state key, of ``app`` if given."""
        return iter(self._conn.execute(SQL_EXPORT_APP_STATE, {"app": app}))

    def export_user_state(self, *, app: str | None, user: str | None) -> Iterator[Row]:
        """(app, user, key, value, updated_at) of every user state key in scope."""
        return iter(self._conn.execute(SQL_EXPORT_USER_STATE, {"app": app, "user": user}))

    def export_sessions(self, *, app: str | None, user: str | None) -> Iterator[Row]:
        """Sessions in scope with their number of events, by id."""
        return iter(self._conn.execute(SQL_EXPORT_SESSIONS, {"app": app, "user": user}))

    def export_events(self, session_id: str) -> Iterator[Row]:
        """(seq, id, author, content, state_delta, metadata, timestamp) of a session's events."""
        return iter(self._conn.execute(SQL_EXPORT_EVENTS, (session_id,)))

    def export_tasks(self, session_id: str) -> Iterator[Row]:
        """A session's tasks in creation order, every column."""
        return iter(self._conn.execute(SQL_EXPORT_TASKS, (session_id,)))

    def count_archived_sessions(self, *, app: str | None, user: str | None) -> int:
        """Archived sessions in scope (not exported, counted)."""
        return scalar_int(self._conn, SQL_ARCHIVED_SESSIONS, {"app": app, "user": user})

    def export_memories(
        self, *, prefix: str | None, after: str | None, below: str | None
    ) -> Iterator[Row]:
        """Every version of every memory (under ``prefix``), grouped by memory, oldest first."""
        if prefix is None:
            return iter(self._conn.execute(SQL_EXPORT_MEMORIES))
        params = {"prefix": prefix, "after": after, "below": below}
        return iter(self._conn.execute(SQL_EXPORT_MEMORIES_PREFIX, params))

    def count_archived_memories(
        self, *, prefix: str | None, after: str | None, below: str | None
    ) -> int:
        """Archived memories and old versions in scope (not exported, counted)."""
        params = {"prefix": prefix, "after": after, "below": below}
        return scalar_int(self._conn, SQL_ARCHIVED_MEMORIES, params)

    # -- import ------------------------------------------------------------------

    def app_state_row(self, app: str, key: str) -> Row | None:
        """(value, updated_at) of one app state key, if set."""
        return self._first(SQL_APP_STATE_ROW, (app, key))

    def insert_app_state(self, app: str, key: str, value: str, updated_at: float) -> None:
        """Set one app state key."""
        self._conn.execute(SQL_INSERT_APP_STATE, (app, key, value, updated_at))

    def user_state_row(self, app: str, user: str, key: str) -> Row | None:
        """(value, updated_at) of one user state key, if set."""
        return self._first(SQL_USER_STATE_ROW, (app, user, key))

    def insert_user_state(
        self, app: str, user: str, key: str, value: str, updated_at: float
    ) -> None:
        """Set one user state key."""
        self._conn.execute(SQL_INSERT_USER_STATE, (app, user, key, value, updated_at))

    def session_row(self, session_id: str) -> Row | None:
        """(app, user, status, state, revision, created_at, updated_at) of a session, if any."""
        return self._first(SQL_SESSION_ROW, (session_id,))

    def count_events(self, session_id: str) -> int:
        """How many events a session has."""
        return scalar_int(self._conn, SQL_COUNT_EVENTS, (session_id,))

    def insert_session(self, session_id: str, row: Sequence[Any], audit_seq: int) -> None:
        """Insert a session: ``row`` as :meth:`session_row` returns it."""
        self._conn.execute(SQL_INSERT_SESSION, (session_id, *row, audit_seq))

    def event_row(self, session_id: str, seq: int) -> Row | None:
        """(id, author, content, state_delta, metadata, timestamp) of one event, if any."""
        return self._first(SQL_EVENT_ROW, (session_id, seq))

    def insert_event(self, row: Sequence[Any], audit_seq: int) -> None:
        """Insert an event: (session_id, seq, *what :meth:`event_row` returns)."""
        self._conn.execute(SQL_INSERT_EVENT, (*row, audit_seq))

    def session_exists(self, session_id: str) -> bool:
        """Whether a session with this id exists."""
        return bool(self._conn.execute(SQL_SESSION_EXISTS, (session_id,)).fetchall())

    def task_row(self, task_id: str) -> Row | None:
        """(session_id, prompt, status, result, error, metadata, created_at, updated_at)."""
        return self._first(SQL_TASK_ROW, (task_id,))

    def insert_task(self, task_id: str, row: Sequence[Any], audit_seq: int) -> None:
        """Insert a task: ``row`` as :meth:`task_row` returns it."""
        self._conn.execute(SQL_INSERT_TASK, (task_id, *row, audit_seq))

    def memory_history(self, namespace: str, key: str) -> list[Row]:
        """Every version of one memory, oldest first, in the export's version columns."""
        return list(self._conn.execute(SQL_MEMORY_HISTORY, (namespace, key)))

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
        params = (namespace, key, *row, int(is_current), audit_seq)
        self._conn.execute(SQL_INSERT_MEMORY, params)
        return int(self._conn.last_insert_rowid())

    def _first(self, sql: str, params: tuple[Any, ...]) -> Row | None:
        rows = self._conn.execute(sql, params).fetchall()
        return tuple(rows[0]) if rows else None
