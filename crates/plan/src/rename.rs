//! Rename detection: rows 21 to 24 of THREE-TREE.md.
//!
//! A **local rename** is a base path gone from disk plus a new local path of the same kind that
//! is the same thing: the same inode (files and directories), or else, for files only, the same
//! content where that content left exactly one path and arrived at exactly one other.
//! A **remote rename** is a base node (by `node_id`) that the remote now holds at another path.
//!
//! Each recognised rename becomes one move, and the paths it involves are *claimed*: the per-path
//! step skips them, and for a directory everything beneath both names, until the next pass sees
//! the trees after the move. When a rename cannot be applied as a move (the remote changed the
//! old path, the target is taken, a lock is in the way...), nothing is claimed and the per-path
//! rules see a delete plus a create, which keeps every byte (row 22).

use crate::planner::Planner;
use crate::{BaseNode, ContentHash, EntryKind, LocalNode, NodeId, PlanOp, RelPath, RemoteNode};
use std::collections::{BTreeMap, BTreeSet};

/// For each key, the one value that has it, or `None` when several share it.
fn unique_by<K: Ord, V: Copy>(items: impl IntoIterator<Item = (K, V)>) -> BTreeMap<K, Option<V>> {
    let mut out: BTreeMap<K, Option<V>> = BTreeMap::new();
    for (key, value) in items {
        out.entry(key)
            .and_modify(|slot| *slot = None)
            .or_insert(Some(value));
    }
    out
}

fn lookup<K: Ord, V: Copy>(map: &BTreeMap<K, Option<V>>, key: &K) -> Option<V> {
    map.get(key).copied().flatten()
}

