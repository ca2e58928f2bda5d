-- Server identity (issue 10): every user namespace gets a random id that is never reused, and
-- every journal position a random tag, so a client can tell a restored or replaced database
-- from the one its base was made against. Chunks are keyed by the namespace id.

ALTER TABLE users ADD COLUMN namespace_id BLOB;
UPDATE users SET namespace_id = randomblob(16);
CREATE UNIQUE INDEX users_namespace_id ON users (namespace_id);
-- The tag of the user's current cursor; all zero before the first change.
ALTER TABLE users ADD COLUMN head_tag BLOB NOT NULL DEFAULT x'00000000000000000000000000000000';

-- Rows journalled before tags existed share the all-zero tag.
ALTER TABLE changes ADD COLUMN tag BLOB NOT NULL DEFAULT x'00000000000000000000000000000000';
ALTER TABLE lock_changes ADD COLUMN tag BLOB NOT NULL DEFAULT x'00000000000000000000000000000000';

-- Chunks the server lost or found corrupt, which it asks the user's devices to upload again.
CREATE TABLE wanted_chunks (
    user_id INTEGER NOT NULL REFERENCES users (id),
    hash    BLOB    NOT NULL,
    PRIMARY KEY (user_id, hash)
) WITHOUT ROWID;

-- One row: the store's own random id, for diagnostics.
CREATE TABLE store_identity (
    instance_id BLOB NOT NULL
);
INSERT INTO store_identity (instance_id) VALUES (randomblob(16));
