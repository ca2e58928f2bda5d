//! The pure sync planner: three trees in, ops and conflicts out.
//!
//! Given the **base** tree (the last state both sides agreed on), the **local** tree (what the
//! last scan saw on disk) and the **remote** tree (the server's state at the client's cursor),
//! [`plan`] decides, per path, what to do. The decisions are the table in
//! `../shared/THREE-TREE.md`; each row the planner decides has a unit test here.
//!
//! Architecture Invariant: this crate does no IO, reads no clock, draws no random numbers and is
//! not async. Everything it needs (device name, the time for conflict names, ignore rules, locks)
//! comes in through [`PlanInput`]. It never fails: odd input becomes a [`Blocked`] entry.
//!
//! The client applies the ops in the order given, updates base after each applied op, rescans,
//! and plans again until the plan is empty; so a plan may leave follow-up work (for example a
//! conflict copy is renamed this round and uploaded the next).
//!
//! What the client does with base after each applied op (the entries themselves are built by
//! [`record`], which the client's engine and the property tests' model client both use):
//!
//! - `Upload`, `Download`, `MakeDirLocal`, `MakeDirRemote`: record base from the resulting remote
//!   node and the local file's stat.
//! - `DeleteLocal`, `DeleteRemote`, `RemoveDirLocal`, `ForgetBase`: drop the path from base.
//! - `MoveRemote`, `MoveLocal`: re-key base at and beneath `from` to `to`, and take the moved
//!   nodes' new revisions (not their content: base keeps the hash both sides last agreed on).
//! - `ConflictCopy`: nothing; the next pass sees the copy as created and the original as
//!   deleted locally.
//! - `RecordBase`, `SetModeRemote`, `SetModeLocal`: store the node given (for `SetModeRemote`
//!   with the revision the server answered).
//! - `ProtectLocal`, `UnprotectLocal`: nothing; they change the set of files made read-only for
//!   locks instead (see below).
//!
//! # Mode bits (rows 33 and 34)
//!
//! A file's executable bit is part of its state beside its content; the planner merges the two
//! independently. Base keeps the bit the *server* had when both sides last agreed (recorded from
//! the remote node, like the hash and the revision). Per side, the mode changed when its bit
//! differs from base's; the bit the file ends with on both sides is:
//!
//! - the side's bit that changed (only one side changed it, or both changed it the same way:
//!   with one bit, two changes of it agree);
//! - with no file in base to compare with (created on both sides with the same bytes, row 13,
//!   or a base that is a directory), **executable wins**: the bit is set if either side has it,
//!   as losing it breaks a script while an extra one harms nothing the user cannot see.
//!
//! Then, by what happened to the content:
//!
//! - Row 33, the content changed on neither side, or both reached the same bytes: the mode alone
//!   goes to the side that lacks it, as `SetModeRemote` (a conditional `SetMode` on the server,
//!   no content transfer) or `SetModeLocal` (a chmod of `0o111`); when both already agree, a
//!   `RecordBase` (if base differs).
//! - Row 34, the content changed on one side and the mode on the other:
//!   - local content, remote mode: `Upload` with the remote's bit; the client sets the bit on
//!     the local file before reading it, so both sides end with the new content and the
//!     remote's mode in one step;
//!   - remote content, local mode: `Download` writes the new content with the local bit; base
//!     records the remote's bit, so the next pass sees a local mode-only change and sends it
//!     with `SetModeRemote` (two passes; the download stays a pure download).
//! - Conflicts (rows 5 and 14) keep each version's own bit: the copy is uploaded with the
//!   local bit, the server's version downloaded with its bit.
//!
//! Only the executable bit is synced. Owner, group, the other permission bits (the client
//! clears the write bits of files another device has locked, see below, which is not a mode
//! change), setuid/setgid/sticky, ACLs and xattrs are not.
//!
//! # Read-only files under other devices' locks
//!
//! A local edit of a file another device has locked is held back until the lock goes (row 25),
//! so while the lock lasts the client makes the file read-only, to tell the user before they
//! edit. The planner decides which files, from the locks in force of other devices
//! ([`PlanInput::locked_by_others`]; a lock *covers* its path and, on a directory, everything
//! beneath) and the files the client made read-only so far ([`PlanInput::read_only_for_locks`]:
//! each path with the inode the file had when it was made read-only, kept by the client in its
//! state with the mode to give back). The set *holds* the file at a path when it names that
//! path with that file's inode (or with inode 0, unknown: then whatever file is there).
//!
//! - [`PlanOp::ProtectLocal`] for a local file that a lock covers and that the set does not
//!   hold. So also for a file replaced since it was protected (an editor that saves through a
//!   new file), and for a file that a `Download` of this plan writes under a lock, even when
//!   the set holds the one there now: the download replaces it, and with it the mode. Not for a
//!   file this plan deletes locally, moves away or turns into a conflicted copy: the next pass
//!   protects it where it then is, if a lock covers it there.
//! - [`PlanOp::UnprotectLocal`] for every entry of the set but the files still at their path
//!   under a lock. Its `file` says where that file is now: at its path (no lock covers it any
//!   more: its write bits come back); at another path, found by its inode, when the user renamed
//!   it (it is still read-only there: its write bits come back, and if a lock covers the new
//!   path it is protected there anew, with the mode it had); or nowhere (deleted, replaced, or
//!   moved out of sight: the entry is only dropped).
//! - Untouchable paths ([`PlanInput::ignored`], and everything beneath them) get neither: they
//!   are never planned (rows 27, 28, 31 and 35). Their entries stay in the set (unless the user
//!   moved the file out from under them: it is followed by its inode, as above), and the rules
//!   apply again once the path is planned again. This keeps a chmod off a file that is not the
//!   one protected (a disk mounted over the directory, row 35), at a price: a protected file
//!   that the user then ignores stays read-only while it is ignored, and one the user moves
//!   into an untouchable directory is out of sight, so its entry is dropped and it stays
//!   read-only there.
//! - Row 29: a root that is not ok plans nothing, these ops neither. An emptied root drops
//!   nothing from the set (as nothing is deleted): the files may come back with the disk.
//!
//! `UnprotectLocal` comes first in a plan, before anything moves, deletes or replaces a file
//! (so a conflicted copy or a move never carries a stale read-only mode along), and
//! `ProtectLocal` last, once downloads are in place. Once they are applied and the set updated,
//! the next plan holds none for the same trees and locks. They are upkeep, not a difference
//! between the sides: a plan of only these ops is in sync once applied, and the client counts
//! one as applied (and updates the set) also when its chmod fails, logging it, so that a file it
//! cannot chmod does not keep every plan busy for ever.
//!
//! # Row 29: a missing or emptied local root
//!
//! `../shared/THREE-TREE.md` says "stop the pass with an error; plan no deletions". This crate
//! reads it as follows, and both cases report [`Blocked`] `{ path: None, reason:
//! LocalRootMissing }`:
//!
//! - The local root is **missing or unreadable** (`local_root_ok` false): nothing at all is
//!   planned.
//! - The local root is **empty** (no entries but ignored ones) **while base holds files**: nothing
//!   is deleted or moved on either side (no `DeleteRemote`, `DeleteLocal`, `RemoveDirLocal`,
//!   moves or conflict copies), but what only adds bytes still goes: downloads, local directory
//!   creations and base bookkeeping (`ForgetBase` only of paths gone on both sides). So an edit
//!   made elsewhere that beat the user's delete of the last local file comes back, and the next
//!   pass, no longer seeing an empty root, carries on as usual.
//!
//! # A base that lags behind
//!
//! The client may lose the answer to any request after the server applied it, and a crash rolls
//! base back to its last commit, so base can lag behind the server by this device's own applied
//! ops. The plan stays safe for any such base: a rename that cannot be a move uploads at the new
//! path before deleting at the old one (see [`plan`] on the order), and a pass never deletes the
//! same bytes locally at one path and remotely at another (a stale base entry would make both
//! look like the other side's delete); it keeps the local file instead.
//!
//! # The mass-delete interlock
//!
//! A server that lost many files at once (a device that deleted a folder by mistake, ransomware
//! that replaced every file by an encrypted copy) would otherwise have every other device delete
//! them too, in one pass. With [`PlanInput::mass_delete`] set, the planner counts the local file
//! deletions the plan makes *because of remote deletes*: `DeleteLocal` of a file the remote no
//! longer has (row 7), and names them in [`Plan::counted_deletes`]. Those the caller applied
//! recently ([`MassDeleteRule::recently_deleted`]) count too, against the folder before them:
//! another device that uploads a big delete in several commits reaches this one in several
//! plans, each under the limit alone. When this plan's plus the recent ones are more than the
//! limit allows (more than [`MassDeleteLimit::percent`] of the folder's files before the recent
//! ones, and more than [`MassDeleteLimit::min_files`]), or a hold is already in force
//! ([`MassDeleteRule::holding`]), and this plan has any, the plan holds all of its own: it
//! leaves out every `DeleteLocal` and `RemoveDirLocal` of a path the remote no longer has, and
//! reports one [`Blocked`] `{ path: None, reason: MassDeleteHeld { files, folder_files } }`,
//! where `files` counts this plan's deletions plus the recent ones and `folder_files` is the
//! folder's files plus the recent ones (the folder before them). What was applied before the
//! hold stays deleted. Everything else
//! still goes: downloads, uploads (an edit still beats a delete, and such a file is not counted),
//! the remote deletes of what the user deleted locally (that is the user's intent), directory
//! creations and bookkeeping. A directory whose files are held stays, since they are still in it.
//!
//! - The fraction is of the **whole folder's** files as base knows them
//!   ([`MassDeleteRule::folder_files`], given by the caller), not of the trees planned: a plan of a
//!   focus counts the same deletions as the plan of the whole folder (outside the focus nothing is
//!   to be deleted, unless a hold is in force; a caller plans the whole folder while one is).
//! - A hold is sticky: the caller keeps it in force (`holding`) from the first plan that reports it
//!   until a plan reports none, so files the other device writes meanwhile (an encrypted copy of
//!   each deleted file) do not dilute the fraction below the limit in a later pass. It ends when
//!   nothing is left to delete (the files were restored on the server), or when the caller plans
//!   once with `mass_delete: None` (the user allowed it).
//! - Type changes (row 19: a file that became a directory remotely) and remote renames are not
//!   deletions and are never held.
//! - The planner has no clock: which deletions are recent is the caller's window. The client
//!   keeps 10 minutes of them, in memory only, and forgets them when the user allows a hold.
//!
//! # Planning a focus
//!
//! A client with a large folder does not plan the whole of it after every change. It plans a
//! *focus*: the trees cut down to the paths that changed on either side since its last plan
//! (and those that plan left undone), closed under what a decision about them reads:
//! - every ancestor of a path in it (a download needs its parents; a parent's decision needs
//!   its child);
//! - everything beneath a path in it, on every side (a directory's decision depends on what
//!   its children leave beneath it);
//! - both ends of a rename on either side (a move is one decision about two paths);
//! - every path under another device's lock and every file made read-only for one (step 4).
//!
//! The caller's side of the bargain: outside the focus every path is at a fixed point (its
//! last plan was empty for it and nothing about it changed since), so no decision there can
//! change. Under that assumption the plan of the focus is the plan of the whole folder (the
//! simulation checks exactly that). A plan may defer a decision about a path to a later one
//! (a rename claims paths; an entry that cannot be synced now keeps a missing one undecided),
//! so a caller keeps such paths in its focus, or plans the whole folder again.
//! Two facts a focus cannot show come in beside it: row 29's emptied root
//! ([`PlanInput::focus_root_emptied`]); and names taken outside it, for conflicted copies,
//! which carry a device name and a time, and are placed without replacing anything (a taken
//! name fails the step, and the next plan picks another).
//!
//! Start reading at [`plan`], then `planner.rs` (the per-path table) and `rename.rs`.

