//! [`FsChunkStore`]: the embedded [`ChunkStore`], one file per chunk on local disk.
//!
//! Layout: `ROOT/<namespace id>/<first 2 hex digits>/<64 hex digits>`. Chunks are per user
//! namespace, so a user can never read another user's chunk by guessing its hash, and an account
//! re-created under an old name (a new random namespace id) none of the old account's.
//! A chunk file found not to match its name (bit rot, tampering) is moved to
//! `ROOT/.quarantine/<namespace id>-<hash>.<random>`: from then on it is reported missing, and an
//! upload of the right bytes replaces it.
//!
//! An uploaded chunk is verified against its hash and written to a temp file in its target
//! directory, with writeback started by a background thread but not waited for: it is *staged*. A staged chunk
//! is readable and counts as stored, but it lives only in this process's registry and under a
//! temp name. [`ChunkStore::durable_chunk_lens`], which runs before any metadata commit can name a
//! chunk, makes the staged chunks durable (fsync or `syncfs`), renames them into place and makes
//! the renames durable. So uploads run at the speed of the network while the disk catches up in
//! the background, and the sync is paid once per commit instead of once per upload request.
//!
//! Every directory is made 0700 and every chunk file 0600, whatever the umask (chunk files are
//! tempfile's 0600 temp files renamed); a root left wider by an older version is tightened at
//! open.
//!
//! Invariant: a file under a chunk's name holds exactly the bytes of that name, durably. A
//! staged chunk that a crash loses (its temp file is removed at the next open) was never
//! named by a commit, and after the restart `missing` reports it missing again, so the client
//! uploads it again.

use crate::{ChunkLens, ChunkStore, ScrubReport, StoreError, StoredChunk};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use syncstore_durable::Writeback;
use syncstore_proto::{ChunkHash, NamespaceId, MAX_CHUNK_LEN};
use tempfile::{NamedTempFile, TempPath};

/// A [`ChunkStore`] in a directory of the local filesystem.
#[derive(Clone)]
pub struct FsChunkStore {
    root: PathBuf,
    staged: Arc<Staged>,
    writeback: Arc<Writeback>,
}

/// Chunks written but not yet durable under their names.
#[derive(Debug, Default)]
struct Staged {
    /// (user, hash) → the chunk's temp file, beside its final path.
    chunks: Mutex<HashMap<(NamespaceId, ChunkHash), StagedChunk>>,
    /// Held while staged chunks are made durable, so two commits never rename the same file.
    settling: Mutex<()>,
}

#[derive(Debug)]
struct StagedChunk {
    temp: TempPath,
    path: PathBuf,
    len: usize,
}

/// Chunks at least this large have their writeback started as soon as they are staged.
const WRITEBACK_MIN_BYTES: usize = 256 * 1024;
/// Staged bytes past which an upload makes everything staged durable itself (bounds the work
/// left for one commit and the temp files a crash can lose).
const STAGED_LIMIT_BYTES: usize = 1024 * 1024 * 1024;
/// Staged chunks past which an upload makes everything staged durable itself.
const STAGED_LIMIT_CHUNKS: usize = 50_000;

impl FsChunkStore {
    /// Opens the chunk directory `root`, creating it if needed.
    ///
    /// # Errors
    /// IO errors creating the directory.
    pub async fn open(root: &Path) -> Result<FsChunkStore, StoreError> {
        let root = root.to_owned();
        let created = root.clone();
        tokio::task::spawn_blocking(move || {
            create_private_dir_all(&created).map_err(|source| {
                io_error(format!("could not create {}", created.display()), source)
            })?;
            remove_leftovers(&created)
        })
        .await
        .map_err(|err| StoreError::Worker(err.to_string()))??;
        let writeback = Writeback::new()
            .map_err(|source| io_error("could not start the writeback thread".into(), source))?;
        Ok(FsChunkStore {
            root,
            staged: Arc::default(),
            writeback: Arc::new(writeback),
        })
    }

