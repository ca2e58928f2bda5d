//! [`SqliteMetaStore`]: the embedded [`MetaStore`] on one SQLite file.
//!
//! Every call runs on a blocking thread (`spawn_blocking`) holding the single connection, which is
//! opened in WAL mode with `synchronous=FULL`: the server acknowledges uploads, so a committed
//! batch must survive power loss. A batch of ops is one `IMMEDIATE` transaction (one fsync) with
//! a savepoint per op, through the shared rules in [`crate::ops`]; taking or releasing a lock is
//! one `IMMEDIATE` transaction through [`crate::locks`]. SQLite has one writer at a time, so
//! racing lock attempts are serialised.
//!
//! The journal is split over two tables sharing the user's cursor: `changes` (node changes) and
//! `lock_changes` (lock changes); [`MetaStore::changes_since`] merges them by cursor.
//!
//! The schema comes from the numbered files in `migrations/sqlite/`, built in at compile time and
//! recorded in the `schema_version` table; a database from a newer build is refused.

use crate::ops::{self, Txn};
use crate::{
    locks, new_journal_tag, new_namespace_id, BatchOutcome, ChangesPage, ChunkLens, Device,
    DeviceId, LockOutcome, MetaStore, Principal, StoreError, Tree, User, UserId,
};
use async_trait::async_trait;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use syncstore_proto::{
    Change, ChunkHash, ChunkRef, ContentHash, Cursor, DeviceName, EntryKind, JournalTag, LockInfo,
    NamespaceId, NodeId, Op, RelPath, RemoteEntry, Revision, UserName,
};

/// The schema migrations, in order; migration `n` (1-based) brings the schema to version `n`.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/0001_init.sql"),
    include_str!("../migrations/sqlite/0002_locks.sql"),
    include_str!("../migrations/sqlite/0003_identity.sql"),
    include_str!("../migrations/sqlite/0004_modes.sql"),
];

/// How long a call waits for another process (an admin command) holding the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A [`MetaStore`] in one SQLite database file.
#[derive(Clone)]
pub struct SqliteMetaStore {
    /// The one connection; the mutex serialises calls, which SQLite would do for writes anyway.
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteMetaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteMetaStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteMetaStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    ///
    /// # Errors
    /// [`StoreError::SchemaTooNew`] for a database written by a newer build; database errors.
    pub async fn open(path: &Path) -> Result<SqliteMetaStore, StoreError> {
        let path = path.to_owned();
        let conn_path = path.clone();
        let conn = tokio::task::spawn_blocking(move || open_blocking(&conn_path))
            .await
            .map_err(|err| StoreError::Worker(err.to_string()))??;
        Ok(SqliteMetaStore {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    /// Runs `f` with the connection on a blocking thread.
    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves no open transaction behind (rusqlite rolls
            // back on drop), so the connection is still good.
            let mut conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|err| StoreError::Worker(err.to_string()))?
    }

    /// Runs `f` in one `IMMEDIATE` transaction, which holds SQLite's write lock from its start,
    /// and commits what `f` did, refusals included (they may have deleted expired lock rows).
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Txn) -> Result<T, StoreError> + Send + 'static,
    {
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let outcome = f(&mut SqliteTxn { conn: &tx })?;
            tx.commit()?;
            Ok(outcome)
        })
        .await
    }
}

fn open_blocking(path: &Path) -> Result<Connection, StoreError> {
    restrict_db_files(path)?;
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let journal_mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !journal_mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Corrupt(format!(
            "{} could not switch to WAL mode (got {journal_mode})",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Creates the database file with mode 0600 before SQLite opens it, so that SQLite, which gives
/// the `-wal` and `-shm` files the mode of the database, makes them 0600 too, whatever the
/// umask; narrows files an older version left readable by others.
fn restrict_db_files(path: &Path) -> Result<(), StoreError> {
    let failed = |path: &Path, source| {
        crate::fs::io_error(format!("could not make {} private", path.display()), source)
    };
    crate::fs::create_private_file(path).map_err(|source| failed(path, source))?;
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let side = Path::new(&side);
        crate::fs::restrict_mode(side, 0o600).map_err(|source| failed(side, source))?;
    }
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let found: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |row| row.get(0),
    )?;
    let supported = MIGRATIONS.len() as i64;
    if found > supported {
        return Err(StoreError::SchemaTooNew { found, supported });
    }
    for (idx, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [idx as i64 + 1],
        )?;
        tracing::info!(version = idx + 1, "applied sqlite migration");
    }
    tx.commit()?;
    Ok(())
}

