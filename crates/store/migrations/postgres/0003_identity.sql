-- Server identity (issue 10), as in migrations/sqlite/0003_identity.sql: a random namespace id
-- per user that is never reused, a random tag per journal position, and the wanted chunks.

ALTER TABLE users ADD COLUMN namespace_id BYTEA;
UPDATE users SET namespace_id = decode(replace(gen_random_uuid()::text, '-', ''), 'hex');
ALTER TABLE users ALTER COLUMN namespace_id SET NOT NULL;
CREATE UNIQUE INDEX users_namespace_id ON users (namespace_id);
ALTER TABLE users ADD COLUMN head_tag BYTEA NOT NULL DEFAULT '\x00000000000000000000000000000000';

ALTER TABLE changes ADD COLUMN tag BYTEA NOT NULL DEFAULT '\x00000000000000000000000000000000';
ALTER TABLE lock_changes ADD COLUMN tag BYTEA NOT NULL DEFAULT '\x00000000000000000000000000000000';

CREATE TABLE wanted_chunks (
    user_id BIGINT NOT NULL REFERENCES users (id),
    hash    BYTEA  NOT NULL,
    PRIMARY KEY (user_id, hash)
);

CREATE TABLE store_identity (
    instance_id BYTEA NOT NULL
);
INSERT INTO store_identity (instance_id) VALUES (decode(replace(gen_random_uuid()::text, '-', ''), 'hex'));
