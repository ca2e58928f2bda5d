//! The simulated server: the real op rules of `syncstore-store` over its in-memory store.
//!
//! [`syncstore_store::ops::apply_batch`] holds every rule of the server (preconditions, implicit
//! parents, one journal row per changed node, the cursor), written against the synchronous
//! `Txn` trait. The store's [`MemTxn`] implements that trait on plain maps (it is the in-memory
//! backend the store's conformance suite runs on), so the simulation runs the very code the
//! SQLite backend runs, without SQLite: no temp dirs, no IO, no async, and fully
//! deterministic. Savepoints are snapshots.

use std::collections::{BTreeMap, HashMap};
use syncstore_proto::{
    Change, ChunkHash, Cursor, DeviceName, EntryKind, JournalTag, NamespaceId, Op, OpsResponse,
    RelPath, RemoteEntry, UserName,
};
use syncstore_store::mem::{MemTxn, MemUser};
use syncstore_store::meta::MetaTxn;
use syncstore_store::ops::apply_batch;
use syncstore_store::{ChunkLens, UserId};

/// The one user every simulated device belongs to: the first of a fresh store.
const USER: UserId = UserId(1);

/// The server clock the op rules see. The simulation takes no locks (yet), so no lock can be in
/// force and any fixed time will do.
const NOW_MS: i64 = 0;

/// The node tree, journal and chunk bytes of one user.
pub struct Server {
    meta: MemTxn,
    chunks: HashMap<ChunkHash, Vec<u8>>,
    /// Copies of the metadata taken now and then, as an administrator's nightly backups.
    backups: Vec<MemTxn>,
    /// Bumped by every restore and reset, so positions journalled after one get new tags.
    epoch: u64,
}

impl Default for Server {
    fn default() -> Server {
        Server {
            meta: new_meta(0, NamespaceId::default()),
            chunks: HashMap::new(),
            backups: Vec::new(),
            epoch: 0,
        }
    }
}

/// A fresh store of `epoch` holding only [`USER`], with `namespace`.
fn new_meta(epoch: u64, namespace: NamespaceId) -> MemTxn {
    let mut meta = MemTxn::with_epoch(epoch);
    let name = UserName::new("sim").expect("a valid user name");
    let user = meta
        .insert_user(&name, namespace)
        .expect("a fresh store takes any user");
    assert_eq!(user.id, USER, "the first user of a fresh store");
    meta
}

impl Server {
    /// The simulated user's account, tree and journal.
    fn user(&self) -> &MemUser {
        self.meta
            .user(USER)
            .expect("the store holds the sim's user")
    }

    /// `POST /api/v1/ops`: applies `ops` in order, each on its own; none when the journal no
    /// longer holds `known` (as the real handler).
    pub fn apply_ops(
        &mut self,
        device: &DeviceName,
        ops: &[Op],
        known: Option<(Cursor, JournalTag)>,
    ) -> OpsResponse {
        if let Some((cursor, tag)) = known {
            if self.tag_at(cursor) != Some(tag) {
                let refused = syncstore_proto::OpResult {
                    status: 409,
                    entries: Vec::new(),
                    message: "the journal diverged".to_owned(),
                };
                return OpsResponse {
                    results: vec![refused; ops.len()],
                    cursor: self.cursor(),
                    cursor_tag: self.tag_at(self.cursor()).unwrap_or_default(),
                    diverged: true,
                };
            }
        }
        let chunk_lens: ChunkLens = ops
            .iter()
            .filter_map(|op| match op {
                Op::PutFile { chunks, .. } => Some(chunks.iter().map(|c| c.hash)),
                _ => None,
            })
            .flatten()
            .filter_map(|hash| {
                self.chunks
                    .get(&hash)
                    .map(|bytes| (hash, bytes.len() as u32))
            })
            .collect();
        // MemTxn never fails, so neither does the batch.
        let outcome = apply_batch(&mut self.meta, USER, device, ops, &chunk_lens, NOW_MS)
            .expect("the in-memory txn cannot fail");
        OpsResponse {
            results: outcome
                .outcomes
                .into_iter()
                .map(syncstore_server::op_result)
                .collect(),
            cursor: outcome.cursor,
            cursor_tag: outcome.cursor_tag,
            diverged: false,
        }
    }

