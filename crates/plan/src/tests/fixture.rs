//! A compact text form of the three trees and of a plan, for data-driven tests.
//!
//! A tree is one entry per line: `PATH file HASH [key=value...]` or `PATH dir [key=value...]`;
//! a path with spaces goes in double quotes.
//! Keys: `id` (node id), `rev`, `ino` (inode), `size`, `mtime`; the flag `x` marks an executable
//! file (its executable bit set; rendered as ` x` on the ops that carry the bit). Defaults: every path named in any
//! of the three trees gets a number `n` by sort order, and its node id is `n` and its inode
//! `100 + n`, so the same path means the same node in base and remote and the same inode in base
//! and local. Revisions default to 1.
//! A hash is written as a short name (`h1`, `v2`): its bytes, zero-padded; `empty` is the hash of
//! the empty file. The rendered plan writes hashes back as names.

use crate::{
    BaseNode, BlockReason, ContentHash, DeviceName, EntryKind, LocalNode, MassDeleteLimit,
    MassDeleteRule, Plan, PlanInput, PlanOp, Precondition, RelPath, RemoteNode,
};
use crate::{NodeId, Revision};
use expect_test::Expect;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

pub(crate) fn hash(name: &str) -> ContentHash {
    if name == "empty" {
        return ContentHash::of_empty();
    }
    assert!(
        name.len() <= 32 && name.is_ascii(),
        "hash name {name:?} too long"
    );
    let mut bytes = [0u8; 32];
    bytes[..name.len()].copy_from_slice(name.as_bytes());
    ContentHash(bytes)
}

pub(crate) fn hash_name(hash: &ContentHash) -> String {
    if *hash == ContentHash::of_empty() {
        return "empty".to_owned();
    }
    let len = hash.0.iter().position(|&b| b == 0).unwrap_or(32);
    let (name, rest) = hash.0.split_at(len);
    match std::str::from_utf8(name) {
        Ok(text) if !text.is_empty() && rest.iter().all(|&b| b == 0) => text.to_owned(),
        _ => hash.to_hex()[..8].to_owned(),
    }
}

pub(crate) fn path(text: &str) -> RelPath {
    RelPath::new(text).unwrap()
}

/// One parsed line.
struct Line {
    path: RelPath,
    kind: EntryKind,
    hash: Option<ContentHash>,
    keys: BTreeMap<String, u64>,
    executable: bool,
}

fn parse(text: &str) -> Vec<Line> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        // A path with spaces is written in double quotes.
        let (path_text, rest) = match line.strip_prefix('"') {
            Some(quoted) => quoted.split_once('"').expect("closing quote"),
            None => line.split_once(' ').unwrap_or((line, "")),
        };
        let path = path(path_text);
        let mut words = rest.split_whitespace();
        let (kind, hash) = match words.next() {
            Some("file") => (
                EntryKind::File,
                Some(hash(words.next().expect("a file needs a hash"))),
            ),
            Some("dir") => (EntryKind::Dir, None),
            other => panic!("bad kind {other:?} in {line:?}"),
        };
        let mut executable = false;
        let mut keys = BTreeMap::new();
        for word in words {
            if word == "x" {
                executable = true;
                continue;
            }
            let (key, value) = word.split_once('=').expect("key=value or x");
            keys.insert(key.to_owned(), value.parse().expect("a number"));
        }
        out.push(Line {
            path,
            kind,
            hash,
            keys,
            executable,
        });
    }
    out
}

/// The three trees plus the other inputs, with defaults a test can change.
pub(crate) struct Fixture {
    pub base: BTreeMap<RelPath, BaseNode>,
    pub local: BTreeMap<RelPath, LocalNode>,
    pub remote: BTreeMap<RelPath, RemoteNode>,
    pub locked_by_others: BTreeMap<RelPath, DeviceName>,
    pub read_only_for_locks: BTreeMap<RelPath, u64>,
    pub ignored: BTreeSet<RelPath>,
    /// The paths among `ignored` that the rules exclude.
    pub ignored_by_rules: BTreeSet<RelPath>,
    pub local_root_ok: bool,
    pub remote_complete: bool,
    /// `None`: the mass-delete interlock is off (the default of these tests).
    pub mass_delete: Option<MassDeleteRule>,
    /// The trees are a focus, with row 29's fact about the whole folder.
    pub focus_root_emptied: Option<bool>,
}

