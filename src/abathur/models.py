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
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from abathur.errors import InvalidInputError

__all__ = [
    "AuditRecord",
    "AuditReport",
    "CompactReport",
    "ConsolidationAction",
    "ConsolidationReport",
    "DrainReport",
    "EmbeddingStatus",
    "Event",
    "Memory",
    "MemoryRef",
    "MemoryStatus",
    "MemoryType",
    "SearchHit",
    "SearchMode",
    "SearchResult",
    "Session",
    "SessionStatus",
    "Task",
    "TaskStatus",
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


def _describe(model: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "(model)"
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


class ConsolidationReport(_Model):
    """What :meth:`MemoryService.consolidate` found and did."""

    prefix: str
    is_dry_run: bool
    examined: int
    actions: list[ConsolidationAction]


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


class SearchHit(_Model):
    """One memory found by :meth:`MemoryService.search`, with its score.

    ``score`` depends on the mode used: BM25 (higher is better) for keyword,
    cosine similarity for vector, the reciprocal-rank-fusion sum for hybrid.
    """

    namespace: str
    key: str
    value: JsonValue
    type: MemoryType
    metadata: dict[str, JsonValue]
    version: int
    score: float


class SearchResult(_Model):
    """The hits of a search, best first, and how they were found.

    ``mode`` is the mode actually used. A vector or hybrid search falls back
    to keyword when it cannot embed the query (no embedder configured, the
    embedder is down, no vectors yet); then ``is_degraded`` is true and
    ``degraded_reason`` says why.
    """

    query: str
    mode: SearchMode
    requested_mode: SearchMode
    is_degraded: bool = False
    degraded_reason: str | None = None
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
    remaining: int = Field(description="Jobs still queued afterwards (failed ones included).")
    seconds: float


class CompactReport(_Model):
    """One vector table rebuilt by :meth:`EmbeddingService.compact`."""

    table: str
    kind: str
    live_rows: int
    dead_rows: int = Field(description="Dead slots reclaimed.")
    seconds: float
