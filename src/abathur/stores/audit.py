"""``AuditStore``: the hash-chained audit log's records and head.

The protocol every backend implements; reach it inside a transaction as
``tx.audit`` (see :mod:`abathur.stores`). The store keeps records; the chain's
rules (digests, salts, what a record covers, redaction, verification and the
format-1 upgrade) are :mod:`abathur.audit`'s.

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from abathur.backends import open_backend
    >>> from abathur.config import Settings
    >>> async def demo():
    ...     path = pathlib.Path(tempfile.mkdtemp()) / "x.db"
    ...     backend = await open_backend(Settings(db=path))
    ...     try:
    ...         return await backend.read(lambda tx: tx.audit.head())
    ...     finally:
    ...         await backend.close()
    >>> print(asyncio.run(demo()))
    None
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import NamedTuple, Protocol

__all__ = [
    "AuditHead",
    "AuditRow",
    "AuditStore",
    "ChainRow",
    "CoveredRow",
    "MemoryBounds",
    "RecordRow",
    "Rehash",
]


class AuditHead(NamedTuple):
    """The newest record's seq and hash, kept apart from the log."""

    seq: int
    hash: str


class AuditRow(NamedTuple):
    """One record as written by :func:`abathur.audit.append` (format 2)."""

    seq: int
    at: float
    action: str
    entity: str
    entity_id: str
    detail: str
    prev_hash: str
    hash: str
    salt: bytes
    body_hash: str
    content_hash: str | None


class ChainRow(NamedTuple):
    """One record with everything the chain walk checks, in seq order."""

    seq: int
    at: float
    action: str
    entity: str
    entity_id: str
    detail: str
    prev_hash: str
    hash: str
    format: int
    salt: bytes | None
    body_hash: str | None
    content_hash: str | None
    redacted: int


class RecordRow(NamedTuple):
    """One record as :meth:`abathur.audit.AuditLog.records` shows it; ``detail`` is JSON text."""

    seq: int
    at: float
    action: str
    entity: str
    entity_id: str
    detail: str


class Rehash(NamedTuple):
    """New hashing fields of one record, for the format-1 upgrade."""

    seq: int
    salt: bytes | None
    body_hash: str | None
    prev_hash: str
    hash: str


class CoveredRow(NamedTuple):
    """One row of a covered table beside the record its ``audit_seq`` names.

    ``record_seq`` is None when no record has that seq; ``values`` are the
    covered columns in the order asked for.
    """

    label: str
    audit_seq: int | None
    record_seq: int | None
    content_hash: str | None
    salt: bytes | None
    redacted: int | None
    values: tuple[object, ...]


class MemoryBounds(NamedTuple):
    """Entity ids of memories under a prefix: [eq_lo, eq_hi) its own namespace,
    [sub_lo, sub_hi) the namespaces below it."""

    eq_lo: str
    eq_hi: str
    sub_lo: str
    sub_hi: str


class AuditStore(Protocol):
    """The audit log's records and head, inside the caller's transaction."""

    # -- the chain -------------------------------------------------------------

    def head(self) -> AuditHead | None:
        """The newest record's (seq, hash); None before the first record."""
        ...

    def set_head(self, head: AuditHead, /) -> None:
        """Make ``head`` the newest record's (seq, hash)."""
        ...

    def insert(self, record: AuditRow, /) -> None:
        """Add one format-2 record."""
        ...

    def chain(self) -> Iterator[ChainRow]:
        """Every record, oldest first (streamed: a long log is never held whole)."""
        ...

    def records(
        self, *, entity: str | None, entity_id: str | None, after_seq: int, limit: int
    ) -> list[RecordRow]:
        """Records after ``after_seq`` in order; ``None`` for entity or entity_id means any."""
        ...

    # -- purges --------------------------------------------------------------

    def redact(self, seqs: Sequence[int], /) -> int:
        """Blank names, detail and salt of these unredacted format-2 records; return how many."""
        ...

    def memory_record_seqs(self, bounds: MemoryBounds, /) -> set[int]:
        """Seqs of unredacted records naming a memory whose ``namespace/key`` is in ``bounds``
        (its own records, a supersede's winner, an archive restore's ref)."""
        ...

    def user_session_ids(self, app: str, user: str, /) -> set[str]:
        """Ids of sessions of (app, user) the log has a create or delete record of."""
        ...

    def session_task_ids(self, sessions: Collection[str], /) -> set[str]:
        """Ids of tasks the log says were created in one of ``sessions``."""
        ...

    def session_record_seqs(
        self, sessions: Collection[str], tasks: Collection[str], /
    ) -> set[int]:
        """Seqs of unredacted records of these sessions, their events, these tasks,
        and archive restores of these sessions."""
        ...

    def root_record_seqs(self, root: str, /) -> set[int]:
        """Seqs of unredacted records of the document root at path ``root``."""
        ...

    # -- content coverage and the format-1 upgrade ------------------------------

    def has_column(self, table: str, column: str, /) -> bool:
        """True when ``table`` has ``column`` (files before a migration lack some)."""
        ...

    def covered_rows(self, table: str, columns: Sequence[str], /) -> Iterator[CoveredRow]:
        """Each row of ``table`` with ``columns`` and the record its ``audit_seq`` names."""
        ...

    def memories_not_at_newest(self, limit: int, /) -> list[tuple[str, str, int, int, int | None]]:
        """Up to ``limit`` memories whose current version is not exactly one, the newest:
        (namespace, key, newest version, rows marked current, current version)."""
        ...

    def first_format(self) -> int | None:
        """The format of the oldest record; None when the log is empty."""
        ...

    def has_rows_without_record(self, tables: Iterable[str], /) -> bool:
        """True when a row of one of ``tables`` has no ``audit_seq``."""
        ...

    def rows_without_record(self, tables: Iterable[str], /) -> dict[str, int]:
        """Per table, how many rows have no ``audit_seq``."""
        ...

    def archived_rows(self) -> tuple[dict[str, float], int]:
        """Rows held in archive entries, per kind, and how many session entries there are."""
        ...

    def records_after(self, seq: int, limit: int, /) -> list[ChainRow]:
        """Up to ``limit`` records after ``seq``, oldest first."""
        ...

    def rehash(self, updates: Sequence[Rehash], /) -> None:
        """Make these records format 2 with their new salt and hashes."""
        ...
