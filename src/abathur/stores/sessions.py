"""``SessionStore``: sessions, their events, and app and user state.

The protocol every backend implements; reach it inside a transaction as
``tx.sessions`` (see :mod:`abathur.stores`). The store reads and writes rows;
:mod:`abathur.sessions` holds the rules (state scoping, the lifecycle,
revision checks) and builds the models.

JSON columns (``state``, an event's ``content``, ``state_delta`` and
``metadata``, app and user state values) travel as the JSON text the service
encoded: the store keeps the text as given and hands it back unchanged.

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from abathur.backends import open_backend
    >>> from abathur.config import Settings
    >>> async def demo():
    ...     path = pathlib.Path(tempfile.mkdtemp()) / "x.db"
    ...     backend = await open_backend(Settings(db=path))
    ...     try:
    ...         return await backend.read(lambda tx: tx.sessions.session_row("nope"))
    ...     finally:
    ...         await backend.close()
    >>> print(asyncio.run(demo()))
    None
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import NamedTuple, Protocol

__all__ = ["EventRow", "PurgeCounts", "SessionRow", "SessionStore"]


class SessionRow(NamedTuple):
    """One session as stored; ``state`` is the JSON text of its unprefixed keys."""

    id: str
    app: str
    user: str
    status: str
    state: str
    revision: int
    created_at: float
    updated_at: float


#: One event as stored, by position: ``(seq, id, author, content, state_delta,
#: metadata, timestamp)``; ``content``, ``state_delta`` and ``metadata`` are JSON
#: text. A plain typed tuple rather than a NamedTuple: ``sessions.get`` reads up to
#: thousands of them per call, and building a NamedTuple for each cost 5% of a
#: 50-event read (benchmarks/compare.py).
EventRow = tuple[int, str, str, str | None, str, str, float]


class PurgeCounts(NamedTuple):
    """Rows a purge of one user's sessions removes, per table (sessions counted by the caller)."""

    events: int
    tasks: int
    user_state: int
    archive: int


class SessionStore(Protocol):
    """Sessions, their events, and app and user state."""

    # -- sessions ------------------------------------------------------------

    def session_row(self, session_id: str, /) -> SessionRow | None:
        """The session with this id, or None."""
        ...

    def list_sessions(
        self, *, app: str | None, user: str | None, status: str | None, limit: int
    ) -> list[SessionRow]:
        """Sessions newest ``updated_at`` first; ``None`` for app, user or status means any."""
        ...

    def insert_session(
        self, session_id: str, /, *, app: str, user: str, state: str, at: float, audit_seq: int
    ) -> None:
        """Add a ``created`` session at revision 0, written by audit record ``audit_seq``."""
        ...

    def update_session(
        self, session_id: str, /, *, status: str, state: str, revision: int, at: float
    ) -> None:
        """Set the session's status, state, revision and ``updated_at``."""
        ...

    def set_status(self, session_id: str, /, *, status: str, revision: int, at: float) -> None:
        """Set the session's status, revision and ``updated_at``; its state stays."""
        ...

    def delete_session(self, session_id: str, /) -> None:
        """Delete the session; its events and tasks go with it."""
        ...

    # -- events --------------------------------------------------------------

    def last_events(self, session_id: str, n: int, /) -> list[EventRow]:
        """The newest ``n`` events (``-1``: all), newest first."""
        ...

    def events_after(self, session_id: str, after: float, /) -> list[EventRow]:
        """Every event with ``timestamp > after``, oldest first."""
        ...

    def last_events_after(self, session_id: str, after: float, n: int, /) -> list[EventRow]:
        """The newest ``n`` events with ``timestamp > after``, newest first."""
        ...

    def last_seq(self, session_id: str, /) -> int:
        """The highest event seq of the session; 0 when it has none."""
        ...

    def has_event(self, session_id: str, event_id: str, /) -> bool:
        """True when the session has an event with this id."""
        ...

    def insert_event(self, session_id: str, event: EventRow, /, *, audit_seq: int) -> None:
        """Add one event, written by audit record ``audit_seq``."""
        ...

    def count_events(self, session_id: str, /) -> int:
        """How many events the session has."""
        ...

    # -- app and user state ----------------------------------------------------

    def app_state(self, app: str, /) -> dict[str, str]:
        """The app's state: key (no prefix) -> JSON text."""
        ...

    def user_state(self, app: str, user: str, /) -> dict[str, str]:
        """The state of (app, user): key (no prefix) -> JSON text."""
        ...

    def put_app_state(self, app: str, values: Mapping[str, str], /, *, at: float) -> None:
        """Set these keys of the app's state (JSON text), other keys stay."""
        ...

    def put_user_state(
        self, app: str, user: str, values: Mapping[str, str], /, *, at: float
    ) -> None:
        """Set these keys of (app, user)'s state (JSON text), other keys stay."""
        ...

    # -- purge of one user's sessions -----------------------------------------

    def user_session_ids(self, app: str, user: str, /) -> list[str]:
        """Ids of every session of (app, user) that exists now."""
        ...

    def task_ids(self, session_ids: Collection[str], /) -> set[str]:
        """Ids of the tasks of these sessions."""
        ...

    def purge_counts(self, session_ids: Collection[str], app: str, user: str, /) -> PurgeCounts:
        """What :meth:`purge` would remove: events and tasks of these sessions, the
        user's state in the app and archived sessions of (app, user)."""
        ...

    def purge(self, session_ids: Collection[str], app: str, user: str, /) -> None:
        """Delete these sessions with their events and tasks, the user's state in
        the app and archived sessions of (app, user)."""
        ...
