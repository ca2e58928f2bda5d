//! The base tree, persisted in `.syncstore/state.sqlite`: the last state local and remote agreed on.
//!
//! The updates of one applied plan are committed together once their effects are durable (see
//! `engine`); the server identity base was made against ([`ServerIdentity`]) is saved with
//! them. The whole tree is also kept in memory.
//!
//! The database and its `-wal`/`-shm` files are 0600 whatever the umask. A corrupt database
//! (found by `PRAGMA quick_check` at open, or by SQLite on any read or write) is a
//! [`StateCorrupt`] error naming the file and the way out: moving it aside is safe, as with no
//! base the planner re-adopts the folder like a first sync, which deletes nothing.

use crate::base_chunks::BaseChunks;
use crate::seams::BaseStore;
use crate::Error;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use syncstore_plan::BaseNode;
use syncstore_proto::{
    ChunkRef, ContentHash, Cursor, EntryKind, JournalTag, NamespaceId, NodeId, RelPath, Revision,
};

/// 1: the first; 2: `base.executable` or `base.ctime_ns` (development builds had one or the
/// other); 3: both (issue 11: the executable bit, and files whose bytes change in place with
/// size and mtime kept).
const SCHEMA_VERSION: i64 = 3;

/// The state database is corrupt; the message says how to recover.
#[derive(Debug, thiserror::Error)]
#[error(
    "{path} is corrupt ({cause}): stop syncstore, move it aside (mv {path} {path}.corrupt) and \
     run again; the folder is then re-adopted: nothing is deleted on either side, files that \
     differ become conflicted copies",
    path = .path.display()
)]
pub struct StateCorrupt {
    /// The database file.
    pub path: PathBuf,
    /// What SQLite (or the check) reported.
    pub cause: String,
}

/// The base tree in memory plus its on-disk copy.
pub struct StateDb {
    conn: Connection,
    /// The database file, for error messages.
    path: PathBuf,
    /// The base tree, as the planner takes it.
    pub base: BTreeMap<RelPath, BaseNode>,
    /// The chunk list of each base file, so a download can reuse unchanged chunks of the old file.
    pub base_chunks: BaseChunks,
}

impl StateDb {
    /// Opens (creating if needed) the state database in `meta_dir` and loads the base tree.
    ///
    /// # Errors
    /// When the database cannot be opened, is from a newer version, or holds invalid rows;
    /// [`StateCorrupt`] when it is corrupt.
    pub fn open(meta_dir: &Path) -> Result<StateDb, Error> {
        let path = meta_dir.join("state.sqlite");
        make_private(&path)?;
        open_at(&path)
    }

    /// Opens the state database in `meta_dir` read-only and loads the base tree, for commands
    /// that change nothing (`status`): no file in `meta_dir` is created, written or removed,
    /// and a daemon that has the database open (in WAL mode) is not disturbed. A folder whose
    /// database is missing has an empty base.
    ///
    /// # Errors
    /// As [`StateDb::open`]; any write to the database fails.
    pub fn open_read_only(meta_dir: &Path) -> Result<StateDb, Error> {
        let path = meta_dir.join("state.sqlite");
        if !path.exists() {
            let conn =
                Connection::open_in_memory().ctx(&path, "could not open a state database")?;
            init_schema(&conn, &path)?;
            return load(conn, &path);
        }
        open_read_only_at(&path)
    }
}

/// Opens `path` with `SQLITE_OPEN_READ_ONLY`: SQLite then neither checkpoints the WAL nor
/// deletes it on close, and creates no `-wal` (while the database has none, it is read as it
/// is on disk). While there is a log, `readonly_shm=1` opens the `-shm` (the WAL index) of the
/// daemon that has it open read-only too: the reader keeps its own copy of the index in
/// memory, checked against the log, instead of marking its read position in the shared one.
fn open_read_only_at(path: &Path) -> Result<StateDb, Error> {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    // Without a log no daemon has the database open, and a read-only connection would create
    // the log and its index: the file is read as immutable instead. A daemon that starts
    // meanwhile creates the log first; a read that failed is then tried again through it.
    if !Path::new(&wal).exists() {
        let immutable = format!("file:{}?immutable=1", uri_path(path));
        match open_read_only_uri(&immutable, path) {
            Ok(state) => return Ok(state),
            Err(_) if Path::new(&wal).exists() => {}
            Err(err) => return Err(err),
        }
    }
    open_read_only_uri(&format!("file:{}?readonly_shm=1", uri_path(path)), path)
}

