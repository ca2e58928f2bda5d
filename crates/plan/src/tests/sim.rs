//! An in-memory client and server: applies plan ops to the three trees the way a correct client
//! does, so property tests can run the plan–apply–rescan loop without IO.
//!
//! It is strict on purpose. With no other device writing meanwhile, every op of a correct plan
//! succeeds, so an op whose precondition fails here (a 409, a download over an unexpected local
//! file, a non-empty directory to remove) is reported as a planner bug, not retried.
//!
//! Base updates follow the client (`crates/client/src/engine.rs`): transfers and directory
//! creations record base from the result, deletions drop the path, both moves re-key base at and
//! beneath `from` to `to` and refresh the moved node's revision, a conflict copy leaves base alone.
//! `ProtectLocal` and `UnprotectLocal` change the client's read-only set and the modes on disk.

use crate::{
    BaseNode, DeviceName, EntryKind, LocalNode, NodeId, Plan, PlanInput, PlanOp, Precondition,
    RelPath, RemoteNode, Revision,
};
use std::collections::{BTreeMap, BTreeSet};

/// The inputs besides the trees: locks, ignores, whether the remote listing is complete, and the
/// mass-delete interlock.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    pub locked_by_others: BTreeMap<RelPath, DeviceName>,
    pub ignored: BTreeSet<RelPath>,
    pub remote_complete: bool,
    /// The mass-delete interlock; off unless a test turns it on.
    pub mass_delete: Option<crate::MassDeleteRule>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            locked_by_others: BTreeMap::new(),
            ignored: BTreeSet::new(),
            remote_complete: true,
            mass_delete: None,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct World {
    pub base: BTreeMap<RelPath, BaseNode>,
    pub local: BTreeMap<RelPath, LocalNode>,
    pub remote: BTreeMap<RelPath, RemoteNode>,
    /// The files the client made read-only for locks, by path and inode, as it keeps them.
    pub read_only: BTreeMap<RelPath, u64>,
    /// The inodes of the local files that are read-only on disk (a download writes a new file,
    /// which is not; a move or a conflict copy keeps the inode, and with it the mode).
    pub protected: BTreeSet<u64>,
    /// Counters for fresh node ids, revisions and inodes.
    pub next_id: u64,
    pub next_rev: u64,
    pub next_inode: u64,
}

impl World {
    pub(crate) fn plan_with(&self, limits: &Limits) -> Plan {
        let device = DeviceName::new("laptop").unwrap();
        // What the scan reports: the untouchable entries present on disk.
        let local_untouchable: BTreeSet<RelPath> = limits
            .ignored
            .iter()
            .filter(|path| self.local.contains_key(*path))
            .cloned()
            .collect();
        crate::plan(&PlanInput {
            base: &self.base,
            local: &self.local,
            remote: &self.remote,
            device: &device,
            now_stamp: "2024-05-06 070809",
            locked_by_others: &limits.locked_by_others,
            read_only_for_locks: &self.read_only,
            untouchable: &limits.ignored,
            local_untouchable: &local_untouchable,
            ignored_by_rules: &BTreeSet::new(),
            local_root_ok: true,
            remote_complete: limits.remote_complete,
            focus_root_emptied: None,
            mass_delete: limits.mass_delete,
        })
    }

    pub(crate) fn fresh_id(&mut self) -> NodeId {
        self.next_id += 1;
        NodeId(self.next_id)
    }

    pub(crate) fn fresh_rev(&mut self) -> Revision {
        self.next_rev += 1;
        Revision(self.next_rev)
    }

    pub(crate) fn fresh_inode(&mut self) -> u64 {
        self.next_inode += 1;
        self.next_inode
    }

