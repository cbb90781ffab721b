"""TaskService: units of work an agent does for a session.

A task belongs to a session (and goes when the session is deleted). Its
lifecycle: pending -> running -> succeeded | failed | cancelled, and a pending
task may be cancelled before it starts. Finished tasks never change again.

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from abathur import Abathur
    >>> async def demo():
    ...     async with Abathur.open(pathlib.Path(tempfile.mkdtemp()) / "a.db") as ab:
    ...         s = await ab.sessions.create(app="helpdesk", user="alice")
    ...         t = await ab.tasks.create(session_id=s.id, prompt="summarise ticket")
    ...         await ab.tasks.update(t.id, status="running")
    ...         t = await ab.tasks.update(t.id, status="succeeded", result={"summary": "ok"})
    ...         return t.status, t.result
    >>> asyncio.run(demo())
    ('succeeded', {'summary': 'ok'})
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from typing import Any, get_args

from abathur import audit
from abathur.analytics import CallRecorder, recorded
from abathur.errors import (
    AlreadyExistsError,
    InvalidInputError,
    InvalidTransitionError,
    SessionNotFoundError,
    TaskNotFoundError,
)
from abathur.models import Task, TaskStatus
from abathur.stores import Backend, Transaction
from abathur.stores.tasks import TaskRow
from abathur.values import INT64_MAX, check_id, check_int, check_no_nul, decode, encode

__all__ = ["STATUSES", "TRANSITIONS", "TaskService"]

STATUSES: tuple[str, ...] = get_args(TaskStatus)

#: Legal status changes: from -> the statuses it may move to.
TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"running", "cancelled"}),
    "running": frozenset({"succeeded", "failed", "cancelled"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}


def _check_status(status: object) -> str:
    if not isinstance(status, str) or status not in STATUSES:
        raise InvalidInputError(f"task status {status!r} is not one of {', '.join(STATUSES)}")
    return status


def _task(row: TaskRow) -> Task:
    task_id, session_id, prompt, status, result, error, metadata, created_at, updated_at = row
    return Task.model_construct(
        id=task_id, session_id=session_id, prompt=prompt, status=status, result=decode(result),
        error=error, metadata=json.loads(metadata), created_at=created_at, updated_at=updated_at,
    )


def _require_session(tx: Transaction, session_id: str) -> None:
    if not tx.tasks.session_exists(session_id):
        raise SessionNotFoundError(f"no session has id {session_id!r}")


class TaskService:
    """Tasks of sessions: create, read, move along the lifecycle, list.

    Reach it as ``Abathur.tasks``; every method is a coroutine.

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur import Abathur
        >>> async def demo():
        ...     async with Abathur.open(pathlib.Path(tempfile.mkdtemp()) / "a.db") as ab:
        ...         s = await ab.sessions.create(app="a", user="u")
        ...         t = await ab.tasks.create(session_id=s.id, prompt="p", task_id="t1")
        ...         return (await ab.tasks.get("t1")).status
        >>> asyncio.run(demo())
        'pending'
    """

    def __init__(self, db: Backend, *, recorder: CallRecorder | None = None) -> None:
        self._db = db
        self.recorder = recorder  # times each public call (analytics.recorded)

    @recorded("tasks.create")
    async def create(self, *, session_id: str, prompt: str,
                     metadata: dict[str, Any] | None = None,
                     task_id: str | None = None) -> Task:
        """Create a ``pending`` task for a session.

        Args:
            session_id: the session the task belongs to.
            prompt: what to do; a non-blank string.
            metadata: JSON object kept with the task.
            task_id: the id to use; a random hex id when not given.

        Returns:
            The new :class:`~abathur.models.Task`.

        Raises:
            InvalidIdError: ``session_id`` or ``task_id`` is not a valid id.
            InvalidInputError: ``prompt`` is blank or not a string, ``metadata`` not a dict.
            ValueNotSerializableError: ``metadata`` is not JSON.
            ValueTooLargeError: ``prompt`` or ``metadata`` is larger than ``max_value_bytes``.
            SessionNotFoundError: no session has this id.
            AlreadyExistsError: ``task_id`` is taken.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     async with Abathur.open(pathlib.Path(tempfile.mkdtemp()) / "a.db") as ab:
            ...         s = await ab.sessions.create(app="a", user="u")
            ...         t = await ab.tasks.create(session_id=s.id, prompt="summarise",
            ...                                   metadata={"priority": 1})
            ...         return t.status, t.metadata
            >>> asyncio.run(demo())
            ('pending', {'priority': 1})
        """
        check_id(session_id, "session id")
        if task_id is None:
            task_id = uuid.uuid4().hex
        check_id(task_id, "task id")
        limit = self._db.settings.max_value_bytes
        if not isinstance(prompt, str):
            raise InvalidInputError(f"prompt must be a string, got {type(prompt).__name__}")
        if not prompt.strip():
            raise InvalidInputError("prompt must not be blank")
        check_no_nul(prompt, "prompt")
        encode(prompt, what="prompt", limit=limit)
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict):
            raise InvalidInputError(
                f"task metadata must be a dict, got {type(metadata).__name__}"
            )
        metadata_json = encode(metadata, what="task metadata", limit=limit)

        def write(tx: Transaction) -> Task:
            _require_session(tx, session_id)
            if tx.tasks.task_row(task_id) is not None:
                raise AlreadyExistsError(f"a task with id {task_id!r} already exists")
            now = time.time()
            seq = audit.next_seq(tx)
            row = TaskRow(task_id, session_id, prompt, "pending", None, None, metadata_json,
                          now, now)
            tx.tasks.insert(row, audit_seq=seq)
            audit.append(tx, "task.create", "task", task_id, {"session_id": session_id},
                         at=now, content=("tasks", row))
            return _task(row)

        return await self._db.write(write)

    @recorded("tasks.get")
    async def get(self, task_id: str) -> Task:
        """Read one task.

        Args:
            task_id: the task.

        Returns:
            The :class:`~abathur.models.Task`.

        Raises:
            InvalidIdError: ``task_id`` is not a valid id.
            TaskNotFoundError: no task has this id.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     async with Abathur.open(pathlib.Path(tempfile.mkdtemp()) / "a.db") as ab:
            ...         s = await ab.sessions.create(app="a", user="u")
            ...         await ab.tasks.create(session_id=s.id, prompt="p", task_id="t1")
            ...         return (await ab.tasks.get("t1")).prompt
            >>> asyncio.run(demo())
            'p'
        """
        check_id(task_id, "task id")

        def read(tx: Transaction) -> Task:
            row = tx.tasks.task_row(task_id)
            if row is None:
                raise TaskNotFoundError(f"no task has id {task_id!r}")
            return _task(row)

        return await self._db.read(read)

    @recorded("tasks.update")
    async def update(self, task_id: str, *, status: str, result: Any = None,
                     error: str | None = None) -> Task:
        """Move a task along its lifecycle, recording its result or error.

        Legal moves: pending -> running | cancelled, running -> succeeded |
        failed | cancelled. ``result`` and ``error`` replace what the task held
        (``None`` clears them).

        Args:
            task_id: the task.
            status: the new status.
            result: a JSON value, usually given with ``succeeded``.
            error: a message, usually given with ``failed``.

        Returns:
            The updated :class:`~abathur.models.Task`.

        Raises:
            InvalidIdError: ``task_id`` is not a valid id.
            InvalidInputError: ``status`` is not a task status, ``error`` not a string.
            ValueNotSerializableError: ``result`` is not JSON.
            ValueTooLargeError: ``result`` or ``error`` is larger than ``max_value_bytes``.
            TaskNotFoundError: no task has this id.
            InvalidTransitionError: the move is not legal (including to the same status).

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     async with Abathur.open(pathlib.Path(tempfile.mkdtemp()) / "a.db") as ab:
            ...         s = await ab.sessions.create(app="a", user="u")
            ...         t = await ab.tasks.create(session_id=s.id, prompt="p")
            ...         await ab.tasks.update(t.id, status="running")
            ...         t = await ab.tasks.update(t.id, status="failed", error="timed out")
            ...         return t.status, t.error
            >>> asyncio.run(demo())
            ('failed', 'timed out')
        """
        check_id(task_id, "task id")
        new = _check_status(status)
        limit = self._db.settings.max_value_bytes
        result_json = None if result is None else encode(result, what="task result", limit=limit)
        if error is not None:
            if not isinstance(error, str):
                raise InvalidInputError(
                    f"task error must be a string or None, got {type(error).__name__}"
                )
            check_no_nul(error, "task error")
            encode(error, what="task error", limit=limit)

        def write(tx: Transaction) -> Task:
            found = tx.tasks.task_row(task_id)
            if found is None:
                raise TaskNotFoundError(f"no task has id {task_id!r}")
            _, session_id, prompt, old, _, _, metadata, created_at, _ = found
            if new not in TRANSITIONS[old]:
                allowed = ", ".join(sorted(TRANSITIONS[old])) or "nothing (it has finished)"
                raise InvalidTransitionError(
                    f"task {task_id!r} cannot go from {old!r} to {new!r}; "
                    f"from {old!r} it can go to: {allowed}"
                )
            now = time.time()
            seq = audit.next_seq(tx)
            # The update names the record it replaces, so a row rolled back to
            # that earlier state is found by `abathur check` (abathur.audit).
            replaces = tx.tasks.audit_seq(task_id)
            tx.tasks.update(task_id, status=new, result=result_json, error=error, at=now,
                            audit_seq=seq)
            row = TaskRow(task_id, session_id, prompt, new, result_json, error, metadata,
                          created_at, now)
            audit.append(tx, "task.update", "task", task_id,
                         {"from": old, "to": new, "replaces": replaces}, at=now,
                         content=("tasks", row))
            return _task(row)

        return await self._db.write(write)

    @recorded("tasks.list")
    async def list(self, *, session_id: str | None = None, status: str | None = None,
                   limit: int | None = None) -> list[Task]:
        """A session's tasks in creation order, or every session's tasks, newest first.

        Args:
            session_id: the session; ``None``: the tasks of every session,
                newest first (an operator's view, e.g. ``abathur task list``).
            status: only tasks in this status.
            limit: at most this many tasks (from 1); ``None``: all of them.

        Returns:
            :class:`~abathur.models.Task` objects: a session's oldest first,
            every session's newest first.

        Raises:
            InvalidIdError: ``session_id`` is not a valid id.
            InvalidInputError: ``status`` is not a task status, ``limit`` not
                an int from 1.
            SessionNotFoundError: no session has this id.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     async with Abathur.open(pathlib.Path(tempfile.mkdtemp()) / "a.db") as ab:
            ...         s = await ab.sessions.create(app="a", user="u")
            ...         other = await ab.sessions.create(app="a", user="v")
            ...         for p in ("first", "second"):
            ...             await ab.tasks.create(session_id=s.id, prompt=p)
            ...         await ab.tasks.create(session_id=other.id, prompt="third")
            ...         return ([t.prompt for t in await ab.tasks.list(session_id=s.id)],
            ...                 [t.prompt for t in await ab.tasks.list(limit=2)])
            >>> asyncio.run(demo())
            (['first', 'second'], ['third', 'second'])
        """
        if session_id is not None:
            check_id(session_id, "session id")
        if status is not None:
            _check_status(status)
        if limit is not None:
            check_int(limit, "limit", minimum=1, maximum=INT64_MAX)
        n = -1 if limit is None else limit

        def read(tx: Transaction) -> list[Task]:
            if session_id is None:
                return [_task(row) for row in tx.tasks.all_tasks(status=status, limit=n)]
            _require_session(tx, session_id)
            # A session has few tasks: filtering the status here keeps one
            # query (and one plan to assert) instead of two.
            found = (
                _task(row)
                for row in tx.tasks.tasks_of_session(session_id)
                if status is None or row.status == status
            )
            return list(found if limit is None else itertools.islice(found, limit))

        return await self._db.read(read)
