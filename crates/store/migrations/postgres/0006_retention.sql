-- Retention, journal compaction and garbage collection (issue 14), as in
-- migrations/sqlite/0006_retention.sql.

ALTER TABLE users ADD COLUMN kept_since_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN journal_floor BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN gc_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN quota_bytes BIGINT;
ALTER TABLE users ADD COLUMN used_bytes BIGINT NOT NULL DEFAULT 0;
UPDATE users SET used_bytes = (SELECT COALESCE(SUM(size), 0) FROM nodes
                               WHERE nodes.user_id = users.id AND nodes.kind = 'file');

CREATE TABLE compacted_tags (
    user_id BIGINT NOT NULL REFERENCES users (id),
    cursor  BIGINT NOT NULL,
    tag     BYTEA  NOT NULL,
    PRIMARY KEY (user_id, cursor)
);

CREATE TABLE gc_doomed (
    user_id BIGINT NOT NULL REFERENCES users (id),
    hash    BYTEA  NOT NULL,
    run     BIGINT NOT NULL,
    PRIMARY KEY (user_id, hash, run)
);
