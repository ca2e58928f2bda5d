//! The semantics of every [`Op`], written once against the synchronous [`Txn`] trait.
//!
//! A backend implements [`Txn`] on its own transaction (a rusqlite one, or one of the sync
//! `postgres` crate inside `spawn_blocking`) and calls [`apply_batch`]. The rules live only here:
//! preconditions, implicit parent directories, one journal row per changed node, the cursor
//! that every change bumps, and lock enforcement (the lock rules themselves are in
//! [`crate::locks`]).
//!
//! Invariants kept by this module, for every user:
//! - every node's parent directory exists as a directory (the tree has no orphans);
//! - a node's `rev` is the cursor of the journal row that last touched it;
//! - the cursor grows by one per journal row, starting at 1;
//! - every lock in force is on an existing node, and no op of another device than its holder
//!   changes a path it covers.
//!
//! # Locked paths
//!
//! An op by a device other than the holder of a lock in force gets [`OpOutcome::Locked`]
//! and changes nothing when it would change a covered path: a `PutFile`, `SetMode` or `MakeDir` at
//! a covered path, a `Delete` of a covered path or of a directory with a covered path beneath, a `Move`
//! whose source or anything beneath it is covered, or whose destination is covered.
//! The holder's own ops pass, and its locks follow its changes:
//! - when the holder deletes a locked path, the lock ends: journal [`Change::Unlock`];
//! - when the holder moves a locked path (or a directory with locked paths beneath), each lock
//!   moves with its path, keeping its device, start and expiry: journal [`Change::Unlock`] at the
//!   old path, then [`Change::Lock`] at the new one, after the moved nodes. A device that treats
//!   `Lock` as "set the lock on this path" and `Unlock` as "clear it" thus never keeps a stale
//!   lock at the old path.

use crate::locks::expire_and_list_locks;
use crate::{quoted, BatchOutcome, ChunkLens, OpOutcome, StoreError, UserId};
use std::collections::HashSet;
use syncstore_proto::{
    Change, ChunkHash, ChunkRef, ContentHash, Cursor, DeviceName, EntryKind, JournalTag, LockInfo,
    NodeId, Op, Precondition, RelPath, RemoteEntry, Revision,
};

/// One open transaction of a meta store backend, seen by the op rules.
///
/// Every method works inside the transaction; nothing is visible to others before the backend
/// commits. Errors are backend failures and abort the whole batch.
pub trait Txn {
    /// Starts a nested unit that [`Txn::end_op`] keeps or undoes (`SAVEPOINT`).
    ///
    /// # Errors
    /// Backend failures.
    fn begin_op(&mut self) -> Result<(), StoreError>;

    /// Ends the unit started by [`Txn::begin_op`]: keeps its writes or undoes them.
    ///
    /// # Errors
    /// Backend failures.
    fn end_op(&mut self, keep: bool) -> Result<(), StoreError>;

    /// The node at `path`, if any.
    ///
    /// # Errors
    /// Backend failures.
    fn node_at(
        &mut self,
        user_id: UserId,
        path: &RelPath,
    ) -> Result<Option<RemoteEntry>, StoreError>;

    /// Every node strictly inside the directory `dir`, in any order.
    ///
    /// # Errors
    /// Backend failures.
    fn descendants(
        &mut self,
        user_id: UserId,
        dir: &RelPath,
    ) -> Result<Vec<RemoteEntry>, StoreError>;

    /// Whether anything lies inside the directory `dir`.
    ///
    /// # Errors
    /// Backend failures.
    fn has_children(&mut self, user_id: UserId, dir: &RelPath) -> Result<bool, StoreError>;

    /// Bumps the user's cursor and returns the new value (the first is 1). The new position
    /// gets a fresh random [`JournalTag`], which the journal row appended for it carries.
    ///
    /// # Errors
    /// Backend failures; [`StoreError::NotFound`] for an unknown user.
    fn next_cursor(&mut self, user_id: UserId) -> Result<Cursor, StoreError>;

