"""MemoryService: long-term, versioned memories addressed by (namespace, key).

A memory is ``(namespace, key) -> JSON value`` with a type (``semantic``,
``episodic`` or ``procedural``), a metadata object, an optional TTL and a
version history (DESIGN.md §4). Every write adds one row to ``memories``; the
newest row of a memory has ``is_current = 1``. A version's status is ``live``,
``deleted`` (a tombstone written by :meth:`MemoryService.delete`) or
``superseded`` (written by :meth:`MemoryService.consolidate`, pointing at the
winner). Nothing is ever overwritten, so every change can be undone.

A memory *reads as absent* when its current version is deleted, superseded or
expired (``expires_at <= now``). Expiry is checked on every read path; a
sweeper only ever reclaims space.

Namespaces are colon-separated segments (``user:alice:preferences``). A prefix
matches whole segments only: ``user:al`` covers ``user:al`` and
``user:al:x`` but never ``user:alice``. The match is an index range on
``memories_current`` (``prefix <= ns < prefix + ';'``, as ``';'`` is the
character after ``':'``) plus an exact check, never a ``LIKE``.

Search (:meth:`MemoryService.search`, issue 3) sees exactly the current live
versions: the same transaction that writes a version moves its FTS row
(``memories_fts``), its embedding job and its vector from the version it
replaces to it (:class:`_Indexing`). What is embedded is ``"<key>: <words of
the value>"`` (:func:`memory_text`); the vector partition is the namespace's
first two segments (the tenant, :func:`abathur.search.partition_of`).

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from abathur import Abathur
    >>> async def demo():
    ...     with tempfile.TemporaryDirectory() as tmp:
    ...         async with Abathur.open(pathlib.Path(tmp) / "m.db") as ab:
    ...             await ab.memory.put("user:alice:preferences", "language", "fr")
    ...             await ab.memory.put("user:alice:preferences", "language", "en")
    ...             return [m.value for m in await ab.memory.history(
    ...                 "user:alice:preferences", "language")]
    >>> asyncio.run(demo())
    ['fr', 'en']
"""

from __future__ import annotations

import builtins
import json
import math
import time
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, get_args

import numpy as np
import structlog
from numpy.typing import NDArray

from abathur import audit
from abathur.analytics import CallRecorder, recorded
from abathur.costs import estimate_tokens
from abathur.embeddings.queue import MAX_EMBED_CHARS, cancel, content_hash, enqueue
from abathur.errors import (
    EmbedderError,
    InvalidInputError,
    InvalidMemoryTypeError,
    InvalidNamespaceError,
    MemoryNotFoundError,
    VersionConflictError,
)
from abathur.models import (
    ConsolidationAction,
    ConsolidationReport,
    Memory,
    MemoryContext,
    MemoryRef,
    MemoryStatus,
    MemoryType,
    NamedCount,
    PurgeReport,
    SearchHit,
    SearchMode,
    SearchResult,
)
from abathur.search import (
    MAX_SEARCH_K,
    IndexItem,
    IndexKind,
    VectorFilter,
    check_min_score,
    check_search_args,
    outcome,
    partition_of,
    query_vector,
    query_words,
    rank,
    relevance,
    resolve_mode,
)
from abathur.stores import Backend, Transaction
from abathur.stores.memories import MemoryRow, MemoryVersion, MetadataValue
from abathur.stores.queue import QueuedJob, QueueStore
from abathur.stores.search import MemoryText
from abathur.values import (
    INT64_MAX,
    INT64_MIN,
    check_id,
    check_int,
    check_text,
    decode,
    encode,
    show_number,
)

if TYPE_CHECKING:
    from abathur.costs import CostService
    from abathur.embeddings.queue import EmbeddingService

__all__ = [
    "CONTEXT_MIN_SCORE",
    "MAX_LIMIT",
    "MAX_NAMESPACE_LENGTH",
    "MAX_SEARCH_K",
    "MEMORY_KIND",
    "MemoryService",
    "build_keyword_index",
    "check_namespace",
    "index",
    "memory_text",
    "rebuild_keyword_index",
    "unindex",
]

log = structlog.get_logger(__name__)

MAX_NAMESPACE_LENGTH = 512
MAX_LIMIT = 10_000
#: The relevance floor ``memory.context`` applies by default (``min_score="auto"``),
#: per mode used: a cosine similarity for vector and hybrid (bundled MiniLM), a
#: share of the query's words for keyword. Chosen on LoCoMo (dev half) by
#: benchmarks/relevance_floor.py as the highest floor keeping 97.5% of context's
#: recall: it halves what is packed for a prompt with nothing relevant in scope
#: (benchmarks/README.md has the figures); unrelated facts score below 0.2.
#: Another embedder has another cosine scale: pass ``min_score`` then.
CONTEXT_MIN_SCORE: dict[str, float] = {"vector": 0.3, "hybrid": 0.3, "keyword": 0.25}
MEMORY_TYPES: tuple[str, ...] = get_args(MemoryType)

_SEP = ":"
# The character right after ':' in code-point (and UTF-8 byte) order: every
# namespace under 'p:' sorts in ['p:', 'p;'), so one index range finds them all.
_AFTER_SEP = chr(ord(_SEP) + 1)

def _memory(row: MemoryRow | MemoryVersion) -> Memory:
    # Rows come from our own schema (CHECK constraints, JSON we encoded), so
    # skipping validation is safe, and it is most of a get's cost otherwise.
    (namespace, key, version, type_, value, metadata, status, by_ns, by_key,
     first_created_at, created_at, expires_at) = row[:12]
    return Memory.model_construct(
        namespace=namespace,
        key=key,
        value=decode(value),
        type=type_,
        metadata=decode(metadata),
        version=version,
        status=status,
        superseded_by=(
            None if by_ns is None else MemoryRef.model_construct(namespace=by_ns, key=by_key)
        ),
        created_at=first_created_at,
        updated_at=created_at,
        expires_at=expires_at,
    )


def _write_version(
    tx: Transaction,
    current: MemoryRow | None,
    index: _Indexing,
    *,
    namespace: str,
    key: str,
    type_: str,
    value: str,
    metadata: str,
    status: MemoryStatus,
    now: float,
    expires_at: float | None,
    action: str = "memory.put",
    detail: dict[str, Any] | None = None,
    superseded_by: MemoryRef | None = None,
) -> Memory:
    """Append the next version of (namespace, key), make it current, and move the
    search indexes (FTS row, embedding job, vector) from the old version to it.

    The audit record ``action`` (detail: the version, plus ``detail``) is
    written with it and covers the new row (abathur.audit.COVERED).
    """
    version = 1 if current is None else current.version + 1
    first_created_at = now if current is None else current.first_created_at
    if current is not None:
        tx.memories.retire_current(namespace, key)
    row = MemoryVersion(
        namespace, key, version, type_, value, metadata, status,
        None if superseded_by is None else superseded_by.namespace,
        None if superseded_by is None else superseded_by.key,
        first_created_at, now, expires_at,
    )
    seq = audit.next_seq(tx)
    new_id = tx.memories.insert_current(row, audit_seq=seq)
    audit.append(tx, action, "memory", _entity(namespace, key),
                 {"version": version, **(detail or {})}, at=now, content=("memories", tuple(row)))
    # The indexes hold exactly the current live versions (expired ones until swept).
    if current is not None and current.status == "live":
        index.remove(tx, current.id)
    if status == "live":
        index.add(tx, new_id, namespace, key, type_, decode(value), expires_at, now)
    return _memory(row)


# ---------------------------------------------------------------------------
# Search indexes: what a memory looks like to FTS5 and to the embedder.
# ---------------------------------------------------------------------------

TYPE_CODES: dict[str, int] = {name: code for code, name in enumerate(MEMORY_TYPES)}

VEC_TABLE = "memories_vec"


