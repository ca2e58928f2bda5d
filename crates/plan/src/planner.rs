//! The per-path decisions behind [`crate::plan`].
//!
//! A pass goes in six steps:
//!
//! 1. Whole-pass checks (row 29): a missing local root stops everything; an emptied one stops
//!    every deletion (see the crate docs).
//! 2. Renames ([`crate::rename`]): a node that left one path and arrived at another becomes one
//!    move; the paths it settles are *claimed* and skipped by step 3.
//! 3. Every other path, children before parents: each side is classified against base by kind
//!    and content hash ([`State`]), and [`Planner::decide`] picks the row of THREE-TREE.md.
//!    A directory's decision depends on what its children's decisions leave beneath it, which is
//!    why children go first; the planner tracks what each side will hold after the plan in
//!    `local_after` / `remote_after`.
//! 4. Read-only files for locks ([`crate::read_only`]): from the ops decided so far, the
//!    local files to make read-only or give their write bits back.
//! 5. The ops are sorted into the order the client applies them ([`sort_ops`]): remote
//!    deletions wait for the uploads unless they free a name one needs.
//! 6. The mass-delete interlock (crate docs): when the local deletions caused by remote
//!    deletes are too many (with those the caller applied recently), steps 1 to 5 run again
//!    with every decision that makes one left out (a second run only then, so a directory
//!    whose files stay is not removed).
//!
//! A remote node at a path whose `node_id` differs from base's was deleted and created anew
//! remotely, so the remote side counts as changed there even when the new node holds base's
//! bytes: a local edit then meets it as a conflict (both kept), a local delete does not delete
//! it (it comes back), and an unchanged local file takes the new node's bytes. When both sides
//! hold the same bytes, a `RecordBase` adopts the new node, so base does not keep naming a node
//! that no longer exists.

use crate::{
    BaseNode, BlockReason, Blocked, ContentHash, EntryKind, LocalNode, Plan, PlanInput, PlanOp,
    Precondition, RelPath, RemoteNode,
};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

/// See the module docs; step 6 (the mass-delete interlock) wraps the other five.
pub(crate) fn plan(input: &PlanInput<'_>) -> Plan {
    let mut plan = plan_paths(input, false);
    plan.counted_deletes = counted_deletes(input, &plan.ops);
    let Some(rule) = input.mass_delete else {
        return plan;
    };
    let planned = plan.counted_deletes.len();
    // The deletions of this plan and those applied recently count together, against the folder
    // as it was before the recent ones: a mass delete that arrives in pieces is one.
    let files = planned + rule.recently_deleted;
    let folder_files = rule.folder_files + rule.recently_deleted;
    let held = planned > 0 && (rule.holding || rule.limit.exceeded(files, folder_files));
    if !held {
        return plan;
    }
    // Planned again with those deletions left out from the start: a directory decides from
    // what its children's decisions leave beneath it, so one whose files stay, stays.
    let mut plan = plan_paths(input, true);
    let at = plan.blocked.iter().take_while(|b| b.path.is_none()).count();
    plan.blocked.insert(
        at,
        Blocked {
            path: None,
            reason: BlockReason::MassDeleteHeld {
                files,
                folder_files,
            },
        },
    );
    plan
}

/// The paths of the `DeleteLocal` steps among `ops` that the mass-delete interlock counts
/// ([`Plan::counted_deletes`]).
fn counted_deletes(input: &PlanInput<'_>, ops: &[PlanOp]) -> BTreeSet<RelPath> {
    ops.iter()
        .filter_map(|op| match op {
            PlanOp::DeleteLocal { path, .. } if deletes_for_remote(input, op) => Some(path.clone()),
            _ => None,
        })
        .collect()
}

/// Whether `op` deletes locally what the remote no longer has: what the mass-delete
/// interlock counts (`DeleteLocal`) and holds (with `RemoveDirLocal`). Not what goes with a
/// type change above it (a directory the remote turned into a file, row 19): holding that
/// would keep the directory here, and turn the type change into a conflict.
fn deletes_for_remote(input: &PlanInput<'_>, op: &PlanOp) -> bool {
    let (PlanOp::DeleteLocal { path, .. } | PlanOp::RemoveDirLocal { path }) = op else {
        return false;
    };
    let remote_file = |at: &RelPath| {
        input
            .remote
            .get(at)
            .is_some_and(|node| node.kind == EntryKind::File)
    };
    !input.remote.contains_key(path) && !path.ancestors().iter().any(remote_file)
}

