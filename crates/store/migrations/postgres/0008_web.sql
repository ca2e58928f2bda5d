-- The web interface (issue 16): a user's password, browser sessions and share links.
-- password_hash: an argon2 PHC string; NULL: no web sign-in for this user.
ALTER TABLE users ADD COLUMN password_hash TEXT;

-- A browser session, found by the BLAKE3 of its cookie's random value (never stored).
-- share_id NULL: a user's sign-in; otherwise the unlocked session of that share link.
CREATE TABLE web_sessions (
    id_hash    BYTEA   PRIMARY KEY,
    user_id    BIGINT  NOT NULL REFERENCES users (id),
    share_id   TEXT,
    csrf       TEXT    NOT NULL,
    created_ms BIGINT  NOT NULL,
    expires_ms BIGINT  NOT NULL
);
CREATE INDEX web_sessions_user ON web_sessions (user_id);

-- A read-only link to a node (by id, so a rename keeps it), with its path when it was made.
CREATE TABLE share_links (
    id            TEXT    PRIMARY KEY,
    user_id       BIGINT  NOT NULL REFERENCES users (id),
    node_id       BIGINT  NOT NULL,
    path          TEXT    NOT NULL,
    created_ms    BIGINT  NOT NULL,
    expires_ms    BIGINT,
    password_hash TEXT,
    revoked_ms    BIGINT,
    created_by    TEXT    NOT NULL
);
CREATE INDEX share_links_user ON share_links (user_id, created_ms);
