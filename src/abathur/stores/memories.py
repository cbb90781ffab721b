"""``MemoryStore``: versioned memories (every version a row) and their namespaces.

The protocol every backend implements; reach it inside a transaction as
``tx.memories`` (see :mod:`abathur.stores`).

A memory ``(namespace, key)`` is a chain of versions; exactly one of them is
*current*. Rules (validation, version numbers, ``expected_version``, TTL,
consolidation) belong to :mod:`abathur.memory`: a store stores and finds rows.
A namespace *prefix* selects whole segments: ``"user:al"`` is ``user:al``
itself and every ``user:al:...``, never ``user:alice``.

Example:
    >>> from abathur.stores.memories import MemoryRow
    >>> row = MemoryRow("user:a", "k", 1, "semantic", '"x"', "{}", "live",
    ...                 None, None, 0.0, 0.0, 5.0, 1)
    >>> row.is_expired(now=10.0), row.is_absent(now=1.0)
    (True, False)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple, Protocol

__all__ = ["MemoryRow", "MemoryStore", "MemoryVersion", "MetadataValue", "PurgeCounts"]

#: A value a metadata filter compares with (``None`` matches JSON null).
MetadataValue = str | int | float | bool | None


class MemoryVersion(NamedTuple):
    """What one version holds, as written: the columns a write sets.

    ``value`` and ``metadata`` are JSON text; times are epoch seconds.
    """

    namespace: str
    key: str
    version: int
    type: str
    value: str
    metadata: str
    status: str
    superseded_by_namespace: str | None
    superseded_by_key: str | None
    first_created_at: float
    created_at: float
    expires_at: float | None


class MemoryRow(NamedTuple):
    """One stored version: :class:`MemoryVersion` plus its row ``id``."""

    namespace: str
    key: str
    version: int
    type: str
    value: str
    metadata: str
    status: str
    superseded_by_namespace: str | None
    superseded_by_key: str | None
    first_created_at: float
    created_at: float
    expires_at: float | None
    id: int

    def is_absent(self, now: float) -> bool:
        """True when the version reads as no memory: not live, or expired."""
        return self.status != "live" or self.is_expired(now)

    def is_expired(self, now: float) -> bool:
        """True when its TTL ran out at or before ``now``."""
        return self.expires_at is not None and self.expires_at <= now


class PurgeCounts(NamedTuple):
    """What a purge of a prefix erases besides the versions themselves."""

    keyword_rows: int  # versions the keyword index holds
    vectors: int  # versions with a vector
    embedding_jobs: int  # queued embedding jobs of the versions
    cached_vectors: int  # cached vectors only these versions used
    archived: int  # archive entries of memories under the prefix
    metrics: int  # read and write counters naming namespaces under it


class MemoryStore(Protocol):
    """Versioned memories (every version a row) and their namespaces."""

    def current(self, namespace: str, key: str) -> MemoryRow | None:
        """The current version of ``(namespace, key)``, whatever its status or expiry."""
        ...

    def history(self, namespace: str, key: str) -> list[MemoryRow]:
        """Every version of ``(namespace, key)``, oldest first."""
        ...

    def version(self, namespace: str, key: str, version: int) -> MemoryRow | None:
        """One version of ``(namespace, key)``, or None if there is no such version."""
        ...

    def retire_current(self, namespace: str, key: str) -> None:
        """Make the current version of ``(namespace, key)`` no longer current."""
        ...

    def insert_current(self, row: MemoryVersion, *, audit_seq: int) -> int:
        """Store ``row`` as the current version (retire the old one first); return its id.

        ``audit_seq`` is the audit record that covers the row.
        """
        ...

    def list_current(
        self,
        prefix: str,
        *,
        now: float,
        type: str | None = None,
        metadata: Mapping[str, MetadataValue] | None = None,
        limit: int | None = None,
        offset: int = 0,
        include_deleted: bool = False,
    ) -> list[MemoryRow]:
        """Unexpired current versions under ``prefix``, by (namespace, key).

        Live ones only unless ``include_deleted``; ``type`` and every
        ``metadata`` entry (key equals value, JSON types compared as
        ``==`` does: ``1`` matches ``1.0``, not ``true``) must match.
        ``limit`` None: all of them.
        """
        ...

    def namespaces(self, prefix: str | None, *, now: float, limit: int | None) -> list[str]:
        """Namespaces (under ``prefix``; None: all) holding a live, unexpired memory, sorted."""
        ...

    def namespace_counts(
        self, prefix: str | None, *, now: float, limit: int
    ) -> list[tuple[str, int]]:
        """:meth:`namespaces` with each one's count of live, unexpired memories."""
        ...

    def rows_by_id(self, ids: Sequence[int]) -> list[MemoryRow]:
        """The versions with these row ids (those that exist), in no given order."""
        ...

    def ids_under(self, prefix: str, *, now: float, type: str | None = None) -> list[int]:
        """Ids of the live, unexpired current versions under ``prefix`` (of ``type``)."""
        ...

    def ids_matching(self, ids: Sequence[int], metadata: Mapping[str, MetadataValue]) -> set[int]:
        """The ids among ``ids`` whose metadata matches every entry of ``metadata``."""
        ...

    def current_live(
        self, *, now: float | None = None, ids: Sequence[int] | None = None
    ) -> Iterator[MemoryRow]:
        """Current live versions by id: unexpired at ``now`` if given, among ``ids`` if given.

        What the search indexes hold; streamed, for a rebuild over every memory.
        """
        ...

    def awaiting_vectors(self, prefix: str) -> int:
        """Current live versions under ``prefix`` still waiting for their vector (not failed)."""
        ...

    # -- purge: every version under a prefix (None: all), and all that names it --

    def versions_under(self, prefix: str | None) -> list[MemoryRow]:
        """Every version (any status, current or not) under ``prefix``; None: all."""
        ...

    def pointing_into(self, prefix: str | None) -> list[MemoryRow]:
        """Versions outside ``prefix`` whose ``superseded_by`` names a memory inside it."""
        ...

    def purge_counts(
        self, prefix: str | None, ids: Sequence[int], text_hashes: Sequence[str]
    ) -> PurgeCounts:
        """What :meth:`erase` would remove besides versions ``ids`` (those under ``prefix``).

        ``text_hashes`` are the content hashes of the texts those versions
        embedded (or would have); a cached vector goes only if nothing else uses it.
        """
        ...

    def erase(self, prefix: str | None, ids: Sequence[int], text_hashes: Sequence[str]) -> None:
        """Remove what :meth:`purge_counts` counts, and versions ``ids``."""
        ...

    def unlink(self, item_id: int, *, audit_seq: int) -> None:
        """Clear the ``superseded_by`` of version ``item_id``, now covered by ``audit_seq``."""
        ...

    def audit_seqs_in_use(self, seqs: Iterable[int]) -> set[int]:
        """The audit records among ``seqs`` that a stored version still names."""
        ...