/// Steps 1 to 5 of the module docs; `hold_remote_deletes`: leave out the decisions that delete
/// locally what the remote no longer has (the mass-delete interlock holds them).
fn plan_paths(input: &PlanInput<'_>, hold_remote_deletes: bool) -> Plan {
    if !input.local_root_ok {
        return Plan {
            blocked: vec![root_blocked()],
            ..Plan::default()
        };
    }
    let mut planner = Planner::new(input);
    planner.hold_remote_deletes = hold_remote_deletes;
    // Row 29: an empty root while base holds files looks like an unmounted disk, so nothing is
    // deleted on its account; what only adds bytes (downloads, directory creations, base
    // bookkeeping) still goes, so an edit that beat a delete elsewhere comes back. Ignored
    // leftovers (a `.DS_Store` on an empty mount point) do not count as entries.
    let has_base_file = planner
        .base
        .values()
        .any(|node| node.kind == EntryKind::File);
    planner.root_emptied = input
        .focus_root_emptied
        .unwrap_or(planner.local.is_empty() && has_base_file);
    planner.detect_renames();
    planner.deleted_remotely = planner.deleted_remotely();
    planner.decide_paths();
    planner.forget_ignored();
    planner.plan_read_only();
    let mut ops = planner.ops;
    sort_ops(&mut ops);
    let mut blocked = planner.blocked;
    blocked.sort_by(|a, b| a.path.cmp(&b.path));
    if planner.root_emptied {
        blocked.insert(0, root_blocked());
    }
    Plan {
        ops,
        blocked,
        counted_deletes: BTreeSet::new(),
    }
}

fn root_blocked() -> Blocked {
    Blocked {
        path: None,
        reason: BlockReason::LocalRootMissing,
    }
}

/// One side's state at a path, compared by kind and content.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum State {
    Absent,
    /// `None` when the file has no hash yet (malformed input); such a path is left alone.
    File(Option<ContentHash>),
    Dir,
}

impl State {
    fn of(kind: Option<(EntryKind, Option<ContentHash>)>) -> State {
        match kind {
            None => State::Absent,
            Some((EntryKind::File, hash)) => State::File(hash),
            Some((EntryKind::Dir, _)) => State::Dir,
        }
    }
}

/// The working state of one pass.
pub(crate) struct Planner<'i, 'a> {
    pub(crate) input: &'i PlanInput<'a>,
    /// The three trees without ignored paths (row 27).
    pub(crate) base: BTreeMap<&'a RelPath, &'a BaseNode>,
    pub(crate) local: BTreeMap<&'a RelPath, &'a LocalNode>,
    pub(crate) remote: BTreeMap<&'a RelPath, &'a RemoteNode>,
    /// Paths each side will hold once the ops planned so far are applied (ignored ones included,
    /// since they keep a directory from being empty).
    local_after: BTreeSet<String>,
    remote_after: BTreeSet<String>,
    /// Untouchable paths present on each side: they stay whatever the plan does, so a
    /// directory holding one cannot be removed there.
    local_untouchable: BTreeSet<String>,
    remote_untouchable: BTreeSet<String>,
    /// Paths settled by the rename step: `claimed` alone, `claimed_trees` with everything beneath.
    claimed: BTreeSet<RelPath>,
    claimed_trees: Vec<RelPath>,
    /// Conflicted-copy names chosen in this pass, so two copies never get the same name.
    copy_names: BTreeSet<RelPath>,
    /// Row 29: the local root holds nothing while base holds files; nothing is deleted.
    pub(crate) root_emptied: bool,
    /// The mass-delete interlock holds this pass's local deletions of what the remote no
    /// longer has.
    hold_remote_deletes: bool,
    /// Contents of remote files that look deleted locally and unchanged remotely (row 6, also
    /// beneath a directory deleted locally), set after the rename step; see
    /// [`Planner::last_copy`].
    deleted_remotely: BTreeSet<ContentHash>,
    pub(crate) ops: Vec<PlanOp>,
    pub(crate) blocked: Vec<Blocked>,
}

impl<'i, 'a> Planner<'i, 'a> {
    fn new(input: &'i PlanInput<'a>) -> Self {
        let ignored = |path: &RelPath| is_ignored(input, path);
        Planner {
            input,
            base: input
                .base
                .iter()
                .filter(|(path, _)| !ignored(path))
                .collect(),
            local: input
                .local
                .iter()
                .filter(|(path, _)| !ignored(path))
                .collect(),
            remote: input
                .remote
                .iter()
                .filter(|(path, _)| !ignored(path))
                .collect(),
            local_after: input
                .local
                .keys()
                .chain(input.local_untouchable)
                .map(|p| p.as_str().to_owned())
                .collect(),
            remote_after: input.remote.keys().map(|p| p.as_str().to_owned()).collect(),
            local_untouchable: input
                .local_untouchable
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
            remote_untouchable: input
                .remote
                .keys()
                .filter(|path| ignored(path))
                .map(|p| p.as_str().to_owned())
                .collect(),
            claimed: BTreeSet::new(),
            claimed_trees: Vec::new(),
            copy_names: BTreeSet::new(),
            root_emptied: false,
            hold_remote_deletes: false,
            deleted_remotely: BTreeSet::new(),
            ops: Vec::new(),
            blocked: Vec::new(),
        }
    }

