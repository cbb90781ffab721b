"""``DocumentStore``: synced document roots, their documents and chunks.

The protocol every backend implements; reach it inside a transaction as
``tx.documents`` (see :mod:`abathur.stores`). A *root* is a synced directory
(its resolved path), a *document* one file under it, a *chunk* one piece of a
document's text. The keyword and vector indexes of chunks are not here: the
backend keeps its keyword index in step with the chunks it stores, and the
vectors are :class:`~abathur.stores.search.SearchIndex`'s.

Example:
    >>> from abathur.stores.documents import DocumentRow
    >>> DocumentRow(id=1, content_hash="ab", status="indexed", error=None, size=3, mtime_ns=7)
    DocumentRow(id=1, content_hash='ab', status='indexed', error=None, size=3, mtime_ns=7)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple, Protocol

__all__ = [
    "ChunkEntry",
    "ChunkHit",
    "ChunkRef",
    "DocumentFile",
    "DocumentRow",
    "DocumentState",
    "DocumentStore",
]


class DocumentState(NamedTuple):
    """What a sync remembers of one file of a root, to tell whether it changed."""

    path: str
    content_hash: str
    size: int
    mtime_ns: int
    status: str  # 'indexed' | 'failed'
    error: str | None
    synced_at: float


class DocumentRow(NamedTuple):
    """One stored document, as a write reads it before changing it."""

    id: int
    content_hash: str
    status: str
    error: str | None
    size: int
    mtime_ns: int


class DocumentFile(NamedTuple):
    """What a write stores about one file: the columns of a document besides its root and path."""

    content_hash: str
    size: int
    mtime_ns: int
    status: str
    error: str | None
    chunks: int
    synced_at: float


class ChunkRef(NamedTuple):
    """One chunk of a document, as a write compares it with the new text."""

    id: int
    content_hash: str
    ordinal: int


class ChunkEntry(NamedTuple):
    """One chunk as the embedding queue and the vector index see it."""

    id: int
    heading: str
    text: str
    root_id: int


class ChunkHit(NamedTuple):
    """One chunk found by a search, with where it lives."""

    id: int
    heading: str
    text: str
    ordinal: int
    path: str
    root: str


class DocumentStore(Protocol):
    """Synced document roots, their documents and chunks."""

    def is_ready(self) -> bool:
        """True if the store's tables exist (a file not migrated yet has none)."""
        ...

    # Roots -----------------------------------------------------------------

    def root_id(self, path: str) -> int | None:
        """The id of the root synced from ``path``, or None if it never was."""
        ...

    def insert_root(self, path: str, *, created_at: float) -> int:
        """Record a new root; returns its id."""
        ...

    def mark_root_synced(self, root_id: int, *, at: float) -> None:
        """Set when the root was last written to by a sync."""
        ...

    def forget_root(self, root_id: int) -> bool:
        """Delete the root if no document of it is left; True if it was deleted."""
        ...

    # Documents -------------------------------------------------------------

    def documents_of_root(self, root_id: int) -> list[DocumentState]:
        """What is stored of every file of a root."""
        ...

    def document_by_path(self, root_id: int, path: str) -> DocumentRow | None:
        """The document at ``path`` (relative to the root), or None."""
        ...

    def insert_document(self, root_id: int, path: str, file: DocumentFile) -> int:
        """Record a new document; returns its id."""
        ...

    def update_document(self, document_id: int, file: DocumentFile) -> None:
        """Replace what is stored about a document's file."""
        ...

    def touch_document(
        self, document_id: int, *, size: int, mtime_ns: int, synced_at: float
    ) -> None:
        """Record that a document was read again and found unchanged."""
        ...

    def delete_document(self, document_id: int) -> None:
        """Delete a document (its chunks must be deleted first)."""
        ...

    # Chunks ----------------------------------------------------------------

    def chunks_of_document(self, document_id: int) -> list[ChunkRef]:
        """A document's chunks, in order."""
        ...

    def insert_chunk(
        self,
        document_id: int,
        *,
        ordinal: int,
        heading: str,
        text: str,
        content_hash: str,
        tokens: int,
    ) -> int:
        """Store one chunk (the keyword index follows); returns its id."""
        ...

    def set_chunk_ordinal(self, chunk_id: int, ordinal: int) -> None:
        """Move a kept chunk to its new place in the document."""
        ...

    def delete_chunk(self, chunk_id: int) -> None:
        """Delete one chunk (the keyword index follows)."""
        ...

    def chunk_entries(self, ids: Sequence[int]) -> list[ChunkEntry]:
        """The chunks among ``ids`` that still exist, in no particular order."""
        ...

    def live_chunk_entries(self) -> Iterable[ChunkEntry]:
        """Every chunk, by id, read lazily (backfill and reindex)."""
        ...

    def chunk_hits(self, ids: Sequence[int]) -> list[ChunkHit]:
        """The chunks among ``ids`` that still exist, with their document and root paths."""
        ...

    def chunk_ids_under(self, root_id: int | None, path_prefix: str) -> list[int]:
        """Ids of the chunks of documents at or under ``path_prefix`` (of one root, or all)."""
        ...
