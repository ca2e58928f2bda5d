//! [`Disk`] on the real filesystem: `std::fs`, `renameat2`, `fsync`/`syncfs`, `statvfs`,
//! `pwrite` for in-place writes.

use super::{DirEntry, Disk, DiskFile, FileKind, InPlaceFile, Meta, TempFile};
use crate::folder::FolderId;
use crate::fsutil::safe_join;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use syncstore_durable::Writeback;
use syncstore_proto::RelPath;

/// The folder at `root` on the real filesystem; temp files go to `tmp_dir`, in-place journals
/// to `journal/` beside it. A clone is the same folder, with the same writeback thread.
#[derive(Clone)]
pub struct OsDisk {
    root: PathBuf,
    tmp_dir: PathBuf,
    journal_dir: PathBuf,
    folder: FolderId,
    writeback: Arc<Writeback>,
    /// `SYNCSTORE_TEST_STOP_IN_PLACE` was set: the first in-place write stops half-way, for
    /// the end-to-end test that kills the daemon there.
    stop_in_place: bool,
    /// The root's filesystem does not tell names apart by case.
    case_insensitive: bool,
    /// The root's filesystem keeps permission bits.
    keeps_modes: bool,
}

impl OsDisk {
    /// The folder at `root` as opened (`folder`), with its temp files in `tmp_dir` and its
    /// in-place journals in `tmp_dir`'s sibling `journal/` (both in `.syncstore/`).
    ///
    /// # Errors
    /// When the writeback thread cannot be started.
    pub fn new(root: &Path, tmp_dir: PathBuf, folder: FolderId) -> std::io::Result<OsDisk> {
        let journal_dir = tmp_dir.with_file_name("journal");
        Ok(OsDisk {
            root: root.to_path_buf(),
            tmp_dir,
            journal_dir,
            folder,
            writeback: Arc::new(Writeback::new()?),
            stop_in_place: std::env::var_os("SYNCSTORE_TEST_STOP_IN_PLACE").is_some(),
            case_insensitive: case_insensitive(root),
            keeps_modes: keeps_modes(root),
        })
    }

    /// The folder's identity as opened.
    pub fn folder(&self) -> &FolderId {
        &self.folder
    }

    fn full(&self, path: &RelPath) -> std::io::Result<PathBuf> {
        safe_join(&self.root, path)
            .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidInput, err.to_string()))
    }

    fn dir_full(&self, dir: Option<&RelPath>) -> std::io::Result<PathBuf> {
        match dir {
            Some(dir) => self.full(dir),
            None => Ok(self.root.clone()),
        }
    }
}

/// The [`Meta`] of `meta`.
pub fn meta_of(meta: &std::fs::Metadata) -> Meta {
    let file_type = meta.file_type();
    let kind = if file_type.is_symlink() {
        FileKind::Symlink
    } else if file_type.is_dir() {
        FileKind::Dir
    } else if file_type.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    };
    Meta {
        kind,
        size: meta.len(),
        mtime_ns: crate::fsutil::mtime_ns(meta),
        inode: meta.ino(),
        ctime_ns: crate::fsutil::ctime_ns(meta),
        dev: meta.dev(),
        mode: meta.permissions().mode() & 0o7777,
    }
}

impl DiskFile for std::fs::File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

/// A temp file in `.syncstore/tmp/`.
pub struct OsTemp {
    file: tempfile::NamedTempFile,
    writeback: Arc<Writeback>,
}

impl std::io::Write for OsTemp {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl TempFile for OsTemp {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(self.file.as_file(), buf, offset)
    }

    fn inode(&self) -> std::io::Result<u64> {
        Ok(self.file.as_file().metadata()?.ino())
    }

    fn start_writeback(&self, offset: u64, len: u64) {
        if let Ok(file) = self.file.as_file().try_clone() {
            self.writeback.start(file, offset, len);
        }
    }

    fn set_mtime_ms(&mut self, mtime_ms: i64) -> std::io::Result<()> {
        let mtime =
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(mtime_ms.max(0) as u64);
        self.file.as_file().set_modified(mtime)
    }
}

/// A synced file opened for writing in place.
pub struct OsInPlace {
    file: std::fs::File,
    path: RelPath,
    stop: bool,
}

