//! What the two SQL backends share: every query, written once, and [`SqlTxn`], which is
//! [`Txn`] and [`MetaTxn`] on any [`SqlConn`].
//!
//! The queries are in the SQL that SQLite and PostgreSQL both speak (`ON CONFLICT`,
//! `RETURNING`, `RELEASE SAVEPOINT`), with SQLite's numbered placeholders `?N`, which the
//! PostgreSQL backend turns into `$N`. The two schemas (`migrations/sqlite/`,
//! `migrations/postgres/`) have the same tables and columns; paths compare bytewise in both.
//! What differs between the backends is theirs: how a statement is bound and its rows read
//! ([`SqlConn`]), the statement that serialises a user's writes ([`SqlConn::LOCK_USER`]), and
//! how a commit is announced to other servers ([`SqlConn::ANNOUNCE`]).
//!
//! The journal is split over two tables sharing the user's cursor: `changes` (node changes)
//! and `lock_changes` (lock changes); [`MetaTxn::journal_after`] merges them by cursor.

use crate::history::{Deletion, JournalRow};
use crate::meta::MetaTxn;
use crate::ops::Txn;
use crate::retention::{Floors, RowKind, RowMeta};
use crate::streams::{StoredStreamPart, StreamHead};
use crate::{
    new_journal_tag, Account, DeadProp, Device, DeviceId, DeviceRecord, NewSession, Principal,
    RemovedUser, ShareId, ShareRecord, StoreError, TokenHash, User, UserId,
};
use std::collections::HashSet;
use syncstore_proto::{
    Change, ChunkHash, ChunkRef, ContentHash, Cursor, DeviceName, EntryKind, JournalTag, LockInfo,
    NamespaceId, NodeId, RelPath, RemoteEntry, Revision, StreamPart, UserName,
};

/// A statement's parameter.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Param<'a> {
    Int(i64),
    OptInt(Option<i64>),
    Text(&'a str),
    OptText(Option<&'a str>),
    Blob(&'a [u8]),
    OptBlob(Option<&'a [u8]>),
    Bool(bool),
}

/// A value read from a row.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
    /// PostgreSQL's booleans (SQLite stores them as integers).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Bool(bool),
}

/// One result row, its values in column order.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct Row(pub(crate) Vec<Value>);

/// A statement's failure.
#[derive(Debug)]
pub(crate) enum SqlError {
    /// A unique or primary key constraint refused it.
    Duplicate(StoreError),
    /// Anything else.
    Failed(StoreError),
}

impl From<SqlError> for StoreError {
    fn from(err: SqlError) -> StoreError {
        match err {
            SqlError::Duplicate(err) | SqlError::Failed(err) => err,
        }
    }
}

impl From<StoreError> for SqlError {
    fn from(err: StoreError) -> SqlError {
        SqlError::Failed(err)
    }
}

/// One SQL connection or transaction of a backend, as [`SqlTxn`] uses it.
pub(crate) trait SqlConn {
    /// The statement of [`Txn::serialize_writes`]: reads the user's `cursor` (no row: an
    /// unknown or removed user), and locks the row until the transaction ends where the backend
    /// needs that.
    const LOCK_USER: &'static str;

    /// The statement of [`MetaTxn::announce`], which takes the text `<user id>:<cursor>` as
    /// `?1`; `None` when there is nobody to tell.
    const ANNOUNCE: Option<&'static str>;

    /// Runs one statement and returns its rows.
    ///
    /// # Errors
    /// [`SqlError::Duplicate`] for a unique constraint; backend failures.
    fn query(&mut self, sql: &'static str, params: &[Param<'_>]) -> Result<Vec<Row>, SqlError>;

    /// Runs one statement and returns how many rows it changed.
    ///
    /// # Errors
    /// [`SqlError::Duplicate`] for a unique constraint; backend failures.
    fn execute(&mut self, sql: &'static str, params: &[Param<'_>]) -> Result<u64, SqlError>;

    /// Runs statements without parameters or rows (savepoints).
    ///
    /// # Errors
    /// Backend failures.
    fn batch(&mut self, sql: &'static str) -> Result<(), StoreError>;
}

/// [`Txn`] and [`MetaTxn`] on an open SQL connection or transaction.
pub(crate) struct SqlTxn<C>(pub(crate) C);

/// The node columns, in [`node_entry`] order.
macro_rules! node_columns {
    () => {
        "node_id, path, kind, rev, size, mtime_ms, hash, chunks, device, executable"
    };
}

/// A change row's cursor, then the node columns (a change's rev is its cursor).
macro_rules! change_columns {
    () => {
        "cursor, node_id, path, kind, cursor AS rev, size, mtime_ms, hash, chunks, device, executable"
    };
}

/// The columns of a lock row, in [`lock_info`] order.
macro_rules! lock_columns {
    () => {
        "path, device, since_ms, expires_ms"
    };
}

/// The columns of a lock journal row, in [`lock_change`] order.
macro_rules! lock_change_columns {
    () => {
        "cursor, kind, path, device, since_ms, expires_ms, broken_by"
    };
}

/// The columns of a user row, in [`user`] order.
macro_rules! user_columns {
    () => {
        "users.id, users.name, users.namespace_id"
    };
}

/// The columns of a device row, in [`device_record`] order.
macro_rules! device_columns {
    () => {
        "id, name, created_ms, last_seen_ms, last_address, revoked_ms"
    };
}

/// `SELECT <columns> <rest>` as one literal, `columns` naming one of the macros above.
macro_rules! select {
    ($columns:ident, $rest:literal) => {
        concat!("SELECT ", $columns!(), " ", $rest)
    };
}

macro_rules! share_columns {
    () => {
        "id, user_id, node_id, path, created_ms, expires_ms, password_hash, revoked_ms, created_by"
    };
}

const SET_PASSWORD_HASH: &str = "UPDATE users SET password_hash = ?2 WHERE id = ?1";
const PASSWORD_HASH: &str = "SELECT password_hash FROM users WHERE id = ?1";
const UNREVOKE_DEVICE: &str = "UPDATE devices SET revoked_ms = NULL WHERE id = ?1";
const INSERT_SESSION: &str = "INSERT INTO web_sessions
     (id_hash, user_id, share_id, csrf, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const SESSION_ROW: &str = "SELECT user_id, share_id, csrf, created_ms, expires_ms
     FROM web_sessions WHERE id_hash = ?1";
const DELETE_SESSION: &str = "DELETE FROM web_sessions WHERE id_hash = ?1";
const DELETE_SESSIONS: &str = "DELETE FROM web_sessions WHERE user_id = ?1";
const DELETE_EXPIRED_SESSIONS: &str =
    "DELETE FROM web_sessions WHERE user_id = ?1 AND expires_ms < ?2";
const INSERT_SHARE: &str = concat!(
    "INSERT INTO share_links (",
    share_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
);
const SHARES: &str = select!(
    share_columns,
    "FROM share_links WHERE user_id = ?1 ORDER BY created_ms DESC, id"
);
const SHARE: &str = select!(share_columns, "FROM share_links WHERE id = ?1");
const REVOKE_SHARE: &str = "UPDATE share_links SET revoked_ms = COALESCE(revoked_ms, ?3)
     WHERE user_id = ?1 AND id = ?2";
const NODE_BY_ID: &str = select!(
    node_columns,
    "FROM nodes WHERE user_id = ?1 AND node_id = ?2"
);

const HEAD_TAG: &str = "SELECT head_tag FROM users WHERE id = ?1";
// A removed user has no cursor: every read that must agree with one fails for it.
const USER_CURSOR: &str = "SELECT cursor FROM users WHERE id = ?1 AND removed_ms IS NULL";
const NEXT_CURSOR: &str =
    "UPDATE users SET cursor = cursor + 1, head_tag = ?2 WHERE id = ?1 RETURNING cursor";
const NEXT_NODE_ID: &str =
    "UPDATE users SET next_node_id = next_node_id + 1 WHERE id = ?1 RETURNING next_node_id - 1";
const NODE_AT: &str = select!(node_columns, "FROM nodes WHERE user_id = ?1 AND path = ?2");
const DESCENDANTS: &str = select!(
    node_columns,
    "FROM nodes WHERE user_id = ?1 AND path > ?2 AND path < ?3"
);
const HAS_CHILDREN: &str =
    "SELECT EXISTS (SELECT 1 FROM nodes WHERE user_id = ?1 AND path > ?2 AND path < ?3)";
const NODES: &str = select!(node_columns, "FROM nodes WHERE user_id = ?1 ORDER BY path");
const PUT_NODE: &str = "INSERT INTO nodes
     (user_id, node_id, path, kind, rev, size, mtime_ms, hash, chunks, device, executable)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
     ON CONFLICT (user_id, node_id) DO UPDATE SET
         path = excluded.path, kind = excluded.kind, rev = excluded.rev,
         size = excluded.size, mtime_ms = excluded.mtime_ms, hash = excluded.hash,
         chunks = excluded.chunks, device = excluded.device, executable = excluded.executable";
const REMOVE_NODE: &str = "DELETE FROM nodes WHERE user_id = ?1 AND node_id = ?2";
const APPEND_NODE_CHANGE: &str = "INSERT INTO changes
     (user_id, cursor, node_id, kind, path, size, mtime_ms, hash, chunks, device, executable, tag,
      at_ms)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,
             (SELECT head_tag FROM users WHERE id = ?1), ?12)";
const APPEND_LOCK_CHANGE: &str = "INSERT INTO lock_changes
     (user_id, cursor, kind, path, device, since_ms, expires_ms, broken_by, tag)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, (SELECT head_tag FROM users WHERE id = ?1))";
