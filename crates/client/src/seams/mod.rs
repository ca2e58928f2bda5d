//! The seams: the only ways the engine touches the world.
//!
//! [`Disk`] is the synced folder (stat, list, read at an offset, durable temp writes, renames,
//! removals, directory syncs, in-place writes and their journals); [`Server`] is the API (whoami, tree, changes, missing, upload,
//! download, ops); [`Clock`] is the time; [`BaseStore`] is where base and the folder's other
//! state are committed. [`World`] names one set of them. Production wires [`Production`]
//! (`std::fs` through [`OsDisk`], the HTTP client, the system clock, the SQLite state); the
//! simulation (`crates/sim`) wires in-memory ones, and drives the very engine this crate ships.
//!
//! Invariant: nothing in `engine/` or `scan.rs` calls `std::fs`, `SystemTime::now`, `chrono`'s
//! clock or reqwest; it goes through these traits, so what the simulation checks is what runs.

pub mod clock;
pub mod mem_base;
pub mod os_disk;

use crate::http::ApiError;
use crate::scan::Stamp;
use crate::state::ServerIdentity;
use crate::Error;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::time::Duration;
use syncstore_plan::BaseNode;
use syncstore_proto::{
    ChangesResponse, ChunkHash, ChunkRef, Cursor, JournalTag, Op, OpsResponse, RelPath,
    TreeResponse, WhoAmI,
};

pub use clock::SystemClock;
pub use mem_base::{MemBase, MemBaseCommitted};
pub use os_disk::{OsDisk, OsTemp};

/// One set of seams an engine runs on.
pub trait World: Send + 'static {
    type Disk: Disk;
    type Server: Server;
    type Clock: Clock;
    type Base: BaseStore;

    /// Runs blocking disk work from async code (production: `block_in_place`, so the runtime's
    /// other tasks go on; the simulation: in place).
    fn blocking<R>(work: impl FnOnce() -> R) -> R {
        work()
    }

    /// Whether the scan hands the chunks of large files to a background upload task (needs a
    /// multi-threaded Tokio runtime; production only).
    const EARLY_UPLOAD: bool = false;

    /// Which downloads are written into the file they replace rather than beside it (see
    /// `engine/in_place.rs`).
    const IN_PLACE: InPlaceRule = InPlaceRule::LARGE_FILES;

    /// Smallest changed chunk sent (or fetched) as a delta against the old chunks it replaces;
    /// smaller ones go whole, in packs (a delta costs a round trip or two).
    const DELTA_MIN_BYTES: u32 = crate::engine::DELTA_MIN_BYTES;
}

/// When a download over an unchanged local file of the same size is written in place (only
/// its changed ranges, through a journal) instead of as a whole new copy renamed over it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InPlaceRule {
    /// Smallest file written in place.
    pub min_size: u64,
    /// The changed bytes are at most the file's size divided by this.
    pub max_share: u64,
    /// Most changed bytes written in place (they are held in memory and in the journal).
    pub max_bytes: u64,
}

impl InPlaceRule {
    /// The shipped rule: files of 8 MiB or more whose changed ranges are at most an eighth of
    /// them, and at most 32 MiB.
    pub const LARGE_FILES: InPlaceRule = InPlaceRule {
        min_size: 8 * 1024 * 1024,
        max_share: 8,
        max_bytes: 32 * 1024 * 1024,
    };

    /// Whether `changed` bytes of a file of `size` bytes are written in place.
    pub fn applies(&self, size: u64, changed: u64) -> bool {
        size >= self.min_size
            && changed.saturating_mul(self.max_share.max(1)) <= size
            && changed <= self.max_bytes
    }
}

/// The seams of the shipped client.
pub struct Production;

impl World for Production {
    type Disk = OsDisk;
    type Server = std::sync::Arc<crate::http::ApiClient>;
    type Clock = SystemClock;
    type Base = crate::state::StateDb;

    fn blocking<R>(work: impl FnOnce() -> R) -> R {
        tokio::task::block_in_place(work)
    }

    const EARLY_UPLOAD: bool = true;
}

/// What a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    /// A device, socket or FIFO.
    Other,
}

/// One `lstat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub kind: FileKind,
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
    pub ctime_ns: i64,
    /// The filesystem it is on.
    pub dev: u64,
    /// Permission bits (`0o7777`).
    pub mode: u32,
}

impl Meta {
    /// The identity of the file's bytes (see [`Stamp`]).
    pub fn stamp(&self) -> Stamp {
        Stamp {
            size: self.size,
            mtime_ns: self.mtime_ns,
            inode: self.inode,
            ctime_ns: self.ctime_ns,
        }
    }

    /// The synced executable bit: any of `0o111`.
    pub fn executable(&self) -> bool {
        self.mode & 0o111 != 0
    }
}

