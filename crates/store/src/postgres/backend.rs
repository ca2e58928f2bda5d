//! The PostgreSQL backend itself (the `postgres` feature); see [the module](super).

use crate::meta::{Access, TxnBackend, TxnFn};
use crate::sql::{self, Param, Row, SqlConn, SqlError, SqlTxn, Value};
use crate::{ChangeFeed, ChangeNotice, Service, StoreError, UserId};
use async_trait::async_trait;
use postgres::error::SqlState;
use postgres::types::{ToSql, Type};
use postgres::{Client, GenericClient, IsolationLevel, NoTls};
use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use syncstore_proto::Cursor;

/// The schema migrations, in order; migration `n` (1-based) brings the schema to version `n`.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_init.sql"),
    include_str!("../../migrations/postgres/0002_locks.sql"),
    include_str!("../../migrations/postgres/0003_identity.sql"),
    include_str!("../../migrations/postgres/0004_modes.sql"),
    include_str!("../../migrations/postgres/0005_history.sql"),
    include_str!("../../migrations/postgres/0006_retention.sql"),
    include_str!("../../migrations/postgres/0007_accounts.sql"),
    include_str!("../../migrations/postgres/0008_web.sql"),
    include_str!("../../migrations/postgres/0009_dead_props.sql"),
    include_str!("../../migrations/postgres/0010_streams.sql"),
];

/// The channel of commit notifications, as a literal for the statements that name it.
macro_rules! changes_channel {
    () => {
        "syncstore_changes"
    };
}

/// The channel of commit notifications.
pub const CHANGES_CHANNEL: &str = changes_channel!();

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
        let store = PgMetaStore::unmigrated(url)?;
        store.call(migrate).await?;
        Ok(store)
    }

    /// As [`PgMetaStore::open`], but only for a database that holds a syncstore schema already
    /// (made by `serve` or `user add`): `None` for one that holds none, in which nothing was
    /// created. For the admin commands that need an existing account.
    ///
    /// # Errors
    /// As [`PgMetaStore::open`].
    pub async fn open_existing(url: &str) -> Result<Option<PgMetaStore>, StoreError> {
        let store = PgMetaStore::unmigrated(url)?;
        let exists = store
            .call(|client| {
                let row =
                    client.query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])?;
                Ok(row.get::<_, bool>(0))
            })
            .await?;
        if !exists {
            return Ok(None);
        }
        store.call(migrate).await?;
        Ok(Some(store))
    }

    /// A store on `url` that has not connected yet.
    fn unmigrated(url: &str) -> Result<PgMetaStore, StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|err| StoreError::Database(Box::new(err)))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        Ok(PgMetaStore {
            pool: Arc::new(Pool {
                config: config.clone(),
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
            }),
            redacted_url: super::redact_url(url),
        })
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

    /// One of the pool's [`MAX_CONNECTIONS`] permits.
    async fn permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, StoreError> {
        // The semaphore is never closed.
        Arc::clone(&self.pool.permits)
            .acquire_owned()
            .await
            .map_err(|err| StoreError::Worker(err.to_string()))
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
    sql::migrate(&mut PgConn(&mut tx), MIGRATIONS, "postgres")?;
    tx.commit()?;
    Ok(())
}

