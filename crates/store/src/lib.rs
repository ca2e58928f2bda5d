//! The server's storage: a [`MetaStore`] (users, devices, the node tree and the change journal)
//! and a [`ChunkStore`] (content-addressed chunk bytes, per user), each behind a narrow trait.
//!
//! The server holds them as `Arc<dyn MetaStore>` and `Arc<dyn ChunkStore>` and never learns which
//! backend it talks to. The embedded default is [`SqliteMetaStore`] + [`FsChunkStore`];
//! [`PgMetaStore`] + [`S3ChunkStore`] slot in behind the same traits, and a [`ChangeFeed`] tells
//! each server about the batches the others committed.
//!
//! # Layout
//!
//! - [`ops`] holds the semantics of every [`Op`] (preconditions, implicit parent directories,
//!   journal rows, refusal of ops on locked paths), written once against the synchronous
//!   [`ops::Txn`] trait. A backend only implements `Txn` for its own transaction type; it never
//!   re-implements the rules.
//! - [`locks`] holds the rules of taking, renewing, releasing and breaking locks, over the same
//!   `Txn`.
//! - [`meta`] is [`MetaStore`] itself, written once over [`meta::MetaTxn`] (the queries, on top
//!   of `Txn`) and [`meta::TxnBackend`] (how a backend runs a transaction): which reads share a
//!   snapshot, which calls write, when a commit is announced.
//! - `sql` holds what both SQL backends share: every query, written once, and `Txn` and
//!   `MetaTxn` on any SQL connection.
//! - [`mem`] is the meta store in memory: [`mem::MemTxn`], a database that is its own
//!   transaction, which the simulation drives directly, and [`MemMetaStore`] over it.
//! - [`sqlite`] and [`fs`] are the embedded backends; [`postgres`] and [`s3`] the shared ones,
//!   for several server processes over one PostgreSQL database and one S3 bucket, built with
//!   the cargo features `postgres` and `s3` (both on by default; without them the modules hold
//!   only the URL forms, [`postgres::redact_url`] and [`s3::S3Location`]). Each backend holds
//!   only its connections, migrations and transaction plumbing (and its few statements of its
//!   own).
//! - The one contract suite every backend pair must pass is test code, in `tests/conformance.rs`.
//!
//! Start reading at [`MetaStore`], then [`meta`], then [`ops::apply_batch`].
//!
//! **Architecture Invariant:** nothing here speaks HTTP or JSON, and no store type derives serde.
//! **Architecture Invariant:** nothing here reads a clock: calls that depend on time (which locks
//! are in force) take `now_ms` from the caller.
//! **Architecture Invariant:** chunk bytes are deleted only by garbage collection ([`gc`]),
//! and only when no current node and no kept journal row names them (see [`retention`] for
//! which rows are kept), or with a removed account ([`MetaStore::remove_user`], then
//! [`ChunkStore::delete_all`]), whose rows are all gone first.

pub mod fs;
pub mod gc;
pub mod history;
pub mod locks;
pub mod mem;
pub mod meta;
pub mod ops;
pub mod postgres;
pub mod retention;
pub mod s3;
mod sql;
pub mod sqlite;
pub mod streams;

pub use fs::FsChunkStore;
pub use mem::MemMetaStore;
#[cfg(feature = "postgres")]
pub use postgres::PgMetaStore;
#[cfg(feature = "s3")]
pub use s3::S3ChunkStore;
pub use sqlite::SqliteMetaStore;

use async_trait::async_trait;
use bytes::Bytes;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use syncstore_proto::{
    Change, ChunkHash, Cursor, DeviceName, JournalTag, LockInfo, NamespaceId, NodeId, Op, RelPath,
    RemoteEntry, RestoreTarget, StreamPart, TrashEntry, TrashQuery, UsageResponse, UserName,
    Version,
};

pub use gc::{GcPolicy, GcReport, StoredChunk};
pub use history::RestorePlan;
pub use retention::{Compaction, Retention};

/// The stored chunks among those asked for, with their lengths in bytes; a chunk that is not
/// stored is absent.
pub type ChunkLens = HashMap<ChunkHash, u32>;

/// A fresh namespace id: 16 bytes from the operating system's random source.
pub fn new_namespace_id() -> NamespaceId {
    NamespaceId(rand::random())
}

/// A fresh journal tag: 16 bytes from the operating system's random source.
pub fn new_journal_tag() -> JournalTag {
    JournalTag(rand::random())
}

/// A user's id in the meta store; every node, change and chunk belongs to exactly one user.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct UserId(pub i64);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A device's id in the meta store; one device holds one token.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct DeviceId(pub i64);

/// BLAKE3 of a bearer token: the only form in which tokens are stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// Hashes a bearer token as sent in `Authorization: Bearer TOKEN`.
    pub fn of_token(token: &str) -> TokenHash {
        TokenHash(*blake3::hash(token.as_bytes()).as_bytes())
    }
}

impl fmt::Debug for TokenHash {
    // A token hash is not a secret, but it need not fill log lines either.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TokenHash({:02x}{:02x}{:02x}{:02x}..)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// An account.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct User {
    pub id: UserId,
    pub name: UserName,
    /// Random, drawn at creation, never reused: what chunks are keyed by and what clients check.
    pub namespace: NamespaceId,
}

/// A device of a user, as stored (its token only as a hash, which is not repeated here).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Device {
    pub id: DeviceId,
    pub user_id: UserId,
    pub name: DeviceName,
}

/// Who a request comes from: the result of [`MetaStore::authenticate`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Principal {
    pub user_id: UserId,
    pub user_name: UserName,
    pub namespace: NamespaceId,
    pub device_id: DeviceId,
    pub device_name: DeviceName,
}

/// The name of the device every browser session of a user acts as: what its ops, locks and
/// conflicted copies are named after. A token device may not take it
/// ([`StoreError::ReservedDeviceName`]).
pub const WEB_DEVICE: &str = "web";

