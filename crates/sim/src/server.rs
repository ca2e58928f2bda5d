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
    RelPath, RemoteEntry, RestoreTarget, UserName,
};
use syncstore_store::gc::{self, StoredChunk};
use syncstore_store::mem::{MemTxn, MemUser};
use syncstore_store::meta::MetaTxn;
use syncstore_store::ops::apply_batch;
use syncstore_store::retention::{self, Retention};
use syncstore_store::{history, ChangesPage, ChunkLens, LockOutcome, UserId};

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
    /// When each durable chunk was stored (sim clock), for the garbage collection's grace.
    stored_at: HashMap<ChunkHash, i64>,
    /// A garbage collection run between its steps: its id and the chunks it doomed.
    gc_run: Option<(i64, Vec<StoredChunk>)>,
    /// Garbage collection runs begun, so each gets its own id.
    gc_runs: i64,
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
            stored_at: HashMap::new(),
            gc_run: None,
            gc_runs: 0,
        }
    }
}

/// What a restore did on the server.
pub struct Restored {
    /// Steps applied, and refused.
    pub applied: usize,
    pub refused: usize,
    /// Contents the restore took off the tree (replaced or moved to the trash).
    pub killed: Vec<Vec<u8>>,
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
                        self.stored_at.insert(chunk.hash, now_ms);
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
        // A collection run between its steps is dead with the database it ran on.
        self.gc_run = None;
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
        self.gc_run = None;
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
            self.stored_at.entry(hash).or_insert(0);
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

    /// The server process restarts: staged uploads are lost, and so is a collection run between
    /// its steps (its doomed rows stay until the next run finishes it), the rest is as it was.
    pub fn restart(&mut self) {
        self.staged.clear();
        self.gc_run = None;
    }

    /// A user's `syncstore restore` as `device`, planned by the store's rules and applied as
    /// the real handler does (conditional ops, journalled as the device's); `Err` with the
    /// refusal when the request cannot be met.
    pub fn restore_history(
        &mut self,
        device: &DeviceName,
        target: &RestoreTarget,
        now_ms: i64,
    ) -> Result<Restored, String> {
        let kept = self
            .meta
            .floors(USER)
            .expect("the sim's user")
            .kept_since_ms;
        let plan = history::plan_restore(&mut self.meta, USER, target, kept)
            .expect("the in-memory txn cannot fail")?;
        let before = self.user().nodes().clone();
        let response = self.apply_ops(device, &plan.ops, None, now_ms);
        let mut restored = Restored {
            applied: 0,
            refused: 0,
            killed: Vec::new(),
        };
        for (op, result) in plan.ops.iter().zip(&response.results) {
            if result.status != 200 {
                restored.refused += 1;
                continue;
            }
            restored.applied += 1;
            if let Some(old) = before.get(op.path()) {
                if old.kind == EntryKind::File {
                    if let Some(bytes) = self.file_bytes(old) {
                        restored.killed.push(bytes);
                    }
                }
            }
        }
        Ok(restored)
    }

    /// Every kept version of `path` (as `syncstore history` lists them).
    pub fn versions(&mut self, path: &RelPath) -> Vec<syncstore_proto::Version> {
        let rows = self
            .meta
            .path_history(USER, path)
            .expect("the in-memory txn cannot fail");
        let current = self.user().nodes().get(path).cloned();
        history::versions(&rows, current.as_ref())
    }