mod planner;
mod read_only;
pub mod record;
mod rename;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
pub use syncstore_proto::{
    ContentHash, DeviceName, EntryKind, NodeId, Precondition, RelPath, Revision,
};

/// What the last scan saw at one local path. Symlinks, special files and names that are not
/// valid UTF-8 never get here: the scanner reports them as skipped.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LocalNode {
    pub kind: EntryKind,
    /// BLAKE3 of the bytes; `None` for directories.
    pub hash: Option<ContentHash>,
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Inode number, used to recognise a rename.
    pub inode: u64,
    /// Inode change time in nanoseconds since the Unix epoch: no tool can set it back, so a
    /// file whose bytes changed in place with its size and mtime kept still looks changed.
    pub ctime_ns: i64,
    /// `st_mode & 0o111 != 0`; false for directories. The only mode bit that is synced.
    pub executable: bool,
}

/// The server's state of one path, as far as the client's cursor goes.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RemoteNode {
    pub node_id: NodeId,
    pub kind: EntryKind,
    pub rev: Revision,
    /// `None` for directories.
    pub hash: Option<ContentHash>,
    pub size: u64,
    pub mtime_ms: i64,
    /// The file's executable bit; false for directories.
    pub executable: bool,
    /// The device that made the node's last change: a conflicted copy made of these bytes is
    /// named after it.
    pub device: DeviceName,
}