/// [`WEB_DEVICE`] as a device name.
pub fn web_device() -> DeviceName {
    // A constant that passes the name rules (tested).
    DeviceName::new(WEB_DEVICE).expect("\"web\" is a valid device name")
}

/// A share link's id: the random part of its URL (16 to 64 of `[A-Za-z0-9_-]`).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ShareId(String);

impl ShareId {
    /// Validates a share link's id.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for any other text (no link has it).
    pub fn new(text: String) -> Result<ShareId, StoreError> {
        let valid = (16..=64).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(ShareId(text))
        } else {
            Err(StoreError::NotFound("a share link of that id".to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A browser session as stored ([`MetaStore::create_session`]): found by `id_hash`, the BLAKE3
/// of the cookie's random value.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NewSession {
    pub id_hash: TokenHash,
    pub user_id: UserId,
    /// `None`: a user's sign-in; `Some`: the unlocked session of that password-protected link.
    pub share_id: Option<ShareId>,
    pub csrf: String,
    pub created_ms: i64,
    pub expires_ms: i64,
}

/// A live session ([`MetaStore::session`]).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Session {
    pub user_id: UserId,
    /// For a sign-in: the user's [`WEB_DEVICE`], while neither it nor the user is gone.
    pub principal: Option<Principal>,
    pub share_id: Option<ShareId>,
    pub csrf: String,
    pub expires_ms: i64,
}

/// A share link: a read-only link to a node (by id, so a rename or move keeps it).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ShareRecord {
    pub id: ShareId,
    pub user_id: UserId,
    pub node_id: NodeId,
    /// The node's path when the link was made (for the listing once the node is gone).
    pub path: RelPath,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    /// An argon2 PHC string; `None`: no password.
    pub password_hash: Option<String>,
    /// `None` until revoked.
    pub revoked_ms: Option<i64>,
    pub created_by: DeviceName,
}

/// A WebDAV dead property (RFC 4918, 4.2): set by a PROPPATCH, shown by PROPFIND, kept per
/// node for WebDAV clients only. The store keeps its XML as given and never reads it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DeadProp {
    /// The XML namespace; empty when the property has none.
    pub namespace: String,
    pub name: String,
    pub prefix: Option<String>,
    /// The property element as XML, as the client sent it.
    pub xml: Option<Vec<u8>>,
}

/// A device as administrators and the web UI see it ([`MetaStore::devices`]).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DeviceRecord {
    pub id: DeviceId,
    pub name: DeviceName,
    /// When it was added (milliseconds since the Unix epoch); `None` for a device added before
    /// this was recorded.
    pub created_ms: Option<i64>,
    /// When a server last took its token, recorded at most once a minute per server process
    /// ([`MetaStore::seen_device`]).
    pub last_seen_ms: Option<i64>,
    /// The address that request came from (the TCP peer, an IP address).
    pub last_address: Option<String>,
    /// When it was revoked: its token is refused from then on, and its row stays, because the
    /// journal names devices.
    pub revoked_ms: Option<i64>,
}

/// An account with what `syncstore user list` shows ([`MetaStore::accounts`]).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Account {
    pub user: User,
    /// When its first device was added (an account gets one as it is created); `None` when
    /// not known.
    pub created_ms: Option<i64>,
    /// Devices whose tokens work (revoked ones are not counted).
    pub devices: u64,
    /// The sizes of its current files, and its quota (`None`: none).
    pub used_bytes: u64,
    pub quota_bytes: Option<u64>,
}

/// The outcome of [`MetaStore::revoke_device`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Revocation {
    /// Revoked now: its token is refused from this commit on, on every server. The locks it
    /// held are released, each journalled as its [`Change::Unlock`]; `cursor` is the journal
    /// position after them (`None` when it held none).
    Revoked {
        revoked_ms: i64,
        released: Vec<LockInfo>,
        cursor: Option<Cursor>,
    },
    /// It had been revoked already, at `revoked_ms`; nothing changed.
    AlreadyRevoked { revoked_ms: i64 },
    /// The user has no device of that name.
    NoSuchDevice,
}

/// A removed account whose content may not all be deleted yet ([`MetaStore::removed_users`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RemovedUser {
    pub user_id: UserId,
    /// What its chunks are keyed by.
    pub namespace: NamespaceId,
    pub removed_ms: i64,
}

/// Every live node of a user at one cursor.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Tree {
    /// The journal position this tree reflects.
    pub cursor: Cursor,
    /// The tag of the journal position `cursor`.
    pub cursor_tag: JournalTag,
    /// Sorted by path, so a directory comes before everything in it.
    pub entries: Vec<RemoteEntry>,
    /// Every lock in force at the time asked for, sorted by path.
    pub locks: Vec<LockInfo>,
}

/// The kept versions of a path ([`MetaStore::history`]).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct History {
    /// Oldest first.
    pub versions: Vec<Version>,
    /// History older than this (milliseconds since the Unix epoch) is no longer kept; 0 when
    /// all of it is.
    pub kept_since_ms: i64,
}

/// The deleted files still kept ([`MetaStore::trash`]).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Trash {
    /// Newest deletion first.
    pub entries: Vec<TrashEntry>,
    pub kept_since_ms: i64,
}

/// One page of a user's change journal.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ChangesPage {
    /// The cursor of the last change returned, or `since` when there was none (or the current
    /// cursor on reset).
    pub cursor: Cursor,
    /// The tag of the journal position `cursor`.
    pub cursor_tag: JournalTag,
    /// Oldest first.
    pub changes: Vec<Change>,
    /// More changes follow beyond this page.
    pub more: bool,
    /// `since` is ahead of the journal: the caller must fetch the whole tree again.
    pub reset: bool,
}