fn is_constraint_violation(err: &rusqlite::Error) -> bool {
    matches!(err, rusqlite::Error::SqliteFailure(failure, _) if failure.code == ErrorCode::ConstraintViolation)
}

#[async_trait]
impl MetaStore for SqliteMetaStore {
    #[tracing::instrument(skip(self))]
    async fn create_user(&self, name: &UserName) -> Result<User, StoreError> {
        let name = name.clone();
        let namespace = new_namespace_id();
        self.call(move |conn| {
            match conn.execute(
                "INSERT INTO users (name, namespace_id) VALUES (?1, ?2)",
                params![name.as_str(), &namespace.0[..]],
            ) {
                Ok(_) => Ok(User {
                    id: UserId(conn.last_insert_rowid()),
                    name,
                    namespace,
                }),
                Err(err) if is_constraint_violation(&err) => {
                    Err(StoreError::AlreadyExists(format!("user {name}")))
                }
                Err(err) => Err(err.into()),
            }
        })
        .await
    }

    async fn user_by_name(&self, name: &UserName) -> Result<Option<User>, StoreError> {
        let name = name.clone();
        self.call(move |conn| {
            let row: Option<(i64, Option<Vec<u8>>)> = conn
                .query_row(
                    "SELECT id, namespace_id FROM users WHERE name = ?1",
                    [name.as_str()],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            row.map(|(id, namespace)| {
                Ok(User {
                    id: UserId(id),
                    name,
                    namespace: stored_namespace(namespace)?,
                })
            })
            .transpose()
        })
        .await
    }

    #[tracing::instrument(skip(self, token_hash))]
    async fn add_device(
        &self,
        user_id: UserId,
        name: &DeviceName,
        token_hash: &crate::TokenHash,
    ) -> Result<Device, StoreError> {
        let name = name.clone();
        let token_hash = *token_hash;
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            user_cursor(&tx, user_id)?;
            let inserted = tx.execute(
                "INSERT INTO devices (user_id, name, token_hash) VALUES (?1, ?2, ?3)",
                params![user_id.0, name.as_str(), &token_hash.0[..]],
            );
            match inserted {
                Ok(_) => {}
                Err(err) if is_constraint_violation(&err) => {
                    return Err(StoreError::AlreadyExists(format!(
                        "device {name} of user {user_id}"
                    )));
                }
                Err(err) => return Err(err.into()),
            }
            let device = Device {
                id: DeviceId(tx.last_insert_rowid()),
                user_id,
                name,
            };
            tx.commit()?;
            Ok(device)
        })
        .await
    }

    async fn authenticate(
        &self,
        token_hash: &crate::TokenHash,
    ) -> Result<Option<Principal>, StoreError> {
        let token_hash = *token_hash;
        self.call(move |conn| {
            type AuthRow = (i64, String, i64, String, Option<Vec<u8>>);
            let row: Option<AuthRow> = conn
                .query_row(
                    "SELECT users.id, users.name, devices.id, devices.name, users.namespace_id
                     FROM devices JOIN users ON users.id = devices.user_id
                     WHERE devices.token_hash = ?1",
                    [&token_hash.0[..]],
                    |row| {
                        Ok((
                            row.get(0)?,
                            row.get(1)?,
                            row.get(2)?,
                            row.get(3)?,
                            row.get(4)?,
                        ))
                    },
                )
                .optional()?;
            let Some((user_id, user_name, device_id, device_name, namespace)) = row else {
                return Ok(None);
            };
            Ok(Some(Principal {
                user_id: UserId(user_id),
                user_name: UserName::new(&user_name)
                    .map_err(|err| StoreError::Corrupt(err.to_string()))?,
                namespace: stored_namespace(namespace)?,
                device_id: DeviceId(device_id),
                device_name: DeviceName::new(&device_name)
                    .map_err(|err| StoreError::Corrupt(err.to_string()))?,
            }))
        })
        .await
    }

    async fn count_users(&self) -> Result<u64, StoreError> {
        self.call(|conn| {
            let count: i64 = conn.query_row("SELECT COUNT(*) FROM users", [], |row| row.get(0))?;
            to_u64(count, "user count")
        })
        .await
    }

    async fn users(&self) -> Result<Vec<User>, StoreError> {
        self.call(|conn| {
            let mut stmt =
                conn.prepare("SELECT id, name, namespace_id FROM users ORDER BY name")?;
            let rows = stmt
                .query_map([], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, Option<Vec<u8>>>(2)?,
                    ))
                })?
                .collect::<Result<Vec<_>, rusqlite::Error>>()?;
            rows.into_iter()
                .map(|(id, name, namespace)| {
                    Ok(User {
                        id: UserId(id),
                        name: UserName::new(&name)
                            .map_err(|err| StoreError::Corrupt(err.to_string()))?,
                        namespace: stored_namespace(namespace)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn journal_tag(
        &self,
        user_id: UserId,
        cursor: Cursor,
    ) -> Result<Option<JournalTag>, StoreError> {
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let current = user_cursor(&tx, user_id)?;
            let tag = if cursor > current {
                None
            } else {
                tag_at(&tx, user_id, cursor)?
            };
            tx.commit()?;
            Ok(tag)
        })
        .await
    }

    async fn wanted_chunks(
        &self,
        user_id: UserId,
        limit: usize,
    ) -> Result<Vec<ChunkHash>, StoreError> {
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT hash FROM wanted_chunks WHERE user_id = ?1 ORDER BY hash LIMIT ?2",
            )?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = stmt
                .query_map(params![user_id.0, limit], |row| row.get::<_, Vec<u8>>(0))?
                .collect::<Result<Vec<_>, rusqlite::Error>>()?;
            rows.into_iter()
                .map(|bytes| stored_chunk_hash(&bytes))
                .collect()
        })
        .await
    }

    async fn want_chunks(
        &self,
        user_id: UserId,
        hashes: &[ChunkHash],
    ) -> Result<usize, StoreError> {
        let hashes = hashes.to_vec();
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut added = 0;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR IGNORE INTO wanted_chunks (user_id, hash) VALUES (?1, ?2)",
                )?;
                for hash in &hashes {
                    added += stmt.execute(params![user_id.0, &hash.0[..]])?;
                }
            }
            tx.commit()?;
            Ok(added)
        })
        .await
    }

    async fn unwant_chunks(&self, user_id: UserId, hashes: &[ChunkHash]) -> Result<(), StoreError> {
        let hashes = hashes.to_vec();
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut stmt = tx
                    .prepare_cached("DELETE FROM wanted_chunks WHERE user_id = ?1 AND hash = ?2")?;
                for hash in &hashes {
                    stmt.execute(params![user_id.0, &hash.0[..]])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn tree(&self, user_id: UserId, now_ms: i64) -> Result<Tree, StoreError> {
        self.call(move |conn| {
            // One read transaction, so the cursor, the entries and the locks agree.
            let tx = conn.transaction()?;
            let cursor = user_cursor(&tx, user_id)?;
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {NODE_COLUMNS} FROM nodes WHERE user_id = ?1 ORDER BY path"
            ))?;
            let raws = stmt
                .query_map([user_id.0], RawRow::read)?
                .collect::<Result<Vec<RawRow>, rusqlite::Error>>()?;
            let entries = raws
                .into_iter()
                .map(RawRow::into_entry)
                .collect::<Result<Vec<_>, _>>()?;
            drop(stmt);
            let locks = locks::locks_in_force(&mut SqliteTxn { conn: &tx }, user_id, now_ms)?;
            let cursor_tag = SqliteTxn { conn: &tx }.head_tag(user_id)?;
            tx.commit()?;
            Ok(Tree {
                cursor,
                cursor_tag,
                entries,
                locks,
            })
        })
        .await
    }

    async fn changes_since(
        &self,
        user_id: UserId,
        since: Cursor,
        limit: usize,
    ) -> Result<ChangesPage, StoreError> {
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let current = user_cursor(&tx, user_id)?;
            if since > current {
                return Ok(ChangesPage {
                    cursor: current,
                    cursor_tag: SqliteTxn { conn: &tx }.head_tag(user_id)?,
                    changes: Vec::new(),
                    more: false,
                    reset: true,
                });
            }
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {CHANGE_COLUMNS} FROM changes
                 WHERE user_id = ?1 AND cursor > ?2 ORDER BY cursor LIMIT ?3"
            ))?;
            let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
            let node_rows = stmt
                .query_map(params![user_id.0, to_i64(since.0)?, fetch], |row| {
                    Ok((row.get::<_, i64>(0)?, RawRow::read_from(row, 1)?))
                })?
                .collect::<Result<Vec<_>, rusqlite::Error>>()?;
            drop(stmt);
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {LOCK_CHANGE_COLUMNS} FROM lock_changes
                 WHERE user_id = ?1 AND cursor > ?2 ORDER BY cursor LIMIT ?3"
            ))?;
            let lock_rows = stmt
                .query_map(
                    params![user_id.0, to_i64(since.0)?, fetch],
                    RawLockChange::read,
                )?
                .collect::<Result<Vec<_>, rusqlite::Error>>()?;
            drop(stmt);
            let mut page = journal_page(node_rows, lock_rows, since, limit)?;
            page.cursor_tag = tag_at(&tx, user_id, page.cursor)?.ok_or_else(|| {
                StoreError::Corrupt(format!("no journal row at cursor {}", page.cursor))
            })?;
            tx.commit()?;
            Ok(page)
        })
        .await
    }

    async fn current_cursor(&self, user_id: UserId) -> Result<Cursor, StoreError> {
        self.call(move |conn| user_cursor(conn, user_id)).await
    }

    #[tracing::instrument(skip(self, ops, chunk_lens), fields(n_ops = ops.len()))]
    async fn apply_ops(
        &self,
        user_id: UserId,
        device: &DeviceName,
        ops: Vec<Op>,
        chunk_lens: ChunkLens,
        now_ms: i64,
    ) -> Result<BatchOutcome, StoreError> {
        let device = device.clone();
        self.write(move |txn| ops::apply_batch(txn, user_id, &device, &ops, &chunk_lens, now_ms))
            .await
    }

    #[tracing::instrument(skip(self))]
    async fn take_lock(
        &self,
        user_id: UserId,
        device: &DeviceName,
        path: &RelPath,
        ttl_secs: Option<u64>,
        now_ms: i64,
    ) -> Result<LockOutcome, StoreError> {
        let device = device.clone();
        let path = path.clone();
        self.write(move |txn| locks::take_lock(txn, user_id, &device, &path, ttl_secs, now_ms))
            .await
    }

    #[tracing::instrument(skip(self))]
    async fn release_lock(
        &self,
        user_id: UserId,
        device: &DeviceName,
        path: &RelPath,
        force: bool,
        now_ms: i64,
    ) -> Result<LockOutcome, StoreError> {
        let device = device.clone();
        let path = path.clone();
        self.write(move |txn| locks::release_lock(txn, user_id, &device, &path, force, now_ms))
            .await
    }

    async fn locks(&self, user_id: UserId, now_ms: i64) -> Result<Vec<LockInfo>, StoreError> {
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let locks = locks::locks_in_force(&mut SqliteTxn { conn: &tx }, user_id, now_ms)?;
            tx.commit()?;
            Ok(locks)
        })
        .await
    }
}

