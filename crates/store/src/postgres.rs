//! [`PgMetaStore`]: a [`MetaStore`] in PostgreSQL, shared by any number of server processes.
//!
//! Calls run the sync `postgres` client on a blocking thread (`spawn_blocking`), with a small
//! pool of connections bounded by a semaphore. A batch of ops is one transaction with a
//! savepoint per op, through the shared rules in [`crate::ops`], exactly as on SQLite.
//!
//! Correctness across servers: every write transaction first locks the user's row
//! (`SELECT … FROM users WHERE id = $1 FOR UPDATE`, which is [`Txn::serialize_writes`]). A user's batches, and so the allocation of
//! its cursors and node ids and every conditional write, run one after another whichever server
//! they come through; the default READ COMMITTED isolation then sees the latest committed state
//! after the lock is taken. Reads that must agree with a cursor (`tree`, `changes_since`) run in
//! one REPEATABLE READ snapshot.
//!
//! Change feed: a batch that changed something, and every lock change, runs `pg_notify('syncstore_changes',
//! '<user id>:<cursor>')` inside its transaction, so PostgreSQL delivers it exactly when (and
//! only if) the batch commits. [`PgMetaStore::change_feed`] LISTENs on its own connection and
//! hands the notices to the server, which wakes its long polls. Notices sent while that
//! connection is down are lost; the feed says when it listens again
//! ([`ChangeFeed::resumed`]), and the server then reads the cursors it cares about again.
//!
//! Restarts of the database: a connection error (refused, reset, closed, or PostgreSQL's
//! "terminating connection") is [`StoreError::Unavailable`]. A call whose pooled connection
//! turns out dead (the server restarted since it was last used) drops every idle connection and
//! runs again on a new one, which is safe because a transaction is only retried when it failed
//! before its `COMMIT` was sent, so it certainly did not commit; a connection lost during
//! `COMMIT` leaves the outcome unknown and is answered as unavailable, not retried. A
//! single-statement write (`create_user`) is not retried either.
//!
//! The schema comes from the numbered files in `migrations/postgres/`, built in at compile
//! time, applied under an advisory lock (several servers may start at once) and recorded in
//! `schema_version`; a database from a newer build is refused.

use crate::ops::{self, Txn};
use crate::sqlite::{
    encode_chunks, inside_bounds, journal_page, kind_text, stored_chunk_hash, stored_namespace,
    stored_tag, to_i64, to_u64, RawLock, RawLockChange, RawRow, CHANGE_COLUMNS,
    LOCK_CHANGE_COLUMNS, LOCK_COLUMNS, NODE_COLUMNS,
};
use crate::{
    locks, new_journal_tag, new_namespace_id, BatchOutcome, ChangeFeed, ChangeNotice, ChangesPage,
    ChunkLens, Device, DeviceId, LockOutcome, MetaStore, Principal, Service, StoreError, TokenHash,
    Tree, User, UserId,
};
use async_trait::async_trait;
use postgres::error::SqlState;
use postgres::{Client, IsolationLevel, NoTls, Row};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use syncstore_proto::{
    Change, ChunkHash, Cursor, DeviceName, JournalTag, LockInfo, NodeId, Op, RelPath, RemoteEntry,
    UserName,
};

/// The schema migrations, in order; migration `n` (1-based) brings the schema to version `n`.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/postgres/0001_init.sql"),
    include_str!("../migrations/postgres/0002_locks.sql"),
    include_str!("../migrations/postgres/0003_identity.sql"),
    include_str!("../migrations/postgres/0004_modes.sql"),
];

/// The channel of commit notifications.
pub const CHANGES_CHANNEL: &str = "syncstore_changes";

/// The advisory lock key that serialises migrations of servers starting at once.
const MIGRATION_LOCK_KEY: i64 = 0x7379_6e63_7374_6f72; // "syncstor"

/// How many connections one store opens at most.
const MAX_CONNECTIONS: usize = 8;

/// How long connecting may take when the URL does not say (`connect_timeout=`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest the change feed waits between attempts to listen again. Short, because every
/// second it is down is a second in which other servers' commits wake nobody here.
const LISTEN_RETRY_MAX: Duration = Duration::from_secs(1);

/// A [`MetaStore`] in a PostgreSQL database.
#[derive(Clone)]
pub struct PgMetaStore {
    pool: Arc<Pool>,
    /// The URL with its password replaced, for messages and logs.
    redacted_url: String,
}

impl fmt::Debug for PgMetaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgMetaStore")
            .field("url", &self.redacted_url)
            .finish_non_exhaustive()
    }
}

