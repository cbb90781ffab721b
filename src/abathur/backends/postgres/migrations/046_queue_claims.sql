-- 046: embedding jobs are claimed with a lease (issue 14).
--
-- A worker claims a batch in one short write (SELECT ... FOR UPDATE SKIP
-- LOCKED, then claim_token: a random token of that batch; claimed_until: when
-- the claim lapses), embeds outside any transaction, then finishes only the
-- jobs still claimed by its token. Other workers pass over a job whose claim
-- has not lapsed, so each job is embedded once across processes and hosts; a
-- worker that dies leaves its jobs to be claimed again once claimed_until has
-- passed (abathur.embeddings.queue.worker says how long a claim lasts).
-- NULL, NULL: not claimed.
-- One ALTER per column: `abathur check` reads the expected columns from
-- these lines (abathur.backends.postgres.inspection).
ALTER TABLE embedding_queue ADD COLUMN claim_token text COLLATE "C";
ALTER TABLE embedding_queue ADD COLUMN claimed_until double precision;
