"""``MetricsStore``: call-latency windows, and the counts and sizes ``stats`` reports.

The protocol every backend implements; reach it inside a transaction as
``tx.metrics`` (see :mod:`abathur.stores`). :class:`MetricRow` is one
flushed window of one call, counter or namespace; :class:`TableStats` and
:class:`StorageSizes` are what ``abathur stats`` shows of the data itself.

Example:
    >>> from abathur.stores.metrics import MetricRow
    >>> MetricRow(at=60.0, seconds=60.0, kind="counter", name="budget.warn", count=2).errors
    0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

__all__ = [
    "MemoryGrowth",
    "MetricRow",
    "MetricWindow",
    "MetricsStore",
    "NamespaceCount",
    "StorageSizes",
    "TableStats",
]


@dataclass(frozen=True, slots=True)
class MetricRow:
    """One window of the ``metrics`` table: a call's histogram, a counter or an access count."""

    at: float
    """When the window was flushed, epoch seconds."""
    seconds: float
    """How long the window was."""
    kind: str
    """``call``, ``counter``, ``reads`` or ``writes``."""
    name: str
    """The call (``memory.put``), counter (``budget.warn``) or namespace."""
    count: int
    errors: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0
    histogram: str | None = None
    """Calls per bucket, JSON ``{"bucket": count}`` (call windows only)."""


@dataclass(frozen=True, slots=True)
class MetricWindow:
    """A stored window as ``stats`` reads it back."""

    kind: str
    name: str
    count: int
    errors: int
    total_ms: float
    max_ms: float
    histogram: str | None


class NamespaceCount(NamedTuple):
    """Live memories of one namespace, and how many were first created recently."""

    namespace: str
    memories: int
    new: int


class MemoryGrowth(NamedTuple):
    """Memories first created on one UTC day (days since the epoch), of one type."""

    day: int
    type: str
    memories: int


@dataclass(frozen=True, slots=True)
class TableStats:
    """What the tables hold now (live memories, sessions, the queue, the archive)."""

    memories_by_type: dict[str, int]
    versions: int
    namespaces: list[NamespaceCount]
    memory_growth: list[MemoryGrowth]
    session_growth: dict[int, int]
    """Sessions created per UTC day."""
    event_growth: dict[int, int]
    """Events appended per UTC day."""
    sessions_by_status: dict[str, int]
    events_per_session: list[int]
    """Events of each session that has any, ascending."""
    queue_depth: int
    queue_failed: int
    queue_oldest: float | None
    """``enqueued_at`` of the oldest job, or None."""
    archive_entries: dict[str, int]


class StorageSizes(NamedTuple):
    """Bytes on disk: the file, its write-ahead log, the archive's share, free pages."""

    db_bytes: int
    wal_bytes: int
    archive_bytes: int
    free_bytes: int


class MetricsStore(Protocol):
    """Call-latency windows, and the counts and sizes ``stats`` reports."""

    def has_metrics(self) -> bool:
        """True when the file can hold metrics (one opened without migrating may not)."""
        ...

    def prune(self, before: float) -> None:
        """Delete the windows flushed before ``before``."""
        ...

    def add(self, row: MetricRow) -> None:
        """Store one window.

        Raises:
            ValueError, TypeError, OverflowError: the backend cannot store a
                value of ``row`` (the caller skips that row only).
        """
        ...

    def windows(self, since: float) -> list[MetricWindow]:
        """The windows flushed at or after ``since``."""
        ...

    def table_stats(self, now: float, *, growth_since: float, new_since: float) -> TableStats:
        """Table counts at ``now``; growth since ``growth_since``, new since ``new_since``."""
        ...

    def sizes(self) -> StorageSizes:
        """Bytes on disk now."""
        ...