/// The columns of a lock row, in [`RawLock`] order.
pub(crate) const LOCK_COLUMNS: &str = "path, device, since_ms, expires_ms";

/// The columns of a lock journal row, in [`RawLockChange`] order.
pub(crate) const LOCK_CHANGE_COLUMNS: &str =
    "cursor, kind, path, device, since_ms, expires_ms, broken_by";

/// One page of the journal from the first `limit + 1` rows after `since` of each journal table
/// (`node_rows` with their cursors), both sorted by cursor.
///
/// The first `limit + 1` of their merge are the first `limit + 1` of the journal: `limit` go in
/// the page, and one more sets `more`.
pub(crate) fn journal_page(
    node_rows: Vec<(i64, RawRow)>,
    lock_rows: Vec<RawLockChange>,
    since: Cursor,
    limit: usize,
) -> Result<ChangesPage, StoreError> {
    enum JournalRow {
        Node(RawRow),
        Lock(RawLockChange),
    }
    let mut rows = Vec::with_capacity(node_rows.len() + lock_rows.len());
    for (cursor, raw) in node_rows {
        rows.push((cursor, JournalRow::Node(raw)));
    }
    for raw in lock_rows {
        rows.push((raw.cursor, JournalRow::Lock(raw)));
    }
    rows.sort_by_key(|(cursor, _)| *cursor);
    let more = rows.len() > limit;
    let mut changes = Vec::with_capacity(rows.len().min(limit));
    for (cursor, row) in rows.into_iter().take(limit) {
        let cursor = Cursor(to_u64(cursor, "cursor")?);
        changes.push(match row {
            JournalRow::Node(raw) => raw.into_change(cursor)?,
            JournalRow::Lock(raw) => raw.into_change(cursor)?,
        });
    }
    let cursor = changes.last().map_or(since, Change::cursor);
    Ok(ChangesPage {
        cursor,
        // Filled in by the caller, which can look the tag up in the same transaction.
        cursor_tag: JournalTag::default(),
        changes,
        more,
        reset: false,
    })
}

