-- 006: checksums on archive rows and their dictionaries (issue 11, item 4).
--
-- SQLite keeps no checksum of page contents, so a flipped bit in an archive
-- payload was either a decompression error or, worse, a silently different
-- row on restore. Each hash catches what the other cannot:
--   payload_sha256  sha256 of the stored (compressed) payload bytes: any change
--                   to them, caught before a single byte is decompressed.
--   raw_sha256      sha256 of the JSON the payload decompresses to, as it was
--                   archived: a wrong or damaged dictionary (or dict_id), which
--                   leaves the payload bytes intact but changes what comes out.
--   archive_dicts.sha256  sha256 of the dictionary: names the damaged dictionary
--                   and every row that depends on it, without decompressing them.
-- Lowercase hex. NULL on rows archived before this migration: they still
-- restore, and `abathur check` counts them as carrying no checksum.
ALTER TABLE archive ADD COLUMN payload_sha256 TEXT
    CHECK (payload_sha256 IS NULL OR length(payload_sha256) = 64);
ALTER TABLE archive ADD COLUMN raw_sha256 TEXT
    CHECK (raw_sha256 IS NULL OR length(raw_sha256) = 64);
ALTER TABLE archive_dicts ADD COLUMN sha256 TEXT
    CHECK (sha256 IS NULL OR length(sha256) = 64);