impl InPlaceFile for OsInPlace {
    fn stat(&self) -> std::io::Result<(Meta, u64)> {
        let meta = self.file.metadata()?;
        Ok((meta_of(&meta), meta.nlink()))
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(&self.file, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        if self.stop {
            // The test's crash point: the journal is durable, part of a range is written (up
            // to a page boundary, as a killed write stops).
            let half = ((offset + buf.len() as u64 / 2) & !4095).saturating_sub(offset) as usize;
            FileExt::write_all_at(&self.file, &buf[..half], offset)?;
            self.file.sync_data()?;
            tracing::warn!(
                path = %self.path,
                "test: stopped in the middle of an in-place write (SYNCSTORE_TEST_STOP_IN_PLACE)"
            );
            loop {
                std::thread::park();
            }
        }
        FileExt::write_all_at(&self.file, buf, offset)
    }

    fn set_mtime_ms(&self, mtime_ms: i64) -> std::io::Result<()> {
        let mtime =
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(mtime_ms.max(0) as u64);
        self.file.set_modified(mtime)
    }

    fn sync(&self) -> std::io::Result<()> {
        self.file.sync_all()
    }
}

impl OsDisk {
    fn journal_path(&self, name: &str) -> std::io::Result<PathBuf> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.') {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{name:?} is no journal name"),
            ));
        }
        Ok(self.journal_dir.join(name))
    }
}

/// Whether the filesystem of `root` finds a `.SYNCSTORE` that its listing does not hold: the
/// folder's `.syncstore` by another case, so it does not tell names apart by case. (Inode
/// numbers cannot tell: FUSE gives each name looked up its own.) Reads only (`status` asks too).
fn case_insensitive(root: &Path) -> bool {
    std::fs::symlink_metadata(root.join(".SYNCSTORE")).is_ok()
        && std::fs::read_dir(root).is_ok_and(|mut entries| {
            !entries.any(|entry| entry.is_ok_and(|entry| entry.file_name() == ".SYNCSTORE"))
        })
}

/// Whether the filesystem of `root` kept the folder's `.syncstore` private: opening a folder
/// narrows it to 0700 ([`crate::config::create_private_dir`]), which FAT and exFAT, showing
/// everything as 0777, cannot keep.
fn keeps_modes(root: &Path) -> bool {
    std::fs::metadata(root.join(".syncstore")).is_ok_and(|meta| meta.mode() & 0o077 == 0)
}

impl Disk for OsDisk {
    type File = std::fs::File;
    type Temp = OsTemp;
    type InPlace = OsInPlace;

    fn root(&self) -> &Path {
        &self.root
    }

    fn root_ok(&self) -> bool {
        std::fs::metadata(&self.root).is_ok_and(|meta| meta.is_dir())
            && std::fs::read_dir(&self.root).is_ok()
    }

    fn root_meta(&self) -> std::io::Result<Meta> {
        std::fs::metadata(&self.root).map(|meta| meta_of(&meta))
    }

    fn check_folder(&self) -> Result<(), crate::folder::FolderStopped> {
        self.folder.check()
    }

    fn on_root_fs(&self, path: &RelPath) -> bool {
        self.full(path)
            .is_ok_and(|full| self.folder.on_root_fs(&full))
    }

    fn read_dir(&self, dir: Option<&RelPath>) -> std::io::Result<Vec<DirEntry>> {
        let full = self.dir_full(dir)?;
        let mut out = Vec::new();
        for entry in std::fs::read_dir(full)?.flatten() {
            out.push(DirEntry {
                is_dir: entry.file_type().is_ok_and(|t| t.is_dir()),
                name: entry.file_name(),
            });
        }
        Ok(out)
    }

    fn stat_entry(&self, dir: Option<&RelPath>, name: &std::ffi::OsStr) -> std::io::Result<Meta> {
        let full = self.dir_full(dir)?.join(name);
        std::fs::symlink_metadata(full).map(|meta| meta_of(&meta))
    }

    fn stat(&self, path: &RelPath) -> std::io::Result<Meta> {
        std::fs::symlink_metadata(self.root.join(path.as_str())).map(|meta| meta_of(&meta))
    }

    fn dir_mtime_ns(&self, dir: Option<&RelPath>) -> std::io::Result<i64> {
        let full = match dir {
            Some(dir) => self.root.join(dir.as_str()),
            None => self.root.clone(),
        };
        std::fs::symlink_metadata(full).map(|meta| crate::fsutil::mtime_ns(&meta))
    }

    fn open(&self, path: &RelPath) -> std::io::Result<std::fs::File> {
        std::fs::File::open(self.full(path)?)
    }

    fn ignore_file(&self) -> Option<String> {
        std::fs::read_to_string(self.root.join(".syncignore")).ok()
    }

    fn create_temp(&self) -> std::io::Result<OsTemp> {
        Ok(OsTemp {
            file: tempfile::NamedTempFile::new_in(&self.tmp_dir)?,
            writeback: Arc::clone(&self.writeback),
        })
    }

    fn sync_temps(&self, temps: &[&OsTemp]) -> std::io::Result<()> {
        let paths: Vec<&Path> = temps.iter().map(|t| t.file.path()).collect();
        crate::fsutil::make_durable(&self.tmp_dir, &paths, &[])
            .map_err(|err| std::io::Error::other(err.to_string()))
    }

