-- Mode bits (issue 11), as in migrations/sqlite/0004_modes.sql.

ALTER TABLE nodes ADD COLUMN executable BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE changes ADD COLUMN executable BOOLEAN NOT NULL DEFAULT FALSE;