fn open_read_only_uri(uri: &str, path: &Path) -> Result<StateDb, Error> {
    use rusqlite::OpenFlags;
    let conn = Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .ctx(path, "could not open it read-only")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .ctx(path, "could not open it")?;
    quick_check(&conn, path)?;
    let version: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key='schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()
        .ctx(path, "could not read it")?;
    if let Some(Ok(v)) = version.as_deref().map(str::parse::<i64>) {
        if v > SCHEMA_VERSION {
            return Err(newer_version(path));
        }
    }
    load(conn, path)
}

/// `path` for a `file:` URI: every byte but unreserved ones and `/` percent-encoded.
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &byte in path.as_os_str().as_bytes() {
        if byte.is_ascii_alphanumeric() || b"/-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `PRAGMA quick_check`: a full check of every page and index (the table is also read in full
/// by [`load`], the indexes are not): 10 ms for 30,000 rows, against 50 ms to load them.
fn quick_check(conn: &Connection, path: &Path) -> Result<(), Error> {
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |row| row.get(0))
        .ctx(path, "could not check the state database")?;
    if check != "ok" {
        return Err(StateCorrupt {
            path: path.to_owned(),
            cause: check,
        }
        .into());
    }
    Ok(())
}

/// Creates the database file 0600 before SQLite opens it (SQLite gives `-wal` and `-shm` the
/// mode of the database), narrows files left wider, and removes a `-wal` or `-shm` whose
/// database is gone: moved aside, so they belong to it, and SQLite would otherwise replay that
/// log into the new database.
fn make_private(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let side_files = ["-wal", "-shm"].map(|suffix| {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        PathBuf::from(side)
    });
    if !path.exists() {
        for side in &side_files {
            match std::fs::remove_file(side) {
                Ok(()) => {
                    tracing::warn!(file = %side.display(), "removed the log of a state database that is gone")
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    return Err(Error::io(
                        format!("could not remove {}", side.display()),
                        err,
                    ))
                }
            }
        }
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|err| Error::io(format!("could not create {}", path.display()), err))?;
    for file in std::iter::once(path).chain(side_files.iter().map(PathBuf::as_path)) {
        let mode = match std::fs::metadata(file) {
            Ok(metadata) => metadata.permissions().mode(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(Error::io(format!("could not read {}", file.display()), err)),
        };
        if mode & 0o077 != 0 {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).map_err(
                |err| {
                    Error::io(
                        format!("could not make {} private (mode 0600)", file.display()),
                        err,
                    )
                },
            )?;
        }
    }
    Ok(())
}

/// Adds what was being done to a SQLite error of the state database at a path; an error SQLite
/// reports as corruption becomes [`StateCorrupt`].
trait Ctx<T> {
    fn ctx(self, path: &Path, context: &str) -> Result<T, Error>;
}

impl<T> Ctx<T> for rusqlite::Result<T> {
    fn ctx(self, path: &Path, context: &str) -> Result<T, Error> {
        self.map_err(|err| match &err {
            rusqlite::Error::SqliteFailure(failure, message)
                if matches!(
                    failure.code,
                    rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
                ) =>
            {
                Error::StateCorrupt(StateCorrupt {
                    path: path.to_owned(),
                    cause: message.clone().unwrap_or_else(|| failure.to_string()),
                })
            }
            _ => Error::state(format!("{context} ({})", path.display()), err),
        })
    }
}

/// The state database is from a newer version than this one.
fn newer_version(path: &Path) -> Error {
    Error::Setup(format!(
        "{} was written by a newer syncstore; upgrade syncstore",
        path.display()
    ))
}

