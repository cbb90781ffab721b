"""``TransferStore``: the rows ``abathur export`` reads and ``abathur import`` writes.

The protocol every backend implements; reach it inside a transaction as
``tx.transfer`` (see :mod:`abathur.stores`). Export reads one snapshot (one
read transaction); an import runs in one write transaction.

Transfer copies whole rows of sessions, events, tasks, app and user state and
memory versions, the concepts of other stores, in the column order of the
export format (:mod:`abathur.transfer`). So its rows are plain tuples
(:data:`Row`) in the order each method's docstring gives, not the typed rows
of the other stores: a backend returns its columns in that order and takes
them back in it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

__all__ = ["Row", "TransferStore"]

#: One row, in the column order the method's docstring gives.
Row = tuple[Any, ...]


class TransferStore(Protocol):
    """The rows an export reads and an import writes, inside one transaction."""

    def export_app_state(self, *, app: str | None) -> Iterator[Row]:
        """(app, key, value, updated_at) of every app state key, of ``app`` if given."""
        ...

    def export_user_state(self, *, app: str | None, user: str | None) -> Iterator[Row]:
        """(app, user, key, value, updated_at) of every user state key in scope."""
        ...

    def export_sessions(self, *, app: str | None, user: str | None) -> Iterator[Row]:
        """(id, app, user, status, state, revision, created_at, updated_at, events) by id.

        Sessions in scope; ``events`` is how many events each has.
        """
        ...

    def export_events(self, session_id: str) -> Iterator[Row]:
        """(seq, id, author, content, state_delta, metadata, timestamp) of a session's events."""
        ...

    def export_tasks(self, session_id: str) -> Iterator[Row]:
        """A session's tasks in creation order: (id, session_id, prompt, status, result,
        error, metadata, created_at, updated_at)."""
        ...

    def count_archived_sessions(self, *, app: str | None, user: str | None) -> int:
        """Archived sessions in scope (not exported, counted)."""
        ...

    def export_memories(
        self, *, prefix: str | None, after: str | None, below: str | None
    ) -> Iterator[Row]:
        """Every version of every memory under ``prefix`` (all when ``None``), grouped by memory.

        Rows: (namespace, key, version, type, value, metadata, status,
        superseded_by_namespace, superseded_by_key, created_at, first_created_at,
        expires_at), oldest version first. ``after`` and ``below`` bound the
        prefix's whole segments as :func:`abathur.memory` computes them.
        """
        ...

    def count_archived_memories(
        self, *, prefix: str | None, after: str | None, below: str | None
    ) -> int:
        """Archived memories and old versions in scope (not exported, counted)."""
        ...

    def app_state_row(self, app: str, key: str) -> Row | None:
        """(value, updated_at) of one app state key, if set."""
        ...

    def insert_app_state(self, app: str, key: str, value: str, updated_at: float) -> None:
        """Set one app state key."""
        ...

    def user_state_row(self, app: str, user: str, key: str) -> Row | None:
        """(value, updated_at) of one user state key, if set."""
        ...

    def insert_user_state(
        self, app: str, user: str, key: str, value: str, updated_at: float
    ) -> None:
        """Set one user state key."""
        ...

    def session_row(self, session_id: str) -> Row | None:
        """(app, user, status, state, revision, created_at, updated_at) of a session, if any."""
        ...

    def count_events(self, session_id: str) -> int:
        """How many events a session has."""
        ...

    def insert_session(self, session_id: str, row: Sequence[Any], audit_seq: int) -> None:
        """Insert a session: ``row`` as :meth:`session_row` returns it."""
        ...

    def event_row(self, session_id: str, seq: int) -> Row | None:
        """(id, author, content, state_delta, metadata, timestamp) of one event, if any."""
        ...

    def insert_event(self, row: Sequence[Any], audit_seq: int) -> None:
        """Insert an event: (session_id, seq, *what :meth:`event_row` returns)."""
        ...

    def session_exists(self, session_id: str) -> bool:
        """Whether a session with this id exists."""
        ...

    def task_row(self, task_id: str) -> Row | None:
        """(session_id, prompt, status, result, error, metadata, created_at, updated_at)."""
        ...

    def insert_task(self, task_id: str, row: Sequence[Any], audit_seq: int) -> None:
        """Insert a task: ``row`` as :meth:`task_row` returns it."""
        ...

    def memory_history(self, namespace: str, key: str) -> list[Row]:
        """Every version of one memory, oldest first, in the export's version columns."""
        ...

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
        ...
