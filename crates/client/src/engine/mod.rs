//! The sync engine: one pass = refresh the remote tree, scan, plan, apply; repeated until the
//! plan is empty.
//!
//! The engine touches the world only through the [`crate::seams`] of its [`World`], so the
//! simulation drives this very code. Its files, each with one job:
//! - `mod.rs` (here): the engine's state, the pass loop, and the **commit order** (invariant:
//!   base updates of one applied plan are committed together after their effects are durable;
//!   a path to be deleted locally is cleared from base, durably, before the file goes; a crash
//!   therefore leaves base at worst stale, and the planner is safe for a stale base);
//! - `trust.rs`: the server identity base was made against, and re-adoption (invariant: base
//!   made against another history is never planned against);
//! - `remote_ops.rs`: ops sent to the server (invariant: every op is conditional, and base
//!   changes only for an op the server answered 200);
//! - `upload.rs`: uploads (invariant: a file is committed only with the content its stamp had
//!   when it was read);
//! - `download.rs`: downloads (invariant: a file is placed only over what the plan expected,
//!   and only after its bytes verified and are durable);
//! - `in_place.rs`: small edits of large files written into the file (invariant: no byte is
//!   written before a journal of the write is durable; a journal a crash left is replayed or
//!   discarded before the first scan);
//! - `local.rs`: local steps (invariant: a local delete or replace only destroys bytes the
//!   plan saw, re-checked right before);
//! - `pack.rs`: chunk packing and repair uploads (invariant: a chunk is read from a file whose
//!   stamp is the one its chunk list was made at);
//! - `locks.rs`: locks in force and notices about this device's locks, as typed values;
//! - `record.rs`: the base entry each applied step records, defined once;
//! - `focus.rs`: which paths a pass looks at again and plans when it does not walk the whole
//!   folder (invariant: the focus only grows until a plan comes out empty, and every full walk
//!   plans the whole folder);
//! - `mass_delete.rs`: the mass-delete interlock's hold as the engine keeps it (invariant:
//!   whether deletions are held is the planner's decision; the engine keeps a hold in force,
//!   saved in state, from the plan that reports it to one that does not, plans the whole
//!   folder meanwhile, and lifts it only for the next plan after the user allowed it).

mod delta;
mod download;
mod focus;
mod in_place;
mod local;
mod local_copy;
mod locks;
mod mass_delete;
mod pack;
mod record;
mod remote_ops;
mod trust;
mod upload;

pub(crate) use delta::{bases_for, send_by_delta, DeltaBudget, DELTA_MIN_BYTES};
pub use locks::Notice;
pub(crate) use pack::read_chunk_into;

use crate::early_upload::EarlyUpload;
use crate::folder::FileId;
use crate::remote::RemoteTree;
use crate::scan::{rescan_paths, scan, HashCache, IgnoreRules, Scan, Skipped, Stamp};
use crate::seams::{BaseStore, Clock, Disk, Production, World};
use crate::state::ServerIdentity;
use crate::Error;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;
use syncstore_plan::{
    BaseNode, Blocked, LocalNode, MassDeleteLimit, MassDeleteRule, Plan, PlanInput, PlanOp,
};
use syncstore_proto::{ChunkHash, ChunkRef, DeviceName, RelPath, RemoteEntry};

/// Most rounds of plan-and-apply in one pass before waiting for the next trigger.
const MAX_ROUNDS: usize = 32;
/// First wait before a file that failed in a way that waits is tried again; it doubles up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait before a failed file is tried again.
const RETRY_MAX: Duration = Duration::from_secs(60);

