//! A device's disk: paths to files (bytes) and directories, with inode numbers and mtimes.
//!
//! Every call is atomic and durable (a crash never tears one), like a rename after fsync. The
//! error cases are the POSIX ones the client meets: a missing parent, a file where a directory
//! should be, `RENAME_NOREPLACE` finding its target taken, a directory not empty.

use std::collections::BTreeMap;
use syncstore_proto::{EntryKind, RelPath};

/// One file or directory on disk.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct FsNode {
    pub kind: EntryKind,
    /// Empty for directories.
    pub bytes: Vec<u8>,
    pub inode: u64,
    pub mtime_ns: i64,
    /// When the node's bytes last changed (set by every write, never by the user): what lets
    /// the client see an in-place write that kept size and mtime.
    pub ctime_ns: i64,
    /// The executable bit; false for directories.
    pub executable: bool,
    /// No write bits (the engine makes files another device locks read-only): users cannot
    /// write it in place.
    pub read_only: bool,
}

/// Why a filesystem call failed, as the `std::io::ErrorKind` the client looks at.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FsError {
    /// `ENOENT`.
    NotFound,
    /// `EEXIST`.
    AlreadyExists,
    /// `ENOTDIR`, `EISDIR`, `ENOTEMPTY`, `EINVAL`: anything the client treats as "other".
    Other,
}

/// An in-memory filesystem.
#[derive(Clone, Default, Debug)]
pub struct SimFs {
    pub nodes: BTreeMap<RelPath, FsNode>,
    next_inode: u64,
    /// Freed inode numbers, most recent last; handed out again like ext4 tends to.
    freed: Vec<u64>,
    /// Other filesystems mounted over directories: mount point → the nodes they hide (the
    /// mount point's own included).
    mounts: BTreeMap<RelPath, Vec<(RelPath, FsNode)>>,
    /// Another filesystem mounted over the whole folder: the nodes it hides.
    root_mount: Option<BTreeMap<RelPath, FsNode>>,
    /// The client's in-place journals in `.syncstore/journal/`: name → bytes (not hidden by
    /// mounts: a folder with a disk over its root is stopped before they are read).
    pub journals: BTreeMap<String, Vec<u8>>,
    /// The root directory's mtime (its entries changed then).
    pub root_mtime_ns: i64,
    /// What a watcher would report, oldest first: each changed path, with whether it may be a
    /// directory with new entries (created, renamed). Mounts report nothing (inotify does not).
    pub events: Vec<(RelPath, bool)>,
    /// Timestamps of whole seconds, as FAT, exFAT through FUSE and some network mounts stamp
    /// them: a same-size rewrite within the second keeps every part of a file's stamp.
    pub coarse_timestamps: bool,
}

impl SimFs {
    /// An empty filesystem, with timestamps of whole seconds if `coarse_timestamps`.
    pub fn new(coarse_timestamps: bool) -> SimFs {
        SimFs {
            coarse_timestamps,
            ..SimFs::default()
        }
    }

    /// The timestamp this filesystem gives a change at `ns` (nanoseconds on the clock).
    pub fn timestamp(&self, ns: i64) -> i64 {
        if self.coarse_timestamps {
            ns - ns.rem_euclid(1_000_000_000)
        } else {
            ns
        }
    }

    /// A fresh inode number; `reuse` takes the most recently freed one if any.
    pub fn alloc_inode(&mut self, reuse: bool) -> u64 {
        if reuse {
            if let Some(inode) = self.freed.pop() {
                return inode;
            }
        }
        self.next_inode += 1;
        self.next_inode
    }

    fn free_inode(&mut self, inode: u64) {
        self.freed.push(inode);
    }

