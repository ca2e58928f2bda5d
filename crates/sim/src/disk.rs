//! The client's [`Disk`] seam over a device's [`SimFs`]: what the real engine sees of its folder.
//!
//! Every call is atomic. Calls that re-check what a step relies on (`stat`, `open`) sometimes
//! let the user edit first, so the engine's re-checks meet files changed since the plan; calls
//! that change the disk sometimes crash the device right after (between the change and the
//! base update that follows it). A crashed device's calls all fail. In-place writes are torn the
//! way a crash tears them: a journal may be cut short as it is written, and a `pwrite` may
//! stop at a page boundary of the file.

use crate::fs::{FsError, FsNode, SimFs};
use crate::shared::Shared;
use rand::Rng;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::{Path, PathBuf};
use syncstore_client::folder::FolderStopped;
use syncstore_client::seams::{DirEntry, Disk, DiskFile, FileKind, InPlaceFile, Meta, TempFile};
use syncstore_proto::{EntryKind, RelPath};

/// How often a re-check (`stat`, `open`) lets the user edit first.
const EDIT_AT_RECHECK: f64 = 0.02;
/// How often a stat of the scan does.
const EDIT_DURING_SCAN: f64 = 0.005;

/// Device `idx`'s folder.
pub struct SimDisk {
    shared: Shared,
    idx: usize,
    root: PathBuf,
}

impl SimDisk {
    pub fn new(shared: Shared, idx: usize) -> SimDisk {
        SimDisk {
            shared,
            idx,
            root: PathBuf::from(format!("/sim/d{idx}")),
        }
    }
}

fn gone() -> std::io::Error {
    std::io::Error::other("the process is gone")
}

fn io_error(err: FsError) -> std::io::Error {
    match err {
        FsError::NotFound => std::io::ErrorKind::NotFound.into(),
        FsError::AlreadyExists => std::io::ErrorKind::AlreadyExists.into(),
        FsError::Other => std::io::Error::other("not possible here"),
    }
}

/// The stat of `node` at `path` on `fs`.
fn meta_of(fs: &SimFs, path: &RelPath, node: &FsNode) -> Meta {
    let mut mode = if node.kind == EntryKind::Dir {
        0o755
    } else {
        0o644
    };
    if node.executable {
        mode |= 0o111;
    }
    if node.read_only {
        mode &= !0o222;
    }
    Meta {
        kind: match node.kind {
            EntryKind::Dir => FileKind::Dir,
            EntryKind::File => FileKind::File,
        },
        size: node.bytes.len() as u64,
        mtime_ns: node.mtime_ns,
        inode: node.inode,
        ctime_ns: node.ctime_ns,
        dev: if fs.on_other_fs(path) { 2 } else { 1 },
        mode,
    }
}

fn child(dir: Option<&RelPath>, name: &OsStr) -> std::io::Result<RelPath> {
    let name = name
        .to_str()
        .ok_or_else(|| std::io::Error::other("not UTF-8"))?;
    match dir {
        Some(dir) => dir.join(name),
        None => RelPath::new(name),
    }
    .map_err(std::io::Error::other)
}

/// `pread` of exactly `buf.len()` bytes of `bytes` at `offset`.
fn read_at(bytes: &[u8], buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    let start = usize::try_from(offset).map_err(std::io::Error::other)?;
    let end = start + buf.len();
    if end > bytes.len() {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    buf.copy_from_slice(&bytes[start..end]);
    Ok(())
}

/// A file opened for reading: its bytes as they were when it was opened.
pub struct SimFile {
    bytes: Vec<u8>,
    pos: usize,
}

impl Read for SimFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.bytes.len() - self.pos);
        buf[..n].copy_from_slice(&self.bytes[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl DiskFile for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        read_at(&self.bytes, buf, offset)
    }
}

/// A temp file, in memory until placed.
pub struct SimTemp {
    bytes: Vec<u8>,
    mtime_ms: i64,
    inode: u64,
}

impl std::io::Write for SimTemp {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl TempFile for SimTemp {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        read_at(&self.bytes, buf, offset)
    }