    fn user_dir(&self, owner: NamespaceId) -> PathBuf {
        self.root.join(owner.to_hex())
    }

    fn chunk_path(&self, owner: NamespaceId, hash: &ChunkHash) -> PathBuf {
        let hex = hash.to_hex();
        self.user_dir(owner).join(&hex[..2]).join(hex)
    }

    /// Moves the chunks a build before namespace ids stored under the user's integer id
    /// (`ROOT/<user id>/`) to where they belong now (`ROOT/<namespace id>/`), durably; nothing
    /// to do when there is no such directory or the namespace has one already.
    ///
    /// # Errors
    /// IO errors.
    pub async fn adopt_legacy_dir(
        &self,
        user_id: crate::UserId,
        owner: NamespaceId,
    ) -> Result<(), StoreError> {
        let legacy = self.root.join(user_id.0.to_string());
        let current = self.user_dir(owner);
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            if !legacy.is_dir() || current.exists() {
                return Ok(());
            }
            std::fs::rename(&legacy, &current).map_err(|source| {
                io_error(format!("could not move {} to {}", legacy.display(), current.display()), source)
            })?;
            tracing::info!(from = %legacy.display(), to = %current.display(), "moved the chunks of a user to its namespace id");
            sync_dir(&root)
        })
        .await
        .map_err(|err| StoreError::Worker(err.to_string()))?
    }

    /// Drops every staged chunk of `owner` (a full disk: the upload failed, and the space
    /// they hold is what the next, smaller upload needs). They were never named by a commit;
    /// `missing` reports them missing again.
    fn unstage(&self, owner: NamespaceId) {
        let mut staged = self.staged.chunks.lock().expect("staged registry");
        staged.retain(|(staged_owner, _), _| *staged_owner != owner);
    }
}

#[async_trait]
impl ChunkStore for FsChunkStore {
    #[tracing::instrument(skip(self, bytes), fields(len = bytes.len()))]
    async fn put(
        &self,
        owner: NamespaceId,
        hash: &ChunkHash,
        bytes: Bytes,
    ) -> Result<(), StoreError> {
        self.put_batch(owner, vec![(*hash, bytes)]).await
    }