    pub(crate) fn base_state(&self, path: &RelPath) -> State {
        State::of(self.base.get(path).map(|n| (n.kind, n.hash)))
    }

    pub(crate) fn local_state(&self, path: &RelPath) -> State {
        State::of(self.local.get(path).map(|n| (n.kind, n.hash)))
    }

    pub(crate) fn remote_state(&self, path: &RelPath) -> State {
        State::of(self.remote.get(path).map(|n| (n.kind, n.hash)))
    }

    /// The device whose lock covers `path` (the path itself or an ancestor), if any.
    pub(crate) fn lock_for(&self, path: &RelPath) -> Option<&'a crate::DeviceName> {
        let locks = self.input.locked_by_others;
        locks
            .get(path)
            .or_else(|| path.ancestors().iter().rev().find_map(|a| locks.get(a)))
    }

    /// The device holding a lock strictly inside `dir`, if any (a directory move would carry it).
    pub(crate) fn lock_inside(&self, dir: &RelPath) -> Option<&'a crate::DeviceName> {
        let locks: &'a BTreeMap<RelPath, crate::DeviceName> = self.input.locked_by_others;
        locks
            .iter()
            .find(|(path, _)| path.is_inside(dir))
            .map(|(_, device)| device)
    }

    pub(crate) fn is_claimed(&self, path: &RelPath) -> bool {
        self.claimed.contains(path)
            || self
                .claimed_trees
                .iter()
                .any(|tree| path == tree || path.is_inside(tree))
    }

    /// Whether the rename step claimed a path strictly inside `dir`: moving `dir` too in the same
    /// pass would move, or collide with, what that rename does.
    pub(crate) fn claimed_inside(&self, dir: &RelPath) -> bool {
        self.claimed
            .iter()
            .chain(&self.claimed_trees)
            .any(|path| path.is_inside(dir))
    }

    pub(crate) fn claim(&mut self, path: &RelPath, with_beneath: bool) {
        if with_beneath {
            self.claimed_trees.push(path.clone());
        } else {
            self.claimed.insert(path.clone());
        }
    }

    /// Records `op` and what it does to the after-trees.
    pub(crate) fn push(&mut self, op: PlanOp) {
        match &op {
            PlanOp::Upload { path, .. } | PlanOp::MakeDirRemote { path } => {
                self.remote_after.insert(path.as_str().to_owned());
            }
            PlanOp::Download { path, .. } | PlanOp::MakeDirLocal { path, .. } => {
                self.local_after.insert(path.as_str().to_owned());
            }
            PlanOp::DeleteLocal { path, .. } | PlanOp::RemoveDirLocal { path } => {
                self.local_after.remove(path.as_str());
            }
            PlanOp::DeleteRemote { path, .. } => {
                self.remote_after.remove(path.as_str());
            }
            PlanOp::MoveRemote { from, to, .. } => move_tree(&mut self.remote_after, from, to),
            PlanOp::MoveLocal { from, to } => move_tree(&mut self.local_after, from, to),
            PlanOp::ConflictCopy { path, copy } => move_tree(&mut self.local_after, path, copy),
            PlanOp::SetModeRemote { .. }
            | PlanOp::SetModeLocal { .. }
            | PlanOp::RecordBase { .. }
            | PlanOp::ForgetBase { .. }
            | PlanOp::ProtectLocal { .. }
            | PlanOp::UnprotectLocal { .. } => {}
        }
        self.ops.push(op);
    }

    pub(crate) fn block(&mut self, path: &RelPath, device: &crate::DeviceName) {
        let entry = Blocked {
            path: Some(path.clone()),
            reason: BlockReason::LockedBy(device.clone()),
        };
        if !self.blocked.contains(&entry) {
            self.blocked.push(entry);
        }
    }

    /// A free conflicted-copy name for `path`: not in any tree, nor chosen earlier in this pass.
    /// `device` is the one whose bytes the copy holds: this device for a copy of the local file,
    /// the remote node's last writer for a copy of the remote one.
    fn copy_name(&mut self, path: &RelPath, device: &crate::DeviceName) -> RelPath {
        let input = self.input;
        let chosen = &self.copy_names;
        let taken = |candidate: &RelPath| {
            input.base.contains_key(candidate)
                || input.local.contains_key(candidate)
                || input.remote.contains_key(candidate)
                || chosen.contains(candidate)
        };
        let copy = crate::conflict_copy_name(path, device, input.now_stamp, &taken);
        self.copy_names.insert(copy.clone());
        copy
    }

    /// See the field `deleted_remotely`: the contents of files that are gone locally and will be
    /// deleted remotely, unless a rename claimed them.
    fn deleted_remotely(&self) -> BTreeSet<ContentHash> {
        let empty = ContentHash::of_empty();
        let mut out = BTreeSet::new();
        for (&path, &base) in &self.base {
            let Some(hash) = base.hash.filter(|h| *h != empty) else {
                continue;
            };
            let remote_unchanged = self.remote.get(path).is_some_and(|remote| {
                remote.kind == EntryKind::File
                    && remote.node_id == base.node_id
                    && remote.hash == Some(hash)
            });
            if base.kind == EntryKind::File
                && remote_unchanged
                && !self.local.contains_key(path)
                && !self.is_claimed(path)
            {
                out.insert(hash);
            }
        }
        out
    }

    /// Whether deleting local bytes `hash` would destroy them on both sides in this pass: the
    /// remote copy of the same bytes at another path goes too, because it is gone locally.
    ///
    /// Base can claim an agreement the server no longer holds: the client may lose the answer to
    /// any request, or roll base back in a crash, after the server applied a deletion of ours.
    /// A file the user then moves back onto that path (or a directory move that carries the stale
    /// entry there) looks unchanged locally and deleted remotely (row 7), while its remote copy
    /// at the path it came from looks deleted locally (row 6). Keeping the local file (it is
    /// uploaded, as an edit beats a delete) keeps the bytes; at worst a deletion made on both
    /// sides at once is undone.
    fn last_copy(&self, hash: ContentHash) -> bool {
        self.deleted_remotely.contains(&hash)
    }

    /// Row 27: base entries of paths the rules ignore are forgotten. Neither side is tracked
    /// there, so such an entry goes stale (the server may move or delete the node, the user may
    /// put other bytes there); trusted again once the rule goes, a stale entry could read as a
    /// deletion. Without it, a path that stops being ignored is planned as on a first sync,
    /// which deletes nothing.
    fn forget_ignored(&mut self) {
        let ignored = self.input.ignored_by_rules;
        if ignored.is_empty() {
            return;
        }
        for path in self.input.base.keys() {
            let by_rule =
                ignored.contains(path) || path.ancestors().iter().any(|a| ignored.contains(a));
            if by_rule {
                self.ops.push(PlanOp::ForgetBase { path: path.clone() });
            }
        }
    }

    /// Step 3 of the module docs.
    fn decide_paths(&mut self) {
        let mut paths: BTreeSet<&'a RelPath> = BTreeSet::new();
        paths.extend(self.base.keys().copied());
        paths.extend(self.local.keys().copied());
        paths.extend(self.remote.keys().copied());
        let skip_beneath = self.skip_beneath(&paths);
        // Reverse order visits every path after everything beneath it ("a/b" sorts after "a").
        for path in paths.into_iter().rev() {
            if self.is_claimed(path) || skip_beneath.iter().any(|dir| path.is_inside(dir)) {
                continue;
            }
            self.decide(path);
        }
    }

    /// Paths whose children must wait for the next pass: the remote has a directory there that
    /// will not exist locally after this pass (a lock holds back the local change that stands in
    /// its way, a partial listing holds back replacing a local file, or a rename claimed the
    /// path), so nothing can be downloaded beneath it yet.
    fn skip_beneath(&self, paths: &BTreeSet<&'a RelPath>) -> Vec<RelPath> {
        let mut out = Vec::new();
        for &path in paths {
            let local_state = self.local_state(path);
            if self.remote_state(path) != State::Dir || local_state == State::Dir {
                continue;
            }
            let local_changed = local_state != self.base_state(path);
            // A local file kept as a conflicted copy (see `last_copy`) is a local change too.
            let kept = matches!(local_state, State::File(Some(hash)) if self.last_copy(hash));
            let blocked = (local_changed || kept) && self.lock_for(path).is_some();
            let held_back = !local_changed && !self.input.remote_complete;
            // A path settled by the rename step gets no directory creation this pass either.
            if blocked || held_back || self.is_claimed(path) {
                out.push(path.clone());
            }
        }
        out
    }

    fn local_has_beneath(&self, dir: &RelPath) -> bool {
        has_beneath(&self.local_after, dir)
    }

    fn remote_has_beneath(&self, dir: &RelPath) -> bool {
        has_beneath(&self.remote_after, dir)
    }

    /// Whether an untouchable local entry lies beneath `dir`: the local directory stays.
    fn local_keeps_untouchable(&self, dir: &RelPath) -> bool {
        has_beneath(&self.local_untouchable, dir)
    }

    /// Whether an untouchable remote entry lies beneath `dir`: the remote directory stays.
    fn remote_keeps_untouchable(&self, dir: &RelPath) -> bool {
        has_beneath(&self.remote_untouchable, dir)
    }

    /// Decides one path and records the ops (or the block).
    fn decide(&mut self, path: &RelPath) {
        let base_state = self.base_state(path);
        let local_state = self.local_state(path);
        let remote_state = self.remote_state(path);
        if [base_state, local_state, remote_state].contains(&State::File(None)) {
            return;
        }
        let local_changed = local_state != base_state;
        let ops = self.decide_ops(path, base_state, local_state, remote_state);
        if ops.is_empty() {
            return;
        }
        let bookkeeping =
            |op: &PlanOp| matches!(op, PlanOp::RecordBase { .. } | PlanOp::ForgetBase { .. });
        if let Some(device) = self.lock_for(path) {
            // Row 25: nothing local is sent for a locked path, and a remote change that meets a
            // local one waits too, so the local bytes stay. Remote changes alone still flow down.
            let sends = ops.iter().any(|op| {
                matches!(
                    op,
                    PlanOp::Upload { .. }
                        | PlanOp::SetModeRemote { .. }
                        | PlanOp::DeleteRemote { .. }
                        | PlanOp::MakeDirRemote { .. }
                        | PlanOp::MoveRemote { .. }
                        | PlanOp::ConflictCopy { .. }
                )
            });
            if sends || (local_changed && !ops.iter().all(bookkeeping)) {
                self.block(path, device);
                return;
            }
        }
        let deletes = |op: &PlanOp| {
            matches!(
                op,
                PlanOp::DeleteLocal { .. }
                    | PlanOp::DeleteRemote { .. }
                    | PlanOp::RemoveDirLocal { .. }
                    | PlanOp::MoveLocal { .. }
                    | PlanOp::MoveRemote { .. }
                    | PlanOp::ConflictCopy { .. }
            )
        };
        if self.root_emptied && ops.iter().any(deletes) {
            // Row 29: an emptied root deletes nothing (and moves nothing) on either side.
            return;
        }
        if self.hold_remote_deletes && ops.iter().any(|op| deletes_for_remote(self.input, op)) {
            // The mass-delete interlock: what the remote no longer has stays here.
            return;
        }
        if !self.input.remote_complete {
            // Row 30: an absence in a partial listing proves nothing, so nothing local is
            // deleted or moved on its account, and base forgets nothing.
            let trusts_listing = |op: &PlanOp| {
                matches!(
                    op,
                    PlanOp::DeleteLocal { .. }
                        | PlanOp::RemoveDirLocal { .. }
                        | PlanOp::MoveLocal { .. }
                        | PlanOp::ForgetBase { .. }
                )
            };
            if ops.iter().any(trusts_listing) {
                return;
            }
        }
        for op in ops {
            self.push(op);
        }
    }

    /// The row of THREE-TREE.md for one path, as ops (before locks and row 30 are applied).
    fn decide_ops(
        &mut self,
        path: &RelPath,
        base_state: State,
        local_state: State,
        remote_state: State,
    ) -> Vec<PlanOp> {
        use State::{Absent, Dir, File};
        let local_changed = local_state != base_state;
        let (base, local, remote) = (
            self.base.get(path).copied(),
            self.local.get(path).copied(),
            self.remote.get(path).copied(),
        );
        // A different node at the path was deleted-then-created remotely: a change even when
        // it holds base's bytes (a restore, say), so a local edit or delete meets it as a
        // conflict instead of overwriting or deleting it.
        let replaced = base
            .zip(remote)
            .is_some_and(|(b, r)| b.node_id != r.node_id);
        let remote_changed = remote_state != base_state || replaced;
        let local_executable = local.is_some_and(|local| local.executable);
        let path = path.clone();
        match (local_state, remote_state, local, remote) {
            // Rows 8 and 18: gone on both sides.
            (Absent, Absent, _, _) => match base {
                Some(_) => vec![PlanOp::ForgetBase { path }],
                None => Vec::new(),
            },
            (File(Some(local_hash)), File(Some(remote_hash)), Some(local), Some(remote)) => {
                // Rows 33 and 34: the mode is merged apart from the content (crate docs).
                let executable = merged_mode(base, local, remote);
                match (local_changed, remote_changed) {
                    // Rows 4 and 13: both sides reached the same bytes.
                    (true, true) if local_hash == remote_hash => {
                        settle_mode(path, remote, local, local_hash, executable, base)
                            .unwrap_or_else(|path| vec![record_base(path, remote, local)])
                    }
                    // Rows 5 and 14: the server's version keeps the name.
                    (true, true) => {
                        let copy = self.copy_name(&path, self.input.device);
                        vec![PlanOp::ConflictCopy { path, copy }]
                    }
                    // Row 2: conditional on the remote's current revision, which may have moved
                    // without a content change. Row 34: with the remote's new mode, if any.
                    (true, false) => vec![PlanOp::Upload {
                        path,
                        base: Precondition::Rev(remote.rev),
                        hash: local_hash,
                        executable,
                    }],
                    // Row 3: the executor re-checks that the local file still holds base.
                    // A replaced node with the same bytes: adopt its identity.
                    (false, true) if local_hash == remote_hash => {
                        settle_mode(path, remote, local, local_hash, executable, base)
                            .unwrap_or_else(|path| vec![record_base(path, remote, local)])
                    }
                    // Row 34: with the local side's new mode, if any.
                    (false, true) => vec![PlanOp::Download {
                        path,
                        remote: remote.clone(),
                        expect_local: Some(local_hash),
                        executable,
                    }],
                    // Row 1, or row 33.
                    (false, false) => {
                        settle_mode(path, remote, local, local_hash, executable, base)
                            .unwrap_or_default()
                    }
                }
            }
            (Dir, Dir, Some(local), Some(remote)) => match base {
                Some(base) if base.kind == EntryKind::Dir && base.node_id == remote.node_id => {
                    Vec::new()
                }
                // Created on both sides, or both turned a file into a directory.
                _ => vec![record_base(path, remote, local)],
            },
            (Absent, File(Some(_)), _, Some(remote)) => match base_state {
                // Row 6: deleted locally, unchanged remotely.
                File(_) if !remote_changed => vec![PlanOp::DeleteRemote {
                    path,
                    rev: remote.rev,
                }],
                // Rows 12 and 9 (an edit beats a delete), and a deleted directory that became a
                // file remotely.
                _ => vec![PlanOp::Download {
                    path,
                    remote: remote.clone(),
                    expect_local: None,
                    executable: remote.executable,
                }],
            },
            (Absent, Dir, _, Some(remote)) => match base_state {
                // Rows 16 and 17: deleted locally, still the same directory remotely.
                Dir if !remote_changed => {
                    if !self.remote_has_beneath(&path) {
                        vec![PlanOp::DeleteRemote {
                            path,
                            rev: remote.rev,
                        }]
                    } else if self.local_has_beneath(&path) || self.remote_keeps_untouchable(&path)
                    {
                        // Row 27: an ignored remote entry keeps the directory there for good,
                        // so it comes back here too (waiting would never converge).
                        vec![PlanOp::MakeDirLocal {
                            path,
                            remote: remote.clone(),
                        }]
                    } else {
                        Vec::new()
                    }
                }
                // Row 15, or a deleted file that became a directory remotely.
                _ => vec![PlanOp::MakeDirLocal {
                    path,
                    remote: remote.clone(),
                }],
            },
            (File(Some(local_hash)), Absent, _, _) => match base_state {
                // Row 7: the executor re-checks that the local file still holds base. Unless
                // the same bytes are deleted remotely elsewhere in this pass (see `last_copy`).
                File(_) if !local_changed && !self.last_copy(local_hash) => {
                    vec![PlanOp::DeleteLocal {
                        path,
                        expect_hash: local_hash,
                    }]
                }
                // Rows 11 and 10 (an edit beats a delete).
                _ => vec![PlanOp::Upload {
                    path,
                    base: Precondition::MustNotExist,
                    hash: local_hash,
                    executable: local_executable,
                }],
            },
            (Dir, Absent, _, _) => match base_state {
                // Rows 16 and 17, mirrored.
                Dir => {
                    if !self.local_has_beneath(&path) {
                        vec![PlanOp::RemoveDirLocal { path }]
                    } else if self.remote_has_beneath(&path) || self.local_keeps_untouchable(&path)
                    {
                        // Row 27: an ignored (or unreadable) local entry keeps the directory
                        // here for good, so it goes back to the server.
                        vec![PlanOp::MakeDirRemote { path }]
                    } else {
                        Vec::new()
                    }
                }
                // Row 15, or a file turned into a directory locally while deleted remotely.
                _ => vec![PlanOp::MakeDirRemote { path }],
            },
            (File(Some(local_hash)), Dir, _, Some(remote)) => {
                if !local_changed && !self.last_copy(local_hash) {
                    // Row 19: the remote turned the file into a directory.
                    vec![
                        PlanOp::DeleteLocal {
                            path: path.clone(),
                            expect_hash: local_hash,
                        },
                        PlanOp::MakeDirLocal {
                            path,
                            remote: remote.clone(),
                        },
                    ]
                } else if !remote_changed && !self.remote_has_beneath(&path) {
                    // Row 19: the local side turned the directory into a file, and everything
                    // beneath goes remotely too.
                    vec![
                        PlanOp::DeleteRemote {
                            path: path.clone(),
                            rev: remote.rev,
                        },
                        PlanOp::Upload {
                            path,
                            base: Precondition::MustNotExist,
                            hash: local_hash,
                            executable: local_executable,
                        },
                    ]
                } else {
                    // Row 20: the directory keeps the name, the local file becomes a copy.
                    let copy = self.copy_name(&path, self.input.device);
                    vec![
                        PlanOp::ConflictCopy {
                            path: path.clone(),
                            copy,
                        },
                        PlanOp::MakeDirLocal {
                            path,
                            remote: remote.clone(),
                        },
                    ]
                }
            }
            (Dir, File(Some(_)), _, Some(remote)) => {
                if !remote_changed {
                    // Row 19: the local side turned the file into a directory.
                    vec![
                        PlanOp::DeleteRemote {
                            path: path.clone(),
                            rev: remote.rev,
                        },
                        PlanOp::MakeDirRemote { path },
                    ]
                } else if !local_changed && !self.local_has_beneath(&path) {
                    // Row 19: the remote turned the directory into a file, and everything
                    // beneath goes locally too.
                    vec![
                        PlanOp::RemoveDirLocal { path: path.clone() },
                        PlanOp::Download {
                            path,
                            remote: remote.clone(),
                            expect_local: None,
                            executable: remote.executable,
                        },
                    ]
                } else {
                    // Row 20: the directory keeps the name, the remote file moves to a copy,
                    // named after the device whose bytes it holds.
                    let copy = self.copy_name(&path, &remote.device);
                    vec![
                        PlanOp::MoveRemote {
                            from: path.clone(),
                            to: copy,
                            rev: remote.rev,
                        },
                        PlanOp::MakeDirRemote { path },
                    ]
                }
            }
            // Unreachable with consistent trees (a state is present exactly when its node is);
            // doing nothing is the safe answer.
            _ => Vec::new(),
        }
    }
}