/// The outcome of one [`Op`] of a batch.
///
/// Refusals the client caused are values, not [`StoreError`]s. The store says what happened;
/// the server decides how that is answered (its status and message on the wire).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum OpOutcome {
    /// Applied; the nodes it created or changed, implicit parents first.
    Applied(Vec<RemoteEntry>),
    /// A precondition failed; `current` is the node now at the path, if any.
    Conflict {
        current: Option<RemoteEntry>,
        message: String,
    },
    /// The op itself is wrong, e.g. a missing chunk or a move into itself.
    Invalid(String),
    /// The op names a node that does not exist, e.g. a delete of nothing.
    NotFound(String),
    /// Another device holds a lock in force that covers a path the op would change: that lock,
    /// which may be on a directory above the op's path.
    Locked(LockInfo),
    /// The op would take the account over its quota.
    OverQuota(String),
}

impl OpOutcome {
    /// Whether the op was applied ([`OpOutcome::Applied`]): it passed its checks, and its
    /// writes, if any, are kept. A failed op changed nothing.
    pub fn is_applied(&self) -> bool {
        matches!(self, OpOutcome::Applied(_))
    }
}

/// The outcome of taking, renewing, releasing or breaking a lock (see [`locks`]).
///
/// Refusals the client caused are values, not [`StoreError`]s, as for ops.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum LockOutcome {
    /// Done: the lock as taken or renewed, or as it was before it was released or broken;
    /// `cursor` is the journal row that records the change.
    Done { lock: LockInfo, cursor: Cursor },
    /// The request itself is wrong: a TTL of 0 or over [`syncstore_proto::MAX_LOCK_TTL_SECS`].
    Invalid(String),
    /// Nothing at the path to lock, or no lock in force on the path to release.
    NotFound(String),
    /// Another device's lock is in the way: that lock, which may be on a directory above the
    /// path asked about, or beneath it.
    Locked(LockInfo),
}

/// The outcome of a batch of ops: one [`OpOutcome`] per op, in order.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BatchOutcome {
    pub outcomes: Vec<OpOutcome>,
    /// The user's cursor after the batch.
    pub cursor: Cursor,
    /// The tag of the journal position `cursor`.
    pub cursor_tag: JournalTag,
}

impl BatchOutcome {
    /// Whether any op was applied (so other devices have something to learn).
    pub fn changed_anything(&self) -> bool {
        self.outcomes.iter().any(OpOutcome::is_applied)
    }
}

/// Errors of both stores.
///
/// Op failures the client caused (a failed precondition, a bad op, ...) are not errors but
/// [`OpOutcome`]s; these are the failures of a whole call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A user or device name is already taken.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// A device name that a revoked device of the user had: the name stays with the versions,
    /// deletions and locks in the journal that name it, so it is not given to another device.
    #[error("device {device} of user {user} was revoked; its name stays with the history that names it, so give the new device another name")]
    DeviceNameRetired { user: UserName, device: DeviceName },
    /// A token device asked for the name of the web interface's device ([`WEB_DEVICE`]).
    #[error(
        "the device name {WEB_DEVICE} is kept for the web interface; give the device another name"
    )]
    ReservedDeviceName,
    /// A named user, device or chunk does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// Chunk bytes do not hash to the hash they were stored under.
    #[error("chunk {claimed} does not match its content (BLAKE3 is {actual})")]
    HashMismatch {
        claimed: ChunkHash,
        actual: ChunkHash,
    },
    /// A chunk larger than [`syncstore_proto::MAX_CHUNK_LEN`].
    #[error("chunk of {len} bytes exceeds the limit of {max}", max = syncstore_proto::MAX_CHUNK_LEN)]
    ChunkTooLarge { len: usize },
    /// The database was written by a newer build.
    #[error("database schema version {found} is newer than this build supports ({supported}); upgrade syncstore")]
    SchemaTooNew { found: i64, supported: i64 },
    /// A stored row does not decode (a bug or outside tampering).
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The object store (S3) failed or could not be reached.
    #[error("object store: {0}")]
    ObjectStore(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The disk or quota of a store is full: nothing was written.
    #[error("server storage is full: {0}")]
    Full(String),
    /// A filesystem call failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// A garbage collection run ended between reading which chunks are stored and committing
    /// a batch that names them: nothing was applied; [`apply_ops`] tries again.
    #[error("a garbage collection run raced this commit; try again")]
    GcRaced,
    /// A blocking worker died (panicked or was cancelled).
    #[error("store worker failed: {0}")]
    Worker(String),
    /// The database or the object store cannot be reached right now: it is down or restarting,
    /// or the connection broke. Trying again later may succeed.
    #[error("{service} unavailable: {source}")]
    Unavailable {
        service: Service,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Which service behind a store failed, for [`StoreError::Unavailable`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Service {
    /// The meta store's database server (PostgreSQL).
    Database,
    /// The chunk store's object store (S3).
    ObjectStore,
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Service::Database => "database",
            Service::ObjectStore => "object store",
        })
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> StoreError {
        if let rusqlite::Error::SqliteFailure(failure, _) = &err {
            if failure.code == rusqlite::ErrorCode::DiskFull {
                return StoreError::Full(format!("the metadata database: {err}"));
            }
        }
        StoreError::Database(Box::new(err))
    }
}

impl StoreError {
    /// An IO error with what was being done; a full disk or quota becomes [`StoreError::Full`].
    pub fn io(context: String, source: std::io::Error) -> StoreError {
        // The kind, not only the raw code: tempfile wraps write errors with their path.
        let full = matches!(
            source.raw_os_error(),
            Some(libc::ENOSPC) | Some(libc::EDQUOT)
        ) || matches!(
            source.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        );
        if full {
            StoreError::Full(format!("{context}: {source}"))
        } else {
            StoreError::Io { context, source }
        }
    }
}

/// A batch committed to a meta store shared by several servers: the user's journal now reaches
/// `cursor`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ChangeNotice {
    pub user_id: UserId,
    pub cursor: Cursor,
}

