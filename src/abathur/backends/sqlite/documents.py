"""SQLite's :class:`~abathur.stores.documents.DocumentStore`."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence

import apsw

from abathur.backends.sqlite.connection import table_exists
from abathur.backends.sqlite.context import SqliteContext
from abathur.stores.documents import (
    ChunkEntry,
    ChunkHit,
    ChunkRef,
    DocumentFile,
    DocumentRow,
    DocumentState,
)

__all__ = ["SqliteDocumentStore"]

SQL_ROOT_BY_PATH = "SELECT id FROM document_roots WHERE path = ?"
SQL_ROOT_INSERT = "INSERT INTO document_roots (path, created_at) VALUES (?, ?) RETURNING id"
SQL_ROOT_SYNCED = "UPDATE document_roots SET synced_at = ? WHERE id = ?"
# forget, last: the root row goes only once no document of it is left.
SQL_ROOT_FORGET = (
    "DELETE FROM document_roots WHERE id = ? "
    "AND NOT EXISTS (SELECT 1 FROM documents WHERE root_id = document_roots.id)"
)

# sync: what is known of a root's files (the UNIQUE (root_id, path) index).
SQL_DOCUMENTS_OF_ROOT = (
    "SELECT path, content_hash, size, mtime_ns, status, error, synced_at FROM documents "
    "WHERE root_id = ?"
)
# sync, per file, inside its write: the UNIQUE (root_id, path) index.
SQL_DOCUMENT_BY_PATH = (
    "SELECT id, content_hash, status, error, size, mtime_ns FROM documents "
    "WHERE root_id = ? AND path = ?"
)
SQL_DOCUMENT_INSERT = (
    "INSERT INTO documents (root_id, path, content_hash, size, mtime_ns, status, error, "
    "chunks, synced_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)
SQL_DOCUMENT_UPDATE = (
    "UPDATE documents SET content_hash = ?, size = ?, mtime_ns = ?, status = ?, error = ?, "
    "chunks = ?, synced_at = ? WHERE id = ?"
)
SQL_DOCUMENT_TOUCH = "UPDATE documents SET size = ?, mtime_ns = ?, synced_at = ? WHERE id = ?"
SQL_DOCUMENT_DELETE = "DELETE FROM documents WHERE id = ?"

# A document's chunks in order: index chunks_by_document.
SQL_CHUNKS_OF_DOCUMENT = (
    "SELECT id, content_hash, ordinal FROM chunks WHERE document_id = ? ORDER BY ordinal"
)
SQL_CHUNK_INSERT = (
    "INSERT INTO chunks (document_id, ordinal, heading, text, content_hash, tokens) "
    "VALUES (?, ?, ?, ?, ?, ?) RETURNING id"
)
SQL_CHUNK_ORDINAL = "UPDATE chunks SET ordinal = ? WHERE id = ?"
SQL_CHUNK_DELETE = "DELETE FROM chunks WHERE id = ?"

_SQL_CHUNK_ITEMS = (
    "SELECT c.id, c.heading, c.text, d.root_id FROM chunks AS c "
    "JOIN documents AS d ON d.id = c.document_id"
)
SQL_CHUNK_ITEMS_BY_ID = _SQL_CHUNK_ITEMS + " WHERE c.id IN (SELECT value FROM json_each(?))"
SQL_LIVE_CHUNK_ITEMS = _SQL_CHUNK_ITEMS + " ORDER BY c.id"

# documents.search, vector ranking under a path prefix: the chunk ids allowed.
# ':upper' is the prefix + '0', the character after '/'.
SQL_ALLOWED_CHUNKS = (
    "SELECT c.id FROM documents AS d JOIN chunks AS c ON c.document_id = d.id "
    "WHERE (:root_id IS NULL OR d.root_id = :root_id) "
    "AND (d.path = :prefix OR (d.path >= :lower AND d.path < :upper))"
)

SQL_HITS = (
    "SELECT c.id, c.heading, c.text, c.ordinal, d.path, r.path FROM chunks AS c "
    "JOIN documents AS d ON d.id = c.document_id "
    "JOIN document_roots AS r ON r.id = d.root_id "
    "WHERE c.id IN (SELECT value FROM json_each(?))"
)


class SqliteDocumentStore:
    """:class:`~abathur.stores.documents.DocumentStore` on one apsw connection (its transaction).

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur.backends.sqlite import Database
        >>> async def demo():
        ...     db = await Database.open(pathlib.Path(tempfile.mkdtemp()) / "x.db")
        ...     try:
        ...         made = await db.write(lambda tx: tx.documents.insert_root("/d", created_at=0.0))
        ...         found = await db.read(lambda tx: tx.documents.root_id("/d"))
        ...         return found == made, await db.read(lambda tx: tx.documents.root_id("/x"))
        ...     finally:
        ...         await db.close()
        >>> asyncio.run(demo())
        (True, None)
    """

    def __init__(self, conn: apsw.Connection, context: SqliteContext) -> None:
        self._conn = conn
        self._context = context

    def is_ready(self) -> bool:
        """True if the ``chunks`` table exists (a file not migrated yet has none)."""
        return table_exists(self._conn, "chunks")

    def root_id(self, path: str) -> int | None:
        """The id of the root synced from ``path``, or None."""
        for (root_id,) in self._conn.execute(SQL_ROOT_BY_PATH, (path,)):
            return _int(root_id)
        return None

    def insert_root(self, path: str, *, created_at: float) -> int:
        """Record a new root; returns its id."""
        ((root_id,),) = self._conn.execute(SQL_ROOT_INSERT, (path, created_at)).fetchall()
        return _int(root_id)

    def mark_root_synced(self, root_id: int, *, at: float) -> None:
        """Set when the root was last written to by a sync."""
        self._conn.execute(SQL_ROOT_SYNCED, (at, root_id))

    def forget_root(self, root_id: int) -> bool:
        """Delete the root if no document of it is left; True if it was deleted."""
        self._conn.execute(SQL_ROOT_FORGET, (root_id,))
        return bool(self._conn.changes())

    def documents_of_root(self, root_id: int) -> list[DocumentState]:
        """What is stored of every file of a root."""
        return [
            DocumentState(*row) for row in self._conn.execute(SQL_DOCUMENTS_OF_ROOT, (root_id,))
        ]

    def document_by_path(self, root_id: int, path: str) -> DocumentRow | None:
        """The document at ``path`` (relative to the root), or None."""
        for row in self._conn.execute(SQL_DOCUMENT_BY_PATH, (root_id, path)):
            return DocumentRow(*row)
        return None

    def insert_document(self, root_id: int, path: str, file: DocumentFile) -> int:
        """Record a new document; returns its id."""
        ((document_id,),) = self._conn.execute(
            SQL_DOCUMENT_INSERT, (root_id, path, *file)
        ).fetchall()
        return _int(document_id)

    def update_document(self, document_id: int, file: DocumentFile) -> None:
        """Replace what is stored about a document's file."""
        self._conn.execute(SQL_DOCUMENT_UPDATE, (*file, document_id))

    def touch_document(
        self, document_id: int, *, size: int, mtime_ns: int, synced_at: float
    ) -> None:
        """Record that a document was read again and found unchanged."""
        self._conn.execute(SQL_DOCUMENT_TOUCH, (size, mtime_ns, synced_at, document_id))

    def delete_document(self, document_id: int) -> None:
        """Delete a document (its chunks must be deleted first)."""
        self._conn.execute(SQL_DOCUMENT_DELETE, (document_id,))

    def chunks_of_document(self, document_id: int) -> list[ChunkRef]:
        """A document's chunks, in order."""
        return [
            ChunkRef(*row) for row in self._conn.execute(SQL_CHUNKS_OF_DOCUMENT, (document_id,))
        ]

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
        """Store one chunk (``chunks_fts`` follows by trigger); returns its id."""
        ((chunk_id,),) = self._conn.execute(
            SQL_CHUNK_INSERT, (document_id, ordinal, heading, text, content_hash, tokens)
        ).fetchall()
        return _int(chunk_id)

    def set_chunk_ordinal(self, chunk_id: int, ordinal: int) -> None:
        """Move a kept chunk to its new place in the document."""
        self._conn.execute(SQL_CHUNK_ORDINAL, (ordinal, chunk_id))

    def delete_chunk(self, chunk_id: int) -> None:
        """Delete one chunk (``chunks_fts`` follows by trigger)."""
        self._conn.execute(SQL_CHUNK_DELETE, (chunk_id,))

    def chunk_entries(self, ids: Sequence[int]) -> list[ChunkEntry]:
        """The chunks among ``ids`` that still exist."""
        if not self.is_ready():
            return []
        rows = self._conn.execute(SQL_CHUNK_ITEMS_BY_ID, (json.dumps(list(ids)),))
        return [ChunkEntry(*row) for row in rows]

    def live_chunk_entries(self) -> Iterator[ChunkEntry]:
        """Every chunk, by id, a thousand rows at a time."""
        if not self.is_ready():
            return
        cursor = self._conn.execute(SQL_LIVE_CHUNK_ITEMS)
        while rows := list(itertools.islice(cursor, 1000)):
            yield from (ChunkEntry(*row) for row in rows)

    def chunk_hits(self, ids: Sequence[int]) -> list[ChunkHit]:
        """The chunks among ``ids`` that still exist, with their document and root paths."""
        return [ChunkHit(*row) for row in self._conn.execute(SQL_HITS, (json.dumps(list(ids)),))]

    def chunk_ids_under(self, root_id: int | None, path_prefix: str) -> list[int]:
        """Ids of the chunks of documents at or under ``path_prefix`` (of one root, or all)."""
        params = {
            "root_id": root_id,
            "prefix": path_prefix,
            "lower": path_prefix + "/",
            "upper": path_prefix + "0",
        }
        return [int(chunk_id) for (chunk_id,) in self._conn.execute(SQL_ALLOWED_CHUNKS, params)]


def _int(value: object) -> int:
    # An id from RETURNING or a SELECT of an INTEGER PRIMARY KEY.
    if not isinstance(value, int):
        raise TypeError(f"expected an integer id, got {type(value).__name__}")
    return value