    fn inode(&self) -> std::io::Result<u64> {
        Ok(self.inode)
    }

    fn start_writeback(&self, _offset: u64, _len: u64) {}

    fn set_mtime_ms(&mut self, mtime_ms: i64) -> std::io::Result<()> {
        self.mtime_ms = mtime_ms;
        Ok(())
    }
}

/// A file opened for writing in place: it follows its inode, wherever that is linked (writes to
/// an inode no longer linked go nowhere).
pub struct SimInPlace {
    shared: Shared,
    idx: usize,
    inode: u64,
}

impl SimInPlace {
    /// The opened file's node, if it is still linked.
    fn with_node<T>(&self, f: impl FnOnce(&SimFs, &RelPath, &FsNode) -> T) -> std::io::Result<T> {
        let sim = self.shared.lock();
        let device = &sim.devices[self.idx];
        if device.crashed {
            return Err(gone());
        }
        let fs = &device.disk;
        let path = fs
            .path_of_inode(self.inode)
            .ok_or_else(|| std::io::Error::other("the opened file is no longer linked"))?;
        let node = fs.get(&path).expect("just found");
        Ok(f(fs, &path, node))
    }

    /// A change to the opened file (if still linked): `change` gets its node and the time; the
    /// device may crash right after.
    fn change(&self, what: &str, change: impl FnOnce(&mut FsNode, i64)) -> std::io::Result<()> {
        let mut guard = self.shared.lock();
        let sim = &mut *guard;
        if sim.devices[self.idx].crashed {
            return Err(gone());
        }
        let fs = &mut sim.devices[self.idx].disk;
        let now_ns = fs.timestamp(sim.now_ms * 1_000_000);
        let Some(path) = fs.path_of_inode(self.inode) else {
            return Ok(());
        };
        fs.events.push((path.clone(), false));
        change(fs.nodes.get_mut(&path).expect("just found"), now_ns);
        let line = format!("{} IN PLACE {what} {path}", sim.devices[self.idx].name);
        sim.log(line);
        sim.maybe_torn(self.idx, &format!("{what} {path} in place"));
        Ok(())
    }
}

impl InPlaceFile for SimInPlace {
    fn stat(&self) -> std::io::Result<(Meta, u64)> {
        self.with_node(|fs, path, node| (meta_of(fs, path, node), 1))
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.with_node(|_, _, node| read_at(&node.bytes, buf, offset))?
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(std::io::Error::other)?;
        // Sometimes the crash comes in the middle of the write: its bytes up to a page
        // boundary of the file reached the disk.
        let torn = {
            let mut sim = self.shared.lock();
            (sim.faults && sim.disk_rng.gen_bool(0.02)).then(|| {
                let end = start + sim.disk_rng.gen_range(0..buf.len().max(1));
                (end & !4095).saturating_sub(start)
            })
        };
        let len = torn.unwrap_or(buf.len()).min(buf.len());
        self.change("writing", |node, now_ns| {
            if node.bytes.len() < start + len {
                node.bytes.resize(start + len, 0);
            }
            node.bytes[start..start + len].copy_from_slice(&buf[..len]);
            node.mtime_ns = now_ns;
            node.ctime_ns = now_ns;
        })?;
        if torn.is_some() {
            self.shared
                .lock()
                .crash(self.idx, "in the middle of an in-place write");
            return Err(gone());
        }
        Ok(())
    }

    fn set_mtime_ms(&self, mtime_ms: i64) -> std::io::Result<()> {
        let mtime_ns = self.shared.lock().devices[self.idx]
            .disk
            .timestamp(mtime_ms.max(0) * 1_000_000);
        self.change("setting the mtime of", |node, now_ns| {
            node.mtime_ns = mtime_ns;
            node.ctime_ns = now_ns;
        })
    }

    fn sync(&self) -> std::io::Result<()> {
        // Every call is durable already.
        self.with_node(|_, _, _| ())
    }
}