    /// Mounts an empty filesystem over the directory `dir`, hiding what is beneath it; false
    /// when `dir` is no directory, or a mount is already at, above or below it.
    pub fn mount(&mut self, dir: &RelPath, now_ns: i64) -> bool {
        if self
            .nodes
            .get(dir)
            .is_none_or(|node| node.kind != EntryKind::Dir)
            || self
                .mounts
                .keys()
                .any(|m| m == dir || dir.is_inside(m) || m.is_inside(dir))
        {
            return false;
        }
        let hidden: Vec<RelPath> = self
            .nodes
            .keys()
            .filter(|p| *p == dir || p.is_inside(dir))
            .cloned()
            .collect();
        let hidden = hidden
            .into_iter()
            .map(|p| {
                let node = self.nodes.remove(&p).expect("listed above");
                (p, node)
            })
            .collect();
        let inode = self.alloc_inode(false);
        self.nodes.insert(
            dir.clone(),
            FsNode {
                kind: EntryKind::Dir,
                bytes: Vec::new(),
                inode,
                mtime_ns: now_ns,
                ctime_ns: now_ns,
                executable: false,
                read_only: false,
            },
        );
        self.mounts.insert(dir.clone(), hidden);
        true
    }

    /// Unmounts every filesystem mounted over a directory: what they held goes with them, and
    /// what they hid is back as it was.
    pub fn unmount_dirs(&mut self) {
        for (dir, hidden) in std::mem::take(&mut self.mounts) {
            self.nodes.retain(|p, _| !(*p == dir || p.is_inside(&dir)));
            self.nodes.extend(hidden);
        }
    }

    /// Mounts an empty filesystem over the whole folder.
    pub fn mount_root(&mut self) -> bool {
        if self.root_mount.is_some() {
            return false;
        }
        self.root_mount = Some(std::mem::take(&mut self.nodes));
        true
    }

    /// Unmounts the filesystem mounted over the whole folder, if any.
    pub fn unmount_root(&mut self) {
        if let Some(hidden) = self.root_mount.take() {
            self.nodes = hidden;
        }
    }

    /// The bytes of every file on this disk, those hidden by mounts included.
    pub fn all_file_bytes(&self) -> impl Iterator<Item = &Vec<u8>> {
        let hidden_by_dirs = self.mounts.values().flatten().map(|(_, node)| node);
        let hidden_by_root = self.root_mount.iter().flat_map(|nodes| nodes.values());
        self.nodes
            .values()
            .chain(hidden_by_dirs)
            .chain(hidden_by_root)
            .filter(|node| node.kind == EntryKind::File)
            .map(|node| &node.bytes)
    }

    /// Whether another filesystem is mounted over the whole folder.
    pub fn root_mounted(&self) -> bool {
        self.root_mount.is_some()
    }

    /// The mount points of filesystems mounted over directories.
    pub fn mount_points(&self) -> impl Iterator<Item = &RelPath> {
        self.mounts.keys()
    }

    /// Whether `path` is a mount point or lies beneath one (on another filesystem).
    pub fn on_other_fs(&self, path: &RelPath) -> bool {
        self.mounts.keys().any(|m| path == m || path.is_inside(m))
    }

    /// The mount point of the filesystem `path` is on (`None`: the folder's own).
    pub fn fs_of(&self, path: &RelPath) -> Option<&RelPath> {
        self.mounts.keys().find(|m| path.is_inside(m))
    }

    /// Whether `path` is a mount point or has one beneath it (`EBUSY` for a rename or rmdir).
    pub fn holds_mount(&self, path: &RelPath) -> bool {
        self.mounts.keys().any(|m| m == path || m.is_inside(path))
    }

    /// The node at `path`.
    pub fn get(&self, path: &RelPath) -> Option<&FsNode> {
        self.nodes.get(path)
    }

    /// What `safe_join` checks: no existing ancestor of `path` is a file.
    pub fn check_ancestors(&self, path: &RelPath) -> Result<(), FsError> {
        for ancestor in path.ancestors() {
            match self.nodes.get(&ancestor) {
                Some(node) if node.kind == EntryKind::File => return Err(FsError::Other),
                Some(_) => {}
                None => return Ok(()),
            }
        }
        Ok(())
    }

    fn parent_is_dir(&self, path: &RelPath) -> Result<(), FsError> {
        match path.parent() {
            None => Ok(()),
            Some(parent) => match self.nodes.get(&parent) {
                Some(node) if node.kind == EntryKind::Dir => Ok(()),
                Some(_) => Err(FsError::Other),
                None => Err(FsError::NotFound),
            },
        }
    }