fn open_at(path: &Path) -> Result<StateDb, Error> {
    let conn = Connection::open(path).ctx(path, "could not open it")?;
    quick_check(&conn, path)?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;",
    )
    .ctx(path, "could not initialise the state database")?;
    init_schema(&conn, path)?;
    load(conn, path)
}

/// Creates the tables if missing and checks the schema version.
fn init_schema(conn: &Connection, path: &Path) -> Result<(), Error> {
    conn.execute_batch(
        "
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS base (
                path TEXT PRIMARY KEY, kind INTEGER NOT NULL, hash BLOB, node_id INTEGER NOT NULL,
                rev INTEGER NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
                inode INTEGER NOT NULL, chunks BLOB NOT NULL,
                ctime_ns INTEGER NOT NULL DEFAULT 0,
                executable INTEGER NOT NULL DEFAULT 0);",
    )
    .ctx(path, "could not initialise the state database")?;
    let version: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key='schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    match version.as_deref().map(str::parse::<i64>) {
        None => {
            conn.execute(
                "INSERT INTO meta VALUES ('schema_version', ?1)",
                [SCHEMA_VERSION.to_string()],
            )?;
        }
        Some(Ok(v)) if v == SCHEMA_VERSION => {}
        Some(Ok(1 | 2)) => {
            // A ctime of 0 matches no file: each is hashed once more, then recorded with it.
            // A missing executable bit reads as not executable, so a file that is executable
            // on disk reads as a local mode change and is sent.
            let has = |column: &str| -> Result<bool, Error> {
                let found: i64 = conn.query_row(
                    "SELECT COUNT(*) FROM pragma_table_info('base') WHERE name = ?1",
                    [column],
                    |row| row.get(0),
                )?;
                Ok(found > 0)
            };
            let mut upgrade = String::from("BEGIN IMMEDIATE;");
            if !has("ctime_ns")? {
                upgrade
                    .push_str("ALTER TABLE base ADD COLUMN ctime_ns INTEGER NOT NULL DEFAULT 0;");
            }
            if !has("executable")? {
                upgrade
                    .push_str("ALTER TABLE base ADD COLUMN executable INTEGER NOT NULL DEFAULT 0;");
            }
            upgrade.push_str("UPDATE meta SET value = '3' WHERE key = 'schema_version'; COMMIT;");
            conn.execute_batch(&upgrade)
                .ctx(path, "could not upgrade the state database to version 3")?;
        }
        Some(_) => return Err(newer_version(path)),
    }
    Ok(())
}

/// Reads the base tree.
fn load(conn: Connection, path: &Path) -> Result<StateDb, Error> {
    let mut base = BTreeMap::new();
    let mut base_chunks = BaseChunks::default();
    {
        let mut stmt = conn.prepare(
            "SELECT path, kind, hash, node_id, rev, size, mtime_ns, inode, chunks, ctime_ns,
                    executable
             FROM base",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let path_text: String = row.get(0)?;
            let path = RelPath::new(&path_text).map_err(|err| {
                Error::state(format!("invalid path in state: {path_text:?}"), err)
            })?;
            let kind = if row.get::<_, i64>(1)? == 1 {
                EntryKind::Dir
            } else {
                EntryKind::File
            };
            let hash: Option<Vec<u8>> = row.get(2)?;
            let hash = hash
                .map(|bytes| to_hash32(&bytes).map(ContentHash))
                .transpose()?;
            let chunks = decode_chunks(&row.get::<_, Vec<u8>>(8)?)?;
            base.insert(
                path.clone(),
                BaseNode {
                    kind,
                    hash,
                    node_id: NodeId(row.get::<_, i64>(3)? as u64),
                    rev: Revision(row.get::<_, i64>(4)? as u64),
                    size: row.get::<_, i64>(5)? as u64,
                    mtime_ns: row.get(6)?,
                    inode: row.get::<_, i64>(7)? as u64,
                    ctime_ns: row.get(9)?,
                    executable: row.get::<_, i64>(10)? != 0,
                },
            );
            base_chunks.insert(path, chunks);
        }
    }
    Ok(StateDb {
        conn,
        path: path.to_owned(),
        base,
        base_chunks,
    })
}