impl PgMetaStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`) and brings
    /// its schema up to date.
    ///
    /// # Errors
    /// [`StoreError::SchemaTooNew`] for a database written by a newer build;
    /// [`StoreError::Unavailable`] when the database cannot be reached;
    /// [`StoreError::Database`] when the URL is malformed or the database refuses.
    pub async fn open(url: &str) -> Result<PgMetaStore, StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|err| StoreError::Database(Box::new(err)))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let store = PgMetaStore {
            pool: Arc::new(Pool {
                config: config.clone(),
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
            }),
            redacted_url: redact_url(url),
        };
        store.call(migrate).await?;
        Ok(store)
    }

    /// The URL with its password replaced by `***`.
    pub fn redacted_url(&self) -> &str {
        &self.redacted_url
    }

    /// Listens for the batches committed by every server on this database.
    ///
    /// A background task holds one extra connection with `LISTEN syncstore_changes`, and
    /// reconnects (every [`LISTEN_RETRY_MAX`] at most) when it breaks; it stops when the last
    /// clone of the returned feed is dropped. Notices sent while it was reconnecting are lost;
    /// once it listens again it bumps [`ChangeFeed::resumed`], so the server can read what it
    /// missed.
    ///
    /// # Errors
    /// When the first connection or the `LISTEN` fails.
    pub async fn change_feed(&self) -> Result<ChangeFeed, StoreError> {
        let connected = listen(&self.pool.config).await?;
        let (sender, _) = tokio::sync::broadcast::channel(1024);
        let (resumed_sender, resumed) = tokio::sync::watch::channel(0u64);
        let task_sender = sender.clone();
        let config = self.pool.config.clone();
        let task = tokio::spawn(async move {
            let mut connected = Some(connected);
            let mut backoff = Duration::from_millis(100);
            loop {
                let listener = match connected.take() {
                    Some(listener) => listener,
                    None => match listen(&config).await {
                        Ok(listener) => {
                            tracing::info!("listening for changes again");
                            backoff = Duration::from_millis(100);
                            // After the LISTEN took effect: whatever the server reads now
                            // includes every commit it missed, later ones come as notices.
                            resumed_sender.send_modify(|count| *count += 1);
                            listener
                        }
                        Err(err) => {
                            tracing::warn!(cause = %err, ?backoff, "could not listen for changes; retrying");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(LISTEN_RETRY_MAX);
                            continue;
                        }
                    },
                };
                forward(listener, &task_sender).await;
                tracing::warn!("the change listener's connection closed; reconnecting");
            }
        });
        Ok(ChangeFeed::new(sender, resumed, task))
    }

    /// Runs `f` with a pooled connection on a blocking thread; when that connection turns out
    /// dead, runs it again on a new one (see the module docs for when that is safe).
    ///
    /// `f` must leave nothing committed when it fails with [`StoreError::Unavailable`], unless
    /// the error came from [`commit`].
    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&mut Client) -> Result<T, StoreError> + Send + 'static,
    {
        let permit = self.permit().await?;
        let pool = Arc::clone(&self.pool);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            // Each retry first empties the idle pool, so at most one more pooled connection
            // can turn up; the bound only guards against a pool that keeps refilling.
            let mut retries_left = MAX_CONNECTIONS;
            loop {
                let (mut client, pooled) = pool.checkout()?;
                match f(&mut client) {
                    Err(err) if pooled && retries_left > 0 && is_retryable(&err) => {
                        tracing::info!(cause = %err, "a pooled database connection was dead; retrying on a new one");
                        retries_left -= 1;
                        drop(client);
                        pool.discard_idle();
                    }
                    result => {
                        pool.checkin(client, &result);
                        return result;
                    }
                }
            }
        })
        .await
        .map_err(|err| StoreError::Worker(err.to_string()))?
    }

    /// Runs `f` with a pooled connection on a blocking thread, once: for a write that may
    /// have committed even when it fails with a connection error.
    async fn call_once<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Client) -> Result<T, StoreError> + Send + 'static,
    {
        let permit = self.permit().await?;
        let pool = Arc::clone(&self.pool);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let (mut client, _) = pool.checkout()?;
            let result = f(&mut client);
            pool.checkin(client, &result);
            result
        })
        .await
        .map_err(|err| StoreError::Worker(err.to_string()))?
    }

    /// One of the pool's [`MAX_CONNECTIONS`] permits.
    async fn permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, StoreError> {
        // The semaphore is never closed.
        Arc::clone(&self.pool.permits)
            .acquire_owned()
            .await
            .map_err(|err| StoreError::Worker(err.to_string()))
    }

    /// Runs `f` in one READ COMMITTED transaction and commits what `f` did, refusals included
    /// (they may have deleted expired lock rows).
    ///
    /// When `committed_cursor` finds that the outcome moved the user's journal, the transaction
    /// also tells every server's change feed, which hears of it when, and only if, it commits.
    /// READ COMMITTED: after [`Txn::serialize_writes`] waits for another server's transaction,
    /// the rules must see what it committed.
    async fn write<T, F>(
        &self,
        user_id: UserId,
        f: F,
        committed_cursor: fn(&T) -> Option<Cursor>,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&mut dyn Txn) -> Result<T, StoreError> + Send + 'static,
    {
        self.call(move |client| {
            let mut tx = client.transaction()?;
            let outcome = f(&mut PgTxn { tx: &mut tx })?;
            if let Some(cursor) = committed_cursor(&outcome) {
                notify(&mut tx, user_id, cursor)?;
            }
            commit(tx)?;
            Ok(outcome)
        })
        .await
    }
}

/// The cursor of a lock change that was made, for [`PgMetaStore::write`].
fn lock_cursor(outcome: &LockOutcome) -> Option<Cursor> {
    match outcome {
        LockOutcome::Done { cursor, .. } => Some(*cursor),
        LockOutcome::Invalid(_) | LockOutcome::NotFound(_) | LockOutcome::Locked(_) => None,
    }
}

/// Idle connections, and at most [`MAX_CONNECTIONS`] in use.
struct Pool {
    config: tokio_postgres::Config,
    idle: Mutex<Vec<Client>>,
    /// One permit per connection in use, so the pool never grows past its bound.
    permits: Arc<tokio::sync::Semaphore>,
}

impl Pool {
    /// An idle connection (`true`: it may have died since it was last used), or a new one.
    fn checkout(&self) -> Result<(Client, bool), StoreError> {
        loop {
            let idle = self
                .idle
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .pop();
            match idle {
                Some(client) if client.is_closed() => continue,
                Some(client) => return Ok((client, true)),
                None => break,
            }
        }
        let client = postgres::Config::from(self.config.clone()).connect(NoTls)?;
        Ok((client, false))
    }

    /// Closes every idle connection: after one was found dead (the database restarted), the
    /// others almost certainly are too.
    fn discard_idle(&self) {
        let idle = std::mem::take(
            &mut *self
                .idle
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        drop(idle);
    }

    /// Keeps `client` for the next call, unless it is closed or `result` says it failed.
    fn checkin<T>(&self, client: Client, result: &Result<T, StoreError>) {
        if client.is_closed() || matches!(result, Err(StoreError::Unavailable { .. })) {
            return;
        }
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(client);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing a sync client blocks on its own runtime, which panics on an async thread;
        // the last handle to the store may well be dropped on one.
        let idle = std::mem::take(
            &mut *self
                .idle
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        if !idle.is_empty() {
            std::thread::spawn(move || drop(idle));
        }
    }
}

impl From<postgres::Error> for StoreError {
    fn from(err: postgres::Error) -> StoreError {
        if err.code() == Some(&SqlState::DISK_FULL) {
            return StoreError::Full(format!("the PostgreSQL database: {err}"));
        }
        if is_connection_error(&err) {
            StoreError::Unavailable {
                service: Service::Database,
                source: Box::new(err),
            }
        } else {
            StoreError::Database(Box::new(err))
        }
    }
}

/// Whether `err` says the database cannot be reached, rather than that it refused the request:
/// connecting failed, the connection broke or closed, or PostgreSQL is shutting down, starting
/// up, or ended the session (SQLSTATE class 08 and 57P01–57P03).
fn is_connection_error(err: &postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    if let Some(code) = err.code() {
        return code.code().starts_with("08")
            || [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
            ]
            .contains(code);
    }
    // Connect and IO errors carry the `io::Error`; a query error carries a `DbError` instead.
    std::error::Error::source(err).is_some_and(|source| source.is::<std::io::Error>())
}

/// Whether a call that failed with `err` on a pooled connection may run again on a new one:
/// the connection failed, and not while committing.
fn is_retryable(err: &StoreError) -> bool {
    match err {
        StoreError::Unavailable {
            service: Service::Database,
            source,
        } => !source.is::<CommitInDoubt>(),
        _ => false,
    }
}

/// A connection that failed during `COMMIT`: the transaction may or may not have committed.
#[derive(Debug, thiserror::Error)]
#[error("the connection failed while committing, so the outcome is unknown: {0}")]
struct CommitInDoubt(postgres::Error);

/// Commits `tx`; a connection error here is [`CommitInDoubt`], which is never retried.
fn commit(tx: postgres::Transaction<'_>) -> Result<(), StoreError> {
    tx.commit().map_err(|err| {
        if is_connection_error(&err) {
            StoreError::Unavailable {
                service: Service::Database,
                source: Box::new(CommitInDoubt(err)),
            }
        } else {
            err.into()
        }
    })
}

fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")?;
    let found: i64 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])?
        .get(0);
    let supported = MIGRATIONS.len() as i64;
    if found > supported {
        return Err(StoreError::SchemaTooNew { found, supported });
    }
    for (idx, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&(idx as i64 + 1)],
        )?;
        tracing::info!(version = idx + 1, "applied postgres migration");
    }
    tx.commit()?;
    Ok(())
}

fn is_violation(err: &postgres::Error, state: &SqlState) -> bool {
    err.code() == Some(state)
}

#[async_trait]
impl MetaStore for PgMetaStore {
    #[tracing::instrument(skip(self))]
    async fn create_user(&self, name: &UserName) -> Result<User, StoreError> {
        let name = name.clone();
        let namespace = new_namespace_id();
        // One autocommit statement: a connection error may come after it committed.
        self.call_once(move |client| {
            match client.query_one(
                "INSERT INTO users (name, namespace_id) VALUES ($1, $2) RETURNING id",
                &[&name.as_str(), &&namespace.0[..]],
            ) {
                Ok(row) => Ok(User {
                    id: UserId(row.get(0)),
                    name,
                    namespace,
                }),
                Err(err) if is_violation(&err, &SqlState::UNIQUE_VIOLATION) => {
                    Err(StoreError::AlreadyExists(format!("user {name}")))
                }
                Err(err) => Err(err.into()),
            }
        })
        .await
    }

    async fn user_by_name(&self, name: &UserName) -> Result<Option<User>, StoreError> {
        let name = name.clone();
        self.call(move |client| {
            let row = client.query_opt(
                "SELECT id, namespace_id FROM users WHERE name = $1",
                &[&name.as_str()],
            )?;
            row.map(|row| {
                Ok(User {
                    id: UserId(row.get(0)),
                    name: name.clone(),
                    namespace: stored_namespace(row.get(1))?,
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
        token_hash: &TokenHash,
    ) -> Result<Device, StoreError> {
        let name = name.clone();
        let token_hash = *token_hash;
        self.call(move |client| {
            let mut tx = client.transaction()?;
            lock_user(&mut tx, user_id)?;
            let inserted = tx.query_one(
                "INSERT INTO devices (user_id, name, token_hash) VALUES ($1, $2, $3) RETURNING id",
                &[&user_id.0, &name.as_str(), &&token_hash.0[..]],
            );
            let row = match inserted {
                Ok(row) => row,
                Err(err) if is_violation(&err, &SqlState::UNIQUE_VIOLATION) => {
                    return Err(StoreError::AlreadyExists(format!(
                        "device {name} of user {user_id}"
                    )));
                }
                Err(err) => return Err(err.into()),
            };
            let device = Device {
                id: DeviceId(row.get(0)),
                user_id,
                name: name.clone(),
            };
            commit(tx)?;
            Ok(device)
        })
        .await
    }

    async fn authenticate(&self, token_hash: &TokenHash) -> Result<Option<Principal>, StoreError> {
        let token_hash = *token_hash;
        self.call(move |client| {
            let row = client.query_opt(
                "SELECT users.id, users.name, devices.id, devices.name, users.namespace_id
                 FROM devices JOIN users ON users.id = devices.user_id
                 WHERE devices.token_hash = $1",
                &[&&token_hash.0[..]],
            )?;
            let Some(row) = row else {
                return Ok(None);
            };
            let user_name: String = row.get(1);
            let device_name: String = row.get(3);
            Ok(Some(Principal {
                user_id: UserId(row.get(0)),
                user_name: UserName::new(&user_name)
                    .map_err(|err| StoreError::Corrupt(err.to_string()))?,
                namespace: stored_namespace(row.get(4))?,
                device_id: DeviceId(row.get(2)),
                device_name: DeviceName::new(&device_name)
                    .map_err(|err| StoreError::Corrupt(err.to_string()))?,
            }))
        })
        .await
    }

    async fn count_users(&self) -> Result<u64, StoreError> {
        self.call(|client| {
            let count: i64 = client.query_one("SELECT COUNT(*) FROM users", &[])?.get(0);
            to_u64(count, "user count")
        })
        .await
    }

    async fn users(&self) -> Result<Vec<User>, StoreError> {
        self.call(|client| {
            let rows = client.query(
                "SELECT id, name, namespace_id FROM users ORDER BY name",
                &[],
            )?;
            rows.iter()
                .map(|row| {
                    let name: String = row.get(1);
                    Ok(User {
                        id: UserId(row.get(0)),
                        name: UserName::new(&name)
                            .map_err(|err| StoreError::Corrupt(err.to_string()))?,
                        namespace: stored_namespace(row.get(2))?,
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
        self.call(move |client| {
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let current = user_cursor(&mut tx, user_id)?;
            let tag = if cursor > current {
                None
            } else {
                tag_at(&mut tx, user_id, cursor)?
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
        self.call(move |client| {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = client.query(
                "SELECT hash FROM wanted_chunks WHERE user_id = $1 ORDER BY hash LIMIT $2",
                &[&user_id.0, &limit],
            )?;
            rows.iter()
                .map(|row| stored_chunk_hash(row.get::<_, &[u8]>(0)))
                .collect()
        })
        .await
    }

    async fn want_chunks(
        &self,
        user_id: UserId,
        hashes: &[ChunkHash],
    ) -> Result<usize, StoreError> {
        let hashes: Vec<Vec<u8>> = hashes.iter().map(|hash| hash.0.to_vec()).collect();
        self.call(move |client| {
            let added = client.execute(
                "INSERT INTO wanted_chunks (user_id, hash) SELECT $1, unnest($2::bytea[])
                 ON CONFLICT DO NOTHING",
                &[&user_id.0, &hashes],
            )?;
            Ok(usize::try_from(added).unwrap_or(usize::MAX))
        })
        .await
    }

    async fn unwant_chunks(&self, user_id: UserId, hashes: &[ChunkHash]) -> Result<(), StoreError> {
        let hashes: Vec<Vec<u8>> = hashes.iter().map(|hash| hash.0.to_vec()).collect();
        self.call(move |client| {
            client.execute(
                "DELETE FROM wanted_chunks WHERE user_id = $1 AND hash = ANY($2::bytea[])",
                &[&user_id.0, &hashes],
            )?;
            Ok(())
        })
        .await
    }

    async fn tree(&self, user_id: UserId, now_ms: i64) -> Result<Tree, StoreError> {
        self.call(move |client| {
            // One snapshot, so the cursor, the entries and the locks agree.
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let cursor = user_cursor(&mut tx, user_id)?;
            let rows = tx.query(
                &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE user_id = $1 ORDER BY path"),
                &[&user_id.0],
            )?;
            let locks = locks::locks_in_force(&mut PgTxn { tx: &mut tx }, user_id, now_ms)?;
            let cursor_tag = PgTxn { tx: &mut tx }.head_tag(user_id)?;
            tx.commit()?;
            let entries = rows
                .iter()
                .map(|row| raw_row(row, 0).into_entry())
                .collect::<Result<Vec<_>, _>>()?;
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
        self.call(move |client| {
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let current = user_cursor(&mut tx, user_id)?;
            if since > current {
                return Ok(ChangesPage {
                    cursor: current,
                    cursor_tag: PgTxn { tx: &mut tx }.head_tag(user_id)?,
                    changes: Vec::new(),
                    more: false,
                    reset: true,
                });
            }
            let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
            let node_rows = tx.query(
                &format!(
                    "SELECT {CHANGE_COLUMNS} FROM changes
                     WHERE user_id = $1 AND cursor > $2 ORDER BY cursor LIMIT $3"
                ),
                &[&user_id.0, &to_i64(since.0)?, &fetch],
            )?;
            let lock_rows = tx.query(
                &format!(
                    "SELECT {LOCK_CHANGE_COLUMNS} FROM lock_changes
                     WHERE user_id = $1 AND cursor > $2 ORDER BY cursor LIMIT $3"
                ),
                &[&user_id.0, &to_i64(since.0)?, &fetch],
            )?;
            let mut page = journal_page(
                node_rows
                    .iter()
                    .map(|row| (row.get(0), raw_row(row, 1)))
                    .collect(),
                lock_rows.iter().map(raw_lock_change).collect(),
                since,
                limit,
            )?;
            page.cursor_tag = tag_at(&mut tx, user_id, page.cursor)?.ok_or_else(|| {
                StoreError::Corrupt(format!("no journal row at cursor {}", page.cursor))
            })?;
            tx.commit()?;
            Ok(page)
        })
        .await
    }

    async fn current_cursor(&self, user_id: UserId) -> Result<Cursor, StoreError> {
        self.call(move |client| {
            let mut tx = client.transaction()?;
            let cursor = user_cursor(&mut tx, user_id)?;
            tx.commit()?;
            Ok(cursor)
        })
        .await
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
        self.write(
            user_id,
            move |txn| ops::apply_batch(txn, user_id, &device, &ops, &chunk_lens, now_ms),
            |batch| batch.changed_anything().then_some(batch.cursor),
        )
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
        self.write(
            user_id,
            move |txn| locks::take_lock(txn, user_id, &device, &path, ttl_secs, now_ms),
            lock_cursor,
        )
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
        self.write(
            user_id,
            move |txn| locks::release_lock(txn, user_id, &device, &path, force, now_ms),
            lock_cursor,
        )
        .await
    }

    async fn locks(&self, user_id: UserId, now_ms: i64) -> Result<Vec<LockInfo>, StoreError> {
        self.call(move |client| {
            let mut tx = client.transaction()?;
            let locks = locks::locks_in_force(&mut PgTxn { tx: &mut tx }, user_id, now_ms)?;
            tx.commit()?;
            Ok(locks)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.call(|client| {
            client.batch_execute("SELECT 1")?;
            Ok(())
        })
        .await
    }
}

/// Tells every server's change feed that the user's journal reaches `cursor`; PostgreSQL
/// delivers it when, and only if, the transaction commits.
fn notify(
    tx: &mut postgres::Transaction<'_>,
    user_id: UserId,
    cursor: Cursor,
) -> Result<(), StoreError> {
    let payload = format!("{}:{}", user_id.0, cursor.0);
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&CHANGES_CHANNEL, &payload.as_str()],
    )?;
    Ok(())
}

/// A `lock_changes` row in [`LOCK_CHANGE_COLUMNS`] order.
fn raw_lock_change(row: &Row) -> RawLockChange {
    RawLockChange {
        cursor: row.get(0),
        kind: row.get(1),
        path: row.get(2),
        device: row.get(3),
        since_ms: row.get(4),
        expires_ms: row.get(5),
        broken_by: row.get(6),
    }
}

/// Locks the user's row until the transaction ends, or [`StoreError::NotFound`].
///
/// Every write transaction of a user starts here, so they run one at a time across servers.
fn lock_user(tx: &mut postgres::Transaction<'_>, user_id: UserId) -> Result<Cursor, StoreError> {
    let row = tx.query_opt(
        "SELECT cursor FROM users WHERE id = $1 FOR UPDATE",
        &[&user_id.0],
    )?;
    match row {
        Some(row) => Ok(Cursor(to_u64(row.get(0), "cursor")?)),
        None => Err(StoreError::NotFound(format!("user {user_id}"))),
    }
}

/// The user's cursor, or [`StoreError::NotFound`].
fn user_cursor(tx: &mut postgres::Transaction<'_>, user_id: UserId) -> Result<Cursor, StoreError> {
    let row = tx.query_opt("SELECT cursor FROM users WHERE id = $1", &[&user_id.0])?;
    match row {
        Some(row) => Ok(Cursor(to_u64(row.get(0), "cursor")?)),
        None => Err(StoreError::NotFound(format!("user {user_id}"))),
    }
}

/// The tag of the journal row at `cursor` (all zero for cursor 0), if there is one.
fn tag_at(
    tx: &mut postgres::Transaction<'_>,
    user_id: UserId,
    cursor: Cursor,
) -> Result<Option<JournalTag>, StoreError> {
    if cursor.0 == 0 {
        return Ok(Some(JournalTag::default()));
    }
    let row = tx.query_opt(
        "SELECT tag FROM changes WHERE user_id = $1 AND cursor = $2
         UNION ALL SELECT tag FROM lock_changes WHERE user_id = $1 AND cursor = $2",
        &[&user_id.0, &to_i64(cursor.0)?],
    )?;
    row.map(|row| stored_tag(row.get::<_, &[u8]>(0)))
        .transpose()
}

/// The node columns of `row`, starting at column `first`.
fn raw_row(row: &Row, first: usize) -> RawRow {
    RawRow {
        node_id: row.get(first),
        path: row.get(first + 1),
        kind: row.get(first + 2),
        rev: row.get(first + 3),
        size: row.get(first + 4),
        mtime_ms: row.get(first + 5),
        hash: row.get(first + 6),
        chunks: row.get(first + 7),
        device: row.get(first + 8),
        executable: row.get(first + 9),
    }
}

/// [`Txn`] on an open PostgreSQL transaction that holds the user's row lock.
struct PgTxn<'a, 'b> {
    tx: &'a mut postgres::Transaction<'b>,
}

impl Txn for PgTxn<'_, '_> {
    fn begin_op(&mut self) -> Result<(), StoreError> {
        self.tx.batch_execute("SAVEPOINT op")?;
        Ok(())
    }

    fn end_op(&mut self, keep: bool) -> Result<(), StoreError> {
        if keep {
            self.tx.batch_execute("RELEASE SAVEPOINT op")?;
        } else {
            self.tx
                .batch_execute("ROLLBACK TO SAVEPOINT op; RELEASE SAVEPOINT op")?;
        }
        Ok(())
    }

    fn node_at(
        &mut self,
        user_id: UserId,
        path: &RelPath,
    ) -> Result<Option<RemoteEntry>, StoreError> {
        let row = self.tx.query_opt(
            &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE user_id = $1 AND path = $2"),
            &[&user_id.0, &path.as_str()],
        )?;
        row.map(|row| raw_row(&row, 0).into_entry()).transpose()
    }

    fn descendants(
        &mut self,
        user_id: UserId,
        dir: &RelPath,
    ) -> Result<Vec<RemoteEntry>, StoreError> {
        let (low, high) = inside_bounds(dir);
        let rows = self.tx.query(
            &format!(
                "SELECT {NODE_COLUMNS} FROM nodes WHERE user_id = $1 AND path > $2 AND path < $3"
            ),
            &[&user_id.0, &low, &high],
        )?;
        rows.iter()
            .map(|row| raw_row(row, 0).into_entry())
            .collect()
    }

    fn has_children(&mut self, user_id: UserId, dir: &RelPath) -> Result<bool, StoreError> {
        let (low, high) = inside_bounds(dir);
        let row = self.tx.query_one(
            "SELECT EXISTS (SELECT 1 FROM nodes WHERE user_id = $1 AND path > $2 AND path < $3)",
            &[&user_id.0, &low, &high],
        )?;
        Ok(row.get(0))
    }

    fn next_cursor(&mut self, user_id: UserId) -> Result<Cursor, StoreError> {
        let tag = new_journal_tag();
        let row = self.tx.query_opt(
            "UPDATE users SET cursor = cursor + 1, head_tag = $2 WHERE id = $1 RETURNING cursor",
            &[&user_id.0, &&tag.0[..]],
        )?;
        match row {
            Some(row) => Ok(Cursor(to_u64(row.get(0), "cursor")?)),
            None => Err(StoreError::NotFound(format!("user {user_id}"))),
        }
    }

    fn current_cursor(&mut self, user_id: UserId) -> Result<Cursor, StoreError> {
        user_cursor(self.tx, user_id)
    }

    fn head_tag(&mut self, user_id: UserId) -> Result<JournalTag, StoreError> {
        let row = self
            .tx
            .query_opt("SELECT head_tag FROM users WHERE id = $1", &[&user_id.0])?;
        match row {
            Some(row) => stored_tag(row.get::<_, &[u8]>(0)),
            None => Err(StoreError::NotFound(format!("user {user_id}"))),
        }
    }

    fn next_node_id(&mut self, user_id: UserId) -> Result<NodeId, StoreError> {
        let row = self.tx.query_opt(
            "UPDATE users SET next_node_id = next_node_id + 1 WHERE id = $1
             RETURNING next_node_id - 1",
            &[&user_id.0],
        )?;
        match row {
            Some(row) => Ok(NodeId(to_u64(row.get(0), "node id")?)),
            None => Err(StoreError::NotFound(format!("user {user_id}"))),
        }
    }

    fn put_node(&mut self, user_id: UserId, entry: &RemoteEntry) -> Result<(), StoreError> {
        self.tx.execute(
            "INSERT INTO nodes (user_id, node_id, path, kind, rev, size, mtime_ms, hash, chunks, device, executable)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (user_id, node_id) DO UPDATE SET
                 path = excluded.path, kind = excluded.kind, rev = excluded.rev,
                 size = excluded.size, mtime_ms = excluded.mtime_ms, hash = excluded.hash,
                 chunks = excluded.chunks, device = excluded.device, executable = excluded.executable",
            &[
                &user_id.0,
                &to_i64(entry.node_id.0)?,
                &entry.path.as_str(),
                &kind_text(entry.kind),
                &to_i64(entry.rev.0)?,
                &to_i64(entry.size)?,
                &entry.mtime_ms,
                &entry.hash.as_ref().map(|hash| &hash.0[..]),
                &encode_chunks(&entry.chunks),
                &entry.device.as_str(),
                &entry.executable,
            ],
        )?;
        Ok(())
    }

    fn remove_node(&mut self, user_id: UserId, node_id: NodeId) -> Result<(), StoreError> {
        self.tx.execute(
            "DELETE FROM nodes WHERE user_id = $1 AND node_id = $2",
            &[&user_id.0, &to_i64(node_id.0)?],
        )?;
        Ok(())
    }

    fn append_change(&mut self, user_id: UserId, change: &Change) -> Result<(), StoreError> {
        const LOCK_INSERT: &str = "INSERT INTO lock_changes
             (user_id, cursor, kind, path, device, since_ms, expires_ms, broken_by, tag)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, (SELECT head_tag FROM users WHERE id = $1))";
        const INSERT: &str = "INSERT INTO changes
             (user_id, cursor, node_id, kind, path, size, mtime_ms, hash, chunks, device, executable, tag)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, (SELECT head_tag FROM users WHERE id = $1))";
        match change {
            Change::Upsert { cursor, entry } => self.tx.execute(
                INSERT,
                &[
                    &user_id.0,
                    &to_i64(cursor.0)?,
                    &to_i64(entry.node_id.0)?,
                    &kind_text(entry.kind),
                    &entry.path.as_str(),
                    &to_i64(entry.size)?,
                    &entry.mtime_ms,
                    &entry.hash.as_ref().map(|hash| &hash.0[..]),
                    &encode_chunks(&entry.chunks),
                    &entry.device.as_str(),
                    &entry.executable,
                ],
            )?,
            Change::Delete {
                cursor,
                node_id,
                path,
                device,
            } => self.tx.execute(
                INSERT,
                &[
                    &user_id.0,
                    &to_i64(cursor.0)?,
                    &to_i64(node_id.0)?,
                    &"deleted",
                    &path.as_str(),
                    &0i64,
                    &0i64,
                    &None::<&[u8]>,
                    &&[0u8; 0][..],
                    &device.as_str(),
                    &false,
                ],
            )?,
            Change::Lock { cursor, lock } => self.tx.execute(
                LOCK_INSERT,
                &[
                    &user_id.0,
                    &to_i64(cursor.0)?,
                    &"lock",
                    &lock.path.as_str(),
                    &lock.device.as_str(),
                    &Some(lock.since_ms),
                    &lock.expires_ms,
                    &None::<&str>,
                ],
            )?,
            Change::Unlock {
                cursor,
                path,
                device,
                broken_by,
            } => self.tx.execute(
                LOCK_INSERT,
                &[
                    &user_id.0,
                    &to_i64(cursor.0)?,
                    &"unlock",
                    &path.as_str(),
                    &device.as_str(),
                    &None::<i64>,
                    &None::<i64>,
                    &broken_by.as_ref().map(DeviceName::as_str),
                ],
            )?,
        };
        Ok(())
    }

    fn serialize_writes(&mut self, user_id: UserId) -> Result<(), StoreError> {
        lock_user(self.tx, user_id).map(|_| ())
    }

    fn lock_rows(&mut self, user_id: UserId) -> Result<Vec<LockInfo>, StoreError> {
        let rows = self.tx.query(
            &format!("SELECT {LOCK_COLUMNS} FROM locks WHERE user_id = $1"),
            &[&user_id.0],
        )?;
        rows.iter()
            .map(|row| {
                RawLock {
                    path: row.get(0),
                    device: row.get(1),
                    since_ms: row.get(2),
                    expires_ms: row.get(3),
                }
                .into_lock()
            })
            .collect()
    }

    fn insert_lock(&mut self, user_id: UserId, lock: &LockInfo) -> Result<(), StoreError> {
        self.tx.execute(
            "INSERT INTO locks (user_id, path, device, since_ms, expires_ms)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &user_id.0,
                &lock.path.as_str(),
                &lock.device.as_str(),
                &lock.since_ms,
                &lock.expires_ms,
            ],
        )?;
        Ok(())
    }

    fn remove_lock(&mut self, user_id: UserId, path: &RelPath) -> Result<(), StoreError> {
        self.tx.execute(
            "DELETE FROM locks WHERE user_id = $1 AND path = $2",
            &[&user_id.0, &path.as_str()],
        )?;
        Ok(())
    }
}

/// A connection with `LISTEN` issued: the client (kept alive) and its notifications.
struct Listener {
    _client: tokio_postgres::Client,
    notifications: tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>,
}

/// Connects and `LISTEN`s on [`CHANGES_CHANNEL`].
async fn listen(config: &tokio_postgres::Config) -> Result<Listener, tokio_postgres::Error> {
    use futures::StreamExt;
    let (client, mut connection) = config.connect(NoTls).await?;
    let (sender, notifications) = tokio::sync::mpsc::unbounded_channel();
    // The connection must be polled for the client's requests to progress; it ends (dropping
    // `sender`) when the connection breaks or the client is dropped.
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(notification)) => {
                    if sender.send(notification).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(cause = %err, "the change listener's connection failed");
                    return;
                }
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {CHANGES_CHANNEL}"))
        .await?;
    Ok(Listener {
        _client: client,
        notifications,
    })
}

/// Hands every notification of `listener` to `sender` until its connection ends.
async fn forward(mut listener: Listener, sender: &tokio::sync::broadcast::Sender<ChangeNotice>) {
    while let Some(notification) = listener.notifications.recv().await {
        match parse_notice(notification.payload()) {
            // No receiver right now is fine: nobody waits.
            Some(notice) => {
                let _ = sender.send(notice);
            }
            None => tracing::warn!(
                payload = notification.payload(),
                "ignoring a malformed change notice"
            ),
        }
    }
}

/// Parses `<user id>:<cursor>`.
fn parse_notice(payload: &str) -> Option<ChangeNotice> {
    let (user_id, cursor) = payload.split_once(':')?;
    Some(ChangeNotice {
        user_id: UserId(user_id.parse().ok()?),
        cursor: Cursor(cursor.parse().ok()?),
    })
}

/// Creates a new, empty database named `NAME_<unique suffix>` on the server of `admin_url` and
/// returns the URL of the new database: each test gets its own.
///
/// # Errors
/// When the server cannot be reached or refuses to create the database.
pub async fn create_test_database(admin_url: &str, name: &str) -> Result<String, StoreError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let config: tokio_postgres::Config = admin_url
        .parse()
        .map_err(|err| StoreError::Database(Box::new(err)))?;
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|err| StoreError::Database(Box::new(err)))?;
    tokio::spawn(connection);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    let database = format!(
        "{}_{}_{}_{}",
        // PostgreSQL names hold 63 bytes.
        name.chars()
            .take(28)
            .map(|c| if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            })
            .collect::<String>(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    );
    client
        .batch_execute(&format!("CREATE DATABASE \"{database}\""))
        .await
        .map_err(|err| StoreError::Database(Box::new(err)))?;
    let (base, query) = admin_url.split_once('?').unwrap_or((admin_url, ""));
    let after_scheme = base.find("://").map_or(0, |idx| idx + 3);
    let server = match base[after_scheme..].find('/') {
        Some(idx) => &base[..after_scheme + idx],
        None => base,
    };
    let mut url = format!("{server}/{database}");
    if !query.is_empty() {
        url = format!("{url}?{query}");
    }
    Ok(url)
}

/// `url` with the password replaced by `***`, in URL form (`postgres://user:pw@host`) and in
/// key-value form (`password=pw`).
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let redacted_authority = match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _password)) => format!("{user}:***@{host}"),
                None => authority.to_owned(),
            },
            None => authority.to_owned(),
        };
        let tail = redact_password_params(tail, '&');
        return format!("{scheme}://{redacted_authority}{tail}");
    }
    redact_password_params(url, ' ')
}