impl SimDisk {
    /// A change to the disk: refused when the process is gone; `change` gets the disk, the
    /// time and the disks' dice (whether to reuse a freed inode); the device may crash right
    /// after (`what`).
    fn change<T>(
        &self,
        what: String,
        change: impl FnOnce(&mut SimFs, i64, &mut rand::rngs::StdRng) -> Result<T, FsError>,
    ) -> std::io::Result<T> {
        let mut guard = self.shared.lock();
        let sim = &mut *guard;
        if sim.devices[self.idx].crashed {
            return Err(gone());
        }
        let now_ns = sim.devices[self.idx].disk.timestamp(sim.now_ms * 1_000_000);
        let done =
            change(&mut sim.devices[self.idx].disk, now_ns, &mut sim.disk_rng).map_err(io_error)?;
        sim.maybe_torn(self.idx, &what);
        Ok(done)
    }
}

impl Disk for SimDisk {
    type File = SimFile;
    type Temp = SimTemp;
    type InPlace = SimInPlace;

    fn root(&self) -> &Path {
        &self.root
    }

    fn root_ok(&self) -> bool {
        !self.shared.lock().devices[self.idx].crashed
    }

    fn root_meta(&self) -> std::io::Result<Meta> {
        let sim = self.shared.lock();
        let device = &sim.devices[self.idx];
        if device.crashed {
            return Err(gone());
        }
        Ok(Meta {
            kind: FileKind::Dir,
            size: 0,
            mtime_ns: device.disk.root_mtime_ns,
            inode: 1,
            ctime_ns: 0,
            dev: if device.disk.root_mounted() { 3 } else { 1 },
            mode: 0o755,
        })
    }

    fn check_folder(&self) -> Result<(), FolderStopped> {
        let sim = self.shared.lock();
        let device = &sim.devices[self.idx];
        if device.disk.root_mounted() || device.crashed {
            return Err(FolderStopped {
                root: self.root.display().to_string(),
                why: "another filesystem is mounted over it".to_owned(),
            });
        }
        Ok(())
    }

    fn on_root_fs(&self, path: &RelPath) -> bool {
        // A disk mounted over the whole folder since the engine opened it is another
        // filesystem than the root's, everywhere beneath.
        let sim = self.shared.lock();
        let disk = &sim.devices[self.idx].disk;
        !disk.root_mounted() && disk.fs_of(path).is_none()
    }

    fn read_dir(&self, dir: Option<&RelPath>) -> std::io::Result<Vec<DirEntry>> {
        let sim = self.shared.lock();
        let device = &sim.devices[self.idx];
        if device.crashed {
            return Err(gone());
        }
        let fs = &device.disk;
        if let Some(dir) = dir {
            match fs.get(dir) {
                Some(node) if node.kind == EntryKind::Dir => {}
                Some(_) => return Err(std::io::Error::other("not a directory")),
                None => return Err(std::io::ErrorKind::NotFound.into()),
            }
        }
        Ok(fs
            .nodes
            .iter()
            .filter(|(path, _)| path.parent().as_ref() == dir)
            .map(|(path, node)| DirEntry {
                name: OsString::from(path.file_name()),
                is_dir: node.kind == EntryKind::Dir,
            })
            .collect())
    }

    fn stat_entry(&self, dir: Option<&RelPath>, name: &OsStr) -> std::io::Result<Meta> {
        let path = child(dir, name)?;
        let mut sim = self.shared.lock();
        if sim.devices[self.idx].crashed {
            return Err(gone());
        }
        sim.maybe_concurrent_edit(self.idx, EDIT_DURING_SCAN);
        let fs = &sim.devices[self.idx].disk;
        let node = fs.get(&path).ok_or(std::io::ErrorKind::NotFound)?;
        Ok(meta_of(fs, &path, node))
    }

    fn stat(&self, path: &RelPath) -> std::io::Result<Meta> {
        let mut sim = self.shared.lock();
        if sim.devices[self.idx].crashed {
            return Err(gone());
        }
        sim.maybe_concurrent_edit(self.idx, EDIT_AT_RECHECK);
        let fs = &sim.devices[self.idx].disk;
        let node = fs.get(path).ok_or(std::io::ErrorKind::NotFound)?;
        Ok(meta_of(fs, path, node))
    }

