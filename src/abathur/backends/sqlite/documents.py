"""SQLite's :class:`~abathur.stores.documents.DocumentStore`."""

from __future__ import annotations

import apsw

from abathur.backends.sqlite.context import SqliteContext

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

# Per write: the recorded embedder, and whether the chunks' vector table exists yet.
SQL_INDEX_STATE = (
    "SELECT (SELECT value FROM meta WHERE key = 'embedder.name'), "
    "EXISTS (SELECT 1 FROM vector_tables WHERE name = 'chunks_vec')"
)

_SQL_CHUNK_ITEMS = (
    "SELECT c.id, c.heading, c.text, d.root_id FROM chunks AS c "
    "JOIN documents AS d ON d.id = c.document_id"
)
SQL_CHUNK_ITEMS_BY_ID = _SQL_CHUNK_ITEMS + " WHERE c.id IN (SELECT value FROM json_each(?))"
SQL_LIVE_CHUNK_ITEMS = _SQL_CHUNK_ITEMS + " ORDER BY c.id"

# documents.search, keyword ranking: FTS5 finds the words, the joins apply the
# root and path-prefix filters; no window, every match passing them is ranked.
# The heading counts twice: it names what the chunk is about. Params: the
# MATCH expression, root id, root id, prefix, prefix, prefix + '/', prefix +
# '0' ('0' is the character after '/'), limit. See keyword_search_params.
SQL_CHUNK_KEYWORD_SEARCH = (
    "SELECT c.id, -bm25(chunks_fts, 2.0, 1.0) AS score "
    "FROM chunks_fts JOIN chunks AS c ON c.id = chunks_fts.rowid "
    "JOIN documents AS d ON d.id = c.document_id "
    "WHERE chunks_fts MATCH ? AND (? IS NULL OR d.root_id = ?) "
    "AND (? IS NULL OR d.path = ? OR (d.path >= ? AND d.path < ?)) "
    "ORDER BY score DESC, c.id LIMIT ?"
)
# documents.search, vector ranking under a path prefix: the chunk ids allowed.
SQL_ALLOWED_CHUNKS = (
    "SELECT c.id FROM documents AS d JOIN chunks AS c ON c.document_id = d.id "
    "WHERE (? IS NULL OR d.root_id = ?) AND (d.path = ? OR (d.path >= ? AND d.path < ?))"
)
# documents.search(fresh=True): the embedding jobs of chunks (of one root, or
# of every root when :root_id is NULL), and how many wait
# (DocumentSearchResult.pending). The queue is read first (CROSS JOIN): it is
# small when the worker keeps up.
_SQL_PENDING_WHERE = (
    "FROM embedding_queue AS q CROSS JOIN chunks AS c ON c.id = q.ref_id "
    "JOIN documents AS d ON d.id = c.document_id "
    "WHERE q.kind = :kind AND q.failed_at IS NULL AND (:root_id IS NULL OR d.root_id = :root_id)"
)
SQL_PENDING_CHUNK_JOBS = (
    "SELECT q.id, q.kind, q.ref_id, q.content_hash "
    + _SQL_PENDING_WHERE
    + " ORDER BY q.id LIMIT :limit"
)
SQL_PENDING_CHUNKS = "SELECT count(*) " + _SQL_PENDING_WHERE

SQL_HITS = (
    "SELECT c.id, c.heading, c.text, c.ordinal, d.path, r.path FROM chunks AS c "
    "JOIN documents AS d ON d.id = c.document_id "
    "JOIN document_roots AS r ON r.id = d.root_id "
    "WHERE c.id IN (SELECT value FROM json_each(?))"
)


class SqliteDocumentStore:
    """:class:`~abathur.stores.documents.DocumentStore` on one apsw connection (its transaction)."""

    def __init__(self, conn: apsw.Connection, context: SqliteContext) -> None:
        self._conn = conn
        self._context = context
