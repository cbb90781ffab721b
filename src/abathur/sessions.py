"""SessionService: sessions, their append-only event log and scoped state (DESIGN.md §3).

A session belongs to (app, user) and carries an integer ``revision`` that
every write bumps; a caller passes the revision it last saw as
``expected_revision`` and gets :class:`~abathur.errors.StaleSessionError` if
someone else wrote first. State keys are scoped by prefix:

========== ============================================ =========================
prefix     shared by                                    stored in
========== ============================================ =========================
``app:``   every session of the app                     ``app_state`` (no prefix)
``user:``  every session of (app, user)                 ``user_state`` (no prefix)
``temp:``  only the call's returned session             nowhere
(none)     this session                                 ``sessions.state``
========== ============================================ =========================

A delta replaces whole values (no deep merge) and stores ``None`` as JSON
null. Lifecycle: created -> active <-> paused -> terminated -> archived
(created may also go straight to terminated); the first event moves a created
session to active.

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from abathur import Abathur, Event
    >>> async def demo():
    ...     async with Abathur.open(pathlib.Path(tempfile.mkdtemp()) / "a.db") as ab:
    ...         s = await ab.sessions.create(app="helpdesk", user="alice",
    ...                                      state={"user:lang": "fr", "topic": None})
    ...         s = await ab.sessions.append_event(
    ...             s.id, Event(author="user", content="hi", state_delta={"topic": "billing"}),
    ...             expected_revision=s.revision)
    ...         return s.status, s.revision, s.state
    >>> asyncio.run(demo())
    ('active', 1, {'user:lang': 'fr', 'topic': 'billing'})
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, get_args

from abathur import audit
from abathur.analytics import CallRecorder, recorded
from abathur.errors import (
    AlreadyExistsError,
    InvalidInputError,
    InvalidTransitionError,
    SessionNotFoundError,
    StaleSessionError,
)
from abathur.models import Event, PurgeReport, Session, SessionStatus
from abathur.stores import Backend, Transaction
from abathur.stores.sessions import EventRow, SessionRow
from abathur.values import INT64_MAX, INT64_MIN, check_id, decode, encode, show_number

__all__ = [
    "STATUSES",
    "TRANSITIONS",
    "SessionService",
]

# --- lifecycle ---------------------------------------------------------------

STATUSES: tuple[str, ...] = get_args(SessionStatus)

#: Legal status changes: from -> the statuses it may move to.
TRANSITIONS: dict[str, frozenset[str]] = {
    "created": frozenset({"active", "terminated"}),
    "active": frozenset({"paused", "terminated"}),
    "paused": frozenset({"active", "terminated"}),
    "terminated": frozenset({"archived"}),
    "archived": frozenset(),
}

_PREFIXES = ("app:", "user:", "temp:")


@dataclass
class _Scoped:
    """A state or state delta split by scope; app/user values already JSON-encoded."""

    session: dict[str, Any] = field(default_factory=dict)
    app: dict[str, str] = field(default_factory=dict)
    user: dict[str, str] = field(default_factory=dict)
    temp: dict[str, Any] = field(default_factory=dict)
    #: What the event log keeps: every key but the temp: ones, in the caller's order.
    stored: dict[str, Any] = field(default_factory=dict)


def _split_state(state: object, what: str, limit: int) -> _Scoped:
    """Validate a state/state delta and split it by key prefix (no SQL)."""
    if not isinstance(state, dict):
        raise InvalidInputError(
            f"{what} must be a dict of str -> JSON value, got {type(state).__name__}"
        )
    scoped = _Scoped()
    for key in state:
        check_id(key, f"{what} key")
    # One encode checks JSON-ness and the size limit of the whole delta; the
    # decode gives us private copies, so a caller mutating its dict later
    # cannot change what we return.
    copy = json.loads(encode(state, what=what, limit=limit))
    for key, value in copy.items():
        prefix = next((p for p in _PREFIXES if key.startswith(p)), None)
        if prefix != "temp:":
            scoped.stored[key] = value
        if prefix is None:
            scoped.session[key] = value
            continue
        name = check_id(key[len(prefix):], f"{what} key {key!r} after the {prefix!r} prefix")
        if prefix == "app:":
            scoped.app[name] = encode(value, what=f"{what}[{key!r}]", limit=limit)
        elif prefix == "user:":
            scoped.user[name] = encode(value, what=f"{what}[{key!r}]", limit=limit)
        else:
            scoped.temp[name] = value
    return scoped


def _check_status(status: object) -> str:
    if not isinstance(status, str) or status not in STATUSES:
        raise InvalidInputError(
            f"session status {status!r} is not one of {', '.join(STATUSES)}"
        )
    return status


def _check_revision(expected_revision: object) -> int | None:
    if expected_revision is None:
        return None
    if isinstance(expected_revision, bool) or not isinstance(expected_revision, int):
        raise InvalidInputError(
            f"expected_revision must be an int or None, got {type(expected_revision).__name__}"
        )
    if expected_revision < 0:
        raise InvalidInputError(f"expected_revision {expected_revision} is negative")
    if expected_revision > INT64_MAX:
        raise InvalidInputError(
            f"expected_revision is beyond SQLite's 64-bit range (max {INT64_MAX})"
        )
    return expected_revision


def _is_finite(number: int | float) -> bool:
    # math.isfinite(10**400) raises OverflowError; such an int is not a time.
    if isinstance(number, int):
        return INT64_MIN <= number <= INT64_MAX
    return math.isfinite(number)


def _scoped_state(tx: Transaction, app: str, user: str) -> dict[str, Any]:
    """App and user state of (app, user) with their prefixes, as the merged view shows them."""
    merged = {f"app:{k}": decode(v) for k, v in tx.sessions.app_state(app).items()}
    merged.update({f"user:{k}": decode(v) for k, v in tx.sessions.user_state(app, user).items()})
    return merged


def _write_scoped(tx: Transaction, app: str, user: str, scoped: _Scoped, now: float) -> None:
    if scoped.app:
        tx.sessions.put_app_state(app, scoped.app, at=now)
    if scoped.user:
        tx.sessions.put_user_state(app, user, scoped.user, at=now)


def _session_row(tx: Transaction, session_id: str) -> SessionRow:
    row = tx.sessions.session_row(session_id)
    if row is None:
        raise SessionNotFoundError(f"no session has id {session_id!r}")
    return row


def _check_expected(session_id: str, expected: int | None, actual: int) -> None:
    if expected is not None and expected != actual:
        raise StaleSessionError(session_id, expected, actual)


def _events(rows: list[EventRow]) -> list[Event]:
    """Build Events from event rows (in the order given) for the read hot path."""
    if not rows:
        return []
    # Every JSON column was written by values.encode, so the texts can be
    # spliced into one array and parsed in a single json.loads: a third of the
    # cost of three loads per event on a 50-event get.
    parsed = json.loads(
        "[" + ",".join(f"[{r[3] or 'null'},{r[4]},{r[5]}]" for r in rows) + "]"
    )
    # Rows we wrote are already valid: model_construct skips re-validation.
    return [
        Event.model_construct(
            id=event_id, author=author, content=content, state_delta=delta,
            metadata=metadata, timestamp=timestamp, seq=seq,
        )
        for (seq, event_id, author, _, _, _, timestamp), (content, delta, metadata)
        in zip(rows, parsed, strict=True)
    ]


def _session(row: SessionRow, scoped: dict[str, Any], events: list[Event],
             extra: dict[str, Any] | None = None) -> Session:
    session_id, app, user, status, state, revision, created_at, updated_at = row
    merged = dict(scoped)
    merged.update(json.loads(state))
    if extra:
        merged.update(extra)
    return Session.model_construct(
        id=session_id, app=app, user=user, status=status, state=merged, revision=revision,
        created_at=created_at, updated_at=updated_at, events=events,
    )


def _purge(tx: Transaction, app: str, user: str, *, dry_run: bool) -> PurgeReport:
    """Erase every session of (app, user) and all that names it, in the caller's transaction."""
    hot = tx.sessions.user_session_ids(app, user)
    # Sessions deleted or archived earlier still have records naming them.
    known = set(hot) | audit.user_sessions(tx, app, user)
    tasks = tx.sessions.task_ids(hot)
    tasks |= audit.session_tasks(tx, known)
    found = tx.sessions.purge_counts(hot, app, user)
    counts = {
        "sessions": len(hot),
        "events": found.events,
        "tasks": found.tasks,
        "user_state": found.user_state,
        "archive": found.archive,
    }
    records = audit.session_records(tx, known, tasks)
    if dry_run:
        return PurgeReport(scope="sessions", is_dry_run=True, counts=counts, redacted=len(records))
    tx.sessions.purge(hot, app, user)
    subject = json.dumps([app, user], ensure_ascii=False, separators=(",", ":"))
    redacted, seq = audit.record_purge(tx, "sessions.purge", subject, counts, records)
    return PurgeReport(
        scope="sessions", is_dry_run=False, counts=counts, redacted=redacted, audit_seq=seq
    )


