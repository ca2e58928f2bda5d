//! The simulated server: the real op rules of `syncstore-store` over its in-memory store.
//!
//! [`syncstore_store::ops::apply_batch`] holds every rule of the server (preconditions, implicit
//! parents, one journal row per changed node, the cursor), written against the synchronous
//! `Txn` trait. The store's [`MemTxn`] implements that trait on plain maps (it is the in-memory
//! backend the store's conformance suite runs on), so the simulation runs the very code the
//! SQLite backend runs, without SQLite: no temp dirs, no IO, no async, and fully
//! deterministic. Savepoints are snapshots.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use syncstore_proto::{
    ChunkHash, Cursor, DeviceName, EntryKind, JournalTag, LockInfo, NamespaceId, Op, OpsResponse,
    RelPath, RemoteEntry, UserName,
};
use syncstore_store::mem::{MemTxn, MemUser};
use syncstore_store::meta::MetaTxn;
use syncstore_store::ops::apply_batch;
use syncstore_store::{ChangesPage, ChunkLens, LockOutcome, UserId};

/// The one user every simulated device belongs to: the first of a fresh store.
const USER: UserId = UserId(1);

/// The node tree, journal and chunk bytes of one user.
pub struct Server {
    meta: MemTxn,
    /// Durable chunks.
    chunks: HashMap<ChunkHash, Vec<u8>>,
    /// Uploaded chunks no commit named yet: a restart loses them (as the real chunk store's
    /// staged uploads), a commit that names them makes them durable first.
    staged: HashMap<ChunkHash, Vec<u8>>,
    /// Chunks a download found missing, which devices are asked for.
    wanted: BTreeSet<ChunkHash>,
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
            staged: HashMap::new(),
            wanted: BTreeSet::new(),
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
        now_ms: i64,
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
        // `make_durable` before the commit: staged chunks the batch names become durable.
        for op in ops {
            if let Op::PutFile { chunks, .. } = op {
                for chunk in chunks {
                    if let Some(bytes) = self.staged.remove(&chunk.hash) {
                        self.chunks.insert(chunk.hash, bytes);
                    }
                }
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
        let outcome = apply_batch(&mut self.meta, USER, device, ops, &chunk_lens, now_ms)
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
        self.staged.clear();
        self.wanted.clear();
        self.backups.clear();
    }

    /// `POST /api/v1/chunks/upload`: stores verified chunk bytes, staged unless `durable` (a
    /// repair); already present ones are kept.
    pub fn put_chunk(&mut self, hash: ChunkHash, bytes: Vec<u8>, durable: bool) {
        if self.chunks.contains_key(&hash) {
            return;
        }
        if durable {
            self.staged.remove(&hash);
            self.wanted.remove(&hash);
            self.chunks.insert(hash, bytes);
        } else {
            self.staged.entry(hash).or_insert(bytes);
        }
    }

    /// Chunks the server asks devices for.
    pub fn wanted(&self) -> Vec<ChunkHash> {
        self.wanted.iter().copied().collect()
    }

    /// Records chunks a download found missing.
    pub fn want(&mut self, hashes: &[ChunkHash]) {
        self.wanted.extend(hashes.iter().copied());
    }

    /// Whether the server has the chunk (durable or staged).
    pub fn has_chunk(&self, hash: &ChunkHash) -> bool {
        self.chunks.contains_key(hash) || self.staged.contains_key(hash)
    }

    /// A durable chunk's bytes.
    pub fn chunk(&self, hash: &ChunkHash) -> Option<&[u8]> {
        self.chunks.get(hash).map(Vec::as_slice)
    }

    /// The server process restarts: staged uploads are lost, the rest is as it was.
    pub fn restart(&mut self) {
        self.staged.clear();
    }

    /// `POST /api/v1/locks`: `device` takes (or renews) a lock.
    pub fn lock(
        &mut self,
        device: &DeviceName,
        path: &RelPath,
        ttl_secs: Option<u64>,
        now_ms: i64,
    ) -> bool {
        let outcome =
            syncstore_store::locks::take_lock(&mut self.meta, USER, device, path, ttl_secs, now_ms)
                .expect("the in-memory txn cannot fail");
        matches!(outcome, LockOutcome::Done { .. })
    }

    /// `POST /api/v1/unlock`: `device` releases its lock, or breaks another's with `force`.
    pub fn unlock(
        &mut self,
        device: &DeviceName,
        path: &RelPath,
        force: bool,
        now_ms: i64,
    ) -> bool {
        let outcome =
            syncstore_store::locks::release_lock(&mut self.meta, USER, device, path, force, now_ms)
                .expect("the in-memory txn cannot fail");
        matches!(outcome, LockOutcome::Done { .. })
    }

    /// Every lock in force.
    pub fn locks(&mut self, now_ms: i64) -> Vec<LockInfo> {
        syncstore_store::locks::locks_in_force(&mut self.meta, USER, now_ms)
            .expect("the in-memory txn cannot fail")
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

    /// `GET /api/v1/changes?since=`: up to `limit` changes after `since`, oldest first, as the
    /// real store cuts them (`reset` when `since` is ahead of the journal or behind what
    /// compaction removed).
    pub fn changes_page(&mut self, since: Cursor, limit: usize) -> ChangesPage {
        syncstore_store::meta::changes_page(&mut self.meta, USER, since, limit)
            .expect("the in-memory txn cannot fail")
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