impl StateDb {
    /// Records `node` as the base of `path`.
    ///
    /// # Errors
    /// On a database error; memory is then unchanged.
    pub fn put(
        &mut self,
        path: &RelPath,
        node: BaseNode,
        chunks: Vec<ChunkRef>,
    ) -> Result<(), Error> {
        // Cached: a download batch records thousands of paths, and preparing the statement
        // each time was 2.5 % of the receiver's CPU in W1.
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO base
                 (path, kind, hash, node_id, rev, size, mtime_ns, inode, chunks, ctime_ns,
                  executable)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    path.as_str(),
                    if node.kind == EntryKind::Dir { 1 } else { 0 },
                    node.hash.map(|h| h.0.to_vec()),
                    node.node_id.0 as i64,
                    node.rev.0 as i64,
                    node.size as i64,
                    node.mtime_ns,
                    node.inode as i64,
                    encode_chunks(&chunks),
                    node.ctime_ns,
                    i64::from(node.executable),
                ])
            })
            .ctx(&self.path, "could not save base")?;
        self.base.insert(path.clone(), node);
        self.base_chunks.insert(path.clone(), chunks);
        Ok(())
    }

    /// Drops `path` from base.
    ///
    /// # Errors
    /// On a database error.
    pub fn remove(&mut self, path: &RelPath) -> Result<(), Error> {
        self.conn
            .prepare_cached("DELETE FROM base WHERE path = ?1")
            .and_then(|mut statement| statement.execute([path.as_str()]))
            .ctx(&self.path, "could not save base")?;
        self.base.remove(path);
        self.base_chunks.remove(path);
        Ok(())
    }

    /// Moves the base entries at and below `from` to `to`, in one transaction.
    ///
    /// # Errors
    /// On a database error.
    pub fn rebase(&mut self, from: &RelPath, to: &RelPath) -> Result<(), Error> {
        let moved: Vec<(RelPath, RelPath)> = self
            .base
            .keys()
            .filter_map(|p| p.rebase(from, to).map(|new| (p.clone(), new)))
            .collect();
        // A savepoint, so this also works inside a batch (see `begin_batch`).
        let tx = self
            .conn
            .savepoint()
            .ctx(&self.path, "could not save base")?;
        for (old, new) in &moved {
            tx.execute("DELETE FROM base WHERE path = ?1", [new.as_str()])?;
            tx.execute(
                "UPDATE base SET path = ?2 WHERE path = ?1",
                [old.as_str(), new.as_str()],
            )?;
        }
        tx.commit().ctx(&self.path, "could not save base")?;
        for (old, new) in moved {
            if let Some(node) = self.base.remove(&old) {
                self.base.insert(new.clone(), node);
            }
            if let Some(chunks) = self.base_chunks.remove(&old) {
                self.base_chunks.insert(new, chunks);
            }
        }
        Ok(())
    }

    /// Starts a batch: the base updates that follow are committed together by
    /// [`StateDb::commit_batch`], one fsync instead of one per path. A crash before the commit
    /// loses them, which is safe: the planner then sees both sides agreeing with a stale base and
    /// records it again, or keeps both versions; it never deletes on account of a stale base.
    ///
    /// # Errors
    /// On a database error.
    pub fn begin_batch(&mut self) -> Result<(), Error> {
        if self.conn.is_autocommit() {
            self.conn
                .execute_batch("BEGIN IMMEDIATE")
                .ctx(&self.path, "could not start a state transaction")?;
        }
        Ok(())
    }

    /// Commits the batch started by [`StateDb::begin_batch`].
    ///
    /// # Errors
    /// On a database error.
    pub fn commit_batch(&mut self) -> Result<(), Error> {
        if !self.conn.is_autocommit() {
            self.conn
                .execute_batch("COMMIT")
                .ctx(&self.path, "could not commit state")?;
        }
        Ok(())
    }

    /// Reads a saved value.
    ///
    /// # Errors
    /// On a database error.
    pub fn meta(&self, key: &str) -> Result<Option<String>, Error> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Saves a value.
    ///
    /// # Errors
    /// On a database error.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), Error> {
        self.conn
            .execute("INSERT OR REPLACE INTO meta VALUES (?1, ?2)", [key, value])?;
        Ok(())
    }
}