/// The last state both sides agreed on for one path.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BaseNode {
    pub kind: EntryKind,
    /// `None` for directories.
    pub hash: Option<ContentHash>,
    /// The server's identity and revision of the node when it was agreed.
    pub node_id: NodeId,
    pub rev: Revision,
    /// The local file's size, mtime, inode and ctime when it was agreed: a rescan re-hashes a
    /// file only when these differ.
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
    pub ctime_ns: i64,
    /// The executable bit as the server had it when agreed (see "Mode bits" in the crate docs).
    pub executable: bool,
}

/// Everything the planner decides from, as values.
#[derive(Clone, Debug)]
pub struct PlanInput<'a> {
    pub base: &'a BTreeMap<RelPath, BaseNode>,
    pub local: &'a BTreeMap<RelPath, LocalNode>,
    pub remote: &'a BTreeMap<RelPath, RemoteNode>,
    /// This device's name, for conflicted copies.
    pub device: &'a DeviceName,
    /// The current time as `YYYY-MM-DD HHMMSS`, for conflicted copy names.
    pub now_stamp: &'a str,
    /// Paths (files, or directories covering everything beneath) locked by another device.
    pub locked_by_others: &'a BTreeMap<RelPath, DeviceName>,
    /// The local files the client has made read-only because a lock of another device covered
    /// them, and not given back their write bits since: each path with the inode the file had
    /// when it was made read-only (0 when unknown). The client keeps this set in its state; the
    /// planner keeps it in step with the locks through [`PlanOp::ProtectLocal`] and
    /// [`PlanOp::UnprotectLocal`]. See "Read-only files under other devices' locks" in the crate
    /// docs.
    pub read_only_for_locks: &'a BTreeMap<RelPath, u64>,
    /// Paths the planner leaves alone, with everything beneath them (row 27): those matching
    /// `.syncignore` or the default ignores on any side, and local entries that cannot be
    /// synced now (symlinks, unreadable or changing files, other filesystems).
    pub untouchable: &'a BTreeSet<RelPath>,
    /// The local entries among [`PlanInput::untouchable`]: present on disk, so they keep their
    /// directory from being removed there.
    pub local_untouchable: &'a BTreeSet<RelPath>,
    /// The paths among [`PlanInput::untouchable`] that the ignore rules exclude (on any side):
    /// their base entries are forgotten, so a path that stops being ignored is planned as on a
    /// first sync (row 27).
    pub ignored_by_rules: &'a BTreeSet<RelPath>,
    /// False when the local root is missing or unreadable.
    pub local_root_ok: bool,
    /// False when the remote listing failed or was cut short.
    pub remote_complete: bool,
    /// `None` when the trees above are the whole folder. `Some(emptied)` when they are a
    /// *focus* (see "Planning a focus" in the crate docs): `emptied` is row 29's fact about the
    /// whole folder (the local root holds no entry while base holds a file), which a focus
    /// cannot show.
    pub focus_root_emptied: Option<bool>,
    /// The mass-delete interlock (see "The mass-delete interlock" in the crate docs); `None`:
    /// off, every local deletion a remote delete asks for goes (the user allowed it).
    pub mass_delete: Option<MassDeleteRule>,
}

