-- 004: documents kept in sync with a directory, their chunks and the chunks'
-- keyword index (issue 3). abathur.documents writes all of it; the chunks'
-- vectors live in the vec0 table 'chunks_vec' (made at run time, like
-- 'memories_vec') and are queued with kind 'chunk' in embedding_queue.

-- A directory synced with documents.sync: its resolved absolute path.
CREATE TABLE document_roots (
    id          INTEGER PRIMARY KEY,
    path        TEXT    NOT NULL UNIQUE,         -- documents.sync(root): the root's row
    created_at  REAL    NOT NULL,
    synced_at   REAL                             -- end of the last sync that wrote
) STRICT;

-- One row per file seen under a root: indexed (its chunks are below) or
-- failed (unreadable, binary, invalid UTF-8, too large...: no chunks, and
-- error says why). A file that disappears loses its row.
CREATE TABLE documents (
    id           INTEGER PRIMARY KEY,
    root_id      INTEGER NOT NULL REFERENCES document_roots (id) ON DELETE CASCADE,
    path         TEXT    NOT NULL,               -- relative to the root, '/' separated
    content_hash TEXT    NOT NULL,               -- sha256 of the file's bytes (hex); '' if failed
    size         INTEGER NOT NULL,               -- bytes, as stat() said when it was read
    mtime_ns     INTEGER NOT NULL,               -- with size: the pre-check before hashing
    status       TEXT    NOT NULL CHECK (status IN ('indexed', 'failed')),
    error        TEXT,                           -- why it failed (NULL when indexed)
    chunks       INTEGER NOT NULL DEFAULT 0,
    synced_at    REAL    NOT NULL,               -- when this row was last written
    UNIQUE (root_id, path)                       -- sync's look-up, and a path-prefix range
) STRICT;

-- The sections of a document, each small enough for the embedder (see
-- abathur.documents). AUTOINCREMENT: a chunk id is never reused, so a vector
-- or a job can never be taken for a later chunk's.
CREATE TABLE chunks (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id  INTEGER NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    ordinal      INTEGER NOT NULL,               -- 0, 1, 2... in reading order
    heading      TEXT    NOT NULL,               -- heading path: 'Backups > Restore'
    text         TEXT    NOT NULL,               -- the chunk's own text, heading excluded
    content_hash TEXT    NOT NULL,               -- sha256 of what is embedded (heading + text)
    tokens       INTEGER NOT NULL                -- word pieces of what is embedded
) STRICT;

-- A document's chunks in order (sync's diff, search hits, cascade deletes).
CREATE INDEX chunks_by_document ON chunks (document_id, ordinal);

-- Keyword index over chunks, external content: the text lives in chunks only,
-- FTS5's own 'rebuild' can refill it (abathur check --fix), and the triggers
-- below keep it in step with every insert, delete and text change.
CREATE VIRTUAL TABLE chunks_fts USING fts5(
    heading, text,
    content = 'chunks', content_rowid = 'id',
    tokenize = 'porter unicode61 remove_diacritics 2'
);

CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts (rowid, heading, text) VALUES (new.id, new.heading, new.text);
END;

CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, heading, text)
    VALUES ('delete', old.id, old.heading, old.text);
END;

CREATE TRIGGER chunks_fts_update AFTER UPDATE OF heading, text ON chunks BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, heading, text)
    VALUES ('delete', old.id, old.heading, old.text);
    INSERT INTO chunks_fts (rowid, heading, text) VALUES (new.id, new.heading, new.text);
END;