/// What base was made against: the server's namespace and the newest journal position the
/// client knew of when base was last committed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerIdentity {
    pub namespace: Option<NamespaceId>,
    pub known: Option<(Cursor, JournalTag)>,
}

/// The saved server identity of `store` (nothing saved: a folder never synced, or older state).
///
/// # Errors
/// On a read error or a corrupt value.
pub fn identity(store: &impl BaseStore) -> Result<ServerIdentity, Error> {
    let corrupt = |what: &str, err: &dyn std::fmt::Display| {
        Error::state(format!("corrupt {what} in state"), err)
    };
    let namespace = store
        .meta("namespace")?
        .map(|text| NamespaceId::from_hex(&text))
        .transpose()
        .map_err(|err| corrupt("namespace", &err))?;
    let known = match (store.meta("known_cursor")?, store.meta("known_tag")?) {
        (Some(cursor), Some(tag)) => Some((
            Cursor(
                cursor
                    .parse()
                    .map_err(|err| corrupt("known_cursor", &err))?,
            ),
            JournalTag::from_hex(&tag).map_err(|err| corrupt("known_tag", &err))?,
        )),
        _ => None,
    };
    Ok(ServerIdentity { namespace, known })
}

/// Saves the server identity; inside a batch it commits with the batch's base updates.
///
/// # Errors
/// When it cannot be saved.
pub fn save_identity(store: &mut impl BaseStore, identity: &ServerIdentity) -> Result<(), Error> {
    let namespace = identity.namespace.map(|n| n.to_hex());
    store.set_meta("namespace", namespace.as_deref())?;
    let (cursor, tag) = identity
        .known
        .map(|(cursor, tag)| (cursor.0.to_string(), tag.to_hex()))
        .unzip();
    store.set_meta("known_cursor", cursor.as_deref())?;
    store.set_meta("known_tag", tag.as_deref())
}

/// A map from path to a value saved as one JSON object under `key`.
fn path_map<V: serde::de::DeserializeOwned>(
    store: &impl BaseStore,
    key: &str,
) -> Result<BTreeMap<RelPath, V>, Error> {
    let text = store.meta(key)?.unwrap_or_else(|| "{}".into());
    let raw: BTreeMap<String, V> = serde_json::from_str(&text)
        .map_err(|err| Error::state(format!("corrupt {key} in state"), err))?;
    Ok(raw
        .into_iter()
        .filter_map(|(p, m)| RelPath::new(&p).ok().map(|p| (p, m)))
        .collect())
}

fn set_path_map<V: serde::Serialize>(
    store: &mut impl BaseStore,
    key: &str,
    map: &BTreeMap<RelPath, V>,
) -> Result<(), Error> {
    let raw: BTreeMap<&str, &V> = map.iter().map(|(p, m)| (p.as_str(), m)).collect();
    let text = serde_json::to_string(&raw).map_err(|err| Error::state("could not save", err))?;
    store.set_meta(key, Some(&text))
}

/// The files made read-only because another device's lock covered them: path → (the inode the
/// file had then, its mode before). State written by older versions (path → mode) loads with
/// inode 0, "whatever file is at the path".
///
/// # Errors
/// On a read error or a corrupt value.
pub fn read_only_for_locks(store: &impl BaseStore) -> Result<BTreeMap<RelPath, (u64, u32)>, Error> {
    if store.meta("read_only_for_locks")?.is_some() {
        return path_map(store, "read_only_for_locks");
    }
    let old: BTreeMap<RelPath, u32> = path_map(store, "readonly_modes")?;
    Ok(old
        .into_iter()
        .map(|(path, mode)| (path, (0, mode)))
        .collect())
}