    fn dir_mtime_ns(&self, dir: Option<&RelPath>) -> std::io::Result<i64> {
        let sim = self.shared.lock();
        let device = &sim.devices[self.idx];
        if device.crashed {
            return Err(gone());
        }
        match dir {
            None => Ok(device.disk.root_mtime_ns),
            Some(dir) => device
                .disk
                .get(dir)
                .map(|node| node.mtime_ns)
                .ok_or_else(|| std::io::ErrorKind::NotFound.into()),
        }
    }

    fn open(&self, path: &RelPath) -> std::io::Result<SimFile> {
        let mut sim = self.shared.lock();
        if sim.devices[self.idx].crashed {
            return Err(gone());
        }
        sim.maybe_concurrent_edit(self.idx, EDIT_AT_RECHECK);
        match sim.devices[self.idx].disk.get(path) {
            Some(node) if node.kind == EntryKind::File => Ok(SimFile {
                bytes: node.bytes.clone(),
                pos: 0,
            }),
            Some(_) => Err(std::io::Error::other("is a directory")),
            None => Err(std::io::ErrorKind::NotFound.into()),
        }
    }

    fn ignore_file(&self) -> Option<String> {
        let sim = self.shared.lock();
        let path = RelPath::new(".syncignore").expect("valid");
        sim.devices[self.idx]
            .disk
            .get(&path)
            .filter(|node| node.kind == EntryKind::File)
            // As `read_to_string`: a file that is not UTF-8 gives no rules.
            .and_then(|node| String::from_utf8(node.bytes.clone()).ok())
    }

    fn create_temp(&self) -> std::io::Result<SimTemp> {
        let mut sim = self.shared.lock();
        if sim.devices[self.idx].crashed {
            return Err(gone());
        }
        let reuse = sim.disk_rng.gen_bool(0.5);
        let inode = sim.devices[self.idx].disk.alloc_inode(reuse);
        Ok(SimTemp {
            bytes: Vec::new(),
            mtime_ms: 0,
            inode,
        })
    }

    fn sync_temps(&self, _temps: &[&SimTemp]) -> std::io::Result<()> {
        if self.shared.lock().devices[self.idx].crashed {
            return Err(gone());
        }
        Ok(())
    }

    fn place(
        &self,
        temp: SimTemp,
        path: &RelPath,
        mode: u32,
        replace: bool,
    ) -> std::io::Result<Meta> {
        self.change(format!("placing {path}"), |fs, now_ns, rng| {
            let reuse = rng.gen_bool(0.5);
            if let Some(parent) = path.parent() {
                fs.create_dir_all(&parent, now_ns, reuse)?;
            }
            let node = FsNode {
                kind: EntryKind::File,
                bytes: temp.bytes,
                inode: temp.inode,
                mtime_ns: fs.timestamp(temp.mtime_ms * 1_000_000),
                ctime_ns: now_ns,
                executable: mode & 0o111 != 0,
                read_only: mode & 0o222 == 0,
            };
            fs.place(path, node, !replace, now_ns)?;
            let placed = fs.get(path).expect("just placed");
            Ok(meta_of(fs, path, placed))
        })
    }

    fn rename_noreplace(&self, from: &RelPath, to: &RelPath) -> std::io::Result<()> {
        self.change(format!("renaming {from} to {to}"), |fs, now_ns, rng| {
            let reuse = rng.gen_bool(0.5);
            if fs.get(from).is_none() {
                return Err(FsError::NotFound);
            }
            if let Some(parent) = to.parent() {
                fs.create_dir_all(&parent, now_ns, reuse)?;
            }
            fs.rename(from, to, true, now_ns)
        })
    }

    fn remove_file(&self, path: &RelPath) -> std::io::Result<()> {
        self.change(format!("deleting {path}"), |fs, now_ns, _| {
            fs.remove_file(path, now_ns)
        })
    }

    fn remove_dir(&self, path: &RelPath) -> std::io::Result<()> {
        self.change(format!("removing directory {path}"), |fs, now_ns, _| {
            fs.remove_dir(path, now_ns)
        })
    }