/// A `locks` row, not yet validated.
pub(crate) struct RawLock {
    pub(crate) path: String,
    pub(crate) device: String,
    pub(crate) since_ms: i64,
    pub(crate) expires_ms: Option<i64>,
}

impl RawLock {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawLock> {
        Ok(RawLock {
            path: row.get(0)?,
            device: row.get(1)?,
            since_ms: row.get(2)?,
            expires_ms: row.get(3)?,
        })
    }

    pub(crate) fn into_lock(self) -> Result<LockInfo, StoreError> {
        Ok(LockInfo {
            path: stored_path(&self.path)?,
            device: stored_device(&self.device)?,
            since_ms: self.since_ms,
            expires_ms: self.expires_ms,
        })
    }
}

/// A `lock_changes` row, not yet validated.
pub(crate) struct RawLockChange {
    pub(crate) cursor: i64,
    pub(crate) kind: String,
    pub(crate) path: String,
    pub(crate) device: String,
    pub(crate) since_ms: Option<i64>,
    pub(crate) expires_ms: Option<i64>,
    pub(crate) broken_by: Option<String>,
}

impl RawLockChange {
    pub(crate) fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawLockChange> {
        Ok(RawLockChange {
            cursor: row.get(0)?,
            kind: row.get(1)?,
            path: row.get(2)?,
            device: row.get(3)?,
            since_ms: row.get(4)?,
            expires_ms: row.get(5)?,
            broken_by: row.get(6)?,
        })
    }

