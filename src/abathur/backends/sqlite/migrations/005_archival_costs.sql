-- 005: archival, cost accounting and analytics (issue 4).

-- Attribution and price of every usage row. app/user come from the namespace
-- the embedded item or the searched prefix lives in (abathur.costs.attribute):
-- 'user:<u>:...' -> user u, 'app:<a>:...' -> app a, 'adk.<a>:<u>...' -> both.
-- Rows written before this migration stay unattributed (NULL) and unpriced.
ALTER TABLE usage_ledger ADD COLUMN app TEXT;
ALTER TABLE usage_ledger ADD COLUMN user TEXT;
-- sha256 of the text of a one-text call (a search query): repeated queries show up.
ALTER TABLE usage_ledger ADD COLUMN text_hash TEXT;
-- The price in force when the call was made (Settings.prices), and what it cost.
ALTER TABLE usage_ledger ADD COLUMN price_usd_per_mtok REAL;
ALTER TABLE usage_ledger ADD COLUMN cost_usd REAL NOT NULL DEFAULT 0;
-- NULL: the row is a whole call. A call whose texts several payers share is
-- split into one row per payer, sharing a random call_id: calls are the rows
-- with no call_id plus the distinct call_ids.
ALTER TABLE usage_ledger ADD COLUMN call_id INTEGER;

-- cost report --since: a time range.
CREATE INDEX usage_by_time ON usage_ledger (at);
-- Budgets: one app's or one user's spend since the start of the day or month.
CREATE INDEX usage_by_app ON usage_ledger (app, at) WHERE app IS NOT NULL;
CREATE INDEX usage_by_user ON usage_ledger (user, at) WHERE user IS NOT NULL;

-- archive run: terminated sessions, oldest first (keyset-paged). Partial:
-- live sessions, whose updated_at moves on every append, stay out of it.
CREATE INDEX sessions_terminated ON sessions (updated_at, id) WHERE status = 'terminated';

-- zstandard dictionaries trained on the first batch of each kind: archived
-- rows are small, and a shared dictionary compresses them several times better
-- than each row alone. Never deleted while an archive row uses one.
CREATE TABLE archive_dicts (
    id          INTEGER PRIMARY KEY,
    kind        TEXT    NOT NULL,
    created_at  REAL    NOT NULL,
    dict        BLOB    NOT NULL
) STRICT;

-- Cold data moved out of the hot tables (abathur.archival). One row per
-- archived item: a session with its events, a memory with all its versions,
-- or old versions of one memory. payload is zstandard-compressed JSON of the
-- rows exactly as they were, so a restore puts back what left.
CREATE TABLE archive (
    id           INTEGER PRIMARY KEY,
    kind         TEXT    NOT NULL CHECK (kind IN ('session', 'memory', 'versions')),
    ref          TEXT    NOT NULL,               -- session id, or 'namespace/key'
    policy       TEXT    NOT NULL,               -- the policy kind that moved it
    app          TEXT,                           -- sessions: the session's app and user
    user         TEXT,
    namespace    TEXT,                           -- memories: the namespace
    rows         INTEGER NOT NULL,               -- rows moved (session + events, versions)
    raw_bytes    INTEGER NOT NULL,               -- size of the JSON before compression
    stored_bytes INTEGER NOT NULL,               -- length(payload)
    dict_id      INTEGER REFERENCES archive_dicts (id),
    run_id       INTEGER NOT NULL,
    archived_at  REAL    NOT NULL,
    payload      BLOB    NOT NULL                -- last: listing never reads its pages
) STRICT;

-- archive list --kind/--ref, and a restore's look-up of what an id holds.
CREATE INDEX archive_by_ref ON archive (kind, ref);

-- One row per archive run: progress is written with every batch, so a run
-- cut short (killed, crashed) is visible, and the next run says so.
CREATE TABLE archive_runs (
    id           INTEGER PRIMARY KEY,
    started_at   REAL    NOT NULL,
    finished_at  REAL,
    status       TEXT    NOT NULL CHECK (status IN ('running', 'done', 'interrupted')),
    entries      INTEGER NOT NULL DEFAULT 0,
    rows         INTEGER NOT NULL DEFAULT 0,
    detail       TEXT    NOT NULL DEFAULT '{}'   -- JSON: per-policy counts, sizes
) STRICT;

-- Service call latencies and namespace access counts, flushed from memory
-- once a minute by abathur.analytics (one row per name per window).
CREATE TABLE metrics (
    id         INTEGER PRIMARY KEY,
    at         REAL    NOT NULL,                 -- end of the window
    seconds    REAL    NOT NULL,                 -- length of the window
    kind       TEXT    NOT NULL CHECK (kind IN ('call', 'reads', 'writes', 'counter')),
    name       TEXT    NOT NULL,                 -- 'memory.put', a namespace, 'budget.warn'
    count      INTEGER NOT NULL,
    errors     INTEGER NOT NULL DEFAULT 0,
    total_ms   REAL    NOT NULL DEFAULT 0,
    max_ms     REAL    NOT NULL DEFAULT 0,
    histogram  TEXT                              -- JSON {bucket: count}, kind 'call'
) STRICT;

-- stats: the windows of the last N days.
CREATE INDEX metrics_by_time ON metrics (at);
