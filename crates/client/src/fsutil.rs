//! Filesystem helpers: atomic writes, directory fsync, and paths that cannot escape the folder.

use crate::Error;
use std::io::Write;
use std::path::{Path, PathBuf};
use syncstore_proto::RelPath;

/// Writes `bytes` to `path` atomically: temp file in the same directory, fsync, rename, fsync dir.
///
/// # Errors
/// On any IO error; the target is then untouched.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .ok_or_else(|| Error::Setup(format!("{} has no parent", path.display())))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|err| {
        Error::io(
            format!("could not create a temp file in {}", dir.display()),
            err,
        )
    })?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|err| Error::io("could not set permissions", err))?;
    tmp.write_all(bytes)
        .map_err(|err| Error::io("could not write temp file", err))?;
    tmp.as_file()
        .sync_all()
        .map_err(|err| Error::io("could not fsync temp file", err))?;
    tmp.persist(path).map_err(|err| {
        Error::io(
            format!("could not rename into {}", path.display()),
            err.error,
        )
    })?;
    fsync_dir(dir)
}

/// fsyncs a directory so that a rename inside it survives a crash.
///
/// # Errors
/// On any IO error.
pub fn fsync_dir(dir: &Path) -> Result<(), Error> {
    syncstore_durable::sync_dir(dir)
        .map_err(|err| Error::io(format!("could not fsync directory {}", dir.display()), err))
}

/// `syncfs(2)`: makes every write and rename on the filesystem holding `path` durable at once.
/// One call replaces an fsync per file and per directory when a batch of files was written.
///
/// # Errors
/// On any IO error.
pub fn sync_filesystem(path: &Path) -> Result<(), Error> {
    syncstore_durable::sync_filesystem(path).map_err(|err| {
        Error::io(
            format!("could not sync the filesystem of {}", path.display()),
            err,
        )
    })
}

/// Batches of at most this many files are made durable file by file (fsync of each file and
/// directory); larger ones with [`sync_filesystem`], which also waits for unrelated dirty data
/// on the filesystem and so would set the latency of a one-file change.
pub const SMALL_BATCH: usize = 8;

/// Makes `files` (already written) and the directories `dirs` durable: one fsync each for a
/// small batch, one filesystem sync for a large one.
///
/// # Errors
/// On any IO error.
pub fn make_durable(root: &Path, files: &[&Path], dirs: &[&Path]) -> Result<(), Error> {
    if files.len() + dirs.len() > 2 * SMALL_BATCH {
        return sync_filesystem(root);
    }
    for file in files {
        std::fs::File::open(file)
            .and_then(|f| f.sync_all())
            .map_err(|err| Error::io(format!("could not fsync {}", file.display()), err))?;
    }
    let mut seen = std::collections::HashSet::new();
    for dir in dirs {
        if seen.insert(*dir) {
            fsync_dir(dir)?;
        }
    }
    Ok(())
}

/// `root/path`, after checking that no existing ancestor of it inside `root` is a symlink or a
/// non-directory: a symlink planted in the folder can never redirect a write outside it.
///
/// # Errors
/// When an ancestor is a symlink or a file.
pub fn safe_join(root: &Path, path: &RelPath) -> Result<PathBuf, Error> {
    let mut current = root.to_path_buf();
    let components: Vec<&str> = path.components().collect();
    for component in &components[..components.len() - 1] {
        current.push(component);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(Error::Setup(format!(
                    "refusing to write through the symlink {}",
                    current.display()
                )))
            }
            Ok(meta) if !meta.is_dir() => {
                return Err(Error::Setup(format!(
                    "{} is not a directory",
                    current.display()
                )))
            }
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(Error::io(
                    format!("could not stat {}", current.display()),
                    err,
                ))
            }
        }
    }
    current.push(components[components.len() - 1]);
    Ok(current)
}

/// Whether the final component of `full` is a symlink (never followed, never replaced).
pub fn is_symlink(full: &Path) -> bool {
    std::fs::symlink_metadata(full)
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false)
}

/// Renames `from` to `to` only if `to` does not exist (renameat2 RENAME_NOREPLACE).
///
/// # Errors
/// `AlreadyExists` when `to` exists, or any other IO error.
pub fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let from_c = CString::new(from.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let to_c = CString::new(to.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: both are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from_c.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EINVAL) || err.raw_os_error() == Some(libc::ENOSYS) {
        // The filesystem does not support RENAME_NOREPLACE: check, then rename.
        if std::fs::symlink_metadata(to).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "target exists",
            ));
        }
        return std::fs::rename(from, to);
    }
    Err(err)
}

/// Whether any executable bit of `meta`'s mode is set: the file's synced executable bit.
pub fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

/// `mode` (permission bits) with the executable bits `0o111` all set or all cleared; every other
/// bit is kept. Only the executable bit is synced, so `0o644` becomes `0o755` and back.
pub fn with_executable(mode: u32, executable: bool) -> u32 {
    if executable {
        mode | 0o111
    } else {
        mode & !0o111
    }
}

/// Modification time of `meta` in nanoseconds since the Unix epoch.
pub fn ctime_ns(meta: &std::fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    meta.ctime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.ctime_nsec())
}

/// Modification time in nanoseconds since the Unix epoch.
pub fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

/// Bytes an unprivileged process may still write on the filesystem holding `path`
/// (`statvfs`: available blocks times the fragment size).
///
/// # Errors
/// When `statvfs` fails.
pub fn available_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: statvfs only writes the struct we pass, and reads a NUL-terminated path.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// Whether `err` says the disk (or the user's quota) is full.
pub fn is_out_of_space(err: &std::io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}
