-- Accounts and devices (issue 15): when each device was added, when a server last took its
-- token and from which address (recorded at most once a minute per server process), and when
-- it was revoked. NULL: not known (devices added before this version), never, or not revoked.
-- A revoked device keeps its row, and so its name: the journal names devices. Its token hash is
-- replaced by random bytes, which no token hashes to.
ALTER TABLE devices ADD COLUMN created_ms INTEGER;
ALTER TABLE devices ADD COLUMN last_seen_ms INTEGER;
ALTER TABLE devices ADD COLUMN last_address TEXT;
ALTER TABLE devices ADD COLUMN revoked_ms INTEGER;

-- A removed account keeps only its row, renamed '.removed-<id>' (no account name starts with a
-- '.'), so its name is free again while its id and namespace are never handed out twice.
-- content_gone_ms: when garbage collection found none of its chunks left.
ALTER TABLE users ADD COLUMN removed_ms INTEGER;
ALTER TABLE users ADD COLUMN content_gone_ms INTEGER;