    pub(crate) fn into_change(self, cursor: Cursor) -> Result<Change, StoreError> {
        let path = stored_path(&self.path)?;
        let device = stored_device(&self.device)?;
        match self.kind.as_str() {
            "lock" => Ok(Change::Lock {
                cursor,
                lock: LockInfo {
                    path,
                    device,
                    since_ms: self
                        .since_ms
                        .ok_or_else(|| StoreError::Corrupt("lock row without since_ms".into()))?,
                    expires_ms: self.expires_ms,
                },
            }),
            "unlock" => Ok(Change::Unlock {
                cursor,
                path,
                device,
                broken_by: self.broken_by.as_deref().map(stored_device).transpose()?,
            }),
            other => Err(StoreError::Corrupt(format!("lock change kind {other:?}"))),
        }
    }
}

fn stored_path(text: &str) -> Result<RelPath, StoreError> {
    RelPath::new(text).map_err(|err| StoreError::Corrupt(err.to_string()))
}

fn stored_device(text: &str) -> Result<DeviceName, StoreError> {
    DeviceName::new(text).map_err(|err| StoreError::Corrupt(err.to_string()))
}

/// The columns of a node row (and of the node part of a change row), in [`RawRow`] order.
pub(crate) const NODE_COLUMNS: &str =
    "node_id, path, kind, rev, size, mtime_ms, hash, chunks, device, executable";

/// The columns of a change row: its cursor, then the node columns (a change's rev is its cursor).
pub(crate) const CHANGE_COLUMNS: &str =
    "cursor, node_id, path, kind, cursor AS rev, size, mtime_ms, hash, chunks, device, executable";

/// The columns of a node or change row, not yet validated.
pub(crate) struct RawRow {
    pub(crate) node_id: i64,
    pub(crate) path: String,
    pub(crate) kind: String,
    pub(crate) rev: i64,
    pub(crate) size: i64,
    pub(crate) mtime_ms: i64,
    pub(crate) hash: Option<Vec<u8>>,
    pub(crate) chunks: Vec<u8>,
    pub(crate) device: String,
    pub(crate) executable: bool,
}

