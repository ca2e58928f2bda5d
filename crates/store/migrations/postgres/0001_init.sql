-- Users, devices, the current node tree and the change journal (the same model as
-- migrations/sqlite/0001_init.sql). Every table but users is keyed by user_id first: nothing is
-- shared between users.
-- Paths use the "C" collation, so they compare bytewise as in SQLite: the range scans for
-- "everything inside a directory" and the tree's order depend on it.

CREATE TABLE users (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT   NOT NULL UNIQUE,
    -- The cursor of the user's last change; 0 before the first. Every write transaction locks
    -- this row first (SELECT ... FOR UPDATE), which serialises a user's writes across servers.
    cursor       BIGINT NOT NULL DEFAULT 0,
    -- The next node id to hand out.
    next_node_id BIGINT NOT NULL DEFAULT 1
);

CREATE TABLE devices (
    id         BIGSERIAL PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users (id),
    name       TEXT   NOT NULL,
    -- BLAKE3 of the bearer token; the token itself is never stored.
    token_hash BYTEA  NOT NULL UNIQUE,
    UNIQUE (user_id, name)
);

CREATE TABLE nodes (
    user_id  BIGINT NOT NULL REFERENCES users (id),
    node_id  BIGINT NOT NULL,
    path     TEXT COLLATE "C" NOT NULL,
    kind     TEXT   NOT NULL CHECK (kind IN ('file', 'dir')),
    rev      BIGINT NOT NULL,
    size     BIGINT NOT NULL,
    mtime_ms BIGINT NOT NULL,
    hash     BYTEA,
    -- 36 bytes per chunk: the BLAKE3 hash, then the length as a big-endian u32.
    chunks   BYTEA  NOT NULL,
    device   TEXT   NOT NULL,
    PRIMARY KEY (user_id, node_id),
    UNIQUE (user_id, path)
);

CREATE TABLE changes (
    user_id  BIGINT NOT NULL REFERENCES users (id),
    cursor   BIGINT NOT NULL,
    node_id  BIGINT NOT NULL,
    -- 'file' or 'dir' for the node's new state, 'deleted' for a delete marker.
    kind     TEXT   NOT NULL CHECK (kind IN ('file', 'dir', 'deleted')),
    path     TEXT COLLATE "C" NOT NULL,
    size     BIGINT NOT NULL,
    mtime_ms BIGINT NOT NULL,
    hash     BYTEA,
    chunks   BYTEA  NOT NULL,
    device   TEXT   NOT NULL,
    PRIMARY KEY (user_id, cursor)
);