/// One entry of a directory listing: its name as the filesystem spells it.
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub name: std::ffi::OsString,
    /// Whether the listing says it is a directory (for ignore rules on names that cannot be
    /// synced, which are never stat'ed).
    pub is_dir: bool,
}

/// A file opened for reading. `Sync`: a re-chunk hashes two regions of one open file at once.
pub trait DiskFile: std::io::Read + Send + Sync {
    /// Reads exactly `buf.len()` bytes at `offset`.
    ///
    /// # Errors
    /// When the file is shorter or cannot be read.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

/// A temp file beside the folder (in `.syncstore/tmp/`), which becomes a synced file only by
/// [`Disk::place`]; dropped unplaced, it is removed.
pub trait TempFile: std::io::Write + Send {
    /// Reads back `buf.len()` bytes written at `offset`.
    ///
    /// # Errors
    /// On an IO error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
    /// The temp file's inode (a rename keeps it).
    ///
    /// # Errors
    /// On an IO error.
    fn inode(&self) -> std::io::Result<u64>;
    /// Starts writing back `len` bytes at `offset` to the disk (a hint; production uses
    /// `sync_file_range` on a writeback thread).
    fn start_writeback(&self, offset: u64, len: u64);
    /// Sets the modification time.
    ///
    /// # Errors
    /// On an IO error.
    fn set_mtime_ms(&mut self, mtime_ms: i64) -> std::io::Result<()>;
}

/// A synced file opened for writing in place (see [`Disk::open_in_place`]): the descriptor
/// stays on the inode it opened, wherever that is renamed.
pub trait InPlaceFile: Send {
    /// `fstat` of the opened file, and its number of hard links.
    ///
    /// # Errors
    /// On an IO error.
    fn stat(&self) -> std::io::Result<(Meta, u64)>;
    /// Reads exactly `buf.len()` bytes at `offset`.
    ///
    /// # Errors
    /// When the file is shorter or cannot be read.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
    /// Writes all of `buf` at `offset` (`pwrite`).
    ///
    /// # Errors
    /// On an IO error.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()>;
    /// Sets the modification time.
    ///
    /// # Errors
    /// On an IO error.
    fn set_mtime_ms(&self, mtime_ms: i64) -> std::io::Result<()>;
    /// Makes the file's bytes and metadata durable (`fsync`).
    ///
    /// # Errors
    /// On an IO error.
    fn sync(&self) -> std::io::Result<()>;
}

/// The synced folder, addressed by [`RelPath`] below its root. Writes never go through a
/// symlink (an existing ancestor that is a symlink or a file is an error).
pub trait Disk: Send + 'static {
    type File: DiskFile;
    type Temp: TempFile;
    type InPlace: InPlaceFile;