impl RawRow {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
        RawRow::read_from(row, 0)
    }

    fn read_from(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<RawRow> {
        Ok(RawRow {
            node_id: row.get(first)?,
            path: row.get(first + 1)?,
            kind: row.get(first + 2)?,
            rev: row.get(first + 3)?,
            size: row.get(first + 4)?,
            mtime_ms: row.get(first + 5)?,
            hash: row.get(first + 6)?,
            chunks: row.get(first + 7)?,
            device: row.get(first + 8)?,
            executable: row.get(first + 9)?,
        })
    }

    pub(crate) fn into_entry(self) -> Result<RemoteEntry, StoreError> {
        let kind = match self.kind.as_str() {
            "file" => EntryKind::File,
            "dir" => EntryKind::Dir,
            other => return Err(StoreError::Corrupt(format!("node kind {other:?}"))),
        };
        let hash = match self.hash {
            None => None,
            Some(bytes) => {
                Some(ContentHash(bytes.try_into().map_err(|_| {
                    StoreError::Corrupt("content hash length".into())
                })?))
            }
        };
        Ok(RemoteEntry {
            node_id: NodeId(to_u64(self.node_id, "node id")?),
            path: RelPath::new(&self.path).map_err(|err| StoreError::Corrupt(err.to_string()))?,
            kind,
            rev: Revision(to_u64(self.rev, "rev")?),
            size: to_u64(self.size, "size")?,
            mtime_ms: self.mtime_ms,
            hash,
            chunks: decode_chunks(&self.chunks)?,
            device: DeviceName::new(&self.device)
                .map_err(|err| StoreError::Corrupt(err.to_string()))?,
            executable: self.executable,
        })
    }

    pub(crate) fn into_change(self, cursor: Cursor) -> Result<Change, StoreError> {
        if self.kind == "deleted" {
            return Ok(Change::Delete {
                cursor,
                node_id: NodeId(to_u64(self.node_id, "node id")?),
                path: RelPath::new(&self.path)
                    .map_err(|err| StoreError::Corrupt(err.to_string()))?,
                device: DeviceName::new(&self.device)
                    .map_err(|err| StoreError::Corrupt(err.to_string()))?,
            });
        }
        let entry = self.into_entry()?;
        Ok(Change::Upsert { cursor, entry })
    }
}

/// The user's cursor, or [`StoreError::NotFound`].
fn user_cursor(conn: &Connection, user_id: UserId) -> Result<Cursor, StoreError> {
    let cursor: Option<i64> = conn
        .query_row(
            "SELECT cursor FROM users WHERE id = ?1",
            [user_id.0],
            |row| row.get(0),
        )
        .optional()?;
    match cursor {
        Some(cursor) => Ok(Cursor(to_u64(cursor, "cursor")?)),
        None => Err(StoreError::NotFound(format!("user {user_id}"))),
    }
}

/// The tag of the journal row at `cursor` (all zero for cursor 0), if there is one.
fn tag_at(
    conn: &Connection,
    user_id: UserId,
    cursor: Cursor,
) -> Result<Option<JournalTag>, StoreError> {
    if cursor.0 == 0 {
        return Ok(Some(JournalTag::default()));
    }
    let mut stmt = conn.prepare_cached(
        "SELECT tag FROM changes WHERE user_id = ?1 AND cursor = ?2
         UNION ALL SELECT tag FROM lock_changes WHERE user_id = ?1 AND cursor = ?2",
    )?;
    let tag: Option<Vec<u8>> = stmt
        .query_row(params![user_id.0, to_i64(cursor.0)?], |row| row.get(0))
        .optional()?;
    tag.map(|bytes| stored_tag(&bytes)).transpose()
}

/// A stored journal tag.
pub(crate) fn stored_tag(bytes: &[u8]) -> Result<JournalTag, StoreError> {
    let bytes: [u8; 16] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("journal tag of {} bytes", bytes.len())))?;
    Ok(JournalTag(bytes))
}

/// A stored namespace id; a row without one predates them and is refused as corrupt.
pub(crate) fn stored_namespace(bytes: Option<Vec<u8>>) -> Result<NamespaceId, StoreError> {
    let bytes = bytes.ok_or_else(|| StoreError::Corrupt("user without a namespace id".into()))?;
    let bytes: [u8; 16] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("namespace id of {} bytes", bytes.len())))?;
    Ok(NamespaceId(bytes))
}

/// A stored chunk hash.
pub(crate) fn stored_chunk_hash(bytes: &[u8]) -> Result<ChunkHash, StoreError> {
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("chunk hash of {} bytes", bytes.len())))?;
    Ok(ChunkHash(bytes))
}

/// [`Txn`] on an open rusqlite transaction.
struct SqliteTxn<'a> {
    conn: &'a Connection,
}

