-- BM25 as FTS5 computes it, from an index instead of a scan (issue 14).
--
-- 020 scored a keyword search by reading every candidate's whole tsvector
-- (for each query word's frequency) and the corpus statistics by an index
-- scan of every row: 40-100 ms at 30k memories. Here the statistics and the
-- word frequencies are kept as the rows are written, by triggers on the
-- keyword tables (every writer goes through them: add, remove, rebuild,
-- purge, the cascades of a document's deletion):
--
-- * <kind>_stats: one row, the rows of the keyword table and their summed
--   length (BM25's N and average length). Writers take the write lock one at
--   a time (database.py), so this row is no point of contention.
-- * <kind>_terms: one row per (lexeme, row): how often the row holds it
--   (tf), and the row's length (dl). Its primary key is the inverted index a search reads: a word's
--   rows (with the namespace next, for memories: a tenant's rows are one
--   range of it) and their tf, by an index-only scan; a word's document
--   frequency is the count of that range.
--
-- Document chunks get the same BM25 as memories and as SQLite's FTS5
-- (bm25(chunks_fts, 2.0, 1.0): heading tokens count twice in tf, every
-- token once in the length) in chunks_fts, written by the document store with
-- the memory index's tokenizer (abathur_words after unicode61's folding, in
-- Python). 030's generated chunks.tsv ('english': stop words dropped,
-- Porter2, ts_rank_cd) is no longer read, so it goes.

CREATE TABLE memories_fts_stats (
    id        smallint PRIMARY KEY CHECK (id = 1),
    n_rows    bigint   NOT NULL,
    total_dl  bigint   NOT NULL
);
INSERT INTO memories_fts_stats (id, n_rows, total_dl)
SELECT 1, count(*), coalesce(sum(dl), 0) FROM memories_fts;

CREATE TABLE memories_fts_terms (
    lexeme     text COLLATE "C" NOT NULL,
    namespace  text COLLATE "C" NOT NULL,
    memory_id  bigint  NOT NULL,
    tf         integer NOT NULL,
    dl         integer NOT NULL,
    PRIMARY KEY (lexeme, namespace, memory_id) INCLUDE (tf, dl)
);
INSERT INTO memories_fts_terms (lexeme, namespace, memory_id, tf, dl)
SELECT u.lexeme, f.namespace, f.memory_id, coalesce(array_length(u.positions, 1), 1), f.dl
FROM memories_fts AS f CROSS JOIN LATERAL unnest(f.tsv) AS u;

-- Statement triggers with transition tables: one INSERT of 1000 rows
-- (rebuild) is one trigger call. memories_fts rows are only inserted and
-- deleted (never updated).
CREATE FUNCTION memories_fts_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO memories_fts_terms (lexeme, namespace, memory_id, tf, dl)
    SELECT u.lexeme, a.namespace, a.memory_id, coalesce(array_length(u.positions, 1), 1), a.dl
    FROM added AS a CROSS JOIN LATERAL unnest(a.tsv) AS u;
    UPDATE memories_fts_stats AS s SET n_rows = s.n_rows + t.n, total_dl = s.total_dl + t.dl
    FROM (SELECT count(*) AS n, coalesce(sum(dl), 0) AS dl FROM added) AS t
    WHERE s.id = 1;
    RETURN NULL;
END
$$;

CREATE FUNCTION memories_fts_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM memories_fts_terms AS t
    USING removed AS r CROSS JOIN LATERAL unnest(tsvector_to_array(r.tsv)) AS l(lexeme)
    WHERE t.lexeme = l.lexeme AND t.namespace = r.namespace AND t.memory_id = r.memory_id;
    UPDATE memories_fts_stats AS s SET n_rows = s.n_rows - t.n, total_dl = s.total_dl - t.dl
    FROM (SELECT count(*) AS n, coalesce(sum(dl), 0) AS dl FROM removed) AS t
    WHERE s.id = 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER memories_fts_added AFTER INSERT ON memories_fts
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION memories_fts_added();
CREATE TRIGGER memories_fts_removed AFTER DELETE ON memories_fts
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION memories_fts_removed();

-- The statistics come from memories_fts_stats now.
DROP INDEX memories_fts_dl;

-- Document chunks: their keyword rows (dl: heading and text tokens; tsv: the
-- heading's tokens weighted 'A', the text's 'D'), the same two tables.
CREATE TABLE chunks_fts (
    chunk_id  bigint PRIMARY KEY REFERENCES chunks (id) ON DELETE CASCADE,
    dl        integer  NOT NULL,
    tsv       tsvector NOT NULL
);
-- A word that is a phrase ("e-mail"): its rows by @@ (rare).
CREATE INDEX chunks_fts_tsv ON chunks_fts USING gin (tsv);

CREATE TABLE chunks_fts_stats (
    id        smallint PRIMARY KEY CHECK (id = 1),
    n_rows    bigint   NOT NULL,
    total_dl  bigint   NOT NULL
);
INSERT INTO chunks_fts_stats (id, n_rows, total_dl) VALUES (1, 0, 0);

-- tf: 2 per heading token ('A'), 1 per text token (FTS5's column weights 2.0, 1.0).
CREATE TABLE chunks_fts_terms (
    lexeme    text COLLATE "C" NOT NULL,
    chunk_id  bigint  NOT NULL,
    tf        integer NOT NULL,
    dl        integer NOT NULL,
    PRIMARY KEY (lexeme, chunk_id) INCLUDE (tf, dl)
);

CREATE FUNCTION chunks_fts_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chunks_fts_terms (lexeme, chunk_id, tf, dl)
    SELECT u.lexeme, a.chunk_id,
           coalesce((SELECT sum(CASE w WHEN 'A' THEN 2 ELSE 1 END) FROM unnest(u.weights) AS w), 1),
           a.dl
    FROM added AS a CROSS JOIN LATERAL unnest(a.tsv) AS u;
    UPDATE chunks_fts_stats AS s SET n_rows = s.n_rows + t.n, total_dl = s.total_dl + t.dl
    FROM (SELECT count(*) AS n, coalesce(sum(dl), 0) AS dl FROM added) AS t
    WHERE s.id = 1;
    RETURN NULL;
END
$$;

CREATE FUNCTION chunks_fts_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM chunks_fts_terms AS t
    USING removed AS r CROSS JOIN LATERAL unnest(tsvector_to_array(r.tsv)) AS l(lexeme)
    WHERE t.lexeme = l.lexeme AND t.chunk_id = r.chunk_id;
    UPDATE chunks_fts_stats AS s SET n_rows = s.n_rows - t.n, total_dl = s.total_dl - t.dl
    FROM (SELECT count(*) AS n, coalesce(sum(dl), 0) AS dl FROM removed) AS t
    WHERE s.id = 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER chunks_fts_added AFTER INSERT ON chunks_fts
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION chunks_fts_added();
CREATE TRIGGER chunks_fts_removed AFTER DELETE ON chunks_fts
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION chunks_fts_removed();

-- Chunks stored before this migration: tokenized by PostgreSQL's parser
-- directly (the store folds case and accents and cuts at every
-- non-alphanumeric character first; a re-sync of the document writes that).
INSERT INTO chunks_fts (chunk_id, dl, tsv)
SELECT c.id,
       (SELECT count(*) FROM unnest(to_tsvector('abathur_words', c.heading || ' ' || c.text)) AS u
        CROSS JOIN LATERAL unnest(u.positions) AS p),
       setweight(to_tsvector('abathur_words', c.heading), 'A')
       || to_tsvector('abathur_words', c.text)
FROM chunks AS c;

DROP INDEX chunks_tsv;
ALTER TABLE chunks DROP COLUMN tsv;