    /// The user's cursor, without bumping it.
    ///
    /// # Errors
    /// Backend failures; [`StoreError::NotFound`] for an unknown user.
    fn current_cursor(&mut self, user_id: UserId) -> Result<Cursor, StoreError>;

    /// The tag of the user's current cursor (all zero before the first change).
    ///
    /// # Errors
    /// Backend failures; [`StoreError::NotFound`] for an unknown user.
    fn head_tag(&mut self, user_id: UserId) -> Result<JournalTag, StoreError>;

    /// A node id never handed out before for this user.
    ///
    /// # Errors
    /// Backend failures.
    fn next_node_id(&mut self, user_id: UserId) -> Result<NodeId, StoreError>;

    /// Inserts the node, or replaces the node with the same `node_id` (its path may change).
    ///
    /// # Errors
    /// Backend failures, including a path already taken by another node (a bug in the rules).
    fn put_node(&mut self, user_id: UserId, entry: &RemoteEntry) -> Result<(), StoreError>;

    /// Removes a node.
    ///
    /// # Errors
    /// Backend failures.
    fn remove_node(&mut self, user_id: UserId, node_id: NodeId) -> Result<(), StoreError>;

    /// Appends a journal row for the cursor the last [`Txn::next_cursor`] returned (the rules
    /// always append right after bumping), tagged with that position's [`JournalTag`] and
    /// committed at `at_ms` (the caller's clock; kept for node rows, which history lists).
    ///
    /// # Errors
    /// Backend failures.
    fn append_change(
        &mut self,
        user_id: UserId,
        change: &Change,
        at_ms: i64,
    ) -> Result<(), StoreError>;

    /// The chunks among `hashes` that a garbage collection run is deleting (see [`crate::gc`]):
    /// no commit may name them.
    ///
    /// # Errors
    /// Backend failures.
    fn doomed_among(
        &mut self,
        user_id: UserId,
        hashes: &[ChunkHash],
    ) -> Result<HashSet<ChunkHash>, StoreError>;

    /// The bytes of the user's current files, and the user's quota (`None`: no quota).
    ///
    /// # Errors
    /// Backend failures.
    fn usage(&mut self, user_id: UserId) -> Result<(u64, Option<u64>), StoreError>;

    /// Adds `delta` to the bytes of the user's current files.
    ///
    /// # Errors
    /// Backend failures.
    fn add_used(&mut self, user_id: UserId, delta: i64) -> Result<(), StoreError>;

    /// Makes this transaction the only writer of the user's namespace until it ends; the rules
    /// call it before reading anything they decide on.
    ///
    /// This is what makes "exactly one of N racing lock attempts wins" and "no op slips past a
    /// lock taken concurrently" hold. SQLite: only the check for an unknown user, as the
    /// transaction is `IMMEDIATE` and SQLite has one writer at a time. PostgreSQL: `SELECT 1 FROM users WHERE id = $1 FOR
    /// UPDATE`, in a `READ COMMITTED` transaction, so that a waiter's later statements see the
    /// winner's commit (under `REPEATABLE READ` or `SERIALIZABLE` the waiter would instead fail
    /// with a serialization error and must retry the whole call).
    ///
    /// # Errors
    /// Backend failures; [`StoreError::NotFound`] for an unknown user.
    fn serialize_writes(&mut self, user_id: UserId) -> Result<(), StoreError>;

    /// Every stored lock of the user, in force or expired, in any order.
    ///
    /// # Errors
    /// Backend failures.
    fn lock_rows(&mut self, user_id: UserId) -> Result<Vec<LockInfo>, StoreError>;

    /// Stores a lock.
    ///
    /// # Errors
    /// Backend failures, including a row for the same user and path already stored: the
    /// backend must enforce one lock per path per user with a primary key or unique
    /// constraint, as a backstop against two winners of a race.
    fn insert_lock(&mut self, user_id: UserId, lock: &LockInfo) -> Result<(), StoreError>;

