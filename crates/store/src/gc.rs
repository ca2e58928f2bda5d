//! Garbage collection of chunks: content that no kept journal row and no current node names,
//! and orphans of interrupted uploads, once older than a grace period.
//!
//! A run for one user has three steps:
//! 1. list the user's stored chunks (the chunk store, outside any transaction);
//! 2. [`doom`], in one write transaction serialised on the user: the chunks listed, older than
//!    the grace period and named by no row, are recorded as *doomed* (`gc_doomed`);
//! 3. delete them from the chunk store, then [`finish`], in another write transaction: the
//!    run's doomed rows go and the user's `gc_epoch` grows by one.
//!
//! Each run's id holds the time it started ([`new_run_id`]) and it forgets only the rows it doomed,
//! so runs of several servers may overlap: a chunk stays doomed until every run that doomed it
//! has finished. A run that dies between its steps 2 and 3 (a crash) leaves its rows; they keep
//! commits from naming those chunks (devices are told to upload them again) until a later run
//! finds the run older than [`STALE_RUN_MS`], deletes its chunks and finishes it. So a run that
//! takes longer than that between its steps 2 and 3 counts as dead.
//!
//! Why a commit can never name a deleted chunk, even with several servers racing a run
//! (see [`crate::apply_ops`]): a commit reads the user's `gc_epoch` *before* it asks the chunk
//! store which chunks it holds, and its write transaction refuses a `PutFile` that names a
//! doomed chunk and fails (to be retried) when the epoch moved. So, for any run: if its step 2
//! committed after the commit, the commit's rows are among those it read (the chunks are
//! named); if step 2 came before and [`finish`] after, the chunks are doomed and the op is
//! refused; if [`finish`] came before the chunk store was asked, the chunks were already
//! deleted and the commit finds them missing; if [`finish`] came in between, the epoch moved
//! and the commit starts again. A device told a chunk is missing uploads it again.
//!
//! Uploads in progress are protected by the grace period: a chunk stored less than `grace_ms`
//! ago is never doomed, so a device has that long between uploading a chunk and committing
//! the file that names it (a device that takes longer re-uploads).
//!
//! **Invariant:** a chunk named by a current node or a kept journal row is never deleted.

use crate::meta::MetaTxn;
use crate::retention::Retention;
use crate::{ChunkStore, MetaStore, RemovedUser, StoreError, User, UserId};
use std::collections::HashSet;
use syncstore_proto::{ChunkHash, Cursor};

/// A run whose doomed rows are this old (by its id, its start time) is taken for dead.
pub const STALE_RUN_MS: i64 = 3_600_000;

/// A chunk as the chunk store lists it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct StoredChunk {
    pub hash: ChunkHash,
    /// Bytes on disk (or in the bucket).
    pub len: u64,
    /// When it was stored (file mtime, object `Last-Modified`), milliseconds since the epoch.
    pub stored_ms: i64,
}

/// Step 2: dooms the chunks of `listed` that are older than `grace_ms` at `now_ms` and named by
/// no kept row or current node; returns them. Runs inside the caller's write transaction,
/// after [`crate::ops::Txn::serialize_writes`].
///
/// # Errors
/// Backend failures.
pub fn doom(
    txn: &mut dyn MetaTxn,
    user_id: UserId,
    listed: &[StoredChunk],
    now_ms: i64,
    grace_ms: i64,
    run: i64,
) -> Result<Vec<StoredChunk>, StoreError> {
    let doomed = unreferenced(txn, user_id, listed, now_ms, grace_ms, &HashSet::new())?;
    let hashes: Vec<ChunkHash> = doomed.iter().map(|chunk| chunk.hash).collect();
    txn.doom_chunks(user_id, &hashes, run)?;
    Ok(doomed)
}

/// The chunks of `listed` that [`doom`] would doom now, were the rows at `excluding` gone (a
/// dry run reads only this).
///
/// # Errors
/// Backend failures.
pub fn unreferenced(
    txn: &mut dyn MetaTxn,
    user_id: UserId,
    listed: &[StoredChunk],
    now_ms: i64,
    grace_ms: i64,
    excluding: &HashSet<Cursor>,
) -> Result<Vec<StoredChunk>, StoreError> {
    let referenced: HashSet<ChunkHash> = txn.referenced_chunks(user_id, excluding)?;
    let wanted: HashSet<ChunkHash> = txn
        .wanted_chunks(user_id, usize::MAX)?
        .into_iter()
        .collect();
    let doomed: Vec<StoredChunk> = listed
        .iter()
        .filter(|chunk| {
            chunk.stored_ms <= now_ms.saturating_sub(grace_ms)
                && !referenced.contains(&chunk.hash)
                && !wanted.contains(&chunk.hash)
        })
        .copied()
        .collect();
    Ok(doomed)
}

/// Step 3, once the doomed chunks are deleted: forgets them and moves the user's `gc_epoch`.
///
/// # Errors
/// Backend failures.
pub fn finish(txn: &mut dyn MetaTxn, user_id: UserId, run: i64) -> Result<(), StoreError> {
    txn.end_gc(user_id, run)
}

/// What a garbage collection run did (or, dry, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Users looked at.
    pub users: u64,
    /// Journal rows compaction removed.
    pub rows_removed: u64,
    /// Chunks deleted, and their bytes.
    pub chunks_deleted: u64,
    pub bytes_freed: u64,
    /// Chunks kept.
    pub chunks_kept: u64,
    pub bytes_kept: u64,
}

