//! The sync engine: one pass = refresh the remote tree, scan, plan, apply; repeated until the
//! plan is empty.
//!
//! Every step is applied with its re-check (a download replaces a local file only if it still
//! holds what the plan expected; an upload is committed only if the file did not change while
//! being read). Base updates of one applied plan are committed together once the steps' effects
//! are durable; a path to be deleted locally is cleared from base, durably, before the file goes.
//! A crash therefore leaves base at worst stale, and the planner is safe for a stale base.

use crate::early_upload::EarlyUpload;
use crate::folder::{FileId, FolderId};
use crate::fsutil::{rename_noreplace, safe_join};
use crate::http::{ApiClient, ApiError};
use crate::remote::RemoteTree;
use crate::scan::{scan, stamp_of, HashCache, IgnoreRules, Scan, Skipped, Stamp};
use crate::state::{ServerIdentity, StateDb};
use anyhow::Context;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use syncstore_durable::Writeback;
use syncstore_plan::{BaseNode, Blocked, LocalNode, Plan, PlanInput, PlanOp, RemoteNode};
use syncstore_proto::{
    encode_frame_header, ChunkHash, ChunkRef, ContentHash, Cursor, DeviceName, EntryKind,
    JournalTag, NamespaceId, Op, OpResult, Precondition, RelPath, RemoteEntry, Revision,
};
use tokio::time::Instant;

/// Most rounds of plan-and-apply in one pass before waiting for the next trigger.
const MAX_ROUNDS: usize = 32;
/// Target size of one upload pack.
const PACK_BYTES: usize = 8 * 1024 * 1024;
/// Most bytes fetched in one download request.
const DOWNLOAD_BATCH_BYTES: u64 = 64 * 1024 * 1024;
/// Bytes of a download written between two requests to start writeback.
const WRITEBACK_BYTES: u64 = 8 * 1024 * 1024;
/// Most files uploaded and committed as one group.
const UPLOAD_GROUP: usize = 1000;
/// Most ops in one `/ops` request.
const OPS_BATCH: usize = 1000;
/// First wait before a download that failed for want of a chunk is tried again; it doubles up
/// to [`DOWNLOAD_RETRY_MAX`].
const DOWNLOAD_RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait before a failed download is tried again.
const DOWNLOAD_RETRY_MAX: Duration = Duration::from_secs(60);
/// Free space a download leaves on the disk, for the state database's commit.
const DISK_RESERVE_BYTES: u64 = 1024 * 1024;

/// What one pass achieved.
#[derive(Debug, Default)]
pub struct PassReport {
    /// Local folder and server hold the same tree.
    pub in_sync: bool,
    /// Steps applied.
    pub applied: usize,
    pub blocked: Vec<Blocked>,
    pub skipped: Vec<Skipped>,
    /// Something is settling (a file being written, a conflict answer): pass again soon.
    pub retry_soon: bool,
    /// Some files wait to be tried again (a download the server could not serve, an upload
    /// the server had no room for): pass again after this long.
    pub retry_after: Option<Duration>,
}

/// A plan computed without applying it, with the trees it came from (for `status`).
pub struct Preview {
    pub plan: Plan,
    pub local: BTreeMap<RelPath, LocalNode>,
    pub remote: BTreeMap<RelPath, RemoteEntry>,
    pub skipped: Vec<Skipped>,
    /// Why base cannot be trusted, when it cannot: the next pass re-adopts the folder (the plan
    /// above is already the one for an empty base: nothing is deleted).
    pub untrusted: Option<String>,
    /// When and why the folder was last re-adopted, if ever.
    pub readopted: Option<String>,
}

/// The sync engine of one folder.
pub struct Engine {
    root: PathBuf,
    tmp_dir: PathBuf,
    api: Arc<ApiClient>,
    state: StateDb,
    remote: Option<RemoteTree>,
    cache: HashCache,
    device: Option<DeviceName>,
    retry_soon: bool,
    notices: Vec<String>,
    /// Files checked for deletion whose base entry is already gone: path → stamp when checked.
    cleared_for_delete: HashMap<RelPath, Stamp>,
    /// Starts the disk on downloaded bytes while the rest arrive.
    writeback: Arc<Writeback>,
    /// The server identity base was made against as saved in state, and as learned since
    /// (saved with the next base commit).
    identity: ServerIdentity,
    saved_identity: ServerIdentity,
    /// Why base cannot be trusted (the account was re-created, the journal lost what this
    /// folder saw): the next pass re-adopts the folder as on a first sync.
    untrusted: Option<String>,
    /// Chunks the server asked for in its last journal answer (lost or found corrupt there).
    wanted: HashSet<ChunkHash>,
    /// The folder as opened: checked before every scan.
    folder: FolderId,
    /// The root's device and inode as saved in state (saved by the first pass).
    saved_root: Option<FileId>,
    /// Files whose download or upload failed in a way that waits (a chunk the server lost, a
    /// full server): path → (not before, the wait after the next failure).
    waits: HashMap<RelPath, (Instant, Duration)>,
    /// Opened by [`Engine::open_read_only`]: previews only, and nothing is saved.
    read_only: bool,
    /// The folder's lock, held while this engine may write (not by a read-only one).
    lock: Option<crate::folder::FolderLock>,
}

/// An empty base, planned against when base cannot be trusted.
static EMPTY_BASE: BTreeMap<RelPath, BaseNode> = BTreeMap::new();

impl Engine {
    /// Opens the folder's state. Talks to no server yet.
    ///
    /// # Errors
    /// When `.syncstore/` cannot be created or its state cannot be read.
    pub fn open(root: &Path, api: Arc<ApiClient>) -> anyhow::Result<Engine> {
        let meta_dir = crate::config::meta_dir(root);
        crate::config::create_private_dir(&meta_dir)?;
        // Before anything in `.syncstore/` is touched: `tmp/` below may hold a running
        // daemon's downloads.
        let lock = crate::folder::FolderLock::acquire(root, &meta_dir)?;
        let tmp_dir = meta_dir.join("tmp");
        crate::config::create_private_dir(&tmp_dir)?;
        // Temp files of an interrupted run are garbage: their content was never placed.
        if let Ok(entries) = std::fs::read_dir(&tmp_dir) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let state = StateDb::open(&meta_dir)?;
        let mut engine = Engine::with_state(root, api, state, tmp_dir, false)?;
        engine.lock = Some(lock);
        Ok(engine)
    }

    /// Opens the folder's state for [`Engine::preview`] only (`status`): nothing in
    /// `.syncstore/` is created, written or removed (the state database is opened read-only,
    /// `tmp/`, where a running daemon writes its downloads, is left alone), and
    /// [`Engine::sync_pass`] refuses to run.
    ///
    /// # Errors
    /// When the folder has no `.syncstore/` or its state cannot be read.
    pub fn open_read_only(root: &Path, api: Arc<ApiClient>) -> anyhow::Result<Engine> {
        let meta_dir = crate::config::meta_dir(root);
        anyhow::ensure!(
            meta_dir.is_dir(),
            "{} is not set up yet: run `syncstore sync` on it first",
            root.display()
        );
        let state = StateDb::open_read_only(&meta_dir)?;
        Engine::with_state(root, api, state, meta_dir.join("tmp"), true)
    }

    fn with_state(
        root: &Path,
        api: Arc<ApiClient>,
        state: StateDb,
        tmp_dir: PathBuf,
        read_only: bool,
    ) -> anyhow::Result<Engine> {
        let identity = state.identity()?;
        let marker = crate::config::meta_dir(root).join("state.sqlite");
        // A read-only look at a folder whose state was moved aside has no marker to check.
        let folder = if read_only && !marker.exists() {
            FolderId::open_without_marker(root)
        } else {
            FolderId::open(root, &marker)
        }
        .with_context(|| format!("could not look at {}", root.display()))?;
        // A root with another device or inode than at the last sync was moved, copied or
        // restored: its base may not describe it, so it is re-adopted (nothing is deleted).
        let saved_root = state
            .meta("root_id")?
            .as_deref()
            .and_then(FileId::from_text);
        let untrusted = saved_root
            .filter(|saved| *saved != folder.root_id)
            .map(|_| {
                "the folder's device or inode changed since its last sync (it was moved, copied or \
             restored, or its disk changed)"
                    .to_owned()
            });
        let writeback = Arc::new(Writeback::new().context("could not start a writeback thread")?);
        let mut cache = HashCache::default();
        for (path, node) in &state.base {
            if let Some(hash) = node.hash {
                let chunks = state.base_chunks.get(path).map_or(&[][..], Vec::as_slice);
                cache.insert(path.clone(), Stamp::of_base(node), hash, chunks);
            }
        }
        Ok(Engine {
            root: root.to_path_buf(),
            tmp_dir,
            api,
            state,
            remote: None,
            cache,
            device: None,
            retry_soon: false,
            notices: Vec::new(),
            cleared_for_delete: HashMap::new(),
            writeback,
            identity,
            saved_identity: identity,
            untrusted,
            saved_root,
            folder,
            wanted: HashSet::new(),
            waits: HashMap::new(),
            read_only,
            lock: None,
        })
    }

    /// Marks base as not to be trusted, for `why`; the next pass re-adopts the folder.
    fn distrust(&mut self, why: String) {
        if self.untrusted.is_none() {
            tracing::debug!(why, "base cannot be trusted");
            self.untrusted = Some(why);
        }
        // The journal position is what cannot be trusted: stop checking it.
        self.identity.known = None;
    }