/// How many local deletions caused by remote deletes one plan may make: the interlock holds
/// them when they are more than `percent` of the folder's files *and* more than `min_files`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MassDeleteLimit {
    /// Percent of the folder's files, 0 to 100; 100 never holds.
    pub percent: u8,
    /// Files; a plan deleting this many or fewer is never held for its size.
    pub min_files: usize,
}

impl Default for MassDeleteLimit {
    /// More than 50 % of the folder's files and more than 100 files.
    fn default() -> MassDeleteLimit {
        MassDeleteLimit {
            percent: 50,
            min_files: 100,
        }
    }
}

impl MassDeleteLimit {
    /// Whether deleting `files` of a folder of `folder_files` is more than the limit allows.
    pub fn exceeded(&self, files: usize, folder_files: usize) -> bool {
        let percent = u128::from(self.percent.min(100));
        files > self.min_files && (files as u128) * 100 > percent * folder_files as u128
    }
}

/// The interlock as one plan applies it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MassDeleteRule {
    pub limit: MassDeleteLimit,
    /// The files of the whole folder as base knows them (not only of the trees planned, which
    /// may be a focus).
    pub folder_files: usize,
    /// A hold is in force (an earlier plan reported one, and none since reported it gone):
    /// any local deletion caused by a remote delete is held, whatever the count.
    pub holding: bool,
    /// The local deletions caused by remote deletes that the caller applied recently (those
    /// of [`Plan::counted_deletes`] it applied within its window): they count together with
    /// this plan's, against the folder before them (`folder_files + recently_deleted`). 0: the
    /// plan is judged on its own.
    pub recently_deleted: usize,
}

