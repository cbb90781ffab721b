"""PostgreSQL's :class:`~abathur.stores.tasks.TaskStore` (issue 14).

The SQL of :mod:`abathur.backends.sqlite.tasks`; ties in ``created_at`` are
broken by the ``rowid`` column migration 010 adds (SQLite's implicit rowid,
insertion order), and ``limit`` -1 (no limit) becomes ``LIMIT NULL``.
"""

from __future__ import annotations

from typing import Any

import psycopg

from abathur.backends.postgres.context import PgContext
from abathur.backends.postgres.sessions import limit_param
from abathur.stores.tasks import TaskRow

__all__ = ["SQL_ALL_TASKS", "SQL_TASKS_OF_SESSION", "PgTaskStore"]

_TASK_COLUMNS = "id, session_id, prompt, status, result, error, metadata, created_at, updated_at"

# The session's tasks in creation order: tasks_by_session (session_id, created_at, rowid).
SQL_TASKS_OF_SESSION = (
    f"SELECT {_TASK_COLUMNS} FROM tasks WHERE session_id = %(session_id)s "
    "ORDER BY created_at, rowid"
)

# Every session's tasks, newest first; status NULL means any, limit NULL all.
# An operator's listing: a sort.
SQL_ALL_TASKS = (
    f"SELECT {_TASK_COLUMNS} FROM tasks WHERE (%(status)s::text IS NULL OR status = %(status)s) "
    "ORDER BY created_at DESC, rowid DESC LIMIT %(limit)s"
)

SQL_TASK_BY_ID = f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = %(id)s"
SQL_SESSION_EXISTS = "SELECT 1 FROM sessions WHERE id = %(id)s"
SQL_INSERT_TASK = (
    "INSERT INTO tasks (id, session_id, prompt, status, result, error, metadata, created_at, "
    "updated_at, audit_seq) VALUES (%(id)s, %(session_id)s, %(prompt)s, %(status)s, %(result)s, "
    "%(error)s, %(metadata)s, %(created_at)s, %(updated_at)s, %(audit_seq)s)"
)
SQL_UPDATE_TASK = (
    "UPDATE tasks SET status = %(status)s, result = %(result)s, error = %(error)s, "
    "updated_at = %(at)s, audit_seq = %(audit_seq)s WHERE id = %(id)s"
)
SQL_TASK_AUDIT_SEQ = "SELECT audit_seq FROM tasks WHERE id = %(id)s"


class PgTaskStore:
    """:class:`~abathur.stores.tasks.TaskStore` on one psycopg connection, in its transaction.

    Example:
        >>> from abathur.stores.tasks import TaskStore
        >>> [m for m in dir(TaskStore) if m[0] != "_" and not hasattr(PgTaskStore, m)]
        []
    """

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]], context: PgContext) -> None:
        self._conn = conn
        self._context = context

    def task_row(self, task_id: str, /) -> TaskRow | None:
        """The task with this id, or None."""
        row = self._conn.execute(SQL_TASK_BY_ID, {"id": task_id}).fetchone()
        return None if row is None else TaskRow._make(row)

    def audit_seq(self, task_id: str, /) -> int | None:
        """The seq of the audit record that last wrote the task (None: none did)."""
        row = self._conn.execute(SQL_TASK_AUDIT_SEQ, {"id": task_id}).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def session_exists(self, session_id: str, /) -> bool:
        """True when a session has this id."""
        return self._conn.execute(SQL_SESSION_EXISTS, {"id": session_id}).fetchone() is not None

    def insert(self, task: TaskRow, /, *, audit_seq: int) -> None:
        """Add one task, written by audit record ``audit_seq``."""
        self._conn.execute(SQL_INSERT_TASK, {**task._asdict(), "audit_seq": audit_seq})

    def update(
        self,
        task_id: str,
        /,
        *,
        status: str,
        result: str | None,
        error: str | None,
        at: float,
        audit_seq: int,
    ) -> None:
        """Set the task's status, result, error and ``updated_at``; written by ``audit_seq``."""
        self._conn.execute(
            SQL_UPDATE_TASK,
            {"status": status, "result": result, "error": error, "at": at,
             "audit_seq": audit_seq, "id": task_id},
        )

    def tasks_of_session(self, session_id: str, /) -> list[TaskRow]:
        """The session's tasks in creation order."""
        rows = self._conn.execute(SQL_TASKS_OF_SESSION, {"session_id": session_id})
        return list(map(TaskRow._make, rows))

    def all_tasks(self, *, status: str | None, limit: int) -> list[TaskRow]:
        """Every session's tasks, newest first; status None means any, limit -1 all."""
        params = {"status": status, "limit": limit_param(limit)}
        return list(map(TaskRow._make, self._conn.execute(SQL_ALL_TASKS, params)))