    /// Distrusts base when a server answer says the journal no longer holds the known position
    /// (`diverged`) or names another namespace than base was made against; returns whether
    /// the history is still the known one.
    fn check_history(&mut self, diverged: bool, namespace: Option<NamespaceId>) -> bool {
        let mut unchanged = true;
        // The namespace first: a re-adoption saves the one the server has now.
        if let Some(namespace) = namespace {
            if self
                .identity
                .namespace
                .is_some_and(|known| known != namespace)
            {
                self.distrust("the server's account changed while connected".to_owned());
                self.identity.namespace = Some(namespace);
                unchanged = false;
            }
        }
        if diverged {
            self.distrust(
                "the server's journal no longer holds the changes this folder saw: its \
                 database was restored from a backup, or replaced"
                    .to_owned(),
            );
            unchanged = false;
        }
        unchanged
    }

    /// Records a journal position the server answered with, if it is newer than the known one.
    fn note_known(&mut self, cursor: Cursor, tag: JournalTag) {
        if self.untrusted.is_some() {
            return;
        }
        if self.identity.known.is_none_or(|(known, _)| cursor >= known) {
            self.identity.known = Some((cursor, tag));
        }
    }

    /// Forgets base and plans as on a first sync: nothing is deleted on either side, local
    /// files the server lacks are uploaded, differing contents become conflicted copies, and
    /// identical files are only recorded (Unison's rule for an archive it cannot trust).
    fn readopt(&mut self, why: String) -> anyhow::Result<()> {
        tracing::warn!(
            folder = %self.root.display(),
            "{why}; re-adopting the folder as on a first sync: nothing is deleted on either side, \
             files the server lacks are uploaded, and files that differ are kept as conflicted copies"
        );
        let identity = ServerIdentity {
            namespace: self.identity.namespace,
            known: None,
        };
        let stamp = chrono::Local::now().format("%Y-%m-%d %H:%M:%S");
        self.state
            .readopt(&identity, &format!("{stamp}: {why}"))
            .context("could not re-adopt the folder")?;
        self.identity = identity;
        self.saved_identity = identity;
        self.cleared_for_delete.clear();
        self.notices.push(format!(
            "{why}; the folder was re-adopted as on a first sync (nothing deleted)"
        ));
        // The whole tree again, and from now on the journal positions it gives.
        self.remote = None;
        Ok(())
    }

    /// Saves the server identity if it changed since it was last saved (inside a batch, it
    /// commits with the batch's base updates).
    fn save_identity(&mut self) -> anyhow::Result<()> {
        if self.untrusted.is_some() {
            return Ok(());
        }
        if self.identity != self.saved_identity {
            self.state.save_identity(&self.identity)?;
            self.saved_identity = self.identity;
        }
        if self.saved_root != Some(self.folder.root_id) {
            self.state
                .set_meta("root_id", &self.folder.root_id.to_text())?;
            self.saved_root = Some(self.folder.root_id);
        }
        Ok(())
    }

    /// The synced folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The API client in use.
    pub fn api(&self) -> &Arc<ApiClient> {
        &self.api
    }

    /// Loads who we are and the whole remote tree, once.
    ///
    /// # Errors
    /// When the server cannot be reached or refuses the token.
    pub async fn connect(&mut self) -> Result<(), ApiError> {
        if self.device.is_none() {
            let whoami = self.api.whoami().await?;
            tracing::info!(user = %whoami.user, device = %whoami.device, server = %self.api.current_server(), "connected");
            match self.identity.namespace {
                Some(saved) if saved != whoami.namespace => self.distrust(format!(
                    "the server's account {} is not the one this folder was synced with (its \
                     namespace id changed: the account was re-created, or this is another server)",
                    whoami.user
                )),
                None if !self.state.base.is_empty() => self.distrust(
                    "this folder's state does not say which server account it was synced with"
                        .to_owned(),
                ),
                _ => {}
            }
            self.identity.namespace = Some(whoami.namespace);
            self.device = Some(whoami.device);
        }
        if self.remote.is_none() {
            let tree = self.api.tree().await?;
            self.check_history(false, Some(tree.namespace));
            if let Some((known, _)) = self.identity.known {
                if tree.cursor < known {
                    self.distrust(format!(
                        "the server's journal ends at {}, before {known}, which this folder saw: \
                         the server's database was restored from an older backup",
                        tree.cursor
                    ));
                }
            }
            self.remote = Some(RemoteTree::from_listing(
                tree.cursor,
                tree.entries,
                tree.locks,
            ));
            self.check_my_locks();
        }
        Ok(())
    }

    /// Applies pending remote changes (without waiting for new ones).
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub async fn refresh_remote(&mut self) -> Result<(), ApiError> {
        self.connect().await?;
        loop {
            let cursor = self.remote.as_ref().map(|r| r.cursor).unwrap_or_default();
            let page = self
                .api
                .changes(cursor, Duration::ZERO, self.identity.known)
                .await?;
            self.check_history(page.diverged, Some(page.namespace));
            self.wanted = page.wanted.iter().copied().collect();
            if page.reset {
                tracing::warn!(
                    "the server's journal does not know our cursor; reloading the whole tree"
                );
                self.remote = None;
                self.connect().await?;
                continue;
            }
            let remote = self.remote.as_mut().expect("connected");
            for change in &page.changes {
                remote.apply(change, self.device.as_ref());
            }
            remote.cursor = remote.cursor.max(page.cursor);
            self.note_known(page.cursor, page.cursor_tag);
            if !page.more {
                return Ok(());
            }
        }
    }

    /// The remote cursor reached so far.
    pub fn remote_cursor(&self) -> Option<syncstore_proto::Cursor> {
        self.remote.as_ref().map(|r| r.cursor)
    }

    /// Checks that the folder is still the one being synced (THREE-TREE row 36).
    ///
    /// # Errors
    /// [`crate::folder::FolderStopped`] when a disk was mounted over it, it was replaced, or its
    /// marker is gone.
    pub fn check_folder(&self) -> Result<(), crate::folder::FolderStopped> {
        self.folder.check()
    }

    /// Scans the folder; with `early`, the chunks of large changed files are uploaded while it
    /// runs (a pass does that; a preview for `status` never sends anything).
    fn scan(&mut self, early: Option<&EarlyUpload>) -> Scan {
        let rules = IgnoreRules::load(&self.root);
        let root = self.root.clone();
        let cache = &mut self.cache;
        let mut sink = early.map(EarlyUpload::sink);
        let mut result = tokio::task::block_in_place(|| scan(&root, &rules, cache, sink.as_mut()));
        if result.unsettled {
            self.retry_soon = true;
        }
        // Remote and base paths the rules exclude are never planned either.
        let remote_paths = self
            .remote
            .iter()
            .flat_map(|r| r.by_path.values().map(|e| (&e.path, e.kind)));
        let base_paths = self.state.base.iter().map(|(p, n)| (p, n.kind));
        for (path, kind) in remote_paths.chain(base_paths) {
            if rules.is_ignored(path, kind) {
                result.untouchable.insert(path.clone());
            }
        }
        result
    }