/// One step for the client to apply. Steps that write to the server are conditional.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum PlanOp {
    /// Upload the local file at `path`; `base` is the server-side precondition. The file gets
    /// the executable bit `executable` on both sides: the client sets it on the local file
    /// first when it differs (a mode change the remote made, row 34), then uploads with it.
    Upload {
        path: RelPath,
        base: Precondition,
        hash: ContentHash,
        executable: bool,
    },
    /// Download the remote file to a temp file, then rename it into place only if the local path
    /// still holds `expect_local` (`None`: nothing there). The local file gets the executable
    /// bit `executable`, which differs from `remote.executable` when the local side changed only
    /// the mode (row 34); base records `remote.executable`, so the next pass sends that change.
    Download {
        path: RelPath,
        remote: RemoteNode,
        expect_local: Option<ContentHash>,
        executable: bool,
    },
    /// Change only the executable bit of the remote file at revision `rev` (row 33), then record
    /// `node` as base with the revision (and node id) the server answers.
    SetModeRemote {
        path: RelPath,
        rev: Revision,
        executable: bool,
        node: BaseNode,
    },
    /// Set or clear only the executable bit (`0o111`) of the local file, only if it still has
    /// `expect_hash` (row 33), keeping its other mode bits; then record `node` as base.
    SetModeLocal {
        path: RelPath,
        expect_hash: ContentHash,
        executable: bool,
        node: BaseNode,
    },
    /// Delete the local file, only if it still has `expect_hash`.
    DeleteLocal {
        path: RelPath,
        expect_hash: ContentHash,
    },
    /// Delete the remote file or empty directory at revision `rev`.
    DeleteRemote { path: RelPath, rev: Revision },
    /// Create a local directory (parents too).
    MakeDirLocal { path: RelPath, remote: RemoteNode },
    /// Create a remote directory (parents too).
    MakeDirRemote { path: RelPath },
    /// Remove a local directory, only if it is empty by then.
    RemoveDirLocal { path: RelPath },
    /// Move a remote file or directory at revision `rev`.
    MoveRemote {
        from: RelPath,
        to: RelPath,
        rev: Revision,
    },
    /// Move a local file or directory (the server renamed it).
    MoveLocal { from: RelPath, to: RelPath },
    /// Rename the local file at `path` to `copy` (a conflicted copy); the next plan uploads the
    /// copy and downloads the server's version to `path`.
    ConflictCopy { path: RelPath, copy: RelPath },
    /// Both sides already agree: record the new base without transferring anything.
    RecordBase { path: RelPath, node: BaseNode },
    /// The path is gone on both sides: drop it from base.
    ForgetBase { path: RelPath },
    /// A lock of another device covers the local file at `path`: clear its write bits, and
    /// record `path` in [`PlanInput::read_only_for_locks`] with the file's inode and its mode
    /// before (replacing an entry for `path`, if any). If no regular file is there by then (a
    /// download before it did not place its file), do nothing. Touches neither the server nor
    /// base, and is no change to sync (see the crate docs).
    ProtectLocal { path: RelPath },
    /// Drop the entry for `path` from [`PlanInput::read_only_for_locks`]; first, if `file` is
    /// given (where the file made read-only as `path` is now: `path` itself, or where the user
    /// renamed it), give the regular file there the mode remembered for `path`, keeping its
    /// executable bit as it is now, if it still has the inode recorded (or that is unknown).
    /// `None` when that file is gone: only the entry goes. Touches neither the server nor base.
    UnprotectLocal {
        path: RelPath,
        file: Option<RelPath>,
    },
}