impl Txn for SqliteTxn<'_> {
    fn begin_op(&mut self) -> Result<(), StoreError> {
        self.conn.execute_batch("SAVEPOINT op")?;
        Ok(())
    }

    fn end_op(&mut self, keep: bool) -> Result<(), StoreError> {
        if keep {
            self.conn.execute_batch("RELEASE op")?;
        } else {
            self.conn.execute_batch("ROLLBACK TO op; RELEASE op")?;
        }
        Ok(())
    }

    fn node_at(
        &mut self,
        user_id: UserId,
        path: &RelPath,
    ) -> Result<Option<RemoteEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {NODE_COLUMNS} FROM nodes WHERE user_id = ?1 AND path = ?2"
        ))?;
        let raw = stmt
            .query_row(params![user_id.0, path.as_str()], RawRow::read)
            .optional()?;
        raw.map(RawRow::into_entry).transpose()
    }

    fn descendants(
        &mut self,
        user_id: UserId,
        dir: &RelPath,
    ) -> Result<Vec<RemoteEntry>, StoreError> {
        let (low, high) = inside_bounds(dir);
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {NODE_COLUMNS} FROM nodes WHERE user_id = ?1 AND path > ?2 AND path < ?3"
        ))?;
        let raws = stmt
            .query_map(params![user_id.0, low, high], RawRow::read)?
            .collect::<Result<Vec<_>, rusqlite::Error>>()?;
        raws.into_iter().map(RawRow::into_entry).collect()
    }

    fn has_children(&mut self, user_id: UserId, dir: &RelPath) -> Result<bool, StoreError> {
        let (low, high) = inside_bounds(dir);
        let mut stmt = self.conn.prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM nodes WHERE user_id = ?1 AND path > ?2 AND path < ?3)",
        )?;
        Ok(stmt.query_row(params![user_id.0, low, high], |row| row.get(0))?)
    }

    fn next_cursor(&mut self, user_id: UserId) -> Result<Cursor, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE users SET cursor = cursor + 1, head_tag = ?2 WHERE id = ?1 RETURNING cursor",
        )?;
        let tag = new_journal_tag();
        let cursor: Option<i64> = stmt
            .query_row(params![user_id.0, &tag.0[..]], |row| row.get(0))
            .optional()?;
        match cursor {
            Some(cursor) => Ok(Cursor(to_u64(cursor, "cursor")?)),
            None => Err(StoreError::NotFound(format!("user {user_id}"))),
        }
    }

    fn current_cursor(&mut self, user_id: UserId) -> Result<Cursor, StoreError> {
        user_cursor(self.conn, user_id)
    }

    fn head_tag(&mut self, user_id: UserId) -> Result<JournalTag, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT head_tag FROM users WHERE id = ?1")?;
        let tag: Option<Vec<u8>> = stmt.query_row([user_id.0], |row| row.get(0)).optional()?;
        match tag {
            Some(bytes) => stored_tag(&bytes),
            None => Err(StoreError::NotFound(format!("user {user_id}"))),
        }
    }

    fn next_node_id(&mut self, user_id: UserId) -> Result<NodeId, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE users SET next_node_id = next_node_id + 1 WHERE id = ?1 RETURNING next_node_id - 1",
        )?;
        let node_id: Option<i64> = stmt.query_row([user_id.0], |row| row.get(0)).optional()?;
        match node_id {
            Some(node_id) => Ok(NodeId(to_u64(node_id, "node id")?)),
            None => Err(StoreError::NotFound(format!("user {user_id}"))),
        }
    }

    fn put_node(&mut self, user_id: UserId, entry: &RemoteEntry) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO nodes (user_id, node_id, path, kind, rev, size, mtime_ms, hash, chunks, device, executable)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (user_id, node_id) DO UPDATE SET
                 path = excluded.path, kind = excluded.kind, rev = excluded.rev,
                 size = excluded.size, mtime_ms = excluded.mtime_ms, hash = excluded.hash,
                 chunks = excluded.chunks, device = excluded.device, executable = excluded.executable",
        )?;
        stmt.execute(params![
            user_id.0,
            to_i64(entry.node_id.0)?,
            entry.path.as_str(),
            kind_text(entry.kind),
            to_i64(entry.rev.0)?,
            to_i64(entry.size)?,
            entry.mtime_ms,
            entry.hash.as_ref().map(|hash| &hash.0[..]),
            encode_chunks(&entry.chunks),
            entry.device.as_str(),
            entry.executable,
        ])?;
        Ok(())
    }

    fn remove_node(&mut self, user_id: UserId, node_id: NodeId) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("DELETE FROM nodes WHERE user_id = ?1 AND node_id = ?2")?;
        stmt.execute(params![user_id.0, to_i64(node_id.0)?])?;
        Ok(())
    }

    fn append_change(&mut self, user_id: UserId, change: &Change) -> Result<(), StoreError> {
        let mut node_stmt = self.conn.prepare_cached(
            "INSERT INTO changes (user_id, cursor, node_id, kind, path, size, mtime_ms, hash, chunks, device, executable, tag)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, (SELECT head_tag FROM users WHERE id = ?1))",
        )?;
        let mut lock_stmt = self.conn.prepare_cached(
            "INSERT INTO lock_changes (user_id, cursor, kind, path, device, since_ms, expires_ms, broken_by, tag)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, (SELECT head_tag FROM users WHERE id = ?1))",
        )?;
        match change {
            Change::Upsert { cursor, entry } => node_stmt.execute(params![
                user_id.0,
                to_i64(cursor.0)?,
                to_i64(entry.node_id.0)?,
                kind_text(entry.kind),
                entry.path.as_str(),
                to_i64(entry.size)?,
                entry.mtime_ms,
                entry.hash.as_ref().map(|hash| &hash.0[..]),
                encode_chunks(&entry.chunks),
                entry.device.as_str(),
                entry.executable,
            ])?,
            Change::Delete {
                cursor,
                node_id,
                path,
                device,
            } => node_stmt.execute(params![
                user_id.0,
                to_i64(cursor.0)?,
                to_i64(node_id.0)?,
                "deleted",
                path.as_str(),
                0i64,
                0i64,
                None::<Vec<u8>>,
                Vec::<u8>::new(),
                device.as_str(),
                false,
            ])?,
            Change::Lock { cursor, lock } => lock_stmt.execute(params![
                user_id.0,
                to_i64(cursor.0)?,
                "lock",
                lock.path.as_str(),
                lock.device.as_str(),
                lock.since_ms,
                lock.expires_ms,
                None::<String>,
            ])?,
            Change::Unlock {
                cursor,
                path,
                device,
                broken_by,
            } => lock_stmt.execute(params![
                user_id.0,
                to_i64(cursor.0)?,
                "unlock",
                path.as_str(),
                device.as_str(),
                None::<i64>,
                None::<i64>,
                broken_by.as_ref().map(DeviceName::as_str),
            ])?,
        };
        Ok(())
    }

    fn serialize_writes(&mut self, user_id: UserId) -> Result<(), StoreError> {
        // Every writing transaction here is IMMEDIATE: it holds SQLite's one write lock already.
        // What is left is the contract's check for an unknown user.
        user_cursor(self.conn, user_id).map(|_| ())
    }

    fn lock_rows(&mut self, user_id: UserId) -> Result<Vec<LockInfo>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {LOCK_COLUMNS} FROM locks WHERE user_id = ?1"
        ))?;
        let raws = stmt
            .query_map([user_id.0], RawLock::read)?
            .collect::<Result<Vec<_>, rusqlite::Error>>()?;
        raws.into_iter().map(RawLock::into_lock).collect()
    }

    fn insert_lock(&mut self, user_id: UserId, lock: &LockInfo) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO locks (user_id, path, device, since_ms, expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        stmt.execute(params![
            user_id.0,
            lock.path.as_str(),
            lock.device.as_str(),
            lock.since_ms,
            lock.expires_ms,
        ])?;
        Ok(())
    }

    fn remove_lock(&mut self, user_id: UserId, path: &RelPath) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("DELETE FROM locks WHERE user_id = ?1 AND path = ?2")?;
        stmt.execute(params![user_id.0, path.as_str()])?;
        Ok(())
    }
}

