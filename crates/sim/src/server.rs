//! The simulated server: the real op rules of `syncstore-store` over an in-memory transaction.
//!
//! [`syncstore_store::ops::apply_batch`] holds every rule of the server (preconditions, implicit
//! parents, one journal row per changed node, the cursor), written against the synchronous
//! [`Txn`] trait. [`MemTxn`] implements that trait on plain maps, so the simulation runs the very
//! code the SQLite backend runs, without SQLite: no temp dirs, no IO, no async, and fully
//! deterministic. Savepoints are snapshots.

use std::collections::{BTreeMap, HashMap};
use syncstore_proto::{
    Change, ChunkHash, Cursor, DeviceName, EntryKind, JournalTag, LockInfo, NamespaceId, NodeId,
    Op, OpsResponse, RelPath, RemoteEntry,
};
use syncstore_store::ops::{apply_batch, Txn};
use syncstore_store::{ChunkLens, StoreError, UserId};

/// The one user every simulated device belongs to.
const USER: UserId = UserId(1);

/// The server clock the op rules see. The simulation takes no locks (yet), so no lock can be in
/// force and any fixed time will do.
const NOW_MS: i64 = 0;

/// The node tree, journal and chunk bytes of one user.
#[derive(Default)]
pub struct Server {
    meta: MemTxn,
    chunks: HashMap<ChunkHash, Vec<u8>>,
    /// Copies of the metadata taken now and then, as an administrator's nightly backups.
    backups: Vec<MemTxn>,
    /// Bumped by every restore and reset, so positions journalled after one get new tags.
    epoch: u64,
}