    /// The root's path, for messages.
    fn root(&self) -> &Path;
    /// Whether the root is a directory that can be listed (false: nothing is planned deleted).
    fn root_ok(&self) -> bool;
    /// The root's own `stat` (its filesystem is the folder's).
    ///
    /// # Errors
    /// When it cannot be stat'ed.
    fn root_meta(&self) -> std::io::Result<Meta>;
    /// Checks that the folder is still the one being synced (a disk mounted over it, a
    /// directory moved away and replaced, its marker gone: THREE-TREE row 36).
    ///
    /// # Errors
    /// [`crate::folder::FolderStopped`].
    fn check_folder(&self) -> Result<(), crate::folder::FolderStopped>;
    /// Whether `path` (existing or not) lies on the root's filesystem: its nearest existing
    /// ancestor does.
    fn on_root_fs(&self, path: &RelPath) -> bool;
    /// Lists `dir` (`None`: the root), without `.` and `..`.
    ///
    /// # Errors
    /// When it cannot be listed.
    fn read_dir(&self, dir: Option<&RelPath>) -> std::io::Result<Vec<DirEntry>>;
    /// `lstat` of `dir/name` for a listed name (which may be no valid [`RelPath`]).
    ///
    /// # Errors
    /// On an IO error (`NotFound` when it went since the listing).
    fn stat_entry(&self, dir: Option<&RelPath>, name: &std::ffi::OsStr) -> std::io::Result<Meta>;
    /// `lstat` of `path`.
    ///
    /// # Errors
    /// On an IO error (`NotFound` when absent).
    fn stat(&self, path: &RelPath) -> std::io::Result<Meta>;
    /// The mtime of directory `dir` (`None`: the root), to tell whether it changed during a walk.
    ///
    /// # Errors
    /// On an IO error.
    fn dir_mtime_ns(&self, dir: Option<&RelPath>) -> std::io::Result<i64>;
    /// Opens a file for reading.
    ///
    /// # Errors
    /// On an IO error.
    fn open(&self, path: &RelPath) -> std::io::Result<Self::File>;
    /// The folder's `.syncignore`, if it has one.
    fn ignore_file(&self) -> Option<String>;
    /// A new empty temp file (mode 0600).
    ///
    /// # Errors
    /// On an IO error (a full disk among them).
    fn create_temp(&self) -> std::io::Result<Self::Temp>;
    /// Makes the temp files' bytes durable (before any is placed).
    ///
    /// # Errors
    /// On an IO error.
    fn sync_temps(&self, temps: &[&Self::Temp]) -> std::io::Result<()>;
    /// Renames `temp` to `path` with permission bits `mode`; with `replace` false only if
    /// nothing is at `path` (`AlreadyExists` otherwise). Parent directories are created.
    /// Returns the placed file's stat as the rename left it (production: `fstat` of the temp
    /// file's descriptor right after the rename, so an editor's save over it since is not it).
    ///
    /// # Errors
    /// On an IO error; `temp` is then removed.
    fn place(
        &self,
        temp: Self::Temp,
        path: &RelPath,
        mode: u32,
        replace: bool,
    ) -> std::io::Result<Meta>;
    /// Renames `from` to `to` only if nothing is at `to` (`AlreadyExists`); parents of `to`
    /// are created.
    ///
    /// # Errors
    /// On an IO error.
    fn rename_noreplace(&self, from: &RelPath, to: &RelPath) -> std::io::Result<()>;
    /// Removes a file.
    ///
    /// # Errors
    /// On an IO error.
    fn remove_file(&self, path: &RelPath) -> std::io::Result<()>;
    /// Removes an empty directory.
    ///
    /// # Errors
    /// On an IO error (not empty among them).
    fn remove_dir(&self, path: &RelPath) -> std::io::Result<()>;
    /// `mkdir -p`; refuses a symlink at `path`.
    ///
    /// # Errors
    /// On an IO error.
    fn create_dir_all(&self, path: &RelPath) -> std::io::Result<()>;
    /// Sets the permission bits of a regular file (never through a symlink).
    ///
    /// # Errors
    /// When it is no regular file, or on an IO error.
    fn set_mode(&self, path: &RelPath, mode: u32) -> std::io::Result<()>;
    /// Makes the entries of directories `dirs` (`None`: the root) durable: the renames,
    /// creations and removals in them survive a crash once this returns.
    ///
    /// # Errors
    /// On an IO error.
    fn sync_dirs(&self, dirs: &[Option<RelPath>]) -> std::io::Result<()>;
    /// Whether the folder's filesystem keeps the permission bits set on a file (false: FAT and
    /// exFAT show every file as 0777, so the executable bit a scan reads tells nothing).
    fn keeps_modes(&self) -> bool;
    /// Whether the folder's filesystem tells names apart by case (false: FAT, exFAT, and what
    /// Windows and macOS format by default; see [`crate::case_fold`]).
    fn case_insensitive(&self) -> bool;
    /// The time now on the clock the folder's filesystem stamps changes with, in nanoseconds
    /// since the Unix epoch: what tells whether a stamp just seen can still be shared by a
    /// write to come ([`crate::scan::Stamp::settled_at`]).
    fn now_ns(&self) -> i64;
    /// Bytes that may still be written where temp files go.
    ///
    /// # Errors
    /// When unknown.
    fn available_bytes(&self) -> std::io::Result<u64>;
    /// Opens the regular file at `path` for reading and writing in place, never through a
    /// symlink (production: `O_RDWR | O_NOFOLLOW`, then checked to be a regular file).
    ///
    /// # Errors
    /// When it is no regular file, or on an IO error.
    fn open_in_place(&self, path: &RelPath) -> std::io::Result<Self::InPlace>;
    /// Writes the in-place journal `name` (in `.syncstore/journal/`) with `bytes`, durably: the
    /// file and its directory entry survive a crash once this returns (a crash before may leave
    /// it torn: readers check it).
    ///
    /// # Errors
    /// On an IO error.
    fn write_journal(&self, name: &str, bytes: &[u8]) -> std::io::Result<()>;
    /// Every in-place journal there is: name and bytes.
    ///
    /// # Errors
    /// When they cannot be listed or read.
    fn journals(&self) -> std::io::Result<Vec<(String, Vec<u8>)>>;
    /// Removes the in-place journal `name`, durably (absent is fine).
    ///
    /// # Errors
    /// On an IO error.
    fn remove_journal(&self, name: &str) -> std::io::Result<()>;
}

