//! [`FsChunkStore`]: the embedded [`ChunkStore`], one file per chunk on local disk.
//!
//! Layout: `ROOT/<user id>/<first 2 hex digits>/<64 hex digits>`. Chunks are per user, so a user
//! can never read another user's chunk by guessing its hash.
//!
//! A chunk is written atomically: verified against its hash, written to a temp file in the
//! target directory, made durable, renamed into place, and the rename made durable. One chunk
//! (and a small batch, chunk by chunk) does that with `sync_all` on the file and an fsync of its
//! directory; a larger batch with two `syncfs` calls for all its chunks (see
//! `write_chunk_batch`). Either way a chunk file holds exactly the bytes of its name or does
//! not exist, and it is durable before any metadata commit can name it.

use crate::{ChunkStore, StoreError, UserId};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use syncstore_proto::{ChunkHash, MAX_CHUNK_LEN};
use tempfile::NamedTempFile;

/// A [`ChunkStore`] in a directory of the local filesystem.
#[derive(Clone, Debug)]
pub struct FsChunkStore {
    root: PathBuf,
}

impl FsChunkStore {
    /// Opens the chunk directory `root`, creating it if needed.
    ///
    /// # Errors
    /// IO errors creating the directory.
    pub async fn open(root: &Path) -> Result<FsChunkStore, StoreError> {
        let root = root.to_owned();
        let created = root.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&created).map_err(|source| {
                io_error(format!("could not create {}", created.display()), source)
            })
        })
        .await
        .map_err(|err| StoreError::Worker(err.to_string()))??;
        Ok(FsChunkStore { root })
    }

    fn user_dir(&self, user_id: UserId) -> PathBuf {
        self.root.join(user_id.0.to_string())
    }

    fn chunk_path(&self, user_id: UserId, hash: &ChunkHash) -> PathBuf {
        let hex = hash.to_hex();
        self.user_dir(user_id).join(&hex[..2]).join(hex)
    }
}

#[async_trait]
impl ChunkStore for FsChunkStore {
    #[tracing::instrument(skip(self, bytes), fields(len = bytes.len()))]
    async fn put(&self, user_id: UserId, hash: &ChunkHash, bytes: Bytes) -> Result<(), StoreError> {
        let hash = *hash;
        let user_dir = self.user_dir(user_id);
        let path = self.chunk_path(user_id, &hash);
        tokio::task::spawn_blocking(move || write_chunk(&user_dir, &path, &hash, &bytes))
            .await
            .map_err(|err| StoreError::Worker(err.to_string()))?
    }

    #[tracing::instrument(skip_all, fields(n_chunks = chunks.len()))]
    async fn put_batch(
        &self,
        user_id: UserId,
        chunks: Vec<(ChunkHash, Bytes)>,
    ) -> Result<(), StoreError> {
        let root = self.root.clone();
        let user_dir = self.user_dir(user_id);
        let chunks: Vec<(PathBuf, ChunkHash, Bytes)> = chunks
            .into_iter()
            .map(|(hash, bytes)| (self.chunk_path(user_id, &hash), hash, bytes))
            .collect();
        tokio::task::spawn_blocking(move || {
            // A few chunks are cheaper with their own fsyncs than with a sync of the whole
            // filesystem, which also waits for unrelated dirty data (it set the latency of a
            // one-file edit); many chunks are far cheaper with two syncs in all.
            let total_bytes: usize = chunks.iter().map(|(_, _, bytes)| bytes.len()).sum();
            if chunks.len() <= SMALL_BATCH && total_bytes <= SMALL_BATCH_BYTES {
                chunks
                    .iter()
                    .try_for_each(|(path, hash, bytes)| write_chunk(&user_dir, path, hash, bytes))
            } else {
                write_chunk_batch(&root, &user_dir, chunks)
            }
        })
        .await
        .map_err(|err| StoreError::Worker(err.to_string()))?
    }

    async fn missing(
        &self,
        user_id: UserId,
        hashes: &[ChunkHash],
    ) -> Result<Vec<ChunkHash>, StoreError> {
        let mut seen = HashSet::new();
        let candidates: Vec<(ChunkHash, PathBuf)> = hashes
            .iter()
            .filter(|hash| seen.insert(**hash))
            .map(|hash| (*hash, self.chunk_path(user_id, hash)))
            .collect();
        tokio::task::spawn_blocking(move || {
            let mut missing = Vec::new();
            for (hash, path) in candidates {
                let exists = path.try_exists().map_err(|source| {
                    io_error(format!("could not check {}", path.display()), source)
                })?;
                if !exists {
                    missing.push(hash);
                }
            }
            Ok(missing)
        })
        .await
        .map_err(|err| StoreError::Worker(err.to_string()))?
    }

    async fn get(&self, user_id: UserId, hash: &ChunkHash) -> Result<Bytes, StoreError> {
        let hash = *hash;
        let path = self.chunk_path(user_id, &hash);
        tokio::task::spawn_blocking(move || {
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    return Err(StoreError::NotFound(format!("chunk {hash}")));
                }
                Err(source) => {
                    return Err(io_error(
                        format!("could not read {}", path.display()),
                        source,
                    ));
                }
            };
            // Hashing is cheap next to the disk read, and catches bit rot before a client
            // writes bad bytes into a user's folder.
            let actual = ChunkHash(*blake3::hash(&bytes).as_bytes());
            if actual != hash {
                return Err(StoreError::Corrupt(format!(
                    "chunk file {} hashes to {actual}",
                    path.display()
                )));
            }
            Ok(Bytes::from(bytes))
        })
        .await
        .map_err(|err| StoreError::Worker(err.to_string()))?
    }
}