/// The commits of every server on a shared meta store, as [`ChangeNotice`]s
/// (see [`PgMetaStore::change_feed`]).
///
/// Cloning shares one feed; the task behind it stops when the last clone is dropped.
#[derive(Clone)]
pub struct ChangeFeed {
    sender: tokio::sync::broadcast::Sender<ChangeNotice>,
    /// Bumped by the task each time it listens again after a broken connection.
    resumed: tokio::sync::watch::Receiver<u64>,
    _task: Arc<AbortOnDrop>,
}

impl ChangeFeed {
    /// A feed whose notices `task` sends on `sender`, and which bumps `resumed` each time it
    /// listens again after losing its connection.
    pub fn new(
        sender: tokio::sync::broadcast::Sender<ChangeNotice>,
        resumed: tokio::sync::watch::Receiver<u64>,
        task: tokio::task::JoinHandle<()>,
    ) -> ChangeFeed {
        ChangeFeed {
            sender,
            resumed,
            _task: Arc::new(AbortOnDrop(task)),
        }
    }

    /// A receiver of every notice from now on.
    ///
    /// Notices are lost while the feed reconnects, and a receiver that falls too far behind
    /// gets `Lagged`: after either, read the cursors of the users you care about again (see
    /// [`ChangeFeed::resumed`]).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<ChangeNotice> {
        self.sender.subscribe()
    }

    /// A counter that grows each time the feed listens again after its connection broke.
    ///
    /// It changes only once the feed hears commits again, so cursors read after the change
    /// was seen include everything the feed missed, and later commits arrive as notices.
    pub fn resumed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.resumed.clone()
    }
}

impl fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangeFeed").finish_non_exhaustive()
    }
}

/// Stops the feed's task with its last owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Users, devices, the node tree and the change journal, each user in its own namespace.
#[async_trait]
pub trait MetaStore: Send + Sync {
    /// Creates a user with an empty tree at cursor 0.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] when the name is taken; database errors.
    async fn create_user(&self, name: &UserName) -> Result<User, StoreError>;

    /// Looks a user up by name.
    ///
    /// # Errors
    /// Database errors only; an unknown name is `Ok(None)`.
    async fn user_by_name(&self, name: &UserName) -> Result<Option<User>, StoreError>;

    /// Adds a device with its token hash to a user, created at `now_ms`.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] when the user already has a device of that name (or the
    /// token hash is in use); [`StoreError::DeviceNameRetired`] when a revoked device of the
    /// user had that name; [`StoreError::NotFound`] for an unknown user; database errors.
    async fn add_device(
        &self,
        user_id: UserId,
        name: &DeviceName,
        token_hash: &TokenHash,
        now_ms: i64,
    ) -> Result<Device, StoreError>;

    /// Every device of the user, revoked ones too, sorted by name.
    ///
    /// # Errors
    /// Database errors.
    async fn devices(&self, user_id: UserId) -> Result<Vec<DeviceRecord>, StoreError>;

    /// Records that a server took the device's token at `now_ms`, from `address`; an older
    /// time than the one recorded, and a revoked device, change nothing. The one write that
    /// serialises on no user: a single `UPDATE` of the device's row. Servers call it at most
    /// once a minute per device, never once per request.
    ///
    /// # Errors
    /// Database errors.
    async fn seen_device(
        &self,
        device_id: DeviceId,
        now_ms: i64,
        address: &str,
    ) -> Result<(), StoreError>;

    /// Revokes the user's device `name` at `now_ms`: from this commit on its token is refused
    /// (its hash is replaced by random bytes no token hashes to), on every server, while its
    /// row, and so its name, stays; the locks it holds are released.
    ///
    /// # Errors
    /// Database errors; [`StoreError::NotFound`] for an unknown user.
    async fn revoke_device(
        &self,
        user_id: UserId,
        name: &DeviceName,
        now_ms: i64,
    ) -> Result<Revocation, StoreError>;

    /// Every account with its device count, creation time, usage and quota, by name.
    ///
    /// # Errors
    /// Database errors.
    async fn accounts(&self) -> Result<Vec<Account>, StoreError>;

    /// Renames a user; its namespace, devices and tokens stay as they are.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] when the name is taken; [`StoreError::NotFound`] for an
    /// unknown user; database errors.
    async fn rename_user(&self, user_id: UserId, name: &UserName) -> Result<(), StoreError>;

    /// Removes a user at `now_ms`: its devices (their tokens are refused from this commit on),
    /// its tree, journal, locks and wanted list, in one transaction serialised on the user, so
    /// no request of another server writes for it afterwards. Its chunks are the caller's to
    /// delete (see [`ChunkStore::delete_all`]); the account stays listed by
    /// [`MetaStore::removed_users`] until [`MetaStore::content_gone`]. Its name is free again;
    /// its id and namespace are never reused.
    ///
    /// # Errors
    /// Database errors; [`StoreError::NotFound`] for an unknown user.
    async fn remove_user(&self, user_id: UserId, now_ms: i64) -> Result<(), StoreError>;

    /// The removed accounts whose content may still be in the chunk store: chunks uploaded by
    /// requests that were under way when the account was removed may arrive later, so garbage
    /// collection looks again (see [`gc::collect`]).
    ///
    /// # Errors
    /// Database errors.
    async fn removed_users(&self) -> Result<Vec<RemovedUser>, StoreError>;

    /// Records that the removed account's content is all gone, at `now_ms`: it is no longer
    /// listed by [`MetaStore::removed_users`].
    ///
    /// # Errors
    /// Database errors.
    async fn content_gone(&self, user_id: UserId, now_ms: i64) -> Result<(), StoreError>;

