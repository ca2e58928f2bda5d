//! What the daemon is doing, as plain shared memory: the engine writes it as it plans and
//! transfers, the control socket ([`crate::control`]) and the progress bar read it.
//!
//! A [`Progress`] is cheap to clone (one `Arc`); every update takes a short lock or bumps an
//! atomic, once per plan, per chunk or per file, never per byte. It does no IO and nothing the
//! engine decides reads it back, except [`Progress::is_paused`], which lets a download stop
//! between two chunks when the user paused the daemon. It reads the monotonic clock itself,
//! for rates only, so the simulation (which drives the same engine) stays a function of its
//! seed.
//!
//! Start at [`Progress::planned`] (what a plan left to do) and [`Progress::status`] (what the
//! socket answers).

use crate::engine::PassReport;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use syncstore_plan::{BlockReason, Blocked, LocalNode, Plan, PlanOp, RemoteNode};
use syncstore_proto::daemon::{
    BatchProgress, DaemonState, Direction, FolderStatus, MassDeleteHold, PathReason, Pending,
    PendingKind, Transfer, MAX_LISTED_PATHS,
};
use syncstore_proto::RelPath;

/// The shared state of one folder's sync; clones share it.
#[derive(Clone, Default)]
pub struct Progress {
    shared: Arc<Shared>,
}

/// One finished batch: the transfers of one pass, for its log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSummary {
    pub files: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// A file registered as in flight; dropping it (the transfer ended, or the pass was dropped
/// at an await) takes it off the list.
pub struct TransferGuard {
    progress: Progress,
    path: RelPath,
}

#[derive(Default)]
struct Shared {
    /// Set by the control socket, read by the daemon loop and between download chunks.
    paused: AtomicBool,
    full_walks: AtomicU64,
    incremental_passes: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    syncing: bool,
    server: String,
    last_pass_ms: Option<i64>,
    last_in_sync: bool,
    /// Path → bytes, per kind, as the last plan left them (transfers leave as they finish).
    uploads: BTreeMap<RelPath, u64>,
    downloads: BTreeMap<RelPath, u64>,
    local_deletes: BTreeMap<RelPath, u64>,
    remote_deletes: BTreeMap<RelPath, u64>,
    other: BTreeMap<RelPath, u64>,
    in_flight: BTreeMap<RelPath, Flight>,
    batch: Option<Batch>,
    last_error: Option<String>,
    skipped: Vec<PathReason>,
    blocked: Vec<PathReason>,
    /// What the mass-delete interlock holds, from the same plan as `blocked`.
    mass_delete_held: Option<MassDeleteHold>,
}

struct Flight {
    direction: Direction,
    done: u64,
    total: u64,
}

/// The transfers of the pass under way.
struct Batch {
    started: Instant,
    files_done: u64,
    /// Bytes moved (partial files included).
    bytes_done: u64,
    /// The sizes of the files finished.
    finished_bytes: u64,
}