#[async_trait]
impl TxnBackend for PgMetaStore {
    async fn run<T: Send + 'static>(&self, access: Access, f: TxnFn<T>) -> Result<T, StoreError> {
        self.call(move |client| match access {
            Access::Read => f(&mut SqlTxn(PgConn(client))),
            Access::Snapshot => {
                let mut tx = client
                    .build_transaction()
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()?;
                let outcome = f(&mut SqlTxn(PgConn(&mut tx)))?;
                // Read only: a commit lost on the way changed nothing, so it may run again.
                tx.commit()?;
                Ok(outcome)
            }
            Access::Write => {
                // READ COMMITTED, the default: after `serialize_writes` waited for another
                // server's transaction, the rules see what it committed.
                let mut tx = client.transaction()?;
                let outcome = f(&mut SqlTxn(PgConn(&mut tx)))?;
                commit(tx)?;
                Ok(outcome)
            }
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

/// A pooled connection or an open transaction, as the shared queries use it.
struct PgConn<'a, C: GenericClient>(&'a mut C);

impl<C: GenericClient> SqlConn for PgConn<'_, C> {
    // Locks the user's row until the transaction ends: every write transaction of a user starts
    // here, so they run one at a time across servers.
    // A transaction that waited for a removal sees the removed row again (READ COMMITTED
    // re-checks the condition on the row's new version), and so no user.
    const LOCK_USER: &'static str =
        "SELECT cursor FROM users WHERE id = ?1 AND removed_ms IS NULL FOR UPDATE";

    const ANNOUNCE: Option<&'static str> =
        Some(concat!("SELECT pg_notify('", changes_channel!(), "', ?1)"));

    fn query(&mut self, sql: &'static str, params: &[Param<'_>]) -> Result<Vec<Row>, SqlError> {
        let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(pg_value).collect();
        let rows = self
            .0
            .query(&*dollar_placeholders(sql), &values)
            .map_err(failure)?;
        rows.iter().map(row_values).collect()
    }

    fn execute(&mut self, sql: &'static str, params: &[Param<'_>]) -> Result<u64, SqlError> {
        let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(pg_value).collect();
        self.0
            .execute(&*dollar_placeholders(sql), &values)
            .map_err(failure)
    }

    fn batch(&mut self, sql: &'static str) -> Result<(), StoreError> {
        Ok(self.0.batch_execute(sql)?)
    }
}

/// `sql` with SQLite's numbered placeholders `?N` written PostgreSQL's way, `$N`.
fn dollar_placeholders(sql: &'static str) -> Cow<'static, str> {
    if !sql.contains('?') {
        return Cow::Borrowed(sql);
    }
    // The shared queries hold no `?` but in placeholders (no string literal has one).
    Cow::Owned(sql.replace('?', "$"))
}

/// A [`Param`] as `postgres` binds it: as the Rust type it holds, so its type is checked
/// against the statement's as usual.
fn pg_value<'a>(param: &'a Param<'a>) -> &'a (dyn ToSql + Sync) {
    match param {
        Param::Int(int) => int,
        Param::OptInt(int) => int,
        Param::Text(text) => text,
        Param::OptText(text) => text,
        Param::Blob(bytes) => bytes,
        Param::OptBlob(bytes) => bytes,
        Param::Bool(flag) => flag,
    }
}

/// The values of a row, read as the types of its columns.
fn row_values(row: &postgres::Row) -> Result<Row, SqlError> {
    let mut values = Vec::with_capacity(row.len());
    for (idx, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let value = if *ty == Type::INT8 {
            row.try_get::<_, Option<i64>>(idx)
                .map(|int| int.map(Value::Int))
        } else if *ty == Type::INT4 {
            row.try_get::<_, Option<i32>>(idx)
                .map(|int| int.map(|int| Value::Int(int.into())))
        } else if *ty == Type::TEXT || *ty == Type::VARCHAR {
            row.try_get::<_, Option<String>>(idx)
                .map(|text| text.map(Value::Text))
        } else if *ty == Type::BYTEA {
            row.try_get::<_, Option<Vec<u8>>>(idx)
                .map(|bytes| bytes.map(Value::Blob))
        } else if *ty == Type::BOOL {
            row.try_get::<_, Option<bool>>(idx)
                .map(|flag| flag.map(Value::Bool))
        } else {
            return Err(StoreError::Corrupt(format!("a column of type {ty}")).into());
        };
        values.push(value.map_err(failure)?.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

/// A unique violation is [`SqlError::Duplicate`].
fn failure(err: postgres::Error) -> SqlError {
    if err.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        SqlError::Duplicate(err.into())
    } else {
        SqlError::Failed(err.into())
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

#[cfg(test)]
mod tests {
    use super::*;

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
