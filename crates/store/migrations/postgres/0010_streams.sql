-- Upload streams (issue 18): runs of a large file's chunks the server holds while a device is
-- still uploading it, so the user's other devices fetch them before the commit. Announcements
-- only: a file becomes a version through its PutFile alone. A device's parts of a path go when
-- it commits that path, or starts the path's stream again; idle streams go after a while.
-- seq orders the user's parts for followers; users.stream_seq hands them out, so a position
-- is never reused after parts are deleted.
ALTER TABLE users ADD COLUMN stream_seq BIGINT NOT NULL DEFAULT 0;
CREATE TABLE stream_parts (
    user_id   BIGINT NOT NULL REFERENCES users (id),
    seq       BIGINT NOT NULL,
    device_id BIGINT NOT NULL,
    stream    TEXT   NOT NULL,
    path      TEXT   NOT NULL,
    size      BIGINT NOT NULL,
    start     BIGINT NOT NULL,
    chunks    BYTEA  NOT NULL,
    at_ms     BIGINT NOT NULL,
    PRIMARY KEY (user_id, seq)
);
CREATE INDEX stream_parts_by_stream ON stream_parts (user_id, stream);
