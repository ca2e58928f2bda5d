-- WebDAV dead properties (issue 17): what a PROPPATCH set on a node, for WebDAV clients only
-- (the sync API neither sends nor reads them). Keyed by node, so a rename keeps them and a
-- file deleted and made again starts with none. namespace: '' when the property has none.
CREATE TABLE dead_props (
    user_id   INTEGER NOT NULL REFERENCES users (id),
    node_id   INTEGER NOT NULL,
    namespace TEXT   NOT NULL,
    name      TEXT   NOT NULL,
    prefix    TEXT,
    xml       BLOB,
    PRIMARY KEY (user_id, node_id, namespace, name)
);