    fn place(
        &self,
        temp: OsTemp,
        path: &RelPath,
        mode: u32,
        replace: bool,
    ) -> std::io::Result<Meta> {
        let full = self.full(path)?;
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let (file, temp) = temp.file.into_parts();
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode))?;
        if replace {
            std::fs::rename(&temp, &full)?;
        } else {
            crate::fsutil::rename_noreplace(&temp, &full)?;
        }
        // Renamed: nothing left to remove.
        let _ = temp.keep();
        file.metadata().map(|meta| meta_of(&meta))
    }

    fn rename_noreplace(&self, from: &RelPath, to: &RelPath) -> std::io::Result<()> {
        let from_full = self.full(from)?;
        let to_full = self.full(to)?;
        if let Some(parent) = to_full.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match crate::fsutil::rename_noreplace(&from_full, &to_full) {
            // A rename that changes only the case, on a folder that does not tell names apart by
            // case: what is "already" at `to` is `from` itself. Its directory holds no entry
            // named `to` exactly, so renaming replaces nothing.
            Err(err)
                if err.kind() == std::io::ErrorKind::AlreadyExists
                    && self.case_insensitive
                    && from.parent() == to.parent()
                    && from.as_str() != to.as_str()
                    && from.as_str().to_lowercase() == to.as_str().to_lowercase()
                    && !std::fs::read_dir(to_full.parent().unwrap_or(&self.root))?
                        .any(|entry| entry.is_ok_and(|e| e.file_name() == to.file_name())) =>
            {
                std::fs::rename(&from_full, &to_full)
            }
            result => result,
        }
    }

    fn remove_file(&self, path: &RelPath) -> std::io::Result<()> {
        std::fs::remove_file(self.full(path)?)
    }

    fn remove_dir(&self, path: &RelPath) -> std::io::Result<()> {
        std::fs::remove_dir(self.full(path)?)
    }

    fn create_dir_all(&self, path: &RelPath) -> std::io::Result<()> {
        let full = self.full(path)?;
        if crate::fsutil::is_symlink(&full) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is a symlink", full.display()),
            ));
        }
        std::fs::create_dir_all(full)
    }

    fn set_mode(&self, path: &RelPath, mode: u32) -> std::io::Result<()> {
        let full = self.full(path)?;
        let meta = std::fs::symlink_metadata(&full)?;
        if !meta.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", full.display()),
            ));
        }
        std::fs::set_permissions(full, std::fs::Permissions::from_mode(mode))
    }

    fn sync_dirs(&self, dirs: &[Option<RelPath>]) -> std::io::Result<()> {
        let fulls: Vec<PathBuf> = dirs
            .iter()
            .map(|dir| match dir {
                Some(dir) => self.root.join(dir.as_str()),
                None => self.root.clone(),
            })
            .collect();
        let refs: Vec<&Path> = fulls.iter().map(PathBuf::as_path).collect();
        crate::fsutil::make_durable(&self.root, &[], &refs)
            .map_err(|err| std::io::Error::other(err.to_string()))
    }

    fn case_insensitive(&self) -> bool {
        self.case_insensitive
    }

    fn keeps_modes(&self) -> bool {
        self.keeps_modes
    }

    fn now_ns(&self) -> i64 {
        // The kernel stamps files from the same real-time clock.
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
            })
    }

    fn available_bytes(&self) -> std::io::Result<u64> {
        crate::fsutil::available_bytes(&self.tmp_dir)
    }

    fn open_in_place(&self, path: &RelPath) -> std::io::Result<OsInPlace> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.full(path)?)?;
        if !file.metadata()?.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{path} is not a regular file"),
            ));
        }
        Ok(OsInPlace {
            file,
            path: path.clone(),
            stop: self.stop_in_place,
        })
    }

    fn write_journal(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        let path = self.journal_path(name)?;
        if !self.journal_dir.is_dir() {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&self.journal_dir)?;
            if let Some(parent) = self.journal_dir.parent() {
                std::fs::File::open(parent)?.sync_all()?;
            }
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::File::open(&self.journal_dir)?.sync_all()
    }

    fn journals(&self) -> std::io::Result<Vec<(String, Vec<u8>)>> {
        let entries = match std::fs::read_dir(&self.journal_dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !entry.file_type()?.is_file() {
                continue;
            }
            out.push((name, std::fs::read(entry.path())?));
        }
        out.sort();
        Ok(out)
    }

    fn remove_journal(&self, name: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.journal_path(name)?) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(err),
        }
        std::fs::File::open(&self.journal_dir)?.sync_all()
    }
}
