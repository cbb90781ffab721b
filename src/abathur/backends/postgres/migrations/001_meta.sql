-- pgvector's types for the vector tables (020); created once per database.
CREATE EXTENSION IF NOT EXISTS vector;

-- The key/value facts about the database itself (as SQLite's meta table).
CREATE TABLE meta (
    key    text PRIMARY KEY,
    value  text NOT NULL
);