/// Batches of at most this many chunks and [`SMALL_BATCH_BYTES`] are made durable chunk by
/// chunk (fsync of the file and its directory); larger ones with [`write_chunk_batch`]. Eight
/// 1 MiB chunks of a large file took 16 fsyncs per 8 MiB pack that way (W2: 14.6 s per GiB).
const SMALL_BATCH: usize = 8;
/// See [`SMALL_BATCH`].
const SMALL_BATCH_BYTES: usize = 512 * 1024;

/// Writes a batch of chunks with two filesystem syncs in all: every chunk goes to a temp file
/// in its final directory unsynced, one `syncfs` makes their bytes durable, they are renamed
/// into place, and a second `syncfs` makes the names durable. Same guarantee as
/// [`write_chunk`] per chunk, at a fraction of the cost for many small chunks.
fn write_chunk_batch(
    root: &Path,
    user_dir: &Path,
    chunks: Vec<(PathBuf, ChunkHash, Bytes)>,
) -> Result<(), StoreError> {
    let mut pending = Vec::new();
    for (path, hash, bytes) in chunks {
        if let Some((temp, _)) = stage_chunk(user_dir, &path, &hash, &bytes)? {
            pending.push((temp, path));
        }
    }
    if pending.is_empty() {
        return Ok(());
    }
    sync_filesystem(root)?;
    for (temp, path) in pending {
        temp.persist(&path).map_err(|err| {
            io_error(
                format!("could not rename a temp file to {}", path.display()),
                err.error,
            )
        })?;
    }
    sync_filesystem(root)
}

/// `syncfs(2)`: flushes every dirty page and the journal of the filesystem holding `root`.
fn sync_filesystem(root: &Path) -> Result<(), StoreError> {
    use std::os::fd::AsRawFd;
    let dir = File::open(root)
        .map_err(|source| io_error(format!("could not open {}", root.display()), source))?;
    // SAFETY: the descriptor is open for the duration of the call.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(io_error(
            format!("could not sync the filesystem of {}", root.display()),
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Writes one chunk durably: `sync_all` on its temp file, rename, fsync of its directory.
fn write_chunk(
    user_dir: &Path,
    path: &Path,
    hash: &ChunkHash,
    bytes: &[u8],
) -> Result<(), StoreError> {
    let Some((temp, dir)) = stage_chunk(user_dir, path, hash, bytes)? else {
        return Ok(());
    };
    temp.as_file()
        .sync_all()
        .map_err(|source| io_error(format!("could not sync {}", temp.path().display()), source))?;
    temp.persist(path).map_err(|err| {
        io_error(
            format!("could not rename a temp file to {}", path.display()),
            err.error,
        )
    })?;
    sync_dir(dir)
}

/// Checks a chunk and writes it, unsynced, to a temp file in the directory of its final `path`,
/// creating that directory (and `user_dir`) durably if needed; `None` when the chunk is stored
/// already. Returns the temp file, which deletes itself unless persisted, and the directory.
fn stage_chunk<'a>(
    user_dir: &Path,
    path: &'a Path,
    hash: &ChunkHash,
    bytes: &[u8],
) -> Result<Option<(NamedTempFile, &'a Path)>, StoreError> {
    if bytes.len() > MAX_CHUNK_LEN as usize {
        return Err(StoreError::ChunkTooLarge { len: bytes.len() });
    }
    let actual = ChunkHash(*blake3::hash(bytes).as_bytes());
    if actual != *hash {
        return Err(StoreError::HashMismatch {
            claimed: *hash,
            actual,
        });
    }
    if path
        .try_exists()
        .map_err(|source| io_error(format!("could not check {}", path.display()), source))?
    {
        return Ok(None);
    }
    let Some(dir) = path.parent() else {
        return Err(StoreError::Corrupt(format!(
            "chunk path {} has no parent",
            path.display()
        )));
    };
    ensure_dir(user_dir)?;
    ensure_dir(dir)?;
    let mut temp = NamedTempFile::new_in(dir).map_err(|source| {
        io_error(
            format!("could not create a temp file in {}", dir.display()),
            source,
        )
    })?;
    temp.write_all(bytes)
        .map_err(|source| io_error(format!("could not write {}", temp.path().display()), source))?;
    Ok(Some((temp, dir)))
}

/// Creates `dir` if it is missing (its parent must exist) and makes the new entry durable.
fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    match std::fs::create_dir(dir) {
        Ok(()) => match dir.parent() {
            Some(parent) => sync_dir(parent),
            None => Ok(()),
        },
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(io_error(
            format!("could not create {}", dir.display()),
            source,
        )),
    }
}

/// Fsyncs a directory, so a rename or creation inside it survives power loss.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|file| file.sync_all())
        .map_err(|source| {
            io_error(
                format!("could not sync directory {}", dir.display()),
                source,
            )
        })
}

fn io_error(context: String, source: io::Error) -> StoreError {
    StoreError::Io { context, source }
}