const LOCK_ROWS: &str = select!(lock_columns, "FROM locks WHERE user_id = ?1");
const INSERT_LOCK: &str = "INSERT INTO locks (user_id, path, device, since_ms, expires_ms)
     VALUES (?1, ?2, ?3, ?4, ?5)";
const REMOVE_LOCK: &str = "DELETE FROM locks WHERE user_id = ?1 AND path = ?2";
const INSERT_USER: &str = "INSERT INTO users (name, namespace_id) VALUES (?1, ?2) RETURNING id";
const USER_BY_NAME: &str = select!(
    user_columns,
    "FROM users WHERE name = ?1 AND removed_ms IS NULL"
);
const USER_BY_ID: &str = select!(
    user_columns,
    "FROM users WHERE id = ?1 AND removed_ms IS NULL"
);
const USERS: &str = select!(
    user_columns,
    "FROM users WHERE removed_ms IS NULL ORDER BY name"
);
const COUNT_USERS: &str = "SELECT COUNT(*) FROM users WHERE removed_ms IS NULL";
const INSERT_DEVICE: &str = "INSERT INTO devices (user_id, name, token_hash, created_ms)
     VALUES (?1, ?2, ?3, ?4) RETURNING id";
const PRINCIPAL: &str = concat!(
    "SELECT ",
    user_columns!(),
    ", devices.id, devices.name FROM devices JOIN users ON users.id = devices.user_id
     WHERE devices.token_hash = ?1 AND devices.revoked_ms IS NULL AND users.removed_ms IS NULL"
);
const DEVICE_BY_NAME: &str = select!(
    device_columns,
    "FROM devices WHERE user_id = ?1 AND name = ?2"
);
const DEVICES: &str = select!(
    device_columns,
    "FROM devices WHERE user_id = ?1 ORDER BY name"
);
// Never moves back: two servers may record the same device a moment apart.
const TOUCH_DEVICE: &str = "UPDATE devices SET last_seen_ms = ?2, last_address = ?3
     WHERE id = ?1 AND revoked_ms IS NULL AND (last_seen_ms IS NULL OR last_seen_ms < ?2)";
const REVOKE_DEVICE: &str = "UPDATE devices SET revoked_ms = ?2, token_hash = ?3 WHERE id = ?1";
const ACCOUNTS: &str = concat!(
    "SELECT ",
    user_columns!(),
    ", (SELECT MIN(d.created_ms) FROM devices d WHERE d.user_id = users.id),
     (SELECT COUNT(*) FROM devices d WHERE d.user_id = users.id AND d.revoked_ms IS NULL),
     users.used_bytes, users.quota_bytes
     FROM users WHERE removed_ms IS NULL ORDER BY name"
);
const RENAME_USER: &str = "UPDATE users SET name = ?2 WHERE id = ?1 AND removed_ms IS NULL";
// What a removed user leaves: its own row, under a name no account can have.
const REMOVE_USER_ROWS: [&str; 11] = [
    "DELETE FROM web_sessions WHERE user_id = ?1",
    "DELETE FROM share_links WHERE user_id = ?1",
    "DELETE FROM dead_props WHERE user_id = ?1",
    "DELETE FROM devices WHERE user_id = ?1",
    "DELETE FROM locks WHERE user_id = ?1",
    "DELETE FROM lock_changes WHERE user_id = ?1",
    "DELETE FROM changes WHERE user_id = ?1",
    "DELETE FROM nodes WHERE user_id = ?1",
    "DELETE FROM compacted_tags WHERE user_id = ?1",
    "DELETE FROM wanted_chunks WHERE user_id = ?1",
    "DELETE FROM gc_doomed WHERE user_id = ?1",
];
const RETIRE_USER: &str = "UPDATE users SET name = ?2, removed_ms = ?3, used_bytes = 0,
     quota_bytes = NULL, password_hash = NULL WHERE id = ?1";
const REMOVED_USERS: &str = "SELECT id, namespace_id, removed_ms FROM users
     WHERE removed_ms IS NOT NULL AND content_gone_ms IS NULL ORDER BY id";
const CONTENT_GONE: &str = "UPDATE users SET content_gone_ms = ?2 WHERE id = ?1";
const NODE_CHANGES_AFTER: &str = select!(
    change_columns,
    "FROM changes WHERE user_id = ?1 AND cursor > ?2 ORDER BY cursor LIMIT ?3"
);
const LOCK_CHANGES_AFTER: &str = select!(
    lock_change_columns,
    "FROM lock_changes WHERE user_id = ?1 AND cursor > ?2 ORDER BY cursor LIMIT ?3"
);
const PATH_HISTORY: &str = select!(
    change_columns,
    ", at_ms FROM changes WHERE user_id = ?1
     AND node_id IN (SELECT node_id FROM changes WHERE user_id = ?1 AND path = ?2)
     ORDER BY cursor"
);
const JOURNAL_ROW: &str = select!(
    change_columns,
    ", at_ms FROM changes WHERE user_id = ?1 AND cursor = ?2"
);
// Every node's newest row at or before ?2, unless it is a deletion.
const STATE_AT: &str = select!(
    change_columns,
    "FROM changes c WHERE c.user_id = ?1 AND c.kind <> 'deleted'
     AND c.cursor = (SELECT MAX(p.cursor) FROM changes p
                     WHERE p.user_id = ?1 AND p.node_id = c.node_id AND p.cursor <= ?2)"
);
// Each deletion since ?2 with the row before it of the same node (the version it ended).
const DELETIONS_SINCE: &str = "SELECT d.cursor, d.node_id, d.path, d.device, d.at_ms,
     v.node_id, v.path, v.kind, v.cursor, v.size, v.mtime_ms, v.hash, v.chunks, v.device,
     v.executable
     FROM changes d JOIN changes v ON v.user_id = d.user_id
     AND v.cursor = (SELECT MAX(p.cursor) FROM changes p
                     WHERE p.user_id = d.user_id AND p.node_id = d.node_id AND p.cursor < d.cursor)
     WHERE d.user_id = ?1 AND d.kind = 'deleted' AND d.at_ms >= ?2 ORDER BY d.cursor";
const CURSOR_AT: &str =
    "SELECT COALESCE(MAX(cursor), 0) FROM changes WHERE user_id = ?1 AND at_ms <= ?2";
const ROW_TAG: &str = "SELECT tag FROM changes WHERE user_id = ?1 AND cursor = ?2
     UNION ALL SELECT tag FROM lock_changes WHERE user_id = ?1 AND cursor = ?2
     UNION ALL SELECT tag FROM compacted_tags WHERE user_id = ?1 AND cursor = ?2";
const ROW_METAS: &str =
    "SELECT cursor, node_id, path, kind, at_ms FROM changes WHERE user_id = ?1 ORDER BY cursor";
const KEEP_ROW_TAG: &str = "INSERT INTO compacted_tags (user_id, cursor, tag)
     SELECT user_id, cursor, tag FROM changes WHERE user_id = ?1 AND cursor = ?2";
const REMOVE_ROW: &str = "DELETE FROM changes WHERE user_id = ?1 AND cursor = ?2";
const KEEP_LOCK_ROW_TAGS: &str = "INSERT INTO compacted_tags (user_id, cursor, tag)
     SELECT user_id, cursor, tag FROM lock_changes WHERE user_id = ?1 AND cursor <= ?2";
const REMOVE_LOCK_ROWS: &str = "DELETE FROM lock_changes WHERE user_id = ?1 AND cursor <= ?2";
const FLOORS: &str = "SELECT kept_since_ms, journal_floor FROM users WHERE id = ?1";
const SET_FLOORS: &str = "UPDATE users SET kept_since_ms = ?2, journal_floor = ?3 WHERE id = ?1";
const REFERENCED: &str = "SELECT cursor, chunks FROM changes WHERE user_id = ?1
     UNION ALL SELECT 0, chunks FROM nodes WHERE user_id = ?1";