/// The base entry both sides agree on: identity and content from the remote node, the local
/// stat (size, mtime, inode, ctime) from the local node.
pub(crate) fn record_base(path: RelPath, remote: &RemoteNode, local: &LocalNode) -> PlanOp {
    PlanOp::RecordBase {
        path,
        node: base_node(remote, local),
    }
}

/// See [`record_base`].
fn base_node(remote: &RemoteNode, local: &LocalNode) -> BaseNode {
    BaseNode {
        kind: remote.kind,
        hash: remote.hash,
        node_id: remote.node_id,
        rev: remote.rev,
        size: local.size,
        mtime_ns: local.mtime_ns,
        inode: local.inode,
        ctime_ns: local.ctime_ns,
        executable: remote.executable,
    }
}

/// The executable bit a file present on both sides ends with: the side's bit that differs from
/// base's, or with no file in base, set if either side has it (see the crate docs).
fn merged_mode(base: Option<&BaseNode>, local: &LocalNode, remote: &RemoteNode) -> bool {
    match base.filter(|base| base.kind == EntryKind::File) {
        Some(base) if local.executable != base.executable => local.executable,
        Some(_) => remote.executable,
        None => local.executable || remote.executable,
    }
}

/// Rows 1 and 33 (and the mode part of rows 4 and 13), for a path whose content both sides
/// agree on: the mode change for the side that lacks `executable`, or a `RecordBase` when both
/// have it but base does not. `Ok(ops)` when the mode decides (possibly nothing); `Err(path)`
/// when both sides and base already have `executable`, for the caller's own decision.
fn settle_mode(
    path: RelPath,
    remote: &RemoteNode,
    local: &LocalNode,
    local_hash: ContentHash,
    executable: bool,
    base: Option<&BaseNode>,
) -> Result<Vec<PlanOp>, RelPath> {
    let node = BaseNode {
        executable,
        ..base_node(remote, local)
    };
    if remote.executable != executable {
        return Ok(vec![PlanOp::SetModeRemote {
            path,
            rev: remote.rev,
            executable,
            node,
        }]);
    }
    if local.executable != executable {
        return Ok(vec![PlanOp::SetModeLocal {
            path,
            expect_hash: local_hash,
            executable,
            node,
        }]);
    }
    if base.is_some_and(|base| base.executable != executable) {
        return Ok(vec![PlanOp::RecordBase { path, node }]);
    }
    Err(path)
}