/// A path the planner will not touch this round, and why; shown by `status`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Blocked {
    /// `None` when the whole pass is blocked (for example the local root vanished).
    pub path: Option<RelPath>,
    pub reason: BlockReason,
}

/// Why a path or the whole pass is blocked.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum BlockReason {
    /// Another device holds a lock on the path.
    LockedBy(DeviceName),
    /// The local root is missing, unreadable, or empty while base holds files (row 29; when it
    /// is empty, downloads still go, but nothing is deleted: see the crate docs).
    LocalRootMissing,
    /// The mass-delete interlock holds the local deletions (and the directories they leave
    /// empty) that remote deletes ask for; everything else of the plan goes (see the crate
    /// docs). `files`: the deletions counted, this plan's (all held) plus those applied
    /// recently ([`MassDeleteRule::recently_deleted`]); `folder_files`: the folder's files
    /// before the recent ones.
    MassDeleteHeld { files: usize, folder_files: usize },
}

/// The planner's answer.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Plan {
    pub ops: Vec<PlanOp>,
    pub blocked: Vec<Blocked>,
    /// The paths of the `DeleteLocal` steps in `ops` that the mass-delete interlock counts
    /// (files the remote no longer has; see the crate docs), whether or not it is on: the
    /// client counts those it applies towards [`MassDeleteRule::recently_deleted`]. Empty when
    /// the interlock holds.
    pub counted_deletes: BTreeSet<RelPath>,
}

/// Decides what to do. Pure: same input, same plan.
///
/// The ops come in the order the client must apply them: files given back their write bits
/// (`UnprotectLocal`), then moves and conflict copies, then local deletions and the remote
/// deletions that free a name a creation needs, deepest path first, then directory creations
/// shallowest first, then transfers, then the other remote deletions, deepest path first, then
/// base bookkeeping, then files made read-only (`ProtectLocal`). Remote deletions wait for the
/// uploads so that the bytes of a rename that could not be a move are on the server at the new
/// path before they are deleted at the old one. See the module `planner` for the decision per
/// path.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    planner::plan(input)
}

/// The conflicted-copy name for `path`: `NAME (conflicted copy from DEVICE STAMP).EXT`, with
/// ` 2`, ` 3`, ... added inside the parentheses until it is free in every tree.
///
/// A name too long for one path component gets a shortened stem (and loses its extension if even
/// that does not fit); a path too long as a whole puts the copy at the top level. Characters of
/// `now_stamp` other than ASCII letters, digits, space, `-` and `_` are dropped.
pub fn conflict_copy_name(
    path: &RelPath,
    device: &DeviceName,
    now_stamp: &str,
    taken: &dyn Fn(&RelPath) -> bool,
) -> RelPath {
    let name = path.file_name();
    let (stem, ext) = match name.rfind('.') {
        Some(idx) if idx > 0 => (&name[..idx], &name[idx..]),
        _ => (name, ""),
    };
    let stamp: String = now_stamp
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .take(32)
        .collect();
    let parent = path.parent();
    let mut attempt = 1u64;
    loop {
        let suffix = if attempt == 1 {
            String::new()
        } else {
            format!(" {attempt}")
        };
        let marker = format!(" (conflicted copy from {device} {stamp}{suffix})");
        // The marker is at most 23 + 64 + 1 + 32 + 21 + 1 bytes, so a top-level name built from it
        // is always a valid path; the loop therefore always ends at a free name.
        if let Some(candidate) = copy_candidate(parent.as_ref(), stem, ext, &marker) {
            if !taken(&candidate) {
                return candidate;
            }
        }
        attempt += 1;
    }
}

/// `stem + marker + ext` inside `parent`, shortened to fit the limits of [`RelPath`].
fn copy_candidate(
    parent: Option<&RelPath>,
    stem: &str,
    ext: &str,
    marker: &str,
) -> Option<RelPath> {
    let max = RelPath::MAX_COMPONENT_LEN;
    let ext = if marker.len() + ext.len() < max {
        ext
    } else {
        ""
    };
    let stem = truncate_at_char(stem, max - marker.len().min(max) - ext.len());
    let copy_name = format!("{stem}{marker}{ext}");
    let in_parent = match parent {
        Some(parent) => parent.join(&copy_name),
        None => RelPath::new(&copy_name),
    };
    in_parent.or_else(|_| RelPath::new(&copy_name)).ok()
}

/// The longest prefix of `text` of at most `max_bytes` bytes that ends on a character boundary.
fn truncate_at_char(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