    #[tracing::instrument(skip_all, fields(n_chunks = chunks.len()))]
    async fn put_batch(
        &self,
        owner: NamespaceId,
        chunks: Vec<(ChunkHash, Bytes)>,
    ) -> Result<(), StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let staged = chunks
                .iter()
                .try_for_each(|(hash, bytes)| store.stage(owner, *hash, bytes))
                .and_then(|()| {
                    let (n, bytes) = store.staged_size();
                    if n > STAGED_LIMIT_CHUNKS || bytes > STAGED_LIMIT_BYTES {
                        store.settle_all()?;
                    }
                    Ok(())
                });
            if let Err(StoreError::Full(_)) = &staged {
                store.unstage(owner);
            }
            staged
        })
        .await
        .map_err(|err| StoreError::Worker(err.to_string()))?
    }

    #[tracing::instrument(skip_all, fields(n_hashes = hashes.len()))]
    async fn durable_chunk_lens(
        &self,
        owner: NamespaceId,
        hashes: &[ChunkHash],
    ) -> Result<ChunkLens, StoreError> {
        let wanted = {
            let staged = self.staged.chunks.lock().expect("staged registry");
            hashes
                .iter()
                .any(|hash| staged.contains_key(&(owner, *hash)))
        };
        if wanted {
            let store = self.clone();
            tokio::task::spawn_blocking(move || store.settle_all())
                .await
                .map_err(|err| StoreError::Worker(err.to_string()))??;
        }
        let paths: Vec<(ChunkHash, PathBuf)> = hashes
            .iter()
            .map(|hash| (*hash, self.chunk_path(owner, hash)))
            .collect();
        tokio::task::spawn_blocking(move || {
            let mut lens = ChunkLens::new();
            for (hash, path) in paths {
                if lens.contains_key(&hash) {
                    continue;
                }
                match std::fs::metadata(&path) {
                    Ok(meta) => {
                        lens.insert(hash, u32::try_from(meta.len()).unwrap_or(u32::MAX));
                    }
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(io_error(
                            format!("could not check {}", path.display()),
                            source,
                        ))
                    }
                }
            }
            Ok(lens)
        })
        .await
        .map_err(|err| StoreError::Worker(err.to_string()))?
    }

    async fn list(&self, owner: NamespaceId) -> Result<Vec<StoredChunk>, StoreError> {
        let user_dir = self.user_dir(owner);
        tokio::task::spawn_blocking(move || {
            let hashes = match list_chunks(&user_dir) {
                Ok(hashes) => hashes,
                Err(_) if !user_dir.exists() => return Ok(Vec::new()),
                Err(err) => return Err(err),
            };
            let mut listed = Vec::with_capacity(hashes.len());
            for hash in hashes {
                let hex = hash.to_hex();
                let path = user_dir.join(&hex[..2]).join(&hex);
                let meta = match std::fs::metadata(&path) {
                    Ok(meta) => meta,
                    Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                    Err(source) => {
                        return Err(io_error(
                            format!("could not stat {}", path.display()),
                            source,
                        ))
                    }
                };
                let stored_ms = meta
                    .modified()
                    .ok()
                    .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |since| {
                        i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
                    });
                listed.push(StoredChunk {
                    hash,
                    len: meta.len(),
                    stored_ms,
                });
            }
            Ok(listed)
        })
        .await
        .map_err(|err| StoreError::Worker(err.to_string()))?
    }

    async fn delete(&self, owner: NamespaceId, chunks: &[StoredChunk]) -> Result<u64, StoreError> {
        let paths: Vec<(PathBuf, u64)> = chunks
            .iter()
            .map(|chunk| (self.chunk_path(owner, &chunk.hash), chunk.len))
            .collect();
        tokio::task::spawn_blocking(move || {
            let mut freed = 0;
            let mut dirs = std::collections::BTreeSet::new();
            for (path, len) in paths {
                match std::fs::remove_file(&path) {
                    Ok(()) => freed += len,
                    Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                    Err(source) => {
                        return Err(io_error(
                            format!("could not delete {}", path.display()),
                            source,
                        ))
                    }
                }
                if let Some(dir) = path.parent() {
                    dirs.insert(dir.to_path_buf());
                }
            }
            for dir in dirs {
                sync_dir(&dir)?;
            }
            Ok(freed)
        })
        .await
        .map_err(|err| StoreError::Worker(err.to_string()))?
    }

    async fn delete_all(&self, owner: NamespaceId) -> Result<(u64, u64), StoreError> {
        let listed = self.list(owner).await?;
        let freed = self.delete(owner, &listed).await?;
        // The emptied directories go too, so the store holds nothing of the namespace (what
        // `holds_content` looks for). One still holding a file (an upload under way) stays.
        let (root, user_dir) = (self.root.clone(), self.user_dir(owner));
        tokio::task::spawn_blocking(move || {
            let Ok(fan_outs) = std::fs::read_dir(&user_dir) else {
                return Ok(());
            };
            for fan_out in fan_outs.flatten() {
                let _ = std::fs::remove_dir(fan_out.path());
            }
            if std::fs::remove_dir(&user_dir).is_ok() {
                sync_dir(&root)?;
            }
            Ok::<(), StoreError>(())
        })
        .await
        .map_err(|err| StoreError::Worker(err.to_string()))??;
        Ok((listed.len() as u64, freed))
    }

    async fn holds_content(&self) -> Result<bool, StoreError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let entries = std::fs::read_dir(&root)
                .map_err(|source| io_error(format!("could not read {}", root.display()), source))?;
            for entry in entries.flatten() {
                let name = entry.file_name();
                if NamespaceId::from_hex(&name.to_string_lossy()).is_ok()
                    || name.to_string_lossy().parse::<u64>().is_ok()
                {
                    return Ok(true);
                }
            }
            Ok(false)
        })
        .await
        .map_err(|err| StoreError::Worker(err.to_string()))?
    }

    async fn scrub(
        &self,
        progress: &(dyn for<'r> Fn(&'r ScrubReport) + Send + Sync),
    ) -> Result<ScrubReport, StoreError> {
        let root = self.root.clone();
        let owners =
            tokio::task::spawn_blocking(move || -> Result<Vec<NamespaceId>, StoreError> {
                let entries = std::fs::read_dir(&root).map_err(|source| {
                    io_error(format!("could not read {}", root.display()), source)
                })?;
                Ok(entries
                    .flatten()
                    .filter_map(|entry| {
                        NamespaceId::from_hex(&entry.file_name().to_string_lossy()).ok()
                    })
                    .collect())
            })
            .await
            .map_err(|err| StoreError::Worker(err.to_string()))??;
        let mut report = ScrubReport::default();
        for owner in owners {
            let user_dir = self.user_dir(owner);
            let hashes = tokio::task::spawn_blocking(move || list_chunks(&user_dir))
                .await
                .map_err(|err| StoreError::Worker(err.to_string()))??;
            for hash in hashes {
                let read = self.get_verified(owner, &hash).await;
                if report.record(owner, hash, read)? {
                    progress(&report);
                }
            }
        }
        Ok(report)
    }

    async fn missing(
        &self,
        user_id: NamespaceId,
        hashes: &[ChunkHash],
    ) -> Result<Vec<ChunkHash>, StoreError> {
        let mut seen = HashSet::new();
        let candidates: Vec<(ChunkHash, PathBuf)> = hashes
            .iter()
            .filter(|hash| seen.insert(**hash))
            .map(|hash| (*hash, self.chunk_path(user_id, hash)))
            .collect();
        let staged = Arc::clone(&self.staged);
        tokio::task::spawn_blocking(move || {
            let mut missing = Vec::new();
            for (hash, path) in candidates {
                if staged
                    .chunks
                    .lock()
                    .expect("staged registry")
                    .contains_key(&(user_id, hash))
                {
                    continue;
                }
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

    async fn get(&self, user_id: NamespaceId, hash: &ChunkHash) -> Result<Bytes, StoreError> {
        self.read(user_id, *hash, false).await
    }

    async fn get_verified(
        &self,
        user_id: NamespaceId,
        hash: &ChunkHash,
    ) -> Result<Bytes, StoreError> {
        self.read(user_id, *hash, true).await
    }
}

impl FsChunkStore {
    /// Reads a stored or staged chunk; with `verify`, hashes it and moves it aside when it does
    /// not match ([`ChunkStore::get_verified`]).
    async fn read(
        &self,
        user_id: NamespaceId,
        hash: ChunkHash,
        verify: bool,
    ) -> Result<Bytes, StoreError> {
        let path = self.chunk_path(user_id, &hash);
        let staged = Arc::clone(&self.staged);
        let quarantine = self.root.join(QUARANTINE_DIR);
        tokio::task::spawn_blocking(move || {
            let temp = staged
                .chunks
                .lock()
                .expect("staged registry")
                .get(&(user_id, hash))
                .map(|chunk| chunk.temp.to_path_buf());
            // A staged chunk may be renamed into place between the lookup and the read.
            let read = match temp {
                Some(temp) => std::fs::read(&temp).or_else(|_| std::fs::read(&path)),
                None => std::fs::read(&path),
            };
            let bytes = match read {
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
            if !verify {
                return Ok(Bytes::from(bytes));
            }
            let actual = ChunkHash(*blake3::hash(&bytes).as_bytes());
            if actual != hash {
                let aside = move_aside(&quarantine, user_id, &hash, &path)?;
                tracing::error!(owner = %user_id, %hash, aside = %aside.display(), "chunk failed verification; moved aside");
                return Err(StoreError::Corrupt(format!(
                    "chunk file {} hashes to {actual}; moved to {}",
                    path.display(),
                    aside.display()
                )));
            }
            Ok(Bytes::from(bytes))
        })
        .await
        .map_err(|err| StoreError::Worker(err.to_string()))?
    }
}

/// At most this many staged chunks of at most [`SMALL_BATCH_BYTES`] in all are made durable
/// chunk by chunk (fsync of each file and of its directory); more with two `syncfs` calls in
/// all. A few fsyncs are cheaper than a sync of the whole filesystem, which also waits for
/// unrelated dirty data (it set the latency of a one-file edit); many chunks are far cheaper
/// with two syncs (eight 1 MiB chunks took 16 fsyncs per 8 MiB that way: 14.6 s per GiB).
const SMALL_BATCH: usize = 8;
/// See [`SMALL_BATCH`].
const SMALL_BATCH_BYTES: usize = 512 * 1024;

impl FsChunkStore {
    /// Checks a chunk and writes it to a temp file beside its final path, starting writeback;
    /// registers it as staged. Nothing to do when the chunk is stored or staged already.
    fn stage(&self, user_id: NamespaceId, hash: ChunkHash, bytes: &[u8]) -> Result<(), StoreError> {
        if bytes.len() > MAX_CHUNK_LEN as usize {
            return Err(StoreError::ChunkTooLarge { len: bytes.len() });
        }
        let actual = ChunkHash(*blake3::hash(bytes).as_bytes());
        if actual != hash {
            return Err(StoreError::HashMismatch {
                claimed: hash,
                actual,
            });
        }
        let key = (user_id, hash);
        if self
            .staged
            .chunks
            .lock()
            .expect("staged registry")
            .contains_key(&key)
        {
            return Ok(());
        }
        let path = self.chunk_path(user_id, &hash);
        if path
            .try_exists()
            .map_err(|source| io_error(format!("could not check {}", path.display()), source))?
        {
            return Ok(());
        }
        let dir = path.parent().expect("a chunk path has a parent");
        let user_dir = self.user_dir(user_id);
        ensure_user_dir(&self.root, &user_dir)?;
        // A user directory made before fan-out directories were made up front may lack one.
        if !dir.is_dir() {
            match private_dir_builder().create(dir) {
                Ok(()) => sync_dir(&user_dir)?,
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(io_error(
                        format!("could not create {}", dir.display()),
                        source,
                    ))
                }
            }
        }
        let mut temp = NamedTempFile::new_in(dir).map_err(|source| {
            io_error(
                format!("could not create a temp file in {}", dir.display()),
                source,
            )
        })?;
        temp.write_all(bytes).map_err(|source| {
            io_error(format!("could not write {}", temp.path().display()), source)
        })?;
        // Small chunks are left to the commit's sync, which writes them together: started one
        // by one they fill the disk's queue with tiny writes (1,000 chunks of 4 KiB took up to
        // 690 ms to stage that way, against 60 ms without).
        if bytes.len() >= WRITEBACK_MIN_BYTES {
            if let Ok(file) = temp.as_file().try_clone() {
                self.writeback.start(file, 0, 0);
            }
        }
        let staged = StagedChunk {
            temp: temp.into_temp_path(),
            path,
            len: bytes.len(),
        };
        // A concurrent upload of the same chunk may have staged it meanwhile: keep one.
        self.staged
            .chunks
            .lock()
            .expect("staged registry")
            .entry(key)
            .or_insert(staged);
        Ok(())
    }

    /// How many chunks are staged, and their bytes.
    fn staged_size(&self) -> (usize, usize) {
        let staged = self.staged.chunks.lock().expect("staged registry");
        (staged.len(), staged.values().map(|chunk| chunk.len).sum())
    }

    /// Makes every chunk staged so far durable under its name: data synced, renamed into
    /// place, renames synced; then drops them from the registry.
    fn settle_all(&self) -> Result<(), StoreError> {
        let _settling = self.staged.settling.lock().expect("settling lock");
        let batch: Vec<((NamespaceId, ChunkHash), PathBuf, PathBuf, usize)> = self
            .staged
            .chunks
            .lock()
            .expect("staged registry")
            .iter()
            .map(|(key, chunk)| {
                (
                    *key,
                    chunk.temp.to_path_buf(),
                    chunk.path.clone(),
                    chunk.len,
                )
            })
            .collect();
        if batch.is_empty() {
            return Ok(());
        }
        let total_bytes: usize = batch.iter().map(|(_, _, _, len)| len).sum();
        let few = batch.len() <= SMALL_BATCH && total_bytes <= SMALL_BATCH_BYTES;
        if few {
            for (_, temp, _, _) in &batch {
                File::open(temp)
                    .and_then(|file| file.sync_all())
                    .map_err(|source| {
                        io_error(format!("could not sync {}", temp.display()), source)
                    })?;
            }
        } else {
            sync_filesystem(&self.root)?;
        }
        let mut dirs = Vec::new();
        for (_, temp, path, _) in &batch {
            match std::fs::rename(temp, path) {
                Ok(()) => {}
                // Renamed by an earlier settle that failed before it could unregister it.
                Err(err) if err.kind() == io::ErrorKind::NotFound && path.exists() => {}
                Err(source) => {
                    return Err(io_error(
                        format!("could not rename a temp file to {}", path.display()),
                        source,
                    ))
                }
            }
            if let Some(dir) = path.parent() {
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
            }
        }
        if few {
            for dir in dirs {
                sync_dir(dir)?;
            }
        } else {
            sync_filesystem(&self.root)?;
        }
        let mut staged = self.staged.chunks.lock().expect("staged registry");
        for (key, _, _, _) in &batch {
            if let Some(chunk) = staged.remove(key) {
                // Renamed already: nothing for the temp path to delete.
                let _ = chunk.temp.keep();
            }
        }
        Ok(())
    }
}

/// `syncfs(2)` of the filesystem holding `root`.
fn sync_filesystem(root: &Path) -> Result<(), StoreError> {
    syncstore_durable::sync_filesystem(root).map_err(|source| {
        io_error(
            format!("could not sync the filesystem of {}", root.display()),
            source,
        )
    })
}

/// Creates a user's chunk directory with its 256 fan-out directories, durably, once: built
/// under a temp name, synced, renamed into place, and the rename synced (four syncs instead of
/// an fsync per directory).
fn ensure_user_dir(root: &Path, user_dir: &Path) -> Result<(), StoreError> {
    if user_dir.is_dir() {
        return Ok(());
    }
    let building = tempfile::Builder::new()
        .prefix(".new-user-")
        .tempdir_in(root)
        .map_err(|source| {
            io_error(
                format!("could not create a directory in {}", root.display()),
                source,
            )
        })?;
    // tempfile leaves the mode to the umask.
    restrict_mode(building.path(), 0o700).map_err(|source| {
        io_error(
            format!("could not make {} private", building.path().display()),
            source,
        )
    })?;
    for byte in 0..=255u8 {
        let fan_out = building.path().join(format!("{byte:02x}"));
        private_dir_builder().create(&fan_out).map_err(|source| {
            io_error(format!("could not create {}", fan_out.display()), source)
        })?;
    }
    sync_filesystem(root)?;
    match std::fs::rename(building.path(), user_dir) {
        Ok(()) => {
            // The directory is in place: nothing for the temp dir to delete.
            let _ = building.keep();
            sync_dir(root)
        }
        // Another upload created it meanwhile (a non-empty directory cannot be replaced).
        Err(_) if user_dir.is_dir() => Ok(()),
        Err(source) => Err(io_error(
            format!("could not create {}", user_dir.display()),
            source,
        )),
    }
}

/// Removes what a killed process left: staged chunks' temp files (never named by a commit)
/// and half-built user directories.
fn remove_leftovers(root: &Path) -> Result<(), StoreError> {
    let read = |dir: &Path| {
        std::fs::read_dir(dir)
            .map_err(|source| io_error(format!("could not read {}", dir.display()), source))
    };
    for user in read(root)? {
        let user =
            user.map_err(|source| io_error(format!("could not read {}", root.display()), source))?;
        let user_path = user.path();
        if user.file_name().to_string_lossy().starts_with(".new-user-") {
            let _ = std::fs::remove_dir_all(&user_path);
            continue;
        }
        if !user_path.is_dir() {
            continue;
        }
        for fan_out in read(&user_path)? {
            let Ok(fan_out) = fan_out else { continue };
            let fan_out = fan_out.path();
            if !fan_out.is_dir() {
                continue;
            }
            for entry in read(&fan_out)?.flatten() {
                if entry.file_name().to_string_lossy().starts_with(".tmp") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
    Ok(())
}

/// Fsyncs a directory, so a rename or creation inside it survives power loss.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    syncstore_durable::sync_dir(dir).map_err(|source| {
        io_error(
            format!("could not sync directory {}", dir.display()),
            source,
        )
    })
}

pub(crate) fn io_error(context: String, source: io::Error) -> StoreError {
    StoreError::io(context, source)
}

/// Where chunks that failed verification are kept, under the store's root.
const QUARANTINE_DIR: &str = ".quarantine";

/// Moves a bad chunk file into the quarantine directory (durably), so it is never served again
/// and an upload can put the right bytes under its name.
fn move_aside(
    quarantine: &Path,
    owner: NamespaceId,
    hash: &ChunkHash,
    path: &Path,
) -> Result<PathBuf, StoreError> {
    create_private_dir_all(quarantine)
        .map_err(|source| io_error(format!("could not create {}", quarantine.display()), source))?;
    let suffix = hex::encode(rand::random::<[u8; 8]>());
    let aside = quarantine.join(format!("{owner}-{hash}.{suffix}"));
    std::fs::rename(path, &aside)
        .map_err(|source| io_error(format!("could not move {} aside", path.display()), source))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    sync_dir(quarantine)?;
    Ok(aside)
}

/// Every chunk file's hash under a namespace directory.
fn list_chunks(user_dir: &Path) -> Result<Vec<ChunkHash>, StoreError> {
    let read = |dir: &Path| {
        std::fs::read_dir(dir)
            .map_err(|source| io_error(format!("could not read {}", dir.display()), source))
    };
    let mut hashes = Vec::new();
    for fan_out in read(user_dir)?.flatten() {
        if !fan_out.path().is_dir() {
            continue;
        }
        for entry in read(&fan_out.path())?.flatten() {
            if let Ok(hash) = ChunkHash::from_hex(&entry.file_name().to_string_lossy()) {
                hashes.push(hash);
            }
        }
    }
    Ok(hashes)
}

/// A `DirBuilder` that makes owner-only (0700) directories; the umask can only narrow it.
fn private_dir_builder() -> std::fs::DirBuilder {
    use std::os::unix::fs::DirBuilderExt;
    let mut builder = std::fs::DirBuilder::new();
    builder.mode(0o700);
    builder
}

/// Creates `dir` and its missing parents with mode 0700, and narrows an existing `dir` that
/// others can read to 0700 (existing parents are left alone).
///
/// # Errors
/// IO errors.
pub(crate) fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    private_dir_builder().recursive(true).create(dir)?;
    restrict_mode(dir, 0o700)
}

/// Creates the file at `path` with mode 0600 if it does not exist, so whatever is written to it
/// later is never readable by others; narrows an existing one to 0600.
///
/// # Errors
/// IO errors.
pub(crate) fn create_private_file(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    restrict_mode(path, 0o600)
}

/// Sets the mode of `path` to `mode` when its permissions allow more than `mode`; a path that
/// does not exist is left alone.
///
/// # Errors
/// IO errors other than a missing path.
pub(crate) fn restrict_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    if metadata.permissions().mode() & 0o777 & !mode == 0 {
        return Ok(());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}
