"""SQLite's :class:`~abathur.stores.tasks.TaskStore`."""

from __future__ import annotations

import apsw

from abathur.backends.sqlite.context import SqliteContext
from abathur.stores.tasks import TaskRow

__all__ = ["SQL_ALL_TASKS", "SQL_TASKS_OF_SESSION", "SqliteTaskStore"]

_TASK_COLUMNS = "id, session_id, prompt, status, result, error, metadata, created_at, updated_at"

# (session_id) -> the session's tasks in creation order. Uses tasks_by_session
# (session_id, created_at); rowid, which every index carries, breaks ties.
SQL_TASKS_OF_SESSION = (
    f"SELECT {_TASK_COLUMNS} FROM tasks WHERE session_id = ? ORDER BY created_at, rowid"
)

# (:status, :limit) -> every session's tasks, newest first; status NULL means
# any, limit -1 all. An operator's listing (abathur task list without
# --session), not a hot query: no index gives this order, so it sorts.
SQL_ALL_TASKS = (
    f"SELECT {_TASK_COLUMNS} FROM tasks WHERE (:status IS NULL OR status = :status) "
    "ORDER BY created_at DESC, rowid DESC LIMIT :limit"
)

# One task by its primary key; one session by its primary key.
SQL_TASK_BY_ID = f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = ?"
SQL_SESSION_EXISTS = "SELECT 1 FROM sessions WHERE id = ?"
SQL_INSERT_TASK = (
    "INSERT INTO tasks (id, session_id, prompt, status, result, error, metadata, created_at, "
    "updated_at, audit_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
SQL_UPDATE_TASK = (
    "UPDATE tasks SET status = ?, result = ?, error = ?, updated_at = ?, audit_seq = ? "
    "WHERE id = ?"
)
SQL_TASK_AUDIT_SEQ = "SELECT audit_seq FROM tasks WHERE id = ?"


class SqliteTaskStore:
    """:class:`~abathur.stores.tasks.TaskStore` on one apsw connection, in its transaction.

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur.backends import open_backend
        >>> from abathur.config import Settings
        >>> def read(tx):
        ...     return tx.tasks.session_exists("s1"), tx.tasks.all_tasks(status=None, limit=-1)
        >>> async def demo():
        ...     path = pathlib.Path(tempfile.mkdtemp()) / "x.db"
        ...     backend = await open_backend(Settings(db=path))
        ...     try:
        ...         return await backend.read(read)
        ...     finally:
        ...         await backend.close()
        >>> asyncio.run(demo())
        (False, [])
    """

    def __init__(self, conn: apsw.Connection, context: SqliteContext) -> None:
        self._conn = conn
        self._context = context

    def task_row(self, task_id: str, /) -> TaskRow | None:
        """The task with this id, or None."""
        for row in self._conn.execute(SQL_TASK_BY_ID, (task_id,)):
            return TaskRow._make(row)
        return None

    def audit_seq(self, task_id: str, /) -> int | None:
        """The seq of the audit record that last wrote the task (None: none did)."""
        for (seq,) in self._conn.execute(SQL_TASK_AUDIT_SEQ, (task_id,)):
            return None if seq is None else int(seq)
        return None

    def session_exists(self, session_id: str, /) -> bool:
        """True when a session has this id."""
        return bool(self._conn.execute(SQL_SESSION_EXISTS, (session_id,)).fetchall())

    def insert(self, task: TaskRow, /, *, audit_seq: int) -> None:
        """Add one task, written by audit record ``audit_seq``."""
        self._conn.execute(SQL_INSERT_TASK, (*task, audit_seq))

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
        self._conn.execute(SQL_UPDATE_TASK, (status, result, error, at, audit_seq, task_id))

    def tasks_of_session(self, session_id: str, /) -> list[TaskRow]:
        """The session's tasks in creation order."""
        return list(map(TaskRow._make, self._conn.execute(SQL_TASKS_OF_SESSION, (session_id,))))

    def all_tasks(self, *, status: str | None, limit: int) -> list[TaskRow]:
        """Every session's tasks, newest first; status None means any, limit -1 all."""
        params = {"status": status, "limit": limit}
        return list(map(TaskRow._make, self._conn.execute(SQL_ALL_TASKS, params)))