    /// Locks in force now that another device holds.
    pub fn locked_by_others(&self) -> BTreeMap<RelPath, DeviceName> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let Some(remote) = self.remote.as_ref() else {
            return BTreeMap::new();
        };
        remote
            .locks
            .values()
            .filter(|lock| lock.in_force(now_ms) && Some(&lock.device) != self.device.as_ref())
            .map(|lock| (lock.path.clone(), lock.device.clone()))
            .collect()
    }

    /// When the next lock in force ends by itself (a pass is due then), in ms since the epoch.
    pub fn next_lock_expiry_ms(&self) -> Option<i64> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        self.remote
            .as_ref()?
            .locks
            .values()
            .filter_map(|lock| lock.expires_ms)
            .filter(|end| *end > now_ms)
            .min()
    }

    /// Reports locks of this device that are gone: broken by another device (from the journal)
    /// or missing from a fresh listing (released, broken or expired while we were away).
    fn check_my_locks(&mut self) {
        let (Some(remote), Some(me)) = (self.remote.as_mut(), self.device.as_ref()) else {
            return;
        };
        for (path, breaker) in remote.broken_locks.drain(..) {
            tracing::warn!(%path, by = %breaker, "your lock on {path} was broken by {breaker}");
            self.notices
                .push(format!("your lock on {path} was broken by {breaker}"));
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        let held: BTreeMap<RelPath, i64> = remote
            .locks
            .values()
            .filter(|lock| &lock.device == me && lock.in_force(now_ms))
            .map(|lock| (lock.path.clone(), lock.since_ms))
            .collect();
        let mut remembered = self.state.my_locks().unwrap_or_default();
        for path in remote.released_locks.drain(..) {
            remembered.remove(&path);
        }
        for path in remembered.keys() {
            if !held.contains_key(path)
                && !self
                    .notices
                    .iter()
                    .any(|n| n.contains(&format!(" {path} ")))
            {
                tracing::warn!(%path, "your lock on {path} is no longer held (released, broken or expired)");
                self.notices
                    .push(format!("your lock on {path} is no longer held"));
            }
        }
        if held != remembered && !self.read_only {
            if let Err(err) = self.state.set_my_locks(&held) {
                tracing::warn!(cause = format!("{err:#}"), "could not save lock state");
            }
        }
    }

    /// Messages for the user gathered since the last call (e.g. a lock of ours was broken).
    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    /// Makes local files under another device's lock read-only, and gives files whose lock went
    /// back the mode they had.
    fn apply_lock_modes(&mut self, scan: &Scan) {
        use std::os::unix::fs::PermissionsExt;
        let locked = self.locked_by_others();
        let mut remembered = self.state.readonly_modes().unwrap_or_default();
        let mut changed = false;
        for (path, node) in &scan.local {
            if node.kind != EntryKind::File || !covered(path, &locked) {
                continue;
            }
            let Ok(full) = safe_join(&self.root, path) else {
                continue;
            };
            let Ok(meta) = std::fs::symlink_metadata(&full) else {
                continue;
            };
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o222 != 0 {
                if std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode & !0o222))
                    .is_ok()
                {
                    remembered.entry(path.clone()).or_insert(mode);
                    changed = true;
                }
            } else {
                remembered.entry(path.clone()).or_insert(mode | 0o200);
            }
        }
        let released: Vec<RelPath> = remembered
            .keys()
            .filter(|p| !covered(p, &locked))
            .cloned()
            .collect();
        for path in released {
            let mode = remembered.remove(&path).expect("key just listed");
            changed = true;
            if let Ok(full) = safe_join(&self.root, &path) {
                if let Ok(meta) = std::fs::symlink_metadata(&full) {
                    // The executable bit may have been synced meanwhile: it is kept, only the
                    // write bits come back.
                    let executable = crate::fsutil::is_executable(&meta);
                    let mode = crate::fsutil::with_executable(mode, executable);
                    if meta.is_file() {
                        let _ =
                            std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode));
                    }
                }
            }
        }
        if changed {
            if let Err(err) = self.state.set_readonly_modes(&remembered) {
                tracing::warn!(cause = format!("{err:#}"), "could not save file modes");
            }
        }
    }

    fn make_plan(&self, scan: &Scan, remote: &BTreeMap<RelPath, RemoteNode>) -> Plan {
        let now_stamp = chrono::Local::now().format("%Y-%m-%d %H%M%S").to_string();
        let locked_by_others = self.locked_by_others();
        let device = self
            .device
            .clone()
            .unwrap_or_else(|| DeviceName::new("device").expect("valid"));
        // Base that cannot be trusted is planned as absent: a first sync, which deletes nothing.
        let base = if self.untrusted.is_some() {
            &EMPTY_BASE
        } else {
            &self.state.base
        };
        syncstore_plan::plan(&PlanInput {
            base,
            local: &scan.local,
            remote,
            device: &device,
            now_stamp: &now_stamp,
            locked_by_others: &locked_by_others,
            read_only_for_locks: &BTreeMap::new(), // TODO(issue 12): wire
            ignored: &scan.untouchable,
            local_root_ok: scan.root_ok,
            remote_complete: true,
        })
    }

    /// Computes what a pass would do, changing nothing.
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub async fn preview(&mut self) -> anyhow::Result<Preview> {
        self.check_folder()?;
        self.refresh_remote().await?;
        let scan = self.scan(None);
        let remote_view = self.remote.as_ref().expect("connected").plan_view();
        let plan = self.make_plan(&scan, &remote_view);
        Ok(Preview {
            plan,
            local: scan.local,
            remote: self.remote.as_ref().expect("connected").by_path.clone(),
            skipped: scan.skipped,
            untrusted: self.untrusted.clone(),
            readopted: self.state.meta("readopted")?,
        })
    }

    /// One full two-way pass: plan and apply until nothing is left to do.
    ///
    /// # Errors
    /// When the server cannot be reached or the folder cannot be written; the pass can simply be
    /// run again later.
    #[tracing::instrument(skip(self), fields(root = %self.root.display()))]
    pub async fn sync_pass(&mut self) -> anyhow::Result<PassReport> {
        anyhow::ensure!(
            !self.read_only,
            "the folder's state was opened read-only (for status)"
        );
        let mut report = PassReport::default();
        self.retry_soon = false;
        for _round in 0..MAX_ROUNDS {
            self.check_folder()?;
            self.refresh_remote().await?;
            if let Some(why) = self.untrusted.take() {
                self.readopt(why)?;
                self.refresh_remote().await?;
            }
            if !self.wanted.is_empty() {
                self.upload_wanted().await;
            }
            self.check_my_locks();
            let early = EarlyUpload::start(Arc::clone(&self.api));
            let mut scan = self.scan(Some(&early));
            // A walk that raced a rename between directories saw the file nowhere: that is no
            // delete, so the walk is repeated (a few times: a folder whose entries never stop
            // changing is planned as it is, and passes again soon).
            for _ in 0..3 {
                if !scan.entries_moved {
                    break;
                }
                tracing::debug!("entries moved during the scan; scanning again");
                scan = self.scan(Some(&early));
            }
            if scan.entries_moved {
                self.retry_soon = true;
            }
            early.finish().await;
            let remote_view = self.remote.as_ref().expect("connected").plan_view();
            let plan = self.make_plan(&scan, &remote_view);
            report.blocked = plan.blocked.clone();
            report.skipped = scan.skipped.clone();
            if plan.ops.is_empty() {
                self.save_identity()?;
                self.apply_lock_modes(&scan);
                // Skipped entries (symlinks, unreadable files, unsyncable names) mean the two sides
                // are not identical, even when there is nothing left to do about it.
                report.in_sync =
                    plan.blocked.is_empty() && scan.root_ok && report.skipped.is_empty();
                report.retry_soon = self.retry_soon;
                return Ok(report);
            }
            tracing::debug!(ops = plan.ops.len(), "applying plan");
            let n_ops = plan.ops.len();
            let (applied, waiting) = self.execute(plan.ops).await?;
            report.applied += applied;
            report.retry_after = self.next_retry();
            if applied == 0 {
                // Steps that wait for their retry time are no reason to pass again at once.
                report.retry_soon = self.retry_soon || applied + waiting < n_ops;
                return Ok(report);
            }
        }
        report.retry_soon = true;
        Ok(report)
    }

    /// How long until the first file that waits may be tried again.
    fn next_retry(&self) -> Option<Duration> {
        let now = Instant::now();
        // A wait already over is no reason to pass again: the file was tried since, or is
        // no longer planned.
        self.waits
            .values()
            .filter(|(at, _)| *at > now)
            .map(|(at, _)| at.saturating_duration_since(now))
            .min()
    }

    /// Whether `path` waits for its retry time; counts it in `waiting` if so.
    fn waits_now(&self, path: &RelPath) -> bool {
        self.waits
            .get(path)
            .is_some_and(|(at, _)| *at > Instant::now())
    }

    /// `path` failed in a way that waits: try again after the next backoff step.
    fn wait_before_retry(&mut self, path: &RelPath) -> Duration {
        let now = Instant::now();
        let entry = self
            .waits
            .entry(path.clone())
            .or_insert((now, DOWNLOAD_RETRY_FIRST));
        let wait = entry.1;
        *entry = (now + wait, (wait * 2).min(DOWNLOAD_RETRY_MAX));
        wait
    }

    /// Uploads again the chunks the server asked for (it lost them, or found them corrupt and
    /// moved them aside), from local files that still hold what base recorded for them.
    /// Failures are logged: the request stays on the server's list until some device answers.
    async fn upload_wanted(&mut self) {
        let wanted = std::mem::take(&mut self.wanted);
        // Each local file holding wanted chunks: its stamp in base, and (offset, chunk) of them.
        type Source = (PathBuf, Stamp, Vec<(u64, ChunkRef)>);
        let mut sources: Vec<Source> = Vec::new();
        let mut found = HashSet::new();
        for (path, chunks) in &self.state.base_chunks {
            let mut offset = 0u64;
            let mut here = Vec::new();
            for chunk in chunks {
                if wanted.contains(&chunk.hash) && found.insert(chunk.hash) {
                    here.push((offset, *chunk));
                }
                offset += u64::from(chunk.len);
            }
            if here.is_empty() {
                continue;
            }
            let Some(base) = self.state.base.get(path) else {
                continue;
            };
            let Ok(full) = safe_join(&self.root, path) else {
                continue;
            };
            sources.push((full, Stamp::of_base(base), here));
        }
        if sources.is_empty() {
            tracing::debug!(
                n = wanted.len(),
                "the server wants chunks this device does not have"
            );
            return;
        }
        let mut pack = Vec::new();
        let mut n_chunks = 0usize;
        for (full, stamp, chunks) in sources {
            // Only a file that still holds what base recorded holds the wanted bytes.
            if stamp_of(&full).ok() != Some(stamp) {
                continue;
            }
            let Ok(file) = std::fs::File::open(&full) else {
                continue;
            };
            for (offset, chunk) in chunks {
                if tokio::task::block_in_place(|| read_chunk_into(&file, offset, &chunk, &mut pack))
                {
                    n_chunks += 1;
                }
            }
            if pack.len() >= PACK_BYTES {
                send_wanted(&self.api, std::mem::take(&mut pack)).await;
            }
        }
        if !pack.is_empty() {
            send_wanted(&self.api, pack).await;
        }
        tracing::warn!(
            n_chunks,
            "uploaded again chunks the server had lost or found corrupt"
        );
    }

    /// Asks the server whether it still has every chunk of base, and uploads again those it
    /// lost (the daemon calls this at start and now and then: a chunk file deleted on the
    /// server is noticed even when no device tries to download it).
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub async fn check_server_chunks(&mut self) -> anyhow::Result<()> {
        let mut all: Vec<ChunkHash> = self
            .state
            .base_chunks
            .values()
            .flat_map(|chunks| chunks.iter().map(|chunk| chunk.hash))
            .collect();
        all.sort();
        all.dedup();
        let mut missing = HashSet::new();
        for batch in all.chunks(20_000) {
            missing.extend(self.api.missing_chunks(batch.to_vec()).await?);
        }
        if !missing.is_empty() {
            tracing::warn!(
                n = missing.len(),
                "the server lacks chunks of files this folder synced; uploading them again"
            );
            self.wanted.extend(missing);
            self.upload_wanted().await;
        }
        Ok(())
    }

    /// Applies a plan; returns how many steps applied, and how many were left to wait for their
    /// retry time.
    async fn execute(&mut self, ops: Vec<PlanOp>) -> anyhow::Result<(usize, usize)> {
        let mut applied = 0;
        let n_ops = ops.len();
        let ops: Vec<PlanOp> = ops
            .into_iter()
            .filter(|op| !matches!(op, PlanOp::Download { path, .. } | PlanOp::Upload { path, .. } if self.waits_now(path)))
            .collect();
        let waiting = n_ops - ops.len();
        // A disk mounted over the folder since the scan: nothing of the plan is applied.
        self.check_folder()?;
        let mut ops = ops.into_iter().peekable();
        self.state.begin_batch()?;
        let result = self.execute_runs(&mut ops, &mut applied).await;
        // Whatever was applied is recorded, also when a later step failed, with the journal
        // position the server answered with.
        self.save_identity()?;
        self.state.commit_batch()?;
        result?;
        Ok((applied, waiting))
    }

    async fn execute_runs(
        &mut self,
        ops: &mut std::iter::Peekable<std::vec::IntoIter<PlanOp>>,
        applied: &mut usize,
    ) -> anyhow::Result<()> {
        #[derive(PartialEq, Clone, Copy)]
        enum Kind {
            Remote,
            Upload,
            Download,
            Local,
        }
        fn kind_of(op: &PlanOp) -> Kind {
            match op {
                PlanOp::DeleteRemote { .. }
                | PlanOp::MakeDirRemote { .. }
                | PlanOp::MoveRemote { .. }
                | PlanOp::SetModeRemote { .. } => Kind::Remote,
                PlanOp::Upload { .. } => Kind::Upload,
                PlanOp::Download { .. } => Kind::Download,
                _ => Kind::Local,
            }
        }
        while let Some(first) = ops.next() {
            let kind = kind_of(&first);
            let mut run = vec![first];
            while let Some(next) = ops.next_if(|op| kind_of(op) == kind) {
                run.push(next);
            }
            let n_ops = run.len();
            let before = *applied;
            *applied += match kind {
                Kind::Remote => self.execute_remote_ops(run).await?,
                Kind::Upload => {
                    // In groups, each committed before the next is read: other devices start
                    // downloading the first group while this one uploads the rest.
                    let mut n = 0;
                    let mut run = run;
                    while !run.is_empty() {
                        let rest = run.split_off(run.len().min(UPLOAD_GROUP));
                        let group = std::mem::replace(&mut run, rest);
                        n += self.upload_group(group).await?;
                    }
                    n
                }
                Kind::Download => self.execute_downloads(run).await?,
                Kind::Local => {
                    // A delete destroys the local copy on the word of the server's history:
                    // that history must still be the one the plan was made from (the server
                    // may have lost it since, and with it the copy this delete relies on, as
                    // for a remote move planned as a delete here and a download there).
                    if run
                        .iter()
                        .any(|op| matches!(op, PlanOp::DeleteLocal { .. }))
                        && !self.history_unchanged().await?
                    {
                        self.retry_soon = true;
                        return Ok(());
                    }
                    let cleared =
                        tokio::task::block_in_place(|| self.clear_base_before_deletes(&run))?;
                    self.cleared_for_delete = cleared;
                    let local_run = run.clone();
                    let mut n = 0;
                    for op in run {
                        match tokio::task::block_in_place(|| self.execute_local(&op)) {
                            Ok(true) => n += 1,
                            Ok(false) => self.retry_soon = true,
                            Err(err) => {
                                tracing::warn!(
                                    ?op,
                                    cause = format!("{err:#}"),
                                    "local step failed"
                                );
                                self.retry_soon = true;
                            }
                        }
                    }
                    // Deletes and renames become durable before base records them.
                    if n > 0 {
                        let dirs = touched_dirs(&self.root, &local_run);
                        let dirs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
                        tokio::task::block_in_place(|| {
                            crate::fsutil::make_durable(&self.root, &[], &dirs)
                        })?;
                    }
                    n
                }
            };
            // Later steps may depend on this run (a delete at the old path after an upload to
            // the new one): when any step of it did not apply, stop and plan again from the
            // trees as they are now (found by the simulation, seed 7712).
            // Local steps and downloads that fail (a directory kept for an ignored file in it, a
            // name behind a symlink) carry nothing later steps rely on, and may fail for good, so
            // they do not end the plan.
            if matches!(kind, Kind::Remote | Kind::Upload) && *applied - before < n_ops {
                self.retry_soon = true;
                return Ok(());
            }
        }
        Ok(())
    }

    /// Whether the server still holds the history this engine knows (its namespace, and the
    /// newest known journal position with its tag); when not, base is distrusted.
    async fn history_unchanged(&mut self) -> Result<bool, ApiError> {
        let cursor = self.remote.as_ref().map(|r| r.cursor).unwrap_or_default();
        let page = self
            .api
            .changes(cursor, Duration::ZERO, self.identity.known)
            .await?;
        Ok(self.check_history(page.diverged, Some(page.namespace)))
    }

    /// Sends ops in batches and hands each result to `on_result`; counts the applied ones.
    async fn send_ops(
        &mut self,
        ops: Vec<Op>,
        mut on_result: impl FnMut(&mut Engine, usize, &OpResult, Revision) -> anyhow::Result<()>,
    ) -> anyhow::Result<usize> {
        let mut applied = 0;
        let mut offset = 0;
        let mut ops = ops;
        while !ops.is_empty() {
            let rest = ops.split_off(ops.len().min(OPS_BATCH));
            let batch = std::mem::replace(&mut ops, rest);
            let n = batch.len();
            // Only the paths are needed afterwards (for the log); the ops, with their chunk
            // lists, are moved into the request.
            let paths: Vec<RelPath> = batch.iter().map(|op| op.path().clone()).collect();
            let response = self.api.ops(batch, self.identity.known).await?;
            self.check_history(response.diverged, None);
            anyhow::ensure!(
                response.results.len() == n,
                "server answered {} results for {n} ops",
                response.results.len()
            );
            if !response.diverged {
                self.note_known(response.cursor, response.cursor_tag);
            }
            let cursor = Revision(response.cursor.0);
            for (idx, (path, result)) in paths.iter().zip(&response.results).enumerate() {
                if result.status == 200 {
                    if let Some(remote) = self.remote.as_mut() {
                        for entry in &result.entries {
                            remote.upsert(entry.clone());
                        }
                    }
                    on_result(self, offset + idx, result, cursor)?;
                    applied += 1;
                } else {
                    self.retry_soon = true;
                    tracing::info!(%path, status = result.status, message = %result.message, "server refused a step; re-planning");
                }
            }
            offset += n;
        }
        Ok(applied)
    }

    async fn execute_remote_ops(&mut self, run: Vec<PlanOp>) -> anyhow::Result<usize> {
        let mut ops = Vec::new();
        for op in &run {
            ops.push(match op {
                PlanOp::DeleteRemote { path, rev } => Op::Delete {
                    path: path.clone(),
                    base: *rev,
                },
                PlanOp::MoveRemote { from, to, rev } => Op::Move {
                    from: from.clone(),
                    to: to.clone(),
                    base: *rev,
                },
                PlanOp::SetModeRemote {
                    path,
                    rev,
                    executable,
                    ..
                } => Op::SetMode {
                    path: path.clone(),
                    base: *rev,
                    executable: *executable,
                },
                PlanOp::MakeDirRemote { path } => {
                    let full = safe_join(&self.root, path)?;
                    let mtime_ms = stamp_of(&full).map(|s| s.mtime_ns / 1_000_000).unwrap_or(0);
                    Op::MakeDir {
                        path: path.clone(),
                        mtime_ms,
                    }
                }
                _ => unreachable!("only remote ops are batched here"),
            });
        }
        self.send_ops(ops, |engine, idx, result, cursor| {
            match &run[idx] {
                PlanOp::DeleteRemote { path, .. } => {
                    if let Some(remote) = engine.remote.as_mut() {
                        if let Some(node_id) = remote.by_path.get(path).map(|e| e.node_id) {
                            remote.delete(node_id, cursor);
                        }
                    }
                    engine.state.remove(path)?;
                }
                PlanOp::MoveRemote { from, to, .. } => {
                    engine.state.rebase(from, to)?;
                    engine.cache.rebase(from, to);
                    engine.refresh_base_revs(&result.entries)?;
                }
                PlanOp::SetModeRemote { path, node, .. } => {
                    // The node the plan saw, with the server's new revision: no content moved.
                    if let Some(entry) = result.entries.iter().find(|e| &e.path == path) {
                        let node = BaseNode {
                            node_id: entry.node_id,
                            rev: entry.rev,
                            executable: entry.executable,
                            ..node.clone()
                        };
                        engine.state.put(path, node, entry.chunks.clone())?;
                    }
                }
                PlanOp::MakeDirRemote { path } => {
                    let full = safe_join(&engine.root, path)?;
                    let stamp = stamp_of(&full).unwrap_or(Stamp {
                        size: 0,
                        mtime_ns: 0,
                        inode: 0,
                        ctime_ns: 0,
                    });
                    if let Some(entry) = result.entries.iter().find(|e| &e.path == path) {
                        let node = BaseNode {
                            kind: EntryKind::Dir,
                            hash: None,
                            node_id: entry.node_id,
                            rev: entry.rev,
                            size: 0,
                            mtime_ns: stamp.mtime_ns,
                            inode: stamp.inode,
                            ctime_ns: stamp.ctime_ns,
                            executable: false,
                        };
                        engine.state.put(path, node, Vec::new())?;
                    }
                }
                _ => {}
            }
            Ok(())
        })
        .await
    }

    /// After the server moved nodes, base takes their new revisions.
    fn refresh_base_revs(&mut self, entries: &[RemoteEntry]) -> anyhow::Result<()> {
        for entry in entries {
            if let Some(node) = self.state.base.get(&entry.path) {
                if node.node_id == entry.node_id && node.rev != entry.rev {
                    let mut node = node.clone();
                    node.rev = entry.rev;
                    let chunks = self
                        .state
                        .base_chunks
                        .get(&entry.path)
                        .cloned()
                        .unwrap_or_default();
                    self.state.put(&entry.path, node, chunks)?;
                }
            }
        }
        Ok(())
    }

    /// Uploads and commits a group; a full server is answered by uploading the files one at a
    /// time, smallest first, so every file that fits still goes, and those that do not wait
    /// for a retry with backoff.
    async fn upload_group(&mut self, group: Vec<PlanOp>) -> anyhow::Result<usize> {
        match self.execute_uploads(group.clone()).await {
            Ok(n) => Ok(n),
            Err(err) if api_status(&err) == Some(422) => {
                self.upload_settling(&err);
                Ok(0)
            }
            Err(err) if api_status(&err) == Some(507) && group.len() > 1 => {
                tracing::warn!(cause = %err, "the server's storage is full; uploading file by file, smallest first");
                let mut by_size: Vec<(u64, PlanOp)> = group
                    .into_iter()
                    .map(|op| (self.local_size(upload_path(&op)), op))
                    .collect();
                by_size.sort_by_key(|(size, _)| *size);
                let mut n = 0;
                for (size, op) in by_size {
                    let path = upload_path(&op).clone();
                    match self.execute_uploads(vec![op]).await {
                        Ok(applied) => n += applied,
                        Err(err) if api_status(&err) == Some(507) => {
                            self.upload_full(&path, size, &err)
                        }
                        Err(err) if api_status(&err) == Some(422) => self.upload_settling(&err),
                        Err(err) => return Err(err),
                    }
                }
                Ok(n)
            }
            Err(err) if api_status(&err) == Some(507) => {
                let path = upload_path(&group[0]).clone();
                let size = self.local_size(&path);
                self.upload_full(&path, size, &err);
                Ok(0)
            }
            Err(err) => Err(err),
        }
    }

    /// The size of the local file at `path` now (`u64::MAX` when it cannot be read, so it sorts
    /// last).
    fn local_size(&self, path: &RelPath) -> u64 {
        safe_join(&self.root, path)
            .ok()
            .and_then(|full| stamp_of(&full).ok())
            .map_or(u64::MAX, |stamp| stamp.size)
    }

    /// A chunk did not match its hash at the server: the file changed while it was read.
    fn upload_settling(&mut self, err: &anyhow::Error) {
        tracing::info!(cause = %err, "a file changed while it was uploaded; will retry when it settles");
        self.retry_soon = true;
    }

    /// The server had no room for a file: it waits for a retry with backoff.
    fn upload_full(&mut self, path: &RelPath, size: u64, err: &anyhow::Error) {
        let wait = self.wait_before_retry(path);
        tracing::warn!(%path, size, retry_in = ?wait, cause = %err, "not uploaded: the server's storage is full");
        self.notices.push(format!(
            "{path} ({size} bytes) waits: the server's storage is full"
        ));
    }

    async fn execute_uploads(&mut self, run: Vec<PlanOp>) -> anyhow::Result<usize> {
        struct Prepared {
            path: RelPath,
            full: PathBuf,
            base: Precondition,
            manifest: syncstore_chunk::Manifest,
            stamp: Stamp,
            executable: bool,
        }
        let started = std::time::Instant::now();
        // 1. The chunks of every file: as the scan found them if the file is unchanged since,
        // else chunked again (checking it did not change while being read).
        let root = self.root.clone();
        let mut prepared = Vec::new();
        for op in run {
            let PlanOp::Upload {
                path,
                base,
                hash,
                executable,
            } = op
            else {
                unreachable!("only uploads are batched here")
            };
            let full = safe_join(&root, &path)?;
            let cache = &self.cache;
            let result = tokio::task::block_in_place(
                || -> anyhow::Result<Option<(syncstore_chunk::Manifest, Stamp)>> {
                    // Row 34: the file goes up with the mode the plan merged (the remote's new
                    // bit, say), so it gets that bit here first; a chmod changes no bytes.
                    crate::fsutil::set_executable(&full, executable)?;
                    let before = stamp_of(&full)?;
                    if let Some(manifest) = cache.manifest(&path, before) {
                        return Ok((manifest.hash == hash).then_some((manifest, before)));
                    }
                    let file = std::fs::File::open(&full)?;
                    let manifest = syncstore_chunk::manifest_of(&file)?;
                    let after = stamp_of(&full)?;
                    if before != after || manifest.size != after.size || manifest.hash != hash {
                        return Ok(None);
                    }
                    Ok(Some((manifest, after)))
                },
            );
            match result {
                Ok(Some((manifest, stamp))) => prepared.push(Prepared {
                    path,
                    full,
                    base,
                    manifest,
                    stamp,
                    executable,
                }),
                Ok(None) => {
                    tracing::info!(%path, "file changed while being read; will retry when it settles");
                    self.retry_soon = true;
                }
                Err(err) => {
                    tracing::warn!(%path, cause = format!("{err:#}"), "could not read file for upload");
                    self.retry_soon = true;
                }
            }
        }
        if prepared.is_empty() {
            return Ok(0);
        }
        let prepared_at = started.elapsed();
        // 2. Ask which chunks the server lacks.
        let mut all: Vec<ChunkHash> = prepared
            .iter()
            .flat_map(|p| p.manifest.chunks.iter().map(|c| c.hash))
            .collect();
        all.sort();
        all.dedup();
        let mut missing = HashSet::new();
        for batch in all.chunks(20_000) {
            missing.extend(self.api.missing_chunks(batch.to_vec()).await?);
        }
        // 3. Send the missing chunks in packs, reading each from its file again. A file that
        // changed since it was chunked is caught by its stamp after the read, or else by the
        // server, which stores no chunk whose bytes do not hash to its name.
        let mut failed: HashSet<usize> = HashSet::new();
        let mut pack = Vec::with_capacity(PACK_BYTES + syncstore_proto::CHUNK_MAX as usize);
        let mut in_flight: tokio::task::JoinSet<Result<(), ApiError>> = tokio::task::JoinSet::new();
        for (file_idx, item) in prepared.iter().enumerate() {
            let mut offset = 0u64;
            let file = match std::fs::File::open(&item.full) {
                Ok(file) => file,
                Err(_) => {
                    failed.insert(file_idx);
                    continue;
                }
            };
            for chunk in &item.manifest.chunks {
                if missing.remove(&chunk.hash) {
                    let ok = tokio::task::block_in_place(|| {
                        read_chunk_into(&file, offset, chunk, &mut pack)
                    });
                    if !ok {
                        // Another file with the same chunk must still send it.
                        missing.insert(chunk.hash);
                        failed.insert(file_idx);
                        break;
                    }
                    if pack.len() >= PACK_BYTES {
                        let body = bytes::Bytes::from(std::mem::take(&mut pack));
                        pack.reserve(PACK_BYTES + syncstore_proto::CHUNK_MAX as usize);
                        while in_flight.len() >= 2 {
                            join_upload(&mut in_flight).await?;
                        }
                        let api = self.api.clone();
                        in_flight.spawn(async move { api.upload_pack(body).await.map(|_| ()) });
                    }
                }
                offset += u64::from(chunk.len);
            }
            if stamp_of(&item.full).ok() != Some(item.stamp) {
                failed.insert(file_idx);
            }
        }
        if !pack.is_empty() {
            let api = self.api.clone();
            let body = bytes::Bytes::from(pack);
            in_flight.spawn(async move { api.upload_pack(body).await.map(|_| ()) });
        }
        while !in_flight.is_empty() {
            join_upload(&mut in_flight).await?;
        }
        let uploaded_at = started.elapsed();
        // 4. Commit the files, each conditional on what the plan saw.
        let committed: Vec<Prepared> = prepared
            .into_iter()
            .enumerate()
            .filter(|(idx, _)| !failed.contains(idx))
            .map(|(_, p)| p)
            .collect();
        if !failed.is_empty() {
            self.retry_soon = true;
        }
        let ops = committed
            .iter()
            .map(|p| Op::PutFile {
                path: p.path.clone(),
                base: p.base,
                size: p.manifest.size,
                mtime_ms: p.stamp.mtime_ns / 1_000_000,
                hash: p.manifest.hash,
                chunks: p.manifest.chunks.clone(),
                executable: p.executable,
            })
            .collect();
        let applied = self
            .send_ops(ops, |engine, idx, result, _| {
                let item = &committed[idx];
                let Some(entry) = result.entries.iter().find(|e| e.path == item.path) else {
                    anyhow::bail!("server did not return the uploaded file {}", item.path);
                };
                let node = BaseNode {
                    kind: EntryKind::File,
                    hash: Some(item.manifest.hash),
                    node_id: entry.node_id,
                    rev: entry.rev,
                    size: item.stamp.size,
                    mtime_ns: item.stamp.mtime_ns,
                    inode: item.stamp.inode,
                    ctime_ns: item.stamp.ctime_ns,
                    executable: entry.executable,
                };
                engine
                    .state
                    .put(&item.path, node, item.manifest.chunks.clone())?;
                Ok(())
            })
            .await?;
        tracing::debug!(
            files = committed.len(),
            prepare = ?prepared_at,
            upload = ?uploaded_at - prepared_at,
            commit = ?started.elapsed() - uploaded_at,
            "upload group done"
        );
        Ok(applied)
    }

    async fn execute_downloads(&mut self, run: Vec<PlanOp>) -> anyhow::Result<usize> {
        let mut jobs = Vec::new();
        for op in run {
            let PlanOp::Download {
                path,
                remote,
                expect_local,
                executable,
            } = op
            else {
                unreachable!("only downloads are batched here")
            };
            let Some(entry) = self
                .remote
                .as_ref()
                .and_then(|r| r.by_path.get(&path))
                .cloned()
            else {
                continue;
            };
            if entry.node_id != remote.node_id || entry.rev != remote.rev || entry.hash.is_none() {
                self.retry_soon = true;
                continue;
            }
            let full = match safe_join(&self.root, &path) {
                Ok(full) => full,
                Err(err) => {
                    tracing::warn!(%path, cause = format!("{err:#}"), "not downloading");
                    continue;
                }
            };
            // Chunks of the local file as it was agreed can be reused if it is still unchanged.
            let mut reuse = HashMap::new();
            let mut reuse_stamp = None;
            if let (Some(base), Some(chunks)) = (
                self.state.base.get(&path),
                self.state.base_chunks.get(&path),
            ) {
                let unchanged = stamp_of(&full).is_ok_and(|s| s == Stamp::of_base(base));
                if unchanged {
                    reuse_stamp = Some(Stamp::of_base(base));
                    let mut offset = 0u64;
                    for chunk in chunks {
                        reuse.entry(chunk.hash).or_insert((offset, chunk.len));
                        offset += u64::from(chunk.len);
                    }
                }
            }
            jobs.push(DownloadJob {
                path,
                full,
                entry,
                expect_local,
                executable,
                reuse,
                reuse_stamp,
            });
        }
        let jobs = self.jobs_that_fit(jobs);
        let mut applied = 0;
        // Batches bounded by bytes to fetch.
        let mut batch = Vec::new();
        let mut batch_bytes = 0u64;
        let mut jobs = jobs.into_iter().peekable();
        while let Some(job) = jobs.next() {
            batch_bytes += job
                .entry
                .chunks
                .iter()
                .filter(|c| !job.reuse.contains_key(&c.hash))
                .map(|c| u64::from(c.len))
                .sum::<u64>();
            batch.push(job);
            if batch_bytes >= DOWNLOAD_BATCH_BYTES || batch.len() >= 2000 || jobs.peek().is_none() {
                applied += self.download_batch(std::mem::take(&mut batch)).await?;
                batch_bytes = 0;
            }
        }
        Ok(applied)
    }

    /// The jobs whose files fit on the disk together, in plan order; every one that does not
    /// fit is reported (which file, how much space is missing) and waits for a retry with
    /// backoff, as space may appear later. Temp files live in `.syncstore/tmp/` beside the
    /// folder's files, and each needs the whole file while the one it replaces is still there.
    fn jobs_that_fit(&mut self, jobs: Vec<DownloadJob>) -> Vec<DownloadJob> {
        let Ok(mut available) = crate::fsutil::available_bytes(&self.tmp_dir) else {
            return jobs; // Unknown: writing tells (see `note_no_space`).
        };
        let mut fit = Vec::with_capacity(jobs.len());
        for job in jobs {
            let needed = job.entry.size.saturating_add(DISK_RESERVE_BYTES);
            if needed <= available {
                available -= job.entry.size;
                fit.push(job);
            } else {
                self.note_no_space(&job.path, job.entry.size, available);
            }
        }
        fit
    }

    /// `path` (`size` bytes) does not fit in the `available` bytes left: logged, and retried
    /// after the next backoff step.
    fn note_no_space(&mut self, path: &RelPath, size: u64, available: u64) {
        let wait = self.wait_before_retry(path);
        let missing = size
            .saturating_add(DISK_RESERVE_BYTES)
            .saturating_sub(available);
        tracing::warn!(
            %path,
            size,
            available,
            missing,
            retry_in = ?wait,
            "could not download {path}: not enough free space on the disk of {} ({size} bytes \
             needed, {available} available: {missing} bytes missing); retrying in {wait:?}",
            self.root.display()
        );
    }

    /// Downloads a batch; when the server cannot serve some chunks (it lost them, or found them
    /// corrupt), the files that need them are reported by path and wait for a retry with
    /// backoff, while every other file of the batch is downloaded.
    async fn download_batch(&mut self, jobs: Vec<DownloadJob>) -> anyhow::Result<usize> {
        let paths: Vec<(RelPath, Vec<ChunkHash>)> = jobs
            .iter()
            .map(|job| {
                // Every chunk: a retry fetches the ones it reused too.
                let hashes = job.entry.chunks.iter().map(|chunk| chunk.hash).collect();
                (job.path.clone(), hashes)
            })
            .collect();
        let jobs = match self.try_download_batch(jobs).await {
            Ok(applied) => return Ok(applied),
            Err((err, jobs)) => {
                let fetch: Vec<ChunkHash> = paths
                    .iter()
                    .flat_map(|(_, hashes)| hashes.clone())
                    .collect();
                let missing: HashSet<ChunkHash> = match self.api.missing_chunks(fetch).await {
                    Ok(missing) => missing.into_iter().collect(),
                    Err(_) => return Err(err),
                };
                if missing.is_empty() {
                    return Err(err);
                }
                let mut rest = Vec::new();
                for job in jobs {
                    let lacks = paths
                        .iter()
                        .find(|(path, _)| *path == job.path)
                        .and_then(|(_, hashes)| hashes.iter().find(|h| missing.contains(h)));
                    match lacks {
                        Some(hash) => {
                            let wait = self.wait_before_retry(&job.path);
                            tracing::warn!(
                                path = %job.path,
                                chunk = %hash,
                                retry_in = ?wait,
                                "could not download {}: the server lost chunk {hash} or found it \
                                 corrupt (it asks the devices that have the file to upload it again)",
                                job.path
                            );
                        }
                        None => rest.push(job),
                    }
                }
                rest
            }
        };
        if jobs.is_empty() {
            return Ok(0);
        }
        self.try_download_batch(jobs).await.map_err(|(err, _)| err)
    }

    /// One attempt at a batch; on a failure to fetch or write, the jobs come back with the
    /// error, so the caller can tell which files the failure was about.
    async fn try_download_batch(
        &mut self,
        jobs: Vec<DownloadJob>,
    ) -> Result<usize, (anyhow::Error, Vec<DownloadJob>)> {
        let started = std::time::Instant::now();
        let n_jobs = jobs.len();
        // Which chunks to fetch, each once, in the order they are first needed.
        let mut fetch = Vec::new();
        let mut fetching = HashSet::new();
        for job in &jobs {
            for chunk in &job.entry.chunks {
                if !job.reuse.contains_key(&chunk.hash) && fetching.insert(chunk.hash) {
                    fetch.push(chunk.hash);
                }
            }
        }
        let stream = if fetch.is_empty() {
            None
        } else {
            match self.api.download_pack(fetch).await {
                Ok(stream) => Some(stream),
                Err(err) => return Err((err.into(), jobs)),
            }
        };
        let tmp_dir = self.tmp_dir.clone();
        let writeback = Arc::clone(&self.writeback);
        let job_keys: Vec<DownloadKey> = jobs.iter().map(DownloadJob::key).collect();
        let written = tokio::task::spawn_blocking(move || -> anyhow::Result<Written> {
            let written = write_temp_files(jobs, stream, &tmp_dir, &writeback)?;
            // Every temp file's bytes are durable before any is renamed into place.
            let temps: Vec<&Path> = written.files.iter().map(|w| &*w.temp as &Path).collect();
            crate::fsutil::make_durable(&tmp_dir, &temps, &[])?;
            Ok(written)
        })
        .await
        .context("download task failed")
        .and_then(|written| written);
        let written = match written {
            Ok(written) => written,
            // The jobs were moved into the task: rebuild what the caller needs to tell them apart.
            Err(err) => {
                return Err((
                    err,
                    job_keys.into_iter().map(DownloadJob::from_key).collect(),
                ))
            }
        };
        let written_at = started.elapsed();
        for (path, size) in &written.no_space {
            let available = crate::fsutil::available_bytes(&self.tmp_dir).unwrap_or(0);
            self.note_no_space(path, *size, available);
        }
        let mut applied = 0;
        let mut placed_dirs: Vec<PathBuf> = Vec::new();
        for done in written.files {
            match tokio::task::block_in_place(|| self.place_download(&done)) {
                Ok(true) => {
                    applied += 1;
                    if let Some(parent) = done.job.full.parent() {
                        placed_dirs.push(parent.to_path_buf());
                    }
                }
                Ok(false) => self.retry_soon = true,
                Err(err) => {
                    tracing::warn!(path = %done.job.path, cause = format!("{err:#}"), "could not place download");
                    self.retry_soon = true;
                }
            }
        }
        // The renames become durable before the batch's base updates are committed.
        let dirs: Vec<&Path> = placed_dirs.iter().map(PathBuf::as_path).collect();
        tokio::task::block_in_place(|| crate::fsutil::make_durable(&self.root, &[], &dirs))
            .map_err(|err| (err, Vec::new()))?;
        tracing::debug!(
            files = n_jobs,
            fetch_and_write = ?written_at,
            place = ?started.elapsed() - written_at,
            "download batch done"
        );
        Ok(applied)
    }

    /// Renames a finished download into place if the local path still holds what the plan saw.
    fn place_download(&mut self, done: &WrittenFile) -> anyhow::Result<bool> {
        let job = &done.job;
        let full = safe_join(&self.root, &job.path)?;
        if !self.folder.on_root_fs(&full) {
            tracing::info!(path = %job.path, "not placed: the directory is on another filesystem now (a disk mounted there)");
            return Ok(false);
        }
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("could not create {}", parent.display()))?;
        }
        // Temp files are created 0600; a synced file gets the mode of the file it replaces, or
        // 0644, with the executable bits set or cleared as the plan says (0644 becomes 0755).
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::symlink_metadata(&full)
                .map(|m| m.permissions().mode() & 0o7777)
                .unwrap_or(0o644);
            let mode = crate::fsutil::with_executable(mode, job.executable);
            std::fs::set_permissions(&done.temp, std::fs::Permissions::from_mode(mode))
                .context("could not set file mode")?;
        }
        match job.expect_local {
            None => match rename_noreplace(&done.temp, &full) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                    tracing::info!(path = %job.path, "a local file appeared meanwhile; re-planning");
                    return Ok(false);
                }
                Err(err) => {
                    return Err(err)
                        .with_context(|| format!("could not move download to {}", full.display()))
                }
            },
            Some(expected) => {
                if !self.local_file_has(&job.path, &full, expected)? {
                    tracing::info!(path = %job.path, "local file changed meanwhile; re-planning");
                    return Ok(false);
                }
                std::fs::rename(&done.temp, &full)
                    .with_context(|| format!("could not move download to {}", full.display()))?;
            }
        }
        let stamp = stamp_of(&full)?;
        let hash = job.entry.hash.expect("downloads are files");
        self.cache
            .insert(job.path.clone(), stamp, hash, &job.entry.chunks);
        let node = BaseNode {
            kind: EntryKind::File,
            hash: Some(hash),
            node_id: job.entry.node_id,
            rev: job.entry.rev,
            size: stamp.size,
            mtime_ns: stamp.mtime_ns,
            inode: stamp.inode,
            ctime_ns: stamp.ctime_ns,
            // The server's bit: when the local side changed only the mode, the next pass sees
            // that and sends it (row 34).
            executable: job.entry.executable,
        };
        self.state.put(&job.path, node, job.entry.chunks.clone())?;
        // Placed: a later failure starts its backoff afresh.
        self.waits.remove(&job.path);
        Ok(true)
    }

    /// For every `DeleteLocal` in `run` whose file still holds what the plan expected (or is
    /// gone), drops the path from base and commits that *before* any file is deleted: a crash
    /// in between then brings a file back (uploaded again) instead of leaving a stale base entry
    /// that a later rename could turn into a remote delete (found by the simulation, seed 1479).
    /// Returns the stamp each file had when checked.
    fn clear_base_before_deletes(
        &mut self,
        run: &[PlanOp],
    ) -> anyhow::Result<HashMap<RelPath, Stamp>> {
        let mut cleared = HashMap::new();
        for op in run {
            let PlanOp::DeleteLocal { path, expect_hash } = op else {
                continue;
            };
            let full = safe_join(&self.root, path)?;
            let stamp = match stamp_of(&full) {
                Ok(stamp) => stamp,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    self.state.remove(path)?;
                    continue;
                }
                Err(err) => {
                    return Err(err).with_context(|| format!("could not stat {}", full.display()))
                }
            };
            if self.local_file_has(path, &full, *expect_hash)? {
                self.state.remove(path)?;
                cleared.insert(path.clone(), stamp);
            }
        }
        if !cleared.is_empty() {
            self.state.commit_batch()?;
            self.state.begin_batch()?;
        }
        Ok(cleared)
    }

    /// Whether the local file at `full` holds `expected`, re-hashing only if its stamp changed.
    fn local_file_has(
        &mut self,
        path: &RelPath,
        full: &Path,
        expected: ContentHash,
    ) -> anyhow::Result<bool> {
        let stamp = match stamp_of(full) {
            Ok(stamp) => stamp,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(err) => {
                return Err(err).with_context(|| format!("could not stat {}", full.display()))
            }
        };
        if let Some(base) = self.state.base.get(path) {
            if base.hash == Some(expected) && Stamp::of_base(base) == stamp {
                return Ok(true);
            }
        }
        let file = std::fs::File::open(full)
            .with_context(|| format!("could not open {}", full.display()))?;
        let manifest = syncstore_chunk::manifest_of(&file)?;
        Ok(manifest.hash == expected && stamp_of(full)? == stamp)
    }

    fn execute_local(&mut self, op: &PlanOp) -> anyhow::Result<bool> {
        match op {
            PlanOp::DeleteLocal { path, .. } => {
                // Base was cleared (durably) when the file was checked; delete it only if it has
                // not changed since. If it has, it stays, and without a base entry the next plan
                // uploads it: an edit beats a delete.
                let Some(checked) = self.cleared_for_delete.remove(path) else {
                    return Ok(false);
                };
                let full = safe_join(&self.root, path)?;
                match stamp_of(&full) {
                    Ok(now) if now == checked => {
                        std::fs::remove_file(&full)
                            .with_context(|| format!("could not delete {}", full.display()))?;
                        Ok(true)
                    }
                    Ok(_) => Ok(false),
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(true),
                    Err(err) => {
                        Err(err).with_context(|| format!("could not stat {}", full.display()))
                    }
                }
            }
            PlanOp::MakeDirLocal { path, remote } => {
                let full = safe_join(&self.root, path)?;
                if crate::fsutil::is_symlink(&full) {
                    anyhow::bail!("{} is a symlink", full.display());
                }
                if !self.folder.on_root_fs(&full) {
                    return Ok(false);
                }
                std::fs::create_dir_all(&full)
                    .with_context(|| format!("could not create {}", full.display()))?;
                let stamp = stamp_of(&full)?;
                let node = BaseNode {
                    kind: EntryKind::Dir,
                    hash: None,
                    node_id: remote.node_id,
                    rev: remote.rev,
                    size: 0,
                    mtime_ns: stamp.mtime_ns,
                    inode: stamp.inode,
                    ctime_ns: stamp.ctime_ns,
                    executable: false,
                };
                self.state.put(path, node, Vec::new())?;
                Ok(true)
            }
            PlanOp::RemoveDirLocal { path } => {
                let full = safe_join(&self.root, path)?;
                match std::fs::remove_dir(&full) {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => {
                        tracing::info!(%path, cause = %err, "directory not removed (not empty)");
                        return Ok(false);
                    }
                }
                self.state.remove(path)?;
                Ok(true)
            }
            PlanOp::MoveLocal { from, to } => {
                let from_full = safe_join(&self.root, from)?;
                let to_full = safe_join(&self.root, to)?;
                if let Some(parent) = to_full.parent() {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("could not create {}", parent.display()))?;
                }
                match rename_noreplace(&from_full, &to_full) {
                    Ok(()) => {}
                    Err(err)
                        if err.kind() == std::io::ErrorKind::AlreadyExists
                            || err.kind() == std::io::ErrorKind::NotFound =>
                    {
                        return Ok(false)
                    }
                    Err(err) => {
                        return Err(err).with_context(|| {
                            format!(
                                "could not move {} to {}",
                                from_full.display(),
                                to_full.display()
                            )
                        })
                    }
                }
                self.state.rebase(from, to)?;
                self.cache.rebase(from, to);
                let entries: Vec<RemoteEntry> = self
                    .remote
                    .as_ref()
                    .map(|r| {
                        r.by_path
                            .values()
                            .filter(|e| e.path == *to || e.path.is_inside(to))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                self.refresh_base_revs(&entries)?;
                Ok(true)
            }
            PlanOp::ConflictCopy { path, copy } => {
                let full = safe_join(&self.root, path)?;
                let copy_full = safe_join(&self.root, copy)?;
                match rename_noreplace(&full, &copy_full) {
                    Ok(()) => {}
                    Err(err)
                        if err.kind() == std::io::ErrorKind::AlreadyExists
                            || err.kind() == std::io::ErrorKind::NotFound =>
                    {
                        return Ok(false)
                    }
                    Err(err) => {
                        return Err(err)
                            .with_context(|| format!("could not rename {}", full.display()))
                    }
                }
                self.cache.rebase(path, copy);
                tracing::warn!(%path, %copy, "both sides changed: kept the local version as a conflicted copy");
                Ok(true)
            }
            PlanOp::SetModeLocal {
                path,
                expect_hash,
                executable,
                node,
            } => {
                let full = safe_join(&self.root, path)?;
                if !self.local_file_has(path, &full, *expect_hash)? {
                    tracing::info!(%path, "local file changed meanwhile; re-planning");
                    return Ok(false);
                }
                crate::fsutil::set_executable(&full, *executable)?;
                let chunks = self
                    .remote
                    .as_ref()
                    .and_then(|r| r.by_path.get(path))
                    .map(|e| e.chunks.clone())
                    .unwrap_or_default();
                self.state.put(path, node.clone(), chunks)?;
                Ok(true)
            }
            PlanOp::RecordBase { path, node } => {
                let chunks = self
                    .remote
                    .as_ref()
                    .and_then(|r| r.by_path.get(path))
                    .map(|e| e.chunks.clone())
                    .unwrap_or_default();
                self.state.put(path, node.clone(), chunks)?;
                Ok(true)
            }
            PlanOp::ForgetBase { path } => {
                self.state.remove(path)?;
                Ok(true)
            }
            // TODO(issue 12): wire (chmod and the read-only set); applied no-ops until then.
            PlanOp::ProtectLocal { .. } | PlanOp::UnprotectLocal { .. } => Ok(true),
            other => unreachable!("not a local op: {other:?}"),
        }
    }
}

