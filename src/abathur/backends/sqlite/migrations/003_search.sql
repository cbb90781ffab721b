-- 003: keyword index, embedding queue and cache, usage ledger (issue 3).
--
-- The vec0 vector tables are not created here: their shape depends on the
-- embedder's dims, so the search index (SearchIndex.create_vector_table) makes them at run
-- time when an embedder is first recorded in meta ('embedder.name',
-- 'embedder.dims'), and registers each one in vector_tables.

-- Keyword index over the current live version of each memory; rowid =
-- memories.id. Contentless: the text already lives in memories, so only the
-- index is stored. Columns: key; text, the value flattened to words
-- (abathur.memory.memory_text); scope, one digits-only token per namespace
-- prefix, so a prefix filter is an FTS term (abathur.search.scope_tokens).
-- MemoryService writes it in the same transaction as each memory write.
CREATE VIRTUAL TABLE memories_fts USING fts5(
    key, text, scope,
    content = '', contentless_delete = 1,
    tokenize = 'porter unicode61 remove_diacritics 2'
);

-- A file with memories from before this migration gets its FTS rows built by
-- MemoryService on the next open (Python computes the text); an empty one is
-- complete already.
INSERT INTO meta (key, value)
SELECT 'search.memories_fts', 'built' WHERE NOT EXISTS (SELECT 1 FROM memories);

-- One job per item version waiting for its vector. Written in the same
-- transaction as the item; a newer version cancels the older one's job.
CREATE TABLE embedding_queue (
    id           INTEGER PRIMARY KEY,            -- FIFO order
    kind         TEXT    NOT NULL,               -- 'memory' (documents add 'chunk')
    ref_id       INTEGER NOT NULL,               -- e.g. memories.id of the version to embed
    content_hash TEXT    NOT NULL,               -- sha256 of the text to embed (hex)
    enqueued_at  REAL    NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,     -- failed embed calls so far
    last_error   TEXT,
    not_before   REAL    NOT NULL,               -- backoff: the worker leaves it until then
    failed_at    REAL,                           -- permanent error: left until retried
    UNIQUE (kind, ref_id)                        -- writes cancel the job of a replaced version
) STRICT;

-- The worker's next batch: ready jobs, oldest first.
CREATE INDEX embedding_queue_ready ON embedding_queue (not_before, id) WHERE failed_at IS NULL;

-- Every vector ever computed, by (embedder name, content hash): a text is
-- embedded once. The vec0 rows point here (cache_id) for exact rescoring, so a
-- row a vector table refers to must not be deleted.
CREATE TABLE embedding_cache (
    id           INTEGER PRIMARY KEY,
    model        TEXT    NOT NULL,               -- embedder name, e.g. 'bundled:all-MiniLM-L6-v2'
    content_hash TEXT    NOT NULL,
    dims         INTEGER NOT NULL,
    vector       BLOB    NOT NULL,               -- float32, little-endian, dims * 4 bytes
    created_at   REAL    NOT NULL,
    UNIQUE (model, content_hash)                 -- the cache look-up
) STRICT;

-- One row per embedder call (and per batch served from the cache alone).
CREATE TABLE usage_ledger (
    id          INTEGER PRIMARY KEY,
    at          REAL    NOT NULL,
    provider    TEXT    NOT NULL,                -- 'bundled', 'ollama', ...
    model       TEXT    NOT NULL,
    operation   TEXT    NOT NULL,                -- 'embed' (worker), 'embed.query' (search)
    inputs      INTEGER NOT NULL,                -- texts sent to the embedder
    tokens      INTEGER NOT NULL,
    is_estimate INTEGER NOT NULL CHECK (is_estimate IN (0, 1)),
    chars       INTEGER NOT NULL,                -- characters sent
    duration_ms REAL    NOT NULL,
    cache_hits  INTEGER NOT NULL DEFAULT 0       -- texts served from embedding_cache instead
) STRICT;

-- Vectors of replaced or deleted item versions, waiting to leave their vec0
-- table. A delete in vec0 costs a few hundred microseconds in its own
-- transaction but ~40 in a batch, so writes only note it here (search skips
-- these ids) and the worker removes them in bulk with its next batch.
CREATE TABLE vector_deletes (
    vec_table   TEXT    NOT NULL,
    item_id     INTEGER NOT NULL,
    PRIMARY KEY (vec_table, item_id)         -- search reads a table's pending ids
) STRICT, WITHOUT ROWID;

-- The vec0 tables made at run time, one per kind, with their dead rows
-- (vec0 never reuses a deleted row's slot; compaction rebuilds the table).
CREATE TABLE vector_tables (
    name        TEXT    PRIMARY KEY,             -- e.g. 'memories_vec'
    kind        TEXT    NOT NULL UNIQUE,
    dims        INTEGER NOT NULL,
    chunk_size  INTEGER NOT NULL,
    generation  INTEGER NOT NULL,                -- new at every (re)build: caches of the
                                                 -- table's chunks know they are stale
    dead_rows   INTEGER NOT NULL DEFAULT 0,
    created_at  REAL    NOT NULL
) STRICT, WITHOUT ROWID;
