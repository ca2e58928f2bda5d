//! The remote tree: the server's state as far as the client's cursor goes.
//!
//! Fed by `GET /tree` at start, the change feed, and the results of the client's own ops. The
//! same change may arrive twice (from an op result and again from the feed) or out of order, so
//! every update is guarded by revision: a node never goes back to an older state.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use syncstore_plan::RemoteNode;
use syncstore_proto::{
    Change, Cursor, DeviceName, LockInfo, NodeId, RelPath, RemoteEntry, Revision,
};

/// The server's tree at `cursor`.
#[derive(Default, Debug)]
pub struct RemoteTree {
    pub by_path: BTreeMap<RelPath, RemoteEntry>,
    by_node: HashMap<NodeId, RelPath>,
    /// Deleted nodes and the cursor of their deletion, so a late upsert cannot revive them.
    tombstones: HashMap<NodeId, Revision>,
    pub cursor: Cursor,
    /// Locks announced by the server, by path (expired ones are filtered by the reader).
    pub locks: BTreeMap<RelPath, LockInfo>,
    /// Locks this device held that another device broke, not yet reported.
    pub broken_locks: Vec<(RelPath, DeviceName)>,
    /// Locks this device released itself (nothing to report).
    pub released_locks: Vec<RelPath>,
    /// Paths whose entry or lock changed since [`RemoteTree::take_touched`] was last called:
    /// the remote side of the engine's focus (both ends of a move).
    touched: BTreeSet<RelPath>,
}

impl RemoteTree {
    /// A tree from a full listing.
    pub fn from_listing(
        cursor: Cursor,
        entries: Vec<RemoteEntry>,
        locks: Vec<LockInfo>,
    ) -> RemoteTree {
        let mut tree = RemoteTree {
            cursor,
            ..RemoteTree::default()
        };
        for entry in entries {
            tree.upsert(entry);
        }
        // A listing replaces the tree: the engine plans all of it, not what it touched.
        tree.touched.clear();
        tree.locks = locks
            .into_iter()
            .map(|lock| (lock.path.clone(), lock))
            .collect();
        tree
    }

    /// Applies one journal change. Changes at or before the tree's cursor are already in it.
    pub fn apply(&mut self, change: &Change, me: Option<&DeviceName>) {
        match change {
            Change::Lock { cursor, lock } if *cursor > self.cursor => {
                self.touched.insert(lock.path.clone());
                self.locks.insert(lock.path.clone(), lock.clone());
            }
            Change::Unlock {
                cursor,
                path,
                device,
                broken_by,
            } if *cursor > self.cursor => {
                self.touched.insert(path.clone());
                if self
                    .locks
                    .get(path)
                    .is_some_and(|held| &held.device == device)
                {
                    self.locks.remove(path);
                }
                if me == Some(device) {
                    match broken_by {
                        Some(breaker) => self.broken_locks.push((path.clone(), breaker.clone())),
                        None => self.released_locks.push(path.clone()),
                    }
                }
            }
            _ => {}
        }
        self.apply_entry_change(change);
    }

    fn apply_entry_change(&mut self, change: &Change) {
        match change {
            Change::Upsert { entry, .. } => self.upsert(entry.clone()),
            Change::Delete {
                cursor, node_id, ..
            } => self.delete(*node_id, Revision(cursor.0)),
            Change::Lock { .. } | Change::Unlock { .. } => {}
        }
        self.cursor = self.cursor.max(change.cursor());
    }

    /// Records the node's new state unless a newer one is already known.
    pub fn upsert(&mut self, entry: RemoteEntry) {
        if self
            .tombstones
            .get(&entry.node_id)
            .is_some_and(|gone| *gone >= entry.rev)
        {
            return;
        }
        if let Some(old_path) = self.by_node.get(&entry.node_id) {
            if self
                .by_path
                .get(old_path)
                .is_some_and(|old| old.rev >= entry.rev)
            {
                return;
            }
            let old_path = old_path.clone();
            self.by_path.remove(&old_path);
            self.touched.insert(old_path);
        }
        // The server never holds two nodes at one path, so an older occupant is stale.
        if let Some(occupant) = self.by_path.get(&entry.path) {
            if occupant.rev > entry.rev {
                return;
            }
            self.by_node.remove(&occupant.node_id);
        }
        self.by_node.insert(entry.node_id, entry.path.clone());
        self.touched.insert(entry.path.clone());
        self.by_path.insert(entry.path.clone(), entry);
    }

    /// Removes the node, deleted at revision `at`, unless it changed after that.
    pub fn delete(&mut self, node_id: NodeId, at: Revision) {
        if let Some(path) = self.by_node.get(&node_id) {
            if self.by_path.get(path).is_some_and(|e| e.rev > at) {
                return;
            }
            let path = path.clone();
            self.by_path.remove(&path);
            self.by_node.remove(&node_id);
            self.touched.insert(path);
        }
        let gone = self.tombstones.entry(node_id).or_insert(at);
        *gone = (*gone).max(at);
    }

    /// The paths whose entry or lock changed since the last call.
    pub fn take_touched(&mut self) -> BTreeSet<RelPath> {
        std::mem::take(&mut self.touched)
    }

    /// The tree as the planner takes it.
    pub fn plan_view(&self) -> BTreeMap<RelPath, RemoteNode> {
        self.by_path
            .iter()
            .map(|(path, e)| (path.clone(), plan_node(e)))
            .collect()
    }

    /// [`RemoteTree::plan_view`] cut down to `paths`.
    pub fn plan_view_of<'p>(
        &self,
        paths: impl IntoIterator<Item = &'p RelPath>,
    ) -> BTreeMap<RelPath, RemoteNode> {
        paths
            .into_iter()
            .filter_map(|path| Some((path.clone(), plan_node(self.by_path.get(path)?))))
            .collect()
    }
}

/// The planner's view of one remote entry.
fn plan_node(e: &RemoteEntry) -> RemoteNode {
    RemoteNode {
        node_id: e.node_id,
        kind: e.kind,
        rev: e.rev,
        hash: e.hash,
        size: e.size,
        mtime_ms: e.mtime_ms,
        executable: e.executable,
        device: e.device.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncstore_proto::{DeviceName, EntryKind};

    fn entry(node: u64, path: &str, rev: u64) -> RemoteEntry {
        RemoteEntry {
            node_id: NodeId(node),
            path: RelPath::new(path).unwrap(),
            kind: EntryKind::Dir,
            rev: Revision(rev),
            size: 0,
            mtime_ms: 0,
            hash: None,
            chunks: vec![],
            device: DeviceName::new("d").unwrap(),
            executable: false,
        }
    }

    #[test]
    fn stale_updates_are_ignored() {
        let mut tree = RemoteTree::default();
        tree.upsert(entry(1, "b", 5));
        tree.upsert(entry(1, "a", 3)); // older: the move to b already happened
        assert_eq!(
            tree.by_path.keys().map(|p| p.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        tree.delete(NodeId(1), Revision(6));
        tree.upsert(entry(1, "b", 5)); // replayed after the delete
        assert!(tree.by_path.is_empty());
        tree.upsert(entry(2, "b", 7));
        tree.upsert(entry(3, "b", 8)); // replaced at the same path
        assert_eq!(tree.by_path[&RelPath::new("b").unwrap()].node_id, NodeId(3));
        assert_eq!(tree.by_node.len(), 1);
    }
}