/// Saves the files made read-only for locks.
///
/// # Errors
/// When they cannot be saved.
pub fn set_read_only_for_locks(
    store: &mut impl BaseStore,
    files: &BTreeMap<RelPath, (u64, u32)>,
) -> Result<(), Error> {
    set_path_map(store, "read_only_for_locks", files)?;
    store.set_meta("readonly_modes", None)
}

/// Locks this device held at the last look (path → since), to tell the user when one goes.
///
/// # Errors
/// On a read error or a corrupt value.
pub fn my_locks(store: &impl BaseStore) -> Result<BTreeMap<RelPath, i64>, Error> {
    path_map(store, "my_locks")
}

/// Saves the locks this device holds.
///
/// # Errors
/// When they cannot be saved.
pub fn set_my_locks(
    store: &mut impl BaseStore,
    locks: &BTreeMap<RelPath, i64>,
) -> Result<(), Error> {
    set_path_map(store, "my_locks", locks)
}

impl BaseStore for StateDb {
    fn base(&self) -> &BTreeMap<RelPath, BaseNode> {
        &self.base
    }

    fn base_chunks(&self) -> &BaseChunks {
        &self.base_chunks
    }

    fn put(&mut self, path: &RelPath, node: BaseNode, chunks: Vec<ChunkRef>) -> Result<(), Error> {
        StateDb::put(self, path, node, chunks)
    }

    fn remove(&mut self, path: &RelPath) -> Result<(), Error> {
        StateDb::remove(self, path)
    }

    fn rebase(&mut self, from: &RelPath, to: &RelPath) -> Result<(), Error> {
        StateDb::rebase(self, from, to)
    }

    fn begin_batch(&mut self) -> Result<(), Error> {
        StateDb::begin_batch(self)
    }

    fn commit_batch(&mut self) -> Result<(), Error> {
        StateDb::commit_batch(self)
    }

    fn meta(&self, key: &str) -> Result<Option<String>, Error> {
        StateDb::meta(self, key)
    }

    fn set_meta(&mut self, key: &str, value: Option<&str>) -> Result<(), Error> {
        match value {
            Some(value) => StateDb::set_meta(self, key, value),
            None => self.delete_meta(key),
        }
    }

    fn readopt(&mut self, identity: &ServerIdentity, why: &str) -> Result<(), Error> {
        StateDb::commit_batch(self)?;
        self.conn
            .execute_batch("BEGIN IMMEDIATE; DELETE FROM base;")
            .ctx(&self.path, "could not clear base")?;
        let saved =
            save_identity(self, identity).and_then(|()| self.set_meta("readopted", Some(why)));
        if let Err(err) = saved {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(err);
        }
        self.conn
            .execute_batch("COMMIT")
            .ctx(&self.path, "could not commit state")?;
        self.base.clear();
        self.base_chunks.clear();
        Ok(())
    }
}

impl StateDb {
    fn delete_meta(&self, key: &str) -> Result<(), Error> {
        self.conn
            .execute("DELETE FROM meta WHERE key = ?1", [key])?;
        Ok(())
    }
}

fn to_hash32(bytes: &[u8]) -> Result<[u8; 32], Error> {
    bytes
        .try_into()
        .map_err(|_| Error::state("corrupt state", format!("a hash of {} bytes", bytes.len())))
}

fn encode_chunks(chunks: &[ChunkRef]) -> Vec<u8> {
    ChunkRef::encode_list(chunks)
}

