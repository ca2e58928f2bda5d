//! The base entry each applied step records: the planner crate's [`syncstore_plan::record`]
//! (the one definition), fed with what the engine observed.
//!
//! Invariant: a base entry pairs the server's node with the local stamp observed *after* the
//! step's effect; nothing in the engine builds a `BaseNode` by hand.

use crate::scan::Stamp;
use syncstore_plan::record::{self as rule, LocalStamp, ServerNode};
use syncstore_plan::BaseNode;
use syncstore_proto::{ContentHash, NodeId, RemoteEntry, Revision};

fn local(stamp: Stamp) -> LocalStamp {
    LocalStamp {
        size: stamp.size,
        mtime_ns: stamp.mtime_ns,
        inode: stamp.inode,
        ctime_ns: stamp.ctime_ns,
    }
}

fn server(entry: &RemoteEntry) -> ServerNode {
    ServerNode {
        node_id: entry.node_id,
        rev: entry.rev,
        executable: entry.executable,
    }
}

/// A file both sides now hold: `hash` at the server's `entry`, and locally at `stamp`.
pub(super) fn file(entry: &RemoteEntry, hash: ContentHash, stamp: Stamp) -> BaseNode {
    rule::file(server(entry), hash, local(stamp))
}

/// A directory both sides now hold.
pub(super) fn dir(node_id: NodeId, rev: Revision, stamp: Stamp) -> BaseNode {
    let node = ServerNode {
        node_id,
        rev,
        executable: false,
    };
    rule::dir(node, local(stamp))
}

/// `node` with the server's new revision and mode.
pub(super) fn with_mode(node: &BaseNode, entry: &RemoteEntry) -> BaseNode {
    rule::mode_set(node, server(entry))
}

/// `node` at the revision the server moved it to, if it is the same node.
pub(super) fn moved(node: &BaseNode, entry: &RemoteEntry) -> Option<BaseNode> {
    rule::moved(node, server(entry))
}

/// The stamp of something that could not be stat'ed, or changed as it was placed: the next
/// scan hashes it again.
pub(super) const NO_STAMP: Stamp = Stamp {
    size: LocalStamp::UNKNOWN.size,
    mtime_ns: LocalStamp::UNKNOWN.mtime_ns,
    inode: LocalStamp::UNKNOWN.inode,
    ctime_ns: LocalStamp::UNKNOWN.ctime_ns,
};

/// `node` as base may keep it at `now_ns`: without its local stamp when that stamp is not
/// settled ([`crate::scan::HashCache::settled`]), so the next scan hashes the file again.
pub(super) fn settled(
    node: BaseNode,
    path: &syncstore_proto::RelPath,
    cache: &crate::scan::HashCache,
    now_ns: i64,
) -> BaseNode {
    let stamp = Stamp::of_base(&node);
    if node.kind == syncstore_proto::EntryKind::File
        && stamp != NO_STAMP
        && !cache.settled(path, stamp, now_ns)
    {
        rule::unstamped(node)
    } else {
        node
    }
}
