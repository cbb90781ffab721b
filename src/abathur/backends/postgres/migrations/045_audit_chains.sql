-- 045: per-tenant audit chains (issue 14).
--
-- A write that declares its tenant (abathur.stores.Backend.write) holds the
-- tenant's advisory lock, not the global one exclusively, and files its audit
-- records in the tenant's chain: audit_log.chain names it, and each chain's
-- newest (seq, hash) is its row in audit_chains. The global chain '' keeps
-- its head in audit_head (id = 1), as before: every record written before
-- this migration is in it and verifies as it did.
--
-- seq stays unique over the whole log (rows name their record by it), so it
-- can no longer be a chain's head + 1: writers of different tenants draw it
-- from audit_log_seq, which never blocks. A rolled-back write skips a value:
-- the log has gaps, and a removed record shows as a broken link (or a head
-- that does not match) in its chain instead.

ALTER TABLE audit_log ADD COLUMN chain text COLLATE "C" NOT NULL DEFAULT '';

CREATE TABLE audit_chains (
    chain text COLLATE "C" PRIMARY KEY CHECK (chain <> ''),
    seq   bigint NOT NULL,
    hash  text COLLATE "C" NOT NULL
);

CREATE SEQUENCE audit_log_seq AS bigint MINVALUE 1;
SELECT setval('audit_log_seq', (SELECT coalesce(max(seq), 0) + 1 FROM audit_log), false);