const DOOM: &str =
    "INSERT INTO gc_doomed (user_id, hash, run) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING";
const ANY_DOOMED: &str = "SELECT EXISTS (SELECT 1 FROM gc_doomed WHERE user_id = ?1)";
const IS_DOOMED: &str = "SELECT EXISTS (SELECT 1 FROM gc_doomed WHERE user_id = ?1 AND hash = ?2)";
const FORGET_DOOMED: &str = "DELETE FROM gc_doomed WHERE user_id = ?1 AND run = ?2";
const BUMP_GC_EPOCH: &str = "UPDATE users SET gc_epoch = gc_epoch + 1 WHERE id = ?1";
const DOOMED_RUNS: &str = "SELECT run, hash FROM gc_doomed WHERE user_id = ?1 ORDER BY run";
const KEPT_FILE_BYTES: &str =
    "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM changes WHERE user_id = ?1 AND kind = 'file'";
const GC_EPOCH: &str = "SELECT gc_epoch FROM users WHERE id = ?1";
const USAGE: &str = "SELECT used_bytes, quota_bytes FROM users WHERE id = ?1";
const ADD_USED: &str = "UPDATE users SET used_bytes = used_bytes + ?2 WHERE id = ?1";
const SET_QUOTA: &str = "UPDATE users SET quota_bytes = ?2 WHERE id = ?1";
const WANTED: &str = "SELECT hash FROM wanted_chunks WHERE user_id = ?1 ORDER BY hash LIMIT ?2";
const WANT: &str =
    "INSERT INTO wanted_chunks (user_id, hash) VALUES (?1, ?2) ON CONFLICT DO NOTHING";
const UNWANT: &str = "DELETE FROM wanted_chunks WHERE user_id = ?1 AND hash = ?2";
const NEXT_STREAM_SEQ: &str =
    "UPDATE users SET stream_seq = stream_seq + 1 WHERE id = ?1 RETURNING stream_seq";
const INSERT_STREAM_PART: &str = "INSERT INTO stream_parts
     (user_id, seq, device_id, stream, path, size, start, chunks, at_ms)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
const STREAM_TAIL: &str = "SELECT device_id, path, start, chunks FROM stream_parts
     WHERE user_id = ?1 AND stream = ?2 ORDER BY seq DESC LIMIT 1";
const STREAM_HEADS: &str = "SELECT stream, device_id, MAX(at_ms) FROM stream_parts
     WHERE user_id = ?1 GROUP BY stream, device_id ORDER BY stream";
const STREAM_PARTS_AFTER: &str =
    "SELECT s.seq, s.device_id, d.name, s.stream, s.path, s.size, s.start, s.chunks, s.at_ms
     FROM stream_parts s JOIN devices d ON d.id = s.device_id
     WHERE s.user_id = ?1 AND s.seq > ?2 ORDER BY s.seq LIMIT ?3";
const DELETE_STREAM: &str = "DELETE FROM stream_parts WHERE user_id = ?1 AND stream = ?2";
const DELETE_STREAMS_OF: &str =
    "DELETE FROM stream_parts WHERE user_id = ?1 AND device_id = ?2 AND path = ?3";
const DEAD_PROPS: &str = "SELECT namespace, name, prefix, xml FROM dead_props
     WHERE user_id = ?1 AND node_id = ?2 ORDER BY namespace, name";
const SET_DEAD_PROP: &str =
    "INSERT INTO dead_props (user_id, node_id, namespace, name, prefix, xml)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (user_id, node_id, namespace, name)
     DO UPDATE SET prefix = excluded.prefix, xml = excluded.xml";
const REMOVE_DEAD_PROP: &str =
    "DELETE FROM dead_props WHERE user_id = ?1 AND node_id = ?2 AND namespace = ?3 AND name = ?4";
const REMOVE_DEAD_PROPS: &str = "DELETE FROM dead_props WHERE user_id = ?1 AND node_id = ?2";