def memory_text(value: Any) -> str:
    """The words of a value for search: strings as they are, object keys, numbers.

    Example:
        >>> from abathur.memory import memory_text
        >>> memory_text({"value": "French", "since": 2020, "tags": ["fluent", None, True]})
        'value French since 2020 tags fluent true'
    """
    parts: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            parts.append(item)
        elif isinstance(item, dict):
            for name, sub in reversed(item.items()):
                stack.append(sub)
                stack.append(name)
        elif isinstance(item, list):
            stack.extend(reversed(item))
        elif item is not None:
            parts.append(json.dumps(item))
    return " ".join(parts)


def _index_item(
    item_id: int, namespace: str, key: str, type_: str, text: str, expires_at: float | None
) -> IndexItem:
    # The key is part of what is embedded: 'language' says what 'French' is about.
    return IndexItem(
        id=item_id,
        text=f"{key}: {text}"[:MAX_EMBED_CHARS],
        scope=partition_of(namespace),
        type_code=TYPE_CODES[type_],
        expires=math.inf if expires_at is None else expires_at,
    )


def _item(row: MemoryRow) -> IndexItem:
    text = memory_text(decode(row.value))
    return _index_item(row.id, row.namespace, row.key, row.type, text, row.expires_at)


def _load_items(tx: Transaction, ids: Sequence[int], now: float) -> list[IndexItem]:
    return [_item(row) for row in tx.memories.current_live(now=now, ids=ids)]


def _live_items(tx: Transaction) -> Iterator[IndexItem]:
    for row in tx.memories.current_live(now=time.time()):
        yield _item(row)


MEMORY_KIND = IndexKind(name="memory", vec_table=VEC_TABLE, load=_load_items, live=_live_items)


def unindex(tx: Transaction, item_id: int) -> None:
    """Take the live version ``memories.id = item_id`` out of every search index.

    For code that removes or archives memory rows outside MemoryService (a
    sweeper, archival): call it in the same transaction, before the row goes.
    """
    _Indexing(tx, configured=False).remove(tx, item_id)


def index(tx: Transaction, item_id: int) -> bool:
    """Put the current live version ``memories.id = item_id`` back in every search index.

    The reverse of :func:`unindex`, for code that puts memory rows back
    (archive restore), in the same transaction. Returns True when an
    embedding job was queued (wake the worker); False when the cache already
    had the vector, the file keeps no vectors, or the row is not current and live.
    """
    row = next(iter(tx.memories.current_live(ids=[item_id])), None)
    if row is None:
        return False
    indexing = _Indexing(tx, configured=False)
    indexing.add(
        tx, item_id, row.namespace, row.key, row.type, decode(row.value), row.expires_at,
        time.time(),
    )
    return indexing.enqueued > 0


class _Indexing:
    """Keeps memories_fts, the embedding queue and memories_vec in step with one write.

    Made inside the write transaction: whether vectors are kept at all (an
    embedder is configured in this process or recorded in the file) is read
    from the file each time, so a write from any process keeps them right.
    """

    __slots__ = ("cached", "enqueued", "has_table", "held", "model", "vectors")

    def __init__(self, tx: Transaction, *, configured: bool, held: bool = False) -> None:
        state = tx.search.vector_index_state(VEC_TABLE)
        self.model: str | None = state.model
        self.has_table = state.has_table and state.keeps_vectors
        self.vectors = configured or state.keeps_vectors
        self.held = held  # a probe's write: its jobs wait for the probe's own drain
        self.enqueued = 0
        self.cached: list[str] = []  # namespaces whose vector came from the cache (issue 4)

    def remove(self, tx: Transaction, item_id: int) -> None:
        tx.search.remove_memory_text(item_id)
        # A version has a queued job or a vector, never both.
        if self.vectors and not cancel(tx, MEMORY_KIND.name, item_id) and self.has_table:
            tx.search.defer_vector_delete(VEC_TABLE, item_id)

    def add(
        self, tx: Transaction, item_id: int, namespace: str, key: str, type_: str,
        value: Any, expires_at: float | None, now: float,
    ) -> None:
        text = memory_text(value)
        tx.search.add_memory_text(MemoryText(item_id, namespace, key, text))
        if not self.vectors:
            return
        item = _index_item(item_id, namespace, key, type_, text, expires_at)
        text_hash = content_hash(item.text)
        # A text embedded before (a restore, an unchanged value) needs no job.
        if self.has_table and tx.search.insert_vector(
            VEC_TABLE, item, model=self.model or "", content_hash=text_hash
        ):
            self.cached.append(namespace)
            return
        enqueue(tx, MEMORY_KIND.name, item_id, text_hash, now, held=self.held)
        self.enqueued += 1


def _check_expected(
    namespace: str, key: str, expected: int | None, current: MemoryRow | None, now: float
) -> None:
    """Optimistic concurrency: ``expected`` must name the current version.

    ``0`` means "create only": it matches when the memory reads as absent
    (never written, deleted, superseded or expired), like SET NX. Any other
    number must equal the newest version number, whatever its status.
    """
    if expected is None:
        return
    actual = None if current is None else current.version
    if expected == actual:
        return
    if expected == 0 and (current is None or current.is_absent(now)):
        return
    raise VersionConflictError(namespace, key, expected, actual)


def rebuild_keyword_index(tx: Transaction) -> int:
    """Rebuild ``memories_fts`` from the current live memories; return the rows indexed.

    Runs in the caller's write transaction. ``memories_fts`` is contentless,
    so FTS5's own ``'rebuild'`` cannot be used: this is the way to repair it.
    """
    return tx.search.rebuild_memory_text(
        MemoryText(row.id, row.namespace, row.key, memory_text(decode(row.value)))
        for row in tx.memories.current_live()
    )

def _entity(namespace: str, key: str) -> str:
    return f"{namespace}/{key}"


# ---------------------------------------------------------------------------
# Purge (issue 11): every version under a prefix, and everything naming it.
# Ranges bind like memory.list: lo, hi, eq, ge (whole segments).
# ---------------------------------------------------------------------------

# Beyond every namespace (at most MAX_NAMESPACE_LENGTH characters): purge everything.
_TOP = chr(0x10FFFF) * (MAX_NAMESPACE_LENGTH + 1)


def _audit_bounds(prefix: str | None) -> tuple[str, str, str, str]:
    """The audit entity_id bounds of the memories under ``prefix`` (None: all)."""
    if prefix is None:
        return ("", _TOP, "", _TOP)
    return (prefix + "/", prefix + "0", prefix + _SEP, prefix + _AFTER_SEP)


def _purge(tx: Transaction, prefix: str | None, *, dry_run: bool) -> PurgeReport:
    """Erase every version under ``prefix`` and all that names it, in the caller's transaction.

    In a dry run (a read transaction) it only counts.
    """
    rows = tx.memories.versions_under(prefix)
    item_ids = [row.id for row in rows]
    # What each version embedded (or would have): the cache keys it may have left.
    texts = sorted({content_hash(_item(row).text) for row in rows})
    pointing_in = tx.memories.pointing_into(prefix)
    found = tx.memories.purge_counts(prefix, item_ids, texts)
    counts = {
        "memories": len(rows),
        "memories_fts": found.keyword_rows,
        "vectors": found.vectors,
        "embedding_queue": found.embedding_jobs,
        "embedding_cache": found.cached_vectors,
        "archive": found.archived,
        "metrics": found.metrics,
        "versions_unlinked": len(pointing_in),
    }
    records = audit.memory_records(tx, _audit_bounds(prefix))
    if dry_run:
        return PurgeReport(scope="memory", is_dry_run=True, counts=counts, redacted=len(records))
    tx.memories.erase(prefix, item_ids, texts)
    now = time.time()
    for row in pointing_in:
        # The version keeps its status; only the name of the purged winner goes,
        # under a new record covering the row as it is now.
        seq = audit.next_seq(tx)
        tx.memories.unlink(row.id, audit_seq=seq)
        content = (*row[:7], None, None, row.first_created_at, row.created_at, row.expires_at)
        audit.append(
            tx,
            "memory.unlink",
            "memory",
            _entity(row.namespace, row.key),
            {"version": row.version},
            at=now,
            content=("memories", content),
        )
    # A record a surviving row still names stays: only an odd '/' in a
    # namespace could make an entity_id fall in the range without being purged.
    kept = tx.memories.audit_seqs_in_use(records)
    redacted, seq = audit.record_purge(
        tx, "memory.purge", "" if prefix is None else prefix, counts, records - kept
    )
    return PurgeReport(
        scope="memory", is_dry_run=False, counts=counts, redacted=redacted, audit_seq=seq
    )


