-- Retention, journal compaction and garbage collection (issue 14). The rules are in
-- src/retention.rs and src/gc.rs; this only stores their state.

-- History older than this is no longer kept (milliseconds; 0: all of it is).
ALTER TABLE users ADD COLUMN kept_since_ms INTEGER NOT NULL DEFAULT 0;
-- Rows at or before this cursor may have been removed: a client behind it reloads the tree.
ALTER TABLE users ADD COLUMN journal_floor INTEGER NOT NULL DEFAULT 0;
-- Bumped when a garbage collection run has deleted chunks (see src/gc.rs).
ALTER TABLE users ADD COLUMN gc_epoch INTEGER NOT NULL DEFAULT 0;
-- NULL: no quota. used_bytes: the sizes of the user's current files.
ALTER TABLE users ADD COLUMN quota_bytes INTEGER;
ALTER TABLE users ADD COLUMN used_bytes INTEGER NOT NULL DEFAULT 0;
UPDATE users SET used_bytes = (SELECT COALESCE(SUM(size), 0) FROM nodes
                               WHERE nodes.user_id = users.id AND nodes.kind = 'file');

-- The tags of journal positions whose rows compaction removed, so a client's known position
-- can still be checked.
CREATE TABLE compacted_tags (
    user_id INTEGER NOT NULL REFERENCES users (id),
    cursor  INTEGER NOT NULL,
    tag     BLOB    NOT NULL,
    PRIMARY KEY (user_id, cursor)
) WITHOUT ROWID;

-- Chunks a garbage collection run (a random id) is deleting: no commit may name them
-- meanwhile. Each run forgets only its own rows, so two racing runs never clear each other's.
CREATE TABLE gc_doomed (
    user_id INTEGER NOT NULL REFERENCES users (id),
    hash    BLOB    NOT NULL,
    run     INTEGER NOT NULL,
    PRIMARY KEY (user_id, hash, run)
) WITHOUT ROWID;
