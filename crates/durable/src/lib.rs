//! Making writes durable, shared by the server's chunk store and the client: fsync of a
//! directory, `syncfs(2)` of a whole filesystem, and [`Writeback`], which starts the disk on
//! written data early so the sync before a rename or a commit finds little left to wait for.
//!
//! Errors are plain `io::Error`s; callers add which file they were making durable.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::mpsc;

/// fsyncs a directory, so a creation or rename inside it survives power loss.
///
/// # Errors
/// Any IO error opening or syncing it.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `syncfs(2)`: makes every write and rename on the filesystem holding `path` durable at once.
/// One call replaces an fsync per file and per directory after a batch, but it also waits for
/// unrelated dirty data on that filesystem.
///
/// # Errors
/// Any IO error opening `path` or syncing.
pub fn sync_filesystem(path: &Path) -> io::Result<()> {
    let dir = File::open(path)?;
    // SAFETY: the descriptor is open for the duration of the call.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Most ranges waiting for the writeback thread; more are dropped (starting writeback early
/// is an optimisation, never a guarantee).
const QUEUE: usize = 1024;

/// A thread that asks the kernel to start writing ranges of files to disk
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`) without anyone waiting for it.
///
/// Submitting writes can block while the disk's queue is full; doing it here keeps that wait
/// off the threads that receive and write the data, and the later fsync or `syncfs` (which is
/// what makes data durable) finds most of it written already.
pub struct Writeback {
    sender: mpsc::SyncSender<(File, u64, u64)>,
}

impl Writeback {
    /// Starts the thread; it ends when the `Writeback` is dropped.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn new() -> io::Result<Writeback> {
        let (sender, receiver) = mpsc::sync_channel::<(File, u64, u64)>(QUEUE);
        std::thread::Builder::new()
            .name("writeback".into())
            .spawn(move || {
                for (file, offset, len) in receiver {
                    // SAFETY: the descriptor is open while `file` lives. Offsets and lengths
                    // come from writes that fit in the file, so they fit in off64_t.
                    unsafe {
                        libc::sync_file_range(
                            file.as_raw_fd(),
                            offset as libc::off64_t,
                            len as libc::off64_t,
                            libc::SYNC_FILE_RANGE_WRITE,
                        );
                    }
                }
            })?;
        Ok(Writeback { sender })
    }

    /// Asks for `len` bytes of `file` from `offset` to be written out soon (`len` 0: to the
    /// end). Never blocks; `file` is closed once that is asked.
    pub fn start(&self, file: File, offset: u64, len: u64) {
        let _ = self.sender.try_send((file, offset, len));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn syncs_and_writeback_succeed_on_a_real_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut file = File::create(&path).unwrap();
        file.write_all(&[7u8; 100_000]).unwrap();
        let writeback = Writeback::new().unwrap();
        writeback.start(file.try_clone().unwrap(), 0, 0);
        drop(writeback);
        sync_dir(dir.path()).unwrap();
        sync_filesystem(dir.path()).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 100_000]);
        assert!(sync_dir(&dir.path().join("missing")).is_err());
    }
}