impl<'a> Planner<'_, 'a> {
    /// Finds renames, emits their moves and claims their paths.
    pub(crate) fn detect_renames(&mut self) {
        let remote_by_id: BTreeMap<NodeId, Option<(&'a RelPath, &'a RemoteNode)>> = unique_by(
            self.remote
                .iter()
                .map(|(&path, &node)| (node.node_id, (path, node))),
        );
        self.local_dir_renames(&remote_by_id);
        self.remote_renames(EntryKind::Dir, &remote_by_id);
        self.local_file_renames(&remote_by_id);
        self.remote_renames(EntryKind::File, &remote_by_id);
    }

    /// Base entries of `kind` that are gone from disk.
    fn missing_locally(&self, kind: EntryKind) -> Vec<(&'a RelPath, &'a BaseNode)> {
        let base = self.base.iter().map(|(&path, &node)| (path, node));
        base.filter(|(path, node)| {
            node.kind == kind && !self.local.contains_key(path) && !self.is_claimed(path)
        })
        .collect()
    }

    /// Local entries of `kind` that base does not know.
    fn new_locally(&self, kind: EntryKind) -> Vec<(&'a RelPath, &'a LocalNode)> {
        let local = self.local.iter().map(|(&path, &node)| (path, node));
        local
            .filter(|(path, node)| {
                node.kind == kind && !self.base.contains_key(path) && !self.is_claimed(path)
            })
            .collect()
    }

    /// Directories match by inode only: they have no content to compare.
    fn local_dir_renames(
        &mut self,
        remote_by_id: &BTreeMap<NodeId, Option<(&'a RelPath, &'a RemoteNode)>>,
    ) {
        let new_by_inode = unique_by(
            self.new_locally(EntryKind::Dir)
                .into_iter()
                .filter(|(_, n)| n.inode != 0)
                .map(|(p, n)| (n.inode, p)),
        );
        let missing = self.missing_locally(EntryKind::Dir);
        let missing_by_inode = unique_by(
            missing
                .iter()
                .filter(|(_, n)| n.inode != 0)
                .map(|&(p, n)| (n.inode, p)),
        );
        for (from, base) in missing {
            // An earlier directory rename may have claimed this one (it sits beneath).
            if self.is_claimed(from) || lookup(&missing_by_inode, &base.inode) != Some(from) {
                continue;
            }
            let Some(to) = lookup(&new_by_inode, &base.inode) else {
                continue;
            };
            if !self.is_claimed(to) && !to.is_inside(from) {
                self.local_rename(from, base, to, remote_by_id);
            }
        }
    }

    /// Files match by inode, else by content that left one path and arrived at one other.
    fn local_file_renames(
        &mut self,
        remote_by_id: &BTreeMap<NodeId, Option<(&'a RelPath, &'a RemoteNode)>>,
    ) {
        let missing = self.missing_locally(EntryKind::File);
        let new = self.new_locally(EntryKind::File);
        let mut pairs: BTreeMap<&'a RelPath, &'a RelPath> = BTreeMap::new();

        let missing_by_inode = unique_by(
            missing
                .iter()
                .filter(|(_, n)| n.inode != 0)
                .map(|&(p, n)| (n.inode, p)),
        );
        let new_by_inode = unique_by(
            new.iter()
                .filter(|(_, n)| n.inode != 0)
                .map(|&(p, n)| (n.inode, p)),
        );
        for (inode, from) in &missing_by_inode {
            if let (Some(from), Some(to)) = (*from, lookup(&new_by_inode, inode)) {
                pairs.insert(from, to);
            }
        }

        // Many files are empty; an empty file moving says nothing about which one it was.
        let empty = ContentHash::of_empty();
        let matched_to: BTreeSet<&RelPath> = pairs.values().copied().collect();
        let by_hash = |hash: Option<ContentHash>| hash.filter(|h| *h != empty);
        let missing_by_hash = unique_by(
            missing
                .iter()
                .filter(|(p, _)| !pairs.contains_key(p))
                .filter_map(|&(p, n)| by_hash(n.hash).map(|h| (h, p))),
        );
        let new_by_hash = unique_by(
            new.iter()
                .filter(|(p, _)| !matched_to.contains(p))
                .filter_map(|&(p, n)| by_hash(n.hash).map(|h| (h, p))),
        );
        for (hash, from) in &missing_by_hash {
            if let (Some(from), Some(to)) = (*from, lookup(&new_by_hash, hash)) {
                pairs.insert(from, to);
            }
        }

        for (from, to) in pairs {
            let Some(&base) = self.base.get(from) else {
                continue;
            };
            if !self.is_claimed(from) && !self.is_claimed(to) {
                self.local_rename(from, base, to, remote_by_id);
            }
        }
    }

    /// `from` (in base) was renamed to `to` on disk: move it on the server (row 21), or follow
    /// the server's own rename (row 23), or leave it to the per-path rules (row 22).
    fn local_rename(
        &mut self,
        from: &'a RelPath,
        base: &'a BaseNode,
        to: &'a RelPath,
        remote_by_id: &BTreeMap<NodeId, Option<(&'a RelPath, &'a RemoteNode)>>,
    ) {
        let is_dir = base.kind == EntryKind::Dir;
        let lock = self
            .lock_for(from)
            .or_else(|| self.lock_for(to))
            .or_else(|| if is_dir { self.lock_inside(from) } else { None });
        if let Some(device) = lock {
            // Row 25: a rename is a local change; hold both names back.
            self.claim(from, is_dir);
            self.claim(to, is_dir);
            self.block(from, device);
            self.block(to, device);
            return;
        }
        let remote_at_from = self.remote.get(from).copied();
        // Unchanged means the same node with the same content. An equal revision alone is not
        // enough: after a move the client gives base the node's new revision while base keeps
        // the content both sides last agreed on, which may be older.
        let unchanged = remote_at_from.is_some_and(|remote| {
            remote.node_id == base.node_id
                && remote.kind == base.kind
                && (is_dir || remote.hash == base.hash)
        });
        if let Some(remote) = remote_at_from.filter(|_| unchanged) {
            if self.remote_free(to) {
                self.push(PlanOp::MoveRemote {
                    from: from.clone(),
                    to: to.clone(),
                    rev: remote.rev,
                });
                self.claim(from, is_dir);
                self.claim(to, is_dir);
            }
            return;
        }
        // Row 23: the server renamed the node too, to another name; the server's name wins.
        if remote_at_from.is_some_and(|remote| remote.node_id == base.node_id) {
            return;
        }
        let Some((remote_path, remote)) = lookup(remote_by_id, &base.node_id) else {
            return;
        };
        let usable = remote.kind == base.kind
            && remote_path != from
            && remote_path != to
            && !remote_path.is_inside(to)
            && !self.base.contains_key(remote_path)
            && !self.is_claimed(remote_path)
            && self.local_free(remote_path)
            && self.input.remote_complete;
        if usable {
            self.push(PlanOp::MoveLocal {
                from: to.clone(),
                to: remote_path.clone(),
            });
            self.claim(from, is_dir);
            self.claim(to, is_dir);
            self.claim(remote_path, is_dir);
        }
    }

    /// Base nodes of `kind` the remote now holds at another path, while the local side still
    /// has them unchanged at the old one: move them locally.
    fn remote_renames(
        &mut self,
        kind: EntryKind,
        remote_by_id: &BTreeMap<NodeId, Option<(&'a RelPath, &'a RemoteNode)>>,
    ) {
        let is_dir = kind == EntryKind::Dir;
        let candidates: Vec<(&'a RelPath, &'a BaseNode)> = self
            .base
            .iter()
            .map(|(&path, &node)| (path, node))
            .filter(|(_, node)| node.kind == kind)
            .collect();
        for (from, base) in candidates {
            if self.is_claimed(from) || !self.input.remote_complete {
                continue;
            }
            let local_unchanged = self
                .local
                .get(from)
                .is_some_and(|local| local.kind == kind && (is_dir || local.hash == base.hash));
            if !local_unchanged
                || self
                    .remote
                    .get(from)
                    .is_some_and(|remote| remote.node_id == base.node_id)
            {
                continue;
            }
            let Some((to, remote)) = lookup(remote_by_id, &base.node_id) else {
                continue;
            };
            // A rename already planned beneath either name (a local rename inside a directory
            // the server renamed) goes first; this one waits for the next pass.
            let usable = remote.kind == kind
                && to != from
                && !to.is_inside(from)
                && !self.base.contains_key(to)
                && !self.is_claimed(to)
                && !(is_dir && (self.claimed_inside(from) || self.claimed_inside(to)))
                && self.local_free(to);
            if usable {
                self.push(PlanOp::MoveLocal {
                    from: from.clone(),
                    to: to.clone(),
                });
                self.claim(from, is_dir);
                self.claim(to, is_dir);
            }
        }
    }

    /// Nothing is at `path` on the server, and no file sits where a parent directory must be.
    fn remote_free(&self, path: &RelPath) -> bool {
        let remote = self.input.remote;
        !remote.contains_key(path)
            && path
                .ancestors()
                .iter()
                .all(|a| remote.get(a).is_none_or(|n| n.kind == EntryKind::Dir))
    }

    /// Nothing is at `path` on disk, and no file sits where a parent directory must be.
    fn local_free(&self, path: &RelPath) -> bool {
        let local = self.input.local;
        !local.contains_key(path)
            && path
                .ancestors()
                .iter()
                .all(|a| local.get(a).is_none_or(|n| n.kind == EntryKind::Dir))
    }
}
