//! [`Disk`] on the real filesystem: `std::fs`, `renameat2`, `fsync`/`syncfs`, `statvfs`.

use super::{DirEntry, Disk, DiskFile, FileKind, Meta, TempFile};
use crate::folder::FolderId;
use crate::fsutil::safe_join;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use syncstore_durable::Writeback;
use syncstore_proto::RelPath;

/// The folder at `root` on the real filesystem; temp files go to `tmp_dir`. A clone is the
/// same folder, with the same writeback thread.
#[derive(Clone)]
pub struct OsDisk {
    root: PathBuf,
    tmp_dir: PathBuf,
    folder: FolderId,
    writeback: Arc<Writeback>,
}

impl OsDisk {
    /// The folder at `root` as opened (`folder`), with its temp files in `tmp_dir`.
    ///
    /// # Errors
    /// When the writeback thread cannot be started.
    pub fn new(root: &Path, tmp_dir: PathBuf, folder: FolderId) -> std::io::Result<OsDisk> {
        Ok(OsDisk {
            root: root.to_path_buf(),
            tmp_dir,
            folder,
            writeback: Arc::new(Writeback::new()?),
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

impl Disk for OsDisk {
    type File = std::fs::File;
    type Temp = OsTemp;

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
        crate::fsutil::rename_noreplace(&from_full, &to_full)
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

    fn available_bytes(&self) -> std::io::Result<u64> {
        crate::fsutil::available_bytes(&self.tmp_dir)
    }
}