/// Brings the schema up to date: applies the migrations after the version the table
/// `schema_version` records (`migrations[n]` brings the schema to version `n + 1`), recording
/// each. The caller runs it in one transaction.
///
/// # Errors
/// [`StoreError::SchemaTooNew`] for a database written by a newer build; backend failures.
pub(crate) fn migrate(
    conn: &mut impl SqlConn,
    migrations: &[&'static str],
    schema: &'static str,
) -> Result<(), StoreError> {
    conn.batch("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")?;
    let found = match conn
        .query("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])?
        .first()
    {
        Some(row) => row.int(0)?,
        None => 0,
    };
    let supported = migrations.len() as i64;
    if found > supported {
        return Err(StoreError::SchemaTooNew { found, supported });
    }
    for (idx, sql) in migrations.iter().enumerate().skip(found as usize) {
        conn.batch(sql)?;
        let version = idx as i64 + 1;
        conn.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            &[Param::Int(version)],
        )?;
        tracing::info!(schema, version, "applied a schema migration");
    }
    Ok(())
}

impl<C: SqlConn> SqlTxn<C> {
    /// The first row of `sql`, if any.
    fn first_row(
        &mut self,
        sql: &'static str,
        params: &[Param<'_>],
    ) -> Result<Option<Row>, StoreError> {
        Ok(self.0.query(sql, params)?.into_iter().next())
    }

    /// The first column of the user's row that `sql` returns, or [`StoreError::NotFound`].
    fn user_value(&mut self, sql: &'static str, params: &[Param<'_>]) -> Result<Value, StoreError> {
        match self.first_row(sql, params)? {
            Some(Row(values)) => values
                .into_iter()
                .next()
                .ok_or_else(|| StoreError::Corrupt("a query returned no column".into())),
            None => Err(crate::unknown_user()),
        }
    }

    /// The user's cursor as `sql` reads (or bumps) it.
    fn user_cursor(
        &mut self,
        sql: &'static str,
        params: &[Param<'_>],
    ) -> Result<Cursor, StoreError> {
        let cursor = self.user_value(sql, params)?;
        Ok(Cursor(to_u64(int(&cursor)?, "cursor")?))
    }
}

impl<C: SqlConn> Txn for SqlTxn<C> {
    fn begin_op(&mut self) -> Result<(), StoreError> {
        self.0.batch("SAVEPOINT op")
    }

    fn end_op(&mut self, keep: bool) -> Result<(), StoreError> {
        self.0.batch(if keep {
            "RELEASE SAVEPOINT op"
        } else {
            "ROLLBACK TO SAVEPOINT op; RELEASE SAVEPOINT op"
        })
    }

    fn node_at(
        &mut self,
        user_id: UserId,
        path: &RelPath,
    ) -> Result<Option<RemoteEntry>, StoreError> {
        let params = [Param::Int(user_id.0), Param::Text(path.as_str())];
        self.first_row(NODE_AT, &params)?
            .map(|row| node_entry(&row, 0))
            .transpose()
    }

    fn descendants(
        &mut self,
        user_id: UserId,
        dir: &RelPath,
    ) -> Result<Vec<RemoteEntry>, StoreError> {
        let (low, high) = inside_bounds(dir);
        let params = [Param::Int(user_id.0), Param::Text(&low), Param::Text(&high)];
        let rows = self.0.query(DESCENDANTS, &params)?;
        rows.iter().map(|row| node_entry(row, 0)).collect()
    }

    fn has_children(&mut self, user_id: UserId, dir: &RelPath) -> Result<bool, StoreError> {
        let (low, high) = inside_bounds(dir);
        let params = [Param::Int(user_id.0), Param::Text(&low), Param::Text(&high)];
        match self.first_row(HAS_CHILDREN, &params)? {
            Some(row) => row.flag(0),
            None => Err(StoreError::Corrupt("EXISTS returned no row".into())),
        }
    }

    fn next_cursor(&mut self, user_id: UserId) -> Result<Cursor, StoreError> {
        let tag = new_journal_tag();
        let params = [Param::Int(user_id.0), Param::Blob(&tag.0)];
        self.user_cursor(NEXT_CURSOR, &params)
    }

    fn current_cursor(&mut self, user_id: UserId) -> Result<Cursor, StoreError> {
        self.user_cursor(USER_CURSOR, &[Param::Int(user_id.0)])
    }

    fn head_tag(&mut self, user_id: UserId) -> Result<JournalTag, StoreError> {
        let tag = self.user_value(HEAD_TAG, &[Param::Int(user_id.0)])?;
        stored_tag(&blob(tag)?)
    }

    fn next_node_id(&mut self, user_id: UserId) -> Result<NodeId, StoreError> {
        let node_id = self.user_value(NEXT_NODE_ID, &[Param::Int(user_id.0)])?;
        Ok(NodeId(to_u64(int(&node_id)?, "node id")?))
    }

    fn put_node(&mut self, user_id: UserId, entry: &RemoteEntry) -> Result<(), StoreError> {
        let chunks = encode_chunks(&entry.chunks);
        let params = [
            Param::Int(user_id.0),
            Param::Int(to_i64(entry.node_id.0)?),
            Param::Text(entry.path.as_str()),
            Param::Text(kind_text(entry.kind)),
            Param::Int(to_i64(entry.rev.0)?),
            Param::Int(to_i64(entry.size)?),
            Param::Int(entry.mtime_ms),
            Param::OptBlob(entry.hash.as_ref().map(|hash| &hash.0[..])),
            Param::Blob(&chunks),
            Param::Text(entry.device.as_str()),
            Param::Bool(entry.executable),
        ];
        self.0.execute(PUT_NODE, &params)?;
        Ok(())
    }

    fn remove_node(&mut self, user_id: UserId, node_id: NodeId) -> Result<(), StoreError> {
        let params = [Param::Int(user_id.0), Param::Int(to_i64(node_id.0)?)];
        self.0.execute(REMOVE_NODE, &params)?;
        Ok(())
    }

    fn append_change(
        &mut self,
        user_id: UserId,
        change: &Change,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let user = Param::Int(user_id.0);
        let cursor = Param::Int(to_i64(change.cursor().0)?);
        match change {
            Change::Upsert { entry, .. } => {
                let chunks = encode_chunks(&entry.chunks);
                let params = [
                    user,
                    cursor,
                    Param::Int(to_i64(entry.node_id.0)?),
                    Param::Text(kind_text(entry.kind)),
                    Param::Text(entry.path.as_str()),
                    Param::Int(to_i64(entry.size)?),
                    Param::Int(entry.mtime_ms),
                    Param::OptBlob(entry.hash.as_ref().map(|hash| &hash.0[..])),
                    Param::Blob(&chunks),
                    Param::Text(entry.device.as_str()),
                    Param::Bool(entry.executable),
                    Param::Int(at_ms),
                ];
                self.0.execute(APPEND_NODE_CHANGE, &params)?
            }
            Change::Delete {
                node_id,
                path,
                device,
                ..
            } => {
                let params = [
                    user,
                    cursor,
                    Param::Int(to_i64(node_id.0)?),
                    Param::Text("deleted"),
                    Param::Text(path.as_str()),
                    Param::Int(0),
                    Param::Int(0),
                    Param::OptBlob(None),
                    Param::Blob(&[]),
                    Param::Text(device.as_str()),
                    Param::Bool(false),
                    Param::Int(at_ms),
                ];
                self.0.execute(APPEND_NODE_CHANGE, &params)?
            }
            Change::Lock { lock, .. } => {
                let params = [
                    user,
                    cursor,
                    Param::Text("lock"),
                    Param::Text(lock.path.as_str()),
                    Param::Text(lock.device.as_str()),
                    Param::OptInt(Some(lock.since_ms)),
                    Param::OptInt(lock.expires_ms),
                    Param::OptText(None),
                ];
                self.0.execute(APPEND_LOCK_CHANGE, &params)?
            }
            Change::Unlock {
                path,
                device,
                broken_by,
                ..
            } => {
                let params = [
                    user,
                    cursor,
                    Param::Text("unlock"),
                    Param::Text(path.as_str()),
                    Param::Text(device.as_str()),
                    Param::OptInt(None),
                    Param::OptInt(None),
                    Param::OptText(broken_by.as_ref().map(DeviceName::as_str)),
                ];
                self.0.execute(APPEND_LOCK_CHANGE, &params)?
            }
        };
        Ok(())
    }

    fn doomed_among(
        &mut self,
        user_id: UserId,
        hashes: &[ChunkHash],
    ) -> Result<HashSet<ChunkHash>, StoreError> {
        let mut doomed = HashSet::new();
        // Doomed chunks exist only while a collection runs: one query says whether to look.
        let any = self.first_row(ANY_DOOMED, &[Param::Int(user_id.0)])?;
        if !any.map(|row| row.flag(0)).transpose()?.unwrap_or(false) {
            return Ok(doomed);
        }
        for hash in hashes {
            let params = [Param::Int(user_id.0), Param::Blob(&hash.0)];
            if let Some(row) = self.first_row(IS_DOOMED, &params)? {
                if row.flag(0)? {
                    doomed.insert(*hash);
                }
            }
        }
        Ok(doomed)
    }

    fn usage(&mut self, user_id: UserId) -> Result<(u64, Option<u64>), StoreError> {
        let row = self
            .first_row(USAGE, &[Param::Int(user_id.0)])?
            .ok_or_else(crate::unknown_user)?;
        let used = to_u64(row.int(0)?.max(0), "used bytes")?;
        let quota = row
            .opt_int(1)?
            .map(|quota| to_u64(quota, "quota"))
            .transpose()?;
        Ok((used, quota))
    }

    fn add_used(&mut self, user_id: UserId, delta: i64) -> Result<(), StoreError> {
        if delta != 0 {
            self.0
                .execute(ADD_USED, &[Param::Int(user_id.0), Param::Int(delta)])?;
        }
        Ok(())
    }

    fn serialize_writes(&mut self, user_id: UserId) -> Result<(), StoreError> {
        self.user_cursor(C::LOCK_USER, &[Param::Int(user_id.0)])
            .map(|_| ())
    }

    fn lock_rows(&mut self, user_id: UserId) -> Result<Vec<LockInfo>, StoreError> {
        let rows = self.0.query(LOCK_ROWS, &[Param::Int(user_id.0)])?;
        rows.iter().map(lock_info).collect()
    }

    fn insert_lock(&mut self, user_id: UserId, lock: &LockInfo) -> Result<(), StoreError> {
        let params = [
            Param::Int(user_id.0),
            Param::Text(lock.path.as_str()),
            Param::Text(lock.device.as_str()),
            Param::Int(lock.since_ms),
            Param::OptInt(lock.expires_ms),
        ];
        // A second lock on one path is a bug in the rules, not a refusal: it fails the call.
        self.0.execute(INSERT_LOCK, &params)?;
        Ok(())
    }

    fn remove_lock(&mut self, user_id: UserId, path: &RelPath) -> Result<(), StoreError> {
        let params = [Param::Int(user_id.0), Param::Text(path.as_str())];
        self.0.execute(REMOVE_LOCK, &params)?;
        Ok(())
    }
}

impl<C: SqlConn> MetaTxn for SqlTxn<C> {
    fn insert_user(&mut self, name: &UserName, namespace: NamespaceId) -> Result<User, StoreError> {
        let params = [Param::Text(name.as_str()), Param::Blob(&namespace.0)];
        match self.0.query(INSERT_USER, &params) {
            Ok(rows) => Ok(User {
                id: UserId(returned_id(&rows)?),
                name: name.clone(),
                namespace,
            }),
            Err(SqlError::Duplicate(_)) => Err(StoreError::AlreadyExists(format!("user {name}"))),
            Err(SqlError::Failed(err)) => Err(err),
        }
    }

    fn user_by_name(&mut self, name: &UserName) -> Result<Option<User>, StoreError> {
        self.first_row(USER_BY_NAME, &[Param::Text(name.as_str())])?
            .map(|row| user(&row))
            .transpose()
    }

    fn users(&mut self) -> Result<Vec<User>, StoreError> {
        self.0.query(USERS, &[])?.iter().map(user).collect()
    }

    fn count_users(&mut self) -> Result<u64, StoreError> {
        match self.first_row(COUNT_USERS, &[])? {
            Some(row) => to_u64(row.int(0)?, "user count"),
            None => Err(StoreError::Corrupt("COUNT returned no row".into())),
        }
    }

    fn user_by_id(&mut self, user_id: UserId) -> Result<Option<User>, StoreError> {
        self.first_row(USER_BY_ID, &[Param::Int(user_id.0)])?
            .map(|row| user(&row))
            .transpose()
    }

    fn insert_device(
        &mut self,
        user_id: UserId,
        name: &DeviceName,
        token_hash: &TokenHash,
        now_ms: i64,
    ) -> Result<Device, StoreError> {
        let params = [
            Param::Int(user_id.0),
            Param::Text(name.as_str()),
            Param::Blob(&token_hash.0),
            Param::Int(now_ms),
        ];
        match self.0.query(INSERT_DEVICE, &params) {
            Ok(rows) => Ok(Device {
                id: DeviceId(returned_id(&rows)?),
                user_id,
                name: name.clone(),
            }),
            // The name is checked before (`MetaStore::add_device`): the token is taken.
            Err(SqlError::Duplicate(_)) => Err(StoreError::AlreadyExists(format!(
                "device {name} or its token"
            ))),
            Err(SqlError::Failed(err)) => Err(err),
        }
    }

    fn device_by_name(
        &mut self,
        user_id: UserId,
        name: &DeviceName,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        let params = [Param::Int(user_id.0), Param::Text(name.as_str())];
        self.first_row(DEVICE_BY_NAME, &params)?
            .map(|row| device_record(&row))
            .transpose()
    }

    fn devices(&mut self, user_id: UserId) -> Result<Vec<DeviceRecord>, StoreError> {
        let rows = self.0.query(DEVICES, &[Param::Int(user_id.0)])?;
        rows.iter().map(device_record).collect()
    }

    fn touch_device(
        &mut self,
        device_id: DeviceId,
        now_ms: i64,
        address: &str,
    ) -> Result<(), StoreError> {
        let params = [
            Param::Int(device_id.0),
            Param::Int(now_ms),
            Param::Text(address),
        ];
        self.0.execute(TOUCH_DEVICE, &params)?;
        Ok(())
    }

    fn revoke_device_row(
        &mut self,
        device_id: DeviceId,
        now_ms: i64,
        dead_hash: &TokenHash,
    ) -> Result<(), StoreError> {
        let params = [
            Param::Int(device_id.0),
            Param::Int(now_ms),
            Param::Blob(&dead_hash.0),
        ];
        self.0.execute(REVOKE_DEVICE, &params)?;
        Ok(())
    }

    fn accounts(&mut self) -> Result<Vec<Account>, StoreError> {
        let rows = self.0.query(ACCOUNTS, &[])?;
        rows.iter()
            .map(|row| {
                Ok(Account {
                    user: user(row)?,
                    created_ms: row.opt_int(3)?,
                    devices: to_u64(row.int(4)?, "device count")?,
                    used_bytes: to_u64(row.int(5)?.max(0), "used bytes")?,
                    quota_bytes: row
                        .opt_int(6)?
                        .map(|quota| to_u64(quota, "quota"))
                        .transpose()?,
                })
            })
            .collect()
    }

    fn set_user_name(&mut self, user_id: UserId, name: &UserName) -> Result<(), StoreError> {
        let params = [Param::Int(user_id.0), Param::Text(name.as_str())];
        match self.0.execute(RENAME_USER, &params) {
            Ok(0) => Err(crate::unknown_user()),
            Ok(_) => Ok(()),
            Err(SqlError::Duplicate(_)) => Err(StoreError::AlreadyExists(format!("user {name}"))),
            Err(SqlError::Failed(err)) => Err(err),
        }
    }

    fn remove_user_rows(&mut self, user_id: UserId, now_ms: i64) -> Result<(), StoreError> {
        for sql in REMOVE_USER_ROWS {
            self.0.execute(sql, &[Param::Int(user_id.0)])?;
        }
        let retired_name = crate::retired_user_name(user_id);
        let params = [
            Param::Int(user_id.0),
            Param::Text(&retired_name),
            Param::Int(now_ms),
        ];
        self.0.execute(RETIRE_USER, &params)?;
        Ok(())
    }

    fn set_password_hash(&mut self, user_id: UserId, phc: Option<&str>) -> Result<(), StoreError> {
        self.0.execute(
            SET_PASSWORD_HASH,
            &[Param::Int(user_id.0), Param::OptText(phc)],
        )?;
        Ok(())
    }

    fn password_hash(&mut self, user_id: UserId) -> Result<Option<String>, StoreError> {
        match self.first_row(PASSWORD_HASH, &[Param::Int(user_id.0)])? {
            Some(row) => row.opt_text(0),
            None => Ok(None),
        }
    }

    fn unrevoke_device(&mut self, device_id: DeviceId) -> Result<(), StoreError> {
        self.0
            .execute(UNREVOKE_DEVICE, &[Param::Int(device_id.0)])?;
        Ok(())
    }

    fn insert_session(&mut self, session: &NewSession) -> Result<(), StoreError> {
        let params = [
            Param::Blob(&session.id_hash.0),
            Param::Int(session.user_id.0),
            Param::OptText(session.share_id.as_ref().map(ShareId::as_str)),
            Param::Text(&session.csrf),
            Param::Int(session.created_ms),
            Param::Int(session.expires_ms),
        ];
        match self.0.execute(INSERT_SESSION, &params) {
            Ok(_) => Ok(()),
            Err(SqlError::Duplicate(_)) => Err(StoreError::AlreadyExists(
                "a session with that id".to_owned(),
            )),
            Err(SqlError::Failed(err)) => Err(err),
        }
    }

    fn session_row(&mut self, id_hash: &TokenHash) -> Result<Option<NewSession>, StoreError> {
        let Some(row) = self.first_row(SESSION_ROW, &[Param::Blob(&id_hash.0)])? else {
            return Ok(None);
        };
        Ok(Some(NewSession {
            id_hash: *id_hash,
            user_id: UserId(row.int(0)?),
            share_id: row.opt_text(1)?.map(ShareId::new).transpose()?,
            csrf: row.text(2)?,
            created_ms: row.int(3)?,
            expires_ms: row.int(4)?,
        }))
    }

    fn delete_session(&mut self, id_hash: &TokenHash) -> Result<(), StoreError> {
        self.0.execute(DELETE_SESSION, &[Param::Blob(&id_hash.0)])?;
        Ok(())
    }

    fn delete_sessions(
        &mut self,
        user_id: UserId,
        before_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        match before_ms {
            None => self.0.execute(DELETE_SESSIONS, &[Param::Int(user_id.0)])?,
            Some(before) => self.0.execute(
                DELETE_EXPIRED_SESSIONS,
                &[Param::Int(user_id.0), Param::Int(before)],
            )?,
        };
        Ok(())
    }

    fn insert_share(&mut self, share: &ShareRecord) -> Result<(), StoreError> {
        let node_id = i64::try_from(share.node_id.0)
            .map_err(|_| StoreError::Corrupt("node id out of range".to_owned()))?;
        let params = [
            Param::Text(share.id.as_str()),
            Param::Int(share.user_id.0),
            Param::Int(node_id),
            Param::Text(share.path.as_str()),
            Param::Int(share.created_ms),
            Param::OptInt(share.expires_ms),
            Param::OptText(share.password_hash.as_deref()),
            Param::OptInt(share.revoked_ms),
            Param::Text(share.created_by.as_str()),
        ];
        match self.0.execute(INSERT_SHARE, &params) {
            Ok(_) => Ok(()),
            Err(SqlError::Duplicate(_)) => Err(StoreError::AlreadyExists(
                "a share link with that id".to_owned(),
            )),
            Err(SqlError::Failed(err)) => Err(err),
        }
    }

    fn share_rows(&mut self, user_id: UserId) -> Result<Vec<ShareRecord>, StoreError> {
        let rows = self.0.query(SHARES, &[Param::Int(user_id.0)])?;
        rows.iter().map(share_record).collect()
    }

    fn share_row(&mut self, id: &ShareId) -> Result<Option<ShareRecord>, StoreError> {
        self.first_row(SHARE, &[Param::Text(id.as_str())])?
            .map(|row| share_record(&row))
            .transpose()
    }

    fn set_share_revoked(
        &mut self,
        user_id: UserId,
        id: &ShareId,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let params = [
            Param::Int(user_id.0),
            Param::Text(id.as_str()),
            Param::Int(now_ms),
        ];
        Ok(self.0.execute(REVOKE_SHARE, &params)? > 0)
    }

    fn node_by_id(
        &mut self,
        user_id: UserId,
        node_id: NodeId,
    ) -> Result<Option<RemoteEntry>, StoreError> {
        let Ok(node_id) = i64::try_from(node_id.0) else {
            return Ok(None);
        };
        self.first_row(NODE_BY_ID, &[Param::Int(user_id.0), Param::Int(node_id)])?
            .map(|row| node_entry(&row, 0))
            .transpose()
    }

    fn removed_users(&mut self) -> Result<Vec<RemovedUser>, StoreError> {
        let rows = self.0.query(REMOVED_USERS, &[])?;
        rows.iter()
            .map(|row| {
                Ok(RemovedUser {
                    user_id: UserId(row.int(0)?),
                    namespace: stored_namespace(row.opt_blob(1)?)?,
                    removed_ms: row.int(2)?,
                })
            })
            .collect()
    }

    fn set_content_gone(&mut self, user_id: UserId, now_ms: i64) -> Result<(), StoreError> {
        self.0
            .execute(CONTENT_GONE, &[Param::Int(user_id.0), Param::Int(now_ms)])?;
        Ok(())
    }

    fn principal(&mut self, token_hash: &TokenHash) -> Result<Option<Principal>, StoreError> {
        let Some(row) = self.first_row(PRINCIPAL, &[Param::Blob(&token_hash.0)])? else {
            return Ok(None);
        };
        let user = user(&row)?;
        Ok(Some(Principal {
            user_id: user.id,
            user_name: user.name,
            namespace: user.namespace,
            device_id: DeviceId(row.int(3)?),
            device_name: stored_device(&row.text(4)?)?,
        }))
    }

    fn nodes(&mut self, user_id: UserId) -> Result<Vec<RemoteEntry>, StoreError> {
        let rows = self.0.query(NODES, &[Param::Int(user_id.0)])?;
        rows.iter().map(|row| node_entry(row, 0)).collect()
    }

    fn journal_after(
        &mut self,
        user_id: UserId,
        since: Cursor,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        // The first `limit` of each table hold the first `limit` of their merge.
        let params = [
            Param::Int(user_id.0),
            Param::Int(to_i64(since.0)?),
            Param::Int(i64::try_from(limit).unwrap_or(i64::MAX)),
        ];
        let mut changes = Vec::new();
        for row in self.0.query(NODE_CHANGES_AFTER, &params)? {
            changes.push(node_change(&row)?);
        }
        for row in self.0.query(LOCK_CHANGES_AFTER, &params)? {
            changes.push(lock_change(&row)?);
        }
        changes.sort_by_key(Change::cursor);
        changes.truncate(limit);
        Ok(changes)
    }

    fn path_history(
        &mut self,
        user_id: UserId,
        path: &RelPath,
    ) -> Result<Vec<JournalRow>, StoreError> {
        let params = [Param::Int(user_id.0), Param::Text(path.as_str())];
        let rows = self.0.query(PATH_HISTORY, &params)?;
        rows.iter().map(journal_row).collect()
    }

    fn journal_row(
        &mut self,
        user_id: UserId,
        cursor: Cursor,
    ) -> Result<Option<JournalRow>, StoreError> {
        let params = [Param::Int(user_id.0), Param::Int(to_i64(cursor.0)?)];
        self.first_row(JOURNAL_ROW, &params)?
            .map(|row| journal_row(&row))
            .transpose()
    }

    fn state_at(
        &mut self,
        user_id: UserId,
        cursor: Cursor,
    ) -> Result<Vec<RemoteEntry>, StoreError> {
        let params = [Param::Int(user_id.0), Param::Int(to_i64(cursor.0)?)];
        let rows = self.0.query(STATE_AT, &params)?;
        rows.iter().map(|row| node_entry(row, 1)).collect()
    }

    fn deletions_since(
        &mut self,
        user_id: UserId,
        since_ms: i64,
    ) -> Result<Vec<Deletion>, StoreError> {
        let params = [Param::Int(user_id.0), Param::Int(since_ms)];
        let rows = self.0.query(DELETIONS_SINCE, &params)?;
        rows.iter()
            .map(|row| {
                Ok(Deletion {
                    deleted: JournalRow {
                        change: Change::Delete {
                            cursor: Cursor(to_u64(row.int(0)?, "cursor")?),
                            node_id: NodeId(to_u64(row.int(1)?, "node id")?),
                            path: stored_path(&row.text(2)?)?,
                            device: stored_device(&row.text(3)?)?,
                        },
                        at_ms: row.int(4)?,
                    },
                    last: node_entry(row, 5)?,
                })
            })
            .collect()
    }

    fn cursor_at(&mut self, user_id: UserId, at_ms: i64) -> Result<Cursor, StoreError> {
        let params = [Param::Int(user_id.0), Param::Int(at_ms)];
        match self.first_row(CURSOR_AT, &params)? {
            Some(row) => Ok(Cursor(to_u64(row.int(0)?, "cursor")?)),
            None => Ok(Cursor(0)),
        }
    }

    fn row_metas(&mut self, user_id: UserId) -> Result<Vec<RowMeta>, StoreError> {
        let rows = self.0.query(ROW_METAS, &[Param::Int(user_id.0)])?;
        rows.iter()
            .map(|row| {
                let kind = match row.text(3)?.as_str() {
                    "file" => RowKind::File,
                    "dir" => RowKind::Dir,
                    "deleted" => RowKind::Deleted,
                    other => return Err(StoreError::Corrupt(format!("change kind {other:?}"))),
                };
                Ok(RowMeta {
                    cursor: Cursor(to_u64(row.int(0)?, "cursor")?),
                    node_id: NodeId(to_u64(row.int(1)?, "node id")?),
                    path: stored_path(&row.text(2)?)?,
                    at_ms: row.int(4)?,
                    kind,
                })
            })
            .collect()
    }

    fn remove_rows(&mut self, user_id: UserId, cursors: &[Cursor]) -> Result<(), StoreError> {
        for cursor in cursors {
            let params = [Param::Int(user_id.0), Param::Int(to_i64(cursor.0)?)];
            self.0.execute(KEEP_ROW_TAG, &params)?;
            self.0.execute(REMOVE_ROW, &params)?;
        }
        Ok(())
    }

    fn remove_lock_rows(&mut self, user_id: UserId, upto: Cursor) -> Result<u64, StoreError> {
        let params = [Param::Int(user_id.0), Param::Int(to_i64(upto.0)?)];
        self.0.execute(KEEP_LOCK_ROW_TAGS, &params)?;
        Ok(self.0.execute(REMOVE_LOCK_ROWS, &params)?)
    }

    fn floors(&mut self, user_id: UserId) -> Result<Floors, StoreError> {
        let row = self
            .first_row(FLOORS, &[Param::Int(user_id.0)])?
            .ok_or_else(crate::unknown_user)?;
        Ok(Floors {
            kept_since_ms: row.int(0)?,
            journal_floor: Cursor(to_u64(row.int(1)?, "journal floor")?),
        })
    }

    fn set_floors(&mut self, user_id: UserId, floors: Floors) -> Result<(), StoreError> {
        let params = [
            Param::Int(user_id.0),
            Param::Int(floors.kept_since_ms),
            Param::Int(to_i64(floors.journal_floor.0)?),
        ];
        self.0.execute(SET_FLOORS, &params)?;
        Ok(())
    }

    fn referenced_chunks(
        &mut self,
        user_id: UserId,
        excluding: &HashSet<Cursor>,
    ) -> Result<HashSet<ChunkHash>, StoreError> {
        let mut referenced = HashSet::new();
        for row in self.0.query(REFERENCED, &[Param::Int(user_id.0)])? {
            // Nodes come as cursor 0, which no row has.
            if excluding.contains(&Cursor(to_u64(row.int(0)?, "cursor")?)) {
                continue;
            }
            referenced.extend(decode_chunks(&row.blob(1)?)?.into_iter().map(|c| c.hash));
        }
        Ok(referenced)
    }

    fn doom_chunks(
        &mut self,
        user_id: UserId,
        hashes: &[ChunkHash],
        run: i64,
    ) -> Result<(), StoreError> {
        for hash in hashes {
            let params = [Param::Int(user_id.0), Param::Blob(&hash.0), Param::Int(run)];
            self.0.execute(DOOM, &params)?;
        }
        Ok(())
    }

    fn end_gc(&mut self, user_id: UserId, run: i64) -> Result<(), StoreError> {
        self.0
            .execute(FORGET_DOOMED, &[Param::Int(user_id.0), Param::Int(run)])?;
        self.0.execute(BUMP_GC_EPOCH, &[Param::Int(user_id.0)])?;
        Ok(())
    }

    fn doomed_runs(&mut self, user_id: UserId) -> Result<Vec<(i64, Vec<ChunkHash>)>, StoreError> {
        let mut runs: Vec<(i64, Vec<ChunkHash>)> = Vec::new();
        for row in self.0.query(DOOMED_RUNS, &[Param::Int(user_id.0)])? {
            let (run, hash) = (row.int(0)?, stored_chunk_hash(&row.blob(1)?)?);
            match runs.last_mut() {
                Some((last, hashes)) if *last == run => hashes.push(hash),
                _ => runs.push((run, vec![hash])),
            }
        }
        Ok(runs)
    }

    fn kept_file_bytes(&mut self, user_id: UserId) -> Result<u64, StoreError> {
        match self.first_row(KEPT_FILE_BYTES, &[Param::Int(user_id.0)])? {
            Some(row) => to_u64(row.int(0)?, "kept bytes"),
            None => Ok(0),
        }
    }

    fn gc_epoch(&mut self, user_id: UserId) -> Result<u64, StoreError> {
        let row = self
            .first_row(GC_EPOCH, &[Param::Int(user_id.0)])?
            .ok_or_else(crate::unknown_user)?;
        to_u64(row.int(0)?, "gc epoch")
    }

    fn set_quota(&mut self, user_id: UserId, quota: Option<u64>) -> Result<(), StoreError> {
        let quota = quota.map(to_i64).transpose()?;
        let changed = self
            .0
            .execute(SET_QUOTA, &[Param::Int(user_id.0), Param::OptInt(quota)])?;
        if changed == 0 {
            return Err(crate::unknown_user());
        }
        Ok(())
    }

    fn row_tag(
        &mut self,
        user_id: UserId,
        cursor: Cursor,
    ) -> Result<Option<JournalTag>, StoreError> {
        let params = [Param::Int(user_id.0), Param::Int(to_i64(cursor.0)?)];
        self.first_row(ROW_TAG, &params)?
            .map(|row| stored_tag(&row.blob(0)?))
            .transpose()
    }

    fn wanted_chunks(
        &mut self,
        user_id: UserId,
        limit: usize,
    ) -> Result<Vec<ChunkHash>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .0
            .query(WANTED, &[Param::Int(user_id.0), Param::Int(limit)])?;
        rows.iter()
            .map(|row| stored_chunk_hash(&row.blob(0)?))
            .collect()
    }

    fn want_chunks(&mut self, user_id: UserId, hashes: &[ChunkHash]) -> Result<usize, StoreError> {
        let mut added = 0;
        for hash in hashes {
            let params = [Param::Int(user_id.0), Param::Blob(&hash.0)];
            added += self.0.execute(WANT, &params)?;
        }
        Ok(usize::try_from(added).unwrap_or(usize::MAX))
    }

    fn unwant_chunks(&mut self, user_id: UserId, hashes: &[ChunkHash]) -> Result<(), StoreError> {
        for hash in hashes {
            let params = [Param::Int(user_id.0), Param::Blob(&hash.0)];
            self.0.execute(UNWANT, &params)?;
        }
        Ok(())
    }

    fn next_stream_seq(&mut self, user_id: UserId) -> Result<u64, StoreError> {
        let seq = self.user_value(NEXT_STREAM_SEQ, &[Param::Int(user_id.0)])?;
        to_u64(int(&seq)?, "stream seq")
    }

    fn insert_stream_part(
        &mut self,
        user_id: UserId,
        seq: u64,
        device_id: DeviceId,
        part: &StreamPart,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let chunks = encode_chunks(&part.chunks);
        self.0.execute(
            INSERT_STREAM_PART,
            &[
                Param::Int(user_id.0),
                Param::Int(to_i64(seq)?),
                Param::Int(device_id.0),
                Param::Text(&part.stream),
                Param::Text(part.path.as_str()),
                Param::Int(to_i64(part.size)?),
                Param::Int(to_i64(part.offset)?),
                Param::Blob(&chunks),
                Param::Int(at_ms),
            ],
        )?;
        Ok(())
    }

    fn stream_tail(
        &mut self,
        user_id: UserId,
        stream: &str,
    ) -> Result<Option<(DeviceId, RelPath, u64)>, StoreError> {
        let params = [Param::Int(user_id.0), Param::Text(stream)];
        let Some(row) = self.first_row(STREAM_TAIL, &params)? else {
            return Ok(None);
        };
        let start = to_u64(row.int(2)?, "stream part start")?;
        let chunks = decode_chunks(&row.blob(3)?)?;
        Ok(Some((
            DeviceId(row.int(0)?),
            stored_path(&row.text(1)?)?,
            crate::streams::part_end(start, &chunks),
        )))
    }

    fn stream_heads(&mut self, user_id: UserId) -> Result<Vec<StreamHead>, StoreError> {
        let rows = self.0.query(STREAM_HEADS, &[Param::Int(user_id.0)])?;
        rows.iter()
            .map(|row| {
                Ok(StreamHead {
                    stream: row.text(0)?,
                    device_id: DeviceId(row.int(1)?),
                    last_ms: row.int(2)?,
                })
            })
            .collect()
    }

    fn stream_parts_after(
        &mut self,
        user_id: UserId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredStreamPart>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.0.query(
            STREAM_PARTS_AFTER,
            &[
                Param::Int(user_id.0),
                Param::Int(to_i64(after)?),
                Param::Int(limit),
            ],
        )?;
        rows.iter()
            .map(|row| {
                Ok(StoredStreamPart {
                    seq: to_u64(row.int(0)?, "stream seq")?,
                    device_id: DeviceId(row.int(1)?),
                    device_name: stored_device(&row.text(2)?)?,
                    part: StreamPart {
                        stream: row.text(3)?,
                        path: stored_path(&row.text(4)?)?,
                        size: to_u64(row.int(5)?, "stream size")?,
                        offset: to_u64(row.int(6)?, "stream part start")?,
                        chunks: decode_chunks(&row.blob(7)?)?,
                    },
                    at_ms: row.int(8)?,
                })
            })
            .collect()
    }

    fn delete_stream(&mut self, user_id: UserId, stream: &str) -> Result<(), StoreError> {
        self.0
            .execute(DELETE_STREAM, &[Param::Int(user_id.0), Param::Text(stream)])?;
        Ok(())
    }

    fn delete_streams_of(
        &mut self,
        user_id: UserId,
        device_id: DeviceId,
        path: &RelPath,
    ) -> Result<(), StoreError> {
        self.0.execute(
            DELETE_STREAMS_OF,
            &[
                Param::Int(user_id.0),
                Param::Int(device_id.0),
                Param::Text(path.as_str()),
            ],
        )?;
        Ok(())
    }

    fn dead_props(
        &mut self,
        user_id: UserId,
        node_id: NodeId,
    ) -> Result<Vec<DeadProp>, StoreError> {
        let rows = self.0.query(
            DEAD_PROPS,
            &[Param::Int(user_id.0), Param::Int(to_i64(node_id.0)?)],
        )?;
        rows.iter()
            .map(|row| {
                Ok(DeadProp {
                    namespace: row.text(0)?,
                    name: row.text(1)?,
                    prefix: row.opt_text(2)?,
                    xml: row.opt_blob(3)?,
                })
            })
            .collect()
    }

    fn patch_dead_props(
        &mut self,
        user_id: UserId,
        node_id: NodeId,
        patch: &[(bool, DeadProp)],
    ) -> Result<(), StoreError> {
        for (set, prop) in patch {
            let (user, node) = (Param::Int(user_id.0), Param::Int(to_i64(node_id.0)?));
            if *set {
                let params = [
                    user,
                    node,
                    Param::Text(&prop.namespace),
                    Param::Text(&prop.name),
                    Param::OptText(prop.prefix.as_deref()),
                    Param::OptBlob(prop.xml.as_deref()),
                ];
                self.0.execute(SET_DEAD_PROP, &params)?;
            } else {
                let params = [
                    user,
                    node,
                    Param::Text(&prop.namespace),
                    Param::Text(&prop.name),
                ];
                self.0.execute(REMOVE_DEAD_PROP, &params)?;
            }
        }
        Ok(())
    }

    fn remove_dead_props(&mut self, user_id: UserId, node_id: NodeId) -> Result<(), StoreError> {
        let params = [Param::Int(user_id.0), Param::Int(to_i64(node_id.0)?)];
        self.0.execute(REMOVE_DEAD_PROPS, &params)?;
        Ok(())
    }

    fn announce(&mut self, user_id: UserId, cursor: Cursor) -> Result<(), StoreError> {
        let Some(sql) = C::ANNOUNCE else {
            return Ok(());
        };
        let payload = format!("{}:{}", user_id.0, cursor.0);
        self.0.execute(sql, &[Param::Text(&payload)])?;
        Ok(())
    }
}

impl Row {
    fn value(&self, idx: usize) -> Result<&Value, StoreError> {
        self.0
            .get(idx)
            .ok_or_else(|| StoreError::Corrupt(format!("a row without column {idx}")))
    }

    fn int(&self, idx: usize) -> Result<i64, StoreError> {
        int(self.value(idx)?)
    }

    fn opt_int(&self, idx: usize) -> Result<Option<i64>, StoreError> {
        match self.value(idx)? {
            Value::Null => Ok(None),
            value => int(value).map(Some),
        }
    }

    fn text(&self, idx: usize) -> Result<String, StoreError> {
        match self.value(idx)? {
            Value::Text(text) => Ok(text.clone()),
            other => Err(unexpected("text", other)),
        }
    }

    fn opt_text(&self, idx: usize) -> Result<Option<String>, StoreError> {
        match self.value(idx)? {
            Value::Null => Ok(None),
            _ => self.text(idx).map(Some),
        }
    }

    fn blob(&self, idx: usize) -> Result<Vec<u8>, StoreError> {
        blob(self.value(idx)?.clone())
    }

    fn opt_blob(&self, idx: usize) -> Result<Option<Vec<u8>>, StoreError> {
        match self.value(idx)? {
            Value::Null => Ok(None),
            value => blob(value.clone()).map(Some),
        }
    }

    /// A boolean: PostgreSQL's, or SQLite's 0 and 1.
    fn flag(&self, idx: usize) -> Result<bool, StoreError> {
        match self.value(idx)? {
            Value::Bool(flag) => Ok(*flag),
            Value::Int(0) => Ok(false),
            Value::Int(1) => Ok(true),
            other => Err(unexpected("a boolean", other)),
        }
    }
}

fn int(value: &Value) -> Result<i64, StoreError> {
    match value {
        Value::Int(int) => Ok(*int),
        other => Err(unexpected("an integer", other)),
    }
}

fn blob(value: Value) -> Result<Vec<u8>, StoreError> {
    match value {
        Value::Blob(bytes) => Ok(bytes),
        other => Err(unexpected("bytes", &other)),
    }
}

fn unexpected(wanted: &str, found: &Value) -> StoreError {
    StoreError::Corrupt(format!("expected {wanted} in a column, found {found:?}"))
}

/// The id an `INSERT … RETURNING id` returned.
fn returned_id(rows: &[Row]) -> Result<i64, StoreError> {
    match rows.first() {
        Some(row) => row.int(0),
        None => Err(StoreError::Corrupt(
            "INSERT RETURNING returned no row".into(),
        )),
    }
}

/// The node columns of `row` ([`node_columns`] order), starting at column `first`.
fn node_entry(row: &Row, first: usize) -> Result<RemoteEntry, StoreError> {
    let kind = match row.text(first + 2)?.as_str() {
        "file" => EntryKind::File,
        "dir" => EntryKind::Dir,
        other => return Err(StoreError::Corrupt(format!("node kind {other:?}"))),
    };
    let hash = match row.opt_blob(first + 6)? {
        None => None,
        Some(bytes) => {
            Some(ContentHash(bytes.try_into().map_err(|_| {
                StoreError::Corrupt("content hash length".into())
            })?))
        }
    };
    Ok(RemoteEntry {
        node_id: NodeId(to_u64(row.int(first)?, "node id")?),
        path: stored_path(&row.text(first + 1)?)?,
        kind,
        rev: Revision(to_u64(row.int(first + 3)?, "rev")?),
        size: to_u64(row.int(first + 4)?, "size")?,
        mtime_ms: row.int(first + 5)?,
        hash,
        chunks: decode_chunks(&row.blob(first + 7)?)?,
        device: stored_device(&row.text(first + 8)?)?,
        executable: row.flag(first + 9)?,
    })
}

/// A `share_links` row ([`share_columns`] order).
fn share_record(row: &Row) -> Result<ShareRecord, StoreError> {
    Ok(ShareRecord {
        id: ShareId::new(row.text(0)?)?,
        user_id: UserId(row.int(1)?),
        node_id: NodeId(to_u64(row.int(2)?, "node id")?),
        path: stored_path(&row.text(3)?)?,
        created_ms: row.int(4)?,
        expires_ms: row.opt_int(5)?,
        password_hash: row.opt_text(6)?,
        revoked_ms: row.opt_int(7)?,
        created_by: stored_device(&row.text(8)?)?,
    })
}

/// A `changes` row ([`change_columns`] order).
fn node_change(row: &Row) -> Result<Change, StoreError> {
    let cursor = Cursor(to_u64(row.int(0)?, "cursor")?);
    if row.text(3)? == "deleted" {
        return Ok(Change::Delete {
            cursor,
            node_id: NodeId(to_u64(row.int(1)?, "node id")?),
            path: stored_path(&row.text(2)?)?,
            device: stored_device(&row.text(9)?)?,
        });
    }
    let entry = node_entry(row, 1)?;
    Ok(Change::Upsert { cursor, entry })
}

/// A `changes` row ([`change_columns`] order) followed by its `at_ms`.
fn journal_row(row: &Row) -> Result<JournalRow, StoreError> {
    Ok(JournalRow {
        change: node_change(row)?,
        at_ms: row.int(11)?,
    })
}

/// A `locks` row ([`lock_columns`] order).
fn lock_info(row: &Row) -> Result<LockInfo, StoreError> {
    Ok(LockInfo {
        path: stored_path(&row.text(0)?)?,
        device: stored_device(&row.text(1)?)?,
        since_ms: row.int(2)?,
        expires_ms: row.opt_int(3)?,
    })
}

/// A `lock_changes` row ([`lock_change_columns`] order).
fn lock_change(row: &Row) -> Result<Change, StoreError> {
    let cursor = Cursor(to_u64(row.int(0)?, "cursor")?);
    let path = stored_path(&row.text(2)?)?;
    let device = stored_device(&row.text(3)?)?;
    match row.text(1)?.as_str() {
        "lock" => Ok(Change::Lock {
            cursor,
            lock: LockInfo {
                path,
                device,
                since_ms: row
                    .opt_int(4)?
                    .ok_or_else(|| StoreError::Corrupt("lock row without since_ms".into()))?,
                expires_ms: row.opt_int(5)?,
            },
        }),
        "unlock" => Ok(Change::Unlock {
            cursor,
            path,
            device,
            broken_by: row.opt_text(6)?.as_deref().map(stored_device).transpose()?,
        }),
        other => Err(StoreError::Corrupt(format!("lock change kind {other:?}"))),
    }
}

/// A user row ([`user_columns`] order).
fn user(row: &Row) -> Result<User, StoreError> {
    Ok(User {
        id: UserId(row.int(0)?),
        name: UserName::new(&row.text(1)?).map_err(|err| StoreError::Corrupt(err.to_string()))?,
        namespace: stored_namespace(row.opt_blob(2)?)?,
    })
}

/// A device row ([`device_columns`] order).
fn device_record(row: &Row) -> Result<DeviceRecord, StoreError> {
    Ok(DeviceRecord {
        id: DeviceId(row.int(0)?),
        name: stored_device(&row.text(1)?)?,
        created_ms: row.opt_int(2)?,
        last_seen_ms: row.opt_int(3)?,
        last_address: row.opt_text(4)?,
        revoked_ms: row.opt_int(5)?,
    })
}

fn stored_path(text: &str) -> Result<RelPath, StoreError> {
    RelPath::new(text).map_err(|err| StoreError::Corrupt(err.to_string()))
}

fn stored_device(text: &str) -> Result<DeviceName, StoreError> {
    DeviceName::new(text).map_err(|err| StoreError::Corrupt(err.to_string()))
}

/// A stored journal tag.
fn stored_tag(bytes: &[u8]) -> Result<JournalTag, StoreError> {
    let bytes: [u8; 16] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("journal tag of {} bytes", bytes.len())))?;
    Ok(JournalTag(bytes))
}