    fn touch_parent(&mut self, path: &RelPath, now_ns: i64) {
        match path.parent() {
            Some(parent) => {
                if let Some(node) = self.nodes.get_mut(&parent) {
                    node.mtime_ns = now_ns;
                }
            }
            None => self.root_mtime_ns = now_ns,
        }
    }

    /// `mkdir -p`.
    pub fn create_dir_all(
        &mut self,
        path: &RelPath,
        now_ns: i64,
        reuse: bool,
    ) -> Result<(), FsError> {
        let mut all = path.ancestors();
        all.push(path.clone());
        for dir in all {
            match self.nodes.get(&dir) {
                Some(node) if node.kind == EntryKind::Dir => continue,
                Some(_) => return Err(FsError::AlreadyExists),
                None => {}
            }
            let inode = self.alloc_inode(reuse);
            self.touch_parent(&dir, now_ns);
            self.events.push((dir.clone(), true));
            self.nodes.insert(
                dir,
                FsNode {
                    kind: EntryKind::Dir,
                    bytes: Vec::new(),
                    inode,
                    mtime_ns: now_ns,
                    ctime_ns: now_ns,
                    executable: false,
                    read_only: false,
                },
            );
        }
        Ok(())
    }

    /// Writes `bytes` into the file at `path`, creating it if needed (same inode if it exists).
    pub fn write(
        &mut self,
        path: &RelPath,
        bytes: Vec<u8>,
        now_ns: i64,
        reuse: bool,
    ) -> Result<(), FsError> {
        self.parent_is_dir(path)?;
        if let Some(node) = self.nodes.get_mut(path) {
            if node.kind == EntryKind::Dir {
                return Err(FsError::Other);
            }
            self.events.push((path.clone(), false));
            node.bytes = bytes;
            node.mtime_ns = now_ns;
            node.ctime_ns = now_ns;
            return Ok(());
        }
        let inode = self.alloc_inode(reuse);
        self.touch_parent(path, now_ns);
        self.events.push((path.clone(), false));
        self.nodes.insert(
            path.clone(),
            FsNode {
                kind: EntryKind::File,
                bytes,
                inode,
                mtime_ns: now_ns,
                ctime_ns: now_ns,
                executable: false,
                read_only: false,
            },
        );
        Ok(())
    }

    /// The path of the file with `inode`, if any is linked (an open descriptor keeps its inode
    /// from being handed out again, so it is never another file's).
    pub fn path_of_inode(&self, inode: u64) -> Option<RelPath> {
        self.nodes
            .iter()
            .find(|(_, node)| node.kind == EntryKind::File && node.inode == inode)
            .map(|(path, _)| path.clone())
    }

    /// Rewrites the bytes of the file at `path` in place and puts its mtime back, as
    /// `rsync --inplace -t` or a database does: only the ctime moves.
    pub fn write_keeping_mtime(
        &mut self,
        path: &RelPath,
        bytes: Vec<u8>,
        now_ns: i64,
    ) -> Result<(), FsError> {
        match self.nodes.get_mut(path) {
            Some(node) if node.kind == EntryKind::File => {
                node.bytes = bytes;
                node.ctime_ns = now_ns;
                self.events.push((path.clone(), false));
                Ok(())
            }
            Some(_) => Err(FsError::Other),
            None => Err(FsError::NotFound),
        }
    }

    /// `rename(2)` of a fresh file (a temp file holding `node`) over `path`: a new inode at `path`.
    /// Fails on a directory; with `noreplace`, fails on anything already there.
    pub fn place(
        &mut self,
        path: &RelPath,
        node: FsNode,
        noreplace: bool,
        now_ns: i64,
    ) -> Result<(), FsError> {
        self.parent_is_dir(path)?;
        match self.nodes.get(path) {
            Some(_) if noreplace => return Err(FsError::AlreadyExists),
            Some(old) if old.kind == EntryKind::Dir => return Err(FsError::Other),
            Some(old) => {
                let inode = old.inode;
                self.free_inode(inode);
            }
            None => {}
        }
        self.touch_parent(path, now_ns);
        self.events.push((path.clone(), false));
        self.nodes.insert(path.clone(), node);
        Ok(())
    }

