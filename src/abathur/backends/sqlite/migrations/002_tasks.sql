-- 002: tasks an agent works on, each linked to the session it came from.

CREATE TABLE tasks (
    id          TEXT    PRIMARY KEY,
    session_id  TEXT    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    prompt      TEXT    NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    result      TEXT,                            -- JSON, set when the task ends
    error       TEXT,
    metadata    TEXT    NOT NULL DEFAULT '{}',
    created_at  REAL    NOT NULL,
    updated_at  REAL    NOT NULL
) STRICT;

-- tasks.list(session_id): a session's tasks in creation order.
CREATE INDEX tasks_by_session ON tasks (session_id, created_at);