pub(crate) fn kind_text(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::File => "file",
        EntryKind::Dir => "dir",
    }
}

/// Bounds such that `low < path < high` holds exactly for the paths strictly inside `dir`
/// (`'0'` is the byte after `'/'`).
pub(crate) fn inside_bounds(dir: &RelPath) -> (String, String) {
    (format!("{dir}/"), format!("{dir}0"))
}

/// Chunk lists as stored: 36 bytes per chunk, the hash then the length as a big-endian `u32`.
pub(crate) fn encode_chunks(chunks: &[ChunkRef]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunks.len() * 36);
    for chunk in chunks {
        out.extend_from_slice(&chunk.hash.0);
        out.extend_from_slice(&chunk.len.to_be_bytes());
    }
    out
}

/// The inverse of [`encode_chunks`].
pub(crate) fn decode_chunks(bytes: &[u8]) -> Result<Vec<ChunkRef>, StoreError> {
    let records = bytes.chunks_exact(36);
    if !records.remainder().is_empty() {
        return Err(StoreError::Corrupt(format!(
            "chunk list of {} bytes",
            bytes.len()
        )));
    }
    Ok(records
        .map(|record| {
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&record[..32]);
            let len = u32::from_be_bytes([record[32], record[33], record[34], record[35]]);
            ChunkRef {
                hash: ChunkHash(hash),
                len,
            }
        })
        .collect())
}

pub(crate) fn to_i64(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("{value} does not fit in a database integer")))
}

pub(crate) fn to_u64(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative {what} {value}")))
}