/// What one pass achieved.
#[derive(Debug, Default)]
pub struct PassReport {
    /// Local folder and server hold the same tree, apart from the `skipped` paths.
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

/// The engine of the shipped client.
pub type Engine = SyncEngine<Production>;

/// The sync engine of one folder, over the seams of `W`.
pub struct SyncEngine<W: World> {
    disk: W::Disk,
    server: W::Server,
    clock: W::Clock,
    state: W::Base,
    remote: Option<RemoteTree>,
    cache: HashCache,
    device: Option<DeviceName>,
    retry_soon: bool,
    notices: Vec<Notice>,
    /// Files checked for deletion whose base entry is already gone: path → stamp when checked.
    cleared_for_delete: HashMap<RelPath, Stamp>,
    /// The server identity base was made against as saved in state, and as learned since
    /// (saved with the next base commit).
    identity: ServerIdentity,
    saved_identity: ServerIdentity,
    /// Why base cannot be trusted (the account was re-created, the journal lost what this
    /// folder saw): the next pass re-adopts the folder as on a first sync.
    untrusted: Option<String>,
    /// Chunks the server asked for in its last journal answer (lost or found corrupt there).
    wanted: BTreeSet<ChunkHash>,
    /// The root's device and inode when the engine was opened.
    root_id: FileId,
    /// The root's device and inode as saved in state (saved by the first pass).
    saved_root: Option<FileId>,
    /// Files whose download or upload failed in a way that waits (a chunk the server lost, a
    /// full server): path → (not before, on the monotonic clock; the wait after the next
    /// failure).
    waits: HashMap<RelPath, (Duration, Duration)>,
    /// Opened for previews only: nothing is saved.
    read_only: bool,
    /// The ignore rules, and the `.syncignore` text they were built from (building them is
    /// costly: globs become regexes).
    rules: Option<(Option<String>, std::sync::Arc<IgnoreRules>)>,
    /// The folder as the last walk saw it, kept up to date by the rescans of later passes.
    local: Option<Scan>,
    /// What the next pass looks at again and plans.
    focus: focus::Focus,
    /// Whether each plan of a focus is checked against the plan of the whole folder (the
    /// simulation does), and the differences found.
    check_focus: bool,
    focus_mismatches: Vec<String>,
    /// The mass-delete interlock's limit; `None`: off.
    mass_delete_limit: Option<MassDeleteLimit>,
    /// The user allowed the deletions held now: the next plan is made without the interlock.
    allow_mass_delete: bool,
    /// A hold of the interlock is in force (saved in state as `mass_delete_held`, so it
    /// survives a restart): every plan is of the whole folder, and holds any local deletion
    /// a remote delete asks for, until a plan holds none.
    mass_delete_holding: bool,
    /// The hold in force was logged by this process (once per hold, not once per pass).
    mass_delete_logged: bool,
    /// The local deletions caused by remote deletes applied within the interlock's window
    /// (in memory only: a restart forgets them), counted with the next plan's.
    recent_deletes: mass_delete::RecentDeletes,
    /// The [`Plan::counted_deletes`] of the plan being applied: `execute_local_run` records
    /// those it applies in `recent_deletes`.
    counted_deletes: BTreeSet<RelPath>,
    /// Held while this engine may write (production: the folder's `daemon.lock`).
    _lock: Option<Box<dyn Send>>,
    /// The in-place journals a crash left were replayed (by the first pass, before its scan).
    journals_replayed: bool,
    /// What the engine is doing, for `status` and the progress bar (plain shared memory).
    progress: crate::progress::Progress,
    /// Files fetched ahead from other devices' upload streams (filled by the daemon's stream
    /// follower; taken by downloads).
    prefetched: crate::prefetch::Prefetched<<W::Disk as Disk>::Temp>,
    /// Local files a chunk copied from did not verify (changed without their stamp changing):
    /// downloads copy nothing from them again (in memory only).
    failed_copy_sources: HashSet<RelPath>,
    /// Chunks downloads copied from other local files since [`Self::take_chunks_copied`].
    chunks_copied: u64,
    /// The first chunks of the upload streams this engine's early uploads started lately.
    stream_starts: crate::early_upload::StreamStarts,
    /// On a case-insensitive folder, the remote paths it cannot hold beside another, each with
    /// the path it yields to ([`crate::case_fold`]), as of the last plan.
    case_hidden: BTreeMap<RelPath, RelPath>,
}

/// What a plan takes besides the trees.
struct PlanContext<'a> {
    rules: &'a IgnoreRules,
    device: &'a DeviceName,
    now_stamp: &'a str,
    locked_by_others: &'a BTreeMap<RelPath, DeviceName>,
    read_only_for_locks: &'a BTreeMap<RelPath, u64>,
    local_root_ok: bool,
    mass_delete: Option<MassDeleteRule>,
    /// Remote paths this folder cannot hold ([`crate::case_fold`]): left alone like ignored ones.
    case_hidden: &'a BTreeMap<RelPath, RelPath>,
    /// The folder's filesystem keeps permission bits; when it does not, a local file's
    /// executable bit is taken as base's (none without base), so nothing mode-less is sent.
    keeps_modes: bool,
}