impl Server {
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
        self.meta.namespace
    }

    /// The tag of journal position `cursor`, or `None` when the journal does not reach it.
    pub fn tag_at(&self, cursor: Cursor) -> Option<JournalTag> {
        if cursor.0 == 0 {
            return Some(JournalTag::default());
        }
        self.meta.tags.get(cursor.0 as usize - 1).copied()
    }

    /// Takes a backup of the metadata (chunks are not part of it, as with a database dump).
    pub fn back_up(&mut self) {
        let mut copy = self.meta.clone();
        copy.savepoint = None;
        self.backups.push(copy);
    }

    /// Restores the metadata from backup `idx` (of [`Server::n_backups`]): everything journalled
    /// since is lost; chunks stay. Returns the cursor it went back to.
    pub fn restore(&mut self, idx: usize) -> Cursor {
        self.epoch += 1;
        self.meta = self.backups[idx].clone();
        self.meta.epoch = self.epoch;
        self.backups.truncate(idx + 1);
        Cursor(self.meta.cursor)
    }

    /// How many backups there are.
    pub fn n_backups(&self) -> usize {
        self.backups.len()
    }

    /// The metadata is lost and the account re-created: an empty tree, a new namespace, and no
    /// access to the old account's chunks.
    pub fn reset(&mut self) {
        self.epoch += 1;
        self.meta = MemTxn {
            epoch: self.epoch,
            namespace: NamespaceId(
                *blake3::hash(&self.epoch.to_le_bytes())
                    .as_bytes()
                    .first_chunk()
                    .expect("16 of 32 bytes"),
            ),
            ..MemTxn::default()
        };
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
        (
            Cursor(self.meta.cursor),
            self.meta.by_path.values().cloned().collect(),
        )
    }

    /// `GET /api/v1/changes?since=`: every change after `since`, oldest first.
    pub fn changes_since(&self, since: Cursor) -> &[Change] {
        // The journal holds exactly one row per cursor value, starting at 1.
        let start = (since.0 as usize).min(self.meta.journal.len());
        &self.meta.journal[start..]
    }

    /// The cursor of the last change.
    pub fn cursor(&self) -> Cursor {
        Cursor(self.meta.cursor)
    }

    /// The whole tree as path → (kind, bytes), for the final comparison.
    /// The executable bit of every file, for the final comparison.
    pub fn modes(&self) -> BTreeMap<RelPath, bool> {
        self.meta
            .by_path
            .iter()
            .filter(|(_, e)| e.kind == EntryKind::File)
            .map(|(path, e)| (path.clone(), e.executable))
            .collect()
    }

    pub fn snapshot(&self) -> BTreeMap<RelPath, (EntryKind, Vec<u8>)> {
        self.meta
            .by_path
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

/// The meta store of one user as plain maps; implements the store's [`Txn`].
#[derive(Default, Clone)]
struct MemTxn {
    by_path: BTreeMap<RelPath, RemoteEntry>,
    path_of: HashMap<NodeId, RelPath>,
    cursor: u64,
    next_node: u64,
    journal: Vec<Change>,
    /// The tag of each journal position, in cursor order.
    tags: Vec<JournalTag>,
    namespace: NamespaceId,
    /// Which life of the server this is (see [`Server::restore`]); part of every new tag.
    epoch: u64,
    locks: BTreeMap<RelPath, LockInfo>,
    /// The state at `begin_op`, restored by `end_op(false)` (a `SAVEPOINT`).
    savepoint: Option<Box<MemTxn>>,
}

impl Txn for MemTxn {
    fn begin_op(&mut self) -> Result<(), StoreError> {
        let mut copy = self.clone();
        copy.savepoint = None;
        self.savepoint = Some(Box::new(copy));
        Ok(())
    }

    fn end_op(&mut self, keep: bool) -> Result<(), StoreError> {
        let saved = self.savepoint.take().expect("end_op follows begin_op");
        if !keep {
            *self = *saved;
        }
        Ok(())
    }

    fn node_at(&mut self, _: UserId, path: &RelPath) -> Result<Option<RemoteEntry>, StoreError> {
        Ok(self.by_path.get(path).cloned())
    }

    fn descendants(&mut self, _: UserId, dir: &RelPath) -> Result<Vec<RemoteEntry>, StoreError> {
        Ok(self
            .by_path
            .values()
            .filter(|e| e.path.is_inside(dir))
            .cloned()
            .collect())
    }

    fn has_children(&mut self, _: UserId, dir: &RelPath) -> Result<bool, StoreError> {
        Ok(self.by_path.keys().any(|p| p.is_inside(dir)))
    }

    fn next_cursor(&mut self, _: UserId) -> Result<Cursor, StoreError> {
        self.cursor += 1;
        // Deterministic, and different for one cursor in different lives of the server, as
        // the random tags of a real store are.
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&self.epoch.to_le_bytes());
        key[8..].copy_from_slice(&self.cursor.to_le_bytes());
        let digest = blake3::hash(&key);
        let tag = JournalTag(*digest.as_bytes().first_chunk().expect("16 of 32 bytes"));
        self.tags.truncate(self.cursor as usize - 1);
        self.tags.push(tag);
        Ok(Cursor(self.cursor))
    }

    fn current_cursor(&mut self, _: UserId) -> Result<Cursor, StoreError> {
        Ok(Cursor(self.cursor))
    }

    fn head_tag(&mut self, _: UserId) -> Result<JournalTag, StoreError> {
        Ok(self.tags.last().copied().unwrap_or_default())
    }

    fn next_node_id(&mut self, _: UserId) -> Result<NodeId, StoreError> {
        self.next_node += 1;
        Ok(NodeId(self.next_node))
    }

    fn put_node(&mut self, _: UserId, entry: &RemoteEntry) -> Result<(), StoreError> {
        if let Some(occupant) = self.by_path.get(&entry.path) {
            if occupant.node_id != entry.node_id {
                return Err(StoreError::Corrupt(format!(
                    "{} is taken by another node",
                    entry.path
                )));
            }
        }
        if let Some(old_path) = self.path_of.insert(entry.node_id, entry.path.clone()) {
            self.by_path.remove(&old_path);
        }
        self.by_path.insert(entry.path.clone(), entry.clone());
        Ok(())
    }

    fn remove_node(&mut self, _: UserId, node_id: NodeId) -> Result<(), StoreError> {
        if let Some(path) = self.path_of.remove(&node_id) {
            self.by_path.remove(&path);
        }
        Ok(())
    }

    fn append_change(&mut self, _: UserId, change: &Change) -> Result<(), StoreError> {
        assert_eq!(
            change.cursor().0,
            self.journal.len() as u64 + 1,
            "one journal row per cursor"
        );
        self.journal.push(change.clone());
        Ok(())
    }

    fn serialize_writes(&mut self, _: UserId) -> Result<(), StoreError> {
        // One simulated server, one thread: there is no other writer.
        Ok(())
    }

    fn lock_rows(&mut self, _: UserId) -> Result<Vec<LockInfo>, StoreError> {
        Ok(self.locks.values().cloned().collect())
    }

    fn insert_lock(&mut self, _: UserId, lock: &LockInfo) -> Result<(), StoreError> {
        if self.locks.contains_key(&lock.path) {
            return Err(StoreError::Corrupt(format!(
                "{} is locked twice",
                lock.path
            )));
        }
        self.locks.insert(lock.path.clone(), lock.clone());
        Ok(())
    }

    fn remove_lock(&mut self, _: UserId, path: &RelPath) -> Result<(), StoreError> {
        self.locks.remove(path);
        Ok(())
    }
}
