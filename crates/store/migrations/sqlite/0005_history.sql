-- Version history (issue 14): every journal row records when the server committed it, so
-- history can be listed with times and a folder restored as it was at a moment. Rows written
-- before this column existed count as committed at the epoch (before any moment asked for).

ALTER TABLE changes ADD COLUMN at_ms INTEGER NOT NULL DEFAULT 0;

-- The versions of the nodes ever at a path, a node's rows in order, the rows since a time.
CREATE INDEX changes_by_path ON changes (user_id, path);
CREATE INDEX changes_by_node ON changes (user_id, node_id, cursor);
CREATE INDEX changes_by_time ON changes (user_id, at_ms);