/// The trees a plan is made of: the whole folder's, or a focus's (with row 29's fact about the
/// whole folder).
struct Trees<'t> {
    base: &'t BTreeMap<RelPath, BaseNode>,
    local: &'t BTreeMap<RelPath, LocalNode>,
    remote: &'t BTreeMap<RelPath, syncstore_plan::RemoteNode>,
    local_untouchable: &'t BTreeSet<RelPath>,
    local_ignored: &'t BTreeSet<RelPath>,
    root_emptied: Option<bool>,
}

impl PlanContext<'_> {
    /// The plan of `trees`.
    fn plan(&self, trees: &Trees<'_>) -> Plan {
        let Trees {
            base,
            local,
            remote,
            local_untouchable,
            local_ignored,
            root_emptied,
        } = *trees;
        // Remote and base paths the rules exclude are left alone too.
        let mut untouchable = local_untouchable.clone();
        let mut ignored_by_rules = local_ignored.clone();
        let remote_paths = remote.iter().map(|(path, node)| (path, node.kind));
        let base_paths = base.iter().map(|(p, n)| (p, n.kind));
        for (path, kind) in remote_paths.chain(base_paths) {
            if self.rules.is_ignored(path, kind) {
                untouchable.insert(path.clone());
                ignored_by_rules.insert(path.clone());
            }
        }
        untouchable.extend(self.case_hidden.keys().cloned());
        // A filesystem without modes (FAT, exFAT: everything 0777) says nothing of the
        // executable bit: each file keeps the one base knows, so no mode change is seen.
        let local_with_base_modes: BTreeMap<RelPath, LocalNode>;
        let local = if self.keeps_modes {
            local
        } else {
            local_with_base_modes = local
                .iter()
                .map(|(path, node)| {
                    let executable = node.kind == syncstore_proto::EntryKind::File
                        && base.get(path).is_some_and(|base| base.executable);
                    (
                        path.clone(),
                        LocalNode {
                            executable,
                            ..node.clone()
                        },
                    )
                })
                .collect();
            &local_with_base_modes
        };
        syncstore_plan::plan(&PlanInput {
            base,
            local,
            remote,
            device: self.device,
            now_stamp: self.now_stamp,
            locked_by_others: self.locked_by_others,
            read_only_for_locks: self.read_only_for_locks,
            untouchable: &untouchable,
            local_untouchable,
            ignored_by_rules: &ignored_by_rules,
            local_root_ok: self.local_root_ok,
            remote_complete: true,
            focus_root_emptied: root_emptied,
            mass_delete: self.mass_delete,
        })
    }
}

/// An empty base, planned against when base cannot be trusted.
static EMPTY_BASE: BTreeMap<RelPath, BaseNode> = BTreeMap::new();

impl<W: World> SyncEngine<W> {
    /// An engine over these seams; `read_only`: previews only. Talks to no server yet.
    ///
    /// # Errors
    /// When the state cannot be read or the root cannot be stat'ed.
    pub fn new(
        disk: W::Disk,
        server: W::Server,
        clock: W::Clock,
        state: W::Base,
        read_only: bool,
    ) -> Result<SyncEngine<W>, Error> {
        let identity = crate::state::identity(&state)?;
        let root_meta = disk.root_meta().map_err(|err| {
            Error::io(format!("could not look at {}", disk.root().display()), err)
        })?;
        let root_id = FileId {
            dev: root_meta.dev,
            ino: root_meta.inode,
        };
        // A root with another device or inode than at the last sync was moved, copied or
        // restored: its base may not describe it, so it is re-adopted (nothing is deleted).
        let saved_root = state
            .meta("root_id")?
            .as_deref()
            .and_then(FileId::from_text);
        let untrusted = saved_root.filter(|saved| *saved != root_id).map(|_| {
            "the folder's device or inode changed since its last sync (it was moved, copied or \
             restored, or its disk changed)"
                .to_owned()
        });
        let mass_delete_holding = state.meta(mass_delete::HELD_KEY)?.is_some();
        let mut cache = HashCache::default();
        let now = disk.now_ns();
        for (path, node) in state.base() {
            if let Some(hash) = node.hash {
                let chunks = state.base_chunks().get(path).map_or(&[][..], Vec::as_slice);
                cache.insert(path.clone(), Stamp::of_base(node), now, hash, chunks);
            }
        }
        Ok(SyncEngine {
            disk,
            server,
            clock,
            state,
            remote: None,
            cache,
            device: None,
            retry_soon: false,
            notices: Vec::new(),
            cleared_for_delete: HashMap::new(),
            identity,
            saved_identity: identity,
            untrusted,
            wanted: BTreeSet::new(),
            root_id,
            saved_root,
            waits: HashMap::new(),
            read_only,
            rules: None,
            local: None,
            focus: focus::Focus::default(),
            check_focus: false,
            focus_mismatches: Vec::new(),
            mass_delete_limit: Some(MassDeleteLimit::default()),
            allow_mass_delete: false,
            mass_delete_holding,
            mass_delete_logged: false,
            recent_deletes: mass_delete::RecentDeletes::default(),
            counted_deletes: BTreeSet::new(),
            _lock: None,
            journals_replayed: false,
            progress: crate::progress::Progress::default(),
            prefetched: crate::prefetch::Prefetched::default(),
            failed_copy_sources: HashSet::new(),
            chunks_copied: 0,
            stream_starts: crate::early_upload::StreamStarts::default(),
            case_hidden: BTreeMap::new(),
        })
    }