    /// Steps 1 and 2 of a garbage collection run at `now_ms` (the store's rules): compacts the
    /// journal under `retention`, finishes runs a restart left behind, then dooms what no kept
    /// row names among the durable chunks stored `grace_ms` ago or earlier. Returns the rows
    /// removed and the chunks doomed; `None` while a run is between its steps.
    pub fn gc_begin(
        &mut self,
        now_ms: i64,
        retention: Retention,
        grace_ms: i64,
    ) -> Option<(u64, usize)> {
        if self.gc_run.is_some() {
            return None;
        }
        let compaction = retention::compact(&mut self.meta, USER, now_ms, retention)
            .expect("the in-memory txn cannot fail");
        // This is the only server process: a run it left behind is dead.
        let dead = self
            .meta
            .doomed_runs(USER)
            .expect("the in-memory txn cannot fail");
        for (run, hashes) in dead {
            self.delete_chunks(&hashes);
            gc::finish(&mut self.meta, USER, run).expect("the in-memory txn cannot fail");
        }
        let listed: Vec<StoredChunk> = self
            .chunks
            .iter()
            .map(|(hash, bytes)| StoredChunk {
                hash: *hash,
                len: bytes.len() as u64,
                stored_ms: self.stored_at.get(hash).copied().unwrap_or(0),
            })
            .collect();
        self.gc_runs += 1;
        let run = self.gc_runs;
        let doomed = gc::doom(&mut self.meta, USER, &listed, now_ms, grace_ms, run)
            .expect("the in-memory txn cannot fail");
        let n = doomed.len();
        self.gc_run = Some((run, doomed));
        // A metadata backup from before a run may name what the run compacted away and
        // deletes: restoring one needs the chunk store of its time. The simulated
        // administrator restores only backups taken since.
        if n > 0 || compaction.rows + compaction.lock_rows > 0 {
            self.backups.clear();
        }
        Some((compaction.rows + compaction.lock_rows, n))
    }

    /// Step 3 of the run between its steps, if any: deletes its doomed chunks, then finishes
    /// it. Backups older than a deletion are dropped: they may name what it deleted (an
    /// administrator restores the database only together with a chunk store that matches).
    /// Returns how many chunks it deleted.
    pub fn gc_end(&mut self) -> Option<usize> {
        let (run, doomed) = self.gc_run.take()?;
        let hashes: Vec<ChunkHash> = doomed.iter().map(|chunk| chunk.hash).collect();
        let deleted = self.delete_chunks(&hashes);
        gc::finish(&mut self.meta, USER, run).expect("the in-memory txn cannot fail");
        if deleted > 0 {
            self.backups.clear();
        }
        Some(deleted)
    }

    /// Finishes the runs whose doomed rows a restart left behind (deleting their chunks, as
    /// the next real run does with a run older than `gc::STALE_RUN_MS`): this is the only
    /// server process, so a run it is not in the middle of is dead. Returns the chunks deleted.
    pub fn finish_dead_runs(&mut self) -> usize {
        let live = self.gc_run.as_ref().map(|(run, _)| *run);
        let dead = self
            .meta
            .doomed_runs(USER)
            .expect("the in-memory txn cannot fail");
        let mut deleted = 0;
        for (run, hashes) in dead {
            if Some(run) == live {
                continue;
            }
            deleted += self.delete_chunks(&hashes);
            gc::finish(&mut self.meta, USER, run).expect("the in-memory txn cannot fail");
        }
        if deleted > 0 {
            self.backups.clear();
        }
        deleted
    }

    fn delete_chunks(&mut self, hashes: &[ChunkHash]) -> usize {
        let mut deleted = 0;
        for hash in hashes {
            if self.chunks.remove(hash).is_some() {
                self.stored_at.remove(hash);
                deleted += 1;
            }
        }
        deleted
    }

    /// The kept versions (journal rows) whose content the chunk store lost: none may be.
    pub fn retained_but_missing(&self) -> Vec<String> {
        self.user()
            .journal()
            .iter()
            .flatten()
            .filter_map(|change| match change {
                syncstore_proto::Change::Upsert { cursor, entry }
                    if entry
                        .chunks
                        .iter()
                        .any(|c| !self.chunks.contains_key(&c.hash)) =>
                {
                    Some(format!("{} at revision {cursor}", entry.path))
                }
                _ => None,
            })
            .collect()
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
            // PutFile refuses a chunk the server lacks, and garbage collection never deletes
            // one a live entry names: every live entry's chunks are there.
            .map(|(path, e)| {
                let bytes = self
                    .file_bytes(e)
                    .expect("a live entry's chunks are stored");
                (path.clone(), (e.kind, bytes))
            })
            .collect()
    }
}