    /// Finds the device holding the token with this hash.
    ///
    /// # Errors
    /// Database errors only; an unknown token is `Ok(None)`.
    async fn authenticate(&self, token_hash: &TokenHash) -> Result<Option<Principal>, StoreError>;

    /// How many users exist.
    ///
    /// # Errors
    /// Database errors.
    async fn count_users(&self) -> Result<u64, StoreError>;

    /// Every user, by name.
    ///
    /// # Errors
    /// Database errors.
    async fn users(&self) -> Result<Vec<User>, StoreError>;

    /// The tag of the user's journal position `cursor` (all zero for cursor 0), or `None` when
    /// the journal does not reach it.
    ///
    /// # Errors
    /// Database errors; [`StoreError::NotFound`] for an unknown user.
    async fn journal_tag(
        &self,
        user_id: UserId,
        cursor: Cursor,
    ) -> Result<Option<JournalTag>, StoreError>;

    /// The chunks the server asks the user's devices to upload again (lost or found corrupt),
    /// at most `limit`.
    ///
    /// # Errors
    /// Database errors.
    async fn wanted_chunks(
        &self,
        user_id: UserId,
        limit: usize,
    ) -> Result<Vec<ChunkHash>, StoreError>;

    /// Adds chunks to the wanted list (see [`MetaStore::wanted_chunks`]); returns how many were
    /// not on it yet.
    ///
    /// # Errors
    /// Database errors.
    async fn want_chunks(&self, user_id: UserId, hashes: &[ChunkHash])
        -> Result<usize, StoreError>;

    /// Drops chunks from the wanted list (they are stored again).
    ///
    /// # Errors
    /// Database errors.
    async fn unwant_chunks(&self, user_id: UserId, hashes: &[ChunkHash]) -> Result<(), StoreError>;

    /// Adds a part to an upload stream of `device_id` by the rules of [`streams`]: its position,
    /// or why it was refused.
    ///
    /// # Errors
    /// Database errors.
    async fn add_stream_part(
        &self,
        user_id: UserId,
        device_id: DeviceId,
        part: StreamPart,
        now_ms: i64,
    ) -> Result<Result<u64, streams::PartRefused>, StoreError>;

    /// The parts after `after` of the live upload streams of the user's devices other than
    /// `device_id`, at most `limit`, with the names of those streams.
    ///
    /// # Errors
    /// Database errors.
    async fn stream_parts(
        &self,
        user_id: UserId,
        device_id: DeviceId,
        after: u64,
        limit: usize,
        now_ms: i64,
    ) -> Result<streams::StreamsPage, StoreError>;

    /// Ends the upload streams of `paths` by `device_id` (it committed them).
    ///
    /// # Errors
    /// Database errors.
    async fn end_streams(
        &self,
        user_id: UserId,
        device_id: DeviceId,
        paths: Vec<RelPath>,
    ) -> Result<(), StoreError>;

    /// The WebDAV dead properties of a node (see [`DeadProp`]), sorted by namespace and name.
    ///
    /// # Errors
    /// Database errors.
    async fn dead_props(
        &self,
        user_id: UserId,
        node_id: NodeId,
    ) -> Result<Vec<DeadProp>, StoreError>;

    /// Sets (`true`) or removes (`false`) dead properties of a node, all in one transaction.
    ///
    /// # Errors
    /// Database errors.
    async fn patch_dead_props(
        &self,
        user_id: UserId,
        node_id: NodeId,
        patch: Vec<(bool, DeadProp)>,
    ) -> Result<(), StoreError>;

    /// Removes every dead property of a node (it was deleted).
    ///
    /// # Errors
    /// Database errors.
    async fn remove_dead_props(&self, user_id: UserId, node_id: NodeId) -> Result<(), StoreError>;

    /// Every live node of a user, the locks in force at `now_ms`, and the cursor they reflect,
    /// read in one snapshot.
    ///
    /// # Errors
    /// Database errors; [`StoreError::NotFound`] for an unknown user.
    async fn tree(&self, user_id: UserId, now_ms: i64) -> Result<Tree, StoreError>;

    /// Up to `limit` changes after `since`, oldest first.
    ///
    /// When `since` is ahead of the journal the page is empty with `reset` set.
    ///
    /// # Errors
    /// Database errors; [`StoreError::NotFound`] for an unknown user.
    async fn changes_since(
        &self,
        user_id: UserId,
        since: Cursor,
        limit: usize,
    ) -> Result<ChangesPage, StoreError>;

    /// The position of the user's last change (0 before the first).
    ///
    /// # Errors
    /// Database errors; [`StoreError::NotFound`] for an unknown user.
    async fn current_cursor(&self, user_id: UserId) -> Result<Cursor, StoreError>;

    /// Applies `ops` in order in one transaction, each on its own (see [`ops::apply_batch`]).
    ///
    /// `chunk_lens` are the chunks named by the ops that the chunk store holds, with their
    /// lengths; a `PutFile` naming another chunk, or a stored chunk with another length, fails
    /// as [`OpOutcome::Invalid`]. Prefer [`apply_ops`], which computes them. `now_ms` decides
    /// which locks are in force: an op on a path another device holds is [`OpOutcome::Locked`].
    /// `gc_epoch` is the user's [`MetaStore::gc_epoch`] read before `chunk_lens` was: when a
    /// garbage collection run ended since, nothing is applied and the answer is
    /// [`StoreError::GcRaced`] (see [`gc`]).
    ///
    /// # Errors
    /// Database errors, which undo the whole batch; op failures are [`OpOutcome`]s.
    async fn apply_ops(
        &self,
        user_id: UserId,
        device: &DeviceName,
        ops: Vec<Op>,
        chunk_lens: ChunkLens,
        now_ms: i64,
        gc_epoch: Option<u64>,
    ) -> Result<BatchOutcome, StoreError>;