fn decode_chunks(bytes: &[u8]) -> Result<Vec<ChunkRef>, Error> {
    ChunkRef::decode_list(bytes)
        .ok_or_else(|| Error::state("corrupt state", "a chunk list of a partial record"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version 1 state database (before the executable bit) opens as version 2, its files
    /// taken as not executable, and keeps the bit from then on.
    #[test]
    fn version_1_gains_the_executable_bit_and_the_ctime() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 INSERT INTO meta VALUES ('schema_version', '1');
                 CREATE TABLE base (
                    path TEXT PRIMARY KEY, kind INTEGER NOT NULL, hash BLOB, node_id INTEGER NOT NULL,
                    rev INTEGER NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
                    inode INTEGER NOT NULL, chunks BLOB NOT NULL);
                 INSERT INTO base VALUES ('run.sh', 0, zeroblob(32), 1, 2, 3, 4, 5, x'');",
            )
            .unwrap();
        }
        let mut state = StateDb::open(dir.path()).unwrap();
        let run = RelPath::new("run.sh").unwrap();
        let node = state.base[&run].clone();
        assert!(!node.executable);
        assert_eq!((node.rev, node.inode), (Revision(2), 5));
        state
            .put(
                &run,
                BaseNode {
                    executable: true,
                    ..node
                },
                Vec::new(),
            )
            .unwrap();
        drop(state);
        let state = StateDb::open(dir.path()).unwrap();
        assert!(state.base[&run].executable);
        assert_eq!(
            state.base[&run].ctime_ns, 0,
            "a version 1 row has no ctime yet"
        );
        let version: String = state
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key='schema_version'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(version, "3");
    }
    use std::collections::BTreeMap;

    /// Every file in `dir` with the hash of its bytes; the WAL index (`-shm`) only by name,
    /// as connections of one process share it: the read position a reader marks there is the
    /// writer's connection's doing in this test (across processes, the reader's `readonly_shm`
    /// leaves it alone; the end-to-end test in `cli/tests/small11.rs` checks that).
    fn files(dir: &Path) -> BTreeMap<String, String> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with("-shm") {
                    return (name, String::new());
                }
                let bytes = std::fs::read(entry.path()).unwrap();
                (name, blake3::hash(&bytes).to_hex().to_string())
            })
            .collect()
    }

    fn file_node(size: u64) -> BaseNode {
        BaseNode {
            kind: EntryKind::File,
            hash: Some(ContentHash([7; 32])),
            node_id: NodeId(1),
            rev: Revision(1),
            size,
            mtime_ns: 0,
            inode: 1,
            ctime_ns: 0,
            executable: false,
        }
    }

    #[test]
    fn read_only_open_writes_nothing_with_or_without_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = RelPath::new("a.txt").unwrap();
        let mut writer = StateDb::open(dir.path()).unwrap();
        writer.put(&path, file_node(1), Vec::new()).unwrap();
        // The writer holds the database open in WAL mode, its last commit still in the log.
        let before = files(dir.path());
        assert!(
            before.contains_key("state.sqlite-wal"),
            "{:?}",
            before.keys()
        );
        let reader = StateDb::open_read_only(dir.path()).unwrap();
        assert_eq!(reader.base.get(&path), Some(&file_node(1)));
        assert!(
            reader.set_meta("x", "y").is_err(),
            "a read-only state took a write"
        );
        drop(reader);
        assert_eq!(files(dir.path()), before);
        // The writer goes on committing meanwhile, and a reader sees it.
        let reader = StateDb::open_read_only(dir.path()).unwrap();
        writer.put(&path, file_node(2), Vec::new()).unwrap();
        drop(reader);
        let reader = StateDb::open_read_only(dir.path()).unwrap();
        assert_eq!(reader.base.get(&path), Some(&file_node(2)));
        drop(reader);

        // No writer: the log was checkpointed and removed at close, and is not created again.
        drop(writer);
        let before = files(dir.path());
        let reader = StateDb::open_read_only(dir.path()).unwrap();
        assert_eq!(reader.base.get(&path), Some(&file_node(2)));
        drop(reader);
        assert_eq!(files(dir.path()), before);
    }

    #[test]
    fn read_only_open_of_a_missing_database_has_an_empty_base() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDb::open_read_only(dir.path()).unwrap();
        assert!(state.base.is_empty());
        assert!(files(dir.path()).is_empty());
    }
}