    /// Keeps `lock` as long as the engine lives.
    pub fn hold(&mut self, lock: Box<dyn Send>) {
        self._lock = Some(lock);
    }

    /// The files fetched ahead from upload streams (a handle sharing them).
    pub fn prefetched(&self) -> crate::prefetch::Prefetched<<W::Disk as Disk>::Temp> {
        self.prefetched.clone()
    }

    /// How many chunks downloads copied from other local files instead of fetching them, since
    /// the last call.
    pub fn take_chunks_copied(&mut self) -> u64 {
        std::mem::take(&mut self.chunks_copied)
    }

    /// The folder's disk.
    pub fn disk(&self) -> &W::Disk {
        &self.disk
    }

    /// What the engine is doing (a clone sharing its state).
    pub fn progress(&self) -> crate::progress::Progress {
        self.progress.clone()
    }

    /// After the daemon dropped a pass at an await (it was paused): commits what that pass
    /// applied and recorded, as a pass that fails part-way does.
    ///
    /// # Errors
    /// When the state cannot be saved.
    pub fn pass_dropped(&mut self) -> Result<(), Error> {
        self.save_identity()?;
        self.state.commit_batch()
    }

    /// The synced folder.
    pub fn root(&self) -> &std::path::Path {
        self.disk.root()
    }

    /// The server seam in use.
    pub fn server(&self) -> &W::Server {
        &self.server
    }

    /// The base store (for the simulation's checks and for tests).
    pub fn base_store(&self) -> &W::Base {
        &self.state
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
        self.disk.check_folder()
    }

    /// Messages for the user gathered since the last call (e.g. a lock of ours was broken).
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// The folder's ignore rules now, built again only when `.syncignore` changed (then the next
    /// round walks and plans the whole folder: what the rules cover changed everywhere).
    fn ignore_rules(&mut self) -> std::sync::Arc<IgnoreRules> {
        let text = self.disk.ignore_file();
        match &self.rules {
            Some((built_from, rules)) if *built_from == text => std::sync::Arc::clone(rules),
            _ => {
                let rules =
                    std::sync::Arc::new(IgnoreRules::parse(self.disk.root(), text.as_deref()));
                if self.rules.is_some() {
                    self.focus.walk_all = true;
                    self.focus.plan_all = true;
                }
                self.rules = Some((text, std::sync::Arc::clone(&rules)));
                rules
            }
        }
    }

    /// Walks the whole folder; with `early`, the chunks of large changed files are uploaded
    /// while it runs (a pass does that; a preview for `status` never sends anything).
    fn scan(&mut self, rules: &IgnoreRules, early: Option<&EarlyUpload>) -> Scan {
        let disk = &self.disk;
        let cache = &mut self.cache;
        let mut sink = early.map(EarlyUpload::sink);
        let result = W::blocking(|| scan(disk, rules, cache, sink.as_mut()));
        if result.unsettled {
            self.retry_soon = true;
        }
        result
    }