impl Fixture {
    pub(crate) fn new(base: &str, local: &str, remote: &str) -> Fixture {
        let (base, local, remote) = (parse(base), parse(local), parse(remote));
        let all: BTreeSet<RelPath> = base
            .iter()
            .chain(&local)
            .chain(&remote)
            .map(|l| l.path.clone())
            .collect();
        let number = |p: &RelPath| all.iter().position(|q| q == p).unwrap() as u64 + 1;
        let get =
            |line: &Line, key: &str, default: u64| line.keys.get(key).copied().unwrap_or(default);
        Fixture {
            base: base
                .iter()
                .map(|l| {
                    let node = BaseNode {
                        kind: l.kind,
                        hash: l.hash,
                        node_id: NodeId(get(l, "id", number(&l.path))),
                        rev: Revision(get(l, "rev", 1)),
                        size: get(l, "size", 0),
                        mtime_ns: get(l, "mtime", 0) as i64,
                        inode: get(l, "ino", 100 + number(&l.path)),
                        ctime_ns: get(l, "ctime", 0) as i64,
                        executable: l.executable,
                    };
                    (l.path.clone(), node)
                })
                .collect(),
            local: local
                .iter()
                .map(|l| {
                    let node = LocalNode {
                        kind: l.kind,
                        hash: l.hash,
                        size: get(l, "size", 0),
                        mtime_ns: get(l, "mtime", 0) as i64,
                        inode: get(l, "ino", 100 + number(&l.path)),
                        ctime_ns: get(l, "ctime", 0) as i64,
                        executable: l.executable,
                    };
                    (l.path.clone(), node)
                })
                .collect(),
            remote: remote
                .iter()
                .map(|l| {
                    let node = RemoteNode {
                        node_id: NodeId(get(l, "id", number(&l.path))),
                        kind: l.kind,
                        rev: Revision(get(l, "rev", 1)),
                        hash: l.hash,
                        size: get(l, "size", 0),
                        mtime_ms: get(l, "mtime", 0) as i64,
                        executable: l.executable,
                        // Remote nodes are the other device's, unless a test says otherwise.
                        device: DeviceName::new("phone").unwrap(),
                    };
                    (l.path.clone(), node)
                })
                .collect(),
            locked_by_others: BTreeMap::new(),
            read_only_for_locks: BTreeMap::new(),
            ignored: BTreeSet::new(),
            ignored_by_rules: BTreeSet::new(),
            local_root_ok: true,
            remote_complete: true,
            mass_delete: None,
            focus_root_emptied: None,
        }
    }

    /// The mass-delete interlock on, with this limit, for a folder of base's files.
    pub(crate) fn mass_delete(self, percent: u8, min_files: usize) -> Fixture {
        let folder_files = self
            .base
            .values()
            .filter(|node| node.kind == EntryKind::File)
            .count();
        self.mass_delete_of(percent, min_files, folder_files)
    }

    /// The mass-delete interlock on, with this limit, for a folder of `folder_files` files
    /// (the trees are a focus of it).
    pub(crate) fn mass_delete_of(
        mut self,
        percent: u8,
        min_files: usize,
        folder_files: usize,
    ) -> Fixture {
        self.mass_delete = Some(MassDeleteRule {
            limit: MassDeleteLimit { percent, min_files },
            folder_files,
            holding: false,
            recently_deleted: 0,
        });
        self
    }

    /// The caller applied `files` local deletions caused by remote deletes recently (the
    /// interlock must be on).
    pub(crate) fn recently_deleted(mut self, files: usize) -> Fixture {
        let rule = self.mass_delete.as_mut().expect("the interlock is on");
        rule.recently_deleted = files;
        self
    }

    /// A hold of the interlock is in force already (it must be on).
    pub(crate) fn holding(mut self) -> Fixture {
        let rule = self.mass_delete.as_mut().expect("the interlock is on");
        rule.holding = true;
        self
    }

    /// The trees are a focus of the folder (its root not emptied).
    pub(crate) fn focus(mut self) -> Fixture {
        self.focus_root_emptied = Some(false);
        self
    }

    pub(crate) fn locked(mut self, text: &str, device: &str) -> Fixture {
        self.locked_by_others
            .insert(path(text), DeviceName::new(device).unwrap());
        self
    }

    /// The client made the file at `text` read-only for a lock: the set names it with the inode
    /// of the local file there, else of base's, else 0 (unknown).
    pub(crate) fn read_only(self, text: &str) -> Fixture {
        let path = path(text);
        let inode = self
            .local
            .get(&path)
            .map(|node| node.inode)
            .or_else(|| self.base.get(&path).map(|node| node.inode))
            .unwrap_or(0);
        self.read_only_as(text, inode)
    }

    /// The set names `text` with `inode`.
    pub(crate) fn read_only_as(mut self, text: &str, inode: u64) -> Fixture {
        self.read_only_for_locks.insert(path(text), inode);
        self
    }

    pub(crate) fn ignore(mut self, text: &str) -> Fixture {
        self.ignored.insert(path(text));
        self
    }

    /// `text` is ignored by the rules (not only untouchable this pass).
    pub(crate) fn ignore_by_rule(mut self, text: &str) -> Fixture {
        self.ignored.insert(path(text));
        self.ignored_by_rules.insert(path(text));
        self
    }

