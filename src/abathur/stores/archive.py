"""``ArchiveStore``: cold data moved out of the hot tables (the archive rows).

The protocol every backend implements; reach it inside a transaction as
``tx.archive`` (see :mod:`abathur.stores`). It holds the archive's own rows
(entries, compression dictionaries, runs) and the reads and deletes of hot
rows that archival moves: a session with its events, a memory with every
version, old versions of a memory. The payload format, compression,
verification and the policies stay in :mod:`abathur.archival`.

Rows of the hot tables travel as plain tuples in the column order named by
:data:`SESSION_COLUMNS`, :data:`EVENT_COLUMNS` and :data:`MEMORY_COLUMNS`:
the same lists an archive payload records, so what is read is what is stored
and what comes back.

Example:
    >>> from abathur.stores.archive import ARCHIVED_TABLES, CurrentMemory
    >>> ARCHIVED_TABLES["events"][:2]
    ('session_id', 'seq')
    >>> CurrentMemory(7, "user:alice", "lang", 2, "semantic", "live", 0.0, None).key
    'lang'
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple, Protocol, TypeAlias

__all__ = [
    "ARCHIVED_TABLES",
    "EVENT_COLUMNS",
    "MEMORY_COLUMNS",
    "SESSION_COLUMNS",
    "ArchiveStore",
    "CurrentMemory",
    "Dictionary",
    "EntryRow",
    "HotRow",
    "NewEntry",
    "StoredRow",
    "TerminatedSession",
]

# audit_seq (migration 007) travels with the rows, so restored rows verify
# against the audit records that wrote them (abathur.audit).
SESSION_COLUMNS: tuple[str, ...] = (
    "id",
    "app",
    "user",
    "status",
    "state",
    "revision",
    "created_at",
    "updated_at",
    "audit_seq",
)
EVENT_COLUMNS: tuple[str, ...] = (
    "session_id",
    "seq",
    "id",
    "author",
    "content",
    "state_delta",
    "metadata",
    "timestamp",
    "audit_seq",
)
MEMORY_COLUMNS: tuple[str, ...] = (
    "id",
    "namespace",
    "key",
    "version",
    "type",
    "value",
    "metadata",
    "status",
    "superseded_by_namespace",
    "superseded_by_key",
    "created_at",
    "first_created_at",
    "expires_at",
    "is_current",
    "audit_seq",
)
# The hot tables archival moves rows of, with their columns: the only table
# and column names a store may be asked to write rows into.
ARCHIVED_TABLES: dict[str, tuple[str, ...]] = {
    "sessions": SESSION_COLUMNS,
    "events": EVENT_COLUMNS,
    "memories": MEMORY_COLUMNS,
}

#: One value of a stored row, as SQL holds it.
Value: TypeAlias = int | float | str | bytes | None
#: One row of a hot table, in the column order of ``ARCHIVED_TABLES[table]``
#: (or the subset of those columns a call names).
HotRow: TypeAlias = tuple[Value, ...]


class EntryRow(NamedTuple):
    """An archive entry as ``abathur archive list`` shows it (no payload)."""

    id: int
    kind: str
    ref: str
    policy: str
    app: str | None
    user: str | None
    namespace: str | None
    rows: int
    raw_bytes: int
    stored_bytes: int
    run_id: int | None
    archived_at: float


class StoredRow(NamedTuple):
    """An archive entry's stored bytes and checksums, before anything in it is trusted.

    The checksums are None on a file archived before they existed.
    """

    id: int
    kind: str
    ref: str
    raw_bytes: int
    stored_bytes: int
    dict_id: int | None
    payload: bytes
    payload_sha256: str | None
    raw_sha256: str | None


class NewEntry(NamedTuple):
    """An archive entry to write: one item, compressed, with its checksums."""

    kind: str
    ref: str
    policy: str
    app: str | None
    user: str | None
    namespace: str | None
    rows: int
    raw_bytes: int
    stored_bytes: int
    dict_id: int | None
    run_id: int
    archived_at: float
    payload: bytes
    payload_sha256: str
    raw_sha256: str


class Dictionary(NamedTuple):
    """A compression dictionary; ``sha256`` is None on a file from before checksums."""

    id: int
    kind: str
    data: bytes
    sha256: str | None


class TerminatedSession(NamedTuple):
    """A terminated session a run may archive."""

    id: str
    app: str
    updated_at: float


class CurrentMemory(NamedTuple):
    """The current version of a memory, as a run examines it."""

    id: int
    namespace: str
    key: str
    version: int
    type: str
    status: str
    created_at: float
    expires_at: float | None


class ArchiveStore(Protocol):
    """Cold data moved out of the hot tables (the archive rows)."""

    # -- archive entries ---------------------------------------------------------

    def entries(
        self, *, kind: str | None, ref: str | None, before: int | None, limit: int
    ) -> list[EntryRow]:
        """Entries newest first, below id ``before``; ``ref`` only with ``kind``."""
        ...

    def entry(self, entry_id: int) -> tuple[EntryRow, StoredRow] | None:
        """One entry with its stored bytes, or None if there is none with this id."""
        ...

    def insert_entry(self, entry: NewEntry) -> int:
        """Write one archive entry; return its id."""
        ...

    def delete_entry(self, entry_id: int) -> None:
        """Remove one archive entry (it was restored)."""
        ...

    def has_checksums(self) -> bool:
        """Whether the archive's checksum columns exist (a file migrated past them)."""
        ...

    def stored_entries(self, *, checksummed: bool) -> Iterator[StoredRow]:
        """Every entry's stored bytes in id order, one at a time (for a check)."""
        ...

    # -- compression dictionaries --------------------------------------------------

    def latest_dictionary(self, kind: str) -> Dictionary | None:
        """The newest dictionary of ``kind``, if any."""
        ...

    def dictionary(self, dict_id: int, *, checksummed: bool) -> Dictionary | None:
        """Dictionary ``dict_id`` (its sha256 None unless ``checksummed``), if it exists."""
        ...

    def dictionaries(self, *, checksummed: bool) -> Iterator[Dictionary]:
        """Every dictionary in id order (for a check)."""
        ...

    def insert_dictionary(self, kind: str, data: bytes, sha256: str, created_at: float) -> int:
        """Store a newly trained dictionary; return its id."""
        ...

    # -- runs ----------------------------------------------------------------------

    def start_run(self, now: float) -> tuple[int, int | None]:
        """Mark runs still running as interrupted and start one: (its id, last interrupted)."""
        ...

    def count_batch(self, run_id: int, entries: int, rows: int) -> None:
        """Add one batch's entries and rows to its run's totals."""
        ...

    def finish_run(self, run_id: int, now: float, detail: str) -> None:
        """Mark a run done, with its per-policy ``detail`` (JSON)."""
        ...

    # -- hot rows a run moves out --------------------------------------------------

    def terminated_sessions(
        self, cutoff: float, after: tuple[float, str], limit: int
    ) -> list[TerminatedSession]:
        """Sessions terminated before ``cutoff``, in (updated_at, id) order after ``after``."""
        ...

    def session_rows(self, session_id: str) -> tuple[list[HotRow], list[HotRow]]:
        """A session's row (zero or one) and its events in order, in the archived columns."""
        ...

    def move_session_out(self, session_id: str) -> None:
        """Leave an archived stub of a terminated session and delete its events."""
        ...

    def current_memories(self, after_id: int, limit: int) -> list[CurrentMemory]:
        """Current versions of memories with an id above ``after_id``, in id order."""
        ...

    def memory_rows(self, namespace: str, key: str) -> list[HotRow]:
        """Every version of one memory, oldest first, in the archived columns."""
        ...

    def old_versions(
        self, namespace: str, key: str, *, up_to: int, written_before: float
    ) -> list[HotRow]:
        """Old (not current) versions up to ``up_to`` written before a time, oldest first."""
        ...

    def delete_memory(self, namespace: str, key: str) -> None:
        """Delete every version of one memory."""
        ...

    def delete_versions(self, ids: Sequence[int]) -> None:
        """Delete memory versions by id."""
        ...

    # -- putting rows back ---------------------------------------------------------

    def session_status(self, session_id: str) -> str | None:
        """The status of a session in the hot tables, or None if there is none."""
        ...

    def session_has_events(self, session_id: str) -> bool:
        """Whether a session has any event in the hot tables."""
        ...

    def memory_version_count(self, namespace: str, key: str) -> int:
        """How many versions of one memory the hot tables hold."""
        ...

    def memory_id_taken(self, memory_id: int) -> bool:
        """Whether a memory version with this id exists."""
        ...

    def is_live_memory(self, memory_id: int) -> bool:
        """Whether the memory version with this id exists with status live."""
        ...

    def current_version(self, namespace: str, key: str) -> int | None:
        """The current version number of one memory, or None if it has none."""
        ...

    def existing_versions(self, namespace: str, key: str, versions: Sequence[int]) -> list[int]:
        """Which of ``versions`` of one memory the hot tables hold."""
        ...

    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[HotRow]) -> int:
        """Insert rows into one of ``ARCHIVED_TABLES``; return the last row's id."""
        ...

    def update_session(self, session_id: str, columns: Sequence[str], row: HotRow) -> None:
        """Overwrite a session's columns (of ``SESSION_COLUMNS``) with ``row``."""
        ...

    # -- space -------------------------------------------------------------------

    def has_document_tables(self) -> bool:
        """Whether this file holds the document tables (documents, chunks)."""
        ...

    def auto_vacuum(self) -> str:
        """How the file gives freed space back: "none", "full" or "incremental"."""
        ...

    def free_bytes(self) -> int:
        """Bytes of free pages in the file, reused before the file grows."""
        ...