/// Uploads a pack of chunks the server asked for; a failure is logged (the server keeps
/// asking until some device answers).
async fn send_wanted(api: &ApiClient, pack: Vec<u8>) {
    if let Err(err) = api.upload_pack_durable(bytes::Bytes::from(pack)).await {
        tracing::warn!(cause = %err, "could not upload the chunks the server asked for");
    }
}

/// The path of an upload step.
fn upload_path(op: &PlanOp) -> &RelPath {
    match op {
        PlanOp::Upload { path, .. } => path,
        other => unreachable!("not an upload: {other:?}"),
    }
}

/// The HTTP status of an API error inside `err`, if that is what it is.
fn api_status(err: &anyhow::Error) -> Option<u16> {
    match err.downcast_ref::<ApiError>() {
        Some(ApiError::Status { status, .. }) => Some(*status),
        _ => None,
    }
}

/// The directories whose entries the local ops of `run` change.
fn touched_dirs(root: &Path, run: &[PlanOp]) -> Vec<PathBuf> {
    let parent_of = |path: &RelPath| match path.parent() {
        Some(parent) => root.join(parent.as_str()),
        None => root.to_path_buf(),
    };
    let mut dirs = Vec::new();
    for op in run {
        match op {
            PlanOp::DeleteLocal { path, .. }
            | PlanOp::RemoveDirLocal { path }
            | PlanOp::MakeDirLocal { path, .. } => dirs.push(parent_of(path)),
            PlanOp::MoveLocal { from, to } => dirs.extend([parent_of(from), parent_of(to)]),
            PlanOp::ConflictCopy { path, copy } => dirs.extend([parent_of(path), parent_of(copy)]),
            _ => {}
        }
    }
    dirs
}