impl GcReport {
    /// Adds another user's report.
    pub fn add(&mut self, other: &GcReport) {
        self.users += other.users;
        self.rows_removed += other.rows_removed;
        self.chunks_deleted += other.chunks_deleted;
        self.bytes_freed += other.bytes_freed;
        self.chunks_kept += other.chunks_kept;
        self.bytes_kept += other.bytes_kept;
    }
}

/// A run id: its start time in milliseconds times 1,024, plus 10 random bits, so two servers
/// starting in the same millisecond still get their own rows.
pub fn new_run_id(now_ms: i64) -> i64 {
    now_ms.saturating_mul(1024) + i64::from(rand::random::<u16>() % 1024)
}

/// When the run `run` started.
pub fn run_started_ms(run: i64) -> i64 {
    run.div_euclid(1024)
}

/// How a garbage collection run is done.
#[derive(Clone, Copy, Debug)]
pub struct GcPolicy {
    pub retention: Retention,
    /// A chunk stored less than this long ago is never collected (uploads in progress).
    pub grace_ms: i64,
}

/// One garbage collection run over every user at `now_ms`: compacts each journal
/// ([`crate::retention`]), finishes runs found dead, then dooms, deletes and forgets the
/// user's unreferenced chunks; then deletes what is left of removed accounts' content
/// ([`MetaStore::removed_users`]). With `dry_run`, changes nothing and counts what it would do.
/// A user removed during the run is skipped.
///
/// # Errors
/// Store failures; the users before the failing one are done.
pub async fn collect(
    meta: &dyn MetaStore,
    chunks: &dyn ChunkStore,
    now_ms: i64,
    policy: GcPolicy,
    dry_run: bool,
) -> Result<GcReport, StoreError> {
    let mut report = GcReport::default();
    for user in meta.users().await? {
        match collect_user(meta, chunks, &user, now_ms, policy, dry_run).await {
            Ok(done) => report.add(&done),
            // Removed meanwhile: its content is swept below, now or by the next run.
            Err(StoreError::NotFound(_)) => {}
            Err(err) => return Err(err),
        }
    }
    for removed in meta.removed_users().await? {
        let done = sweep_removed(meta, chunks, &removed, now_ms, policy, dry_run).await?;
        report.add(&done);
    }
    Ok(report)
}

/// Deletes what is left of a removed account's content. `syncstore user remove` deletes it at
/// once, but a chunk upload that was under way then (on any server) may store more afterwards;
/// by the grace period's promise such uploads are over `grace_ms` after the removal, so a run
/// after that which finds nothing left records the content as gone, and later runs skip it.
async fn sweep_removed(
    meta: &dyn MetaStore,
    chunks: &dyn ChunkStore,
    removed: &RemovedUser,
    now_ms: i64,
    policy: GcPolicy,
    dry_run: bool,
) -> Result<GcReport, StoreError> {
    let listed = chunks.list(removed.namespace).await?;
    let mut report = GcReport {
        chunks_deleted: listed.len() as u64,
        bytes_freed: listed.iter().map(|chunk| chunk.len).sum(),
        ..GcReport::default()
    };
    if dry_run {
        return Ok(report);
    }
    if listed.is_empty() {
        if removed.removed_ms <= now_ms.saturating_sub(policy.grace_ms) {
            meta.content_gone(removed.user_id, now_ms).await?;
        }
        return Ok(report);
    }
    let (n_deleted, bytes) = chunks.delete_all(removed.namespace).await?;
    tracing::info!(
        chunks = n_deleted,
        bytes,
        "deleted content of a removed account"
    );
    report.chunks_deleted = n_deleted;
    report.bytes_freed = bytes;
    Ok(report)
}

async fn collect_user(
    meta: &dyn MetaStore,
    chunks: &dyn ChunkStore,
    user: &User,
    now_ms: i64,
    policy: GcPolicy,
    dry_run: bool,
) -> Result<GcReport, StoreError> {
    let compaction = meta
        .compact(user.id, now_ms, policy.retention, dry_run)
        .await?;
    let mut report = GcReport {
        users: 1,
        rows_removed: compaction.rows + compaction.lock_rows,
        ..GcReport::default()
    };
    if !dry_run {
        for (run, hashes) in meta.gc_runs(user.id).await? {
            if run_started_ms(run) < now_ms - STALE_RUN_MS {
                tracing::warn!(user = %user.name, run, chunks = hashes.len(), "finishing a garbage collection run that died");
                let stale: Vec<StoredChunk> = hashes
                    .into_iter()
                    .map(|hash| StoredChunk {
                        hash,
                        len: 0,
                        stored_ms: 0,
                    })
                    .collect();
                chunks.delete(user.namespace, &stale).await?;
                meta.gc_finish(user.id, run).await?;
            }
        }
    }
    let listed = chunks.list(user.namespace).await?;
    let run = new_run_id(now_ms);
    let doomed = if dry_run {
        meta.gc_unreferenced(user.id, &listed, now_ms, policy)
            .await?
    } else {
        meta.gc_doom(user.id, &listed, now_ms, policy.grace_ms, run)
            .await?
    };
    report.chunks_deleted = doomed.len() as u64;
    if dry_run {
        report.bytes_freed = doomed.iter().map(|chunk| chunk.len).sum();
    } else {
        let deleted = chunks.delete(user.namespace, &doomed).await;
        // Forget the doomed rows even when a delete failed: what is left is unreferenced and
        // the next run dooms it again; rows left behind would refuse commits.
        meta.gc_finish(user.id, run).await?;
        report.bytes_freed = deleted?;
    }
    let listed_bytes: u64 = listed.iter().map(|chunk| chunk.len).sum();
    report.chunks_kept = listed.len() as u64 - report.chunks_deleted;
    report.bytes_kept = listed_bytes.saturating_sub(report.bytes_freed);
    Ok(report)
}