    /// `rename(2)` of `from` (and everything beneath) to `to`. With `noreplace`, fails when `to`
    /// exists; without, a file replaces a file (what `mv` does).
    pub fn rename(
        &mut self,
        from: &RelPath,
        to: &RelPath,
        noreplace: bool,
        now_ns: i64,
    ) -> Result<(), FsError> {
        let Some(source) = self.nodes.get(from) else {
            return Err(FsError::NotFound);
        };
        // `EBUSY` for a mount point, `EXDEV` across filesystems.
        if self.holds_mount(from) || self.holds_mount(to) || self.fs_of(from) != self.fs_of(to) {
            return Err(FsError::Other);
        }
        if from == to {
            return Ok(());
        }
        if to.is_inside(from) {
            return Err(FsError::Other);
        }
        self.parent_is_dir(to)?;
        let source_kind = source.kind;
        if let Some(target) = self.nodes.get(to) {
            if noreplace {
                return Err(FsError::AlreadyExists);
            }
            if target.kind == EntryKind::Dir || source_kind == EntryKind::Dir {
                return Err(FsError::Other);
            }
            let inode = target.inode;
            self.free_inode(inode);
            self.nodes.remove(to);
        }
        let moved: Vec<RelPath> = self
            .nodes
            .keys()
            .filter(|p| *p == from || p.is_inside(from))
            .cloned()
            .collect();
        for old in moved {
            let node = self.nodes.remove(&old).expect("listed above");
            let new = old.rebase(from, to).expect("at or inside from");
            self.nodes.insert(new, node);
        }
        self.touch_parent(from, now_ns);
        self.touch_parent(to, now_ns);
        self.events.push((from.clone(), true));
        self.events.push((to.clone(), true));
        Ok(())
    }

    /// `unlink(2)`.
    pub fn remove_file(&mut self, path: &RelPath, now_ns: i64) -> Result<(), FsError> {
        match self.nodes.get(path) {
            None => Err(FsError::NotFound),
            Some(node) if node.kind == EntryKind::Dir => Err(FsError::Other),
            Some(node) => {
                let inode = node.inode;
                self.nodes.remove(path);
                self.free_inode(inode);
                self.touch_parent(path, now_ns);
                self.events.push((path.clone(), false));
                Ok(())
            }
        }
    }

    /// `rmdir(2)`.
    pub fn remove_dir(&mut self, path: &RelPath, now_ns: i64) -> Result<(), FsError> {
        if self.holds_mount(path) {
            return Err(FsError::Other);
        }
        match self.nodes.get(path) {
            None => Err(FsError::NotFound),
            Some(node) if node.kind == EntryKind::File => Err(FsError::Other),
            Some(node) => {
                if self.nodes.keys().any(|p| p.is_inside(path)) {
                    return Err(FsError::Other);
                }
                let inode = node.inode;
                self.nodes.remove(path);
                self.free_inode(inode);
                self.touch_parent(path, now_ns);
                self.events.push((path.clone(), false));
                Ok(())
            }
        }
    }

    /// `rm -r`: removes `path` and everything beneath; returns the files removed.
    pub fn remove_all(&mut self, path: &RelPath, now_ns: i64) -> Vec<FsNode> {
        let gone: Vec<RelPath> = self
            .nodes
            .keys()
            .filter(|p| *p == path || p.is_inside(path))
            .cloned()
            .collect();
        let mut files = Vec::new();
        // Deepest first, as `rm -r` does, so inodes are freed children first.
        for p in gone.into_iter().rev() {
            let node = self.nodes.remove(&p).expect("listed above");
            self.free_inode(node.inode);
            if node.kind == EntryKind::File {
                files.push(node);
            }
        }
        self.touch_parent(path, now_ns);
        self.events.push((path.clone(), false));
        files
    }

    /// The executable bit of every file, for the final comparison.
    pub fn modes(&self) -> BTreeMap<RelPath, bool> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.kind == EntryKind::File)
            .map(|(p, n)| (p.clone(), n.executable))
            .collect()
    }

    /// The tree as path → (kind, bytes), for the final comparison.
    pub fn snapshot(&self) -> BTreeMap<RelPath, (EntryKind, Vec<u8>)> {
        self.nodes
            .iter()
            .map(|(p, n)| (p.clone(), (n.kind, n.bytes.clone())))
            .collect()
    }
}