/// Moves `from` and everything beneath it to `to` in an after-tree.
fn move_tree(set: &mut BTreeSet<String>, from: &RelPath, to: &RelPath) {
    // Everything beneath `from` sorts between "from/" and "from0" ('0' follows '/').
    let beneath = set.range(format!("{from}/")..format!("{from}0")).cloned();
    let moved: Vec<String> = set
        .get(from.as_str())
        .cloned()
        .into_iter()
        .chain(beneath)
        .collect();
    for old in moved {
        set.remove(&old);
        // `old` is `from` or starts with "from/", so the slice is in bounds.
        set.insert(format!("{to}{}", &old[from.as_str().len()..]));
    }
}

/// Sorts ops into the order the client applies them; see [`crate::plan`].
///
/// A remote deletion goes before the creations only when it frees a name one of them needs (a
/// creation at or beneath the deleted path); every other remote deletion goes after the
/// transfers. A rename that could not be a move is a deletion at the old path plus a creation at
/// the new one, and the client may lose the answer to any request (or roll base back in a
/// crash), so base can keep naming the old path after the server applied the deletion. Were the
/// deletion first, the content would then exist only on disk, at a path base still claims both
/// sides agreed on, and a later pass could read the missing remote copy as a remote delete
/// (row 7). Uploading first means the server holds the bytes before anything of them is deleted.
fn sort_ops(ops: &mut [PlanOp]) {
    let created: BTreeSet<&str> = ops
        .iter()
        .filter_map(|op| match op {
            PlanOp::Upload { path, .. } | PlanOp::MakeDirRemote { path } => Some(path.as_str()),
            _ => None,
        })
        .collect();
    // A file replacing a directory frees its name by deleting the directory, which is early
    // then, and so is everything beneath it.
    let frees_a_name =
        |deleted: &RelPath| created.contains(deleted.as_str()) || has_beneath(&created, deleted);
    let freeing: BTreeSet<&str> = ops
        .iter()
        .filter_map(|op| match op {
            PlanOp::DeleteRemote { path, .. } if frees_a_name(path) => Some(path.as_str()),
            _ => None,
        })
        .collect();
    // What lies beneath an early deletion must go first too: a directory is deleted empty.
    let early: BTreeSet<RelPath> = ops
        .iter()
        .filter_map(|op| match op {
            PlanOp::DeleteRemote { path, .. }
                if freeing.contains(path.as_str()) || has_ancestor_in(&freeing, path) =>
            {
                Some(path.clone())
            }
            _ => None,
        })
        .collect();
    // The sort is stable, so moves keep the order they were decided in.
    ops.sort_by(|a, b| sort_key(a, &early).cmp(&sort_key(b, &early)));
}

