//! The folder's identity: what tells the daemon that the directory at its path is still the
//! folder it syncs (THREE-TREE rows 35 and 36).
//!
//! A path is not enough: a disk mounted over the folder (a freshly formatted one holds only
//! `lost+found`), a folder moved away and replaced by an empty one, or an unplugged disk leave
//! a directory at the same path whose near-empty contents would read as the user deleting
//! everything. The folder is known by its root's device and inode and by its marker, the
//! `.syncstore/state.sqlite` the engine has open: when either changes, the folder is
//! [`FolderStopped`] and nothing is scanned or planned until it is back.
//!
//! Invariant: every pass checks [`FolderId::check`] before it scans; a directory inside the
//! folder on another filesystem than the root is never descended into (the scan reports it
//! and the planner leaves everything beneath it alone).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A device and inode number: what a path resolved to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    /// The id of what `path` is now (symlinks are not followed).
    ///
    /// # Errors
    /// When `path` cannot be stat'ed.
    pub fn of(path: &Path) -> std::io::Result<FileId> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// As saved in state: `DEV:INO`.
    pub fn to_text(self) -> String {
        format!("{}:{}", self.dev, self.ino)
    }

    /// The inverse of [`FileId::to_text`].
    pub fn from_text(text: &str) -> Option<FileId> {
        let (dev, ino) = text.split_once(':')?;
        Some(FileId {
            dev: dev.parse().ok()?,
            ino: ino.parse().ok()?,
        })
    }
}

/// The folder as the engine opened it.
#[derive(Clone, Debug)]
pub struct FolderId {
    root: PathBuf,
    /// The root directory when the engine opened it.
    pub root_id: FileId,
    /// The state database the engine has open.
    marker: PathBuf,
    /// `None`: a read-only look at a folder without state, which has no marker to check.
    marker_id: Option<FileId>,
}

/// The folder at the path is not the one being synced; nothing is scanned or planned.
#[derive(Debug, thiserror::Error)]
#[error(
    "{root} is stopped: {why}. Nothing was scanned or synced, and nothing will be deleted on \
     its account. If a disk was mounted over it, unmount it; if it was moved, move it back. \
     Syncing resumes by itself once the folder is back (a running daemon checks again at every \
     pass); to sync the directory now at that path as a new folder, stop syncstore and start it \
     again, which re-adopts it as on a first sync"
)]
pub struct FolderStopped {
    pub root: String,
    pub why: String,
}

impl FolderId {
    /// Records the folder as it is now, with its open state database `marker`.
    ///
    /// # Errors
    /// When the root or the marker cannot be stat'ed.
    pub fn open(root: &Path, marker: &Path) -> std::io::Result<FolderId> {
        Ok(FolderId {
            root: root.to_path_buf(),
            root_id: FileId::of(root)?,
            marker: marker.to_path_buf(),
            marker_id: Some(FileId::of(marker)?),
        })
    }

    /// Records the folder as it is now, with no state database to check.
    ///
    /// # Errors
    /// When the root cannot be stat'ed.
    pub fn open_without_marker(root: &Path) -> std::io::Result<FolderId> {
        Ok(FolderId {
            root: root.to_path_buf(),
            root_id: FileId::of(root)?,
            marker: PathBuf::new(),
            marker_id: None,
        })
    }

    /// Whether `full` (a path inside the folder, existing or not) lies on the root's filesystem:
    /// its nearest existing ancestor does. A disk mounted over a subfolder after a plan was made
    /// must not receive that plan's downloads or directories, which base would then record.
    pub fn on_root_fs(&self, full: &Path) -> bool {
        let mut at = full.parent();
        while let Some(dir) = at {
            if let Ok(meta) = std::fs::symlink_metadata(dir) {
                return meta.dev() == self.root_id.dev;
            }
            at = dir.parent();
        }
        false
    }

    /// Whether the directory at the root's path is still the folder that was opened.
    ///
    /// # Errors
    /// [`FolderStopped`] saying what changed.
    pub fn check(&self) -> Result<(), FolderStopped> {
        let stopped = |why: String| FolderStopped {
            root: self.root.display().to_string(),
            why,
        };
        match FileId::of(&self.root) {
            Ok(now) if now == self.root_id => {}
            Ok(now) if now.dev != self.root_id.dev => {
                return Err(stopped(
                    "another filesystem is mounted over it (or the disk it was on is gone)"
                        .to_owned(),
                ))
            }
            Ok(_) => {
                return Err(stopped(
                    "the directory at its path is not the one being synced (it was moved away \
                     and replaced)"
                        .to_owned(),
                ))
            }
            Err(err) => return Err(stopped(format!("it cannot be read ({err})"))),
        }
        let Some(marker_id) = self.marker_id else {
            return Ok(());
        };
        match FileId::of(&self.marker) {
            Ok(now) if now == marker_id => Ok(()),
            Ok(_) => Err(stopped(format!(
                "its marker {} is not the one this daemon opened",
                self.marker.display()
            ))),
            Err(_) => Err(stopped(format!(
                "its marker {} is gone",
                self.marker.display()
            ))),
        }
    }
}

