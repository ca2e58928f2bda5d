-- Accounts and devices (issue 15), as in migrations/sqlite/0007_accounts.sql.
ALTER TABLE devices ADD COLUMN created_ms BIGINT;
ALTER TABLE devices ADD COLUMN last_seen_ms BIGINT;
ALTER TABLE devices ADD COLUMN last_address TEXT;
ALTER TABLE devices ADD COLUMN revoked_ms BIGINT;

ALTER TABLE users ADD COLUMN removed_ms BIGINT;
ALTER TABLE users ADD COLUMN content_gone_ms BIGINT;