/// Whether `path` is a locked path or lies beneath one.
fn covered(path: &RelPath, locked: &BTreeMap<RelPath, DeviceName>) -> bool {
    locked.contains_key(path) || path.ancestors().iter().any(|a| locked.contains_key(a))
}

/// What identifies a [`DownloadJob`] after its batch failed: enough to retry it.
struct DownloadKey {
    path: RelPath,
    full: PathBuf,
    entry: RemoteEntry,
    expect_local: Option<ContentHash>,
    executable: bool,
}

impl DownloadJob {
    fn key(&self) -> DownloadKey {
        DownloadKey {
            path: self.path.clone(),
            full: self.full.clone(),
            entry: self.entry.clone(),
            expect_local: self.expect_local,
            executable: self.executable,
        }
    }

    /// A job again from its key, fetching every chunk (nothing reused: the retry is rare).
    fn from_key(key: DownloadKey) -> DownloadJob {
        DownloadJob {
            path: key.path,
            full: key.full,
            entry: key.entry,
            expect_local: key.expect_local,
            executable: key.executable,
            reuse: HashMap::new(),
            reuse_stamp: None,
        }
    }
}

/// One file to download.
struct DownloadJob {
    path: RelPath,
    full: PathBuf,
    entry: RemoteEntry,
    expect_local: Option<ContentHash>,
    /// The executable bit the placed file gets.
    executable: bool,
    /// Chunks available in the current local file: hash → (offset, len).
    reuse: HashMap<ChunkHash, (u64, u32)>,
    /// The local file's stamp when `reuse` was taken from base (it must still have it after
    /// the reused chunks are read).
    reuse_stamp: Option<Stamp>,
}