/// Held by the one process that syncs a folder (an exclusive `flock` on
/// `.syncstore/daemon.lock`, which holds its pid): a second `sync` on the same folder is
/// refused instead of racing the first over the same files and state. Released when dropped,
/// or when the process dies.
#[derive(Debug)]
pub struct FolderLock {
    _file: std::fs::File,
}

/// Another process syncs the folder already.
#[derive(Debug, thiserror::Error)]
#[error("{root} is already being synced by another syncstore process (pid {pid}); stop it first, or use `syncstore status` to look")]
pub struct AlreadySyncing {
    pub root: String,
    pub pid: String,
}

impl FolderLock {
    /// Takes the folder's lock, in its state directory `meta_dir`.
    ///
    /// # Errors
    /// [`AlreadySyncing`] naming the pid of the holder; IO errors.
    pub fn acquire(root: &Path, meta_dir: &Path) -> Result<FolderLock, crate::Error> {
        use crate::Error;
        use fs4::FileExt;
        use std::io::{Read, Seek, Write};
        use std::os::unix::fs::OpenOptionsExt;
        let path = meta_dir.join("daemon.lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|err| Error::io(format!("could not open {}", path.display()), err))?;
        match FileExt::try_lock(&file) {
            Ok(()) => {
                let wrote = file
                    .set_len(0)
                    .and_then(|()| file.seek(std::io::SeekFrom::Start(0)).map(|_| ()))
                    .and_then(|()| write!(file, "{}", std::process::id()));
                wrote
                    .map_err(|err| Error::io(format!("could not write {}", path.display()), err))?;
                Ok(FolderLock { _file: file })
            }
            Err(fs4::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                Err(AlreadySyncing {
                    root: root.display().to_string(),
                    pid: if pid.trim().is_empty() {
                        "unknown".to_owned()
                    } else {
                        pid.trim().to_owned()
                    },
                }
                .into())
            }
            Err(fs4::TryLockError::Error(err)) => {
                Err(Error::io(format!("could not lock {}", path.display()), err))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder() -> (tempfile::TempDir, PathBuf, FolderId) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("Sync");
        std::fs::create_dir_all(root.join(".syncstore")).unwrap();
        let marker = root.join(".syncstore/state.sqlite");
        std::fs::write(&marker, b"state").unwrap();
        let id = FolderId::open(&root, &marker).unwrap();
        (tmp, root, id)
    }

    #[test]
    fn row_36_a_folder_replaced_or_without_its_marker_is_stopped() {
        let (tmp, root, id) = folder();
        assert!(id.check().is_ok());
        // Moved away and replaced by an empty directory at the same path.
        std::fs::rename(&root, tmp.path().join("moved")).unwrap();
        std::fs::create_dir(&root).unwrap();
        let err = id.check().unwrap_err();
        assert!(err.why.contains("moved away and replaced"), "{err}");
        // Moved back: syncing resumes.
        std::fs::remove_dir(&root).unwrap();
        std::fs::rename(tmp.path().join("moved"), &root).unwrap();
        assert!(id.check().is_ok());
        // The marker gone.
        std::fs::remove_file(root.join(".syncstore/state.sqlite")).unwrap();
        let err = id.check().unwrap_err();
        assert!(err.why.contains("is gone"), "{err}");
        assert!(err.to_string().contains("Nothing was scanned"), "{err}");
    }

    #[test]
    fn a_folder_is_synced_by_one_process_at_a_time() {
        let (_tmp, root, _id) = folder();
        let meta_dir = root.join(".syncstore");
        let held = FolderLock::acquire(&root, &meta_dir).unwrap();
        let err = FolderLock::acquire(&root, &meta_dir).unwrap_err();
        let crate::Error::AlreadySyncing(refused) = err else {
            panic!("not AlreadySyncing: {err}");
        };
        assert_eq!(refused.pid, std::process::id().to_string());
        drop(held);
        FolderLock::acquire(&root, &meta_dir).unwrap();
    }

    #[test]
    fn file_ids_round_trip_as_text() {
        let id = FileId { dev: 2049, ino: 77 };
        assert_eq!(FileId::from_text(&id.to_text()), Some(id));
        assert_eq!(FileId::from_text("nonsense"), None);
    }
}
