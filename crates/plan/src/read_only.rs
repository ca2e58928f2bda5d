//! Read-only files under other devices' locks: step 4 of the module `planner`.
//!
//! The rules are in the crate docs ("Read-only files under other devices' locks"). This step
//! runs once every other op is decided, because it depends on what they do to the local tree: a
//! download replaces a file (and its mode), a local delete or move takes one away.

use crate::planner::{is_ignored, Planner};
use crate::{EntryKind, PlanOp, RelPath};
use std::collections::{BTreeMap, BTreeSet};

impl Planner<'_, '_> {
    /// Pushes the `ProtectLocal` and `UnprotectLocal` ops of this pass.
    pub(crate) fn plan_read_only(&mut self) {
        let read_only = self.input.read_only_for_locks;
        // What the ops decided so far write anew locally, and what they take away (a moved
        // directory takes everything beneath it).
        let mut written: BTreeSet<&RelPath> = BTreeSet::new();
        let mut leaving: Vec<&RelPath> = Vec::new();
        for op in &self.ops {
            match op {
                PlanOp::Download { path, .. } => {
                    written.insert(path);
                }
                PlanOp::DeleteLocal { path, .. } | PlanOp::ConflictCopy { path, .. } => {
                    leaving.push(path);
                }
                PlanOp::MoveLocal { from, .. } => leaving.push(from),
                _ => {}
            }
        }
        let leaves = |path: &RelPath| {
            leaving
                .iter()
                .any(|gone| path == *gone || path.is_inside(gone))
        };
        // The local files (none untouchable), and the paths of those with a known inode.
        let files: BTreeMap<&RelPath, u64> = self
            .local
            .iter()
            .filter(|(_, node)| node.kind == EntryKind::File)
            .map(|(&path, node)| (path, node.inode))
            .collect();
        let mut by_inode: BTreeMap<u64, Option<&RelPath>> = BTreeMap::new();
        for (&path, &inode) in files.iter().filter(|(_, &inode)| inode != 0) {
            by_inode
                .entry(inode)
                .and_modify(|slot| *slot = None)
                .or_insert(Some(path));
        }
        // Whether the set holds the file now at `path` (an unknown inode: whatever is there).
        let in_set = |path: &RelPath| match read_only.get(path) {
            Some(0) => true,
            Some(inode) => files.get(path) == Some(inode),
            None => false,
        };

        let mut protect: BTreeSet<RelPath> = BTreeSet::new();
        for &path in files.keys() {
            if !in_set(path) && !leaves(path) && self.lock_for(path).is_some() {
                protect.insert(path.clone());
            }
        }
        // A downloaded file is a new file, with the mode the download gave it.
        for &path in &written {
            if self.lock_for(path).is_some() {
                protect.insert(path.clone());
            }
        }

        let mut unprotect: Vec<PlanOp> = Vec::new();
        // Row 29: an emptied root drops nothing from the set.
        if !self.root_emptied {
            for (path, &inode) in read_only {
                // Where the file made read-only as `path` is now: still there, or renamed by the
                // user (found by its inode, unless the set knows that inode at the new path too).
                let renamed_to = || {
                    by_inode
                        .get(&inode)
                        .copied()
                        .flatten()
                        .filter(|&to| inode != 0 && read_only.get(to) != Some(&inode))
                };
                let file: Option<&RelPath> = if is_ignored(self.input, path) {
                    // Left alone, unless the file came out from under the untouchable path.
                    match renamed_to() {
                        Some(to) => Some(to),
                        None => continue,
                    }
                } else if in_set(path) {
                    files.get_key_value(path).map(|(&path, _)| path)
                } else {
                    renamed_to()
                };
                if file == Some(path) && self.lock_for(path).is_some() {
                    continue;
                }
                // Moved under a lock: its write bits come back, and it is protected there anew,
                // with the mode it had before.
                if let Some(to) = file.filter(|&to| to != path && self.lock_for(to).is_some()) {
                    if !leaves(to) {
                        protect.insert(to.clone());
                    }
                }
                unprotect.push(PlanOp::UnprotectLocal {
                    path: path.clone(),
                    file: file.cloned(),
                });
            }
        }

        for op in unprotect {
            self.push(op);
        }
        for path in protect {
            self.push(PlanOp::ProtectLocal { path });
        }
    }
}
