-- Version history (issue 14), as in migrations/sqlite/0005_history.sql.

ALTER TABLE changes ADD COLUMN at_ms BIGINT NOT NULL DEFAULT 0;

CREATE INDEX changes_by_path ON changes (user_id, path);
CREATE INDEX changes_by_node ON changes (user_id, node_id, cursor);
CREATE INDEX changes_by_time ON changes (user_id, at_ms);