# ---------------------------------------------------------------------------
# Validation (runs before any SQL).
# ---------------------------------------------------------------------------


def _kind(value: object) -> str:
    return type(value).__name__


def check_namespace(namespace: object, what: str = "namespace") -> str:
    """Return ``namespace`` if it is valid, else raise :class:`InvalidNamespaceError`.

    Rules: a ``str`` of 1..512 characters made of ``:``-separated segments,
    with no empty segment, no segment with leading or trailing whitespace and
    no control characters anywhere.

    Args:
        namespace: the value to check.
        what: how the message names it (``"namespace"`` or ``"prefix"``).

    Returns:
        The namespace, unchanged.

    Raises:
        InvalidNamespaceError: the value breaks one of the rules; the message
            names the value and the rule.

    Example:
        >>> from abathur.memory import check_namespace
        >>> check_namespace("user:alice:preferences")
        'user:alice:preferences'
        >>> check_namespace("user::x")
        Traceback (most recent call last):
        ...
        abathur.errors.InvalidNamespaceError: namespace 'user::x' has an empty segment
    """
    if not isinstance(namespace, str):
        raise InvalidNamespaceError(f"{what} must be a string, got {_kind(namespace)}")
    if not namespace:
        raise InvalidNamespaceError(f"{what} must not be empty")
    if len(namespace) > MAX_NAMESPACE_LENGTH:
        raise InvalidNamespaceError(
            f"{what} {namespace[:40]!r}... is {len(namespace)} characters long; "
            f"the limit is {MAX_NAMESPACE_LENGTH}"
        )
    if any(unicodedata.category(ch) == "Cc" for ch in namespace):
        raise InvalidNamespaceError(f"{what} {namespace!r} contains a control character")
    check_text(namespace, what, error=InvalidNamespaceError)
    for segment in namespace.split(_SEP):
        if not segment:
            raise InvalidNamespaceError(f"{what} {namespace!r} has an empty segment")
        if segment != segment.strip():
            raise InvalidNamespaceError(
                f"{what} {namespace!r} has a segment {segment!r} with leading or trailing "
                "whitespace"
            )
    return namespace


def _check_type(value: object) -> str:
    if not isinstance(value, str) or value not in MEMORY_TYPES:
        raise InvalidMemoryTypeError(
            f"memory type {value!r} is not one of {', '.join(MEMORY_TYPES)}"
        )
    return value


def _check_ttl(ttl: object) -> float | None:
    if ttl is None:
        return None
    if isinstance(ttl, timedelta):
        # total_seconds() of any timedelta is finite (at most ~8.6e13 s), so
        # the only rule left to enforce is "positive".
        seconds = ttl.total_seconds()
        if seconds <= 0:
            raise InvalidInputError(f"ttl must be a positive duration, got {ttl!r}")
        return seconds
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise InvalidInputError(
            f"ttl must be a number of seconds, a datetime.timedelta or None, got {_kind(ttl)}"
        )
    # Integers follow the one rule for integers (64 bits); 10**400 would
    # otherwise reach float() and its OverflowError.
    seconds = float(ttl) if INT64_MIN <= ttl <= INT64_MAX else math.inf
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidInputError(
            f"ttl must be a positive, finite number of seconds, got {show_number(ttl)}"
        )
    return seconds


def _encode_metadata(metadata: object, limit: int) -> str:
    if metadata is None:
        return "{}"
    if not isinstance(metadata, Mapping):
        raise InvalidInputError(f"metadata must be a dict (a JSON object), got {_kind(metadata)}")
    return encode(dict(metadata), what="metadata", limit=limit)


def _check_filter(filter_: object) -> dict[str, MetadataValue]:
    """``filter_`` as a metadata filter (key -> value) a store can match, or raise."""
    if filter_ is None:
        return {}
    if not isinstance(filter_, Mapping):
        raise InvalidInputError(
            f"filter must be a dict of metadata key -> value, got {_kind(filter_)}"
        )
    checked: dict[str, MetadataValue] = {}
    for key, value in filter_.items():
        if not isinstance(key, str):
            raise InvalidInputError(f"filter key {key!r} must be a string, got {_kind(key)}")
        check_text(key, "filter key")
        if '"' in key:
            raise InvalidInputError(
                f"filter key {key!r} contains a double quote, which a metadata filter cannot "
                "name"
            )
        if value is None or isinstance(value, bool):
            pass
        elif isinstance(value, int | float | str):
            if isinstance(value, float) and not math.isfinite(value):
                raise InvalidInputError(f"filter value for {key!r} must be finite, got {value!r}")
            if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
                # Such an integer is refused at write time too, so no memory holds one.
                raise InvalidInputError(
                    f"filter value for {key!r} is an integer outside SQLite's 64-bit range "
                    f"({show_number(value)})"
                )
            if isinstance(value, str):
                check_text(value, f"filter value for {key!r}")
        else:
            raise InvalidInputError(
                f"filter value for {key!r} must be a str, int, float, bool or None, "
                f"got {_kind(value)}"
            )
        checked[key] = value
    return checked


# ---------------------------------------------------------------------------
# Consolidation planning (shared by the dry run and the real run).
# ---------------------------------------------------------------------------


class _Plan(NamedTuple):
    examined: int
    # reason, loser, winner
    actions: list[tuple[Literal["duplicate", "conflict"], MemoryRow, MemoryRow]]


def _newest_first(row: MemoryRow) -> tuple[float, str, str]:
    return (-row.created_at, row.namespace, row.key)


def _plan_consolidation(tx: Transaction, prefix: str, now: float) -> _Plan:
    rows = tx.memories.list_current(prefix, now=now)
    actions: list[tuple[Literal["duplicate", "conflict"], MemoryRow, MemoryRow]] = []

    duplicates: dict[tuple[str, str], list[MemoryRow]] = {}
    for row in rows:
        canonical = json.dumps(decode(row.value), sort_keys=True, ensure_ascii=False)
        duplicates.setdefault((row.type, canonical), []).append(row)
    survivors: list[MemoryRow] = []
    for group in duplicates.values():
        winner, *losers = sorted(group, key=_newest_first)
        survivors.append(winner)
        actions += [("duplicate", loser, winner) for loser in losers]

    # After step 1 no two survivors of one type share a value, so every other
    # member of a (key, type) group holds a different value: a conflict.
    conflicts: dict[tuple[str, str], list[MemoryRow]] = {}
    for row in survivors:
        conflicts.setdefault((row.key, row.type), []).append(row)
    for group in conflicts.values():
        winner, *losers = sorted(group, key=_newest_first)
        actions += [("conflict", loser, winner) for loser in losers]

    actions.sort(key=lambda a: (a[0] != "duplicate", a[1].namespace, a[1].key))
    return _Plan(len(rows), actions)