    fn create_dir_all(&self, path: &RelPath) -> std::io::Result<()> {
        self.change(format!("creating directory {path}"), |fs, now_ns, rng| {
            fs.create_dir_all(path, now_ns, rng.gen_bool(0.5))
        })
    }

    fn set_mode(&self, path: &RelPath, mode: u32) -> std::io::Result<()> {
        let mut sim = self.shared.lock();
        if sim.devices[self.idx].crashed {
            return Err(gone());
        }
        let now_ms = sim.now_ms;
        let disk = &mut sim.devices[self.idx].disk;
        let now_ns = disk.timestamp(now_ms * 1_000_000);
        disk.events.push((path.clone(), false));
        match disk.nodes.get_mut(path) {
            Some(node) if node.kind == EntryKind::File => {
                node.executable = mode & 0o111 != 0;
                node.read_only = mode & 0o222 == 0;
                // chmod changes the ctime.
                node.ctime_ns = now_ns;
                Ok(())
            }
            Some(_) => Err(std::io::Error::other("not a regular file")),
            None => Err(std::io::ErrorKind::NotFound.into()),
        }
    }

    fn sync_dirs(&self, _dirs: &[Option<RelPath>]) -> std::io::Result<()> {
        if self.shared.lock().devices[self.idx].crashed {
            return Err(gone());
        }
        Ok(())
    }

    fn case_insensitive(&self) -> bool {
        false
    }

    fn keeps_modes(&self) -> bool {
        true
    }

    fn now_ns(&self) -> i64 {
        self.shared.lock().now_ms * 1_000_000
    }

    fn available_bytes(&self) -> std::io::Result<u64> {
        Ok(1 << 40)
    }

    fn open_in_place(&self, path: &RelPath) -> std::io::Result<SimInPlace> {
        let mut sim = self.shared.lock();
        if sim.devices[self.idx].crashed {
            return Err(gone());
        }
        sim.maybe_concurrent_edit(self.idx, EDIT_AT_RECHECK);
        match sim.devices[self.idx].disk.get(path) {
            Some(node) if node.kind == EntryKind::File && !node.read_only => Ok(SimInPlace {
                shared: self.shared.clone(),
                idx: self.idx,
                inode: node.inode,
            }),
            Some(node) if node.kind == EntryKind::File => {
                Err(std::io::ErrorKind::PermissionDenied.into())
            }
            Some(_) => Err(std::io::Error::other("is a directory")),
            None => Err(std::io::ErrorKind::NotFound.into()),
        }
    }

    fn write_journal(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let mut guard = self.shared.lock();
        let sim = &mut *guard;
        if sim.devices[self.idx].crashed {
            return Err(gone());
        }
        // Sometimes the crash comes while the journal is written: it is left torn.
        if sim.faults && sim.disk_rng.gen_bool(0.02) {
            let cut = sim.disk_rng.gen_range(0..bytes.len().max(1));
            let journals = &mut sim.devices[self.idx].disk.journals;
            journals.insert(name.to_owned(), bytes[..cut].to_vec());
            sim.crash(self.idx, "while writing an in-place journal");
            return Err(gone());
        }
        let journals = &mut sim.devices[self.idx].disk.journals;
        journals.insert(name.to_owned(), bytes.to_vec());
        sim.maybe_torn(self.idx, "writing an in-place journal");
        Ok(())
    }

    fn journals(&self) -> std::io::Result<Vec<(String, Vec<u8>)>> {
        let sim = self.shared.lock();
        let device = &sim.devices[self.idx];
        if device.crashed {
            return Err(gone());
        }
        let journals: Vec<(String, Vec<u8>)> = device
            .disk
            .journals
            .iter()
            .map(|(name, bytes)| (name.clone(), bytes.clone()))
            .collect();
        if !journals.is_empty() {
            let line = format!("{} finds {} IN-PLACE JOURNALS", device.name, journals.len());
            drop(sim);
            self.shared.lock().log(line);
        }
        Ok(journals)
    }

    fn remove_journal(&self, name: &str) -> std::io::Result<()> {
        self.change(format!("removing in-place journal {name}"), |fs, _, _| {
            fs.journals.remove(name);
            Ok(())
        })
    }
}