    /// Brings the folder's last scan up to date: a full walk when the focus asks for one (or
    /// there is no scan yet), else a look at the paths the focus names. Walks again when the
    /// walk raced a rename between directories. Returns whether it walked the whole folder.
    fn refresh_local(&mut self, early: Option<&EarlyUpload>) -> bool {
        // Read first: new rules ask for a full walk.
        let rules = self.ignore_rules();
        if !self.focus.walk_all && self.local.as_ref().is_some_and(|scan| scan.root_ok) {
            let mut scan = self.local.take().expect("checked");
            let paths = std::mem::take(&mut self.focus.rescan);
            let disk = &self.disk;
            let cache = &mut self.cache;
            let mut sink = early.map(EarlyUpload::sink);
            let looked_at =
                W::blocking(|| rescan_paths(disk, &rules, cache, &mut scan, &paths, sink.as_mut()));
            self.focus.plan.extend(paths.into_keys());
            self.focus.plan.extend(looked_at);
            if scan.unsettled {
                self.retry_soon = true;
            }
            if scan.became_syncable {
                self.focus.plan_all = true;
            }
            // A rename between directories during the look, or a root that went: walk it all.
            let trusted = scan.root_ok && !scan.entries_moved;
            self.local = Some(scan);
            if trusted {
                return false;
            }
            tracing::debug!("entries moved while looking again; walking the whole folder");
        }
        self.progress.count_full_walk();
        let started = self.clock.monotonic();
        let mut scan = self.scan(&rules, early);
        // A walk that raced a rename between directories saw the file nowhere: that is no
        // delete, so the walk is repeated (a few times: a folder whose entries never stop
        // changing is planned as it is, and passes again soon).
        for _ in 0..3 {
            if !scan.entries_moved {
                break;
            }
            tracing::debug!("entries moved during the scan; scanning again");
            scan = self.scan(&rules, early);
        }
        if scan.entries_moved {
            self.retry_soon = true;
        }
        tracing::debug!(
            entries = scan.local.len(),
            ms = (self.clock.monotonic().saturating_sub(started)).as_millis() as u64,
            "full walk done"
        );
        // A full walk is also when the whole folder is planned again: it is the safety net for
        // events the watcher missed, and for any decision a plan of a focus left behind.
        self.focus.plan_all = true;
        self.local = Some(scan);
        self.focus.walk_all = false;
        self.focus.rescan.clear();
        true
    }

    /// The plan of the folder (or of the focus, unless it asks for the whole folder) from the
    /// last scan, base and `remote`.
    fn make_plan(&mut self) -> Option<Plan> {
        // Remote and base paths the rules exclude are left alone too: the rules the scan just
        // read (`.syncignore` is read once a round).
        let rules = match &self.rules {
            Some((_, rules)) => std::sync::Arc::clone(rules),
            None => self.ignore_rules(),
        };
        // No plan before the server said who this device is: conflicted copies are named after
        // it.
        let device = self.device.clone()?;
        self.refresh_case_hidden();
        let remote_tree = self.remote.as_mut()?;
        let touched = remote_tree.take_touched();
        let remote_tree = self.remote.as_ref()?;
        let scan = self.local.as_ref()?;
        let locked_by_others = self.locked_by_others();
        let read_only_for_locks: BTreeMap<RelPath, u64> =
            crate::state::read_only_for_locks(&self.state)
                .unwrap_or_default()
                .into_iter()
                .map(|(path, (inode, _))| (path, inode))
                .collect();
        // Base that cannot be trusted is planned as absent: a first sync, which deletes nothing.
        let whole_base = if self.untrusted.is_some() {
            &EMPTY_BASE
        } else {
            self.state.base()
        };
        // While a mass delete is held, and for the plan the user allowed it in, the whole
        // folder: the deletions held lie outside any focus, and the count is the folder's.
        let plan_all = self.focus.plan_all
            || self.untrusted.is_some()
            || self.mass_delete_holding
            || self.allow_mass_delete;
        // The focus: what changed on either side, what the last plan left, locks and the
        // files made read-only for them.
        // The focus only grows until a plan comes out empty: a plan may leave decisions to the
        // next round (the paths a rename claimed, the children of a directory to be created).
        if !plan_all {
            self.focus.plan.extend(touched);
        }
        let cut = (!plan_all).then(|| {
            let mut seeds = self.focus.plan.clone();
            seeds.extend(remote_tree.locks.keys().cloned());
            seeds.extend(read_only_for_locks.keys().cloned());
            // A file made read-only that is no longer at its path is followed by its inode
            // (the user renamed it): where it went belongs to the focus. Looked for through
            // the whole local tree, which happens once per such file (the plan then gives its
            // write bits back and it leaves the set).
            let moved: BTreeSet<u64> = read_only_for_locks
                .iter()
                .filter(|(path, inode)| {
                    **inode != 0 && scan.local.get(*path).map(|n| n.inode) != Some(**inode)
                })
                .map(|(_, inode)| *inode)
                .collect();
            if !moved.is_empty() {
                seeds.extend(
                    scan.local
                        .iter()
                        .filter(|(_, node)| moved.contains(&node.inode))
                        .map(|(path, _)| path.clone()),
                );
            }
            let known = focus::Known {
                base: whole_base,
                local: &scan.local,
                remote: &remote_tree.by_path,
                local_untouchable: &scan.untouchable,
            };
            let paths = focus::close(&seeds, &known);
            // Row 29 as the planner reads it of the whole folder: base files the rules or an
            // untouchable entry cover do not count.
            let emptied = scan.local.is_empty()
                && whole_base.iter().any(|(path, node)| {
                    let file = syncstore_proto::EntryKind::File;
                    node.kind == file
                        && !rules.is_ignored(path, file)
                        && !scan.untouchable.contains(path)
                        && !path
                            .ancestors()
                            .iter()
                            .any(|a| scan.untouchable.contains(a))
                });
            (
                paths.iter().map(RelPath::to_string).collect::<Vec<_>>(),
                focus::cut(whole_base, &paths),
                focus::cut(&scan.local, &paths),
                remote_tree.plan_view_of(&paths),
                focus::cut_set(&scan.untouchable, &paths),
                focus::cut_set(&scan.ignored, &paths),
                emptied,
            )
        });
        let whole_remote = (cut.is_none() || self.check_focus).then(|| remote_tree.plan_view());
        let whole = || Trees {
            base: whole_base,
            local: &scan.local,
            remote: whole_remote.as_ref().expect("made for a whole plan"),
            local_untouchable: &scan.untouchable,
            local_ignored: &scan.ignored,
            root_emptied: None,
        };
        let trees = match &cut {
            Some((_, base, local, remote, untouchable, ignored, emptied)) => Trees {
                base,
                local,
                remote,
                local_untouchable: untouchable,
                local_ignored: ignored,
                root_emptied: Some(*emptied),
            },
            None => whole(),
        };
        let now_stamp = self.clock.local_now().format("%Y-%m-%d %H%M%S").to_string();
        let mass_delete = self.mass_delete_rule(whole_base);
        let context = PlanContext {
            rules: &rules,
            device: &device,
            now_stamp: &now_stamp,
            locked_by_others: &locked_by_others,
            read_only_for_locks: &read_only_for_locks,
            local_root_ok: scan.root_ok,
            mass_delete,
            case_hidden: &self.case_hidden,
            keeps_modes: self.disk.keeps_modes(),
        };
        let plan = context.plan(&trees);
        if self.check_focus && cut.is_some() {
            let whole = context.plan(&whole());
            if let Some(difference) = focus::differs(&plan, &whole) {
                let paths = cut.as_ref().map(|cut| cut.0.join(", ")).unwrap_or_default();
                self.focus_mismatches
                    .push(format!("{difference}; the focus: [{paths}]"));
            }
        }
        Some(plan)
    }

