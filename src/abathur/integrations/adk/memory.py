"""``AbathurMemoryService``: Google ADK's ``BaseMemoryService`` on abathur's memories.

Each remembered event (or explicit ``MemoryEntry``) is one abathur memory in
the namespace ``adk.<app>:<user>`` (each part percent-encoded, so ``:`` in an
app name or user id can never make two scopes collide; two segments, so each
user's memories are one vector partition of their own), keyed by the event id
(or the entry's id). Its value is the event's text, which is what abathur's
search indexes; its metadata keeps what ADK needs to rebuild the
``MemoryEntry``: the full ``Content`` as JSON, author, timestamp, session id
and custom metadata. Events are ``episodic`` memories, explicit entries
``semantic`` ones.

Writes are idempotent per event id: adding a session again only writes the
events not stored yet (or changed), and a memory deleted with
:meth:`AbathurMemoryService.delete_memory` is never brought back by a later
add, as with ADK's in-memory service. Deletes are abathur tombstones, so
``ab.memory.restore`` can undo one.

Search is abathur's hybrid search (keyword BM25 fused with vector
similarity) over the (app, user) namespace, and keeps only hits relevant
enough, so an unrelated query returns nothing instead of "the ten least bad".
Hybrid ranking is by reciprocal rank fusion, which says nothing about
relevance (every memory gets a rank), so relevance is judged on each hit's
``relevance``, its cosine similarity to the query: a hit is kept when it is at
least ``min_similarity``. Searches are ``fresh``: memories written a moment
ago (``add_session_to_memory`` just before) are embedded inline first, so
they are found by vector search at once (a hit that still has no vector, the
embedder failing, is judged on the share of the query's words it holds).
When search cannot use vectors at all (no embedder, embedder down),
abathur falls back to keyword search and every keyword hit is kept, which is
ADK's in-memory rule (any shared word), except that English stop words count
only in a query made of nothing else (:data:`abathur.search.STOP_WORDS`).

Where this differs from ADK's ``InMemoryMemoryService``, on purpose:

* Search is abathur's ranked hybrid search, not "most shared words", and has
  a relevance threshold (``min_similarity``); results are ordered best first.
* ``add_memory`` is supported (the in-memory service raises
  ``NotImplementedError``); ``custom_metadata`` takes ``ttl`` (seconds or a
  ``datetime.timedelta``) and
  ``metadata`` (a dict stored with each memory); other keys are ignored, as
  services ignore keys they do not know.
* Events without text (only images, only function calls) are not stored:
  a text query can never find them (ADK's ``SqliteMemoryService`` skips them
  too). The model's thought parts are not searched (they are kept in the
  stored content).
* App names and user ids must be valid abathur ids; a write with a bad one
  raises :class:`~abathur.errors.InvalidIdError`, a search returns nothing.

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from google.adk.events import Event
    >>> from google.adk.sessions import Session
    >>> from google.genai import types
    >>> from abathur.integrations.adk import AbathurMemoryService
    >>> async def demo():
    ...     path = pathlib.Path(tempfile.mkdtemp()) / "agent.db"
    ...     async with AbathurMemoryService(path) as memory:
    ...         said = types.Content(role="user", parts=[types.Part(text="I prefer French")])
    ...         session = Session(id="s1", app_name="helpdesk", user_id="alice",
    ...                           events=[Event(id="e1", author="user", content=said)])
    ...         await memory.add_session_to_memory(session)
    ...         found = await memory.search_memory(
    ...             app_name="helpdesk", user_id="alice", query="which language: French?")
    ...         return [(m.id, m.author, m.content.parts[0].text) for m in found.memories]
    >>> asyncio.run(demo())
    [('e1', 'user', 'I prefer French')]
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, cast
from urllib.parse import quote

from google.adk.events.event import Event
from google.adk.memory.base_memory_service import BaseMemoryService, SearchMemoryResponse
from google.adk.memory.memory_entry import MemoryEntry
from google.adk.sessions.session import Session
from google.genai import types

from abathur import errors
from abathur.api import Abathur
from abathur.config import Settings
from abathur.models import MemoryType, SearchHit
from abathur.search import MAX_QUERY_CHARS
from abathur.values import check_id

from ._store import Store

__all__ = ["MIN_SIMILARITY", "NAMESPACE_PREFIX", "AbathurMemoryService", "namespace_for"]

#: What every namespace this service writes starts with (then the app name).
NAMESPACE_PREFIX = "adk."

#: Default of ``min_similarity``: cosine similarity a hit needs to count as
#: relevant, for the bundled all-MiniLM-L6-v2 (related phrasings score about
#: 0.3-0.8 with it, unrelated ones below 0.2). Other embedders have other
#: scales: an Ollama model may need 0.5 or more.
MIN_SIMILARITY = 0.25

# Hybrid search fuses the top max(50, 2k) of each ranking (abathur.memory's
# HYBRID_DEPTH): the cosine look-up reads as deep, so every hit the vector
# side contributed has its similarity known.
_DEPTH = 50
_MAX_K = 1000
_OPTIONS = ("max_results", "min_similarity")


def namespace_for(app_name: str, user_id: str) -> str:
    """The abathur namespace holding the memories of ``user_id`` in ``app_name``.

    Args:
        app_name: the application.
        user_id: the user.

    Returns:
        ``adk.<app>:<user>``, each part percent-encoded so a ``:`` (or ``%``)
        in it stays inside its own segment. abathur partitions vectors by the
        first two segments of a namespace, so (app, user) is one partition
        and a user's search reads only that user's vectors.

    Raises:
        InvalidIdError: ``app_name`` or ``user_id`` is not a valid abathur id.

    Example:
        >>> from abathur.integrations.adk import namespace_for
        >>> namespace_for("helpdesk", "alice")
        'adk.helpdesk:alice'
        >>> namespace_for("a:b", "c"), namespace_for("a", "b:c")
        ('adk.a%3Ab:c', 'adk.a:b%3Ac')
    """
    check_id(app_name, "app name")
    check_id(user_id, "user id")
    return f"{NAMESPACE_PREFIX}{quote(app_name, safe='')}:{quote(user_id, safe='')}"


def _is_id(value: object) -> bool:
    try:
        check_id(value, "id")
    except errors.InvalidIdError:
        return False
    return True


def _text(content: types.Content | None) -> str:
    if content is None or not content.parts:
        return ""
    return "\n".join(p.text for p in content.parts if p.text and not p.thought).strip()


def _timestamp(ts: float) -> str:
    # The form ADK's own memory services hand to the model (memory/_utils.py).
    return datetime.fromtimestamp(ts).isoformat()


def _options(custom_metadata: Mapping[str, object] | None) -> tuple[float | None, dict[str, Any]]:
    """(ttl, extra metadata) from a call's ``custom_metadata``."""
    if custom_metadata is None:
        return None, {}
    if not isinstance(custom_metadata, Mapping):
        raise errors.InvalidInputError(
            f"custom_metadata must be a mapping, got {type(custom_metadata).__name__}"
        )
    ttl = custom_metadata.get("ttl")
    if isinstance(ttl, timedelta):
        ttl = ttl.total_seconds()
    if ttl is not None and (
        isinstance(ttl, bool)
        or not isinstance(ttl, int | float)
        or not math.isfinite(ttl)
        or ttl <= 0
    ):
        raise errors.InvalidInputError(
            "custom_metadata['ttl'] must be a positive number of seconds or a timedelta, "
            f"got {ttl!r}"
        )
    extra = custom_metadata.get("metadata") or {}
    if not isinstance(extra, Mapping):
        raise errors.InvalidInputError(
            f"custom_metadata['metadata'] must be a mapping, got {type(extra).__name__}"
        )
    return (None if ttl is None else float(ttl)), dict(extra)