    pub(crate) fn plan(&self) -> Plan {
        let device = DeviceName::new("laptop").unwrap();
        // What the scan reports: the untouchable entries present on disk.
        let local_untouchable: BTreeSet<RelPath> = self
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
            locked_by_others: &self.locked_by_others,
            read_only_for_locks: &self.read_only_for_locks,
            untouchable: &self.ignored,
            local_untouchable: &local_untouchable,
            ignored_by_rules: &self.ignored_by_rules,
            local_root_ok: self.local_root_ok,
            remote_complete: self.remote_complete,
            focus_root_emptied: self.focus_root_emptied,
            mass_delete: self.mass_delete,
        })
    }

    pub(crate) fn check(&self, expect: Expect) {
        let plan = self.plan();
        // Determinism: the same input gives the same plan.
        assert_eq!(plan, self.plan());
        expect.assert_eq(&render(&plan));
    }
}

/// Plans the three trees and compares the rendered plan with `expect`.
pub(crate) fn check(base: &str, local: &str, remote: &str, expect: Expect) {
    Fixture::new(base, local, remote).check(expect);
}

pub(crate) fn render(plan: &Plan) -> String {
    let mut out = String::new();
    for op in &plan.ops {
        let line = match op {
            PlanOp::Upload {
                path,
                base,
                hash,
                executable,
            } => format!(
                "upload {path} {} {}{}",
                hash_name(hash),
                precondition(base),
                x_flag(*executable)
            ),
            PlanOp::Download {
                path,
                remote,
                expect_local,
                executable,
            } => format!(
                "download {path} {} id={} rev={} if-local={}{}",
                remote.hash.as_ref().map_or("-".to_owned(), hash_name),
                remote.node_id,
                remote.rev,
                expect_local.as_ref().map_or("absent".to_owned(), hash_name),
                x_flag(*executable)
            ),
            PlanOp::SetModeRemote {
                path,
                rev,
                executable,
                node,
            } => format!(
                "set-mode-remote {path} rev={rev} {}; then {}",
                mode_word(*executable),
                base_text(node)
            ),
            PlanOp::SetModeLocal {
                path,
                expect_hash,
                executable,
                node,
            } => format!(
                "set-mode-local {path} if={} {}; then {}",
                hash_name(expect_hash),
                mode_word(*executable),
                base_text(node)
            ),
            PlanOp::DeleteLocal { path, expect_hash } => {
                format!("delete-local {path} if={}", hash_name(expect_hash))
            }
            PlanOp::DeleteRemote { path, rev } => format!("delete-remote {path} rev={rev}"),
            PlanOp::MakeDirLocal { path, remote } => format!(
                "mkdir-local {path} id={} rev={}",
                remote.node_id, remote.rev
            ),
            PlanOp::MakeDirRemote { path } => format!("mkdir-remote {path}"),
            PlanOp::RemoveDirLocal { path } => format!("rmdir-local {path}"),
            PlanOp::MoveRemote { from, to, rev } => format!("move-remote {from} -> {to} rev={rev}"),
            PlanOp::MoveLocal { from, to } => format!("move-local {from} -> {to}"),
            PlanOp::ConflictCopy { path, copy } => format!("conflict-copy {path} -> {copy}"),
            PlanOp::RecordBase { path, node } => format!("record-base {path} {}", base_text(node)),
            PlanOp::ForgetBase { path } => format!("forget-base {path}"),
            PlanOp::ProtectLocal { path } => format!("protect-local {path}"),
            PlanOp::UnprotectLocal { path, file } => match file {
                Some(file) if file == path => format!("unprotect-local {path}"),
                Some(file) => format!("unprotect-local {path} (now at {file})"),
                None => format!("unprotect-local {path} (gone)"),
            },
        };
        writeln!(out, "{line}").unwrap();
    }
    for blocked in &plan.blocked {
        let path = blocked
            .path
            .as_ref()
            .map_or("*".to_owned(), |p| p.to_string());
        let reason = match &blocked.reason {
            BlockReason::LockedBy(device) => format!("locked by {device}"),
            BlockReason::LocalRootMissing => "local root missing".to_owned(),
            BlockReason::MassDeleteHeld {
                files,
                folder_files,
            } => format!("mass delete held ({files} of {folder_files} files)"),
        };
        writeln!(out, "blocked {path}: {reason}").unwrap();
    }
    if out.is_empty() {
        out.push_str("nothing\n");
    }
    out
}

fn base_text(node: &BaseNode) -> String {
    format!(
        "{}{} id={} rev={} size={} mtime={} ino={}{}",
        match node.kind {
            EntryKind::File => "file ",
            EntryKind::Dir => "dir",
        },
        node.hash.as_ref().map_or(String::new(), hash_name),
        node.node_id,
        node.rev,
        node.size,
        node.mtime_ns,
        node.inode,
        x_flag(node.executable),
    )
}

fn x_flag(executable: bool) -> &'static str {
    if executable {
        " x"
    } else {
        ""
    }
}

fn mode_word(executable: bool) -> &'static str {
    if executable {
        "+x"
    } else {
        "-x"
    }
}

fn precondition(base: &Precondition) -> String {
    match base {
        Precondition::MustNotExist => "if-absent".to_owned(),
        Precondition::Rev(rev) => format!("if-rev={rev}"),
    }
}