/// A stored namespace id; a row without one predates them and is refused as corrupt.
fn stored_namespace(bytes: Option<Vec<u8>>) -> Result<NamespaceId, StoreError> {
    let bytes = bytes.ok_or_else(|| StoreError::Corrupt("user without a namespace id".into()))?;
    let bytes: [u8; 16] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("namespace id of {} bytes", bytes.len())))?;
    Ok(NamespaceId(bytes))
}

/// A stored chunk hash.
fn stored_chunk_hash(bytes: &[u8]) -> Result<ChunkHash, StoreError> {
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("chunk hash of {} bytes", bytes.len())))?;
    Ok(ChunkHash(bytes))
}

fn kind_text(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::File => "file",
        EntryKind::Dir => "dir",
    }
}

/// Bounds such that `low < path < high` holds exactly for the paths strictly inside `dir`
/// (`'0'` is the byte after `'/'`).
fn inside_bounds(dir: &RelPath) -> (String, String) {
    (format!("{dir}/"), format!("{dir}0"))
}

/// Chunk lists as stored ([`ChunkRef::encode_list`]).
fn encode_chunks(chunks: &[ChunkRef]) -> Vec<u8> {
    ChunkRef::encode_list(chunks)
}

/// The inverse of [`encode_chunks`].
fn decode_chunks(bytes: &[u8]) -> Result<Vec<ChunkRef>, StoreError> {
    ChunkRef::decode_list(bytes)
        .ok_or_else(|| StoreError::Corrupt(format!("chunk list of {} bytes", bytes.len())))
}

fn to_i64(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("{value} does not fit in a database integer")))
}

fn to_u64(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative {what} {value}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_lists_round_trip() {
        let chunks = vec![
            ChunkRef {
                hash: ChunkHash([1; 32]),
                len: 7,
            },
            ChunkRef {
                hash: ChunkHash([2; 32]),
                len: u32::MAX,
            },
        ];
        let bytes = encode_chunks(&chunks);
        assert_eq!(bytes.len(), 72);
        assert_eq!(decode_chunks(&bytes).unwrap(), chunks);
        assert!(decode_chunks(&bytes[..71]).is_err());
    }

    #[test]
    fn inside_bounds_hold_exactly_what_is_inside() {
        let (low, high) = inside_bounds(&RelPath::new("d").unwrap());
        let inside = |path: &str| low.as_str() < path && path < high.as_str();
        assert!(inside("d/x") && inside("d/e/f") && inside("d/~"));
        assert!(!inside("d") && !inside("d-sibling") && !inside("d0") && !inside("e"));
    }
}