def _entry(hit: SearchHit) -> MemoryEntry:
    meta = hit.metadata
    if isinstance(meta.get("content"), dict):
        content = types.Content.model_validate(meta["content"])
    else:
        # Written into the namespace through abathur's own API: its value is the text.
        said = hit.value if isinstance(hit.value, str) else json.dumps(hit.value)
        content = types.Content(parts=[types.Part(text=said)])
    # Our own metadata, written by add_session_to_memory; MemoryEntry validates it.
    return MemoryEntry.model_validate(
        {
            "id": hit.key,
            "content": content,
            "author": meta.get("author"),
            "timestamp": meta.get("timestamp"),
            "custom_metadata": dict(cast(dict[str, Any], meta.get("custom_metadata") or {})),
        }
    )


def _option(
    value: object, from_uri: str | None, name: str, default: float, kind: type[int] | type[float]
) -> Any:
    """A service option from the constructor or the URI, checked."""
    if value is not None and from_uri is not None:
        raise errors.InvalidInputError(f"{name} set both in the URI and as an argument")
    if value is None:
        value = default
        if from_uri is not None:
            try:
                value = kind(from_uri)
            except ValueError:
                raise errors.InvalidInputError(
                    f"{name} in the URI must be a number, got {from_uri!r}"
                ) from None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (kind is int and not isinstance(value, int))
    ):
        raise errors.InvalidInputError(f"{name} must be a {kind.__name__}, got {value!r}")
    return value