    /// Deletes the lock row on exactly `path`, if any.
    ///
    /// # Errors
    /// Backend failures.
    fn remove_lock(&mut self, user_id: UserId, path: &RelPath) -> Result<(), StoreError>;
}

/// Applies `ops` in order, each inside its own [`Txn::begin_op`] unit, so a failed op leaves no
/// trace and does not undo the others. The caller commits the surrounding transaction once.
///
/// `chunk_lens` are the chunks the chunk store holds for this user, with their lengths. `now_ms` (milliseconds
/// since the Unix epoch, from the caller's clock) decides which locks are in force.
///
/// # Errors
/// Backend failures; the caller must then roll the whole transaction back.
pub fn apply_batch<T: Txn + ?Sized>(
    txn: &mut T,
    user_id: UserId,
    device: &DeviceName,
    ops: &[Op],
    chunk_lens: &ChunkLens,
    now_ms: i64,
) -> Result<BatchOutcome, StoreError> {
    txn.serialize_writes(user_id)?;
    let named: Vec<ChunkHash> = ops
        .iter()
        .filter_map(|op| match op {
            Op::PutFile { chunks, .. } => Some(chunks.iter().map(|chunk| chunk.hash)),
            _ => None,
        })
        .flatten()
        .collect();
    let doomed = if named.is_empty() {
        HashSet::new()
    } else {
        txn.doomed_among(user_id, &named)?
    };
    let mut outcomes = Vec::with_capacity(ops.len());
    let mut usage = BatchUsage::default();
    for op in ops {
        txn.begin_op()?;
        usage.op_delta = 0;
        let mut writer = Writer {
            txn: &mut *txn,
            user_id,
            device,
            now_ms,
            usage: &mut usage,
        };
        let outcome = match writer.apply(op, chunk_lens, &doomed) {
            Ok(outcome) => outcome,
            Err(err) => {
                // Undo this op's partial writes before handing the failure up.
                let _ = txn.end_op(false);
                return Err(err);
            }
        };
        txn.end_op(outcome.is_applied())?;
        if outcome.is_applied() {
            usage.keep_op();
        }
        outcomes.push(outcome);
    }
    if usage.batch_delta != 0 {
        txn.add_used(user_id, usage.batch_delta)?;
    }
    let cursor = txn.current_cursor(user_id)?;
    let cursor_tag = txn.head_tag(user_id)?;
    Ok(BatchOutcome {
        outcomes,
        cursor,
        cursor_tag,
    })
}

/// The new state of a file a `PutFile` writes.
struct FileState<'a> {
    size: u64,
    mtime_ms: i64,
    hash: ContentHash,
    chunks: &'a [ChunkRef],
    executable: bool,
}

/// The rules for one op of one user and device.
struct Writer<'a, T: Txn + ?Sized> {
    txn: &'a mut T,
    user_id: UserId,
    device: &'a DeviceName,
    now_ms: i64,
    usage: &'a mut BatchUsage,
}

/// The bytes of the user's current files over one batch: read once, at the first op that needs
/// them, and written once, at the end (the ops of a batch share one transaction).
#[derive(Default)]
struct BatchUsage {
    /// The used bytes as of the ops kept so far, and the quota; `None` until first needed.
    loaded: Option<(u64, Option<u64>)>,
    /// The change the op being applied makes (dropped if it is undone).
    op_delta: i64,
    /// The change the kept ops made, written at the end of the batch.
    batch_delta: i64,
}

impl BatchUsage {
    /// The used bytes as of the ops kept so far, and the quota.
    fn get<T: Txn + ?Sized>(
        &mut self,
        txn: &mut T,
        user_id: UserId,
    ) -> Result<(u64, Option<u64>), StoreError> {
        if self.loaded.is_none() {
            self.loaded = Some(txn.usage(user_id)?);
        }
        Ok(self.loaded.expect("loaded above"))
    }

