-- Users, devices, the current node tree and the change journal.
-- Every table but users is keyed by user_id first: nothing is shared between users.

CREATE TABLE users (
    id           INTEGER PRIMARY KEY,
    name         TEXT    NOT NULL UNIQUE,
    -- The cursor of the user's last change; 0 before the first.
    cursor       INTEGER NOT NULL DEFAULT 0,
    -- The next node id to hand out.
    next_node_id INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE devices (
    id         INTEGER PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id),
    name       TEXT    NOT NULL,
    -- BLAKE3 of the bearer token; the token itself is never stored.
    token_hash BLOB    NOT NULL UNIQUE,
    UNIQUE (user_id, name)
);

CREATE TABLE nodes (
    user_id  INTEGER NOT NULL REFERENCES users (id),
    node_id  INTEGER NOT NULL,
    path     TEXT    NOT NULL,
    kind     TEXT    NOT NULL CHECK (kind IN ('file', 'dir')),
    rev      INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ms INTEGER NOT NULL,
    hash     BLOB,
    -- 36 bytes per chunk: the BLAKE3 hash, then the length as a big-endian u32.
    chunks   BLOB    NOT NULL,
    device   TEXT    NOT NULL,
    PRIMARY KEY (user_id, node_id),
    UNIQUE (user_id, path)
);

CREATE TABLE changes (
    user_id  INTEGER NOT NULL REFERENCES users (id),
    cursor   INTEGER NOT NULL,
    node_id  INTEGER NOT NULL,
    -- 'file' or 'dir' for the node's new state, 'deleted' for a delete marker.
    kind     TEXT    NOT NULL CHECK (kind IN ('file', 'dir', 'deleted')),
    path     TEXT    NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ms INTEGER NOT NULL,
    hash     BLOB,
    chunks   BLOB    NOT NULL,
    device   TEXT    NOT NULL,
    PRIMARY KEY (user_id, cursor)
) WITHOUT ROWID;
