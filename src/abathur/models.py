"""The pydantic models that cross the API boundary.

Models are frozen: what a call returns is a snapshot, and changing it changes
nothing in the database. Building one with bad fields raises
:class:`~abathur.errors.InvalidInputError` (not pydantic's own error), like
every other bad input.

Example:
    >>> from abathur import Event
    >>> Event(author="user", content={"text": "hi"}, state_delta={"topic": "billing"}).author
    'user'
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, ClassVar, Literal, overload

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from abathur.errors import InvalidInputError

__all__ = [
    "ArchiveEntry",
    "ArchiveKind",
    "ArchivePolicyResult",
    "ArchiveRestoreReport",
    "ArchiveRunReport",
    "ArchivedItem",
    "AuditRecord",
    "AuditReport",
    "BudgetStatus",
    "CallStats",
    "CompactReport",
    "ConsolidationAction",
    "ConsolidationReport",
    "CostAdvice",
    "CostLine",
    "CostReport",
    "DocumentHit",
    "DocumentSearchResult",
    "DrainReport",
    "EmbeddingStatus",
    "Event",
    "ExportReport",
    "GrowthSeries",
    "ImportReport",
    "Memory",
    "MemoryContext",
    "MemoryRef",
    "MemoryStatus",
    "MemoryType",
    "NamedCount",
    "PurgeReport",
    "SearchHit",
    "SearchMode",
    "SearchResult",
    "Session",
    "SessionStatus",
    "Stats",
    "SyncFailure",
    "SyncReport",
    "Task",
    "TaskStatus",
    "TransferCounts",
]

MemoryType = Literal["semantic", "episodic", "procedural"]
MemoryStatus = Literal["live", "deleted", "superseded"]
SessionStatus = Literal["created", "active", "paused", "terminated", "archived"]
TaskStatus = Literal["pending", "running", "succeeded", "failed", "cancelled"]
SearchMode = Literal["keyword", "vector", "hybrid"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise InvalidInputError(_describe(type(self).__name__, exc)) from None


class _Items(_Model):
    """A result holding items: iterating it, ``len()`` and ``[i]`` reach the items.

    Without this, ``for hit in result`` would iterate pydantic's ``(field,
    value)`` pairs, silently. The fields and the JSON dump stay as they are;
    ``items_field`` names the field holding the items.
    """

    items_field: ClassVar[str]

    def _list(self) -> list[Any]:
        items: list[Any] = getattr(self, self.items_field)
        return items

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return iter(self._list())

    def __len__(self) -> int:
        return len(self._list())

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        return self._list()[index]


def _describe(model: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        if len(loc) > 8:  # a value nested hundreds deep: its path would fill the message
            loc = [*loc[:4], f"<{len(loc) - 6} more>", *loc[-2:]]
        where = ".".join(loc) or "(model)"
        parts.append(f"{where}: {err['msg']}")
    return f"invalid {model}: " + "; ".join(parts)


class Event(_Model):
    """One entry of a session's append-only event log.

    ``state_delta`` keys are scoped by prefix: ``app:`` (shared by the app),
    ``user:`` (shared by the user's sessions), ``temp:`` (applied to the
    returned session, never stored) or none (this session). A delta replaces
    values; a ``None`` value is stored as ``None``.
    """

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=256)
    author: str = Field(min_length=1, max_length=256)
    content: JsonValue = None
    state_delta: dict[str, JsonValue] = Field(default_factory=dict)
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    timestamp: float | None = Field(
        default=None, description="Unix epoch seconds; set at append time when not given."
    )
    seq: int | None = Field(default=None, description="Position in the session, set by abathur.")


class Session(_Model):
    """A conversation of one user with one app, with its state and (some of) its events."""

    id: str
    app: str
    user: str
    status: SessionStatus
    state: dict[str, JsonValue] = Field(
        description="Merged view: app: and user: keys with their prefix, session keys bare."
    )
    revision: int
    created_at: float
    updated_at: float
    events: list[Event] = Field(default_factory=list)


class MemoryRef(_Model):
    """Points at a memory by (namespace, key)."""

    namespace: str
    key: str


class Memory(_Model):
    """One version of a long-term memory."""

    namespace: str
    key: str
    value: JsonValue
    type: MemoryType
    metadata: dict[str, JsonValue]
    version: int
    status: MemoryStatus = "live"
    superseded_by: MemoryRef | None = None
    created_at: float = Field(description="When version 1 was written.")
    updated_at: float = Field(description="When this version was written.")
    expires_at: float | None = None


class ConsolidationAction(_Model):
    """One memory superseded by another during consolidation."""

    reason: Literal["duplicate", "conflict"]
    loser: MemoryRef
    winner: MemoryRef
    loser_version: int = Field(description="The superseding version written (0 in a dry run).")


class ConsolidationReport(_Items):
    """What :meth:`MemoryService.consolidate` found and did; iterates over its actions."""

    items_field: ClassVar[str] = "actions"

    prefix: str
    is_dry_run: bool
    examined: int
    actions: list[ConsolidationAction]


class PurgeReport(_Model):
    """What :meth:`MemoryService.purge` or :meth:`SessionService.purge` erased (or would).

    ``counts`` holds rows removed per table (``memories``, ``archive``,
    ``memories_fts``, ``events``...); ``redacted`` the audit records whose
    names and details were blanked; ``audit_seq`` the ``*.purge`` record that
    says it happened (``None`` in a dry run).
    """

    scope: Literal["memory", "sessions"]
    is_dry_run: bool
    counts: dict[str, int]
    redacted: int
    audit_seq: int | None = None


class Task(_Model):
    """A unit of work an agent does for a session."""

    id: str
    session_id: str
    prompt: str
    status: TaskStatus
    result: JsonValue = None
    error: str | None = None
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    created_at: float
    updated_at: float


class AuditRecord(_Model):
    """One entry of the audit log."""

    seq: int
    at: float
    action: str
    entity: str
    entity_id: str
    detail: dict[str, JsonValue]


class AuditReport(_Model):
    """The result of verifying the audit hash chain."""

    is_ok: bool
    records: int
    problems: list[str]
    #: Covered rows whose content matched the record that wrote them.
    rows_verified: int = 0
    #: Covered rows written before the audit covered content (no record to check).
    rows_uncovered: int = 0


class SearchHit(_Model):
    """One memory found by :meth:`MemoryService.search`, with its score and relevance.

    ``score`` is what ranked it and depends on the mode used: BM25 (higher is
    better) for keyword, cosine similarity for vector, the reciprocal-rank-fusion
    sum for hybrid. Its scale changes with the query and the other memories,
    so it cannot be compared across queries.

    ``relevance`` is what ``min_score`` compares, and means the same for every
    query: in vector and hybrid mode the cosine similarity of the memory's
    embedding to the query's, in [-1, 1] (a hybrid hit not embedded yet gets
    its keyword relevance instead); in keyword mode the share of the query's
    words (stop words left out) the memory contains, in [0, 1]
    (:func:`abathur.search.term_coverage`).
    """

    namespace: str
    key: str
    value: JsonValue
    type: MemoryType
    metadata: dict[str, JsonValue]
    version: int
    score: float
    relevance: float = Field(
        default=0.0, description="Cosine (vector, hybrid) or share of words (keyword)."
    )


class SearchResult(_Items):
    """The hits of a search, best first, and how they were found.

    ``mode`` is the mode actually used. A vector or hybrid search falls back
    to keyword when it cannot embed the query (no embedder configured, the
    embedder is down, no vectors yet); then ``is_degraded`` is true and
    ``degraded_reason`` says why. ``pending`` counts the memories in scope
    the vector ranking could not see because they wait for their embedding
    (``search(..., fresh=True)`` embeds them first).

    The result is a sequence of its hits: ``for hit in result``,
    ``len(result)``, ``result[0]``.
    """

    items_field: ClassVar[str] = "hits"

    query: str
    mode: SearchMode
    requested_mode: SearchMode
    is_degraded: bool = False
    degraded_reason: str | None = None
    pending: int = Field(
        default=0, description="Memories in scope not embedded yet (unseen by vector ranking)."
    )
    hits: list[SearchHit]


class EmbeddingStatus(_Model):
    """State of the embedding pipeline: ``await ab.embeddings.status()``."""

    embedder: str | None = Field(description="This process's embedder, None if none configured.")
    dims: int | None = Field(description="Its vector length (None until known).")
    recorded_embedder: str | None = Field(description="The embedder the file's vectors are from.")
    recorded_dims: int | None
    is_worker_running: bool
    queue_depth: int = Field(description="Jobs waiting, failed ones included.")
    failed_jobs: int = Field(description="Jobs left after a permanent embedder error.")
    oldest_job_age_s: float | None = Field(description="Age of the oldest waiting job.")
    last_error: str | None = Field(description="The last embedder error this process saw.")
    vectors: int = Field(description="Live vectors, all kinds together.")
    dead_rows: int = Field(description="Deleted vectors still taking space until compaction.")


class DrainReport(_Model):
    """What :meth:`EmbeddingService.drain` (or ``reindex``) embedded."""

    embedded: int = Field(description="Vectors written.")
    cache_hits: int = Field(description="Of those, how many came from embedding_cache.")
    calls: int = Field(description="Calls made to the embedder.")
    failed: int = Field(description="Jobs marked failed by a permanent embedder error.")
    waiting: int = Field(default=0, description="Jobs a used-up budget holds back (issue 4).")
    remaining: int = Field(description="Jobs still queued afterwards (failed ones included).")
    seconds: float


class CompactReport(_Model):
    """One vector table rebuilt by :meth:`EmbeddingService.compact`."""

    table: str
    kind: str
    live_rows: int
    dead_rows: int = Field(description="Dead slots reclaimed.")
    seconds: float


class SyncFailure(_Model):
    """A file :meth:`DocumentService.sync` skipped, and why (binary, unreadable, too large...)."""

    path: str = Field(description="Relative to the synced root, '/' separated.")
    reason: str


class SyncReport(_Model):
    """What :meth:`DocumentService.sync` found and did under one root.

    Paths are relative to ``root``. A renamed file is one path removed and one
    added; its chunks take their vectors from the embedding cache.
    """

    root: str = Field(description="The synced directory, resolved and absolute.")
    added: list[str] = Field(description="Files indexed for the first time.")
    changed: list[str] = Field(description="Files whose content changed since the last sync.")
    removed: list[str] = Field(description="Files gone (or no longer matched): chunks removed.")
    unchanged: int = Field(description="Files whose content is what was indexed.")
    failed: list[SyncFailure] = Field(description="Files skipped, with the reason.")
    chunks_added: int
    chunks_removed: int
    chunks_kept: int = Field(
        description="Chunks of changed files left as they were, vectors included."
    )
    embeddings_queued: int = Field(
        description="New chunks waiting for the embedder (the rest came from the cache)."
    )
    seconds: float


class DocumentHit(_Model):
    """One chunk found by :meth:`DocumentService.search`, with its score.

    ``score`` depends on the mode used, as for :class:`SearchHit`; so does
    ``relevance`` (what ``min_score`` compares), with the chunk's heading and
    text as its words.
    """

    root: str = Field(description="The synced directory the document is under.")
    path: str = Field(description="The document, relative to its root.")
    heading: str = Field(description="The chunk's heading path, e.g. 'Backups > Restore'.")
    text: str = Field(description="The chunk's text (its heading not repeated).")
    ordinal: int = Field(description="The chunk's place in its document, from 0.")
    score: float
    relevance: float = Field(
        default=0.0, description="Cosine (vector, hybrid) or share of words (keyword)."
    )


class DocumentSearchResult(_Items):
    """The chunks a document search found, best first, and how (see :class:`SearchResult`).

    A sequence of its hits: ``for hit in result``, ``len(result)``, ``result[0]``.
    """

    items_field: ClassVar[str] = "hits"

    query: str
    mode: SearchMode
    requested_mode: SearchMode
    is_degraded: bool = False
    degraded_reason: str | None = None
    pending: int = Field(
        default=0, description="Chunks in scope not embedded yet (unseen by vector ranking)."
    )
    hits: list[DocumentHit]


# -- issue 4: archival, costs, analytics ---------------------------------------

ArchiveKind = Literal["session", "memory", "versions"]


class ArchiveEntry(_Model):
    """One archived item (``abathur archive list``): what it is, where it came from, its size.

    ``kind`` is ``session`` (a session with its events), ``memory`` (a memory
    with every version) or ``versions`` (old versions of one memory); ``ref``
    is the session id or ``namespace/key``.
    """

    id: int
    kind: ArchiveKind
    ref: str
    policy: str = Field(description="The policy kind that moved it.")
    app: str | None = None
    user: str | None = None
    namespace: str | None = None
    rows: int = Field(description="Rows moved: the session and its events, or the versions.")
    raw_bytes: int = Field(description="Size of the rows as JSON, before compression.")
    stored_bytes: int = Field(description="Size of the compressed payload.")
    run_id: int
    archived_at: float


class ArchivedItem(_Model):
    """An archive entry with its rows decompressed (``abathur archive show``).

    ``tables`` maps each table (``sessions``, ``events``, ``memories``) to its
    rows as column -> value, exactly as they were in the hot table.
    """

    entry: ArchiveEntry
    tables: dict[str, list[dict[str, JsonValue]]]


class ArchivePolicyResult(_Model):
    """What one policy kind moved (or would move) in an archive run."""

    policy: str
    items: int
    rows: int
    raw_bytes: int
    stored_bytes: int = Field(description="Compressed size (an estimate in a dry run).")


class ArchiveRunReport(_Model):
    """What ``abathur archive run`` did: rows moved, bytes before and after, space reclaimed.

    Sizes count the database file and its ``-wal``. ``free_bytes`` is space
    inside the file that SQLite reuses for new rows; the file itself shrinks
    only when ``auto_vacuum`` is ``incremental`` (``vacuumed_bytes``), see
    :mod:`abathur.archival`.
    """

    run_id: int | None = Field(description="None for a dry run (nothing is recorded).")
    is_dry_run: bool
    resumed_after: int | None = Field(
        default=None, description="A run before this one that did not finish (killed, crashed)."
    )
    policies: list[ArchivePolicyResult]
    entries: int
    rows: int
    batches: int
    bytes_before: int
    bytes_after: int
    wal_bytes_before: int
    wal_bytes_after: int
    free_bytes: int
    auto_vacuum: Literal["none", "full", "incremental"]
    vacuumed_bytes: int
    compacted: list[CompactReport]
    notes: list[str]
    seconds: float


class ArchiveRestoreReport(_Model):
    """One archive entry put back in the hot tables (``abathur archive restore``)."""

    id: int
    kind: ArchiveKind
    ref: str
    rows: int
    reindexed: int = Field(description="Memories put back in the keyword and vector indexes.")
    seconds: float


class MemoryContext(_Items):
    """The most relevant memories for a prompt, packed under a token budget.

    Built by :meth:`MemoryService.context`: hits in relevance order, each
    taken if it still fits; ``text`` is what to paste into the prompt (one
    ``namespace/key: words`` line per memory). Tokens are estimated at four
    characters per token (``is_estimate``). ``min_score`` is the relevance
    floor applied (``None``: none). A sequence of its memories:
    ``for hit in ctx``, ``len(ctx)``.
    """

    items_field: ClassVar[str] = "memories"

    prefix: str
    query: str
    max_tokens: int
    tokens: int
    is_estimate: bool = True
    mode: SearchMode
    is_degraded: bool = False
    min_score: float | None = None
    memories: list[SearchHit]
    skipped: int = Field(description="Relevant memories left out because they did not fit.")
    text: str


class CostLine(_Model):
    """Spend, calls, tokens and cache savings of one group in a cost report."""

    key: str = Field(description="The app, user or model ('-': unattributed, 'total').")
    calls: int = Field(
        description="Calls made to an embedder (for a group: the calls its texts were part of)."
    )
    texts: int = Field(description="Texts sent to an embedder.")
    tokens: int
    has_estimates: bool = Field(description="Some token counts are estimates.")
    cost_usd: float
    cache_hits: int = Field(description="Texts served from embedding_cache instead.")
    cache_hit_rate: float | None
    saved_tokens: int = Field(description="Tokens the cache hits would have cost.")
    saved_usd: float
    duration_ms: float


class BudgetStatus(_Model):
    """Where one budget stands in its current period."""

    budget: str
    scope: str
    name: str | None
    period: str
    action: str
    unit: Literal["usd", "tokens"]
    spent: float
    limit: float
    used_share: float
    is_exceeded: bool


class CostAdvice(_Model):
    """One concrete suggestion a cost report computed from the data."""

    code: str
    message: str


class CostReport(_Model):
    """``abathur cost report``: spend, calls, tokens, cache savings, budgets and advice."""

    since: float
    until: float
    by: Literal["app", "user", "model"]
    total: CostLine
    groups: list[CostLine]
    query_calls: int = Field(description="Search queries embedded.")
    repeated_queries: int = Field(description="Of those, the same text embedded again.")
    context_calls: int
    context_tokens: int = Field(description="Tokens served by memory.context.")
    context_memories: int
    budgets: list[BudgetStatus]
    unpriced: list[str] = Field(description="provider/model pairs with no price (counted 0).")
    advice: list[CostAdvice]


class CallStats(_Model):
    """Call count and latency percentiles of one service method."""

    name: str
    calls: int
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float


class NamedCount(_Model):
    """A name and a number (a namespace's memories, reads or writes)."""

    name: str
    count: int
    new_7d: int | None = Field(default=None, description="Of those, written in the last 7 days.")


class GrowthSeries(_Model):
    """New items per UTC day, oldest first, with a sparkline of them."""

    name: str
    days: list[str]
    counts: list[int]
    sparkline: str


class Stats(_Model):
    """``abathur stats``: what the database holds, how it grows, and how fast calls are."""

    generated_at: float
    db_bytes: int
    wal_bytes: int
    archive_bytes: int
    free_bytes: int
    memories: int = Field(description="Live, unexpired current memories.")
    versions: int = Field(description="Rows in memories: every version of every memory.")
    memories_by_type: dict[str, int]
    namespaces: list[NamedCount]
    sessions_by_status: dict[str, int]
    events: int
    events_per_session: dict[str, float]
    queue_depth: int
    queue_failed: int
    queue_oldest_age_s: float | None
    archive_entries: dict[str, int]
    growth: list[GrowthSeries]
    calls: list[CallStats]
    top_reads: list[NamedCount]
    top_writes: list[NamedCount]
    calls_since: float


class TransferCounts(_Model):
    """How many records of each kind an export wrote, or an import imported or skipped."""

    app_state: int = 0
    user_state: int = 0
    sessions: int = 0
    events: int = 0
    tasks: int = 0
    memories: int = 0
    versions: int = Field(default=0, description="Memory versions (rows) in those memories.")


class ExportReport(_Model):
    """What ``ab.transfer.export_to`` wrote (``abathur export``)."""

    format: str = Field(description="The file format, e.g. 'abathur-export/1'.")
    prefix: str | None
    app: str | None
    user: str | None
    counts: TransferCounts
    expired: int = Field(description="Memories left out: their current version has expired.")
    archived: int = Field(
        description="Archive entries in scope, not exported: restore them first to include them."
    )
    seconds: float


class ImportReport(_Model):
    """What ``ab.transfer.import_from`` did (``abathur import``)."""

    format: str
    file: str = Field(description="The file imported.")
    lines: int = Field(description="Lines read, header and end record included.")
    is_dry_run: bool = Field(description="True: everything was checked, then rolled back.")
    imported: TransferCounts
    skipped: TransferCounts = Field(description="Identical to what the database held already.")
    seconds: float
