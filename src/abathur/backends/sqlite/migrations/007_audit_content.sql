-- 006: the audit chain covers what was written, and survives a purge (issue 11).
--
-- Record format 2 (abathur.audit): the chain digest covers
--   body_hash    = sha256(salt || canonical([entity_id, detail]))
--   content_hash = sha256(salt || canonical([table, row's covered columns]))
-- instead of the raw entity_id/detail, so a purge can blank entity_id, detail
-- and salt (redacted = 1) and the chain still verifies; without the salt the
-- two hashes no longer confirm a guess of what was erased. Records written
-- before this migration are format 1 until abathur.audit.upgrade (run when
-- Abathur opens the file) converts them and appends an 'audit.upgraded' record
-- holding the old head.
ALTER TABLE audit_log ADD COLUMN format INTEGER NOT NULL DEFAULT 1 CHECK (format IN (1, 2));
ALTER TABLE audit_log ADD COLUMN salt BLOB;                  -- 16 random bytes; NULL once redacted
ALTER TABLE audit_log ADD COLUMN body_hash TEXT;
ALTER TABLE audit_log ADD COLUMN content_hash TEXT;          -- NULL: the record wrote no covered row
ALTER TABLE audit_log ADD COLUMN redacted INTEGER NOT NULL DEFAULT 0 CHECK (redacted IN (0, 1));

-- Each covered row names the audit record that wrote it (its content_hash),
-- so `abathur check` verifies a row with one primary-key look-up. NULL: the
-- row was written before this migration (abathur.audit says how those count).
ALTER TABLE memories ADD COLUMN audit_seq INTEGER;
ALTER TABLE events ADD COLUMN audit_seq INTEGER;
ALTER TABLE tasks ADD COLUMN audit_seq INTEGER;
ALTER TABLE sessions ADD COLUMN audit_seq INTEGER;
