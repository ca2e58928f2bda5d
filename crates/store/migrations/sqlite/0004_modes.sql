-- Mode bits (issue 11): a file's executable bit is part of its state, in the tree and in the
-- journal. Rows written before it existed are not executable; directories never are.

ALTER TABLE nodes ADD COLUMN executable INTEGER NOT NULL DEFAULT 0 CHECK (executable IN (0, 1));
ALTER TABLE changes ADD COLUMN executable INTEGER NOT NULL DEFAULT 0 CHECK (executable IN (0, 1));