impl Progress {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock aborts the process (see the CLI's panic hook), so a
        // poisoned lock is never seen by a living daemon; the data stays usable anyway.
        self.shared
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records what `plan` leaves to do: the pending steps by kind with their sizes (`local`
    /// for uploads and local deletes, `remote` for downloads and remote deletes), and the
    /// blocked paths. Starts a batch when the plan has steps and none runs.
    pub fn planned(
        &self,
        plan: &Plan,
        local: &BTreeMap<RelPath, LocalNode>,
        remote: &BTreeMap<RelPath, RemoteNode>,
    ) {
        self.planned_with_sizes(
            plan,
            &|path| local.get(path).map_or(0, |node| node.size),
            &|path| remote.get(path).map_or(0, |node| node.size),
        );
    }

    /// [`Progress::planned`], with the sizes of local and remote files given by functions
    /// (`status` without a daemon has the server's entries, not the planner's nodes).
    pub fn planned_with_sizes(
        &self,
        plan: &Plan,
        local_size: &dyn Fn(&RelPath) -> u64,
        remote_size: &dyn Fn(&RelPath) -> u64,
    ) {
        let mut inner = self.inner();
        inner.uploads.clear();
        inner.downloads.clear();
        inner.local_deletes.clear();
        inner.remote_deletes.clear();
        inner.other.clear();
        let mut any = false;
        for op in &plan.ops {
            let (kind, path, size) = match op {
                PlanOp::Upload { path, .. } => (&mut inner.uploads, path, local_size(path)),
                PlanOp::Download { path, remote, .. } => (&mut inner.downloads, path, remote.size),
                PlanOp::DeleteLocal { path, .. } | PlanOp::RemoveDirLocal { path } => {
                    (&mut inner.local_deletes, path, local_size(path))
                }
                PlanOp::DeleteRemote { path, .. } => {
                    (&mut inner.remote_deletes, path, remote_size(path))
                }
                PlanOp::MoveRemote { to, .. } | PlanOp::MoveLocal { to, .. } => {
                    (&mut inner.other, to, 0)
                }
                PlanOp::SetModeRemote { path, .. }
                | PlanOp::SetModeLocal { path, .. }
                | PlanOp::MakeDirLocal { path, .. }
                | PlanOp::MakeDirRemote { path }
                | PlanOp::ConflictCopy { path, .. } => (&mut inner.other, path, 0),
                // Upkeep of base, not a difference between the sides.
                PlanOp::RecordBase { .. }
                | PlanOp::ForgetBase { .. }
                | PlanOp::ProtectLocal { .. }
                | PlanOp::UnprotectLocal { .. } => continue,
            };
            kind.insert(path.clone(), size);
            any = true;
        }
        inner.blocked = plan.blocked.iter().map(blocked_reason).collect();
        inner.mass_delete_held = mass_delete_hold(&plan.blocked);
        if any && inner.batch.is_none() {
            inner.batch = Some(Batch {
                started: Instant::now(),
                files_done: 0,
                bytes_done: 0,
                finished_bytes: 0,
            });
        }
    }

    /// Registers `path` as in flight with `total` bytes to move, until the guard is dropped.
    pub fn transfer(&self, path: &RelPath, direction: Direction, total: u64) -> TransferGuard {
        self.inner().in_flight.insert(
            path.clone(),
            Flight {
                direction,
                done: 0,
                total,
            },
        );
        TransferGuard {
            progress: self.clone(),
            path: path.clone(),
        }
    }

    /// `bytes` moved that belong to no file in flight (chunks the server asked for again).
    pub fn moved(&self, bytes: u64) {
        if let Some(batch) = &mut self.inner().batch {
            batch.bytes_done += bytes;
        }
    }

    /// `path` was uploaded and committed, or downloaded and placed: it is no longer pending.
    pub fn file_done(&self, path: &RelPath, direction: Direction) {
        let mut inner = self.inner();
        let pending = match direction {
            Direction::Upload => &mut inner.uploads,
            Direction::Download => &mut inner.downloads,
        };
        let size = pending.remove(path).unwrap_or(0);
        if let Some(batch) = &mut inner.batch {
            batch.files_done += 1;
            batch.finished_bytes += size;
        }
    }

    /// A pass starts.
    pub fn pass_started(&self) {
        self.inner().syncing = true;
    }

    /// A pass completed: records its outcome, and ends its batch (returned, if it had one).
    pub fn pass_done(&self, report: &PassReport, now_ms: i64) -> Option<BatchSummary> {
        let mut inner = self.inner();
        inner.syncing = false;
        inner.last_pass_ms = Some(now_ms);
        inner.last_error = None;
        inner.last_in_sync = report.in_sync;
        inner.blocked = report.blocked.iter().map(blocked_reason).collect();
        inner.mass_delete_held = mass_delete_hold(&report.blocked);
        inner.skipped = report.skipped.iter().map(skipped_reason).collect();
        inner.in_flight.clear();
        inner.batch.take().map(|batch| BatchSummary {
            files: batch.files_done,
            bytes: batch.bytes_done,
            elapsed: batch.started.elapsed(),
        })
    }

    /// A pass failed with `error` (shown until a pass completes); its batch ends.
    pub fn pass_failed(&self, error: &str) {
        let mut inner = self.inner();
        inner.syncing = false;
        inner.last_error = Some(error.to_owned());
        inner.in_flight.clear();
        inner.batch = None;
    }

    /// The pass was dropped (the daemon paused or stops); its batch ends.
    pub fn pass_abandoned(&self) {
        let mut inner = self.inner();
        inner.syncing = false;
        inner.in_flight.clear();
        inner.batch = None;
    }

    /// Pauses or resumes (the control socket).
    pub fn set_paused(&self, paused: bool) {
        self.shared.paused.store(paused, Ordering::SeqCst);
    }

    /// Whether the user paused syncing.
    pub fn is_paused(&self) -> bool {
        self.shared.paused.load(Ordering::SeqCst)
    }

    /// The server in use.
    pub fn set_server(&self, server: &str) {
        server.clone_into(&mut self.inner().server);
    }

    /// A pass walked the whole folder.
    pub fn count_full_walk(&self) {
        self.shared.full_walks.fetch_add(1, Ordering::Relaxed);
    }

    /// A pass looked only at what changed.
    pub fn count_incremental_pass(&self) {
        self.shared
            .incremental_passes
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The transfers of the pass under way, if it has any.
    pub fn batch(&self) -> Option<BatchProgress> {
        batch_progress(&self.inner())
    }

    /// Everything, as the control socket answers it (`folder` and `pid` are the caller's).
    pub fn status(&self) -> FolderStatus {
        let inner = self.inner();
        let pending = Pending {
            uploads: pending_kind(&inner.uploads),
            downloads: pending_kind(&inner.downloads),
            local_deletes: pending_kind(&inner.local_deletes),
            remote_deletes: pending_kind(&inner.remote_deletes),
            other: pending_kind(&inner.other),
        };
        let in_sync = inner.last_pass_ms.is_some()
            && inner.last_in_sync
            && inner.last_error.is_none()
            && pending.total_files() == 0
            && inner.blocked.is_empty()
            && inner.in_flight.is_empty();
        FolderStatus {
            folder: String::new(),
            daemon: if self.is_paused() {
                DaemonState::Paused
            } else {
                DaemonState::Running
            },
            pid: None,
            syncing: inner.syncing,
            server: inner.server.clone(),
            in_sync,
            last_pass_ms: inner.last_pass_ms,
            pending,
            transfers: inner
                .in_flight
                .iter()
                .map(|(path, flight)| Transfer {
                    path: path.to_string(),
                    direction: flight.direction,
                    bytes_done: flight.done,
                    bytes_total: flight.total,
                })
                .collect(),
            progress: batch_progress(&inner),
            last_error: inner.last_error.clone(),
            skipped: inner
                .skipped
                .iter()
                .take(MAX_LISTED_PATHS)
                .cloned()
                .collect(),
            blocked: inner
                .blocked
                .iter()
                .take(MAX_LISTED_PATHS)
                .cloned()
                .collect(),
            mass_delete_held: inner.mass_delete_held,
            notes: Vec::new(),
            full_walks: self.shared.full_walks.load(Ordering::Relaxed),
            incremental_passes: self.shared.incremental_passes.load(Ordering::Relaxed),
        }
    }
}

impl TransferGuard {
    /// `bytes` more of this file moved.
    pub fn add(&self, bytes: u64) {
        let mut inner = self.progress.inner();
        if let Some(flight) = inner.in_flight.get_mut(&self.path) {
            flight.done += bytes;
        }
        if let Some(batch) = &mut inner.batch {
            batch.bytes_done += bytes;
        }
    }
}

impl Drop for TransferGuard {
    fn drop(&mut self) {
        self.progress.inner().in_flight.remove(&self.path);
    }
}

/// A blocked path as the user reads it.
pub fn skipped_reason(skipped: &crate::scan::Skipped) -> PathReason {
    PathReason {
        path: skipped.path.clone(),
        reason: skipped.reason.clone(),
    }
}

/// A blocked path as the status document shows it.
pub fn blocked_reason(blocked: &Blocked) -> PathReason {
    let reason = match &blocked.reason {
        BlockReason::LockedBy(device) => format!("locked by {device}"),
        BlockReason::LocalRootMissing => {
            "the folder is missing, unreadable or emptied: nothing is deleted".to_owned()
        }
        BlockReason::MassDeleteHeld {
            files,
            folder_files,
        } => format!(
            "mass delete held: {files} of {folder_files} files were deleted on the server and              are kept here until `syncstore sync --allow-mass-delete` (or restored on the server)"
        ),
    };
    PathReason {
        path: blocked
            .path
            .as_ref()
            .map_or_else(|| "(whole folder)".to_owned(), ToString::to_string),
        reason,
    }
}

/// What the mass-delete interlock holds among `blocked`, as the status document shows it.
pub fn mass_delete_hold(blocked: &[Blocked]) -> Option<MassDeleteHold> {
    blocked.iter().find_map(|blocked| match blocked.reason {
        BlockReason::MassDeleteHeld {
            files,
            folder_files,
        } => Some(MassDeleteHold {
            files: files as u64,
            folder_files: folder_files as u64,
        }),
        _ => None,
    })
}

fn pending_kind(paths: &BTreeMap<RelPath, u64>) -> PendingKind {
    PendingKind {
        files: paths.len() as u64,
        bytes: paths.values().sum(),
        paths: paths
            .keys()
            .take(MAX_LISTED_PATHS)
            .map(ToString::to_string)
            .collect(),
    }
}

fn batch_progress(inner: &Inner) -> Option<BatchProgress> {
    let batch = inner.batch.as_ref()?;
    let pending_files = (inner.uploads.len() + inner.downloads.len()) as u64;
    let pending_bytes: u64 = inner.uploads.values().chain(inner.downloads.values()).sum();
    let files_total = batch.files_done + pending_files;
    if files_total == 0 {
        return None;
    }
    let bytes_total = (batch.finished_bytes + pending_bytes).max(batch.bytes_done);
    let elapsed = batch.started.elapsed();
    Some(rate_and_eta(
        batch.files_done,
        files_total,
        batch.bytes_done,
        bytes_total,
        elapsed,
    ))
}

/// The batch's numbers with its average rate and the time left at that rate.
pub fn rate_and_eta(
    files_done: u64,
    files_total: u64,
    bytes_done: u64,
    bytes_total: u64,
    elapsed: Duration,
) -> BatchProgress {
    let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    let bytes_per_sec = if elapsed_ms == 0 {
        0
    } else {
        u64::try_from(u128::from(bytes_done) * 1000 / u128::from(elapsed_ms)).unwrap_or(u64::MAX)
    };
    let eta_secs =
        (bytes_per_sec > 0).then(|| bytes_total.saturating_sub(bytes_done) / bytes_per_sec);
    BatchProgress {
        files_done,
        files_total,
        bytes_done,
        bytes_total,
        elapsed_ms,
        bytes_per_sec,
        eta_secs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncstore_proto::{ContentHash, EntryKind};

    fn path(text: &str) -> RelPath {
        RelPath::new(text).unwrap()
    }

    fn local(size: u64) -> LocalNode {
        LocalNode {
            kind: EntryKind::File,
            hash: Some(ContentHash([1; 32])),
            size,
            mtime_ns: 0,
            inode: 1,
            ctime_ns: 0,
            executable: false,
        }
    }

    #[test]
    fn a_plan_sets_pending_counts_and_transfers_count_down() {
        let progress = Progress::default();
        let plan = Plan {
            ops: vec![
                PlanOp::Upload {
                    path: path("a.txt"),
                    base: syncstore_proto::Precondition::MustNotExist,
                    hash: ContentHash([1; 32]),
                    executable: false,
                },
                PlanOp::DeleteRemote {
                    path: path("gone.txt"),
                    rev: syncstore_proto::Revision(3),
                },
            ],
            ..Plan::default()
        };
        let locals = BTreeMap::from([(path("a.txt"), local(1000))]);
        progress.planned(&plan, &locals, &BTreeMap::new());
        let status = progress.status();
        assert_eq!(status.pending.uploads.files, 1);
        assert_eq!(status.pending.uploads.bytes, 1000);
        assert_eq!(status.pending.uploads.paths, ["a.txt"]);
        assert_eq!(status.pending.remote_deletes.files, 1);
        assert!(!status.in_sync);
        let batch = status.progress.unwrap();
        assert_eq!((batch.files_done, batch.files_total), (0, 1));
        assert_eq!(batch.bytes_total, 1000);

        let guard = progress.transfer(&path("a.txt"), Direction::Upload, 1000);
        guard.add(400);
        let status = progress.status();
        assert_eq!(status.transfers.len(), 1);
        assert_eq!(status.transfers[0].bytes_done, 400);
        assert_eq!(status.progress.unwrap().bytes_done, 400);
        guard.add(600);
        drop(guard);
        progress.file_done(&path("a.txt"), Direction::Upload);
        let status = progress.status();
        assert!(status.transfers.is_empty());
        assert_eq!(status.pending.uploads.files, 0);
        let batch = status.progress.unwrap();
        assert_eq!((batch.files_done, batch.bytes_done), (1, 1000));

        let summary = progress.pass_done(&PassReport::default(), 5).unwrap();
        assert_eq!((summary.files, summary.bytes), (1, 1000));
        assert!(progress.status().progress.is_none());
    }

    #[test]
    fn in_sync_needs_a_completed_pass_and_nothing_left() {
        let progress = Progress::default();
        assert!(!progress.status().in_sync, "no pass yet");
        progress.planned(&Plan::default(), &BTreeMap::new(), &BTreeMap::new());
        let report = PassReport {
            in_sync: true,
            ..PassReport::default()
        };
        assert_eq!(
            progress.pass_done(&report, 7),
            None,
            "no batch: nothing to log"
        );
        let status = progress.status();
        assert!(status.in_sync);
        assert_eq!(status.last_pass_ms, Some(7));
        progress.pass_failed("server unreachable");
        let status = progress.status();
        assert!(!status.in_sync);
        assert_eq!(status.last_error.as_deref(), Some("server unreachable"));
    }

    #[test]
    fn counters_and_pause_are_shared_by_clones() {
        let progress = Progress::default();
        let other = progress.clone();
        other.count_full_walk();
        other.count_incremental_pass();
        other.count_incremental_pass();
        other.set_paused(true);
        let status = progress.status();
        assert_eq!((status.full_walks, status.incremental_passes), (1, 2));
        assert_eq!(status.daemon, DaemonState::Paused);
        assert!(progress.is_paused());
    }

    #[test]
    fn rate_and_eta_from_the_average_since_the_start() {
        let batch = rate_and_eta(1, 4, 50_000_000, 200_000_000, Duration::from_secs(5));
        assert_eq!(batch.bytes_per_sec, 10_000_000);
        assert_eq!(batch.eta_secs, Some(15));
        let batch = rate_and_eta(0, 4, 0, 200, Duration::ZERO);
        assert_eq!((batch.bytes_per_sec, batch.eta_secs), (0, None));
    }
}
