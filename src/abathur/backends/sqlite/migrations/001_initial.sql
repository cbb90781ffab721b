-- 001: sessions with their event log and scoped state, versioned memories,
-- and the hash-chained audit log. Every index names the query that needs it;
-- tests/unit/test_query_plans.py asserts each hot query uses its index.

-- Facts about the file itself (created_at, created_by abathur version, ...).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE sessions (
    id          TEXT    PRIMARY KEY,
    app         TEXT    NOT NULL,
    user        TEXT    NOT NULL,
    status      TEXT    NOT NULL
                CHECK (status IN ('created', 'active', 'paused', 'terminated', 'archived')),
    state       TEXT    NOT NULL DEFAULT '{}',   -- session-scoped keys only (JSON object)
    revision    INTEGER NOT NULL DEFAULT 0,      -- +1 on every write to the session
    created_at  REAL    NOT NULL,                -- unix epoch seconds
    updated_at  REAL    NOT NULL
) STRICT;

-- sessions.list(app, user): newest update first.
CREATE INDEX sessions_by_app_user ON sessions (app, user, updated_at);

-- One row per event: appending never rewrites earlier events.
CREATE TABLE events (
    session_id  TEXT    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,                -- 1, 2, 3... within the session
    id          TEXT    NOT NULL,
    author      TEXT    NOT NULL,
    content     TEXT,                            -- JSON
    state_delta TEXT    NOT NULL DEFAULT '{}',   -- JSON object, as the caller sent it (less temp:)
    metadata    TEXT    NOT NULL DEFAULT '{}',
    timestamp   REAL    NOT NULL,
    PRIMARY KEY (session_id, seq)                -- sessions.get(last_n=): last N events
) STRICT, WITHOUT ROWID;

-- An event id is unique within its session (duplicate appends are refused).
CREATE UNIQUE INDEX events_by_id ON events (session_id, id);
-- sessions.get(after=): events after a timestamp.
CREATE INDEX events_by_time ON events (session_id, timestamp);

CREATE TABLE app_state (
    app         TEXT NOT NULL,
    key         TEXT NOT NULL,                   -- without the 'app:' prefix
    value       TEXT NOT NULL,                   -- JSON ('null' is a stored None)
    updated_at  REAL NOT NULL,
    PRIMARY KEY (app, key)
) STRICT, WITHOUT ROWID;

CREATE TABLE user_state (
    app         TEXT NOT NULL,
    user        TEXT NOT NULL,
    key         TEXT NOT NULL,                   -- without the 'user:' prefix
    value       TEXT NOT NULL,
    updated_at  REAL NOT NULL,
    PRIMARY KEY (app, user, key)
) STRICT, WITHOUT ROWID;

-- One row per version of a memory. The newest version of each (namespace,
-- key) has is_current = 1; a delete, a restore or a consolidation is a new
-- version, so history is never rewritten.
CREATE TABLE memories (
    id            INTEGER PRIMARY KEY,
    namespace     TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    version       INTEGER NOT NULL CHECK (version >= 1),
    type          TEXT    NOT NULL CHECK (type IN ('semantic', 'episodic', 'procedural')),
    value         TEXT    NOT NULL,              -- JSON
    metadata      TEXT    NOT NULL DEFAULT '{}', -- JSON object
    status        TEXT    NOT NULL DEFAULT 'live'
                  CHECK (status IN ('live', 'deleted', 'superseded')),
    superseded_by_namespace TEXT,                -- set when status = 'superseded'
    superseded_by_key       TEXT,
    created_at    REAL    NOT NULL,              -- when this version was written
    first_created_at REAL NOT NULL,              -- when version 1 was written: carried
                                                 -- forward, so archiving old versions keeps it
    expires_at    REAL,                          -- NULL: never
    is_current    INTEGER NOT NULL DEFAULT 1 CHECK (is_current IN (0, 1)),
    UNIQUE (namespace, key, version)             -- memory.history(namespace, key)
) STRICT;

-- memory.get (current version by namespace and key) and memory.list/namespaces
-- (segment-aware prefix range over namespace). Partial: old versions stay out.
CREATE UNIQUE INDEX memories_current ON memories (namespace, key) WHERE is_current = 1;

-- Append-only, hash-chained: hash = sha256(prev_hash || canonical record).
CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY,
    at          REAL    NOT NULL,
    action      TEXT    NOT NULL,                -- e.g. 'memory.put', 'session.create'
    entity      TEXT    NOT NULL,                -- e.g. 'memory', 'session'
    entity_id   TEXT    NOT NULL,
    detail      TEXT    NOT NULL DEFAULT '{}',   -- JSON object
    prev_hash   TEXT    NOT NULL,
    hash        TEXT    NOT NULL
) STRICT;

-- The chain's head, written in the same transaction as each record, so
-- removing the newest records is detected too.
CREATE TABLE audit_head (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    seq   INTEGER NOT NULL,
    hash  TEXT    NOT NULL
) STRICT;
