"""PostgreSQL's :class:`~abathur.stores.documents.DocumentStore` (issue 14).

Mirrors :mod:`abathur.backends.sqlite.documents` statement by statement. What
differs, and why:

* a chunk's keyword row (``chunks_fts``, migration 050) is written by
  :meth:`PgDocumentStore.insert_chunk`, a second statement, with the memory
  index's tokenizer (:func:`abathur.backends.postgres.search.chunk_fts_params`:
  unicode61's folding is Python's); deleting a chunk cascades to it, and
  triggers keep BM25's statistics, as the FTS5 triggers do on SQLite;
* id lists are bound as one ``bigint[]`` (``= ANY(...)``) where SQLite reads
  a JSON array through ``json_each``;
* the listings SQLite returns in index order without saying so get an
  explicit ``ORDER BY`` giving the same order (PostgreSQL promises none);
* :meth:`PgDocumentStore.live_chunk_entries` pages by id (keyset) where
  SQLite steps one cursor: same rows, same order, read lazily.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import psycopg

from abathur.backends.postgres.context import PgContext
from abathur.backends.postgres.search import SQL_CHUNK_FTS_INSERT, chunk_fts_params
from abathur.stores.documents import (
    ChunkEntry,
    ChunkHit,
    ChunkRef,
    DocumentFile,
    DocumentRow,
    DocumentState,
)

__all__ = ["PgDocumentStore"]

SQL_READY = "SELECT to_regclass('chunks') IS NOT NULL"

SQL_ROOT_BY_PATH = "SELECT id FROM document_roots WHERE path = %(path)s"
SQL_ROOT_INSERT = (
    "INSERT INTO document_roots (path, created_at) VALUES (%(path)s, %(created_at)s) RETURNING id"
)
SQL_ROOT_SYNCED = "UPDATE document_roots SET synced_at = %(at)s WHERE id = %(id)s"
# forget, last: the root row goes only once no document of it is left.
SQL_ROOT_FORGET = (
    "DELETE FROM document_roots WHERE id = %(id)s "
    "AND NOT EXISTS (SELECT 1 FROM documents WHERE root_id = document_roots.id)"
)

# sync: what is known of a root's files. SQLite walks its UNIQUE (root_id,
# path) index, so its rows come by path; the ORDER BY says so here.
SQL_DOCUMENTS_OF_ROOT = (
    "SELECT path, content_hash, size, mtime_ns, status, error, synced_at FROM documents "
    "WHERE root_id = %(root_id)s ORDER BY path"
)
SQL_DOCUMENT_BY_PATH = (
    "SELECT id, content_hash, status, error, size, mtime_ns FROM documents "
    "WHERE root_id = %(root_id)s AND path = %(path)s"
)
SQL_DOCUMENT_INSERT = (
    "INSERT INTO documents (root_id, path, content_hash, size, mtime_ns, status, error, "
    "chunks, synced_at) VALUES (%(root_id)s, %(path)s, %(content_hash)s, %(size)s, "
    "%(mtime_ns)s, %(status)s, %(error)s, %(chunks)s, %(synced_at)s) RETURNING id"
)
SQL_DOCUMENT_UPDATE = (
    "UPDATE documents SET content_hash = %(content_hash)s, size = %(size)s, "
    "mtime_ns = %(mtime_ns)s, status = %(status)s, error = %(error)s, chunks = %(chunks)s, "
    "synced_at = %(synced_at)s WHERE id = %(id)s"
)
SQL_DOCUMENT_TOUCH = (
    "UPDATE documents SET size = %(size)s, mtime_ns = %(mtime_ns)s, synced_at = %(synced_at)s "
    "WHERE id = %(id)s"
)
SQL_DOCUMENT_DELETE = "DELETE FROM documents WHERE id = %(id)s"

# A document's chunks in order: index chunks_by_document.
SQL_CHUNKS_OF_DOCUMENT = (
    "SELECT id, content_hash, ordinal FROM chunks WHERE document_id = %(document_id)s "
    "ORDER BY ordinal"
)
# The keyword row follows in a second statement (SQL_CHUNK_FTS_INSERT).
SQL_CHUNK_INSERT = (
    "INSERT INTO chunks (document_id, ordinal, heading, text, content_hash, tokens) "
    "VALUES (%(document_id)s, %(ordinal)s, %(heading)s, %(text)s, %(content_hash)s, "
    "%(tokens)s) RETURNING id"
)
SQL_CHUNK_ORDINAL = "UPDATE chunks SET ordinal = %(ordinal)s WHERE id = %(id)s"
SQL_CHUNK_DELETE = "DELETE FROM chunks WHERE id = %(id)s"

_SQL_CHUNK_ITEMS = (
    "SELECT c.id, c.heading, c.text, d.root_id FROM chunks AS c "
    "JOIN documents AS d ON d.id = c.document_id"
)
SQL_CHUNK_ITEMS_BY_ID = _SQL_CHUNK_ITEMS + " WHERE c.id = ANY(%(ids)s::bigint[])"
# Backfill and reindex: every chunk by id, a page at a time after the last id seen.
SQL_LIVE_CHUNK_ITEMS = _SQL_CHUNK_ITEMS + " WHERE c.id > %(after)s ORDER BY c.id LIMIT %(limit)s"

# documents.search, vector ranking under a path prefix: the chunk ids allowed.
# 'upper' is the prefix + '0', the character after '/'. The casts type the
# NULL root_id (PostgreSQL cannot infer a type for a bare 'IS NULL' parameter).
# ORDER BY: the order SQLite's plan (a scan of chunks_by_document) gives.
SQL_ALLOWED_CHUNKS = (
    "SELECT c.id FROM documents AS d JOIN chunks AS c ON c.document_id = d.id "
    "WHERE (%(root_id)s::bigint IS NULL OR d.root_id = %(root_id)s::bigint) "
    "AND (d.path = %(prefix)s OR (d.path >= %(lower)s AND d.path < %(upper)s)) "
    "ORDER BY c.document_id, c.ordinal, c.id"
)

SQL_HITS = (
    "SELECT c.id, c.heading, c.text, c.ordinal, d.path, r.path FROM chunks AS c "
    "JOIN documents AS d ON d.id = c.document_id "
    "JOIN document_roots AS r ON r.id = d.root_id "
    "WHERE c.id = ANY(%(ids)s::bigint[])"
)

# Rows per page of live_chunk_entries (SQLite reads its cursor 1000 at a time).
_PAGE = 1000
_MIN_ID = -(2**63)


class PgDocumentStore:
    """:class:`~abathur.stores.documents.DocumentStore` on one psycopg connection, in its
    transaction (the backend opens, commits and retries it; this store never does)."""

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]], context: PgContext) -> None:
        self._conn = conn
        self._context = context

    def _one(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        return self._conn.execute(sql, params).fetchone()

    def _id(self, sql: str, params: dict[str, Any]) -> int:
        row = self._one(sql, params)
        if row is None:  # pragma: no cover - INSERT ... RETURNING always returns its row
            raise RuntimeError("INSERT ... RETURNING id returned no row")
        return int(row[0])

    def is_ready(self) -> bool:
        """True if the ``chunks`` table exists (a database not migrated yet has none)."""
        row = self._one(SQL_READY, {})
        return bool(row and row[0])

    def root_id(self, path: str) -> int | None:
        """The id of the root synced from ``path``, or None."""
        row = self._one(SQL_ROOT_BY_PATH, {"path": path})
        return None if row is None else int(row[0])

    def insert_root(self, path: str, *, created_at: float) -> int:
        """Record a new root; returns its id."""
        return self._id(SQL_ROOT_INSERT, {"path": path, "created_at": created_at})

    def mark_root_synced(self, root_id: int, *, at: float) -> None:
        """Set when the root was last written to by a sync."""
        self._conn.execute(SQL_ROOT_SYNCED, {"at": at, "id": root_id})

    def forget_root(self, root_id: int) -> bool:
        """Delete the root if no document of it is left; True if it was deleted."""
        return self._conn.execute(SQL_ROOT_FORGET, {"id": root_id}).rowcount > 0

    def documents_of_root(self, root_id: int) -> list[DocumentState]:
        """What is stored of every file of a root (by path, as SQLite's index gives them)."""
        rows = self._conn.execute(SQL_DOCUMENTS_OF_ROOT, {"root_id": root_id})
        return [DocumentState(*row) for row in rows]

    def document_by_path(self, root_id: int, path: str) -> DocumentRow | None:
        """The document at ``path`` (relative to the root), or None."""
        row = self._one(SQL_DOCUMENT_BY_PATH, {"root_id": root_id, "path": path})
        return None if row is None else DocumentRow(*row)

    def insert_document(self, root_id: int, path: str, file: DocumentFile) -> int:
        """Record a new document; returns its id."""
        return self._id(SQL_DOCUMENT_INSERT, {"root_id": root_id, "path": path, **file._asdict()})

    def update_document(self, document_id: int, file: DocumentFile) -> None:
        """Replace what is stored about a document's file."""
        self._conn.execute(SQL_DOCUMENT_UPDATE, {**file._asdict(), "id": document_id})

    def touch_document(
        self, document_id: int, *, size: int, mtime_ns: int, synced_at: float
    ) -> None:
        """Record that a document was read again and found unchanged."""
        params = {"size": size, "mtime_ns": mtime_ns, "synced_at": synced_at, "id": document_id}
        self._conn.execute(SQL_DOCUMENT_TOUCH, params)

    def delete_document(self, document_id: int) -> None:
        """Delete a document (its chunks must be deleted first)."""
        self._conn.execute(SQL_DOCUMENT_DELETE, {"id": document_id})

    def chunks_of_document(self, document_id: int) -> list[ChunkRef]:
        """A document's chunks, in order."""
        rows = self._conn.execute(SQL_CHUNKS_OF_DOCUMENT, {"document_id": document_id})
        return [ChunkRef(*row) for row in rows]

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
        """Store one chunk and its keyword row (``chunks_fts``, migration 050); returns its id."""
        params = {
            "document_id": document_id,
            "ordinal": ordinal,
            "heading": heading,
            "text": text,
            "content_hash": content_hash,
            "tokens": tokens,
        }
        chunk_id = self._id(SQL_CHUNK_INSERT, params)
        self._conn.execute(SQL_CHUNK_FTS_INSERT, chunk_fts_params(chunk_id, heading, text))
        return chunk_id

    def set_chunk_ordinal(self, chunk_id: int, ordinal: int) -> None:
        """Move a kept chunk to its new place in the document."""
        self._conn.execute(SQL_CHUNK_ORDINAL, {"ordinal": ordinal, "id": chunk_id})

    def delete_chunk(self, chunk_id: int) -> None:
        """Delete one chunk (its keyword row goes with it)."""
        self._conn.execute(SQL_CHUNK_DELETE, {"id": chunk_id})

    def chunk_entries(self, ids: Sequence[int]) -> list[ChunkEntry]:
        """The chunks among ``ids`` that still exist, in no particular order.

        SQLite first checks that ``chunks`` exists (an old file may lack it);
        a PostgreSQL database is migrated before any store is used, so it has.
        """
        rows = self._conn.execute(SQL_CHUNK_ITEMS_BY_ID, {"ids": list(ids)})
        return [ChunkEntry(*row) for row in rows]

    def live_chunk_entries(self) -> Iterator[ChunkEntry]:
        """Every chunk, by id, a thousand rows at a time (keyset pages in the transaction)."""
        after = _MIN_ID  # an imported id may be anything a bigint holds
        while True:
            rows = self._conn.execute(
                SQL_LIVE_CHUNK_ITEMS, {"after": after, "limit": _PAGE}
            ).fetchall()
            yield from (ChunkEntry(*row) for row in rows)
            if len(rows) < _PAGE:
                return
            after = int(rows[-1][0])

    def chunk_hits(self, ids: Sequence[int]) -> list[ChunkHit]:
        """The chunks among ``ids`` that still exist, with their document and root paths."""
        rows = self._conn.execute(SQL_HITS, {"ids": list(ids)})
        return [ChunkHit(*row) for row in rows]

    def chunk_ids_under(self, root_id: int | None, path_prefix: str) -> list[int]:
        """Ids of the chunks of documents at or under ``path_prefix`` (of one root, or all)."""
        params = {
            "root_id": root_id,
            "prefix": path_prefix,
            "lower": path_prefix + "/",
            "upper": path_prefix + "0",
        }
        return [int(chunk_id) for (chunk_id,) in self._conn.execute(SQL_ALLOWED_CHUNKS, params)]