    /// The user's namespace (a reset draws another one).
    pub fn namespace(&self) -> NamespaceId {
        self.user().namespace()
    }

    /// The tag of journal position `cursor`, or `None` when the journal does not reach it.
    pub fn tag_at(&self, cursor: Cursor) -> Option<JournalTag> {
        self.user().tag_at(cursor)
    }

    /// Takes a backup of the metadata (chunks are not part of it, as with a database dump).
    pub fn back_up(&mut self) {
        self.backups.push(self.meta.clone());
    }

    /// Restores the metadata from backup `idx` (of [`Server::n_backups`]): everything journalled
    /// since is lost; chunks stay. Returns the cursor it went back to.
    pub fn restore(&mut self, idx: usize) -> Cursor {
        self.epoch += 1;
        self.meta = self.backups[idx].clone();
        self.meta.set_epoch(self.epoch);
        self.backups.truncate(idx + 1);
        self.cursor()
    }

    /// How many backups there are.
    pub fn n_backups(&self) -> usize {
        self.backups.len()
    }

    /// The metadata is lost and the account re-created: an empty tree, a new namespace, and no
    /// access to the old account's chunks.
    pub fn reset(&mut self) {
        self.epoch += 1;
        let namespace = NamespaceId(
            *blake3::hash(&self.epoch.to_le_bytes())
                .as_bytes()
                .first_chunk()
                .expect("16 of 32 bytes"),
        );
        self.meta = new_meta(self.epoch, namespace);
        self.chunks.clear();
        self.backups.clear();
    }

    /// `POST /api/v1/chunks/upload`: stores chunk bytes (already present ones are kept).
    pub fn put_chunk(&mut self, hash: ChunkHash, bytes: Vec<u8>) {
        assert_eq!(
            ChunkHash(*blake3::hash(&bytes).as_bytes()),
            hash,
            "the sim uploads honest chunks"
        );
        self.chunks.entry(hash).or_insert(bytes);
    }

    /// `POST /api/v1/chunks/download`, for one file: its bytes, reassembled from its chunks;
    /// `None` (a 404) when the namespace has no such chunk, as after a reset for an entry a
    /// device learned of before it.
    pub fn file_bytes(&self, entry: &RemoteEntry) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for chunk in &entry.chunks {
            out.extend_from_slice(self.chunks.get(&chunk.hash)?);
        }
        Some(out)
    }

    /// `GET /api/v1/tree`: every live node, sorted by path, and the cursor it reflects.
    pub fn tree(&self) -> (Cursor, Vec<RemoteEntry>) {
        let user = self.user();
        (user.cursor(), user.nodes().values().cloned().collect())
    }

    /// `GET /api/v1/changes?since=`: every change after `since`, oldest first.
    pub fn changes_since(&self, since: Cursor) -> &[Change] {
        // The journal holds exactly one row per cursor value, starting at 1.
        let journal = self.user().journal();
        let start = (since.0 as usize).min(journal.len());
        &journal[start..]
    }

    /// The cursor of the last change.
    pub fn cursor(&self) -> Cursor {
        self.user().cursor()
    }

    /// The whole tree as path → (kind, bytes), for the final comparison.
    /// The executable bit of every file, for the final comparison.
    pub fn modes(&self) -> BTreeMap<RelPath, bool> {
        self.user()
            .nodes()
            .iter()
            .filter(|(_, e)| e.kind == EntryKind::File)
            .map(|(path, e)| (path.clone(), e.executable))
            .collect()
    }

    pub fn snapshot(&self) -> BTreeMap<RelPath, (EntryKind, Vec<u8>)> {
        self.user()
            .nodes()
            .iter()
            // PutFile refuses a chunk the server lacks, and chunks of a namespace are never
            // deleted: every live entry's chunks are there.
            .map(|(path, e)| {
                let bytes = self
                    .file_bytes(e)
                    .expect("a live entry's chunks are stored");
                (path.clone(), (e.kind, bytes))
            })
            .collect()
    }
}