class AbathurMemoryService(BaseMemoryService):
    """ADK memory service storing memories in an abathur database, found by its search.

    Args:
        db: an open :class:`~abathur.Abathur` (you keep and close it) or the
            path of the database file (the service opens it on first use and
            :meth:`close` closes it).
        uri: instead of ``db``, an ``abathur:`` URI (how ADK's service
            registry builds it).
        agents_dir: passed by ADK's service registry; unused.
        max_results: most memories a search returns, 1..1000 (ADK's in-memory
            service: 10). A URI may set it: ``abathur:///a.db?max_results=5``.
        min_similarity: cosine similarity to the query a hit needs to be
            returned (see :data:`MIN_SIMILARITY`); a URI may set it too.
        **settings: :class:`~abathur.config.Settings` fields for a database
            the service opens.

    Raises:
        InvalidInputError: neither or both of ``db`` and ``uri``, a bad URI,
            bad settings, ``max_results`` not an int in 1..1000, or
            ``min_similarity`` not a number in [-1, 1].

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur.integrations.adk import AbathurMemoryService
        >>> async def demo():
        ...     async with AbathurMemoryService(
        ...             pathlib.Path(tempfile.mkdtemp()) / "a.db") as memory:
        ...         found = await memory.search_memory(app_name="a", user_id="u", query="hi")
        ...         return found.memories
        >>> asyncio.run(demo())
        []
    """

    def __init__(
        self,
        db: Abathur | str | os.PathLike[str] | None = None,
        *,
        uri: str | None = None,
        agents_dir: str | None = None,
        max_results: int | None = None,
        min_similarity: float | None = None,
        **settings: Any,
    ) -> None:
        self._store = Store(db, uri, settings, options=_OPTIONS)
        given = self._store.options
        self.max_results: int = _option(
            max_results, given.get("max_results"), "max_results", 10, int
        )
        if not 1 <= self.max_results <= _MAX_K:
            raise errors.InvalidInputError(
                f"max_results must be between 1 and {_MAX_K}, got {self.max_results}"
            )
        self.min_similarity: float = float(
            _option(
                min_similarity, given.get("min_similarity"), "min_similarity", MIN_SIMILARITY, float
            )
        )
        if not -1.0 <= self.min_similarity <= 1.0:
            raise errors.InvalidInputError(
                f"min_similarity is a cosine similarity, in [-1, 1]; got {self.min_similarity}"
            )

    @property
    def settings(self) -> Settings:
        """The :class:`~abathur.config.Settings` of the database (its path is ``.db``)."""
        return self._store.settings

    @property
    def is_closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._store.is_closed

    async def close(self) -> None:
        """Close the database if this service opened it; idempotent.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur.integrations.adk import AbathurMemoryService
            >>> async def demo():
            ...     memory = AbathurMemoryService(pathlib.Path(tempfile.mkdtemp()) / "a.db")
            ...     await memory.search_memory(app_name="a", user_id="u", query="x")
            ...     await memory.close()
            ...     return memory.is_closed
            >>> asyncio.run(demo())
            True
        """
        await self._store.close()

    async def __aenter__(self) -> AbathurMemoryService:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def add_session_to_memory(self, session: Session) -> None:
        """Remember the session's events (those with text); again is a no-op.

        Args:
            session: the ADK session; its app name and user id scope the memories.

        Raises:
            InvalidIdError: the app name, user id or an event id is not a valid id.
            ValueTooLargeError: an event's text or content is over ``max_value_bytes``.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from google.adk.events import Event
            >>> from google.adk.sessions import Session
            >>> from google.genai import types
            >>> from abathur.integrations.adk import AbathurMemoryService
            >>> async def demo():
            ...     async with AbathurMemoryService(
            ...             pathlib.Path(tempfile.mkdtemp()) / "a.db") as memory:
            ...         said = types.Content(role="user", parts=[types.Part(text="ski trip")])
            ...         s = Session(id="s1", app_name="a", user_id="u",
            ...                     events=[Event(id="e1", author="user", content=said)])
            ...         await memory.add_session_to_memory(s)
            ...         await memory.add_session_to_memory(s)
            ...         found = await memory.search_memory(app_name="a", user_id="u",
            ...                                            query="ski")
            ...         return [m.id for m in found.memories]
            >>> asyncio.run(demo())
            ['e1']
        """
        await self.add_events_to_memory(
            app_name=session.app_name,
            user_id=session.user_id,
            events=session.events,
            session_id=session.id,
        )

    async def add_events_to_memory(
        self,
        *,
        app_name: str,
        user_id: str,
        events: Sequence[Event],
        session_id: str | None = None,
        custom_metadata: Mapping[str, object] | None = None,
    ) -> None:
        """Remember some events (a delta, e.g. the latest turn); idempotent per event id.

        Args:
            app_name: the application.
            user_id: the user.
            events: the events; those without text are skipped.
            session_id: the session they come from, kept with each memory.
            custom_metadata: ``ttl`` (seconds or a timedelta until the memories expire) and
                ``metadata`` (a dict kept with each memory); other keys are ignored.

        Raises:
            InvalidIdError: the app name, user id or an event id is not a valid id.
            InvalidInputError: ``ttl`` or ``metadata`` has the wrong type.
            ValueTooLargeError: an event's text or content is over ``max_value_bytes``.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from google.adk.events import Event
            >>> from google.genai import types
            >>> from abathur.integrations.adk import AbathurMemoryService
            >>> async def demo():
            ...     async with AbathurMemoryService(
            ...             pathlib.Path(tempfile.mkdtemp()) / "a.db") as memory:
            ...         said = types.Content(role="user", parts=[types.Part(text="sushi please")])
            ...         await memory.add_events_to_memory(
            ...             app_name="a", user_id="u", session_id="s1",
            ...             events=[Event(id="e1", author="user", content=said)],
            ...             custom_metadata={"ttl": 3600, "metadata": {"topic": "food"}})
            ...         found = await memory.search_memory(app_name="a", user_id="u",
            ...                                            query="sushi")
            ...         return found.memories[0].custom_metadata
            >>> asyncio.run(demo())
            {'topic': 'food'}
        """
        namespace = namespace_for(app_name, user_id)
        ttl, extra = _options(custom_metadata)
        items = []
        for event in events:
            said = _text(event.content)
            if not said or event.content is None:  # no text: nothing to remember
                continue
            check_id(event.id, "event id")
            items.append(
                (
                    event.id,
                    said,
                    {
                        "source": "adk.event",
                        "session_id": session_id,
                        "author": event.author,
                        "timestamp": _timestamp(event.timestamp),
                        "content": event.content.model_dump(mode="json", exclude_none=True),
                        "custom_metadata": extra,
                    },
                )
            )
        await self._put(namespace, items, type_="episodic", ttl=ttl)

    async def add_memory(
        self,
        *,
        app_name: str,
        user_id: str,
        memories: Sequence[MemoryEntry],
        custom_metadata: Mapping[str, object] | None = None,
    ) -> None:
        """Remember explicit entries (facts the agent decided to keep).

        An entry with an ``id`` is written under it (writing it again with
        other content makes a new version); one without gets a new id.

        Args:
            app_name: the application.
            user_id: the user.
            memories: the entries; those without text are skipped.
            custom_metadata: ``ttl`` (seconds or a timedelta) and ``metadata`` (a dict merged
                under each entry's own ``custom_metadata``); other keys are ignored.

        Raises:
            InvalidIdError: the app name, user id or an entry id is not a valid id.
            InvalidInputError: ``ttl`` or ``metadata`` has the wrong type.
            ValueTooLargeError: an entry is over ``max_value_bytes``.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from google.adk.memory.memory_entry import MemoryEntry
            >>> from google.genai import types
            >>> from abathur.integrations.adk import AbathurMemoryService
            >>> async def demo():
            ...     async with AbathurMemoryService(
            ...             pathlib.Path(tempfile.mkdtemp()) / "a.db") as memory:
            ...         fact = types.Content(parts=[types.Part(text="Alice is vegetarian")])
            ...         await memory.add_memory(app_name="a", user_id="alice", memories=[
            ...             MemoryEntry(id="diet", content=fact, author="agent")])
            ...         found = await memory.search_memory(app_name="a", user_id="alice",
            ...                                            query="is alice vegetarian")
            ...         return [(m.id, m.author) for m in found.memories]
            >>> asyncio.run(demo())
            [('diet', 'agent')]
        """
        namespace = namespace_for(app_name, user_id)
        ttl, extra = _options(custom_metadata)
        items = []
        for entry in memories:
            said = _text(entry.content)
            if not said:
                continue
            key = entry.id if entry.id is not None else uuid.uuid4().hex
            check_id(key, "memory id")
            items.append(
                (
                    key,
                    said,
                    {
                        "source": "adk.memory",
                        "session_id": None,
                        "author": entry.author,
                        "timestamp": entry.timestamp,
                        "content": entry.content.model_dump(mode="json", exclude_none=True),
                        "custom_metadata": {**extra, **entry.custom_metadata},
                    },
                )
            )
        await self._put(namespace, items, type_="semantic", ttl=ttl, replace=True)

    async def _put(
        self,
        namespace: str,
        items: list[tuple[str, str, dict[str, Any]]],
        *,
        type_: MemoryType,
        ttl: float | None,
        replace: bool = False,
    ) -> None:
        ab = await self._store.get()
        for key, said, metadata in items:
            current = await ab.memory.get(namespace, key)
            if current is not None and current.value == said and current.metadata == metadata:
                continue
            if current is not None and not replace:
                # Events never change: a stored event is kept as it is.
                continue
            if current is None and not replace and await ab.memory.history(namespace, key):
                # Forgotten on purpose (deleted; an expired one has no history):
                # re-adding its session must not bring it back.
                continue
            try:
                await ab.memory.put(
                    namespace,
                    key,
                    said,
                    type=type_,
                    metadata=metadata,
                    ttl=ttl,
                    expected_version=0 if current is None else current.version,
                )
            except errors.VersionConflictError:
                # A concurrent add wrote it first; the same event either way.
                continue

    async def search_memory(
        self, *, app_name: str, user_id: str, query: str
    ) -> SearchMemoryResponse:
        """The user's memories relevant to ``query``, best first.

        Args:
            app_name: the application.
            user_id: the user; only this user's memories in this app are searched.
            query: what to look for.

        Returns:
            ADK's ``SearchMemoryResponse``: at most ``max_results`` entries,
            only those relevant enough (see the module docstring); empty for
            an empty query. A query longer than abathur's limit (8192
            characters) is searched by its beginning.

        Raises:
            ClosedError: the service was closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from google.adk.memory.memory_entry import MemoryEntry
            >>> from google.genai import types
            >>> from abathur.integrations.adk import AbathurMemoryService
            >>> async def demo():
            ...     async with AbathurMemoryService(
            ...             pathlib.Path(tempfile.mkdtemp()) / "a.db") as memory:
            ...         fact = types.Content(parts=[types.Part(text="the wifi password is otter")])
            ...         await memory.add_memory(app_name="a", user_id="u",
            ...                                 memories=[MemoryEntry(content=fact)])
            ...         hit = await memory.search_memory(app_name="a", user_id="u",
            ...                                          query="wifi password")
            ...         miss = await memory.search_memory(app_name="a", user_id="other",
            ...                                           query="wifi password")
            ...         return len(hit.memories), len(miss.memories)
            >>> asyncio.run(demo())
            (1, 0)
        """
        if not isinstance(query, str) or not query.strip():
            return SearchMemoryResponse()
        if not (_is_id(app_name) and _is_id(user_id)):
            return SearchMemoryResponse()
        query = query[:MAX_QUERY_CHARS]
        namespace = namespace_for(app_name, user_id)
        ab = await self._store.get()
        # fresh=True: what add_session_to_memory just wrote is embedded before
        # the search (read-your-writes), so the vector side sees it too.
        found = await ab.memory.search(
            query,
            prefix=namespace,
            k=min(_MAX_K, max(_DEPTH, 2 * self.max_results)),
            mode="hybrid",
            fresh=True,
        )
        hits = found.hits
        if found.mode != "keyword":  # else: keyword's rule, any shared word
            hits = [h for h in hits if h.relevance >= self.min_similarity]
        return SearchMemoryResponse(memories=[_entry(h) for h in hits[: self.max_results]])

    async def delete_memory(
        self, *, app_name: str, user_id: str, memory_id: str | None = None
    ) -> None:
        """Delete one memory by the id ``search_memory`` gave it; absent ids do nothing.

        The memory is tombstoned (``ab.memory.restore`` undoes it) and never
        re-added by a later :meth:`add_session_to_memory`.

        Args:
            app_name: the application.
            user_id: the user.
            memory_id: the ``MemoryEntry.id``; ``None`` does nothing.

        Raises:
            ClosedError: the service was closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from google.adk.memory.memory_entry import MemoryEntry
            >>> from google.genai import types
            >>> from abathur.integrations.adk import AbathurMemoryService
            >>> async def demo():
            ...     async with AbathurMemoryService(
            ...             pathlib.Path(tempfile.mkdtemp()) / "a.db") as memory:
            ...         fact = types.Content(parts=[types.Part(text="parking spot 42")])
            ...         await memory.add_memory(app_name="a", user_id="u",
            ...                                 memories=[MemoryEntry(id="m1", content=fact)])
            ...         await memory.delete_memory(app_name="a", user_id="u", memory_id="m1")
            ...         await memory.delete_memory(app_name="a", user_id="u", memory_id="m1")
            ...         found = await memory.search_memory(app_name="a", user_id="u",
            ...                                            query="parking spot")
            ...         return found.memories
            >>> asyncio.run(demo())
            []
        """
        if not memory_id or not (_is_id(app_name) and _is_id(user_id) and _is_id(memory_id)):
            return
        ab = await self._store.get()
        try:
            await ab.memory.delete(namespace_for(app_name, user_id), memory_id)
        except errors.MemoryNotFoundError:
            return