/// What [`write_temp_files`] wrote, and which files did not fit on the disk.
struct Written {
    files: Vec<WrittenFile>,
    /// Files whose temp file met a full disk (ENOSPC, EDQUOT): path and size.
    no_space: Vec<(RelPath, u64)>,
}

/// A download written and verified in a temp file, ready to be placed.
struct WrittenFile {
    job: DownloadJob,
    temp: tempfile::TempPath,
}

/// Writes every job's content to a temp file: reused chunks from the local file, the rest from
/// the frame stream (each chunk arrives once; later uses copy it from where it was written).
/// Chunks from the stream are verified against their hashes; reused ones are trusted while the
/// local file keeps the stamp base recorded for them (checked after they are read), the rule
/// the scan follows too. Files that fail either check are dropped (and retried by the next
/// pass). Every [`WRITEBACK_BYTES`] written are handed to `writeback`, so the disk works while
/// the rest arrive and the fsync before the rename has little left to do.
fn write_temp_files(
    jobs: Vec<DownloadJob>,
    stream: Option<
        impl futures::Stream<Item = Result<bytes::Bytes, reqwest::Error>> + Send + Unpin + 'static,
    >,
    tmp_dir: &Path,
    writeback: &Writeback,
) -> anyhow::Result<Written> {
    use futures::TryStreamExt;
    use std::io::{Read, Write};
    let mut reader: Box<dyn Read + Send> = match stream {
        Some(stream) => {
            let async_reader =
                tokio_util::io::StreamReader::new(stream.map_err(std::io::Error::other));
            Box::new(tokio_util::io::SyncIoBridge::new(async_reader))
        }
        None => Box::new(std::io::empty()),
    };
    // Where each fetched chunk was written: temp path → (offset, len).
    let mut fetched: HashMap<ChunkHash, (PathBuf, u64, u32)> = HashMap::new();
    let mut out = Vec::new();
    let mut no_space = Vec::new();
    let mut buf = Vec::new();
    for job in jobs {
        let mut temp =
            tempfile::NamedTempFile::new_in(tmp_dir).context("could not create temp file")?;
        let old_file = if job.reuse.is_empty() {
            None
        } else {
            std::fs::File::open(&job.full).ok()
        };
        let mut offset = 0u64;
        let mut flushed = 0u64;
        let mut ok = true;
        // The disk filled up while writing this file: its other frames are still read, to keep
        // the stream aligned, and its temp file goes (which frees the space for the next).
        let mut disk_full = false;
        let mut reused_any = false;
        for chunk in &job.entry.chunks {
            buf.resize(chunk.len as usize, 0);
            // A reused chunk was not requested from the server: if the old file is gone, the
            // file fails here (and is retried) without touching the stream.
            let mut from_stream = false;
            let got = if let Some(&(old_offset, _)) = job.reuse.get(&chunk.hash) {
                reused_any = true;
                old_file
                    .as_ref()
                    .is_some_and(|old| old.read_exact_at(&mut buf, old_offset).is_ok())
            } else if let Some((temp_path, at, _)) = fetched.get(&chunk.hash) {
                std::fs::File::open(temp_path)
                    .and_then(|f| f.read_exact_at(&mut buf, *at))
                    .is_ok()
            } else {
                from_stream = true;
                let mut header = [0u8; syncstore_proto::FRAME_HEADER_LEN];
                reader
                    .read_exact(&mut header)
                    .context("download stream ended early")?;
                let (hash, len) =
                    syncstore_proto::decode_frame_header(&header).map_err(anyhow::Error::msg)?;
                anyhow::ensure!(
                    hash == chunk.hash && len == chunk.len,
                    "server sent chunk {hash} out of order"
                );
                reader
                    .read_exact(&mut buf)
                    .context("download stream ended early")?;
                true
            };
            if !got || (from_stream && syncstore_chunk::hash_chunk(&buf) != chunk.hash) {
                ok = false;
                // Keep the stream aligned: frames of this file still have to be consumed.
                continue;
            }
            if disk_full {
                continue;
            }
            if let Err(err) = temp.write_all(&buf) {
                if crate::fsutil::is_out_of_space(&err) {
                    disk_full = true;
                    ok = false;
                    continue;
                }
                return Err(err).context("could not write temp file");
            }
            if from_stream {
                fetched.insert(chunk.hash, (temp.path().to_path_buf(), offset, chunk.len));
            }
            offset += u64::from(chunk.len);
            if offset - flushed >= WRITEBACK_BYTES {
                if let Ok(file) = temp.as_file().try_clone() {
                    writeback.start(file, flushed, offset - flushed);
                }
                flushed = offset;
            }
        }
        if disk_full {
            // Chunks written to it cannot be copied from it any more.
            let temp_path = temp.path().to_path_buf();
            fetched.retain(|_, (path, _, _)| *path != temp_path);
            no_space.push((job.path.clone(), job.entry.size));
            continue;
        }
        if reused_any && stamp_of(&job.full).ok() != job.reuse_stamp {
            ok = false;
        }
        // Every chunk checked (fetched ones by hash, reused ones by stamp), in the order of the
        // entry's list: the content is the entry's if that list gives its hash (the server
        // checked that too).
        if !ok || Some(ContentHash::of_chunks(&job.entry.chunks)) != job.entry.hash {
            tracing::warn!(path = %job.path, "downloaded content did not verify; will retry");
            continue;
        }
        let mtime = std::time::UNIX_EPOCH + Duration::from_millis(job.entry.mtime_ms.max(0) as u64);
        temp.as_file()
            .set_modified(mtime)
            .context("could not set mtime")?;
        let temp = temp.into_temp_path();
        out.push(WrittenFile { job, temp });
    }
    Ok(Written {
        files: out,
        no_space,
    })
}

/// Appends the frame of `chunk` (read from `file` at `offset`) to `pack`; false if the file is
/// too short for it now. The bytes are not hashed again here: the server checks every chunk.
pub(crate) fn read_chunk_into(
    file: &std::fs::File,
    offset: u64,
    chunk: &ChunkRef,
    pack: &mut Vec<u8>,
) -> bool {
    let start = pack.len();
    pack.extend_from_slice(&encode_frame_header(&chunk.hash, chunk.len));
    let data_start = pack.len();
    pack.resize(data_start + chunk.len as usize, 0);
    if file.read_exact_at(&mut pack[data_start..], offset).is_err() {
        pack.truncate(start);
        return false;
    }
    true
}

/// Waits for one upload of `in_flight`; its error, or the task's, is the result.
pub(crate) async fn join_upload(
    in_flight: &mut tokio::task::JoinSet<Result<(), ApiError>>,
) -> anyhow::Result<()> {
    match in_flight.join_next().await {
        Some(Ok(result)) => Ok(result?),
        Some(Err(err)) => Err(anyhow::anyhow!("upload task failed: {err}")),
        None => Ok(()),
    }
}