    /// The op being applied was kept: its change counts.
    fn keep_op(&mut self) {
        if let Some((used, _)) = &mut self.loaded {
            *used = used.saturating_add_signed(self.op_delta);
        }
        self.batch_delta += self.op_delta;
        self.op_delta = 0;
    }
}

impl<T: Txn + ?Sized> Writer<'_, T> {
    fn apply(
        &mut self,
        op: &Op,
        chunk_lens: &ChunkLens,
        doomed: &HashSet<ChunkHash>,
    ) -> Result<OpOutcome, StoreError> {
        if let Some(lock) = self.lock_against(op)? {
            return Ok(OpOutcome::Locked(lock));
        }
        match op {
            Op::PutFile {
                path,
                base,
                size,
                mtime_ms,
                hash,
                chunks,
                executable,
            } => self.put_file(
                path,
                *base,
                FileState {
                    size: *size,
                    mtime_ms: *mtime_ms,
                    hash: *hash,
                    chunks,
                    executable: *executable,
                },
                chunk_lens,
                doomed,
            ),
            Op::SetMode {
                path,
                base,
                executable,
            } => self.set_mode(path, *base, *executable),
            Op::MakeDir { path, mtime_ms } => self.make_dir(path, *mtime_ms),
            Op::Delete { path, base } => self.delete(path, *base),
            Op::Move { from, to, base } => self.move_node(from, to, *base),
        }
    }

    fn put_file(
        &mut self,
        path: &RelPath,
        base: Precondition,
        file: FileState<'_>,
        chunk_lens: &ChunkLens,
        doomed: &HashSet<ChunkHash>,
    ) -> Result<OpOutcome, StoreError> {
        let FileState {
            size,
            mtime_ms,
            hash,
            chunks,
            executable,
        } = file;
        let sum: u64 = chunks.iter().map(|chunk| u64::from(chunk.len)).sum();
        if sum != size {
            return Ok(OpOutcome::Invalid(format!(
                "chunks of {} add up to {sum} bytes, not the size {size}",
                quoted(path)
            )));
        }
        if hash != ContentHash::of_chunks(chunks) {
            return Ok(OpOutcome::Invalid(format!(
                "the content hash of {} does not match its chunks",
                quoted(path)
            )));
        }
        for chunk in chunks {
            if doomed.contains(&chunk.hash) {
                return Ok(OpOutcome::Invalid(format!(
                    "missing chunk {} of {}: it is being collected; upload it again",
                    chunk.hash,
                    quoted(path)
                )));
            }
            match chunk_lens.get(&chunk.hash) {
                None => {
                    return Ok(OpOutcome::Invalid(format!(
                        "missing chunk {} of {}: upload it first",
                        chunk.hash,
                        quoted(path)
                    )))
                }
                // A false length would make every later download of the file fail.
                Some(&stored) if stored != chunk.len => {
                    return Ok(OpOutcome::Invalid(format!(
                        "chunk {} of {} is {stored} bytes, not {}",
                        chunk.hash,
                        quoted(path),
                        chunk.len
                    )))
                }
                Some(_) => {}
            }
        }
        let existing = self.txn.node_at(self.user_id, path)?;
        let node_id = match (base, existing) {
            (Precondition::MustNotExist, None) => None,
            (Precondition::MustNotExist, Some(current)) => {
                let message = format!("{} already exists", quoted(path));
                return Ok(OpOutcome::Conflict {
                    current: Some(current),
                    message,
                });
            }
            (Precondition::Rev(_), None) => {
                let message = format!("{} no longer exists", quoted(path));
                return Ok(OpOutcome::Conflict {
                    current: None,
                    message,
                });
            }
            (Precondition::Rev(_), Some(current)) if current.kind == EntryKind::Dir => {
                let message = format!("{} is a directory", quoted(path));
                return Ok(OpOutcome::Conflict {
                    current: Some(current),
                    message,
                });
            }
            (Precondition::Rev(rev), Some(current)) if current.rev != rev => {
                let message = format!("{} is at revision {}, not {rev}", quoted(path), current.rev);
                return Ok(OpOutcome::Conflict {
                    current: Some(current),
                    message,
                });
            }
            (Precondition::Rev(_), Some(current)) => Some(current),
        };
        let grows = i64::try_from(size).unwrap_or(i64::MAX)
            - node_id
                .as_ref()
                .map_or(0, |current| i64::try_from(current.size).unwrap_or(i64::MAX));
        let (used, quota) = self.usage.get(&mut *self.txn, self.user_id)?;
        if let Some(quota) = quota {
            let after = used.saturating_add_signed(grows);
            if grows > 0 && after > quota {
                return Ok(OpOutcome::OverQuota(format!(
                    "{} does not fit: the account's quota is {quota} bytes and {used} are in use",
                    quoted(path)
                )));
            }
        }
        let node_id = node_id.map(|current| current.node_id);
        let mut produced = match self.ensure_parents(path, mtime_ms)? {
            Ok(parents) => parents,
            Err(conflict) => return Ok(conflict),
        };
        let node_id = match node_id {
            Some(node_id) => node_id,
            None => self.txn.next_node_id(self.user_id)?,
        };
        let entry = self.upsert(RemoteEntry {
            node_id,
            path: path.clone(),
            kind: EntryKind::File,
            rev: Revision(0),
            size,
            mtime_ms,
            hash: Some(hash),
            chunks: chunks.to_vec(),
            device: self.device.clone(),
            executable,
        })?;
        produced.push(entry);
        self.usage.op_delta += grows;
        Ok(OpOutcome::Applied(produced))
    }

    /// Changes only the executable bit: same node, same content, a new revision. Conditional
    /// like every write, so a mode change never lands on content its sender did not see.
    fn set_mode(
        &mut self,
        path: &RelPath,
        base: Revision,
        executable: bool,
    ) -> Result<OpOutcome, StoreError> {
        let Some(current) = self.txn.node_at(self.user_id, path)? else {
            return Ok(OpOutcome::Conflict {
                current: None,
                message: format!("{} no longer exists", quoted(path)),
            });
        };
        if current.kind == EntryKind::Dir {
            let message = format!("{} is a directory", quoted(path));
            return Ok(OpOutcome::Conflict {
                current: Some(current),
                message,
            });
        }
        if current.rev != base {
            let message = format!(
                "{} is at revision {}, not {base}",
                quoted(path),
                current.rev
            );
            return Ok(OpOutcome::Conflict {
                current: Some(current),
                message,
            });
        }
        let entry = self.upsert(RemoteEntry {
            device: self.device.clone(),
            executable,
            ..current
        })?;
        Ok(OpOutcome::Applied(vec![entry]))
    }

    fn make_dir(&mut self, path: &RelPath, mtime_ms: i64) -> Result<OpOutcome, StoreError> {
        match self.txn.node_at(self.user_id, path)? {
            Some(current) if current.kind == EntryKind::Dir => {
                return Ok(OpOutcome::Applied(vec![current]));
            }
            Some(current) => {
                let message = format!("{} is a file", quoted(path));
                return Ok(OpOutcome::Conflict {
                    current: Some(current),
                    message,
                });
            }
            None => {}
        }
        let mut produced = match self.ensure_parents(path, mtime_ms)? {
            Ok(parents) => parents,
            Err(conflict) => return Ok(conflict),
        };
        produced.push(self.new_dir(path, mtime_ms)?);
        Ok(OpOutcome::Applied(produced))
    }

    fn delete(&mut self, path: &RelPath, base: Revision) -> Result<OpOutcome, StoreError> {
        let Some(current) = self.txn.node_at(self.user_id, path)? else {
            return Ok(OpOutcome::NotFound(format!(
                "nothing at {} to delete",
                quoted(path)
            )));
        };
        if current.rev != base {
            let message = format!(
                "{} is at revision {}, not {base}",
                quoted(path),
                current.rev
            );
            return Ok(OpOutcome::Conflict {
                current: Some(current),
                message,
            });
        }
        if current.kind == EntryKind::Dir && self.txn.has_children(self.user_id, path)? {
            let message = format!("directory {} is not empty", quoted(path));
            return Ok(OpOutcome::Conflict {
                current: Some(current),
                message,
            });
        }
        let cursor = self.txn.next_cursor(self.user_id)?;
        self.txn.remove_node(self.user_id, current.node_id)?;
        if current.kind == EntryKind::File {
            self.usage.op_delta -= i64::try_from(current.size).unwrap_or(i64::MAX);
        }
        self.txn.append_change(
            self.user_id,
            &Change::Delete {
                cursor,
                node_id: current.node_id,
                path: current.path.clone(),
                device: self.device.clone(),
            },
            self.now_ms,
        )?;
        // Only the holder gets here with a lock on the path; the lock ends with the node.
        // A directory being deleted is empty, so no lock in force lies beneath it.
        for lock in expire_and_list_locks(self.txn, self.user_id, self.now_ms)? {
            if lock.path == *path {
                self.end_lock(lock)?;
            }
        }
        Ok(OpOutcome::Applied(Vec::new()))
    }

    fn move_node(
        &mut self,
        from: &RelPath,
        to: &RelPath,
        base: Revision,
    ) -> Result<OpOutcome, StoreError> {
        if to.is_inside(from) {
            return Ok(OpOutcome::Invalid(format!(
                "cannot move {} into itself ({})",
                quoted(from),
                quoted(to)
            )));
        }
        let Some(current) = self.txn.node_at(self.user_id, from)? else {
            return Ok(OpOutcome::NotFound(format!(
                "nothing at {} to move",
                quoted(from)
            )));
        };
        if current.rev != base {
            let message = format!(
                "{} is at revision {}, not {base}",
                quoted(from),
                current.rev
            );
            return Ok(OpOutcome::Conflict {
                current: Some(current),
                message,
            });
        }
        if let Some(occupant) = self.txn.node_at(self.user_id, to)? {
            let message = format!("{} already exists", quoted(to));
            return Ok(OpOutcome::Conflict {
                current: Some(occupant),
                message,
            });
        }
        let mut descendants = if current.kind == EntryKind::Dir {
            self.txn.descendants(self.user_id, from)?
        } else {
            Vec::new()
        };
        // Parents before children, so every journal prefix is a valid tree.
        descendants.sort_by(|a, b| (a.path.depth(), &a.path).cmp(&(b.path.depth(), &b.path)));
        let mut rebased = Vec::with_capacity(descendants.len());
        for descendant in descendants {
            // `rebase` fails only when the new path would break a `RelPath` rule (its length).
            let Some(path) = descendant.path.rebase(from, to) else {
                return Ok(OpOutcome::Invalid(format!(
                    "moving {} to {} would make the path of {} too long",
                    quoted(from),
                    quoted(to),
                    quoted(&descendant.path)
                )));
            };
            rebased.push(RemoteEntry {
                path,
                device: self.device.clone(),
                ..descendant
            });
        }
        let mut produced = match self.ensure_parents(to, current.mtime_ms)? {
            Ok(parents) => parents,
            Err(conflict) => return Ok(conflict),
        };
        let moved = RemoteEntry {
            path: to.clone(),
            device: self.device.clone(),
            ..current
        };
        produced.push(self.upsert(moved)?);
        for entry in rebased {
            produced.push(self.upsert(entry)?);
        }
        // Only the holder gets here with locks at or beneath `from`; they move with the nodes.
        for lock in expire_and_list_locks(self.txn, self.user_id, self.now_ms)? {
            if !(lock.path == *from || lock.path.is_inside(from)) {
                continue;
            }
            // Every lock in force is on a node, and every node beneath `from` was rebased above.
            let Some(new_path) = lock.path.rebase(from, to) else {
                return Ok(OpOutcome::Invalid(format!(
                    "moving {} to {} would make the locked path {} too long",
                    quoted(from),
                    quoted(to),
                    quoted(&lock.path)
                )));
            };
            let moved = LockInfo {
                path: new_path,
                ..lock.clone()
            };
            self.end_lock(lock)?;
            self.txn.insert_lock(self.user_id, &moved)?;
            let cursor = self.txn.next_cursor(self.user_id)?;
            self.txn.append_change(
                self.user_id,
                &Change::Lock {
                    cursor,
                    lock: moved,
                },
                self.now_ms,
            )?;
        }
        Ok(OpOutcome::Applied(produced))
    }

    /// The lock in force of another device that `op` would break, if any.
    fn lock_against(&mut self, op: &Op) -> Result<Option<LockInfo>, StoreError> {
        let live = expire_and_list_locks(self.txn, self.user_id, self.now_ms)?;
        let lies_beneath = |lock: &LockInfo, path: &RelPath| lock.path.is_inside(path);
        Ok(live.into_iter().find(|lock| {
            lock.device != *self.device
                && match op {
                    Op::PutFile { path, .. }
                    | Op::SetMode { path, .. }
                    | Op::MakeDir { path, .. } => lock.covers(path),
                    Op::Delete { path, .. } => lock.covers(path) || lies_beneath(lock, path),
                    Op::Move { from, to, .. } => {
                        lock.covers(from) || lies_beneath(lock, from) || lock.covers(to)
                    }
                }
        }))
    }

    /// Deletes a lock its holder's op ended and journals the end.
    fn end_lock(&mut self, lock: LockInfo) -> Result<(), StoreError> {
        self.txn.remove_lock(self.user_id, &lock.path)?;
        let cursor = self.txn.next_cursor(self.user_id)?;
        self.txn.append_change(
            self.user_id,
            &Change::Unlock {
                cursor,
                path: lock.path,
                device: lock.device,
                broken_by: None,
            },
            self.now_ms,
        )
    }

    /// Creates the missing ancestors of `path` as directories, outermost first.
    ///
    /// Returns the created directories, or the conflict when an ancestor is a file.
    fn ensure_parents(
        &mut self,
        path: &RelPath,
        mtime_ms: i64,
    ) -> Result<Result<Vec<RemoteEntry>, OpOutcome>, StoreError> {
        let mut created = Vec::new();
        let mut all_exist = true;
        for ancestor in path.ancestors() {
            // Once one ancestor is missing, none below it can exist (no orphans).
            if all_exist {
                match self.txn.node_at(self.user_id, &ancestor)? {
                    Some(node) if node.kind == EntryKind::Dir => continue,
                    Some(node) => {
                        let message = format!(
                            "{} is a file, so {} cannot be created",
                            quoted(&ancestor),
                            quoted(path)
                        );
                        return Ok(Err(OpOutcome::Conflict {
                            current: Some(node),
                            message,
                        }));
                    }
                    None => all_exist = false,
                }
            }
            created.push(self.new_dir(&ancestor, mtime_ms)?);
        }
        Ok(Ok(created))
    }

    fn new_dir(&mut self, path: &RelPath, mtime_ms: i64) -> Result<RemoteEntry, StoreError> {
        let node_id = self.txn.next_node_id(self.user_id)?;
        self.upsert(RemoteEntry {
            node_id,
            path: path.clone(),
            kind: EntryKind::Dir,
            rev: Revision(0),
            size: 0,
            mtime_ms,
            hash: None,
            chunks: Vec::new(),
            device: self.device.clone(),
            executable: false,
        })
    }

    /// Writes `entry` at a fresh cursor (its `rev` is replaced) and journals it.
    fn upsert(&mut self, mut entry: RemoteEntry) -> Result<RemoteEntry, StoreError> {
        let cursor = self.txn.next_cursor(self.user_id)?;
        entry.rev = Revision(cursor.0);
        self.txn.put_node(self.user_id, &entry)?;
        self.txn.append_change(
            self.user_id,
            &Change::Upsert {
                cursor,
                entry: entry.clone(),
            },
            self.now_ms,
        )?;
        Ok(entry)
    }
}
