//! What base records after each applied op, defined once: the client's engine and the
//! property tests' model client both build base entries with these.
//!
//! A base entry pairs the server's node (id, revision, mode) with the local stamp the client
//! observed *after* the op's effect, so the next scan sees no change. Which op records what is
//! listed in the crate docs ("What the client does with base after each applied op").

use crate::BaseNode;
use syncstore_proto::{ContentHash, EntryKind, NodeId, Revision};

/// The local side of an agreement: the stamp a scan compares (size, mtime, inode, ctime).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalStamp {
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
    pub ctime_ns: i64,
}

impl LocalStamp {
    /// A stamp no file has: base holding it makes the next scan hash the file again.
    pub const UNKNOWN: LocalStamp = LocalStamp {
        size: 0,
        mtime_ns: 0,
        inode: 0,
        ctime_ns: 0,
    };
}

/// The server's side of an agreement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerNode {
    pub node_id: NodeId,
    pub rev: Revision,
    pub executable: bool,
}

/// After `Upload` or `Download`: both sides hold the file `hash`. The executable bit is the
/// server's: when the local side changed only the mode, the next pass sees that and sends it
/// (row 34).
pub fn file(server: ServerNode, hash: ContentHash, local: LocalStamp) -> BaseNode {
    BaseNode {
        kind: EntryKind::File,
        hash: Some(hash),
        node_id: server.node_id,
        rev: server.rev,
        size: local.size,
        mtime_ns: local.mtime_ns,
        inode: local.inode,
        ctime_ns: local.ctime_ns,
        executable: server.executable,
    }
}

/// `node` without its local stamp ([`LocalStamp::UNKNOWN`]): what base keeps when the stamp
/// seen could still be shared by a write to come (timestamps of a coarse filesystem that are
/// not yet old enough), so the next scan hashes the file again instead of trusting it.
pub fn unstamped(node: BaseNode) -> BaseNode {
    BaseNode {
        size: LocalStamp::UNKNOWN.size,
        mtime_ns: LocalStamp::UNKNOWN.mtime_ns,
        inode: LocalStamp::UNKNOWN.inode,
        ctime_ns: LocalStamp::UNKNOWN.ctime_ns,
        ..node
    }
}

/// After `MakeDirLocal` or `MakeDirRemote`: both sides hold the directory.
pub fn dir(server: ServerNode, local: LocalStamp) -> BaseNode {
    BaseNode {
        kind: EntryKind::Dir,
        hash: None,
        node_id: server.node_id,
        rev: server.rev,
        size: 0,
        mtime_ns: local.mtime_ns,
        inode: local.inode,
        ctime_ns: local.ctime_ns,
        executable: false,
    }
}

/// After `SetModeRemote`: the node the plan saw, at the server's new revision and mode (a mode
/// change moves no content).
pub fn mode_set(node: &BaseNode, server: ServerNode) -> BaseNode {
    BaseNode {
        node_id: server.node_id,
        rev: server.rev,
        executable: server.executable,
        ..node.clone()
    }
}

/// After a move (`MoveRemote`, `MoveLocal`): a base entry re-keyed to where the node is now takes
/// the node's new revision, if it is the same node; not its content (base keeps the hash both
/// sides last agreed on).
pub fn moved(node: &BaseNode, server: ServerNode) -> Option<BaseNode> {
    (node.node_id == server.node_id && node.rev != server.rev).then(|| BaseNode {
        rev: server.rev,
        ..node.clone()
    })
}