/// The API, as the engine uses it (the daemon's long poll and the lock commands use the HTTP
/// client directly).
pub trait Server: Clone + Send + Sync + 'static {
    /// A download: the frames of the chunks asked for, in order, read from blocking code.
    type Download: std::io::Read + Send + 'static;

    /// Which server this is, for logs.
    fn describe(&self) -> String;
    fn whoami(&self) -> impl Future<Output = Result<WhoAmI, ApiError>> + Send;
    fn tree(&self) -> impl Future<Output = Result<TreeResponse, ApiError>> + Send;
    /// The journal after `since`, without waiting; with `known`, the server checks its journal
    /// still holds that position with that tag.
    fn changes(
        &self,
        since: Cursor,
        known: Option<(Cursor, JournalTag)>,
    ) -> impl Future<Output = Result<ChangesResponse, ApiError>> + Send;
    fn missing_chunks(
        &self,
        hashes: Vec<ChunkHash>,
    ) -> impl Future<Output = Result<Vec<ChunkHash>, ApiError>> + Send;
    /// Uploads a pack of frames; `durable`: a repair the server asked for, durable at once.
    fn upload_pack(
        &self,
        pack: bytes::Bytes,
        durable: bool,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// Announces a run of a large file's chunks the server holds, to the user's other devices
    /// (an upload stream; see `syncstore_proto::streams`).
    fn announce_stream(
        &self,
        part: syncstore_proto::StreamPart,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    fn download_pack(
        &self,
        hashes: Vec<ChunkHash>,
    ) -> impl Future<Output = Result<Self::Download, ApiError>> + Send;
    /// The signature of the old chunks `bases` (their bytes concatenated), to make a delta of
    /// a changed chunk against (see `syncstore_chunk::delta`).
    fn chunk_signature(
        &self,
        bases: Vec<ChunkHash>,
    ) -> impl Future<Output = Result<Vec<u8>, ApiError>> + Send;
    /// Uploads chunk `target` as a delta against `bases`; the server stores it only when the
    /// delta makes `target`.
    fn upload_delta(
        &self,
        target: ChunkHash,
        bases: Vec<ChunkHash>,
        delta: bytes::Bytes,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// The delta that makes chunk `target` from `bases` (which the caller holds and verifies
    /// the result of).
    fn download_delta(
        &self,
        target: ChunkHash,
        bases: Vec<ChunkHash>,
    ) -> impl Future<Output = Result<Vec<u8>, ApiError>> + Send;
    fn ops(
        &self,
        ops: Vec<Op>,
        known: Option<(Cursor, JournalTag)>,
    ) -> impl Future<Output = Result<OpsResponse, ApiError>> + Send;
}

/// Time.
pub trait Clock: Send + Sync + 'static {
    /// Wall-clock milliseconds since the Unix epoch (lock expiry).
    fn now_ms(&self) -> i64;
    /// The local time now, as names and notes show it (conflicted copies, re-adoptions).
    fn local_now(&self) -> chrono::DateTime<chrono::FixedOffset>;
    /// A monotonic time (retry backoff).
    fn monotonic(&self) -> Duration;
}

/// Where base and the folder's other state live. Changes between [`BaseStore::begin_batch`]
/// and [`BaseStore::commit_batch`] are committed together; outside a batch each is committed
/// by itself. A crash keeps exactly what was committed.
pub trait BaseStore: Send + 'static {
    /// The base tree.
    fn base(&self) -> &BTreeMap<RelPath, BaseNode>;
    /// The chunk list of each base file.
    fn base_chunks(&self) -> &crate::base_chunks::BaseChunks;
    /// Records `node` as the base of `path`.
    ///
    /// # Errors
    /// When it cannot be saved; memory is then unchanged.
    fn put(&mut self, path: &RelPath, node: BaseNode, chunks: Vec<ChunkRef>) -> Result<(), Error>;
    /// Drops `path` from base.
    ///
    /// # Errors
    /// When it cannot be saved.
    fn remove(&mut self, path: &RelPath) -> Result<(), Error>;
    /// Moves the entries at and below `from` to `to`.
    ///
    /// # Errors
    /// When it cannot be saved.
    fn rebase(&mut self, from: &RelPath, to: &RelPath) -> Result<(), Error>;
    /// Starts a batch (a no-op inside one).
    ///
    /// # Errors
    /// When it cannot be started.
    fn begin_batch(&mut self) -> Result<(), Error>;
    /// Commits the batch, durably (a no-op outside one).
    ///
    /// # Errors
    /// When it cannot be committed.
    fn commit_batch(&mut self) -> Result<(), Error>;
    /// A saved value.
    ///
    /// # Errors
    /// When it cannot be read.
    fn meta(&self, key: &str) -> Result<Option<String>, Error>;
    /// Saves a value (`None`: deletes it).
    ///
    /// # Errors
    /// When it cannot be saved.
    fn set_meta(&mut self, key: &str, value: Option<&str>) -> Result<(), Error>;
    /// Clears base and saves `identity` and `why` (as `readopted`) in one durable commit.
    ///
    /// # Errors
    /// When it cannot be saved; nothing is changed then.
    fn readopt(&mut self, identity: &ServerIdentity, why: &str) -> Result<(), Error>;
}
