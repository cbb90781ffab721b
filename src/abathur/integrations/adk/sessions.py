"""``AbathurSessionService``: Google ADK's ``BaseSessionService`` on an abathur database.

ADK concepts map onto abathur's sessions one to one: an ADK session is an
abathur session of (``app_name``, ``user_id``); its state is abathur's scoped
state (``app:``, ``user:``, ``temp:``, session keys, same rules); each ADK
event is one abathur event whose ``content`` is the event's full JSON
(``Event.model_dump(mode="json", exclude_none=True)``, the form ADK's own
database services store), with the event's id, author, timestamp and
persisted state delta in abathur's own fields. So a stored event reloads equal
to the original, binary parts and all, and the same rows are readable,
searchable and operable through abathur's API and CLI.

Staleness: every session this service returns carries abathur's revision, and
:meth:`AbathurSessionService.append_event` appends with that revision as
``expected_revision``, so of two writers holding the same session object
exactly one wins and the other gets ADK's ``StaleSessionError``. A session
object built elsewhere (no revision) falls back to ADK's own rule: stale when
storage was updated after the object's ``last_update_time``.

Where this differs from ADK's ``InMemorySessionService``, on purpose:

* Session ids are unique in the database, not per (app, user): creating an id
  another user already has raises ``AlreadyExistsError``, and reading it as
  the wrong app or user returns ``None``.
* Ids, app names, user ids and state keys must be valid abathur ids (1..256
  characters, no control characters, no padding; ADK strips a padded
  session id, as its in-memory service does, before that check). Bad ones
  raise :class:`~abathur.errors.InvalidIdError` (a ``ValueError``) on writes
  and read as "no such session" on reads.
* State and event content are stored as JSON: a value with no JSON form
  (a set, a ``datetime``) comes back as its JSON form (a list, a string),
  as with ADK's ``DatabaseSessionService`` and ``SqliteSessionService``.
* An event id is unique within its session: re-appending an equal event is a
  no-op (as in memory), but a different event reusing an id raises ADK's
  ``AlreadyExistsError`` where the in-memory service would keep both.
* ``after_timestamp`` filters events (``timestamp >= after_timestamp``) as
  ADK's database services do; the in-memory service instead cuts the list
  after the last older event, which differs only when timestamps go backwards.
* A session paused or terminated through abathur takes no more events:
  :class:`~abathur.errors.InvalidTransitionError` (a ``ValueError``).
* An event's JSON is capped by ``Settings.max_value_bytes`` (1 MiB by
  default): :class:`~abathur.errors.ValueTooLargeError` above it.

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from google.adk.events import Event
    >>> from google.adk.events.event_actions import EventActions
    >>> from abathur.integrations.adk import AbathurSessionService
    >>> async def demo():
    ...     path = pathlib.Path(tempfile.mkdtemp()) / "agent.db"
    ...     async with AbathurSessionService(path) as service:
    ...         s = await service.create_session(app_name="helpdesk", user_id="alice")
    ...         event = Event(author="user", invocation_id="i1",
    ...                       actions=EventActions(state_delta={"topic": "billing"}))
    ...         await service.append_event(s, event)
    ...         again = await service.get_session(
    ...             app_name="helpdesk", user_id="alice", session_id=s.id)
    ...         return (again.events == [event], again.state,
    ...                 again.last_update_time == event.timestamp)
    >>> asyncio.run(demo())
    (True, {'topic': 'billing'}, True)
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, cast, overload

from google.adk.errors import StaleSessionError
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.sessions.base_session_service import (
    BaseSessionService,
    GetSessionConfig,
    ListSessionsResponse,
)
from google.adk.sessions.session import Session
from google.adk.sessions.state import State
from google.adk.version import __version__ as ADK_VERSION
from google.genai import types
from pydantic_core import PydanticSerializationError, to_jsonable_python

import abathur
from abathur import errors
from abathur.api import Abathur
from abathur.config import Settings
from abathur.values import check_id

from ._store import Store

__all__ = ["EVENT_FORMAT", "AbathurSessionService"]

#: ``metadata["format"]`` of an abathur event that holds an ADK event's JSON.
EVENT_FORMAT = "adk.event"

# abathur's sessions.list has a limit; ADK's list_sessions has none. SQLite
# takes a 64-bit LIMIT, so this one means "all".
_ALL = 2**63 - 1


def _is_id(value: object) -> bool:
    try:
        check_id(value, "id")
    except errors.InvalidIdError:
        return False
    return True


@overload
def _strip(session_id: str) -> str: ...
@overload
def _strip(session_id: None) -> None: ...
def _strip(session_id: str | None) -> str | None:
    # What ADK's in-memory service does to every session id it is handed.
    return session_id.strip() if isinstance(session_id, str) else session_id


def _adk_event(event: abathur.Event) -> Event:
    """The ADK event an abathur event holds (or stands for)."""
    if event.metadata.get("format") == EVENT_FORMAT and isinstance(event.content, dict):
        return Event.model_validate(event.content)
    # Written through abathur's own API: shown to ADK as a text event, so an
    # agent resuming the session still sees what was said.
    content = None
    if event.content is not None:
        text = event.content if isinstance(event.content, str) else json.dumps(event.content)
        role = "user" if event.author == "user" else "model"
        content = types.Content(role=role, parts=[types.Part(text=text)])
    return Event(
        id=event.id,
        author=event.author,
        # A stored event always has its time (set at append when not given).
        timestamp=cast(float, event.timestamp),
        content=content,
        actions=EventActions(state_delta=dict(event.state_delta)),
        custom_metadata=dict(event.metadata) or None,
    )


def _adk_session(session: abathur.Session, events: list[Event]) -> Session:
    adk = Session(
        id=session.id,
        app_name=session.app,
        user_id=session.user,
        state=dict(session.state),
        events=events,
        last_update_time=session.updated_at,
    )
    # ADK's slot for "the storage revision this object reflects"; append_event
    # compares it with abathur's revision (see the module docstring).
    adk._storage_update_marker = str(session.revision)
    return adk


def _revision(session: Session) -> int | None:
    marker = session._storage_update_marker
    if marker is None or not marker.isdecimal():
        return None
    return int(marker)


def _json_state(state: dict[str, Any]) -> dict[str, Any]:
    try:
        jsonable: dict[str, Any] = to_jsonable_python(state)
        return jsonable
    except PydanticSerializationError as exc:
        raise errors.ValueNotSerializableError(f"state is not JSON-serialisable: {exc}") from None


def _stale(session: Session, detail: str) -> StaleSessionError:
    return StaleSessionError(
        f"session {session.id!r} is stale ({detail}): someone appended to it since this "
        "object was read; get_session again and retry"
    )


class AbathurSessionService(BaseSessionService):
    """ADK session service storing sessions, events and state in an abathur database.

    Args:
        db: an open :class:`~abathur.Abathur` (you keep and close it) or the
            path of the database file (the service opens it on first use and
            :meth:`close` closes it).
        uri: instead of ``db``, an ``abathur:`` URI such as
            ``abathur:///srv/agent.db?synchronous=FULL`` (how ADK's service
            registry builds it).
        agents_dir: passed by ADK's service registry; unused.
        **settings: :class:`~abathur.config.Settings` fields for a database
            the service opens (``synchronous="FULL"``, ``max_value_bytes=...``).

    Raises:
        InvalidInputError: neither or both of ``db`` and ``uri``, a bad URI,
            unknown or invalid settings, or settings with an open Abathur.

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur.integrations.adk import AbathurSessionService
        >>> async def demo():
        ...     uri = "abathur://" + str(pathlib.Path(tempfile.mkdtemp()) / "agent.db")
        ...     async with AbathurSessionService(uri=uri) as service:
        ...         s = await service.create_session(app_name="a", user_id="u", session_id="s1")
        ...         return s.id, service.settings.db.name
        >>> asyncio.run(demo())
        ('s1', 'agent.db')
    """

    def __init__(
        self,
        db: Abathur | str | os.PathLike[str] | None = None,
        *,
        uri: str | None = None,
        agents_dir: str | None = None,
        **settings: Any,
    ) -> None:
        self._store = Store(db, uri, settings)

    @property
    def settings(self) -> Settings:
        """The :class:`~abathur.config.Settings` of the database (its path is ``.db``)."""
        return self._store.settings

    async def close(self) -> None:
        """Close the database if this service opened it; idempotent.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur.integrations.adk import AbathurSessionService
            >>> async def demo():
            ...     service = AbathurSessionService(pathlib.Path(tempfile.mkdtemp()) / "a.db")
            ...     await service.create_session(app_name="a", user_id="u")
            ...     await service.close()
            ...     await service.close()
            ...     return service.is_closed
            >>> asyncio.run(demo())
            True
        """
        await self._store.close()

    @property
    def is_closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._store.is_closed

    async def __aenter__(self) -> AbathurSessionService:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def create_session(
        self,
        *,
        app_name: str,
        user_id: str,
        state: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> Session:
        """Create a session of ``user_id`` in ``app_name``.

        Args:
            app_name: the application.
            user_id: the user.
            state: initial state; ``app:`` and ``user:`` keys update the
                app's and the user's shared state, ``temp:`` keys are dropped
                (as in ADK), other keys belong to the session.
            session_id: the id to use (stripped, as ADK does); a new one when
                not given or empty.

        Returns:
            The new ADK ``Session``: merged state (including the app's and
            user's existing state), no events, ``last_update_time`` = creation.

        Raises:
            AlreadyExistsError: (ADK's) the id is taken, by any app or user.
            InvalidIdError: an id or state key is not a valid abathur id.
            ValueNotSerializableError: a state value has no JSON form.
            ValueTooLargeError: the state is larger than ``max_value_bytes``.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur.integrations.adk import AbathurSessionService
            >>> async def demo():
            ...     async with AbathurSessionService(
            ...             pathlib.Path(tempfile.mkdtemp()) / "a.db") as service:
            ...         s = await service.create_session(
            ...             app_name="a", user_id="u", session_id=" s1 ",
            ...             state={"app:tier": 1, "temp:draft": 2, "topic": None})
            ...         return s.id, s.state, s.events
            >>> asyncio.run(demo())
            ('s1', {'app:tier': 1, 'topic': None}, [])
        """
        session_id = _strip(session_id)
        if session_id == "":
            session_id = None
        persisted: Any = state or {}
        if isinstance(persisted, dict):
            persisted = {
                k: v
                for k, v in persisted.items()
                if not (isinstance(k, str) and k.startswith(State.TEMP_PREFIX))
            }
        ab = await self._store.get()
        try:
            created = await ab.sessions.create(
                app=app_name, user=user_id, state=_json_state(persisted), session_id=session_id
            )
        except errors.AlreadyExistsError as exc:
            raise AlreadyExistsError(exc.message) from exc
        return _adk_session(created, [])

    async def get_session(
        self,
        *,
        app_name: str,
        user_id: str,
        session_id: str,
        config: GetSessionConfig | None = None,
    ) -> Session | None:
        """Read a session with its merged state and (some of) its events.

        Args:
            app_name: the application.
            user_id: the user.
            session_id: the session (stripped, as ADK does).
            config: ``num_recent_events`` keeps the newest N events (0: none);
                ``after_timestamp`` keeps events with ``timestamp >=`` it.

        Returns:
            The ADK ``Session`` (events oldest first, each equal to the event
            appended), or ``None`` when there is no such session for this app
            and user (including ids that cannot exist).

        Raises:
            ClosedError: the service was closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from google.adk.events import Event
            >>> from google.adk.sessions.base_session_service import GetSessionConfig
            >>> from abathur.integrations.adk import AbathurSessionService
            >>> async def demo():
            ...     async with AbathurSessionService(
            ...             pathlib.Path(tempfile.mkdtemp()) / "a.db") as service:
            ...         s = await service.create_session(app_name="a", user_id="u")
            ...         for n in range(3):
            ...             await service.append_event(s, Event(author="user", id=f"e{n}"))
            ...         page = await service.get_session(
            ...             app_name="a", user_id="u", session_id=s.id,
            ...             config=GetSessionConfig(num_recent_events=2))
            ...         missing = await service.get_session(
            ...             app_name="a", user_id="someone-else", session_id=s.id)
            ...         return [e.id for e in page.events], missing
            >>> asyncio.run(demo())
            (['e1', 'e2'], None)
        """
        session_id = _strip(session_id)
        if not (_is_id(app_name) and _is_id(user_id) and _is_id(session_id)):
            return None
        last_n = after = None
        if config is not None:
            last_n = config.num_recent_events
            after = config.after_timestamp
            if after is not None and not math.isfinite(after):
                # ts >= -inf (or a NaN bound, which ADK's in-memory scan never
                # stops at) keeps everything; ts >= +inf keeps nothing.
                last_n = 0 if after == math.inf else last_n
                after = None
            elif after is not None:
                # abathur's `after` is strict (>); the float just below the
                # bound makes it ADK's >= exactly.
                after = math.nextafter(after, -math.inf)
        ab = await self._store.get()
        try:
            found = await ab.sessions.get(session_id, last_n=last_n, after=after)
        except errors.SessionNotFoundError:
            return None
        if found.app != app_name or found.user != user_id:
            return None
        return _adk_session(found, [_adk_event(e) for e in found.events])

    async def list_sessions(
        self, *, app_name: str, user_id: str | None = None
    ) -> ListSessionsResponse:
        """List the sessions of an app (of one user, or of all users).

        Args:
            app_name: the application.
            user_id: only this user's sessions; every user's when ``None``.

        Returns:
            ADK's ``ListSessionsResponse``: sessions with merged state and no
            events, oldest ``last_update_time`` first (ties by user, then id).

        Raises:
            ClosedError: the service was closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur.integrations.adk import AbathurSessionService
            >>> async def demo():
            ...     async with AbathurSessionService(
            ...             pathlib.Path(tempfile.mkdtemp()) / "a.db") as service:
            ...         await service.create_session(app_name="a", user_id="bob", session_id="1")
            ...         await service.create_session(app_name="a", user_id="amy", session_id="2")
            ...         listed = await service.list_sessions(app_name="a")
            ...         return [(s.user_id, s.id) for s in listed.sessions]
            >>> asyncio.run(demo())
            [('bob', '1'), ('amy', '2')]
        """
        if not _is_id(app_name) or (user_id is not None and not _is_id(user_id)):
            return ListSessionsResponse()
        ab = await self._store.get()
        found = await ab.sessions.list(app=app_name, user=user_id, limit=_ALL)
        found.sort(key=lambda s: (s.updated_at, s.user, s.id))
        return ListSessionsResponse(sessions=[_adk_session(s, []) for s in found])

    async def delete_session(self, *, app_name: str, user_id: str, session_id: str) -> None:
        """Delete a session and its events; app and user state stay.

        Deleting a session that does not exist (for this app and user) does
        nothing, as in ADK.

        Args:
            app_name: the application.
            user_id: the user.
            session_id: the session (stripped, as ADK does).

        Raises:
            ClosedError: the service was closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur.integrations.adk import AbathurSessionService
            >>> async def demo():
            ...     async with AbathurSessionService(
            ...             pathlib.Path(tempfile.mkdtemp()) / "a.db") as service:
            ...         s = await service.create_session(app_name="a", user_id="u")
            ...         await service.delete_session(app_name="a", user_id="u", session_id=s.id)
            ...         await service.delete_session(app_name="a", user_id="u", session_id=s.id)
            ...         return await service.get_session(
            ...             app_name="a", user_id="u", session_id=s.id)
            >>> asyncio.run(demo()) is None
            True
        """
        session_id = _strip(session_id)
        if not (_is_id(app_name) and _is_id(user_id) and _is_id(session_id)):
            return
        ab = await self._store.get()
        try:
            found = await ab.sessions.get(session_id, last_n=0)
            if found.app == app_name and found.user == user_id:
                await ab.sessions.delete(session_id)
        except errors.SessionNotFoundError:
            return

    async def get_user_state(self, *, app_name: str, user_id: str) -> dict[str, Any]:
        """The state shared by every session of ``user_id`` in ``app_name``.

        Args:
            app_name: the application.
            user_id: the user.

        Returns:
            Keys without the ``user:`` prefix; ``{}`` when there are none.

        Raises:
            ClosedError: the service was closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur.integrations.adk import AbathurSessionService
            >>> async def demo():
            ...     async with AbathurSessionService(
            ...             pathlib.Path(tempfile.mkdtemp()) / "a.db") as service:
            ...         await service.create_session(app_name="a", user_id="u",
            ...                                      state={"user:lang": "fr"})
            ...         return await service.get_user_state(app_name="a", user_id="u")
            >>> asyncio.run(demo())
            {'lang': 'fr'}
        """
        if not (_is_id(app_name) and _is_id(user_id)):
            return {}
        ab = await self._store.get()
        return await ab.sessions.get_user_state(app=app_name, user=user_id)

    async def append_event(self, session: Session, event: Event) -> Event:
        """Persist ``event`` and apply it to ``session``, as ADK's services do.

        A partial (streaming) event is returned untouched and not stored.
        ``temp:`` keys of the state delta are applied to ``session.state``
        and dropped from the event; the rest of the delta is stored with the
        event in one transaction (``app:`` and ``user:`` keys in the shared
        state). Then the event is appended to ``session.events`` and
        ``session.last_update_time`` becomes the event's timestamp.

        Args:
            session: the session object the event belongs to, as returned by
                this service (it carries the revision the write expects).
            event: the event.

        Returns:
            The event (with its ``temp:`` delta removed).

        Raises:
            SessionNotFoundError: (ADK's) the session does not exist for
                this app and user.
            StaleSessionError: (ADK's) the session was appended to since this
                object was read; nothing was stored.
            AlreadyExistsError: (ADK's) the session has a different event
                with this id (an equal one makes the call a no-op).
            InvalidIdError: the event id or a state key is not a valid id.
            ValueTooLargeError: the event's JSON (or the resulting state) is
                larger than ``max_value_bytes``.
            InvalidTransitionError: the session was paused or terminated
                through abathur.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from google.adk.events import Event
            >>> from google.adk.events.event_actions import EventActions
            >>> from abathur.integrations.adk import AbathurSessionService
            >>> async def demo():
            ...     async with AbathurSessionService(
            ...             pathlib.Path(tempfile.mkdtemp()) / "a.db") as service:
            ...         s = await service.create_session(app_name="a", user_id="u")
            ...         delta = {"temp:scratch": 1, "user:lang": "fr", "n": None}
            ...         event = Event(author="agent", actions=EventActions(state_delta=delta))
            ...         await service.append_event(s, event)
            ...         stored = await service.get_session(
            ...             app_name="a", user_id="u", session_id=s.id)
            ...         return s.state, stored.state, event.actions.state_delta
            >>> asyncio.run(demo())
            ({'temp:scratch': 1, 'user:lang': 'fr', 'n': None}, {'user:lang': 'fr', 'n': None}, {'user:lang': 'fr', 'n': None})
        """  # noqa: E501
        if event.partial:
            return event
        self._apply_temp_state(session, event)
        event = self._trim_temp_delta_state(event)
        data = event.model_dump(mode="json", exclude_none=True)
        record = abathur.Event(
            id=event.id,
            # ADK allows an empty author; abathur's column needs an id. The
            # real author is in the event's JSON either way.
            author=event.author if _is_id(event.author) else "unknown",
            content=data,
            state_delta=data.get("actions", {}).get("state_delta", {}),
            metadata={"format": EVENT_FORMAT, "adk_version": ADK_VERSION},
            timestamp=event.timestamp,
        )
        ab = await self._store.get()
        expected = _revision(session)
        if expected is None:
            expected = await self._check_fresh(ab, session)
        try:
            stored = await ab.sessions.append_event(session.id, record, expected_revision=expected)
        except errors.SessionNotFoundError:
            raise SessionNotFoundError(f"Session {session.id} not found.") from None
        except errors.StaleSessionError as exc:
            raise _stale(
                session, f"it is at revision {exc.actual}, this object at {exc.expected}"
            ) from None
        except errors.AlreadyExistsError as exc:
            if await self._is_stored(ab, session.id, event):
                return event
            raise AlreadyExistsError(exc.message) from None
        session.last_update_time = stored.updated_at
        session._storage_update_marker = str(stored.revision)
        return self._commit_event_to_session(session, event)

    async def _check_fresh(self, ab: Abathur, session: Session) -> int:
        """ADK's rule for a session object without a revision: stale if storage is newer."""
        try:
            current = await ab.sessions.get(session.id, last_n=0)
        except (errors.SessionNotFoundError, errors.InvalidIdError):
            current = None
        if current is None or (current.app, current.user) != (session.app_name, session.user_id):
            raise SessionNotFoundError(f"Session {session.id} not found.")
        if current.updated_at > session.last_update_time:
            raise _stale(
                session,
                f"storage was updated at {current.updated_at!r}, after "
                f"this object's last_update_time {session.last_update_time!r}",
            )
        return current.revision

    async def _is_stored(self, ab: Abathur, session_id: str, event: Event) -> bool:
        """Whether an event equal to ``event`` is already in the session (a re-delivery)."""
        found = await ab.sessions.get(session_id)
        return any(e.id == event.id and _adk_event(e) == event for e in found.events)
