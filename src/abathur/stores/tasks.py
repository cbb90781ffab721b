"""``TaskStore``: tasks of sessions.

The protocol every backend implements; reach it inside a transaction as
``tx.tasks`` (see :mod:`abathur.stores`). The store reads and writes rows;
:mod:`abathur.tasks` holds the rules (the lifecycle, validation) and builds
the models. ``result`` and ``metadata`` travel as the JSON text the service
encoded.

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from abathur.backends import open_backend
    >>> from abathur.config import Settings
    >>> async def demo():
    ...     path = pathlib.Path(tempfile.mkdtemp()) / "x.db"
    ...     backend = await open_backend(Settings(db=path))
    ...     try:
    ...         return await backend.read(lambda tx: tx.tasks.task_row("nope"))
    ...     finally:
    ...         await backend.close()
    >>> print(asyncio.run(demo()))
    None
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

__all__ = ["TaskRow", "TaskStore"]


class TaskRow(NamedTuple):
    """One task as stored; ``result`` (or None) and ``metadata`` are JSON text."""

    id: str
    session_id: str
    prompt: str
    status: str
    result: str | None
    error: str | None
    metadata: str
    created_at: float
    updated_at: float


class TaskStore(Protocol):
    """Tasks of sessions."""

    def task_row(self, task_id: str, /) -> TaskRow | None:
        """The task with this id, or None."""
        ...

    def audit_seq(self, task_id: str, /) -> int | None:
        """The seq of the audit record that last wrote the task (None: none did)."""
        ...

    def session_exists(self, session_id: str, /) -> bool:
        """True when a session has this id."""
        ...

    def insert(self, task: TaskRow, /, *, audit_seq: int) -> None:
        """Add one task, written by audit record ``audit_seq``."""
        ...

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
        ...

    def tasks_of_session(self, session_id: str, /) -> list[TaskRow]:
        """The session's tasks in creation order."""
        ...

    def all_tasks(self, *, status: str | None, limit: int) -> list[TaskRow]:
        """Every session's tasks, newest first; status None means any, limit -1 all."""
        ...
