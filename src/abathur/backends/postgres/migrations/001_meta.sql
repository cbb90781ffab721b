-- pgvector's types for the vector tables (020); created once per database.
CREATE EXTENSION IF NOT EXISTS vector;

-- Every text column is COLLATE "C": ordering, ranges and prefix scans compare
-- bytes, as SQLite does (the prefix ranges of the stores rely on it).

-- The key/value facts about the database itself (as SQLite's meta table).
CREATE TABLE meta (
    key    text COLLATE "C" PRIMARY KEY,
    value  text COLLATE "C" NOT NULL
);
