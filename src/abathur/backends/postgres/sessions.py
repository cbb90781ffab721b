"""PostgreSQL's :class:`~abathur.stores.sessions.SessionStore` (issue 14).

The SQL of :mod:`abathur.backends.sqlite.sessions`, in PostgreSQL's words:

- ``LIMIT -1`` (SQLite: no limit) is ``LIMIT NULL`` here (:func:`limit_param`).
- Ties in ``ORDER BY updated_at`` are broken by the ``rowid`` column migration
  010 adds (SQLite's implicit rowid: insertion order).
- A list of ids travels as one ``text[]`` parameter (``= ANY(...)``) where
  SQLite passes a JSON array to ``json_each``.
- A purge's ``erase_securely`` has no equivalent on PostgreSQL (see the
  backend's ``PgTransaction.erase_securely``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, cast

import psycopg

from abathur.backends.postgres.context import PgContext
from abathur.stores.sessions import EventRow, PurgeCounts, SessionRow

__all__ = [
    "SQL_EVENTS_AFTER",
    "SQL_LAST_EVENTS",
    "SQL_LAST_EVENTS_AFTER",
    "SQL_LIST_ALL_SESSIONS",
    "SQL_LIST_APP_SESSIONS",
    "SQL_LIST_SESSIONS",
    "SQL_SESSION_BY_ID",
    "PgSessionStore",
    "limit_param",
]

_SESSION_COLUMNS = 'id, app, "user", status, state, revision, created_at, updated_at'
_EVENT_COLUMNS = "seq, id, author, content, state_delta, metadata, timestamp"

# (id) -> one session row. The sessions primary key.
SQL_SESSION_BY_ID = f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = %(id)s"

# The newest n events, newest first (the caller reverses); n NULL means all.
# The events primary key (session_id, seq), backwards.
SQL_LAST_EVENTS = (
    f"SELECT {_EVENT_COLUMNS} FROM events WHERE session_id = %(session_id)s "
    "ORDER BY seq DESC LIMIT %(n)s"
)

# Every event with timestamp > after, oldest first; events_by_time narrows
# (PostgreSQL has no INDEXED BY: the planner picks on its statistics).
SQL_EVENTS_AFTER = (
    f"SELECT {_EVENT_COLUMNS} FROM events "
    "WHERE session_id = %(session_id)s AND timestamp > %(after)s ORDER BY seq"
)

# The newest n events with timestamp > after, newest first.
SQL_LAST_EVENTS_AFTER = (
    f"SELECT {_EVENT_COLUMNS} FROM events "
    "WHERE session_id = %(session_id)s AND timestamp > %(after)s ORDER BY seq DESC LIMIT %(n)s"
)

# The ::text casts let PostgreSQL type a NULL parameter in `IS NULL`.
_STATUS = "(%(status)s::text IS NULL OR status = %(status)s)"
_NEWEST = "ORDER BY updated_at DESC, rowid DESC LIMIT %(limit)s"

# Sessions of one user, newest update first: sessions_by_app_user
# (app, "user", updated_at, rowid) gives the order.
SQL_LIST_SESSIONS = (
    f'SELECT {_SESSION_COLUMNS} FROM sessions WHERE app = %(app)s AND "user" = %(user)s '
    f"AND {_STATUS} {_NEWEST}"
)
# Sessions of every user of an app: the index narrows, the order needs a sort.
SQL_LIST_APP_SESSIONS = (
    f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE app = %(app)s AND {_STATUS} {_NEWEST}"
)
# Sessions of every app (an operator's listing): a sort.
SQL_LIST_ALL_SESSIONS = (
    f"SELECT {_SESSION_COLUMNS} FROM sessions "
    f'WHERE (%(user)s::text IS NULL OR "user" = %(user)s) AND {_STATUS} {_NEWEST}'
)

SQL_APP_STATE = "SELECT key, value FROM app_state WHERE app = %(app)s"
SQL_USER_STATE = 'SELECT key, value FROM user_state WHERE app = %(app)s AND "user" = %(user)s'
SQL_PUT_APP_STATE = (
    "INSERT INTO app_state (app, key, value, updated_at) "
    "VALUES (%(app)s, %(key)s, %(value)s, %(at)s) "
    "ON CONFLICT (app, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
)
SQL_PUT_USER_STATE = (
    'INSERT INTO user_state (app, "user", key, value, updated_at) '
    "VALUES (%(app)s, %(user)s, %(key)s, %(value)s, %(at)s) "
    'ON CONFLICT (app, "user", key) DO UPDATE SET value = excluded.value, '
    "updated_at = excluded.updated_at"
)
SQL_INSERT_SESSION = (
    'INSERT INTO sessions (id, app, "user", status, state, revision, created_at, updated_at, '
    "audit_seq) VALUES (%(id)s, %(app)s, %(user)s, 'created', %(state)s, 0, %(at)s, %(at)s, "
    "%(audit_seq)s)"
)
SQL_LAST_SEQ = (
    "SELECT seq FROM events WHERE session_id = %(session_id)s ORDER BY seq DESC LIMIT 1"
)
SQL_EVENT_ID_TAKEN = "SELECT 1 FROM events WHERE session_id = %(session_id)s AND id = %(id)s"
SQL_INSERT_EVENT = (
    "INSERT INTO events (session_id, seq, id, author, content, state_delta, metadata, timestamp, "
    "audit_seq) VALUES (%(session_id)s, %(seq)s, %(id)s, %(author)s, %(content)s, "
    "%(state_delta)s, %(metadata)s, %(timestamp)s, %(audit_seq)s)"
)
SQL_UPDATE_SESSION = (
    "UPDATE sessions SET status = %(status)s, state = %(state)s, revision = %(revision)s, "
    "updated_at = %(at)s WHERE id = %(id)s"
)
SQL_SET_STATUS = (
    "UPDATE sessions SET status = %(status)s, revision = %(revision)s, updated_at = %(at)s "
    "WHERE id = %(id)s"
)
SQL_COUNT_EVENTS = "SELECT count(*) FROM events WHERE session_id = %(session_id)s"
SQL_DELETE_SESSION = "DELETE FROM sessions WHERE id = %(id)s"

# sessions.purge (issue 11). %(ids)s is a text[] of session ids.
SQL_USER_SESSION_IDS = 'SELECT id FROM sessions WHERE app = %(app)s AND "user" = %(user)s'
_IN_SESSIONS = "session_id = ANY(%(ids)s::text[])"
SQL_PURGE_TASK_IDS = "SELECT id FROM tasks WHERE " + _IN_SESSIONS
_PURGE_EVENTS = "FROM events WHERE " + _IN_SESSIONS
_PURGE_TASKS = "FROM tasks WHERE " + _IN_SESSIONS
_PURGE_SESSIONS = "FROM sessions WHERE id = ANY(%(ids)s::text[])"
_PURGE_USER_STATE = 'FROM user_state WHERE app = %(app)s AND "user" = %(user)s'
_PURGE_ARCHIVE = "FROM archive WHERE kind = 'session' AND app = %(app)s AND \"user\" = %(user)s"
SQL_PURGE_COUNTS = tuple(
    "SELECT count(*) " + part
    for part in (_PURGE_EVENTS, _PURGE_TASKS, _PURGE_USER_STATE, _PURGE_ARCHIVE)
)
# Children first: the cascade would do it, explicit deletes say what went.
SQL_PURGE = tuple(
    "DELETE " + part
    for part in (_PURGE_EVENTS, _PURGE_TASKS, _PURGE_SESSIONS, _PURGE_USER_STATE, _PURGE_ARCHIVE)
)


def limit_param(n: int) -> int | None:
    """SQLite's ``LIMIT n`` as a PostgreSQL parameter: a negative n (no limit) is NULL.

    Example:
        >>> limit_param(-1), limit_param(0), limit_param(5)
        (None, 0, 5)
    """
    return None if n < 0 else n


def _purge_params(sql: str, ids: list[str], app: str, user: str) -> dict[str, Any]:
    # Each purge statement names either the sessions (%(ids)s) or the owner.
    return {"ids": ids} if "%(ids)s" in sql else {"app": app, "user": user}


def _count(conn: psycopg.Connection[tuple[Any, ...]], sql: str, params: Mapping[str, Any]) -> int:
    row = conn.execute(sql, params).fetchone()
    return 0 if row is None else int(row[0])


class PgSessionStore:
    """:class:`~abathur.stores.sessions.SessionStore` on one psycopg connection, in its transaction.

    Example:
        >>> from abathur.stores.sessions import SessionStore
        >>> [m for m in dir(SessionStore) if m[0] != "_" and not hasattr(PgSessionStore, m)]
        []
    """

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]], context: PgContext) -> None:
        self._conn = conn
        self._context = context

    # -- sessions ------------------------------------------------------------

    def session_row(self, session_id: str, /) -> SessionRow | None:
        """The session with this id, or None."""
        row = self._conn.execute(SQL_SESSION_BY_ID, {"id": session_id}).fetchone()
        return None if row is None else SessionRow._make(row)

    def list_sessions(
        self, *, app: str | None, user: str | None, status: str | None, limit: int
    ) -> list[SessionRow]:
        """Sessions newest ``updated_at`` first; ``None`` for app, user or status means any."""
        params: dict[str, Any] = {"status": status, "limit": limit_param(limit)}
        if app is None:
            sql, params["user"] = SQL_LIST_ALL_SESSIONS, user
        elif user is None:
            sql, params["app"] = SQL_LIST_APP_SESSIONS, app
        else:
            sql, params["app"], params["user"] = SQL_LIST_SESSIONS, app, user
        return list(map(SessionRow._make, self._conn.execute(sql, params)))

    def insert_session(
        self, session_id: str, /, *, app: str, user: str, state: str, at: float, audit_seq: int
    ) -> None:
        """Add a ``created`` session at revision 0, written by audit record ``audit_seq``."""
        self._conn.execute(
            SQL_INSERT_SESSION,
            {"id": session_id, "app": app, "user": user, "state": state, "at": at,
             "audit_seq": audit_seq},
        )

    def update_session(
        self, session_id: str, /, *, status: str, state: str, revision: int, at: float
    ) -> None:
        """Set the session's status, state, revision and ``updated_at``."""
        self._conn.execute(
            SQL_UPDATE_SESSION,
            {"status": status, "state": state, "revision": revision, "at": at, "id": session_id},
        )

    def set_status(self, session_id: str, /, *, status: str, revision: int, at: float) -> None:
        """Set the session's status, revision and ``updated_at``; its state stays."""
        self._conn.execute(
            SQL_SET_STATUS, {"status": status, "revision": revision, "at": at, "id": session_id}
        )

    def delete_session(self, session_id: str, /) -> None:
        """Delete the session; events and tasks go through ON DELETE CASCADE."""
        self._conn.execute(SQL_DELETE_SESSION, {"id": session_id})

    # -- events --------------------------------------------------------------

    def last_events(self, session_id: str, n: int, /) -> list[EventRow]:
        """The newest ``n`` events (``-1``: all), newest first."""
        params = {"session_id": session_id, "n": limit_param(n)}
        return _events(self._conn.execute(SQL_LAST_EVENTS, params))

    def events_after(self, session_id: str, after: float, /) -> list[EventRow]:
        """Every event with ``timestamp > after``, oldest first."""
        params = {"session_id": session_id, "after": after}
        return _events(self._conn.execute(SQL_EVENTS_AFTER, params))

    def last_events_after(self, session_id: str, after: float, n: int, /) -> list[EventRow]:
        """The newest ``n`` events with ``timestamp > after``, newest first."""
        params = {"session_id": session_id, "after": after, "n": limit_param(n)}
        return _events(self._conn.execute(SQL_LAST_EVENTS_AFTER, params))

    def last_seq(self, session_id: str, /) -> int:
        """The highest event seq of the session; 0 when it has none."""
        row = self._conn.execute(SQL_LAST_SEQ, {"session_id": session_id}).fetchone()
        return 0 if row is None else int(row[0])

    def has_event(self, session_id: str, event_id: str, /) -> bool:
        """True when the session has an event with this id."""
        params = {"session_id": session_id, "id": event_id}
        return self._conn.execute(SQL_EVENT_ID_TAKEN, params).fetchone() is not None

    def insert_event(self, session_id: str, event: EventRow, /, *, audit_seq: int) -> None:
        """Add one event, written by audit record ``audit_seq``."""
        seq, event_id, author, content, state_delta, metadata, timestamp = event
        self._conn.execute(
            SQL_INSERT_EVENT,
            {"session_id": session_id, "seq": seq, "id": event_id, "author": author,
             "content": content, "state_delta": state_delta, "metadata": metadata,
             "timestamp": timestamp, "audit_seq": audit_seq},
        )

    def count_events(self, session_id: str, /) -> int:
        """How many events the session has."""
        return _count(self._conn, SQL_COUNT_EVENTS, {"session_id": session_id})

    # -- app and user state ----------------------------------------------------

    def app_state(self, app: str, /) -> dict[str, str]:
        """The app's state: key (no prefix) -> JSON text."""
        rows = self._conn.execute(SQL_APP_STATE, {"app": app})
        return {str(key): str(value) for key, value in rows}

    def user_state(self, app: str, user: str, /) -> dict[str, str]:
        """The state of (app, user): key (no prefix) -> JSON text."""
        rows = self._conn.execute(SQL_USER_STATE, {"app": app, "user": user})
        return {str(key): str(value) for key, value in rows}

    def put_app_state(self, app: str, values: Mapping[str, str], /, *, at: float) -> None:
        """Set these keys of the app's state (JSON text), other keys stay."""
        params = [{"app": app, "key": k, "value": v, "at": at} for k, v in values.items()]
        if params:
            with self._conn.cursor() as cur:
                cur.executemany(SQL_PUT_APP_STATE, params)

    def put_user_state(
        self, app: str, user: str, values: Mapping[str, str], /, *, at: float
    ) -> None:
        """Set these keys of (app, user)'s state (JSON text), other keys stay."""
        params = [
            {"app": app, "user": user, "key": k, "value": v, "at": at} for k, v in values.items()
        ]
        if params:
            with self._conn.cursor() as cur:
                cur.executemany(SQL_PUT_USER_STATE, params)

    # -- purge of one user's sessions -----------------------------------------

    def user_session_ids(self, app: str, user: str, /) -> list[str]:
        """Ids of every session of (app, user) that exists now."""
        rows = self._conn.execute(SQL_USER_SESSION_IDS, {"app": app, "user": user})
        return [str(sid) for (sid,) in rows]

    def task_ids(self, session_ids: Collection[str], /) -> set[str]:
        """Ids of the tasks of these sessions."""
        rows = self._conn.execute(SQL_PURGE_TASK_IDS, {"ids": list(session_ids)})
        return {str(tid) for (tid,) in rows}

    def purge_counts(self, session_ids: Collection[str], app: str, user: str, /) -> PurgeCounts:
        """What :meth:`purge` would remove (sessions counted by the caller)."""
        ids = list(session_ids)
        return PurgeCounts._make(
            _count(self._conn, sql, _purge_params(sql, ids, app, user))
            for sql in SQL_PURGE_COUNTS
        )

    def purge(self, session_ids: Collection[str], app: str, user: str, /) -> None:
        """Delete these sessions with their events and tasks, the user's state in
        the app and archived sessions of (app, user)."""
        ids = list(session_ids)
        for sql in SQL_PURGE:
            self._conn.execute(sql, _purge_params(sql, ids, app, user))



def _events(cursor: psycopg.Cursor[tuple[Any, ...]]) -> list[EventRow]:
    # The columns come back in EventRow's order, typed by the schema (bigint
    # -> int, double precision -> float, text -> str).
    return cast(list[EventRow], cursor.fetchall())