def _temp_view(temp: dict[str, Any]) -> dict[str, Any]:
    return {f"temp:{k}": v for k, v in temp.items()}


class SessionService:
    """Sessions of (app, user): create, read, list, append events, change status, delete.

    Reach it as ``Abathur.sessions``; every method is a coroutine.

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur import Abathur
        >>> async def demo():
        ...     async with Abathur.open(pathlib.Path(tempfile.mkdtemp()) / "a.db") as ab:
        ...         s = await ab.sessions.create(app="helpdesk", user="alice", session_id="s1")
        ...         return (await ab.sessions.get("s1")).status
        >>> asyncio.run(demo())
        'created'
    """

    def __init__(self, db: Backend, *, recorder: CallRecorder | None = None) -> None:
        self._db = db
        self.recorder = recorder  # times each public call (analytics.recorded)

    @property
    def _limit(self) -> int:
        return self._db.settings.max_value_bytes

    @recorded("sessions.create")
    async def create(self, *, app: str, user: str, state: dict[str, Any] | None = None,
                     session_id: str | None = None) -> Session:
        """Create a session of ``user`` in ``app``, status ``created``, revision 0.

        Args:
            app: the application the session belongs to.
            user: the user it belongs to.
            state: initial state; keys scoped by prefix (``app:``, ``user:``,
                ``temp:`` or none), see the module docstring. ``app:`` and
                ``user:`` values overwrite what the app or user already had.
            session_id: the id to use; a random hex id when not given.

        Returns:
            The new :class:`~abathur.models.Session` with the merged state
            (including the app's and user's existing state, and ``temp:`` keys
            of this call) and no events.

        Raises:
            InvalidIdError: ``app``, ``user``, ``session_id`` or a state key is
                blank, padded, too long or has control characters.
            InvalidInputError: ``state`` is not a dict.
            ValueNotSerializableError: a state value is not JSON.
            ValueTooLargeError: the state is larger than ``max_value_bytes``.
            AlreadyExistsError: ``session_id`` is taken.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     async with Abathur.open(pathlib.Path(tempfile.mkdtemp()) / "a.db") as ab:
            ...         s = await ab.sessions.create(
            ...             app="helpdesk", user="alice",
            ...             state={"app:tier": "gold", "temp:draft": 1, "topic": None})
            ...         return s.status, s.revision, s.state
            >>> asyncio.run(demo())
            ('created', 0, {'app:tier': 'gold', 'topic': None, 'temp:draft': 1})
        """
        check_id(app, "app")
        check_id(user, "user")
        if session_id is None:
            session_id = uuid.uuid4().hex
        check_id(session_id, "session id")
        scoped = _split_state({} if state is None else state, "state", self._limit)
        session_json = encode(scoped.session, what="session state", limit=self._limit)

        def write(tx: Transaction) -> Session:
            if tx.sessions.session_row(session_id) is not None:
                raise AlreadyExistsError(f"a session with id {session_id!r} already exists")
            now = time.time()
            seq = audit.next_seq(tx)
            tx.sessions.insert_session(session_id, app=app, user=user, state=session_json,
                                       at=now, audit_seq=seq)
            _write_scoped(tx, app, user, scoped, now)
            audit.append(tx, "session.create", "session", session_id,
                         {"app": app, "user": user}, at=now,
                         content=("sessions", (session_id, app, user, now)))
            row = SessionRow(session_id, app, user, "created", session_json, 0, now, now)
            return _session(row, _scoped_state(tx, app, user), [], _temp_view(scoped.temp))

        return await self._db.write(write)

    @recorded("sessions.get")
    async def get(self, session_id: str, *, last_n: int | None = None,
                  after: float | None = None) -> Session:
        """Read a session with its merged state and (a page of) its events.

        Args:
            session_id: the session.
            last_n: only the newest ``last_n`` events (0: none).
            after: only events whose timestamp (epoch seconds) is greater.
                With ``last_n`` too: the newest ``last_n`` of those.

        Returns:
            The :class:`~abathur.models.Session`; ``events`` in ascending
            ``seq`` order, ``state`` merged (``app:k``, ``user:k``, bare keys).

        Raises:
            InvalidIdError: ``session_id`` is not a valid id.
            InvalidInputError: ``last_n`` is negative or not an int, ``after``
                is not a finite number.
            SessionNotFoundError: no session has this id.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur, Event
            >>> async def demo():
            ...     async with Abathur.open(pathlib.Path(tempfile.mkdtemp()) / "a.db") as ab:
            ...         s = await ab.sessions.create(app="a", user="u")
            ...         for text in ("one", "two", "three"):
            ...             await ab.sessions.append_event(s.id, Event(author="user", content=text))
            ...         s = await ab.sessions.get(s.id, last_n=2)
            ...         return [(e.seq, e.content) for e in s.events]
            >>> asyncio.run(demo())
            [(2, 'two'), (3, 'three')]
        """
        check_id(session_id, "session id")
        if last_n is not None and (
            isinstance(last_n, bool) or not isinstance(last_n, int)
            or not 0 <= last_n <= INT64_MAX
        ):
            raise InvalidInputError(
                f"last_n must be an int from 0 to {INT64_MAX} or None, got {show_number(last_n)}"
            )
        if after is not None and (
            isinstance(after, bool) or not isinstance(after, int | float)
            or not _is_finite(after)
        ):
            raise InvalidInputError(
                f"after must be a finite number of epoch seconds or None, got {show_number(after)}"
            )
        n = -1 if last_n is None else last_n

        def read(tx: Transaction) -> Session:
            row = _session_row(tx, session_id)
            rows: list[EventRow]
            if n == 0:
                rows = []
            elif after is None:
                rows = tx.sessions.last_events(session_id, n)
                rows.reverse()
            elif n < 0:
                rows = tx.sessions.events_after(session_id, after)
            else:
                rows = tx.sessions.last_events_after(session_id, after, n)
                rows.reverse()
            return _session(row, _scoped_state(tx, row.app, row.user), _events(rows))

        return await self._db.read(read)

    @recorded("sessions.list")
    async def list(self, *, app: str | None = None, user: str | None = None,
                   status: str | None = None, limit: int = 100) -> list[Session]:
        """Sessions of an app (or of every app), of one user or all, newest ``updated_at`` first.

        Args:
            app: the application; ``None``: every application (an operator's
                view, e.g. ``abathur session list``; it reads every session).
            user: only this user's sessions; all users' when ``None``.
            status: only sessions in this status.
            limit: at most this many sessions.

        Returns:
            :class:`~abathur.models.Session` objects with merged state and no
            events (use :meth:`get` for those).

        Raises:
            InvalidIdError: ``app`` or ``user`` is not a valid id.
            InvalidInputError: ``status`` is unknown, ``limit`` negative or not an int.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     async with Abathur.open(pathlib.Path(tempfile.mkdtemp()) / "a.db") as ab:
            ...         await ab.sessions.create(app="a", user="alice", session_id="first")
            ...         await ab.sessions.create(app="a", user="bob", session_id="second")
            ...         return [s.id for s in await ab.sessions.list(app="a")]
            >>> asyncio.run(demo())
            ['second', 'first']
        """
        if app is not None:
            check_id(app, "app")
        if user is not None:
            check_id(user, "user")
        if status is not None:
            _check_status(status)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= INT64_MAX:
            raise InvalidInputError(
                f"limit must be an int from 0 to {INT64_MAX}, got {show_number(limit)}"
            )

        def read(tx: Transaction) -> list[Session]:
            rows = tx.sessions.list_sessions(app=app, user=user, status=status, limit=limit)
            # Each app's and each (app, user)'s state is read once, however many sessions.
            by_app: dict[str, dict[str, Any]] = {}
            by_user: dict[tuple[str, str], dict[str, Any]] = {}
            sessions = []
            for row in rows:
                owner_app, owner = row.app, row.user
                if owner_app not in by_app:
                    by_app[owner_app] = {
                        f"app:{k}": decode(v)
                        for k, v in tx.sessions.app_state(owner_app).items()
                    }
                if (owner_app, owner) not in by_user:
                    by_user[owner_app, owner] = by_app[owner_app] | {
                        f"user:{k}": decode(v)
                        for k, v in tx.sessions.user_state(owner_app, owner).items()
                    }
                sessions.append(_session(row, by_user[owner_app, owner], []))
            return sessions

        return await self._db.read(read)

    @recorded("sessions.append_event")
    async def append_event(self, session_id: str, event: Event, *,
                           expected_revision: int | None = None) -> Session:
        """Append ``event`` to the session's log and apply its ``state_delta``, atomically.

        The event gets the next ``seq`` and, unless it has one, the current
        time as ``timestamp``. A ``created`` session becomes ``active``. The
        delta is scoped like :meth:`create`'s state; ``temp:`` keys are
        applied to the returned session only and dropped from the stored
        event. The revision goes up by one.

        Args:
            session_id: the session.
            event: the :class:`~abathur.models.Event` to append.
            expected_revision: the revision the caller last saw; ``None`` skips the check.

        Returns:
            The :class:`~abathur.models.Session` after the append, with merged
            state (plus this event's ``temp:`` keys) and ``events`` holding
            just the stored event.

        Raises:
            InvalidIdError: ``session_id``, the event id or a delta key is invalid.
            InvalidInputError: ``event`` is not an Event, has a non-finite
                timestamp, or ``expected_revision`` is not a non-negative int.
            ValueNotSerializableError: content, delta or metadata is not JSON.
            ValueTooLargeError: one of them (or the resulting session state)
                is larger than ``max_value_bytes``.
            SessionNotFoundError: no session has this id.
            StaleSessionError: the session is not at ``expected_revision``.
            InvalidTransitionError: the session is paused, terminated or archived.
            AlreadyExistsError: the session already has an event with this id.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur, Event
            >>> async def demo():
            ...     async with Abathur.open(pathlib.Path(tempfile.mkdtemp()) / "a.db") as ab:
            ...         s = await ab.sessions.create(app="a", user="u")
            ...         s = await ab.sessions.append_event(
            ...             s.id, Event(author="user", state_delta={"n": 1, "temp:x": 2}),
            ...             expected_revision=0)
            ...         return s.revision, s.state, s.events[0].seq, s.events[0].state_delta
            >>> asyncio.run(demo())
            (1, {'n': 1, 'temp:x': 2}, 1, {'n': 1})
        """
        check_id(session_id, "session id")
        if not isinstance(event, Event):
            raise InvalidInputError(
                f"event must be an abathur Event, got {type(event).__name__}"
            )
        expected = _check_revision(expected_revision)
        limit = self._limit
        event_id = check_id(event.id, "event id")
        author = check_id(event.author, "event author")
        stamp = event.timestamp
        if stamp is not None and (
            isinstance(stamp, bool) or not isinstance(stamp, int | float)
            or not math.isfinite(stamp)
        ):
            raise InvalidInputError(f"event timestamp must be finite epoch seconds, got {stamp!r}")
        scoped = _split_state(event.state_delta, "event state_delta", limit)
        content_json = encode(event.content, what="event content", limit=limit)
        metadata = event.metadata
        if not isinstance(metadata, dict):
            raise InvalidInputError(f"event metadata must be a dict, got {type(metadata).__name__}")
        metadata_json = encode(metadata, what="event metadata", limit=limit)
        delta_json = encode(scoped.stored, what="event state_delta", limit=limit)

        # One audit record per event (issue 11, item 12), covering the event
        # row; benchmarks/append_audit.py measures what it costs.
        def write(tx: Transaction) -> Session:
            row = _session_row(tx, session_id)
            _, app, user, status, state, revision, created_at, _ = row
            _check_expected(session_id, expected, revision)
            if status == "paused":
                raise InvalidTransitionError(
                    f"session {session_id!r} is paused: resume it with "
                    "set_status(..., 'active') before appending events"
                )
            if status not in ("created", "active"):
                raise InvalidTransitionError(
                    f"session {session_id!r} is {status}: it takes no more events"
                )
            if tx.sessions.has_event(session_id, event_id):
                raise AlreadyExistsError(
                    f"session {session_id!r} already has an event with id {event_id!r}"
                )
            seq = tx.sessions.last_seq(session_id) + 1
            at = time.time() if stamp is None else float(stamp)
            event_row: EventRow = (seq, event_id, author, content_json, delta_json,
                                   metadata_json, at)
            audit_seq = audit.next_seq(tx)
            tx.sessions.insert_event(session_id, event_row, audit_seq=audit_seq)
            audit.append(tx, "event.append", "event", session_id, {"seq": seq},
                         content=("events", (session_id, *event_row)))
            if scoped.session:
                session_state = json.loads(state)
                session_state.update(scoped.session)
                state = encode(session_state, what=f"state of session {session_id!r}",
                               limit=limit)
            _write_scoped(tx, app, user, scoped, at)
            tx.sessions.update_session(session_id, status="active", state=state,
                                       revision=revision + 1, at=at)
            stored = Event.model_construct(
                id=event_id, author=author, content=json.loads(content_json),
                state_delta=json.loads(delta_json), metadata=json.loads(metadata_json),
                timestamp=at, seq=seq,
            )
            new_row = SessionRow(session_id, app, user, "active", state, revision + 1,
                                 created_at, at)
            return _session(new_row, _scoped_state(tx, app, user), [stored],
                            _temp_view(scoped.temp))

        return await self._db.write(write)

    @recorded("sessions.get_user_state")
    async def get_user_state(self, *, app: str, user: str) -> dict[str, Any]:
        """The state shared by every session of ``user`` in ``app``.

        Args:
            app: the application.
            user: the user.

        Returns:
            Keys without the ``user:`` prefix; ``{}`` when there is none.

        Raises:
            InvalidIdError: ``app`` or ``user`` is not a valid id.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     async with Abathur.open(pathlib.Path(tempfile.mkdtemp()) / "a.db") as ab:
            ...         await ab.sessions.create(app="a", user="alice", state={"user:lang": "fr"})
            ...         return await ab.sessions.get_user_state(app="a", user="alice")
            >>> asyncio.run(demo())
            {'lang': 'fr'}
        """
        check_id(app, "app")
        check_id(user, "user")

        def read(tx: Transaction) -> dict[str, Any]:
            return {k: decode(v) for k, v in tx.sessions.user_state(app, user).items()}

        return await self._db.read(read)

    @recorded("sessions.get_app_state")
    async def get_app_state(self, *, app: str) -> dict[str, Any]:
        """The state shared by every session of ``app``.

        Args:
            app: the application.

        Returns:
            Keys without the ``app:`` prefix; ``{}`` when there is none.

        Raises:
            InvalidIdError: ``app`` is not a valid id.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     async with Abathur.open(pathlib.Path(tempfile.mkdtemp()) / "a.db") as ab:
            ...         await ab.sessions.create(app="a", user="alice", state={"app:tier": 2})
            ...         return await ab.sessions.get_app_state(app="a")
            >>> asyncio.run(demo())
            {'tier': 2}
        """
        check_id(app, "app")

        def read(tx: Transaction) -> dict[str, Any]:
            return {k: decode(v) for k, v in tx.sessions.app_state(app).items()}

        return await self._db.read(read)

    @recorded("sessions.set_status")
    async def set_status(self, session_id: str, status: str, *,
                         expected_revision: int | None = None) -> Session:
        """Move the session along its lifecycle; bumps the revision.

        Legal moves: created -> active | terminated, active -> paused |
        terminated, paused -> active | terminated, terminated -> archived.

        Args:
            session_id: the session.
            status: the new status.
            expected_revision: the revision the caller last saw; ``None`` skips the check.

        Returns:
            The :class:`~abathur.models.Session` after the change, without events.

        Raises:
            InvalidIdError: ``session_id`` is not a valid id.
            InvalidInputError: ``status`` is not a session status, or
                ``expected_revision`` is not a non-negative int.
            SessionNotFoundError: no session has this id.
            StaleSessionError: the session is not at ``expected_revision``.
            InvalidTransitionError: the move is not legal (including to the same status).

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     async with Abathur.open(pathlib.Path(tempfile.mkdtemp()) / "a.db") as ab:
            ...         s = await ab.sessions.create(app="a", user="u")
            ...         s = await ab.sessions.set_status(s.id, "active")
            ...         s = await ab.sessions.set_status(s.id, "paused", expected_revision=1)
            ...         return s.status, s.revision
            >>> asyncio.run(demo())
            ('paused', 2)
        """
        check_id(session_id, "session id")
        new = _check_status(status)
        expected = _check_revision(expected_revision)

        def write(tx: Transaction) -> Session:
            row = _session_row(tx, session_id)
            _, app, user, old, state, revision, created_at, _ = row
            _check_expected(session_id, expected, revision)
            if new not in TRANSITIONS[old]:
                allowed = ", ".join(sorted(TRANSITIONS[old])) or "nothing"
                raise InvalidTransitionError(
                    f"session {session_id!r} cannot go from {old!r} to {new!r}; "
                    f"from {old!r} it can go to: {allowed}"
                )
            now = time.time()
            tx.sessions.set_status(session_id, status=new, revision=revision + 1, at=now)
            audit.append(tx, "session.status", "session", session_id,
                         {"from": old, "to": new, "revision": revision + 1}, at=now)
            new_row = SessionRow(session_id, app, user, new, state, revision + 1, created_at, now)
            return _session(new_row, _scoped_state(tx, app, user), [])

        return await self._db.write(write)

    @recorded("sessions.terminate")
    async def terminate(self, session_id: str, *,
                        expected_revision: int | None = None) -> Session:
        """End the session: :meth:`set_status` to ``terminated``.

        Args:
            session_id: the session.
            expected_revision: the revision the caller last saw; ``None`` skips the check.

        Returns:
            The terminated :class:`~abathur.models.Session`, without events.

        Raises:
            InvalidIdError: ``session_id`` is not a valid id.
            InvalidInputError: ``expected_revision`` is not a non-negative int.
            SessionNotFoundError: no session has this id.
            StaleSessionError: the session is not at ``expected_revision``.
            InvalidTransitionError: the session is already terminated or archived.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     async with Abathur.open(pathlib.Path(tempfile.mkdtemp()) / "a.db") as ab:
            ...         s = await ab.sessions.create(app="a", user="u")
            ...         return (await ab.sessions.terminate(s.id)).status
            >>> asyncio.run(demo())
            'terminated'
        """
        return await self.set_status(session_id, "terminated",
                                     expected_revision=expected_revision)

    @recorded("sessions.delete")
    async def delete(self, session_id: str) -> None:
        """Delete the session with its events and tasks; app and user state stay.

        Args:
            session_id: the session.

        Returns:
            None.

        Raises:
            InvalidIdError: ``session_id`` is not a valid id.
            SessionNotFoundError: no session has this id.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur, SessionNotFoundError
            >>> async def demo():
            ...     async with Abathur.open(pathlib.Path(tempfile.mkdtemp()) / "a.db") as ab:
            ...         s = await ab.sessions.create(app="a", user="u")
            ...         await ab.sessions.delete(s.id)
            ...         try:
            ...             await ab.sessions.get(s.id)
            ...         except SessionNotFoundError as exc:
            ...             return exc.code
            >>> asyncio.run(demo())
            'session.not_found'
        """
        check_id(session_id, "session id")

        def write(tx: Transaction) -> None:
            _, app, user, status, _, revision, _, _ = _session_row(tx, session_id)
            events = tx.sessions.count_events(session_id)
            # Its events and tasks go with it.
            tx.sessions.delete_session(session_id)
            audit.append(tx, "session.delete", "session", session_id,
                         {"app": app, "user": user, "status": status, "revision": revision,
                          "events": events})

        await self._db.write(write)

    @recorded("sessions.purge")
    async def purge(self, *, app: str, user: str, dry_run: bool = False) -> PurgeReport:
        """Erase every session of ``user`` in ``app`` completely; the audit keeps that it happened.

        Removes the sessions (archived stubs too) with their events, state and
        tasks, the user's state in the app (``user:`` keys), and archive rows
        of those sessions. Audit records naming them (the sessions, their
        events and tasks, deleted sessions too) are redacted; one
        ``sessions.purge`` record keeps the counts and the sha256 of
        ``["app","user"]`` (compact JSON). App state is shared and stays; the
        user's memories are :meth:`MemoryService.purge`'s (by prefix). Freed
        space is overwritten. Backups taken before still hold the data.

        Args:
            app: the application.
            user: the user.
            dry_run: count what would go, change nothing.

        Returns:
            A :class:`~abathur.models.PurgeReport` with the rows per table.

        Raises:
            InvalidIdError: ``app`` or ``user`` is not a valid id.
            InvalidInputError: ``dry_run`` is not a bool.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur, Event
            >>> async def demo():
            ...     async with Abathur.open(pathlib.Path(tempfile.mkdtemp()) / "a.db") as ab:
            ...         s = await ab.sessions.create(app="a", user="alice",
            ...                                      state={"user:lang": "fr"})
            ...         await ab.sessions.append_event(s.id, Event(author="user", content="hi"))
            ...         await ab.sessions.create(app="a", user="bob")
            ...         report = await ab.sessions.purge(app="a", user="alice")
            ...         left = [x.user for x in await ab.sessions.list(app="a")]
            ...         return report.counts, left, (await ab.audit.verify()).is_ok
            >>> asyncio.run(demo())  # doctest: +NORMALIZE_WHITESPACE
            ({'sessions': 1, 'events': 1, 'tasks': 0, 'user_state': 1, 'archive': 0},
             ['bob'], True)
        """
        check_id(app, "app")
        check_id(user, "user")
        if not isinstance(dry_run, bool):
            raise InvalidInputError(f"dry_run must be a bool, got {type(dry_run).__name__}")
        if dry_run:
            return await self._db.read(lambda tx: _purge(tx, app, user, dry_run=True))

        def write(tx: Transaction) -> PurgeReport:
            # What goes (rows, and the names in redacted records) is erased on disk.
            with tx.erase_securely():
                return _purge(tx, app, user, dry_run=False)

        return await self._db.write(write)