/// Where `op` goes in a plan; see [`sort_ops`].
fn sort_key<'o>(op: &'o PlanOp, early: &BTreeSet<RelPath>) -> (u8, usize, &'o str) {
    match op {
        // Before anything moves, deletes or replaces the file: its write bits go with it.
        PlanOp::UnprotectLocal { path, .. } => (0, 0, path.as_str()),
        PlanOp::MoveRemote { .. } | PlanOp::MoveLocal { .. } | PlanOp::ConflictCopy { .. } => {
            (1, 0, "")
        }
        PlanOp::DeleteRemote { path, .. } if !early.contains(path) => {
            (5, usize::MAX - path.depth(), path.as_str())
        }
        PlanOp::DeleteLocal { path, .. }
        | PlanOp::DeleteRemote { path, .. }
        | PlanOp::RemoveDirLocal { path } => (2, usize::MAX - path.depth(), path.as_str()),
        PlanOp::MakeDirLocal { path, .. } | PlanOp::MakeDirRemote { path } => {
            (3, path.depth(), path.as_str())
        }
        PlanOp::Upload { path, .. }
        | PlanOp::Download { path, .. }
        | PlanOp::SetModeRemote { path, .. }
        | PlanOp::SetModeLocal { path, .. } => (4, 0, path.as_str()),
        PlanOp::RecordBase { path, .. } | PlanOp::ForgetBase { path } => (6, 0, path.as_str()),
        // After the transfers: a file downloaded under a lock is protected once it is there.
        PlanOp::ProtectLocal { path } => (7, 0, path.as_str()),
    }
}

/// Whether `path` or one of its ancestors is untouchable (row 27): the planner leaves it alone.
pub(crate) fn is_ignored(input: &PlanInput<'_>, path: &RelPath) -> bool {
    input.untouchable.contains(path)
        || path
            .ancestors()
            .iter()
            .any(|a| input.untouchable.contains(a))
}

/// Whether `set` holds a path strictly inside `dir`.
fn has_beneath<S: std::borrow::Borrow<str> + Ord>(set: &BTreeSet<S>, dir: &RelPath) -> bool {
    // Every path inside `dir` sorts between "dir/" and "dir0" ('0' follows '/').
    let low = format!("{dir}/");
    let high = format!("{dir}0");
    let range = (
        Bound::Included(low.as_str()),
        Bound::Excluded(high.as_str()),
    );
    set.range::<str, _>(range).next().is_some()
}

/// Whether `set` holds an ancestor of `path`.
fn has_ancestor_in(set: &BTreeSet<&str>, path: &RelPath) -> bool {
    let text = path.as_str();
    text.match_indices('/')
        .any(|(idx, _)| set.contains(&text[..idx]))
}
