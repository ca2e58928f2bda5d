//! The base entry each applied step records, defined once: what both sides agree on after it.
//!
//! Invariant: a base entry pairs the server's node (id and revision) with the local stamp the
//! step observed *after* its effect (so the next scan sees no change); nothing else writes
//! base entries.

use crate::scan::Stamp;
use syncstore_plan::BaseNode;
use syncstore_proto::{ContentHash, EntryKind, RemoteEntry};

/// A file both sides now hold: `hash` at the server's `entry`, and locally at `stamp`.
pub(super) fn file(entry: &RemoteEntry, hash: ContentHash, stamp: Stamp) -> BaseNode {
    BaseNode {
        kind: EntryKind::File,
        hash: Some(hash),
        node_id: entry.node_id,
        rev: entry.rev,
        size: stamp.size,
        mtime_ns: stamp.mtime_ns,
        inode: stamp.inode,
        ctime_ns: stamp.ctime_ns,
        // The server's bit: when the local side changed only the mode, the next pass sees
        // that and sends it (row 34).
        executable: entry.executable,
    }
}

/// A directory both sides now hold.
pub(super) fn dir(
    node_id: syncstore_proto::NodeId,
    rev: syncstore_proto::Revision,
    stamp: Stamp,
) -> BaseNode {
    BaseNode {
        kind: EntryKind::Dir,
        hash: None,
        node_id,
        rev,
        size: 0,
        mtime_ns: stamp.mtime_ns,
        inode: stamp.inode,
        ctime_ns: stamp.ctime_ns,
        executable: false,
    }
}

/// `node` with the server's new revision and mode (a mode change moves no content).
pub(super) fn with_mode(node: &BaseNode, entry: &RemoteEntry) -> BaseNode {
    BaseNode {
        node_id: entry.node_id,
        rev: entry.rev,
        executable: entry.executable,
        ..node.clone()
    }
}

/// `node` at the revision the server moved it to, if it is the same node.
pub(super) fn moved(node: &BaseNode, entry: &RemoteEntry) -> Option<BaseNode> {
    (node.node_id == entry.node_id && node.rev != entry.rev).then(|| BaseNode {
        rev: entry.rev,
        ..node.clone()
    })
}

/// The stamp of something that could not be stat'ed (it is re-checked by the next scan).
pub(super) const NO_STAMP: Stamp = Stamp {
    size: 0,
    mtime_ns: 0,
    inode: 0,
    ctime_ns: 0,
};