class MemoryService:
    """Versioned long-term memories: ``ab.memory``.

    Every write (put, delete, restore, consolidate) adds a version and an
    audit record in one transaction; a failed call changes nothing.

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur import Abathur
        >>> async def demo():
        ...     with tempfile.TemporaryDirectory() as tmp:
        ...         async with Abathur.open(pathlib.Path(tmp) / "m.db") as ab:
        ...             m = await ab.memory.put("user:alice", "lang", {"value": "fr"})
        ...             return m.version, (await ab.memory.get("user:alice", "lang")).value
        >>> asyncio.run(demo())
        (1, {'value': 'fr'})
    """

    def __init__(
        self,
        db: Backend,
        embeddings: EmbeddingService | None = None,
        *,
        costs: CostService | None = None,
        recorder: CallRecorder | None = None,
    ) -> None:
        self._db = db
        self._embeddings = embeddings
        self._costs = costs  # context() reports the tokens it served to it
        # Times each public call (analytics.recorded); purge() also clears its
        # pending namespace counts.
        self.recorder = recorder

    def _indexing(self, tx: Transaction) -> _Indexing:
        configured = self._embeddings is not None and self._embeddings.is_configured
        held = self._embeddings is not None and self._embeddings.is_probe
        return _Indexing(tx, configured=configured, held=held)

    def _wrote(self, index: _Indexing) -> None:
        if index.enqueued and self._embeddings is not None:
            self._embeddings.notify()
        if index.cached and index.model and self._embeddings is not None:
            self._embeddings.note_cache_hits(index.model, index.cached)

    @recorded("memory.put", access="write")
    async def put(
        self,
        namespace: str,
        key: str,
        value: Any,
        *,
        type: MemoryType = "semantic",
        metadata: dict[str, Any] | None = None,
        ttl: float | timedelta | None = None,
        expected_version: int | None = None,
    ) -> Memory:
        """Write a new version of the memory at (namespace, key).

        The new version is the current version + 1 (1 for a new memory);
        numbering continues after a delete or an expiry, and the memory's
        ``created_at`` stays the time version 1 was written.

        Args:
            namespace: colon-separated segments, e.g. ``"user:alice:preferences"``.
            key: the memory's name within the namespace.
            value: any JSON value.
            type: ``"semantic"``, ``"episodic"`` or ``"procedural"``.
            metadata: a JSON object (``dict`` with ``str`` keys) to filter on.
            ttl: how long until the memory expires (reads as absent): seconds
                (int or float) or a :class:`datetime.timedelta`; ``None``: never.
            expected_version: write only if the current version is this one;
                ``0`` writes only if the memory reads as absent (create-only).

        Returns:
            The version written.

        Raises:
            InvalidNamespaceError: the namespace breaks a namespace rule.
            InvalidIdError: the key is blank, padded, too long or has control characters.
            InvalidMemoryTypeError: ``type`` is not one of the three types.
            ValueNotSerializableError: value or metadata is not JSON.
            ValueTooLargeError: value or metadata is over ``max_value_bytes``.
            InvalidInputError: metadata is not a dict, ttl is not a positive
                number of seconds or timedelta, or expected_version is not an
                int >= 0.
            VersionConflictError: ``expected_version`` is not the current
                version; nothing was written.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         async with Abathur.open(pathlib.Path(tmp) / "m.db") as ab:
            ...             m = await ab.memory.put("user:alice", "lang", "fr", expected_version=0)
            ...             m = await ab.memory.put("user:alice", "lang", "en",
            ...                                     metadata={"source": "chat"},
            ...                                     expected_version=m.version)
            ...             return m.version, m.value, m.metadata
            >>> asyncio.run(demo())
            (2, 'en', {'source': 'chat'})
        """
        check_namespace(namespace)
        check_id(key, "memory key")
        type_ = _check_type(type)
        limit = self._db.settings.max_value_bytes
        value_json = encode(value, what="memory value", limit=limit)
        metadata_json = _encode_metadata(metadata, limit)
        ttl_s = _check_ttl(ttl)
        if expected_version is not None:
            check_int(expected_version, "expected_version", minimum=0)

        def write(tx: Transaction) -> tuple[Memory, _Indexing]:
            now = time.time()
            current = tx.memories.current(namespace, key)
            _check_expected(namespace, key, expected_version, current, now)
            index = self._indexing(tx)
            memory = _write_version(
                tx, current, index, namespace=namespace, key=key, type_=type_,
                value=value_json, metadata=metadata_json, status="live", now=now,
                expires_at=None if ttl_s is None else now + ttl_s, action="memory.put",
            )
            return memory, index

        memory, index = await self._db.write(write)
        self._wrote(index)
        return memory

    @recorded("memory.get", access="read")
    async def get(self, namespace: str, key: str) -> Memory | None:
        """The current version of a memory, or ``None`` if it reads as absent.

        Args:
            namespace: the memory's namespace.
            key: the memory's key.

        Returns:
            The live, unexpired current version, or ``None`` when the memory
            never existed, was deleted or superseded, or has expired.

        Raises:
            InvalidNamespaceError: the namespace breaks a namespace rule.
            InvalidIdError: the key is not a valid id.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         async with Abathur.open(pathlib.Path(tmp) / "m.db") as ab:
            ...             await ab.memory.put("user:alice", "lang", "fr")
            ...             found = await ab.memory.get("user:alice", "lang")
            ...             return found.value, await ab.memory.get("user:alice", "nope")
            >>> asyncio.run(demo())
            ('fr', None)
        """
        check_namespace(namespace)
        check_id(key, "memory key")
        row = await self._db.read(lambda tx: tx.memories.current(namespace, key))
        if row is None or row.is_absent(time.time()):
            return None
        return _memory(row)

    @recorded("memory.history", access="read")
    async def history(self, namespace: str, key: str) -> list[Memory]:
        """Every version of a memory, oldest first.

        Deleted and superseded versions are included with their ``status``
        and ``superseded_by``. An expired memory has no history: once its
        current version expires it is gone on every read path.

        Args:
            namespace: the memory's namespace.
            key: the memory's key.

        Returns:
            The versions, oldest first; ``[]`` if the memory never existed or
            its current version has expired.

        Raises:
            InvalidNamespaceError: the namespace breaks a namespace rule.
            InvalidIdError: the key is not a valid id.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         async with Abathur.open(pathlib.Path(tmp) / "m.db") as ab:
            ...             await ab.memory.put("user:alice", "lang", "fr")
            ...             await ab.memory.delete("user:alice", "lang")
            ...             versions = await ab.memory.history("user:alice", "lang")
            ...             return [(m.version, m.status) for m in versions]
            >>> asyncio.run(demo())
            [(1, 'live'), (2, 'deleted')]
        """
        check_namespace(namespace)
        check_id(key, "memory key")
        rows = await self._db.read(lambda tx: tx.memories.history(namespace, key))
        if not rows or rows[-1].is_expired(time.time()):
            return []
        return [_memory(row) for row in rows]

    @recorded("memory.list", access="read")
    async def list(
        self,
        prefix: str,
        *,
        type: MemoryType | None = None,
        filter: Mapping[str, str | int | float | bool | None] | None = None,
        limit: int = 100,
        offset: int = 0,
        include_deleted: bool = False,
    ) -> list[Memory]:
        """Live, unexpired memories in ``prefix`` or below it, by (namespace, key).

        The prefix matches whole segments: ``"user:al"`` lists ``user:al`` and
        ``user:al:notes`` but never ``user:alice``; ``"acme"`` never lists
        ``acme-corp``.

        Args:
            prefix: a namespace; memories in it and in namespaces under it are listed.
            type: only memories of this type.
            filter: metadata key -> str/int/float/bool/None; a memory is listed
                only if every key is present in its metadata with an equal
                value (numbers compare as numbers; ``True`` never equals ``1``).
            limit: at most this many (1..10000).
            offset: skip this many first.
            include_deleted: also list memories whose current version is a
                tombstone (``status == "deleted"``) or ``"superseded"``: what
                :meth:`restore` can bring back. Expired memories never are.

        Returns:
            The current versions, ordered by (namespace, key).

        Raises:
            InvalidNamespaceError: the prefix breaks a namespace rule.
            InvalidMemoryTypeError: ``type`` is not one of the three types.
            InvalidInputError: the filter is not a dict of scalars, a filter key
                has a double quote, limit/offset are out of range, or
                include_deleted is not a bool.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         async with Abathur.open(pathlib.Path(tmp) / "m.db") as ab:
            ...             await ab.memory.put("user:alice:prefs", "lang", "fr",
            ...                                 metadata={"source": "chat"})
            ...             await ab.memory.put("user:alice", "name", "Alice")
            ...             await ab.memory.put("user:alicia", "name", "Alicia")
            ...             everything = await ab.memory.list("user:alice")
            ...             from_chat = await ab.memory.list("user:alice",
            ...                                              filter={"source": "chat"})
            ...             await ab.memory.delete("user:alice", "name")
            ...             with_deleted = await ab.memory.list("user:alice", include_deleted=True)
            ...             return ([(m.namespace, m.key) for m in everything],
            ...                     [m.key for m in from_chat],
            ...                     [(m.key, m.status) for m in with_deleted])
            >>> asyncio.run(demo())
            ([('user:alice', 'name'), ('user:alice:prefs', 'lang')], ['lang'],
             [('name', 'deleted'), ('lang', 'live')])
        """
        check_namespace(prefix, "prefix")
        type_ = None if type is None else _check_type(type)
        metadata = _check_filter(filter)
        check_int(limit, "limit", minimum=1, maximum=MAX_LIMIT)
        check_int(offset, "offset", minimum=0)
        if not isinstance(include_deleted, bool):
            raise InvalidInputError(
                f"include_deleted must be a bool, got {_kind(include_deleted)}"
            )
        now = time.time()
        rows = await self._db.read(lambda tx: tx.memories.list_current(
            prefix, now=now, type=type_, metadata=metadata, limit=limit, offset=offset,
            include_deleted=include_deleted,
        ))
        return [_memory(row) for row in rows]

    @recorded("memory.delete", access="write")
    async def delete(
        self, namespace: str, key: str, *, expected_version: int | None = None
    ) -> Memory:
        """Delete a memory by writing a tombstone version (undo with :meth:`restore`).

        The tombstone keeps the value, type, metadata and expiry of the version
        it deletes, so a restore brings them back.

        Args:
            namespace: the memory's namespace.
            key: the memory's key.
            expected_version: delete only if the current version is this one.

        Returns:
            The tombstone (``status == "deleted"``).

        Raises:
            InvalidNamespaceError: the namespace breaks a namespace rule.
            InvalidIdError: the key is not a valid id.
            InvalidInputError: expected_version is not an int >= 0.
            VersionConflictError: ``expected_version`` is not the current version.
            MemoryNotFoundError: the memory reads as absent (never written,
                already deleted, superseded or expired).

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         async with Abathur.open(pathlib.Path(tmp) / "m.db") as ab:
            ...             await ab.memory.put("user:alice", "lang", "fr")
            ...             gone = await ab.memory.delete("user:alice", "lang", expected_version=1)
            ...             after = await ab.memory.get("user:alice", "lang")
            ...             return gone.version, gone.status, after
            >>> asyncio.run(demo())
            (2, 'deleted', None)
        """
        check_namespace(namespace)
        check_id(key, "memory key")
        if expected_version is not None:
            check_int(expected_version, "expected_version", minimum=0)

        def write(tx: Transaction) -> Memory:
            now = time.time()
            current = tx.memories.current(namespace, key)
            _check_expected(namespace, key, expected_version, current, now)
            if current is None or current.is_absent(now):
                raise MemoryNotFoundError(
                    f"memory {namespace!r}/{key!r} does not exist (or is already deleted, "
                    "superseded or expired)"
                )
            tombstone = _write_version(
                tx, current, self._indexing(tx), namespace=namespace, key=key,
                type_=current.type, value=current.value, metadata=current.metadata,
                status="deleted", now=now, expires_at=current.expires_at, action="memory.delete",
            )
            return tombstone

        return await self._db.write(write)

    @recorded("memory.restore", access="write")
    async def restore(self, namespace: str, key: str) -> Memory:
        """Bring back a deleted or superseded memory as a new live version.

        The new version has the value, type, metadata and expiry of the
        deleted (or superseded) one. Restoring a live memory is a no-op that
        returns it unchanged; an expired memory is gone and cannot be restored.

        Args:
            namespace: the memory's namespace.
            key: the memory's key.

        Returns:
            The live current version.

        Raises:
            InvalidNamespaceError: the namespace breaks a namespace rule.
            InvalidIdError: the key is not a valid id.
            MemoryNotFoundError: the memory never existed or has expired.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         async with Abathur.open(pathlib.Path(tmp) / "m.db") as ab:
            ...             await ab.memory.put("user:alice", "lang", "fr")
            ...             await ab.memory.delete("user:alice", "lang")
            ...             back = await ab.memory.restore("user:alice", "lang")
            ...             return back.version, back.status, back.value
            >>> asyncio.run(demo())
            (3, 'live', 'fr')
        """
        check_namespace(namespace)
        check_id(key, "memory key")

        def write(tx: Transaction) -> tuple[Memory, _Indexing | None]:
            now = time.time()
            current = tx.memories.current(namespace, key)
            if current is None:
                raise MemoryNotFoundError(f"memory {namespace!r}/{key!r} never existed")
            if current.is_expired(now):
                raise MemoryNotFoundError(
                    f"memory {namespace!r}/{key!r} expired at {current.expires_at}; an expired "
                    "memory cannot be restored"
                )
            if current.status == "live":
                return _memory(current), None
            index = self._indexing(tx)
            restored = _write_version(
                tx, current, index, namespace=namespace, key=key, type_=current.type,
                value=current.value, metadata=current.metadata, status="live", now=now,
                expires_at=current.expires_at, action="memory.restore",
                detail={"from": current.status},
            )
            return restored, index

        restored, index = await self._db.write(write)
        if index is not None:
            self._wrote(index)
        return restored

    @recorded("memory.namespaces", access="read")
    async def namespaces(
        self, prefix: str | None = None, *, max_depth: int | None = None, limit: int = 1000
    ) -> builtins.list[str]:
        """Namespaces holding at least one live, unexpired memory, sorted.

        Args:
            prefix: only this namespace and those under it (whole segments);
                ``None``: all.
            max_depth: cut each namespace to its first ``max_depth`` segments
                (then drop duplicates); ``None``: full names.
            limit: at most this many (1..10000).

        Returns:
            Distinct namespaces in sorted order.

        Raises:
            InvalidNamespaceError: the prefix breaks a namespace rule.
            InvalidInputError: max_depth is not an int >= 1, or limit is out of range.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         async with Abathur.open(pathlib.Path(tmp) / "m.db") as ab:
            ...             await ab.memory.put("user:alice:prefs", "lang", "fr")
            ...             await ab.memory.put("user:bob", "lang", "en")
            ...             return (await ab.memory.namespaces("user"),
            ...                     await ab.memory.namespaces(max_depth=1))
            >>> asyncio.run(demo())
            (['user:alice:prefs', 'user:bob'], ['user'])
        """
        if prefix is not None:
            check_namespace(prefix, "prefix")
        if max_depth is not None:
            check_int(max_depth, "max_depth", minimum=1)
        check_int(limit, "limit", minimum=1, maximum=MAX_LIMIT)
        now = time.time()
        # Cutting names to max_depth can merge them and change their order
        # ('a:b!x' < 'a:b:c' but 'a:b' < 'a:b!x'), so the limit is applied after.
        sql_limit = limit if max_depth is None else None
        names = await self._db.read(
            lambda tx: tx.memories.namespaces(prefix, now=now, limit=sql_limit)
        )
        if max_depth is not None:
            names = sorted({_SEP.join(name.split(_SEP)[:max_depth]) for name in names})
        return names[:limit]

    @recorded("memory.namespace_counts", access="read")
    async def namespace_counts(
        self, prefix: str | None = None, *, limit: int = 1000
    ) -> builtins.list[NamedCount]:
        """Namespaces holding live, unexpired memories, each with how many, sorted by name.

        What :meth:`namespaces` lists, with the number of memories that
        :meth:`list` would return for exactly that namespace (not counting
        those below it).

        Args:
            prefix: only this namespace and those under it (whole segments);
                ``None``: all.
            limit: at most this many namespaces (1..10000).

        Returns:
            :class:`~abathur.models.NamedCount` objects: ``name`` is the
            namespace, ``count`` its live memories.

        Raises:
            InvalidNamespaceError: the prefix breaks a namespace rule.
            InvalidInputError: limit is out of range.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         async with Abathur.open(pathlib.Path(tmp) / "m.db") as ab:
            ...             await ab.memory.put("user:alice", "lang", "fr")
            ...             await ab.memory.put("user:alice", "tea", "green")
            ...             await ab.memory.put("user:alice:prefs", "theme", "dark")
            ...             await ab.memory.put("user:alicia", "lang", "es")
            ...             counts = await ab.memory.namespace_counts("user:alice")
            ...             return [(c.name, c.count) for c in counts]
            >>> asyncio.run(demo())
            [('user:alice', 2), ('user:alice:prefs', 1)]
        """
        if prefix is not None:
            check_namespace(prefix, "prefix")
        check_int(limit, "limit", minimum=1, maximum=MAX_LIMIT)
        now = time.time()
        rows = await self._db.read(
            lambda tx: tx.memories.namespace_counts(prefix, now=now, limit=limit)
        )
        return [NamedCount(name=name, count=count) for name, count in rows]

    @recorded("memory.get_version", access="read")
    async def get_version(self, namespace: str, key: str, version: int) -> Memory | None:
        """One version of a memory as it was written, whatever its status.

        Like an entry of :meth:`history`: a deleted or superseded version is
        returned with its ``status``, and an expired memory has no versions.

        Args:
            namespace: the memory's namespace.
            key: the memory's key.
            version: the version number, from 1.

        Returns:
            The version, or ``None`` when the memory has no such version or
            its current version has expired.

        Raises:
            InvalidNamespaceError: the namespace breaks a namespace rule.
            InvalidIdError: the key is not a valid id.
            InvalidInputError: version is not an int >= 1.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         async with Abathur.open(pathlib.Path(tmp) / "m.db") as ab:
            ...             await ab.memory.put("user:alice", "lang", "fr")
            ...             await ab.memory.put("user:alice", "lang", "en")
            ...             first = await ab.memory.get_version("user:alice", "lang", 1)
            ...             return first.value, await ab.memory.get_version("user:alice", "lang", 3)
            >>> asyncio.run(demo())
            ('fr', None)
        """
        check_namespace(namespace)
        check_id(key, "memory key")
        check_int(version, "version", minimum=1)

        def read(tx: Transaction) -> tuple[MemoryRow | None, MemoryRow | None]:
            # Both in one read transaction: the current version says whether it expired.
            found = tx.memories.version(namespace, key, version)
            return tx.memories.current(namespace, key), found

        current, found = await self._db.read(read)
        if found is None or current is None or current.is_expired(time.time()):
            return None
        return _memory(found)

    @recorded("memory.consolidate", access="write")
    async def consolidate(self, prefix: str, *, dry_run: bool = False) -> ConsolidationReport:
        """Resolve duplicates and conflicts among the live memories under ``prefix``.

        Only live, unexpired current versions in ``prefix`` or below it
        (whole segments) are examined. Two rules run in order:

        1. **Duplicates**: memories of the same type whose values are equal
           as JSON (objects compared with sorted keys) but that sit at
           different (namespace, key) places. The most recently written one
           wins; on a tie, the smallest (namespace, key).
        2. **Conflicts**: among what is still live, memories with the same key
           and type in different namespaces whose values differ. The most
           recently written one wins, with the same tie rule.

        Nothing is deleted or rewritten: each loser gets a new version with
        status ``superseded``, its value, type, metadata and expiry copied and
        ``superseded_by`` naming the winner, plus a ``memory.supersede`` audit
        record. All of it happens in one write transaction. It is reversible:
        :meth:`restore` on a loser makes it live again.

        Args:
            prefix: the namespace to consolidate (with everything under it).
            dry_run: report what would be done and write nothing.

        Returns:
            A report: how many memories were examined and one action per
            loser (``loser_version`` is the superseding version; 0 in a dry run).

        Raises:
            InvalidNamespaceError: the prefix breaks a namespace rule.
            InvalidInputError: dry_run is not a bool.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         async with Abathur.open(pathlib.Path(tmp) / "m.db") as ab:
            ...             await ab.memory.put("user:alice:a", "lang", "fr")
            ...             await ab.memory.put("user:alice:b", "language", "fr")
            ...             report = await ab.memory.consolidate("user:alice")
            ...             (action,) = report.actions
            ...             return action.reason, action.loser.namespace, action.winner.namespace
            >>> asyncio.run(demo())
            ('duplicate', 'user:alice:a', 'user:alice:b')
        """
        check_namespace(prefix, "prefix")
        if not isinstance(dry_run, bool):
            raise InvalidInputError(f"dry_run must be a bool, got {_kind(dry_run)}")

        def report(plan: _Plan, versions: list[int]) -> ConsolidationReport:
            return ConsolidationReport(
                prefix=prefix,
                is_dry_run=dry_run,
                examined=plan.examined,
                actions=[
                    ConsolidationAction(
                        reason=reason,
                        loser=MemoryRef(namespace=loser.namespace, key=loser.key),
                        winner=MemoryRef(namespace=winner.namespace, key=winner.key),
                        loser_version=version,
                    )
                    for (reason, loser, winner), version in zip(plan.actions, versions, strict=True)
                ],
            )

        if dry_run:
            plan = await self._db.read(lambda tx: _plan_consolidation(tx, prefix, time.time()))
            return report(plan, [0] * len(plan.actions))

        def write(tx: Transaction) -> ConsolidationReport:
            now = time.time()
            plan = _plan_consolidation(tx, prefix, now)
            versions = []
            index = self._indexing(tx)
            for reason, loser, winner in plan.actions:
                winner_ref = MemoryRef.model_construct(namespace=winner.namespace, key=winner.key)
                superseded = _write_version(
                    tx, loser, index, namespace=loser.namespace, key=loser.key,
                    type_=loser.type,
                    value=loser.value, metadata=loser.metadata, status="superseded", now=now,
                    expires_at=loser.expires_at, superseded_by=winner_ref,
                    action="memory.supersede",
                    detail={"reason": reason, "winner": _entity(winner.namespace, winner.key)},
                )
                versions.append(superseded.version)
            return report(plan, versions)

        return await self._db.write(write)

    @recorded("memory.purge")
    async def purge(
        self, prefix: str | None, *, everything: bool = False, dry_run: bool = False
    ) -> PurgeReport:
        """Erase every memory under ``prefix`` completely; the audit keeps only that it happened.

        Unlike :meth:`delete` (a tombstone that can be restored), nothing is
        left to restore: every version and tombstone, archive rows of those
        memories, their keyword-index words (the index is rewritten), vectors,
        queued embedding jobs, embedding-cache entries no vector still uses,
        and the per-namespace access metrics. Audit records naming them are
        redacted (names and details blanked; the chain still verifies), and
        one ``memory.purge`` record keeps the counts and the prefix's sha256.
        Versions outside the prefix that a consolidation superseded in favour
        of a purged memory lose that pointer (``memory.unlink`` records).
        Freed space is overwritten (``secure_delete``). Backups taken
        before still hold the data. Two things are left: a vector whose vec0
        chunk also holds other memories' vectors keeps its (invalidated)
        binary code until the table is compacted (``abathur reindex
        --compact``), and archive rows of *other* namespaces keep a
        superseded version's pointer to a purged winner.

        Args:
            prefix: a namespace; it and everything under it (whole segments:
                ``user:al`` never matches ``user:alice``). ``None`` or ``""``
                only with ``everything=True``.
            everything: required to purge every memory of the file.
            dry_run: count what would go, change nothing.

        Returns:
            A :class:`~abathur.models.PurgeReport` with the rows per table.

        Raises:
            InvalidNamespaceError: the prefix breaks a namespace rule.
            InvalidInputError: no prefix without ``everything=True``, a
                prefix with it, or a flag that is not a bool.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         async with Abathur.open(pathlib.Path(tmp) / "m.db", embedder="none") as ab:
            ...             await ab.memory.put("user:alice", "lang", "fr")
            ...             await ab.memory.put("user:alice", "lang", "en")
            ...             await ab.memory.put("user:alicia", "lang", "es")
            ...             report = await ab.memory.purge("user:alice")
            ...             left = [m.namespace for m in await ab.memory.list("user")]
            ...             return report.counts["memories"], left, (await ab.audit.verify()).is_ok
            >>> asyncio.run(demo())
            (2, ['user:alicia'], True)
        """
        for name, flag in (("everything", everything), ("dry_run", dry_run)):
            if not isinstance(flag, bool):
                raise InvalidInputError(f"{name} must be a bool, got {_kind(flag)}")
        if prefix is None or prefix == "":
            if not everything:
                raise InvalidInputError(
                    "purge needs a prefix; to erase every memory pass everything=True"
                )
            scope = None
        else:
            if everything:
                raise InvalidInputError("give a prefix or everything=True, not both")
            scope = check_namespace(prefix, "prefix")
        if dry_run:
            return await self._db.read(lambda tx: _purge(tx, scope, dry_run=True))

        def write(tx: Transaction) -> PurgeReport:
            # Deleted content is overwritten, so the erased bytes do not linger
            # in the file or the WAL.
            with tx.erase_securely():
                return _purge(tx, scope, dry_run=False)

        report = await self._db.write(write)
        if self.recorder is not None:
            # Access counts not flushed yet would write the names back.
            self.recorder.forget_access(
                lambda ns: scope is None or ns == scope or ns.startswith(scope + _SEP)
            )
        return report

    @recorded("memory.search", access="read")
    async def search(
        self,
        query: str,
        *,
        prefix: str,
        type: MemoryType | None = None,
        filter: Mapping[str, str | int | float | bool | None] | None = None,
        k: int = 10,
        mode: SearchMode = "hybrid",
        min_score: float | None = None,
        fresh: bool = False,
    ) -> SearchResult:
        """Find the live memories in ``prefix`` that best match ``query``.

        Modes: ``"keyword"`` ranks by FTS5 BM25 over the key and the value's
        words; ``"vector"`` by cosine similarity of embeddings (a binary first
        pass, then exact rescoring, see :mod:`abathur.search`); ``"hybrid"``
        fuses both rankings (reciprocal rank fusion). Every filter applies
        before ranking, so a narrow filter still returns up to ``k`` hits.
        Deleted, superseded and expired memories are never returned.

        Read-your-writes: a memory written a moment ago is found by keyword at
        once, and by vector once the worker has embedded it (about a second;
        ``result.pending`` counts those in scope still waiting). With
        ``fresh=True`` the search first embeds, inline, every memory of
        ``prefix`` still waiting (loading the model if this is the first
        call), so vector and hybrid see everything written before the call.
        It is safe beside the background worker: a vector is never inserted
        twice. It costs an embedding call when something is waiting (nothing
        otherwise); after a bulk import of a scope, ``ab.embeddings.drain()``
        first is faster.

        Relevance floor: ``min_score`` keeps, of the ``k`` best hits, those
        whose ``relevance`` is at least that much (so fewer than ``k`` may come
        back). Relevance means the same for every query (unlike
        ``score``): the cosine similarity to the query in vector and hybrid
        mode (for the bundled MiniLM, related texts score about 0.3-0.8,
        unrelated ones below 0.2), and the share of the query's words the
        memory contains in keyword mode (0..1). See
        :class:`~abathur.models.SearchHit`. The floor applies to the mode
        used, so after a fallback to keyword it is a share of words.

        When the query cannot be embedded (no embedder configured, the
        embedder is down, nothing embedded yet), vector and hybrid fall back to
        keyword: ``result.mode`` is the mode used and ``degraded_reason`` says why.

        Args:
            query: what to look for, in words (never FTS syntax: every word is
                searched as written).
            prefix: a namespace; memories in it and under it (whole segments).
            type: only memories of this type.
            filter: metadata key -> value, as for :meth:`list`.
            k: at most this many hits (1..1000).
            mode: ``"hybrid"`` (default), ``"keyword"`` or ``"vector"``.
            min_score: the relevance floor, a number in [-1, 1]; ``None``
                (default): no floor.
            fresh: embed the memories of ``prefix`` that wait for it before
                searching (vector and hybrid only), for read-your-writes.

        Returns:
            A :class:`~abathur.models.SearchResult`, hits best first; it
            iterates over its hits.

        Raises:
            InvalidInputError: the query is not a string, is blank or longer
                than 8192 characters; the mode is unknown; k is out of range;
                min_score is not a number in [-1, 1]; fresh is not a bool;
                or the filter is not a dict of scalars.
            InvalidNamespaceError: the prefix breaks a namespace rule.
            InvalidMemoryTypeError: ``type`` is not one of the three types.
            BudgetExceededError: vector or hybrid mode, and a ``block`` budget
                of the prefix's app or user is used up (``Settings.budgets``;
                a ``degrade`` budget falls back to keyword instead).

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         async with Abathur.open(pathlib.Path(tmp) / "m.db") as ab:
            ...             await ab.memory.put("user:alice:preferences", "language",
            ...                                 {"value": "French"})
            ...             await ab.memory.put("user:alice:preferences", "drink", "green tea")
            ...             await ab.embeddings.drain()
            ...             found = await ab.memory.search("which language does she speak",
            ...                                            prefix="user:alice", k=1)
            ...             return found.mode, [hit.key for hit in found]
            >>> asyncio.run(demo())
            ('hybrid', ['language'])

            Read-your-writes and a floor, right after the writes:

            >>> async def fresh():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         async with Abathur.open(pathlib.Path(tmp) / "m.db") as ab:
            ...             await ab.memory.put("user:bob", "pet", "Bob has a cat named Tom")
            ...             await ab.memory.put("user:bob", "car", "drives a red Tesla")
            ...             found = await ab.memory.search("does bob own an animal",
            ...                 prefix="user:bob", mode="vector", fresh=True, min_score=0.3)
            ...             return found.pending, [hit.key for hit in found]
            >>> asyncio.run(fresh())
            (0, ['pet'])
        """
        args = check_search_args(query, k=k, mode=mode, min_score=min_score, fresh=fresh)
        check_namespace(prefix, "prefix")
        type_ = None if type is None else _check_type(type)
        metadata = _check_filter(filter)
        k, floor = args.k, args.floor
        vector, reason = await query_vector(
            args,
            self._embeddings,
            owner="memory service",
            namespace=prefix,
            embed_scope=lambda embeddings: self._embed_scope(embeddings, prefix),
        )
        embeddings = self._embeddings
        settings = self._db.settings
        embedder = None if embeddings is None else embeddings.embedder
        model = None if embedder is None else embedder.name

        def read(tx: Transaction) -> tuple[SearchMode, str | None, int, list[SearchHit]]:
            now = time.time()
            used, why = resolve_mode(tx, VEC_TABLE, args.mode, vector, reason)
            ranked, cosine = rank(
                tx, used, k=k, vector=vector, vec_table=VEC_TABLE,
                keyword=lambda depth: tx.search.memory_keyword_ranking(
                    query_words(query), prefix, now=now, type=type_, metadata=metadata,
                    limit=depth,
                ),
                where=lambda: _vector_filter(tx, prefix, type_, metadata, now),
                oversample=settings.search_oversample, rrf_k=settings.search_rrf_k,
            )
            by_id = {row.id: row for row in tx.memories.rows_by_id([item for item, _ in ranked])}
            # The indexes hold only current live versions; this keeps it so
            # even if one of them ever drifted.
            found = [
                (by_id[item], score)
                for item, score in ranked
                if item in by_id and not by_id[item].is_absent(now)
            ]
            relevances = _relevance(tx, used, query, vector, model, found, cosine)
            hits = [
                _hit(row, score, rel)
                for (row, score), rel in zip(found, relevances, strict=True)
                if floor is None or rel >= floor
            ]
            pending = 0
            if args.mode != "keyword":
                pending = tx.memories.awaiting_vectors(prefix)
            return used, why, pending, hits

        used, why, pending, hits = await self._db.read(read)
        return SearchResult.model_construct(**outcome(args, used, why), pending=pending, hits=hits)

    async def _embed_scope(self, embeddings: EmbeddingService, prefix: str) -> None:
        """Embed, inline, the memories of ``prefix`` still waiting (``fresh=True``).

        An embedder that fails leaves them waiting: the search then runs on
        what is embedded and ``pending`` says how many it could not see.
        """

        def select(queue: QueueStore, limit: int) -> list[QueuedJob]:
            return queue.memory_jobs(MEMORY_KIND.name, prefix, limit)

        try:
            await embeddings.embed_now(select)
        except EmbedderError as exc:
            log.warning("memory.fresh_failed", error=exc.message)

    @recorded("memory.context", access="read")
    async def context(
        self,
        prefix: str,
        query: str,
        max_tokens: int = 1000,
        *,
        type: MemoryType | None = None,
        k: int = 50,
        mode: SearchMode = "hybrid",
        min_score: float | Literal["auto"] | None = "auto",
        fresh: bool = False,
    ) -> MemoryContext:
        """The most relevant memories for ``query``, packed under ``max_tokens`` for a prompt.

        Runs :meth:`search` for up to ``k`` hits, then takes them in relevance
        order, each as one ``namespace/key: words of the value`` line, skipping
        any that no longer fits, so the agent pays only for what matters.
        Tokens are estimated at four characters a token. The tokens served
        are recorded in the usage ledger (operation ``context``), and
        ``abathur cost report`` shows them.

        Unlike :meth:`search`, context has a relevance floor by default, so a
        prompt about something the memories do not hold gets nothing rather
        than the least bad: ``min_score="auto"`` is
        :data:`CONTEXT_MIN_SCORE` of the mode the search used (a cosine
        similarity for vector and hybrid, a share of the query's words for
        keyword), chosen on evaluation data (benchmarks/relevance_floor.py;
        benchmarks/README.md has its precision and recall). Pass a number for
        another floor, ``None`` for none.

        Args:
            prefix: a namespace; memories in it and under it.
            query: what the prompt is about, in words.
            max_tokens: the budget for the memories' text (1..1,000,000).
            type: only memories of this type.
            k: how many search hits to consider (1..1000).
            mode: the search mode (``"hybrid"`` by default).
            min_score: the relevance floor (see above): ``"auto"`` (default),
                a number in [-1, 1], or ``None``.
            fresh: embed the prefix's memories still waiting first, as
                :meth:`search` does.

        Returns:
            A :class:`~abathur.models.MemoryContext`: the memories taken,
            their text and its tokens, how many relevant ones were left out,
            and the floor applied. It iterates over its memories.

        Raises:
            InvalidInputError: max_tokens is out of range, or as :meth:`search`.
            InvalidNamespaceError: the prefix breaks a namespace rule.
            InvalidMemoryTypeError: ``type`` is not one of the three types.
            BudgetExceededError: as :meth:`search`.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         async with Abathur.open(pathlib.Path(tmp) / "m.db", embedder="none") as ab:
            ...             await ab.memory.put("user:alice", "language", "Alice speaks French")
            ...             await ab.memory.put("user:alice", "history",
            ...                                 "French lessons " * 40)
            ...             ctx = await ab.memory.context("user:alice", "french", max_tokens=20)
            ...             return ctx.text, ctx.tokens, ctx.skipped
            >>> asyncio.run(demo())
            ('user:alice/language: Alice speaks French', 10, 1)
        """
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
            raise InvalidInputError(f"max_tokens must be an integer, got {_kind(max_tokens)}")
        if not 1 <= max_tokens <= 1_000_000:
            raise InvalidInputError(f"max_tokens must be between 1 and 1000000, got {max_tokens}")
        floor = None if min_score == "auto" else check_min_score(min_score)
        started = time.perf_counter()
        found = await self.search(
            query, prefix=prefix, type=type, k=k, mode=mode, min_score=floor, fresh=fresh
        )
        hits = found.hits
        if min_score == "auto":
            # The floor of the mode actually used: after a fallback to keyword
            # a cosine floor would mean nothing.
            floor = CONTEXT_MIN_SCORE[found.mode]
            hits = [hit for hit in hits if hit.relevance >= floor]
        taken: list[SearchHit] = []
        lines: list[str] = []
        used = 0
        for hit in hits:
            line = f"{hit.namespace}/{hit.key}: {memory_text(hit.value)}"
            # One more line costs its text and the newline joining it.
            cost = estimate_tokens(line + ("\n" if lines else ""))
            if used + cost > max_tokens:
                continue
            used += cost
            taken.append(hit)
            lines.append(line)
        text = "\n".join(lines)
        if self._costs is not None:
            self._costs.note_context(
                prefix, memories=len(taken), tokens=used, chars=len(text),
                duration_ms=(time.perf_counter() - started) * 1000,
            )
        return MemoryContext.model_construct(
            prefix=prefix,
            query=query,
            max_tokens=max_tokens,
            tokens=used,
            is_estimate=True,
            mode=found.mode,
            is_degraded=found.is_degraded,
            min_score=floor,
            memories=taken,
            skipped=len(hits) - len(taken),
            text=text,
        )