    /// On a case-insensitive folder, finds the remote paths it cannot hold beside another
    /// ([`crate::case_fold`]; the whole trees are walked, so only there). Each newly hidden path
    /// is logged once; one hidden no longer is planned again.
    fn refresh_case_hidden(&mut self) {
        if !self.disk.case_insensitive() {
            return;
        }
        let (Some(remote), Some(scan)) = (self.remote.as_ref(), self.local.as_ref()) else {
            return;
        };
        let base = if self.untrusted.is_some() {
            &EMPTY_BASE
        } else {
            self.state.base()
        };
        let hidden = crate::case_fold::hidden(&remote.by_path, &scan.local, base);
        for (path, holder) in &hidden {
            if self.case_hidden.get(path) != Some(holder) {
                tracing::warn!(%path, "{}", crate::case_fold::reason(holder));
            }
        }
        let released: Vec<RelPath> = self
            .case_hidden
            .keys()
            .filter(|path| !hidden.contains_key(*path))
            .cloned()
            .collect();
        self.focus.plan.extend(released);
        self.case_hidden = hidden;
    }

    /// The hidden paths of [`Self::refresh_case_hidden`], as skipped entries.
    fn case_skipped(&self) -> impl Iterator<Item = Skipped> + '_ {
        self.case_hidden.iter().map(|(path, holder)| Skipped {
            path: path.to_string(),
            reason: crate::case_fold::reason(holder),
        })
    }

    /// A local path changed (a watcher event); `deep`: it may be a directory with new entries
    /// (created, or renamed into place). The next [`SyncEngine::sync_changes`] looks at it.
    pub fn local_changed(&mut self, path: RelPath, deep: bool) {
        self.focus.local_changed(path, deep);
    }

    /// The watcher cannot say what changed (its queue overflowed, a watch could not be added,
    /// it failed): the next pass walks the whole folder.
    pub fn local_unknown(&mut self) {
        self.focus.walk_all = true;
    }

    /// Checks every plan of a focus against the plan of the whole folder from the same trees
    /// (costly: for the simulation); differences are kept for
    /// [`SyncEngine::take_focus_mismatches`].
    pub fn check_focus_plans(&mut self, on: bool) {
        self.check_focus = on;
    }

    /// The differences found by [`SyncEngine::check_focus_plans`] since the last call.
    pub fn take_focus_mismatches(&mut self) -> Vec<String> {
        std::mem::take(&mut self.focus_mismatches)
    }

    /// Computes what a pass would do, changing nothing.
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub async fn preview(&mut self) -> Result<Preview, Error> {
        self.check_folder()?;
        self.refresh_remote().await?;
        self.focus.walk_all = true;
        self.refresh_local(None);
        let plan = self.make_plan().expect("connected");
        let scan = self.local.take().expect("scanned");
        let mut skipped = scan.skipped;
        skipped.extend(self.case_skipped());
        Ok(Preview {
            plan,
            local: scan.local,
            remote: self.remote.as_ref().expect("connected").by_path.clone(),
            skipped,
            untrusted: self.untrusted.clone(),
            readopted: self.state.meta("readopted")?,
        })
    }

    /// One full two-way pass: walk the whole folder, then plan and apply until nothing is left
    /// to do.
    ///
    /// # Errors
    /// When the server cannot be reached or the folder cannot be written; the pass can simply be
    /// run again later.
    pub async fn sync_pass(&mut self) -> Result<PassReport, Error> {
        self.focus.walk_all = true;
        self.pass().await
    }

    /// A two-way pass over what changed since the last one: the local paths the watcher named
    /// ([`SyncEngine::local_changed`]), the server's journal since the cursor, and what the last
    /// pass left undone. Walks the whole folder only when it must (the first pass, new ignore
    /// rules, [`SyncEngine::local_unknown`]).
    ///
    /// # Errors
    /// As [`SyncEngine::sync_pass`].
    pub async fn sync_changes(&mut self) -> Result<PassReport, Error> {
        self.pass().await
    }

    /// Records `node` as the base of `path`, without a local stamp that is not settled
    /// ([`record::settled`]).
    fn put_base(
        &mut self,
        path: &RelPath,
        node: syncstore_plan::BaseNode,
        chunks: Vec<ChunkRef>,
    ) -> Result<(), Error> {
        let node = record::settled(node, path, &self.cache, self.disk.now_ns());
        self.state.put(path, node, chunks)
    }

    #[tracing::instrument(name = "sync_pass", skip(self), fields(root = %self.disk.root().display()))]
    async fn pass(&mut self) -> Result<PassReport, Error> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let mut report = PassReport::default();
        self.retry_soon = false;
        if !self.journals_replayed {
            self.check_folder()?;
            W::blocking(|| self.replay_in_place_journals())?;
            self.journals_replayed = true;
        }
        for round in 0..MAX_ROUNDS {
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
            let early = W::EARLY_UPLOAD.then(|| {
                EarlyUpload::start(
                    self.server.clone(),
                    self.disk.root().to_path_buf(),
                    self.stream_starts.clone(),
                )
            });
            let walked_all = self.refresh_local(early.as_ref());
            if round == 0 && !walked_all {
                self.progress.count_incremental_pass();
            }
            if let Some(early) = early {
                early.finish().await;
            }
            let mut plan = self.make_plan().expect("connected");
            self.mass_delete_planned(&mut plan)?;
            let scan = self.local.as_ref().expect("scanned");
            let remote_tree = self.remote.as_ref().expect("connected");
            self.progress.planned_with_sizes(
                &plan,
                &|path| scan.local.get(path).map_or(0, |node| node.size),
                &|path| remote_tree.by_path.get(path).map_or(0, |entry| entry.size),
            );
            report.blocked = plan.blocked.clone();
            report.skipped = scan.skipped.clone();
            report.skipped.extend(self.case_skipped());
            if plan.ops.is_empty() {
                self.save_identity()?;
                let scan = self.local.as_ref().expect("scanned");
                // Skipped entries (symlinks, unreadable files, unsyncable names) are reported
                // in `skipped`, not held against `in_sync`: nothing can be done about them, and
                // a folder holding one would otherwise never be in sync.
                report.in_sync = plan.blocked.is_empty() && scan.root_ok;
                report.retry_soon = self.retry_soon;
                // What the next pass must look at again though nothing may change there:
                // blocked paths, entries that could not be synced, files that wait to be
                // tried again. A blocked root is looked at as a whole.
                let mut pending: BTreeSet<RelPath> = scan
                    .untouchable
                    .difference(&scan.ignored)
                    .cloned()
                    .collect();
                pending.extend(self.waits.keys().cloned());
                for blocked in &plan.blocked {
                    match (&blocked.path, &blocked.reason) {
                        (Some(path), _) => {
                            pending.insert(path.clone());
                        }
                        // A held mass delete plans the whole folder while it lasts (see
                        // `mass_delete.rs`); walking it again would find nothing more.
                        (None, syncstore_plan::BlockReason::MassDeleteHeld { .. }) => {}
                        (None, _) => self.focus.walk_all = true,
                    }
                }
                let walk_all = self.focus.walk_all;
                let rescan: Vec<RelPath> = pending.iter().cloned().collect();
                self.focus.settle(pending);
                self.focus.walk_all = walk_all;
                for path in rescan {
                    self.focus.local_changed(path, false);
                }
                return Ok(report);
            }
            tracing::debug!(ops = plan.ops.len(), "applying plan");
            for op in &plan.ops {
                self.focus.after_op(op);
            }
            let n_ops = plan.ops.len();
            self.counted_deletes = plan.counted_deletes;
            let executed = self.execute(plan.ops).await;
            self.counted_deletes.clear();
            let (applied, waiting) = executed?;
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
        let now = self.clock.monotonic();
        // A wait already over is no reason to pass again: the file was tried since, or is
        // no longer planned.
        self.waits
            .values()
            .filter(|(at, _)| *at > now)
            .map(|(at, _)| at.saturating_sub(now))
            .min()
    }

    /// Whether `path` waits for its retry time.
    fn waits_now(&self, path: &RelPath) -> bool {
        let now = self.clock.monotonic();
        self.waits.get(path).is_some_and(|(at, _)| *at > now)
    }

    /// `path` failed in a way that waits: try again after the next backoff step.
    fn wait_before_retry(&mut self, path: &RelPath) -> Duration {
        let now = self.clock.monotonic();
        let entry = self.waits.entry(path.clone()).or_insert((now, RETRY_FIRST));
        let wait = entry.1;
        *entry = (now + wait, (wait * 2).min(RETRY_MAX));
        wait
    }

    /// Applies a plan; returns how many steps applied, and how many were left to wait for their
    /// retry time.
    async fn execute(&mut self, ops: Vec<PlanOp>) -> Result<(usize, usize), Error> {
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
    ) -> Result<(), Error> {
        while let Some(first) = ops.next() {
            let kind = RunKind::of(&first);
            let mut run = vec![first];
            while let Some(next) = ops.next_if(|op| RunKind::of(op) == kind) {
                run.push(next);
            }
            let n_ops = run.len();
            let before = *applied;
            *applied += match kind {
                RunKind::Remote => self.execute_remote_ops(run).await?,
                RunKind::Upload => self.execute_upload_run(run).await?,
                RunKind::Download => self.execute_downloads(run).await?,
                RunKind::Local => {
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
                    self.execute_local_run(run)?
                }
            };
            // Later steps may depend on this run (a delete at the old path after an upload to
            // the new one): when any step of it did not apply, stop and plan again from the
            // trees as they are now (found by the simulation, seed 7712).
            // Local steps and downloads that fail (a directory kept for an ignored file in it, a
            // name behind a symlink) carry nothing later steps rely on, and may fail for good, so
            // they do not end the plan.
            if matches!(kind, RunKind::Remote | RunKind::Upload) && *applied - before < n_ops {
                self.retry_soon = true;
                return Ok(());
            }
        }
        Ok(())
    }
}

/// The runs a plan is applied in: consecutive steps of one kind go together (one request per
/// server-bound run).
#[derive(PartialEq, Clone, Copy)]
enum RunKind {
    Remote,
    Upload,
    Download,
    Local,
}

impl RunKind {
    fn of(op: &PlanOp) -> RunKind {
        match op {
            PlanOp::DeleteRemote { .. }
            | PlanOp::MakeDirRemote { .. }
            | PlanOp::MoveRemote { .. }
            | PlanOp::SetModeRemote { .. } => RunKind::Remote,
            PlanOp::Upload { .. } => RunKind::Upload,
            PlanOp::Download { .. } => RunKind::Download,
            _ => RunKind::Local,
        }
    }
}
