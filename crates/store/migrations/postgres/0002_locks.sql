-- Locks (issue 4) and their journal rows, as in migrations/sqlite/0002_locks.sql.
-- The rules are in src/locks.rs; this only stores them.

-- One lock per path per user: the primary key is the backstop that keeps two racing devices
-- from both holding a path, whatever the rules above it do.
CREATE TABLE locks (
    user_id    BIGINT NOT NULL REFERENCES users (id),
    path       TEXT COLLATE "C" NOT NULL,
    -- The holder's device name.
    device     TEXT   NOT NULL,
    -- Milliseconds since the Unix epoch, server clock.
    since_ms   BIGINT NOT NULL,
    -- NULL: until released. A row with expires_ms <= now counts as absent and is deleted lazily.
    expires_ms BIGINT,
    PRIMARY KEY (user_id, path)
);

-- Journal rows of lock changes. They share the user's cursor with the rows of `changes`: every
-- cursor value is in exactly one of the two tables.
CREATE TABLE lock_changes (
    user_id    BIGINT NOT NULL REFERENCES users (id),
    cursor     BIGINT NOT NULL,
    kind       TEXT   NOT NULL CHECK (kind IN ('lock', 'unlock')),
    path       TEXT COLLATE "C" NOT NULL,
    -- The holder's device name.
    device     TEXT   NOT NULL,
    -- 'lock' rows: the lock's start and end (NULL: until released).
    since_ms   BIGINT,
    expires_ms BIGINT,
    -- 'unlock' rows: the device that broke the lock; NULL when its holder ended it.
    broken_by  TEXT,
    PRIMARY KEY (user_id, cursor)
);