async def build_keyword_index(db: Backend) -> None:
    """Index the memories of a file written before migration 003 (once per file).

    ``Abathur.open`` calls it; it does nothing once the keyword index is built.
    A function, not a service method: it is the opening's work, not a call an
    application makes (service methods are timed into ``abathur stats``).
    """
    if await db.read(lambda tx: tx.search.memory_text_built()):
        return

    def write(tx: Transaction) -> None:
        if not tx.search.memory_text_built():
            rebuild_keyword_index(tx)

    await db.write(write)

def _relevance(
    tx: Transaction,
    used: SearchMode,
    query: str,
    vector: NDArray[np.float32] | None,
    model: str | None,
    found: list[tuple[MemoryRow, float]],
    cosine: dict[int, float],
) -> list[float]:
    """The ``relevance`` of each hit (:func:`abathur.search.relevance`).

    Keyword relevance reads the key and the value's words; the text embedded
    for a memory is its index item's (key included).
    """
    rows = [row for row, _ in found]

    def embedded_hash(i: int) -> str:
        return content_hash(_item(rows[i]).text)

    return relevance(
        tx, used, query, vector, model,
        texts=[f"{row.key} {memory_text(decode(row.value))}" for row in rows],
        cosines=[cosine.get(row.id) for row in rows],
        embedded_hash=embedded_hash,
    )