    /// Applies one op as the client would, or says why a correct client could not.
    pub(crate) fn apply(&mut self, op: &PlanOp) -> Result<(), String> {
        match op {
            PlanOp::Upload {
                path,
                base,
                hash,
                executable,
            } => {
                let local = self.local.get_mut(path).ok_or("no local file")?;
                // The client sets the bit on the local file before reading it.
                local.executable = *executable;
                let local = local.clone();
                if local.kind != EntryKind::File || local.hash != Some(*hash) {
                    return Err("local file does not hold the hash to upload".into());
                }
                let node_id = match base {
                    Precondition::MustNotExist if self.remote.contains_key(path) => {
                        return Err("409: exists".into())
                    }
                    Precondition::MustNotExist => self.fresh_id(),
                    Precondition::Rev(rev) => match self.remote.get(path) {
                        Some(remote) if remote.rev == *rev && remote.kind == EntryKind::File => {
                            remote.node_id
                        }
                        _ => return Err("409: not at that rev".into()),
                    },
                };
                self.make_remote_parents(path)?;
                let rev = self.fresh_rev();
                let remote = RemoteNode {
                    node_id,
                    kind: EntryKind::File,
                    rev,
                    hash: Some(*hash),
                    size: local.size,
                    mtime_ms: 0,
                    executable: *executable,
                    device: DeviceName::new("laptop").unwrap(),
                };
                self.base.insert(path.clone(), base_of(&remote, &local));
                self.remote.insert(path.clone(), remote);
            }
            PlanOp::Download {
                path,
                remote,
                expect_local,
                executable,
            } => {
                if self.remote.get(path) != Some(remote) {
                    return Err("the remote node is not the one planned".into());
                }
                match (expect_local, self.local.get(path)) {
                    (None, None) => {}
                    (Some(hash), Some(local))
                        if local.kind == EntryKind::File && local.hash == Some(*hash) => {}
                    _ => return Err("local file is not as expected".into()),
                }
                if !self.local_parent_is_dir(path) {
                    return Err("no local parent directory".into());
                }
                let local = LocalNode {
                    kind: EntryKind::File,
                    hash: remote.hash,
                    size: remote.size,
                    mtime_ns: 0,
                    inode: self.fresh_inode(),
                    ctime_ns: 0,
                    executable: *executable,
                };
                self.base.insert(path.clone(), base_of(remote, &local));
                self.local.insert(path.clone(), local);
            }
            PlanOp::DeleteLocal { path, expect_hash } => {
                match self.local.get(path) {
                    Some(local)
                        if local.kind == EntryKind::File && local.hash == Some(*expect_hash) => {}
                    _ => return Err("local file is not as expected".into()),
                }
                self.local.remove(path);
                self.base.remove(path);
            }
            PlanOp::DeleteRemote { path, rev } => {
                match self.remote.get(path) {
                    Some(remote) if remote.rev == *rev => {}
                    _ => return Err("409: not at that rev".into()),
                }
                if self.remote.keys().any(|p| p.is_inside(path)) {
                    return Err("remote directory not empty".into());
                }
                self.remote.remove(path);
                self.base.remove(path);
            }
            PlanOp::MakeDirLocal { path, remote } => {
                if self.remote.get(path) != Some(remote) {
                    return Err("the remote node is not the one planned".into());
                }
                self.make_local_dirs(path)?;
                let local = self.local[path].clone();
                self.base.insert(path.clone(), base_of(remote, &local));
            }
            PlanOp::MakeDirRemote { path } => {
                let local = match self.local.get(path) {
                    Some(local) if local.kind == EntryKind::Dir => local.clone(),
                    _ => return Err("no local directory".into()),
                };
                self.make_remote_parents(path)?;
                let remote = match self.remote.get(path) {
                    Some(remote) if remote.kind == EntryKind::Dir => remote.clone(),
                    Some(_) => return Err("409: a file is there".into()),
                    None => {
                        let remote = RemoteNode {
                            node_id: self.fresh_id(),
                            kind: EntryKind::Dir,
                            rev: self.fresh_rev(),
                            hash: None,
                            size: 0,
                            mtime_ms: 0,
                            executable: false,
                            device: DeviceName::new("laptop").unwrap(),
                        };
                        self.remote.insert(path.clone(), remote.clone());
                        remote
                    }
                };
                self.base.insert(path.clone(), base_of(&remote, &local));
            }
            PlanOp::RemoveDirLocal { path } => {
                if self.local.get(path).map(|l| l.kind) != Some(EntryKind::Dir) {
                    return Err("no local directory".into());
                }
                if self.local.keys().any(|p| p.is_inside(path)) {
                    return Err("local directory not empty".into());
                }
                self.local.remove(path);
                self.base.remove(path);
            }
            PlanOp::MoveRemote { from, to, rev } => {
                let node_id = match self.remote.get(from) {
                    Some(remote) if remote.rev == *rev => remote.node_id,
                    _ => return Err("409: not at that rev".into()),
                };
                if self.remote.contains_key(to) || to.is_inside(from) {
                    return Err("409: target taken".into());
                }
                self.make_remote_parents(to)?;
                rebase(&mut self.remote, from, to);
                let new_rev = self.fresh_rev();
                if let Some(moved) = self.remote.get_mut(to) {
                    moved.rev = new_rev;
                }
                rebase(&mut self.base, from, to);
                if let Some(base) = self.base.get_mut(to).filter(|b| b.node_id == node_id) {
                    base.rev = new_rev;
                }
            }
            PlanOp::MoveLocal { from, to } => {
                if !self.local.contains_key(from)
                    || self.local.contains_key(to)
                    || to.is_inside(from)
                {
                    return Err("local move impossible".into());
                }
                if let Some(parent) = to.parent() {
                    self.make_local_dirs(&parent)?;
                }
                rebase(&mut self.local, from, to);
                rebase(&mut self.base, from, to);
                let remote_revs: Vec<(RelPath, NodeId, Revision)> = self
                    .remote
                    .iter()
                    .filter(|(p, _)| *p == to || p.is_inside(to))
                    .map(|(p, r)| (p.clone(), r.node_id, r.rev))
                    .collect();
                for (path, node_id, rev) in remote_revs {
                    if let Some(base) = self.base.get_mut(&path).filter(|b| b.node_id == node_id) {
                        base.rev = rev;
                    }
                }
            }
            PlanOp::ConflictCopy { path, copy } => {
                if self.local.get(path).map(|l| l.kind) != Some(EntryKind::File)
                    || self.local.contains_key(copy)
                {
                    return Err("conflict copy impossible".into());
                }
                if copy.parent() != path.parent() {
                    return Err("conflict copy in another directory".into());
                }
                rebase(&mut self.local, path, copy);
            }
            PlanOp::SetModeRemote {
                path,
                rev,
                executable,
                node,
            } => {
                let new_rev = self.fresh_rev();
                let remote = match self.remote.get_mut(path) {
                    Some(remote) if remote.rev == *rev && remote.kind == EntryKind::File => remote,
                    _ => return Err("409: not at that rev".into()),
                };
                remote.executable = *executable;
                remote.rev = new_rev;
                let server = crate::record::ServerNode {
                    node_id: remote.node_id,
                    rev: new_rev,
                    executable: *executable,
                };
                self.base
                    .insert(path.clone(), crate::record::mode_set(node, server));
            }
            PlanOp::SetModeLocal {
                path,
                expect_hash,
                executable,
                node,
            } => {
                match self.local.get_mut(path) {
                    Some(local)
                        if local.kind == EntryKind::File && local.hash == Some(*expect_hash) =>
                    {
                        local.executable = *executable;
                    }
                    _ => return Err("local file is not as expected".into()),
                }
                self.base.insert(path.clone(), node.clone());
            }
            PlanOp::RecordBase { path, node } => {
                let (Some(local), Some(remote)) = (self.local.get(path), self.remote.get(path))
                else {
                    return Err("recording a base that one side lacks".into());
                };
                let agrees = local.kind == node.kind
                    && local.hash == node.hash
                    && local.inode == node.inode
                    && remote.node_id == node.node_id
                    && remote.hash == node.hash
                    && remote.kind == node.kind
                    && remote.executable == node.executable
                    && local.executable == node.executable;
                if !agrees {
                    return Err("recorded base differs from the trees".into());
                }
                self.base.insert(path.clone(), node.clone());
            }
            PlanOp::ForgetBase { path } => {
                self.base.remove(path);
            }
            PlanOp::ProtectLocal { path } => {
                // The plan protects only files that are there once the ops before it applied.
                let inode = match self.local.get(path) {
                    Some(local) if local.kind == EntryKind::File => local.inode,
                    _ => return Err("protecting a path that holds no local file".into()),
                };
                self.read_only.insert(path.clone(), inode);
                self.protected.insert(inode);
            }
            PlanOp::UnprotectLocal { path, file } => {
                let inode = self
                    .read_only
                    .remove(path)
                    .ok_or("unprotecting a path not in the set")?;
                if let Some(file) = file {
                    match self.local.get(file) {
                        Some(local)
                            if local.kind == EntryKind::File
                                && (inode == 0 || local.inode == inode) =>
                        {
                            self.protected.remove(&local.inode);
                        }
                        _ => return Err(format!("{file} is not the file made read-only")),
                    }
                }
            }
        }
        Ok(())
    }

