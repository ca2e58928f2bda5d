//! A device's remote tree: a copy of `crates/client/src/remote.rs` (`RemoteTree`).
//!
//! Copied rather than imported so the simulation does not link the client's HTTP stack; keep the
//! two in step. Every update is guarded by revision, because the same change arrives twice (from
//! an op result and again from the journal) and out of order.

use std::collections::{BTreeMap, HashMap};
use syncstore_plan::RemoteNode;
use syncstore_proto::{Change, Cursor, NodeId, RelPath, RemoteEntry, Revision};

/// The server's tree as far as `cursor` goes (plus the results of this device's own ops).
#[derive(Default, Debug)]
pub struct RemoteTree {
    pub by_path: BTreeMap<RelPath, RemoteEntry>,
    by_node: HashMap<NodeId, RelPath>,
    tombstones: HashMap<NodeId, Revision>,
    pub cursor: Cursor,
}

impl RemoteTree {
    /// A tree from a full listing.
    pub fn from_listing(cursor: Cursor, entries: Vec<RemoteEntry>) -> RemoteTree {
        let mut tree = RemoteTree {
            cursor,
            ..RemoteTree::default()
        };
        for entry in entries {
            tree.upsert(entry);
        }
        tree
    }

    /// Applies one journal change.
    pub fn apply(&mut self, change: &Change) {
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
        }
        if let Some(occupant) = self.by_path.get(&entry.path) {
            if occupant.rev > entry.rev {
                return;
            }
            self.by_node.remove(&occupant.node_id);
        }
        self.by_node.insert(entry.node_id, entry.path.clone());
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
        }
        let gone = self.tombstones.entry(node_id).or_insert(at);
        *gone = (*gone).max(at);
    }

    /// The tree as the planner takes it.
    pub fn plan_view(&self) -> BTreeMap<RelPath, RemoteNode> {
        self.by_path
            .iter()
            .map(|(path, e)| {
                let node = RemoteNode {
                    node_id: e.node_id,
                    kind: e.kind,
                    rev: e.rev,
                    hash: e.hash,
                    size: e.size,
                    mtime_ms: e.mtime_ms,
                };
                (path.clone(), node)
            })
            .collect()
    }
}