def _hit(row: MemoryRow | tuple[Any, ...], score: float, relevance: float = 0.0) -> SearchHit:
    memory = row if isinstance(row, MemoryRow) else MemoryRow(*row)
    return SearchHit.model_construct(
        namespace=memory.namespace,
        key=memory.key,
        value=decode(memory.value),
        type=memory.type,
        metadata=decode(memory.metadata),
        version=memory.version,
        score=score,
        relevance=relevance,
    )


def _vector_filter(
    tx: Transaction,
    prefix: str,
    type_: str | None,
    metadata: Mapping[str, MetadataValue],
    now: float,
) -> VectorFilter:
    """Partition, type, allowed ids and metadata predicate for a vector search under ``prefix``.

    A namespace deeper than the partition becomes the exact set of its ids (one
    range of the memories_current index, as small as that namespace). A
    metadata filter is not turned into a set: evaluating JSON on every memory
    of a large tenant took 190 ms at 100k. It is asked of the candidates
    instead, nearest first, until enough pass (VectorFilter.accept).
    """
    depth = prefix.count(_SEP) + 1
    allowed: list[int] | None = None
    if depth > 2:
        allowed = tx.memories.ids_under(prefix, now=now, type=type_)
    accept = None
    if metadata:

        def accept(ids: list[int]) -> set[int]:
            return tx.memories.ids_matching(ids, metadata)

    return VectorFilter(
        now=now,
        partition=partition_of(prefix) if depth >= 2 else None,
        partition_prefix=prefix if depth == 1 else None,
        type_code=None if type_ is None else TYPE_CODES[type_],
        allowed_ids=allowed,
        accept=accept,
    )
