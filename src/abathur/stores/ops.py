"""``OpsKit``: what the operations kit (:mod:`abathur.ops`) asks of a backend.

``abathur health``, ``abathur metrics`` and the command line's checks run
beside a live application, on their own isolated, read-only access to the
storage, never through an open :class:`~abathur.stores.Backend`. They ask the
backend for a few snapshots, each read in one consistent transaction, and keep
the judging (thresholds, reports, formats) to themselves.

Example:
    >>> from abathur.stores.ops import QueueStats
    >>> QueueStats(depth=3, oldest_age_s=12.5).depth
    3
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from abathur.config import Settings

__all__ = [
    "CheckSkipped",
    "CopyReport",
    "HealthProbe",
    "MetricsProbe",
    "OpsKit",
    "QueueStats",
    "RelationStats",
    "ServerStats",
    "StorageFullError",
    "StorageLock",
]


class CheckSkipped(Exception):
    """Raised by an ``abathur check`` check that does not apply to this storage; says why."""


class StorageFullError(Exception):
    """The storage ran out of space while writing a copy (a backup's temporary file)."""


@dataclass(frozen=True)
class QueueStats:
    """The embedding queue: jobs waiting, and the age of the oldest in seconds (0 when none)."""

    depth: int
    oldest_age_s: float


@dataclass(frozen=True)
class RelationStats:
    """One table or index of a server database: its size and (tables) estimated rows."""

    name: str
    kind: str  # "table" or "index"
    table: str  # the table itself, or the table an index belongs to
    bytes: int
    rows_estimate: int | None = None  # tables only: the statistics' live row estimate


@dataclass(frozen=True)
class ServerStats:
    """What only a database server has (PostgreSQL): versions, size, connections, replication.

    ``replication_lag_s`` is ``None`` where there is no standby (and this is
    not one); ``wal_bytes`` is ``None`` when the role may not list ``pg_wal``.
    """

    server_version: str
    pgvector_version: str
    database_bytes: int
    connections: Mapping[str, int]  # this database's client connections, by state
    server_connections: int  # client connections to the whole server
    max_connections: int
    in_recovery: bool
    replication_lag_s: Mapping[str, float] | None
    slot_retained_bytes: Mapping[str, int]  # WAL each replication slot holds back
    wal_bytes: int | None
    last_backup_at: float | None  # Unix time recorded in the database by the last backup
    relations: tuple[RelationStats, ...] = ()


@dataclass(frozen=True)
class HealthProbe:
    """What ``abathur health`` reads from the storage, in one snapshot."""

    schema_version: int
    latest_schema_version: int
    first_write: float | None  # Unix time of the first audit record; None before any
    queue: QueueStats | None  # None when the storage has no embedding queue
    server: ServerStats | None = None  # a database server's own numbers (None: a file)


@dataclass(frozen=True)
class MetricsProbe:
    """What ``abathur metrics`` reads from the storage, in one snapshot."""

    schema_version: int
    rows: Mapping[str, int]  # rows per table
    sessions: Mapping[str, int]  # sessions per status (statuses with none are absent)
    memories: Mapping[str, int]  # live, unexpired current memories per type (likewise)
    queue: QueueStats | None
    server: ServerStats | None = None  # a server's numbers; then ``rows`` are estimates


@dataclass(frozen=True)
class CopyReport:
    """A copy of the storage, checked: what a backup manifest records of it.

    ``integrity`` is ``["ok"]`` for a sound copy, else its problems (then the
    other fields are empty); ``schema_problems`` lists what the migrations do
    not make (then nothing further is read).
    """

    integrity: list[str]
    user_version: int
    page_size: int
    row_counts: dict[str, int]
    audit_head: tuple[int, str]  # (seq, hash) of the audit chain's last record
    schema_problems: list[str] = field(default_factory=list)


class StorageLock(Protocol):
    """Exclusive hold on existing storage while a restore replaces it."""

    def settle(self) -> None:
        """Make the storage complete on its own (no side files) before it is replaced."""
        ...

    def close(self) -> None:
        """Release the hold."""
        ...


class OpsKit(Protocol):
    """The storage machinery of the operations kit, for storage that already exists."""

    def check_readable(self, path: Path) -> None:
        """Return if storage at ``path`` can be read; create nothing. Raises ``DatabaseError``."""
        ...

    def health_probe(self, path: Path, settings: Settings, now: float) -> HealthProbe:
        """Schema version, first write and queue of the storage at ``path``, read-only."""
        ...

    def metrics_probe(self, path: Path, settings: Settings, now: float) -> MetricsProbe:
        """Row counts, sessions, live memories and queue of the storage at ``path``, read-only."""
        ...

    def lock_exclusive(self, path: Path, timeout_ms: int) -> StorageLock:
        """Hold ``path`` exclusively; ``DatabaseInUseError`` while anything else has it open."""
        ...

    def copy_online(self, source: Path, target: Path, settings: Settings) -> None:
        """Write one consistent snapshot of ``source`` to the new file ``target``.

        Raises ``StorageFullError`` when the space runs out.
        """
        ...

    def inspect_copy(self, path: Path, *, what: str) -> CopyReport:
        """Check a copy (possibly hostile: read-only, reads only) and read its manifest fields."""
        ...
