"""``AbathurStore``: LangGraph's ``BaseStore`` on abathur's memories.

Each LangGraph item is one abathur memory (type ``semantic``):

* namespace: ``langgraph:`` + one escaped segment per label (see
  :mod:`abathur.integrations.langgraph.namespaces`); key: the item's key,
  escaped the same way;
* value: the text LangGraph's index config says to embed (the fields of
  ``index["fields"]`` or of the put's ``index=[...]``, joined by newlines;
  ``"$"`` is the whole value as JSON), or ``""`` when the item is not indexed.
  abathur embeds and keyword-indexes a memory's value, so this is how
  "embed only these fields" and ``index=False`` work;
* metadata: the item's value, key by key (a key starting with ``~`` gets one
  more ``~``), plus four bookkeeping keys of a single ``~``: ``~index`` (may a
  query find it), ``~ttl`` (its TTL in minutes), ``~created`` and ``~updated``
  (LangGraph's timestamps, epoch seconds). Equality filters on the value
  therefore reach abathur's metadata filter, applied inside its index scans.

A put writes a new abathur version (history, audit, ``ab.memory.restore`` all
work); a delete is a tombstone. TTLs are abathur's: expired items are never
returned. Reading an item with a TTL (``refresh_ttl``) writes a new version
with the same content and a later expiry, at most once per 1% of the TTL
(:data:`REFRESH_STEP`), so a hot item does not grow a version per read.

Where this differs from LangGraph's ``InMemoryStore`` on purpose is listed in
docs/integrations/langgraph.md; each point has a ``test_divergence_*`` test.

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from abathur.integrations.langgraph import AbathurStore
    >>> async def demo():
    ...     path = pathlib.Path(tempfile.mkdtemp()) / "agent.db"
    ...     async with AbathurStore(path, index={"fields": ["text"]}) as store:
    ...         await store.aput(("docs",), "d1", {"text": "Python tutorial", "lang": "en"})
    ...         await store.aput(("docs",), "d2", {"text": "Cooking pasta", "lang": "it"})
    ...         hits = await store.asearch(("docs",), query="learn programming", limit=1)
    ...         italian = await store.asearch(("docs",), filter={"lang": "it"})
    ...         return [h.key for h in hits], [h.key for h in italian]
    >>> asyncio.run(demo())
    (['d1'], ['d2'])
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog
from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    get_text_at_path,
    tokenize_path,
    validate_op_namespace,
)
from pydantic import ValidationError

from abathur.api import Abathur
from abathur.config import PostgresUrl, Settings, is_postgres_url
from abathur.errors import (
    ClosedError,
    EmbedderError,
    InvalidInputError,
    InvalidNamespaceError,
    MemoryNotFoundError,
    VersionConflictError,
)
from abathur.memory import MAX_LIMIT, MAX_SEARCH_K
from abathur.models import Memory, SearchHit
from abathur.search import MAX_QUERY_CHARS
from abathur.values import check_id, encode

from .embedder import as_embedder
from .filters import check_filter, matches, pushdown
from .namespaces import ROOT, check_root, from_key, from_namespace, to_key, to_namespace

__all__ = ["MAX_NAMESPACES", "REFRESH_STEP", "AbathurStore"]

log = structlog.get_logger(__name__)

#: A read moves an item's expiry only when that gains at least this share of
#: its TTL (each move is a new abathur version).
REFRESH_STEP = 0.01

#: Most namespaces one ``list_namespaces`` can sort through (abathur's
#: ``memory.namespaces`` limit); past it the call asks for a narrower prefix.
MAX_NAMESPACES = MAX_LIMIT

_INDEX, _TTL, _CREATED, _UPDATED = "~index", "~ttl", "~created", "~updated"
_INDEX_KEYS = frozenset({"dims", "embed", "fields", "distance_type"})
_TTL_KEYS = frozenset({"refresh_on_read", "default_ttl", "sweep_interval_minutes", "omit_expired"})
# Optimistic writes retried this many times when another writer gets in between.
_RETRIES = 5


def _kind(value: object) -> str:
    return type(value).__name__


def _meta_key(key: str) -> str:
    return "~" + key if key.startswith("~") else key


def _value_key(key: str) -> str | None:
    if key.startswith("~~"):
        return key[1:]
    return None if key.startswith("~") else key


def _when(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _check_count(value: object, what: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_minutes(value: object, what: str) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise InvalidInputError(
            f"{what} must be a positive number of minutes or None, got {value!r}"
        )
    return float(value)


def _check_index(index: object) -> tuple[dict[str, Any] | None, list[tuple[str, Any]]]:
    if index is None:
        return None, []
    if not isinstance(index, Mapping):
        raise InvalidInputError(f"index must be an IndexConfig dict, got {_kind(index)}")
    unknown = sorted(set(index) - _INDEX_KEYS)
    if unknown:
        raise InvalidInputError(
            f"index config keys {unknown} are not supported; use {sorted(_INDEX_KEYS)}"
        )
    if index.get("distance_type", "cosine") != "cosine":
        raise InvalidInputError(
            f"abathur ranks by cosine similarity; distance_type {index['distance_type']!r} "
            "is not supported"
        )
    dims = index.get("dims")
    if dims is not None:
        _check_count(dims, "index dims", minimum=1)
    if index.get("embed") is not None and dims is None:
        raise InvalidInputError("index 'embed' needs 'dims' (the length of its vectors)")
    fields = index.get("fields")
    return dict(index), _paths(["$"] if fields is None else fields, "index fields")


def _paths(fields: object, what: str) -> list[tuple[str, Any]]:
    if not isinstance(fields, list | tuple) or not all(isinstance(f, str) and f for f in fields):
        raise InvalidInputError(f"{what} must be a list of non-empty JSON paths, got {fields!r}")
    # "$" is the whole value, whether it comes from the config or a put.
    return [(f, "$" if f == "$" else tokenize_path(f)) for f in fields]


def _check_ttl_config(ttl: object) -> TTLConfig | None:
    if ttl is None:
        return None
    if not isinstance(ttl, Mapping):
        raise InvalidInputError(f"ttl must be a TTLConfig dict, got {_kind(ttl)}")
    unknown = sorted(set(ttl) - _TTL_KEYS)
    if unknown:
        raise InvalidInputError(
            f"ttl config keys {unknown} are not supported; use {sorted(_TTL_KEYS)}"
        )
    for flag in ("refresh_on_read", "omit_expired"):
        if flag in ttl and not isinstance(ttl[flag], bool):
            raise InvalidInputError(f"ttl {flag} must be a bool, got {ttl[flag]!r}")
    _check_minutes(ttl.get("default_ttl"), "ttl default_ttl")
    if ttl.get("sweep_interval_minutes") is not None:
        _check_count(ttl["sweep_interval_minutes"], "ttl sweep_interval_minutes", minimum=1)
    return TTLConfig(**ttl)  # type: ignore[typeddict-item]


def _settings(path: Path | PostgresUrl, overrides: dict[str, Any]) -> Settings:
    try:
        return Settings(**{**overrides, "db": path})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise InvalidInputError(f"invalid abathur settings: {problems}") from None


def _matches_condition(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    # LangGraph's rule: '*' matches any one label; prefix from the start, suffix from the end.
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    if condition.match_type == "suffix":
        namespace, path = namespace[::-1], path[::-1]
    pairs = zip(namespace, path, strict=False)
    return all(p == "*" or n == p for n, p in pairs)


@dataclass(frozen=True)
class _Put:
    namespace: str
    key: str
    value: dict[str, Any] | None  # None: delete
    text: str
    indexed: bool
    ttl: float | None  # minutes


@dataclass(frozen=True)
class _Read:
    op: GetOp | SearchOp | ListNamespacesOp
    namespace: str  # the abathur namespace (GetOp) or prefix (SearchOp)
    key: str = ""
    filter: dict[str, Any] | None = None
    query: str | None = None


class AbathurStore(BaseStore):
    """LangGraph store keeping items in an abathur database, searchable by meaning.

    Use it wherever LangGraph takes a store: ``graph.compile(store=store)``,
    ``@entrypoint(store=store)``, or directly. The sync API (``put``, ``get``,
    ``search``...) and the async one (``aput``, ``aget``...) both work, from
    any thread and any event loop.

    Args:
        db: the database file (the store opens it on first use, on an event
            loop of its own, and :meth:`close` closes it), or an open
            :class:`~abathur.Abathur` (you keep and close it; build the store
            inside the event loop it was opened in, which must keep running
            while the store is used).
        index: LangGraph's ``IndexConfig``, to search by meaning. ``fields``
            (default ``["$"]``, the whole value) chooses what is embedded;
            ``embed`` and ``dims`` name the model (see :func:`as_embedder`;
            with an open ``Abathur``, open it with that embedder instead);
            without ``embed``, abathur's own embedder is used, and ``dims``,
            if given, must match it. ``None``: no search by meaning (a query
            is ignored, as LangGraph's stores do).
        ttl: LangGraph's ``TTLConfig``: ``default_ttl`` (minutes) for puts that
            set none, ``refresh_on_read`` (default true) for reads that do not
            say. ``sweep_interval_minutes`` is accepted and not needed: expired
            items are never returned, and abathur's archival reclaims them.
        root: the abathur namespace segment all items live under; two stores
            with different roots share a file without seeing each other.
        wait_for_vectors: with an index config, a put returns once its item is
            embedded (as LangGraph's stores do), so a search right after finds
            it by meaning. False: writes return at once and abathur's
            background worker embeds them.
        **settings: :class:`~abathur.config.Settings` fields for a database the
            store opens (e.g. ``embedder="none"``, ``synchronous="FULL"``).

    Raises:
        InvalidInputError: a bad ``db``, index or ttl config, root or setting;
            ``embed`` or settings given with an open ``Abathur``; an open
            ``Abathur`` given outside a running event loop.

    Example:
        >>> import tempfile, pathlib
        >>> from abathur.integrations.langgraph import AbathurStore
        >>> with AbathurStore(pathlib.Path(tempfile.mkdtemp()) / "agent.db") as store:
        ...     store.put(("users", "alice"), "prefs", {"theme": "dark"})
        ...     item = store.get(("users", "alice"), "prefs")
        ...     item.value, item.namespace, store.list_namespaces(prefix=("users",))
        ({'theme': 'dark'}, ('users', 'alice'), [('users', 'alice')])
    """

    supports_ttl = True

    def __init__(
        self,
        db: Abathur | str | os.PathLike[str],
        *,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        root: str = ROOT,
        wait_for_vectors: bool = True,
        **settings: Any,
    ) -> None:
        self.root = check_root(root)
        self.index_config, self._fields = _check_index(index)
        self.ttl_config = _check_ttl_config(ttl)
        if not isinstance(wait_for_vectors, bool):
            raise InvalidInputError(f"wait_for_vectors must be a bool, got {wait_for_vectors!r}")
        self.wait_for_vectors = wait_for_vectors
        embed = None if self.index_config is None else self.index_config.get("embed")
        self._lock = threading.Lock()
        self._open_lock = asyncio.Lock()
        self._is_closed = False
        self._thread: threading.Thread | None = None
        self._embedder = None
        if isinstance(db, Abathur):
            if settings:
                raise InvalidInputError(
                    f"settings {sorted(settings)} cannot apply to an Abathur that is already "
                    "open; pass a path instead"
                )
            if embed is not None:
                raise InvalidInputError(
                    "this Abathur embeds with the embedder it was opened with; open it with "
                    "Abathur.open(..., embedder=as_embedder(embed, dims=...)) and leave 'embed' "
                    "out of the index config"
                )
            loop = _running_loop()
            if loop is None:
                raise InvalidInputError(
                    "an open Abathur lives on the event loop it was opened in: build the store "
                    "inside that loop, or give the store a path to open itself"
                )
            self._check_dims(db)
            self._ab: Abathur | None = db
            self._loop: asyncio.AbstractEventLoop | None = loop
            self._owns = False
            self.settings = db.settings
            return
        if not isinstance(db, str | os.PathLike):
            raise InvalidInputError(f"db must be an Abathur or a path, got {_kind(db)}")
        if embed is not None:
            if "embedder" in settings:
                raise InvalidInputError("give either index 'embed' or the 'embedder' setting")
            self._embedder = as_embedder(embed, dims=self.index_config["dims"])  # type: ignore[index]
        # A postgresql:// URL stays a URL (a Path would fold its '//').
        target = PostgresUrl(db) if isinstance(db, str) and is_postgres_url(db) else Path(db)
        self.settings = _settings(target, settings)
        self._ab = None
        self._loop = None
        self._owns = True

    # -- the event loop the database lives on ----------------------------------------------

    @property
    def is_closed(self) -> bool:
        """True once :meth:`close` (or :meth:`aclose`) has been called."""
        return self._is_closed

    def _home(self) -> asyncio.AbstractEventLoop:
        """The loop the Abathur lives on (started here for a store that opens its file)."""
        with self._lock:
            if self._is_closed:
                raise ClosedError(f"this LangGraph store on {str(self.settings.db)!r} was closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=_serve,
                    args=(loop,),
                    name=f"abathur-langgraph {self.settings.db}",
                    daemon=True,
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    async def _db(self) -> Abathur:
        if self._ab is not None:
            return self._ab
        async with self._open_lock:
            if self._ab is None:
                ab = await Abathur.open(settings=self.settings, embedder=self._embedder)
                try:
                    self._check_dims(ab)
                except BaseException:
                    await ab.close()
                    raise
                self._ab = ab
            return self._ab

    def _check_dims(self, ab: Abathur) -> None:
        dims = None if self.index_config is None else self.index_config.get("dims")
        embedder = ab.embeddings.embedder
        if dims is not None and embedder is not None and embedder.dims and embedder.dims != dims:
            raise InvalidInputError(
                f"index dims={dims}, but the database embeds with {embedder.name} "
                f"({embedder.dims} dims)"
            )

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run operations from sync code; results in the order of ``ops``.

        Reads (``GetOp``, ``SearchOp``, ``ListNamespacesOp``) run first, in
        order, then the puts (``PutOp``; value ``None`` deletes), the last put
        of a (namespace, key) winning, as in LangGraph's own stores. Every
        operation is checked before any runs: a bad one fails the batch
        having changed nothing.

        Args:
            ops: the operations.

        Returns:
            One result per operation: an ``Item`` or ``None`` for a get, a
            list of ``SearchItem`` for a search, a list of namespace tuples for
            a listing, ``None`` for a put.

        Raises:
            asyncio.InvalidStateError: called from the event loop the database
                lives on (it would wait for itself); use :meth:`abatch` there.
            ClosedError: the store was closed, or that loop is not running.
            InvalidInputError: an operation is malformed (see the module docs).
            InvalidNamespaceError: a namespace label is empty or not a string,
                or the namespace is too long for abathur.
            InvalidIdError: a key is too long (over 256 characters escaped).
            langgraph.store.base.InvalidNamespaceError: a label holds ``.``.
            ValueNotSerializableError: a value is not JSON.
            ValueTooLargeError: a value is over ``max_value_bytes``.

        Example:
            >>> import tempfile, pathlib
            >>> from langgraph.store.base import GetOp, PutOp
            >>> from abathur.integrations.langgraph import AbathurStore
            >>> with AbathurStore(pathlib.Path(tempfile.mkdtemp()) / "a.db") as store:
            ...     first = store.batch([PutOp(("n",), "k", {"v": 1}), GetOp(("n",), "k")])
            ...     then = store.batch([GetOp(("n",), "k")])
            ...     first[1], then[0].value
            (None, {'v': 1})
        """
        plan = self._plan(list(ops))
        loop = self._home()
        if _running_loop() is loop:
            raise asyncio.InvalidStateError(
                "synchronous AbathurStore calls from the event loop its database lives on "
                "would wait for themselves: use the async API there (await store.abatch / "
                "aget / aput / asearch ...), or give the store a path so it runs its own loop"
            )
        if not loop.is_running():
            raise ClosedError("the event loop this store's Abathur lives on is not running")
        return asyncio.run_coroutine_threadsafe(self._run(plan), loop).result()

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Run operations from async code; see :meth:`batch` for the rules.

        Raises:
            ClosedError: the store was closed, or the loop its database lives
                on is not running.
            InvalidInputError: an operation is malformed (and the others as
                :meth:`batch`).

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from langgraph.store.base import GetOp, PutOp
            >>> from abathur.integrations.langgraph import AbathurStore
            >>> async def demo():
            ...     async with AbathurStore(pathlib.Path(tempfile.mkdtemp()) / "a.db") as store:
            ...         await store.abatch([PutOp(("n",), "k", {"v": 1})])
            ...         return [i.value for i in await store.abatch([GetOp(("n",), "k")])]
            >>> asyncio.run(demo())
            [{'v': 1}]
        """
        plan = self._plan(list(ops))
        loop = self._home()
        if _running_loop() is loop:
            return await self._run(plan)
        if not loop.is_running():
            raise ClosedError("the event loop this store's Abathur lives on is not running")
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._run(plan), loop))

    def close(self) -> None:
        """Close the database if this store opened it; idempotent.

        Raises:
            asyncio.InvalidStateError: called from the store's own event loop.

        Example:
            >>> import tempfile, pathlib
            >>> from abathur.integrations.langgraph import AbathurStore
            >>> store = AbathurStore(pathlib.Path(tempfile.mkdtemp()) / "a.db")
            >>> store.put(("n",), "k", {"v": 1})
            >>> store.close(); store.close()
            >>> store.is_closed
            True
        """
        loop, thread = self._stop()
        if loop is None or thread is None:
            return
        if _running_loop() is loop:  # pragma: no cover - a loop we own runs no user code
            raise asyncio.InvalidStateError("close() called from the store's own event loop")
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()

    async def aclose(self) -> None:
        """Close the database if this store opened it, without blocking the caller's loop.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur.integrations.langgraph import AbathurStore
            >>> async def demo():
            ...     store = AbathurStore(pathlib.Path(tempfile.mkdtemp()) / "a.db")
            ...     await store.aput(("n",), "k", {"v": 1})
            ...     await store.aclose()
            ...     return store.is_closed
            >>> asyncio.run(demo())
            True
        """
        loop, thread = self._stop()
        if loop is None or thread is None:
            return
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._shutdown(), loop))
        loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join)

    def _stop(self) -> tuple[asyncio.AbstractEventLoop | None, threading.Thread | None]:
        with self._lock:
            if self._is_closed or not self._owns:
                self._is_closed = True
                return None, None
            self._is_closed = True
            return self._loop, self._thread

    async def _shutdown(self) -> None:
        async with self._open_lock:
            if self._ab is not None:
                await self._ab.close()

    def __enter__(self) -> AbathurStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> AbathurStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- checking a batch (no database access) ---------------------------------------------

    def _plan(self, ops: list[Op]) -> tuple[list[_Read | None], dict[tuple[str, str], _Put]]:
        reads: list[_Read | None] = []
        puts: dict[tuple[str, str], _Put] = {}
        for op in ops:
            if not isinstance(op, GetOp | SearchOp | ListNamespacesOp | PutOp):
                raise InvalidInputError(f"unknown store operation {_kind(op)}")
            validate_op_namespace(op)
            if isinstance(op, PutOp):
                put = self._check_put(op)
                # Last write wins, at the place of the first (LangGraph's stores do the same).
                puts[(put.namespace, put.key)] = put
                reads.append(None)
            elif isinstance(op, GetOp):
                reads.append(_Read(op, self._namespace(op.namespace), self._key(op.key)))
            elif isinstance(op, SearchOp):
                reads.append(self._check_search(op))
            else:
                reads.append(self._check_listing(op))
        return reads, puts

    def _namespace(self, labels: object) -> str:
        if not isinstance(labels, tuple | list):
            raise InvalidNamespaceError(f"a namespace must be a tuple of strings, got {labels!r}")
        return to_namespace(labels, root=self.root)

    def _key(self, key: object) -> str:
        return check_id(to_key(key), "key")  # type: ignore[arg-type]

    def _check_put(self, op: PutOp) -> _Put:
        if not op.namespace:
            raise InvalidNamespaceError("a put needs a non-empty namespace")
        namespace, key = self._namespace(op.namespace), self._key(op.key)
        if op.value is None:
            return _Put(namespace, key, None, "", False, None)
        if not isinstance(op.value, Mapping):
            raise InvalidInputError(
                f"a LangGraph value must be a dict (or None to delete), got {_kind(op.value)}"
            )
        value = dict(op.value)
        if op.index is not None and op.index is not False:
            paths = _paths(op.index, "index")
        elif op.index is None:
            paths = self._fields
        else:
            paths = []
        ttl = _check_minutes(op.ttl, "ttl")
        text = ""
        if self.index_config is not None and paths:
            text = "\n".join(t for _, path in paths for t in get_text_at_path(value, path))
        limit = self.settings.max_value_bytes
        # What put will write, checked now so a batch with a bad value writes nothing.
        encode(text, what="text to embed", limit=limit)
        encode(self._metadata(value, bool(text), ttl, 0.0, 0.0), what="value", limit=limit)
        return _Put(namespace, key, value, text, bool(text), ttl)

    def _check_search(self, op: SearchOp) -> _Read:
        prefix = self._namespace(op.namespace_prefix)
        limit = _check_count(op.limit, "limit")
        offset = _check_count(op.offset, "offset")
        flt = check_filter(op.filter)
        if op.query is not None and not isinstance(op.query, str):
            raise InvalidInputError(f"query must be a string or None, got {_kind(op.query)}")
        query = (
            op.query if self.index_config is not None and op.query and op.query.strip() else None
        )
        if query is not None and offset + limit > MAX_SEARCH_K:
            raise InvalidInputError(
                f"a search by query returns the best {MAX_SEARCH_K} items at most; "
                f"offset + limit is {offset + limit}"
            )
        return _Read(op, prefix, filter=flt, query=query)

    def _check_listing(self, op: ListNamespacesOp) -> _Read:
        _check_count(op.limit, "limit")
        _check_count(op.offset, "offset")
        if op.max_depth is not None:
            _check_count(op.max_depth, "max_depth", minimum=1)
        for condition in op.match_conditions or ():
            if not isinstance(condition, MatchCondition) or condition.match_type not in (
                "prefix",
                "suffix",
            ):
                raise InvalidInputError(
                    f"match conditions must be MatchCondition('prefix' | 'suffix', path), "
                    f"got {condition!r}"
                )
        return _Read(op, self.root)

    def _metadata(
        self,
        value: Mapping[str, Any],
        indexed: bool,
        ttl: float | None,
        created: float,
        updated: float,
    ) -> dict[str, Any]:
        record: dict[str, Any] = {_INDEX: indexed, _TTL: ttl, _CREATED: created, _UPDATED: updated}
        record.update((_meta_key(k), v) for k, v in value.items())
        return record

    # -- running a batch (on the database's loop) ------------------------------------------

    async def _run(
        self, plan: tuple[list[_Read | None], dict[tuple[str, str], _Put]]
    ) -> list[Result]:
        reads, puts = plan
        ab = await self._db()
        results: list[Result] = []
        for read in reads:
            if read is None:
                results.append(None)
            elif isinstance(read.op, GetOp):
                results.append(await self._get(ab, read))
            elif isinstance(read.op, SearchOp):
                results.append(await self._search(ab, read))
            else:
                results.append(await self._list_namespaces(ab, read.op))
        indexed = False
        for put in puts.values():
            await self._put(ab, put)
            indexed = indexed or put.indexed
        if indexed and self.wait_for_vectors and ab.embeddings.embedder is not None:
            try:
                await ab.embeddings.drain()
            except EmbedderError as exc:
                # The items are stored; abathur's worker embeds them when it can.
                log.warning("langgraph.embed_deferred", error=exc.message)
        return results

    async def _put(self, ab: Abathur, put: _Put) -> None:
        if put.value is None:
            with contextlib.suppress(MemoryNotFoundError):
                await ab.memory.delete(put.namespace, put.key)
            return
        for attempt in range(_RETRIES):
            current = await ab.memory.get(put.namespace, put.key)
            now = time.time()
            created = now if current is None else self._times(current)[0]
            metadata = self._metadata(put.value, put.indexed, put.ttl, created, now)
            try:
                await ab.memory.put(
                    put.namespace,
                    put.key,
                    put.text,
                    metadata=metadata,
                    ttl=None if put.ttl is None else put.ttl * 60,
                    expected_version=0 if current is None else current.version,
                )
                return
            except VersionConflictError:
                # Another writer got in between; read again so created_at stays right.
                if attempt == _RETRIES - 1:
                    raise

    def _times(self, memory: Memory) -> tuple[float, float]:
        meta = memory.metadata
        created, updated = meta.get(_CREATED), meta.get(_UPDATED)
        if isinstance(created, int | float) and isinstance(updated, int | float):
            return float(created), float(updated)
        # Written through abathur's own API: its own timestamps.
        return memory.created_at, memory.updated_at

    def _value(self, stored: Any, metadata: Mapping[str, Any]) -> dict[str, Any]:
        if _CREATED not in metadata:
            # Written through abathur's own API: the value is what was put.
            return stored if isinstance(stored, dict) else {"value": stored}
        return {k: v for mk, v in metadata.items() if (k := _value_key(mk)) is not None}

    def _labels(self, namespace: str) -> tuple[str, ...]:
        labels = from_namespace(namespace, root=self.root)
        return () if labels is None else labels

    async def _refresh(self, ab: Abathur, memory: Memory) -> None:
        ttl = memory.metadata.get(_TTL)
        if not isinstance(ttl, int | float) or memory.expires_at is None:
            return
        ttl_s = ttl * 60
        if time.time() + ttl_s - memory.expires_at < REFRESH_STEP * ttl_s:
            return
        # A conflict means it was rewritten meanwhile, with an expiry of its own.
        with contextlib.suppress(VersionConflictError):
            await ab.memory.put(
                memory.namespace,
                memory.key,
                memory.value,
                type=memory.type,
                metadata=memory.metadata,
                ttl=ttl_s,
                expected_version=memory.version,
            )

    async def _get(self, ab: Abathur, read: _Read) -> Item | None:
        memory = await ab.memory.get(read.namespace, read.key)
        if memory is None:
            return None
        created, updated = self._times(memory)
        item = Item(
            value=self._value(memory.value, memory.metadata),
            key=from_key(memory.key),
            namespace=tuple(read.op.namespace),  # type: ignore[union-attr]
            created_at=_when(created),
            updated_at=_when(updated),
        )
        if read.op.refresh_ttl:  # type: ignore[union-attr]
            await self._refresh(ab, memory)
        return item

    def _search_item(self, memory: Memory | SearchHit, score: float | None) -> SearchItem:
        if isinstance(memory, Memory):
            created, updated = self._times(memory)
        else:
            created = float(memory.metadata.get(_CREATED, 0.0))  # type: ignore[arg-type]
            updated = float(memory.metadata.get(_UPDATED, 0.0))  # type: ignore[arg-type]
        return SearchItem(
            namespace=self._labels(memory.namespace),
            key=from_key(memory.key),
            value=self._value(memory.value, memory.metadata),
            created_at=_when(created),
            updated_at=_when(updated),
            score=score,
        )

    async def _search(self, ab: Abathur, read: _Read) -> list[SearchItem]:
        op: SearchOp = read.op  # type: ignore[assignment]
        if op.limit == 0:
            return []
        pushed = {_meta_key(k): v for k, v in pushdown(read.filter).items()}
        found: list[tuple[Memory | SearchHit, float | None]]
        if read.query is not None:
            found = await self._search_by_query(
                ab, read.query, read.namespace, read.filter, pushed, op
            )
        else:
            memories = await self._search_by_filter(ab, read.namespace, read.filter, pushed, op)
            found = [(m, None) for m in memories]
        if op.refresh_ttl:
            for memory, _ in found:
                if memory.metadata.get(_TTL) is None:
                    continue
                if isinstance(memory, SearchHit):
                    # A hit has no expiry on it: read the memory to know whether to move it.
                    fresh = await ab.memory.get(memory.namespace, memory.key)
                    if fresh is not None:
                        await self._refresh(ab, fresh)
                else:
                    await self._refresh(ab, memory)
        return [self._search_item(memory, score) for memory, score in found]

    async def _search_by_query(
        self,
        ab: Abathur,
        query: str,
        prefix: str,
        flt: dict[str, Any] | None,
        pushed: dict[str, Any],
        op: SearchOp,
    ) -> list[tuple[Memory | SearchHit, float | None]]:
        want = op.offset + op.limit
        k = want
        query = query[:MAX_QUERY_CHARS]
        while True:
            found = await ab.memory.search(
                query, prefix=prefix, filter={**pushed, _INDEX: True}, k=k, mode="vector"
            )
            hits = [h for h in found.hits if matches(self._value(h.value, h.metadata), flt)]
            # Filters abathur could not apply may have dropped some: ask for more.
            if len(hits) >= want or len(found.hits) < k or k >= MAX_SEARCH_K:
                break
            k = min(MAX_SEARCH_K, k * 4)
        # Without vectors (no embedder, or it is down) abathur ranks by keyword:
        # BM25 scores are not similarities, so those hits carry none.
        is_scored = found.mode == "vector"
        return [(h, h.score if is_scored else None) for h in hits[op.offset : want]]

    async def _search_by_filter(
        self,
        ab: Abathur,
        prefix: str,
        flt: dict[str, Any] | None,
        pushed: dict[str, Any],
        op: SearchOp,
    ) -> list[Memory]:
        exact = len(pushed) == len(flt or {})
        # With everything in abathur's filter, its offset is ours; otherwise count matches here.
        at, need = (op.offset, op.limit) if exact else (0, op.offset + op.limit)
        page = min(MAX_LIMIT, max(100, need))
        found: list[Memory] = []
        while len(found) < need:
            batch = await ab.memory.list(prefix, filter=pushed or None, limit=page, offset=at)
            found += [m for m in batch if matches(self._value(m.value, m.metadata), flt)]
            if len(batch) < page:
                break
            at += page
        return found[:need] if exact else found[op.offset : need]

    async def _list_namespaces(self, ab: Abathur, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        conditions: Sequence[MatchCondition] = tuple(op.match_conditions or ())
        literal: tuple[str, ...] = ()
        for condition in conditions:
            if condition.match_type == "prefix":
                head: list[str] = []
                for label in condition.path:
                    if label == "*":
                        break
                    head.append(label)
                if len(head) > len(literal):
                    literal = tuple(head)
        # Only plain prefixes commute with cutting names to max_depth; then abathur cuts.
        plain = all(c.match_type == "prefix" and "*" not in c.path for c in conditions)
        # abathur matches the longest plain prefix; the others must be prefixes of it.
        if plain and any(tuple(c.path) != literal[: len(c.path)] for c in conditions):
            return []
        depth = 1 + op.max_depth if plain and op.max_depth is not None else None
        names: list[str] = await ab.memory.namespaces(
            to_namespace(literal, root=self.root), max_depth=depth, limit=MAX_NAMESPACES
        )
        if len(names) >= MAX_NAMESPACES:
            raise InvalidInputError(
                f"at least {MAX_NAMESPACES} namespaces match; list under a longer prefix "
                "or with a smaller max_depth"
            )
        if plain:
            conditions = ()  # all applied by abathur's prefix
        found = {
            labels
            for name in names
            if (labels := from_namespace(name, root=self.root))
            and all(_matches_condition(c, labels) for c in conditions)
        }
        if op.max_depth is not None:
            found = {labels[: op.max_depth] for labels in found}
        return sorted(found)[op.offset : op.offset + op.limit]


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """The thread of a store that opened its own database: run its loop until closed."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