    /// Takes a lock on `path` for `device` at `now_ms`, lasting `ttl_secs` or until released;
    /// renews it when `device` holds it already (see [`locks::take_lock`]).
    ///
    /// Refusals (a bad TTL, nothing there, held by another device) are [`LockOutcome`]s; of N devices racing for one path, exactly one gets
    /// [`LockOutcome::Done`].
    ///
    /// # Errors
    /// Database errors; [`StoreError::NotFound`] for an unknown user.
    async fn take_lock(
        &self,
        user_id: UserId,
        device: &DeviceName,
        path: &RelPath,
        ttl_secs: Option<u64>,
        now_ms: i64,
    ) -> Result<LockOutcome, StoreError>;

    /// Releases `device`'s lock on `path`, or with `force` breaks another device's lock there
    /// (see [`locks::release_lock`]).
    ///
    /// Refusals (no lock in force, held by another device without `force`) are
    /// [`LockOutcome`]s.
    ///
    /// # Errors
    /// Database errors; [`StoreError::NotFound`] for an unknown user.
    async fn release_lock(
        &self,
        user_id: UserId,
        device: &DeviceName,
        path: &RelPath,
        force: bool,
        now_ms: i64,
    ) -> Result<LockOutcome, StoreError>;

    /// Every lock of the user in force at `now_ms`, sorted by path.
    ///
    /// # Errors
    /// Database errors.
    async fn locks(&self, user_id: UserId, now_ms: i64) -> Result<Vec<LockInfo>, StoreError>;

    /// Every kept version of the file at `path` (and of the files that were at `path`
    /// before), oldest first, with the time before which history is no longer kept.
    ///
    /// # Errors
    /// Database errors; [`StoreError::NotFound`] for an unknown user.
    async fn history(&self, user_id: UserId, path: &RelPath) -> Result<History, StoreError>;

    /// The deleted files still kept that match `query`, newest deletion first (see
    /// [`history::trash`]).
    ///
    /// # Errors
    /// Database errors; [`StoreError::NotFound`] for an unknown user.
    async fn trash(&self, user_id: UserId, query: &TrashQuery) -> Result<Trash, StoreError>;

    /// What restoring `target` takes, as conditional ops (see [`history::plan_restore`]),
    /// read in one snapshot; `Err(message)` when the request cannot be met (a revision that is
    /// no version of the path, a moment older than the history kept).
    ///
    /// # Errors
    /// Database errors; [`StoreError::NotFound`] for an unknown user.
    async fn plan_restore(
        &self,
        user_id: UserId,
        target: &RestoreTarget,
    ) -> Result<Result<RestorePlan, String>, StoreError>;

    /// Compacts the user's journal at `now_ms` (see [`retention`]); with `dry_run`, only
    /// counts the node rows it would remove.
    ///
    /// # Errors
    /// Database errors; [`StoreError::NotFound`] for an unknown user.
    async fn compact(
        &self,
        user_id: UserId,
        now_ms: i64,
        retention: Retention,
        dry_run: bool,
    ) -> Result<Compaction, StoreError>;

    /// Step 2 of the garbage collection run `run` ([`gc::doom`]): dooms and returns the
    /// chunks of `listed` no kept row names, older than `grace_ms`.
    ///
    /// # Errors
    /// Database errors.
    async fn gc_doom(
        &self,
        user_id: UserId,
        listed: &[StoredChunk],
        now_ms: i64,
        grace_ms: i64,
        run: i64,
    ) -> Result<Vec<StoredChunk>, StoreError>;

    /// What a run under `policy` would doom now, after compacting the journal, changing
    /// nothing (a dry run).
    ///
    /// # Errors
    /// Database errors.
    async fn gc_unreferenced(
        &self,
        user_id: UserId,
        listed: &[StoredChunk],
        now_ms: i64,
        policy: GcPolicy,
    ) -> Result<Vec<StoredChunk>, StoreError>;

    /// Step 3 of the run `run`, once its doomed chunks are deleted ([`gc::finish`]).
    ///
    /// # Errors
    /// Database errors.
    async fn gc_finish(&self, user_id: UserId, run: i64) -> Result<(), StoreError>;

    /// The garbage collection runs that have doomed chunks and not finished, by id (their
    /// start time), each with the chunks it doomed.
    ///
    /// # Errors
    /// Database errors.
    async fn gc_runs(&self, user_id: UserId) -> Result<Vec<(i64, Vec<ChunkHash>)>, StoreError>;

    /// The user's garbage collection epoch (see [`gc`]).
    ///
    /// # Errors
    /// Database errors; [`StoreError::NotFound`] for an unknown user.
    async fn gc_epoch(&self, user_id: UserId) -> Result<u64, StoreError>;

    /// The user's usage (current files, history, trash) and quota, read in one snapshot.
    ///
    /// # Errors
    /// Database errors; [`StoreError::NotFound`] for an unknown user.
    async fn usage(&self, user_id: UserId) -> Result<UsageResponse, StoreError>;

    /// Sets or lifts (`None`) the user's quota in bytes.
    ///
    /// # Errors
    /// Database errors; [`StoreError::NotFound`] for an unknown user.
    async fn set_quota(&self, user_id: UserId, quota: Option<u64>) -> Result<(), StoreError>;