    fn local_parent_is_dir(&self, path: &RelPath) -> bool {
        path.parent().is_none_or(|parent| {
            self.local
                .get(&parent)
                .is_some_and(|l| l.kind == EntryKind::Dir)
        })
    }

    /// `mkdir -p` on the local side.
    fn make_local_dirs(&mut self, path: &RelPath) -> Result<(), String> {
        let mut all = path.ancestors();
        all.push(path.clone());
        for dir in all {
            match self.local.get(&dir) {
                Some(local) if local.kind == EntryKind::Dir => {}
                Some(_) => return Err(format!("local file {dir} is in the way")),
                None => {
                    let inode = self.fresh_inode();
                    self.local.insert(
                        dir,
                        LocalNode {
                            kind: EntryKind::Dir,
                            hash: None,
                            size: 0,
                            mtime_ns: 0,
                            inode,
                            ctime_ns: 0,
                            executable: false,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// The server creates missing parent directories of a write.
    fn make_remote_parents(&mut self, path: &RelPath) -> Result<(), String> {
        for dir in path.ancestors() {
            match self.remote.get(&dir) {
                Some(remote) if remote.kind == EntryKind::Dir => {}
                Some(_) => return Err(format!("409: remote file {dir} is in the way")),
                None => {
                    let remote = RemoteNode {
                        node_id: self.fresh_id(),
                        kind: EntryKind::Dir,
                        rev: self.fresh_rev(),
                        hash: None,
                        size: 0,
                        mtime_ms: 0,
                        executable: false,
                        device: DeviceName::new("laptop").unwrap(),
                    };
                    self.remote.insert(dir, remote);
                }
            }
        }
        Ok(())
    }
}

/// The base entry a client records after a transfer or a directory creation (the crate's
/// [`crate::record`], which the real client uses too).
fn base_of(remote: &RemoteNode, local: &LocalNode) -> BaseNode {
    let server = crate::record::ServerNode {
        node_id: remote.node_id,
        rev: remote.rev,
        executable: remote.executable,
    };
    let stamp = crate::record::LocalStamp {
        size: local.size,
        mtime_ns: local.mtime_ns,
        inode: local.inode,
        ctime_ns: local.ctime_ns,
    };
    match remote.hash {
        Some(hash) => crate::record::file(server, hash, stamp),
        None => crate::record::dir(server, stamp),
    }
}

/// Re-keys the entries at and beneath `from` to `to`, replacing what was there.
pub(crate) fn rebase<V>(tree: &mut BTreeMap<RelPath, V>, from: &RelPath, to: &RelPath) {
    let moved: Vec<(RelPath, RelPath)> = tree
        .keys()
        .filter_map(|p| p.rebase(from, to).map(|new| (p.clone(), new)))
        .collect();
    let mut values = Vec::new();
    for (old, new) in moved {
        if let Some(value) = tree.remove(&old) {
            values.push((new, value));
        }
    }
    tree.extend(values);
}