/// Replaces the value of every `password=` parameter separated by `separator`.
fn redact_password_params(text: &str, separator: char) -> String {
    text.split(separator)
        .map(|part| {
            let key_start = part.rfind(['?', ' ']).map_or(0, |idx| idx + 1);
            if part[key_start..].starts_with("password=") {
                format!("{}password=***", &part[..key_start])
            } else {
                part.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(&separator.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_passwords() {
        let cases = [
            (
                "postgres://me:secret@db:5432/sync",
                "postgres://me:***@db:5432/sync",
            ),
            ("postgres://me@db/sync", "postgres://me@db/sync"),
            ("postgresql://db/sync", "postgresql://db/sync"),
            (
                "postgres://db/sync?user=me&password=secret&sslmode=disable",
                "postgres://db/sync?user=me&password=***&sslmode=disable",
            ),
            (
                "postgres://db/sync?password=secret",
                "postgres://db/sync?password=***",
            ),
            (
                "host=db user=me password=secret dbname=sync",
                "host=db user=me password=*** dbname=sync",
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(redact_url(url), expected, "{url}");
        }
    }

    #[test]
    fn notices_parse() {
        assert_eq!(
            parse_notice("12:345"),
            Some(ChangeNotice {
                user_id: UserId(12),
                cursor: Cursor(345)
            })
        );
        assert_eq!(parse_notice("12"), None);
        assert_eq!(parse_notice("x:1"), None);
    }
}
