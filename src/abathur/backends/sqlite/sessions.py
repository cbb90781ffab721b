"""SQLite's :class:`~abathur.stores.sessions.SessionStore`.

Hot queries are constants so tests/unit/test_query_plans.py and
``abathur smoke`` can EXPLAIN the exact text that ships. The index each one
needs is named beside it.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import cast

import apsw

from abathur.backends.sqlite.connection import scalar_int
from abathur.backends.sqlite.context import SqliteContext
from abathur.stores.sessions import EventRow, PurgeCounts, SessionRow

__all__ = [
    "SQL_EVENTS_AFTER",
    "SQL_LAST_EVENTS",
    "SQL_LAST_EVENTS_AFTER",
    "SQL_LIST_ALL_SESSIONS",
    "SQL_LIST_APP_SESSIONS",
    "SQL_LIST_SESSIONS",
    "SQL_SESSION_BY_ID",
    "SqliteSessionStore",
]

_SESSION_COLUMNS = "id, app, user, status, state, revision, created_at, updated_at"
_EVENT_COLUMNS = "seq, id, author, content, state_delta, metadata, timestamp"

# (id) -> one session row. Uses the sessions primary key.
SQL_SESSION_BY_ID = f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ?"

# (session_id, n) -> the newest n events, newest first (the caller reverses);
# n = -1 means all of them. Walks the events PRIMARY KEY (session_id, seq) backwards.
SQL_LAST_EVENTS = (
    f"SELECT {_EVENT_COLUMNS} FROM events WHERE session_id = ? ORDER BY seq DESC LIMIT ?"
)

# (session_id, after) -> every event with timestamp > after, oldest first.
# Uses events_by_time: the range on timestamp is what keeps `after=`
# (typically "since my last poll") cheap on a long session. Left alone, the
# planner may walk the primary key to save the sort and test every event on
# the way, so the index is named.
SQL_EVENTS_AFTER = (
    f"SELECT {_EVENT_COLUMNS} FROM events INDEXED BY events_by_time "
    "WHERE session_id = ? AND timestamp > ? ORDER BY seq"
)

# (session_id, after, n) -> the newest n events with timestamp > after, newest
# first (the caller reverses). Same index, same reason.
SQL_LAST_EVENTS_AFTER = (
    f"SELECT {_EVENT_COLUMNS} FROM events INDEXED BY events_by_time "
    "WHERE session_id = ? AND timestamp > ? ORDER BY seq DESC LIMIT ?"
)

# (:app, :user, :status, :limit) -> sessions of one user, newest update first;
# status NULL means any. sessions_by_app_user (app, user, updated_at) gives the
# order for free.
SQL_LIST_SESSIONS = (
    f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE app = :app AND user = :user "
    "AND (:status IS NULL OR status = :status) ORDER BY updated_at DESC, rowid DESC LIMIT :limit"
)

# (:app, :status, :limit) -> sessions of every user of an app, newest update
# first. sessions_by_app_user narrows to the app; the order needs a sort.
SQL_LIST_APP_SESSIONS = (
    f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE app = :app "
    "AND (:status IS NULL OR status = :status) ORDER BY updated_at DESC, rowid DESC LIMIT :limit"
)

# (:user, :status, :limit) -> sessions of every app, newest update first; user
# or status NULL means any. An operator's listing (abathur session list without
# --app), not a hot query: no index gives this order, so it sorts.
SQL_LIST_ALL_SESSIONS = (
    f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE (:user IS NULL OR user = :user) "
    "AND (:status IS NULL OR status = :status) ORDER BY updated_at DESC, rowid DESC LIMIT :limit"
)

# App state by its primary key (app, key); user state by (app, user, key).
SQL_APP_STATE = "SELECT key, value FROM app_state WHERE app = ?"
SQL_USER_STATE = "SELECT key, value FROM user_state WHERE app = ? AND user = ?"
SQL_PUT_APP_STATE = (
    "INSERT INTO app_state (app, key, value, updated_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (app, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
)
SQL_PUT_USER_STATE = (
    "INSERT INTO user_state (app, user, key, value, updated_at) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (app, user, key) DO UPDATE SET value = excluded.value, "
    "updated_at = excluded.updated_at"
)
SQL_INSERT_SESSION = (
    "INSERT INTO sessions (id, app, user, status, state, revision, created_at, updated_at, "
    "audit_seq) VALUES (?, ?, ?, 'created', ?, 0, ?, ?, ?)"
)
# The events PRIMARY KEY (session_id, seq), backwards.
SQL_LAST_SEQ = "SELECT seq FROM events WHERE session_id = ? ORDER BY seq DESC LIMIT 1"
# The UNIQUE (session_id, id) index of events.
SQL_EVENT_ID_TAKEN = "SELECT 1 FROM events WHERE session_id = ? AND id = ?"
SQL_INSERT_EVENT = (
    "INSERT INTO events (session_id, seq, id, author, content, state_delta, metadata, timestamp, "
    "audit_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
SQL_UPDATE_SESSION = (
    "UPDATE sessions SET status = ?, state = ?, revision = ?, updated_at = ? WHERE id = ?"
)
SQL_SET_STATUS = "UPDATE sessions SET status = ?, revision = ?, updated_at = ? WHERE id = ?"
SQL_COUNT_EVENTS = "SELECT count(*) FROM events WHERE session_id = ?"
SQL_DELETE_SESSION = "DELETE FROM sessions WHERE id = ?"

# sessions.purge (issue 11). One user's sessions: index sessions_by_app_user.
# :ids is a JSON array of session ids.
SQL_USER_SESSION_IDS = "SELECT id FROM sessions WHERE app = ? AND user = ?"
_IN_SESSIONS = "session_id IN (SELECT value FROM json_each(:ids))"
SQL_PURGE_TASK_IDS = "SELECT id FROM tasks WHERE " + _IN_SESSIONS
_PURGE_EVENTS = "FROM events WHERE " + _IN_SESSIONS
_PURGE_TASKS = "FROM tasks WHERE " + _IN_SESSIONS
_PURGE_SESSIONS = "FROM sessions WHERE id IN (SELECT value FROM json_each(:ids))"
_PURGE_USER_STATE = "FROM user_state WHERE app = :app AND user = :user"
_PURGE_ARCHIVE = "FROM archive WHERE kind = 'session' AND app = :app AND user = :user"
SQL_PURGE_COUNTS = tuple(
    "SELECT count(*) " + part
    for part in (_PURGE_EVENTS, _PURGE_TASKS, _PURGE_USER_STATE, _PURGE_ARCHIVE)
)
# Children first: the cascade would do it, explicit deletes say what went.
SQL_PURGE = tuple(
    "DELETE " + part
    for part in (_PURGE_EVENTS, _PURGE_TASKS, _PURGE_SESSIONS, _PURGE_USER_STATE, _PURGE_ARCHIVE)
)



def _purge_params(sql: str, ids: str, app: str, user: str) -> dict[str, str]:
    # Each purge statement names either the sessions (:ids) or the owner.
    return {"ids": ids} if ":ids" in sql else {"app": app, "user": user}


class SqliteSessionStore:
    """:class:`~abathur.stores.sessions.SessionStore` on one apsw connection, in its transaction.

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur.backends import open_backend
        >>> from abathur.config import Settings
        >>> def write(tx):
        ...     tx.sessions.insert_session("s1", app="a", user="u", state="{}", at=1.0,
        ...                                audit_seq=1)
        ...     return tx.sessions.session_row("s1").status, tx.sessions.last_seq("s1")
        >>> async def demo():
        ...     path = pathlib.Path(tempfile.mkdtemp()) / "x.db"
        ...     backend = await open_backend(Settings(db=path))
        ...     try:
        ...         return await backend.write(write)
        ...     finally:
        ...         await backend.close()
        >>> asyncio.run(demo())
        ('created', 0)
    """

    def __init__(self, conn: apsw.Connection, context: SqliteContext) -> None:
        self._conn = conn
        self._context = context

    # -- sessions ------------------------------------------------------------

    def session_row(self, session_id: str, /) -> SessionRow | None:
        """The session with this id, or None."""
        for row in self._conn.execute(SQL_SESSION_BY_ID, (session_id,)):
            return SessionRow._make(row)
        return None

    def list_sessions(
        self, *, app: str | None, user: str | None, status: str | None, limit: int
    ) -> list[SessionRow]:
        """Sessions newest ``updated_at`` first; ``None`` for app, user or status means any."""
        if app is None:
            sql, params = SQL_LIST_ALL_SESSIONS, {"user": user, "status": status, "limit": limit}
        elif user is None:
            sql, params = SQL_LIST_APP_SESSIONS, {"app": app, "status": status, "limit": limit}
        else:
            sql = SQL_LIST_SESSIONS
            params = {"app": app, "user": user, "status": status, "limit": limit}
        return list(map(SessionRow._make, self._conn.execute(sql, params)))

    def insert_session(
        self, session_id: str, /, *, app: str, user: str, state: str, at: float, audit_seq: int
    ) -> None:
        """Add a ``created`` session at revision 0, written by audit record ``audit_seq``."""
        self._conn.execute(SQL_INSERT_SESSION, (session_id, app, user, state, at, at, audit_seq))

    def update_session(
        self, session_id: str, /, *, status: str, state: str, revision: int, at: float
    ) -> None:
        """Set the session's status, state, revision and ``updated_at``."""
        self._conn.execute(SQL_UPDATE_SESSION, (status, state, revision, at, session_id))

    def set_status(self, session_id: str, /, *, status: str, revision: int, at: float) -> None:
        """Set the session's status, revision and ``updated_at``; its state stays."""
        self._conn.execute(SQL_SET_STATUS, (status, revision, at, session_id))

    def delete_session(self, session_id: str, /) -> None:
        """Delete the session; events and tasks go through ON DELETE CASCADE."""
        self._conn.execute(SQL_DELETE_SESSION, (session_id,))

    # -- events --------------------------------------------------------------

    def last_events(self, session_id: str, n: int, /) -> list[EventRow]:
        """The newest ``n`` events (``-1``: all), newest first."""
        return _events(self._conn.execute(SQL_LAST_EVENTS, (session_id, n)))

    def events_after(self, session_id: str, after: float, /) -> list[EventRow]:
        """Every event with ``timestamp > after``, oldest first."""
        return _events(self._conn.execute(SQL_EVENTS_AFTER, (session_id, after)))

    def last_events_after(self, session_id: str, after: float, n: int, /) -> list[EventRow]:
        """The newest ``n`` events with ``timestamp > after``, newest first."""
        return _events(self._conn.execute(SQL_LAST_EVENTS_AFTER, (session_id, after, n)))

    def last_seq(self, session_id: str, /) -> int:
        """The highest event seq of the session; 0 when it has none."""
        for (seq,) in self._conn.execute(SQL_LAST_SEQ, (session_id,)):
            return int(seq)
        return 0

    def has_event(self, session_id: str, event_id: str, /) -> bool:
        """True when the session has an event with this id."""
        return bool(self._conn.execute(SQL_EVENT_ID_TAKEN, (session_id, event_id)).fetchall())

    def insert_event(self, session_id: str, event: EventRow, /, *, audit_seq: int) -> None:
        """Add one event, written by audit record ``audit_seq``."""
        self._conn.execute(SQL_INSERT_EVENT, (session_id, *event, audit_seq))

    def count_events(self, session_id: str, /) -> int:
        """How many events the session has."""
        return scalar_int(self._conn, SQL_COUNT_EVENTS, (session_id,))

    # -- app and user state ----------------------------------------------------

    def app_state(self, app: str, /) -> dict[str, str]:
        """The app's state: key (no prefix) -> JSON text."""
        return dict(self._conn.execute(SQL_APP_STATE, (app,)))

    def user_state(self, app: str, user: str, /) -> dict[str, str]:
        """The state of (app, user): key (no prefix) -> JSON text."""
        return dict(self._conn.execute(SQL_USER_STATE, (app, user)))

    def put_app_state(self, app: str, values: Mapping[str, str], /, *, at: float) -> None:
        """Set these keys of the app's state (JSON text), other keys stay."""
        for key, value in values.items():
            self._conn.execute(SQL_PUT_APP_STATE, (app, key, value, at))

    def put_user_state(
        self, app: str, user: str, values: Mapping[str, str], /, *, at: float
    ) -> None:
        """Set these keys of (app, user)'s state (JSON text), other keys stay."""
        for key, value in values.items():
            self._conn.execute(SQL_PUT_USER_STATE, (app, user, key, value, at))

    # -- purge of one user's sessions -----------------------------------------

    def user_session_ids(self, app: str, user: str, /) -> list[str]:
        """Ids of every session of (app, user) that exists now."""
        return [sid for (sid,) in self._conn.execute(SQL_USER_SESSION_IDS, (app, user))]

    def task_ids(self, session_ids: Collection[str], /) -> set[str]:
        """Ids of the tasks of these sessions."""
        params = {"ids": json.dumps(list(session_ids))}
        return {tid for (tid,) in self._conn.execute(SQL_PURGE_TASK_IDS, params)}

    def purge_counts(self, session_ids: Collection[str], app: str, user: str, /) -> PurgeCounts:
        """What :meth:`purge` would remove (sessions counted by the caller)."""
        ids = json.dumps(list(session_ids))
        return PurgeCounts._make(
            scalar_int(self._conn, sql, _purge_params(sql, ids, app, user))
            for sql in SQL_PURGE_COUNTS
        )

    def purge(self, session_ids: Collection[str], app: str, user: str, /) -> None:
        """Delete these sessions with their events and tasks, the user's state in
        the app and archived sessions of (app, user)."""
        ids = json.dumps(list(session_ids))
        for sql in SQL_PURGE:
            self._conn.execute(sql, _purge_params(sql, ids, app, user))


def _events(cursor: apsw.Cursor) -> list[EventRow]:
    # The event columns come back in EventRow's order, as the schema types them.
    return cast(list[EventRow], cursor.fetchall())