    /// Sets a user's web password (an argon2 PHC string, hashed by the caller), or with `None`
    /// turns web sign-in off; makes sure the user's [`WEB_DEVICE`] exists and is not revoked
    /// (setting a password is the operator's act), and ends all the user's sessions.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown user; database errors.
    async fn set_password(
        &self,
        user_id: UserId,
        phc: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError>;

    /// The user of that name and their password hash, for a sign-in.
    ///
    /// # Errors
    /// Database errors.
    async fn login_record(
        &self,
        name: &UserName,
    ) -> Result<Option<(User, Option<String>)>, StoreError>;

    /// A user by id (`None` for a removed or unknown one).
    ///
    /// # Errors
    /// Database errors.
    async fn user_by_id(&self, user_id: UserId) -> Result<Option<User>, StoreError>;

    /// Stores a new session (and drops the user's expired ones).
    ///
    /// # Errors
    /// Database errors.
    async fn create_session(&self, session: &NewSession) -> Result<(), StoreError>;

    /// The session whose cookie hashes to `id_hash`, if it has not expired at `now_ms`.
    ///
    /// # Errors
    /// Database errors.
    async fn session(
        &self,
        id_hash: &TokenHash,
        now_ms: i64,
    ) -> Result<Option<Session>, StoreError>;

    /// Ends a session (signing out); ending one that is gone succeeds.
    ///
    /// # Errors
    /// Database errors.
    async fn end_session(&self, id_hash: &TokenHash) -> Result<(), StoreError>;

    /// Stores a new share link.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] when the id is taken; database errors.
    async fn create_share(&self, share: &ShareRecord) -> Result<(), StoreError>;

    /// The user's share links, newest first.
    ///
    /// # Errors
    /// Database errors.
    async fn shares(&self, user_id: UserId) -> Result<Vec<ShareRecord>, StoreError>;

    /// The share link `id`, of any user (its page needs no account).
    ///
    /// # Errors
    /// Database errors.
    async fn share(&self, id: &ShareId) -> Result<Option<ShareRecord>, StoreError>;

    /// Revokes the user's share link `id`; `false` when the user has no such link. Revoking
    /// one already revoked keeps its first time.
    ///
    /// # Errors
    /// Database errors.
    async fn revoke_share(
        &self,
        user_id: UserId,
        id: &ShareId,
        now_ms: i64,
    ) -> Result<bool, StoreError>;

    /// The current node with that id, if any.
    ///
    /// # Errors
    /// Database errors.
    async fn node(
        &self,
        user_id: UserId,
        node_id: NodeId,
    ) -> Result<Option<RemoteEntry>, StoreError>;

    /// The current node at `path`, if any.
    ///
    /// # Errors
    /// Database errors.
    async fn entry(
        &self,
        user_id: UserId,
        path: &RelPath,
    ) -> Result<Option<RemoteEntry>, StoreError>;

    /// Every current node strictly under `dir` (the whole tree for `None`), in path order: one
    /// range query over the `(user_id, path)` index.
    ///
    /// # Errors
    /// Database errors.
    async fn entries_under(
        &self,
        user_id: UserId,
        dir: Option<&RelPath>,
    ) -> Result<Vec<RemoteEntry>, StoreError>;

    /// Checks that the store can be reached right now, as cheaply as it can (`SELECT 1` on
    /// PostgreSQL); a store inside this process (SQLite) always can.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be reached.
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Content-addressed chunk bytes, per namespace: a user can only read chunks it stored itself,
/// and an account re-created under the same name (a new [`NamespaceId`]) none of the old one's.
#[async_trait]
pub trait ChunkStore: Send + Sync {
    /// Stores a chunk after checking that `bytes` hash to `hash`: from then on [`missing`] does
    /// not report it and [`get`] returns it; it is durable at once or, in a backend that stages
    /// uploads, once [`durable_chunk_lens`] names it.
    ///
    /// Storing a chunk that is already there succeeds without writing.
    ///
    /// [`missing`]: ChunkStore::missing
    /// [`get`]: ChunkStore::get
    /// [`durable_chunk_lens`]: ChunkStore::durable_chunk_lens
    ///
    /// # Errors
    /// [`StoreError::HashMismatch`] (nothing is written), [`StoreError::ChunkTooLarge`],
    /// [`StoreError::Full`], IO errors.
    async fn put(
        &self,
        owner: NamespaceId,
        hash: &ChunkHash,
        bytes: Bytes,
    ) -> Result<(), StoreError>;

    /// The hashes among `hashes` this namespace has not stored, in the order given, without
    /// repeats.
    ///
    /// # Errors
    /// IO errors.
    async fn missing(
        &self,
        owner: NamespaceId,
        hashes: &[ChunkHash],
    ) -> Result<Vec<ChunkHash>, StoreError>;

    /// The bytes of a chunk as stored, not hashed again: every chunk was verified when it was
    /// received ([`ChunkStore::put`] stores nothing that does not hash to its name) and is
    /// trusted by name from then on. Damage on the storage since is what
    /// [`ChunkStore::scrub`] finds, and what [`ChunkStore::get_verified`] catches for a reader
    /// that cannot check the bytes itself (clients check every chunk they fetch).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when this namespace has no such chunk; IO errors.
    async fn get(&self, owner: NamespaceId, hash: &ChunkHash) -> Result<Bytes, StoreError>;

    /// The bytes of a chunk, verified against its hash. A chunk whose bytes no longer match
    /// is moved aside (kept for inspection, never served) and from then on reported missing,
    /// so an upload of the right bytes replaces it.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when this namespace has no such chunk;
    /// [`StoreError::Corrupt`] when it failed verification (and was moved aside); IO errors.
    async fn get_verified(&self, owner: NamespaceId, hash: &ChunkHash)
        -> Result<Bytes, StoreError>;

    /// Stores several chunks; like [`ChunkStore::put`] for each, but a backend may handle the
    /// batch at once (several requests in flight, one pass over the disk).
    ///
    /// # Errors
    /// As [`ChunkStore::put`]; other chunks of the batch may have been stored (before the
    /// failing one, or, for a backend that sends several at once, after it too).
    async fn put_batch(
        &self,
        owner: NamespaceId,
        chunks: Vec<(ChunkHash, Bytes)>,
    ) -> Result<(), StoreError> {
        for (hash, bytes) in chunks {
            self.put(owner, &hash, bytes).await?;
        }
        Ok(())
    }

    /// The lengths of the chunks among `hashes` that this namespace has stored, each made
    /// durable under its name first; a chunk that is not stored is absent. Called before a
    /// metadata commit names the chunks, so that none it names can be lost.
    ///
    /// # Errors
    /// IO errors.
    async fn durable_chunk_lens(
        &self,
        owner: NamespaceId,
        hashes: &[ChunkHash],
    ) -> Result<ChunkLens, StoreError>;

    /// Every chunk this namespace has stored (durably: not staged uploads), with its length and
    /// when it was stored; for garbage collection ([`gc`]).
    ///
    /// # Errors
    /// IO errors.
    async fn list(&self, owner: NamespaceId) -> Result<Vec<StoredChunk>, StoreError>;

    /// Deletes chunks of this namespace (those not stored are skipped); returns the bytes
    /// freed. Only garbage collection calls it, for chunks it doomed (see [`gc`]).
    ///
    /// # Errors
    /// IO errors; chunks before the failing one may be deleted.
    async fn delete(&self, owner: NamespaceId, chunks: &[StoredChunk]) -> Result<u64, StoreError>;

    /// Deletes every chunk of the namespace (a removed account's), and on disk its
    /// directories; returns how many chunks it deleted and their bytes.
    ///
    /// # Errors
    /// IO errors; chunks before the failing one may be deleted.
    async fn delete_all(&self, owner: NamespaceId) -> Result<(u64, u64), StoreError> {
        let listed = self.list(owner).await?;
        let freed = self.delete(owner, &listed).await?;
        Ok((listed.len() as u64, freed))
    }

    /// Whether the store holds any chunk of any namespace (a store that does, beside an empty
    /// metadata database, means the database was lost or is the wrong one).
    ///
    /// # Errors
    /// IO errors.
    async fn holds_content(&self) -> Result<bool, StoreError>;

    /// Reads and verifies every stored chunk, moves the bad ones aside (as
    /// [`ChunkStore::get_verified`] does) and reports them; `progress` is called with the running counts.
    ///
    /// # Errors
    /// IO errors that stop the walk; a chunk that cannot be read is reported bad.
    async fn scrub(
        &self,
        progress: &(dyn for<'r> Fn(&'r ScrubReport) + Send + Sync),
    ) -> Result<ScrubReport, StoreError>;
}

/// What [`ChunkStore::scrub`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Chunks read and verified.
    pub checked: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Chunks that failed verification (moved aside), with where they were moved.
    pub bad: Vec<BadChunk>,
}

