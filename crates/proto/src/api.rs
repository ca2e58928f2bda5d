//! Request and response bodies of the HTTP API (all JSON except the chunk packs, see `frame`).
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /api/v1/health` (no auth) | | [`Health`] |
//! | `GET /api/v1/whoami` | | [`WhoAmI`] |
//! | `GET /api/v1/tree` | | [`TreeResponse`] |
//! | `GET /api/v1/changes?since=C&timeout_ms=T` | | [`ChangesResponse`]; long-polls up to T ms for a change after C |
//! | `POST /api/v1/chunks/missing` | [`ChunkList`] | [`ChunkList`] of those the server lacks |
//! | `POST /api/v1/chunks/upload[?durable=true]` | chunk frames | [`UploadResponse`]; with `durable`, the chunks are durable under their names before the answer (a repair upload, which no commit follows) |
//! | `POST /api/v1/chunks/download` | [`ChunkList`] | chunk frames, in the order asked |
//! | `POST /api/v1/chunks/signature` | [`DeltaBases`] | the rsync signature of the bases' bytes, concatenated (octets) |
//! | `POST /api/v1/chunks/patch?target=H&bases=H,H` | an rsync delta | [`UploadResponse`]: chunk `target`, made from the bases and the delta, is stored; 422 when it does not hash to `target` |
//! | `POST /api/v1/chunks/delta` | [`DeltaRequest`] | the rsync delta that makes `target` from the bases (octets) |
//! | `POST /api/v1/ops` | [`OpsRequest`] | [`OpsResponse`]: one [`OpResult`] per op, each with its own status |
//! | `POST /api/v1/locks` | [`LockRequest`] | [`LockInfo`]; 423 when another device holds it, 404 when the path does not exist |
//! | `POST /api/v1/locks/release` | [`UnlockRequest`] | [`LockInfo`] of the released lock; 423 when another device holds it and `force` is not set, 404 when there is no lock |
//! | `GET /api/v1/locks` | | [`LocksResponse`]: every lock in force |
//!
//! A lock covers its path and, for a directory, everything beneath. While it lasts, every op by
//! another device that would change a covered path is refused with status 423 and a message
//! "locked by DEVICE since TIME". Locks appear in the change journal ([`Change::Lock`],
//! [`Change::Unlock`]) so every device learns of them as fast as of file changes.
//!
//! Every call but health needs `Authorization: Bearer TOKEN`. Errors are [`ErrorBody`] with a 4xx/5xx status.

use crate::{
    ChunkHash, ContentHash, Cursor, DeviceName, JournalTag, NamespaceId, NodeId, RelPath, Revision,
    UserName,
};
use serde::{Deserialize, Serialize};

/// A file or a directory.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    File,
    Dir,
}

/// One chunk of a file version, in file order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct ChunkRef {
    pub hash: ChunkHash,
    pub len: u32,
}

impl ChunkRef {
    /// Bytes of one chunk reference in [`ChunkRef::encode_list`].
    pub const ENCODED_LEN: usize = 36;

    /// A chunk list as the stores keep it (the server's and the client's): 36 bytes per chunk,
    /// the hash then the length as a big-endian `u32`.
    pub fn encode_list(chunks: &[ChunkRef]) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunks.len() * Self::ENCODED_LEN);
        for chunk in chunks {
            out.extend_from_slice(&chunk.hash.0);
            out.extend_from_slice(&chunk.len.to_be_bytes());
        }
        out
    }

    /// The inverse of [`ChunkRef::encode_list`]; `None` when `bytes` ends in a partial record.
    pub fn decode_list(bytes: &[u8]) -> Option<Vec<ChunkRef>> {
        let records = bytes.chunks_exact(Self::ENCODED_LEN);
        if !records.remainder().is_empty() {
            return None;
        }
        Some(
            records
                .map(|record| {
                    let (hash, len) = record.split_at(32);
                    ChunkRef {
                        hash: ChunkHash(hash.try_into().expect("32 bytes")),
                        len: u32::from_be_bytes(len.try_into().expect("4 bytes")),
                    }
                })
                .collect(),
        )
    }
}

/// The server's current state of one node.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RemoteEntry {
    pub node_id: NodeId,
    pub path: RelPath,
    pub kind: EntryKind,
    /// The journal position of the last change to this node.
    pub rev: Revision,
    /// Bytes; 0 for directories.
    pub size: u64,
    /// Modification time the uploading device reported, milliseconds since the Unix epoch.
    pub mtime_ms: i64,
    /// The content hash ([`ContentHash::of_chunks`] of `chunks`); `None` for directories.
    pub hash: Option<ContentHash>,
    /// The content, in order; empty for directories and empty files.
    #[serde(default)]
    pub chunks: Vec<ChunkRef>,
    /// The device that made the last change.
    pub device: DeviceName,
    /// The file's executable bit (`st_mode & 0o111 != 0` on the device that set it); always
    /// false for directories. The only mode bit that is synced: owner, group, the other
    /// permission bits, setuid/setgid/sticky, ACLs and xattrs are not.
    #[serde(default)]
    pub executable: bool,
}

/// One entry of a user's change journal.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    /// The node now has this state (created, modified, or moved to `entry.path`).
    Upsert { cursor: Cursor, entry: RemoteEntry },
    /// The node is gone.
    Delete {
        cursor: Cursor,
        node_id: NodeId,
        path: RelPath,
        device: DeviceName,
    },
    /// A device took (or renewed, or moved with its path) a lock.
    Lock { cursor: Cursor, lock: LockInfo },
    /// A lock ended: released by its holder, broken with `--force` by `broken_by`, or dropped
    /// because the holder deleted the path. Expiry is not journalled: every party compares
    /// `expires_ms` with its clock.
    Unlock {
        cursor: Cursor,
        path: RelPath,
        /// The device that held the lock.
        device: DeviceName,
        /// The device that broke it, when it was not released by its holder.
        #[serde(default)]
        broken_by: Option<DeviceName>,
    },
}

impl Change {
    /// The journal position of this change.
    pub fn cursor(&self) -> Cursor {
        match self {
            Change::Upsert { cursor, .. }
            | Change::Delete { cursor, .. }
            | Change::Lock { cursor, .. }
            | Change::Unlock { cursor, .. } => *cursor,
        }
    }
}

/// `GET /api/v1/health`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub version: String,
}

/// `GET /api/v1/whoami`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WhoAmI {
    pub user: UserName,
    pub device: DeviceName,
    /// The user's namespace: a client whose base was made against another one must not read
    /// any difference as a deletion (see [`ChangesResponse::diverged`]).
    pub namespace: NamespaceId,
}

/// `GET /api/v1/tree`: every live node at `cursor`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TreeResponse {
    pub cursor: Cursor,
    /// The tag of the journal position `cursor`.
    pub cursor_tag: JournalTag,
    /// The user's namespace.
    pub namespace: NamespaceId,
    pub entries: Vec<RemoteEntry>,
    /// Every lock in force at `cursor`.
    #[serde(default)]
    pub locks: Vec<LockInfo>,
}

/// `GET /api/v1/changes` query string.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChangesQuery {
    pub since: Cursor,
    /// How long to wait for a change when there is none yet; 0 answers at once.
    #[serde(default)]
    pub timeout_ms: u64,
    /// The newest journal position the client knows of (from a page or an ops answer), to be
    /// checked: when the journal no longer holds it with this tag, the answer is `diverged`.
    #[serde(default)]
    pub known: Option<Cursor>,
    /// The tag of `known`, as the client was told it.
    #[serde(default)]
    pub known_tag: Option<JournalTag>,
    /// Answer without the changes themselves (`changes` empty, `peeked` counting them): a long
    /// poll that only wakes the pass that reads them, so each change crosses the network once
    /// per device, not twice. A server that does not know it sends the changes.
    #[serde(default)]
    pub peek: bool,
}

/// `GET /api/v1/changes`: the changes after `since`, oldest first.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChangesResponse {
    /// The position after the last change returned; pass it as `since` next time.
    pub cursor: Cursor,
    pub changes: Vec<Change>,
    /// More changes wait beyond this page: ask again at once.
    pub more: bool,
    /// The journal cannot answer from `since`: it is ahead of the journal, or behind the rows
    /// retention compacted away (the user's journal floor). Fetch the whole tree again.
    #[serde(default)]
    pub reset: bool,
    /// The tag of the journal position `cursor`.
    pub cursor_tag: JournalTag,
    /// The user's namespace.
    pub namespace: NamespaceId,
    /// The journal no longer holds the position `known` with the tag `known_tag` (the server's
    /// database was restored from a backup older than what the client saw, or replaced): the
    /// client's base cannot be trusted, and it must re-adopt its folder as on a first sync.
    #[serde(default)]
    pub diverged: bool,
    /// Chunks the server lost or found corrupt and asks devices that hold them to upload again.
    #[serde(default)]
    pub wanted: Vec<ChunkHash>,
    /// With `peek`: how many changes the page held (they are not in `changes`).
    #[serde(default)]
    pub peeked: usize,
}

/// A list of chunk hashes (`/chunks/missing` in both directions, `/chunks/download`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ChunkList {
    pub hashes: Vec<ChunkHash>,
}

/// The old chunks a delta is made against, their bytes concatenated in this order (at most
/// `syncstore_chunk::delta::MAX_BASES`): `POST /api/v1/chunks/signature`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DeltaBases {
    pub bases: Vec<ChunkHash>,
}

/// `POST /api/v1/chunks/delta`: the delta that makes chunk `target` from the old chunks `bases`
/// (which the asking device holds).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeltaRequest {
    pub target: ChunkHash,
    pub bases: Vec<ChunkHash>,
}

/// `POST /api/v1/chunks/patch` query string: `bases` comma-separated.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PatchQuery {
    pub target: ChunkHash,
    pub bases: String,
}

/// `POST /api/v1/chunks/upload` query string.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct UploadQuery {
    /// Make the chunks durable before answering (chunks the server asked for again: no commit
    /// will name them, which is what makes staged chunks durable otherwise).
    #[serde(default)]
    pub durable: bool,
}

/// `POST /api/v1/chunks/upload`: how many chunks were stored (already present ones count).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UploadResponse {
    pub stored: u64,
}

/// What a conditional write expects to find at its path.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precondition {
    /// Nothing may exist at the path.
    MustNotExist,
    /// The node at the path must still be at this revision.
    Rev(Revision),
}

/// One change a client asks for. Parent directories are created as needed.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Create or replace a file; every chunk must already be on the server.
    PutFile {
        path: RelPath,
        base: Precondition,
        size: u64,
        mtime_ms: i64,
        hash: ContentHash,
        chunks: Vec<ChunkRef>,
        /// The file's executable bit (see [`RemoteEntry::executable`]).
        #[serde(default)]
        executable: bool,
    },
    /// Change only the executable bit of an existing file at revision `base`: the node keeps
    /// its id and content and gets a new revision (journalled as an [`Change::Upsert`]).
    SetMode {
        path: RelPath,
        base: Revision,
        executable: bool,
    },
    /// Create a directory; succeeds without change when it already exists as a directory.
    MakeDir { path: RelPath, mtime_ms: i64 },
    /// Delete a file, or an empty directory.
    Delete { path: RelPath, base: Revision },
    /// Move a file or a whole directory; nothing may exist at `to`.
    Move {
        from: RelPath,
        to: RelPath,
        base: Revision,
    },
}

impl Op {
    /// The path the op is about (for a move, its source).
    pub fn path(&self) -> &RelPath {
        match self {
            Op::PutFile { path, .. }
            | Op::SetMode { path, .. }
            | Op::MakeDir { path, .. }
            | Op::Delete { path, .. } => path,
            Op::Move { from, .. } => from,
        }
    }
}

/// `POST /api/v1/ops`: applied in order, each on its own (one failing does not undo the others).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpsRequest {
    pub ops: Vec<Op>,
    /// The newest journal position the client knows of, and its tag (as for
    /// [`ChangesQuery::known`]): when the journal no longer holds it, no op is applied (each
    /// gets 409) and the answer is `diverged`, since the plan was made from a history the
    /// server lost and its revisions may name other changes now.
    #[serde(default)]
    pub known: Option<Cursor>,
    #[serde(default)]
    pub known_tag: Option<JournalTag>,
}

/// The outcome of one op.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpResult {
    /// An HTTP status: 200 applied, 409 precondition failed, 423 locked, 400/404 bad op.
    pub status: u16,
    /// What the op produced (new or moved nodes), or on 409 the node now at the path, if any.
    #[serde(default)]
    pub entries: Vec<RemoteEntry>,
    /// Why the op failed; empty when it succeeded.
    #[serde(default)]
    pub message: String,
}

/// `POST /api/v1/ops` answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpsResponse {
    pub results: Vec<OpResult>,
    /// The journal position after the last applied op.
    pub cursor: Cursor,
    /// The tag of the journal position `cursor`.
    pub cursor_tag: JournalTag,
    /// The journal no longer holds the request's `known` position: nothing was applied.
    #[serde(default)]
    pub diverged: bool,
}

/// Body of every error answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// A lock held by one device on a file, or on a directory and everything beneath it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LockInfo {
    pub path: RelPath,
    /// The device holding the lock.
    pub device: DeviceName,
    /// When it was taken, milliseconds since the Unix epoch (server clock).
    pub since_ms: i64,
    /// When it ends by itself; `None`: when unlocked.
    #[serde(default)]
    pub expires_ms: Option<i64>,
}

impl LockInfo {
    /// Whether the lock is still in force at `now_ms`.
    pub fn in_force(&self, now_ms: i64) -> bool {
        self.expires_ms.is_none_or(|end| end > now_ms)
    }

    /// Whether the lock covers `path` (the path itself, or beneath a locked directory).
    pub fn covers(&self, path: &RelPath) -> bool {
        *path == self.path || path.is_inside(&self.path)
    }
}

/// `POST /api/v1/locks`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LockRequest {
    pub path: RelPath,
    /// Seconds until the lock ends by itself; `None`: until unlocked. At most one year.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// The longest TTL a lock may have, in seconds (one year).
pub const MAX_LOCK_TTL_SECS: u64 = 366 * 24 * 3600;

/// `POST /api/v1/locks/release`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UnlockRequest {
    pub path: RelPath,
    /// Break another device's lock (any device of the namespace's owner may).
    #[serde(default)]
    pub force: bool,
}

/// `GET /api/v1/locks`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LocksResponse {
    pub locks: Vec<LockInfo>,
}
