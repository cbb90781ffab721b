-- The key/value facts about the database itself (as SQLite's meta table).
CREATE TABLE meta (
    key    text PRIMARY KEY,
    value  text NOT NULL
);