impl ScrubReport {
    /// Counts the verified read of one chunk: its bytes, or it as bad when it failed
    /// verification. Returns whether it was checked (a chunk gone meanwhile is not).
    ///
    /// # Errors
    /// Any other failure of the read, which stops the scrub.
    pub fn record(
        &mut self,
        owner: NamespaceId,
        hash: ChunkHash,
        read: Result<Bytes, StoreError>,
    ) -> Result<bool, StoreError> {
        match read {
            Ok(bytes) => self.bytes += bytes.len() as u64,
            Err(StoreError::Corrupt(detail)) => self.bad.push(BadChunk {
                owner,
                hash,
                detail,
            }),
            Err(StoreError::NotFound(_)) => return Ok(false),
            Err(err) => return Err(err),
        }
        self.checked += 1;
        Ok(true)
    }
}

/// A chunk that failed verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadChunk {
    pub owner: NamespaceId,
    pub hash: ChunkHash,
    /// What was wrong and where the bytes were moved.
    pub detail: String,
}

/// Applies a batch of ops: makes the chunks the `PutFile`s name durable (and learns which ones
/// it holds, with their lengths), then calls [`MetaStore::apply_ops`].
///
/// Asking first is race-free with garbage collection: the user's `gc_epoch` is read before the
/// chunk store is asked, and a run that ended in between makes the commit start again (see
/// [`gc`]).
/// `now_ms` decides which locks are in force.
///
/// # Errors
/// As [`MetaStore::apply_ops`] and [`ChunkStore::durable_chunk_lens`].
pub async fn apply_ops(
    meta_store: &dyn MetaStore,
    chunk_store: &dyn ChunkStore,
    principal: &Principal,
    ops: Vec<Op>,
    now_ms: i64,
) -> Result<BatchOutcome, StoreError> {
    let mut named: Vec<ChunkHash> = Vec::new();
    for op in &ops {
        if let Op::PutFile { chunks, .. } = op {
            named.extend(chunks.iter().map(|chunk| chunk.hash));
        }
    }
    if named.is_empty() {
        return meta_store
            .apply_ops(
                principal.user_id,
                &principal.device_name,
                ops,
                ChunkLens::new(),
                now_ms,
                None,
            )
            .await;
    }
    let mut tries = 0;
    loop {
        // The epoch first, then the chunks: see `gc` for why this order is safe.
        let epoch = meta_store.gc_epoch(principal.user_id).await?;
        let chunk_lens = chunk_store
            .durable_chunk_lens(principal.namespace, &named)
            .await?;
        match meta_store
            .apply_ops(
                principal.user_id,
                &principal.device_name,
                ops.clone(),
                chunk_lens,
                now_ms,
                Some(epoch),
            )
            .await
        {
            Err(StoreError::GcRaced) if tries < 5 => tries += 1,
            other => return other,
        }
    }
}

/// The error for a user id that names no account (never created, or removed); the message
/// holds no id, as it may reach a client.
pub(crate) fn unknown_user() -> StoreError {
    StoreError::NotFound("account".to_owned())
}

/// A short description of a path for messages.
pub(crate) fn quoted(path: &RelPath) -> String {
    format!("{:?}", path.as_str())
}

/// The name a removed user's row keeps: it starts with a '.', which no [`UserName`] may, so the
/// name is free for a new account and no lookup by name finds the old one.
pub(crate) fn retired_user_name(user_id: UserId) -> String {
    format!(".removed-{user_id}")
}
