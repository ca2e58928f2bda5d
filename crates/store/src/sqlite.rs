//! [`SqliteMetaStore`]: the embedded [`MetaStore`] on one SQLite file.
//!
//! Every call runs on a blocking thread (`spawn_blocking`) holding the single connection, which is
//! opened in WAL mode with `synchronous=FULL`: the server acknowledges uploads, so a committed
//! batch must survive power loss. What a call does is written once in [`crate::meta`] (and its
//! queries in `sql.rs`); this file is the SQLite side: the connection, the migrations, and
//! the transaction each [`Access`] gets. A write (a batch of ops, with a savepoint per op, or
//! a lock change) is one `IMMEDIATE` transaction, one fsync; SQLite has one writer at a time,
//! so racing lock attempts are serialised, and [`Txn::serialize_writes`] only
//! checks that the user exists.
//!
//! The schema comes from the numbered files in `migrations/sqlite/`, built in at compile time and
//! recorded in the `schema_version` table; a database from a newer build is refused.

use crate::meta::{Access, TxnBackend, TxnFn};
use crate::sql::{self, Param, Row, SqlConn, SqlError, SqlTxn, Value};
use crate::StoreError;
#[cfg(doc)]
use crate::{ops::Txn, MetaStore};
use async_trait::async_trait;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The schema migrations, in order; migration `n` (1-based) brings the schema to version `n`.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/0001_init.sql"),
    include_str!("../migrations/sqlite/0002_locks.sql"),
    include_str!("../migrations/sqlite/0003_identity.sql"),
    include_str!("../migrations/sqlite/0004_modes.sql"),
    include_str!("../migrations/sqlite/0005_history.sql"),
    include_str!("../migrations/sqlite/0006_retention.sql"),
    include_str!("../migrations/sqlite/0007_accounts.sql"),
    include_str!("../migrations/sqlite/0008_web.sql"),
    include_str!("../migrations/sqlite/0009_dead_props.sql"),
    include_str!("../migrations/sqlite/0010_streams.sql"),
];

/// How long a call waits for another process (an admin command) holding the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How many prepared statements the connection keeps (rusqlite's default is 16; the shared
/// queries are about 30).
const PREPARED_STATEMENTS: usize = 64;

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
}

fn open_blocking(path: &Path) -> Result<Connection, StoreError> {
    restrict_db_files(path)?;
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Room for every statement of `sql.rs`, so each is prepared once per connection.
    conn.set_prepared_statement_cache_capacity(PREPARED_STATEMENTS);
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
    sql::migrate(&mut SqliteConn(&tx), MIGRATIONS, "sqlite")?;
    tx.commit()?;
    Ok(())
}

#[async_trait]
impl TxnBackend for SqliteMetaStore {
    async fn run<T: Send + 'static>(&self, access: Access, f: TxnFn<T>) -> Result<T, StoreError> {
        self.call(move |conn| {
            let behavior = match access {
                Access::Read => return f(&mut SqlTxn(SqliteConn(conn))),
                // A deferred transaction reads one snapshot of the WAL.
                Access::Snapshot => TransactionBehavior::Deferred,
                // Holds SQLite's write lock from the start: no upgrade that could fail as busy.
                Access::Write => TransactionBehavior::Immediate,
            };
            let tx = conn.transaction_with_behavior(behavior)?;
            let outcome = f(&mut SqlTxn(SqliteConn(&tx)))?;
            tx.commit()?;
            Ok(outcome)
        })
        .await
    }
}

/// The connection (or an open transaction on it), as the shared queries use it.
struct SqliteConn<'a>(&'a Connection);

impl SqlConn for SqliteConn<'_> {
    // Every writing transaction here is IMMEDIATE: it holds SQLite's one write lock already.
    // What is left is the contract's check for an unknown user.
    const LOCK_USER: &'static str = "SELECT cursor FROM users WHERE id = ?1 AND removed_ms IS NULL";

    // Only this process writes the file; its own server wakes its long polls.
    const ANNOUNCE: Option<&'static str> = None;

    fn query(&mut self, sql: &'static str, params: &[Param<'_>]) -> Result<Vec<Row>, SqlError> {
        let mut stmt = self.0.prepare_cached(sql).map_err(failure)?;
        let n_columns = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter().map(sqlite_value)))
            .map_err(failure)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(failure)? {
            let values = (0..n_columns)
                .map(|idx| row.get_ref(idx).map_err(failure).and_then(value))
                .collect::<Result<Vec<Value>, SqlError>>()?;
            out.push(Row(values));
        }
        Ok(out)
    }

    fn execute(&mut self, sql: &'static str, params: &[Param<'_>]) -> Result<u64, SqlError> {
        let mut stmt = self.0.prepare_cached(sql).map_err(failure)?;
        let changed = stmt
            .execute(rusqlite::params_from_iter(params.iter().map(sqlite_value)))
            .map_err(failure)?;
        Ok(changed as u64)
    }

    fn batch(&mut self, sql: &'static str) -> Result<(), StoreError> {
        Ok(self.0.execute_batch(sql)?)
    }
}

/// A [`Param`] as SQLite stores it: an integer (booleans too), text, a blob, or NULL.
fn sqlite_value<'a>(param: &Param<'a>) -> ToSqlOutput<'a> {
    ToSqlOutput::Borrowed(match *param {
        Param::Int(int) | Param::OptInt(Some(int)) => ValueRef::Integer(int),
        Param::Bool(flag) => ValueRef::Integer(flag.into()),
        Param::Text(text) | Param::OptText(Some(text)) => ValueRef::Text(text.as_bytes()),
        Param::Blob(bytes) | Param::OptBlob(Some(bytes)) => ValueRef::Blob(bytes),
        Param::OptInt(None) | Param::OptText(None) | Param::OptBlob(None) => ValueRef::Null,
    })
}

/// A column as read.
fn value(column: ValueRef<'_>) -> Result<Value, SqlError> {
    Ok(match column {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(int) => Value::Int(int),
        ValueRef::Text(bytes) => Value::Text(
            String::from_utf8(bytes.to_vec())
                .map_err(|err| StoreError::Corrupt(format!("text that is not UTF-8: {err}")))?,
        ),
        ValueRef::Blob(bytes) => Value::Blob(bytes.to_vec()),
        ValueRef::Real(real) => {
            return Err(StoreError::Corrupt(format!("a real number ({real}) in a column")).into())
        }
    })
}

/// A unique or primary key violation is [`SqlError::Duplicate`].
fn failure(err: rusqlite::Error) -> SqlError {
    let duplicate = matches!(
        &err,
        rusqlite::Error::SqliteFailure(sqlite, _)
            if sqlite.code == ErrorCode::ConstraintViolation
                && matches!(
                    sqlite.extended_code,
                    rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                        | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                )
    );
    if duplicate {
        SqlError::Duplicate(err.into())
    } else {
        SqlError::Failed(err.into())
    }
}
