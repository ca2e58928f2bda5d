//! Downloads: fetch the chunks a batch of files lacks in one stream, write each file to a temp
//! file (reusing chunks of the local file it replaces), verify, make durable, and place.
//!
//! Small edits of large files are written into the file instead (`in_place.rs`). Chunks another
//! local file holds are copied from it (`local_copy.rs`). Changed chunks of a file whose old
//! version is still here unchanged are fetched as deltas against the old chunks at their place
//! where the server can make them (`delta.rs`), the rest in the stream.
//!
//! Invariant: a file is placed only after every one of its chunks verified (fetched and copied
//! ones by hash, reused ones by the old file's stamp) and its temp file is durable, and only over what
//! the plan expected to find there (nothing: `RENAME_NOREPLACE`; a file: re-checked right
//! before the rename); base records it after the renames are durable.

use super::delta::DeltaBudget;
use super::local_copy::{read_copy, LocalCopies};
use super::{record, SyncEngine};
use crate::progress::Progress;
use crate::scan::Stamp;
use crate::seams::{BaseStore, Clock, Disk, Server, TempFile, World};

/// The temp file type of `W`'s disk.
type TempOf<W> = <<W as World>::Disk as Disk>::Temp;
use crate::Error;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{Read, Write};
use syncstore_plan::PlanOp;
use syncstore_proto::daemon::Direction;
use syncstore_proto::{ChunkHash, ContentHash, RelPath, RemoteEntry};

/// Most bytes fetched in one download request.
const DOWNLOAD_BATCH_BYTES: u64 = 64 * 1024 * 1024;
/// Most files fetched in one download request.
const DOWNLOAD_BATCH_FILES: usize = 2000;
/// Bytes of a download written between two requests to start writeback.
const WRITEBACK_BYTES: u64 = 8 * 1024 * 1024;
/// Free space a download leaves on the disk, for the state database's commit.
const DISK_RESERVE_BYTES: u64 = 1024 * 1024;

/// One file to download; `T` is the disk's temp file type.
pub(super) struct DownloadJob<T> {
    pub(super) path: RelPath,
    pub(super) entry: RemoteEntry,
    pub(super) expect_local: Option<ContentHash>,
    /// The executable bit the placed file gets.
    pub(super) executable: bool,
    /// Chunks available in the current local file: hash → (offset, len).
    pub(super) reuse: HashMap<ChunkHash, (u64, u32)>,
    /// The local file's stamp when `reuse` was taken from base (it must still have it after
    /// the reused chunks are read).
    pub(super) reuse_stamp: Option<Stamp>,
    /// A temp file fetched ahead from the upload stream of this version, holding its first
    /// chunks (how many), each verified; the download writes the rest after them.
    prefix: std::sync::Mutex<Option<(T, usize)>>,
    /// Bytes of `prefix` (fetched before the commit).
    prefetched_bytes: u64,
}

impl<T> DownloadJob<T> {
    /// How many of the entry's chunks the prefix holds.
    pub(super) fn prefix_len(&self) -> usize {
        self.prefix
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .map_or(0, |(_, n)| *n)
    }
}

/// What [`write_temp_files`] wrote: job index and temp file of each verified file, the jobs
/// whose temp file met a full disk (ENOSPC, EDQUOT), and the local files a chunk copied from
/// did not verify.
struct Written<T> {
    files: Vec<(usize, T)>,
    no_space: Vec<usize>,
    failed_sources: BTreeSet<RelPath>,
    /// Chunks copied from other local files into the files written.
    copied: u64,
}

impl<W: World> SyncEngine<W> {
    pub(super) async fn execute_downloads(&mut self, run: Vec<PlanOp>) -> Result<usize, Error> {
        let mut jobs = Vec::new();
        for op in run {
            let PlanOp::Download {
                path,
                remote,
                expect_local,
                executable,
            } = op
            else {
                unreachable!("only downloads are batched here")
            };
            let Some(entry) = self
                .remote
                .as_ref()
                .and_then(|r| r.by_path.get(&path))
                .cloned()
            else {
                continue;
            };
            if entry.node_id != remote.node_id || entry.rev != remote.rev || entry.hash.is_none() {
                self.retry_soon = true;
                continue;
            }
            // Chunks of the local file as it was agreed can be reused if it is still unchanged.
            let mut reuse = HashMap::new();
            let mut reuse_stamp = None;
            if let (Some(base), Some(chunks)) = (
                self.state.base().get(&path),
                self.state.base_chunks().get(&path),
            ) {
                let unchanged = self
                    .disk
                    .stat(&path)
                    .is_ok_and(|m| m.stamp() == Stamp::of_base(base));
                if unchanged {
                    reuse_stamp = Some(Stamp::of_base(base));
                    let mut offset = 0u64;
                    for chunk in chunks {
                        reuse.entry(chunk.hash).or_insert((offset, chunk.len));
                        offset += u64::from(chunk.len);
                    }
                }
            }
            let prefix = self.prefetched.take_prefix_of(&path, &entry.chunks);
            let prefetched_bytes = prefix.as_ref().map_or(0, |(_, n)| {
                entry.chunks[..*n].iter().map(|c| u64::from(c.len)).sum()
            });
            jobs.push(DownloadJob {
                path,
                entry,
                expect_local,
                executable,
                reuse,
                reuse_stamp,
                prefix: std::sync::Mutex::new(prefix),
                prefetched_bytes,
            });
        }
        // Small edits of large files are written in place (`in_place.rs`); the rest, and those
        // whose chunks could not be fetched, as new copies.
        let (in_place, mut jobs) = self.take_in_place(jobs);
        let mut applied = 0;
        for work in in_place {
            match self.download_in_place(work).await? {
                Ok(placed) => applied += usize::from(placed),
                Err(job) => jobs.push(job),
            }
        }
        let jobs = self.jobs_that_fit(jobs);
        // Batches bounded by bytes to fetch.
        let mut batch = Vec::new();
        let mut batch_bytes = 0u64;
        let mut jobs = jobs.into_iter().peekable();
        while let Some(job) = jobs.next() {
            batch_bytes += job.entry.chunks[job.prefix_len()..]
                .iter()
                .filter(|c| !job.reuse.contains_key(&c.hash))
                .map(|c| u64::from(c.len))
                .sum::<u64>();
            batch.push(job);
            if batch_bytes >= DOWNLOAD_BATCH_BYTES
                || batch.len() >= DOWNLOAD_BATCH_FILES
                || jobs.peek().is_none()
            {
                applied += self.download_batch(std::mem::take(&mut batch)).await?;
                batch_bytes = 0;
            }
        }
        Ok(applied)
    }

    /// The jobs whose files fit on the disk together, in plan order; every one that does not
    /// fit is reported (which file, how much space is missing) and waits for a retry with
    /// backoff, as space may appear later. Temp files live beside the folder's files, and each
    /// needs the whole file while the one it replaces is still there.
    fn jobs_that_fit(&mut self, jobs: Vec<DownloadJob<TempOf<W>>>) -> Vec<DownloadJob<TempOf<W>>> {
        let Ok(mut available) = self.disk.available_bytes() else {
            return jobs; // Unknown: writing tells (see `note_no_space`).
        };
        let mut fit = Vec::with_capacity(jobs.len());
        for job in jobs {
            let needed = job.entry.size.saturating_add(DISK_RESERVE_BYTES);
            if needed <= available {
                available -= job.entry.size;
                fit.push(job);
            } else {
                self.note_no_space(&job.path, job.entry.size, available);
            }
        }
        fit
    }

    /// `path` (`size` bytes) does not fit in the `available` bytes left: logged, and retried
    /// after the next backoff step.
    fn note_no_space(&mut self, path: &RelPath, size: u64, available: u64) {
        let wait = self.wait_before_retry(path);
        let missing = size
            .saturating_add(DISK_RESERVE_BYTES)
            .saturating_sub(available);
        tracing::warn!(
            %path,
            size,
            available,
            missing,
            retry_in = ?wait,
            "could not download {path}: not enough free space on the disk of {} ({size} bytes \
             needed, {available} available: {missing} bytes missing); retrying in {wait:?}",
            self.disk.root().display()
        );
    }

    /// Downloads a batch; when the server cannot serve some chunks (it lost them, or found them
    /// corrupt), the files that need them are reported by path and wait for a retry with
    /// backoff, while every other file of the batch is downloaded.
    async fn download_batch(&mut self, jobs: Vec<DownloadJob<TempOf<W>>>) -> Result<usize, Error> {
        let (err, jobs) = match self.try_download_batch(jobs, true).await {
            Ok(applied) => return Ok(applied),
            Err((err @ Error::Paused, _)) => return Err(err),
            Err(failed) => failed,
        };
        // Every chunk: a retry fetches the ones it reused or copied too.
        let fetch: BTreeSet<ChunkHash> = jobs
            .iter()
            .flat_map(|job| job.entry.chunks.iter().map(|chunk| chunk.hash))
            .collect();
        let missing: HashSet<ChunkHash> = match self
            .server
            .missing_chunks(fetch.into_iter().collect())
            .await
        {
            Ok(missing) => missing.into_iter().collect(),
            Err(_) => return Err(err),
        };
        if missing.is_empty() {
            return Err(err);
        }
        let mut rest = Vec::new();
        for job in jobs {
            match job.entry.chunks.iter().find(|c| missing.contains(&c.hash)) {
                Some(chunk) => {
                    let wait = self.wait_before_retry(&job.path);
                    tracing::warn!(
                        path = %job.path,
                        chunk = %chunk.hash,
                        retry_in = ?wait,
                        "could not download {}: the server lost chunk {} or found it corrupt (it \
                         asks the devices that have the file to upload it again)",
                        job.path,
                        chunk.hash
                    );
                }
                None => rest.push(DownloadJob {
                    reuse: HashMap::new(),
                    reuse_stamp: None,
                    ..job
                }),
            }
        }
        if rest.is_empty() {
            return Ok(0);
        }
        self.try_download_batch(rest, false)
            .await
            .map_err(|(err, _)| err)
    }

    /// One attempt at a batch, copying chunks from other local files if `copy_locally`; on a
    /// failure to fetch or write, the jobs come back with the error, so the caller can tell
    /// which files the failure was about.
    async fn try_download_batch(
        &mut self,
        jobs: Vec<DownloadJob<TempOf<W>>>,
        copy_locally: bool,
    ) -> Result<usize, (Error, Vec<DownloadJob<TempOf<W>>>)> {
        let started = self.clock.monotonic();
        let n_jobs = jobs.len();
        let copies = if copy_locally {
            self.find_local_copies(&jobs)
        } else {
            LocalCopies::default()
        };
        if copies.len() > 0 {
            tracing::debug!(
                chunks = copies.len(),
                "chunks of the download found in other local files"
            );
        }
        let by_delta = self.fetch_changed_chunks_by_delta(&jobs, &copies).await;
        // Which chunks to fetch, each once, in the order they are first needed.
        let mut fetch = Vec::new();
        let mut fetching = HashSet::new();
        for job in &jobs {
            let held = job.prefix_len();
            let prefetched: HashSet<ChunkHash> =
                job.entry.chunks[..held].iter().map(|c| c.hash).collect();
            for chunk in &job.entry.chunks[held..] {
                if !job.reuse.contains_key(&chunk.hash)
                    && !prefetched.contains(&chunk.hash)
                    && !copies.contains(&chunk.hash)
                    && !by_delta.contains_key(&chunk.hash)
                    && fetching.insert(chunk.hash)
                {
                    fetch.push(chunk.hash);
                }
            }
        }
        let stream = if fetch.is_empty() {
            None
        } else {
            match self.server.download_pack(fetch).await {
                Ok(stream) => Some(stream),
                Err(err) => return Err((err.into(), jobs)),
            }
        };
        let disk = &self.disk;
        let progress = &self.progress;
        let written = W::blocking(|| {
            let sources = ChunkSources {
                stream,
                by_delta: &by_delta,
                copies: &copies,
            };
            let written = write_temp_files(disk, &jobs, sources, progress)?;
            // Every temp file's bytes are durable before any is renamed into place.
            let temps: Vec<&<W::Disk as Disk>::Temp> =
                written.files.iter().map(|(_, t)| t).collect();
            disk.sync_temps(&temps)
                .map_err(|err| Error::io("could not make downloads durable", err))?;
            Ok::<_, Error>(written)
        });
        let written = match written {
            Ok(written) => written,
            Err(err) => return Err((err, jobs)),
        };
        let written_at = self.clock.monotonic().saturating_sub(started);
        for path in &written.failed_sources {
            tracing::warn!(%path, "a chunk copied from {path} did not verify: it is not copied from again");
        }
        self.failed_copy_sources.extend(written.failed_sources);
        self.chunks_copied += written.copied;
        for idx in &written.no_space {
            let job = &jobs[*idx];
            let available = self.disk.available_bytes().unwrap_or(0);
            self.note_no_space(&job.path, job.entry.size, available);
        }
        let mut applied = 0;
        let mut placed_dirs = BTreeSet::new();
        for (idx, temp) in written.files {
            let job = &jobs[idx];
            match W::blocking(|| self.place_download(job, temp)) {
                Ok(true) => {
                    applied += 1;
                    placed_dirs.insert(job.path.parent());
                }
                Ok(false) => self.retry_soon = true,
                Err(err) => {
                    tracing::warn!(path = %job.path, cause = %err, "could not place download");
                    self.retry_soon = true;
                }
            }
        }
        // The renames become durable before the batch's base updates are committed.
        let dirs: Vec<Option<RelPath>> = placed_dirs.into_iter().collect();
        if let Err(err) = W::blocking(|| self.disk.sync_dirs(&dirs)) {
            return Err((
                Error::io("could not make downloads durable", err),
                Vec::new(),
            ));
        }
        tracing::debug!(
            files = n_jobs,
            fetch_and_write = ?written_at,
            place = ?self.clock.monotonic().saturating_sub(started).saturating_sub(written_at),
            "download batch done"
        );
        Ok(applied)
    }

    /// The chunks of `jobs` that their local files (unchanged since base: `reuse` is set) do
    /// not hold, nor other local files (`copies`), fetched as deltas against the old chunks at
    /// their place where that works, at most as many as one [`DeltaBudget`] allows for the
    /// batch and while they hold less than
    /// [`super::delta::MAX_HELD_BYTES`] (they wait in memory for the temp files); each verified
    /// by hash.
    async fn fetch_changed_chunks_by_delta(
        &mut self,
        jobs: &[DownloadJob<TempOf<W>>],
        copies: &LocalCopies,
    ) -> HashMap<ChunkHash, Vec<u8>> {
        let mut by_delta = HashMap::new();
        let mut budget = DeltaBudget::default();
        for job in jobs.iter().filter(|job| !job.reuse.is_empty()) {
            if !budget.allows() {
                break;
            }
            let held = job.prefix_len();
            let mut needed = Vec::new();
            let mut offset = 0u64;
            for (index, chunk) in job.entry.chunks.iter().enumerate() {
                if index >= held
                    && !job.reuse.contains_key(&chunk.hash)
                    && !copies.contains(&chunk.hash)
                {
                    needed.push((offset, chunk.hash, chunk.len));
                }
                offset += u64::from(chunk.len);
            }
            self.fetch_by_deltas(&job.path, &needed, &mut by_delta, &mut budget)
                .await;
        }
        by_delta
    }

    /// Renames a finished download into place if the local path still holds what the plan saw.
    fn place_download(
        &mut self,
        job: &DownloadJob<TempOf<W>>,
        temp: <W::Disk as Disk>::Temp,
    ) -> Result<bool, Error> {
        if !self.disk.on_root_fs(&job.path) {
            tracing::info!(path = %job.path, "not placed: the directory is on another filesystem now (a disk mounted there)");
            return Ok(false);
        }
        // A synced file gets the mode of the file it replaces, or 0644, with the executable
        // bits set or cleared as the plan says (0644 becomes 0755).
        let mode = self.disk.stat(&job.path).map_or(0o644, |m| m.mode);
        let mode = crate::fsutil::with_executable(mode, job.executable);
        let shown = || format!("could not move download to {}", job.path);
        let placed_inode = temp.inode().ok();
        let placed = match job.expect_local {
            None => match self.disk.place(temp, &job.path, mode, false) {
                Ok(meta) => meta,
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                    tracing::info!(path = %job.path, "a local file appeared meanwhile; re-planning");
                    return Ok(false);
                }
                Err(err) => return Err(Error::io(shown(), err)),
            },
            Some(expected) => {
                if !self.local_file_has(&job.path, expected)? {
                    tracing::info!(path = %job.path, "local file changed meanwhile; re-planning");
                    return Ok(false);
                }
                self.disk
                    .place(temp, &job.path, mode, true)
                    .map_err(|err| Error::io(shown(), err))?
            }
        };
        // The file the rename placed, unless it changed in the moment since (a write between the
        // rename and its stat): that must not be recorded as the downloaded bytes. Then base gets
        // no stamp, and the next scan hashes the file again. (An editor's save over it since is
        // another inode: the next scan sees that by itself.)
        let intact = placed_inode == Some(placed.inode)
            && placed.size == job.entry.size
            && placed.mtime_ns == job.entry.mtime_ms.max(0) * 1_000_000;
        let stamp = if intact {
            placed.stamp()
        } else {
            tracing::info!(path = %job.path, "the file changed right after it was placed; it is hashed again");
            record::NO_STAMP
        };
        let hash = job.entry.hash.expect("downloads are files");
        if intact {
            let seen_at = self.disk.now_ns();
            self.cache
                .insert(job.path.clone(), stamp, seen_at, hash, &job.entry.chunks);
        }
        let node = record::file(&job.entry, hash, stamp);
        self.put_base(&job.path, node, job.entry.chunks.clone())?;
        if job.prefetched_bytes > 0 {
            tracing::info!(
                path = %job.path,
                prefetched_bytes = job.prefetched_bytes,
                size = job.entry.size,
                "placed {}: {} of its {} bytes were fetched from its upload stream before the commit",
                job.path,
                job.prefetched_bytes,
                job.entry.size
            );
        }
        // Placed: a later failure starts its backoff afresh.
        self.waits.remove(&job.path);
        self.progress.file_done(&job.path, Direction::Download);
        Ok(true)
    }
}

/// Where a batch's chunks come from, besides the local files they replace.
struct ChunkSources<'a, R> {
    /// The frames of the chunks fetched whole, in the order first needed.
    stream: Option<R>,
    /// Chunks made from deltas (verified when they were made).
    by_delta: &'a HashMap<ChunkHash, Vec<u8>>,
    /// Chunks other local files hold.
    copies: &'a LocalCopies,
}

/// Writes every job's content to a temp file: reused chunks from the local file, copied ones
/// from other local files, those made from deltas, the rest from the frame stream (each chunk
/// arrives once; later uses copy it from where it was written).
/// Chunks from the stream and copied ones are verified against their hashes; reused ones are
/// trusted while the local file keeps the stamp base recorded for them (checked after they are
/// read), the rule the scan follows too. Files that fail either check are dropped (and retried
/// by the next pass). Every [`WRITEBACK_BYTES`] written are handed to writeback, so the disk works while
/// the rest arrive and the fsync before the rename has little left to do. Each chunk written
/// is counted in `progress`; when the user paused syncing, the batch stops between two chunks
/// ([`Error::Paused`]; its temp files go).
fn write_temp_files<D: Disk>(
    disk: &D,
    jobs: &[DownloadJob<D::Temp>],
    sources: ChunkSources<'_, impl Read>,
    progress: &Progress,
) -> Result<Written<D::Temp>, Error> {
    let ChunkSources {
        stream,
        by_delta,
        copies,
    } = sources;
    let mut reader: Box<dyn Read> = match stream {
        Some(stream) => Box::new(stream),
        None => Box::new(std::io::empty()),
    };
    // Where each fetched chunk was written: job index → (offset, len).
    let mut fetched: HashMap<ChunkHash, (usize, u64, u32)> = HashMap::new();
    let mut out: Vec<(usize, D::Temp)> = Vec::new();
    let mut no_space = Vec::new();
    let mut failed_sources = BTreeSet::new();
    let mut copied = 0;
    // The source files of `copies` opened so far (`None`: could not be).
    let mut opened = HashMap::new();
    let mut buf = Vec::new();
    let early_end = |err: std::io::Error| Error::io("download stream ended early", err);
    for (idx, job) in jobs.iter().enumerate() {
        let prefix = job
            .prefix
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let (mut temp, held) = match prefix {
            Some((temp, held)) => (temp, held),
            None => (
                disk.create_temp()
                    .map_err(|err| Error::io("could not create temp file", err))?,
                0,
            ),
        };
        // Where each chunk of the prefix is in the temp file.
        let mut prefetched: HashMap<ChunkHash, u64> = HashMap::new();
        let mut at = 0u64;
        for chunk in &job.entry.chunks[..held] {
            prefetched.entry(chunk.hash).or_insert(at);
            at += u64::from(chunk.len);
        }
        let old_file = if job.reuse.is_empty() {
            None
        } else {
            disk.open(&job.path).ok()
        };
        let mut offset = at;
        let mut flushed = at;
        let mut ok = true;
        // The disk filled up while writing this file: its other frames are still read, to keep
        // the stream aligned, and its temp file goes (which frees the space for the next).
        let mut disk_full = false;
        let mut reused_any = false;
        let mut copied_here = 0;
        let flight = progress.transfer(&job.path, Direction::Download, job.entry.size);
        flight.add(at);
        for chunk in &job.entry.chunks[held..] {
            if progress.is_paused() {
                return Err(Error::Paused);
            }
            buf.resize(chunk.len as usize, 0);
            // A reused chunk was not requested from the server: if the old file is gone, the
            // file fails here (and is retried) without touching the stream.
            let mut from_stream = false;
            let mut from_delta = false;
            let got = if let Some(&from) = prefetched.get(&chunk.hash) {
                temp.read_exact_at(&mut buf, from).is_ok()
            } else if let Some(&(old_offset, _)) = job.reuse.get(&chunk.hash) {
                reused_any = true;
                old_file.as_ref().is_some_and(|old| {
                    crate::seams::DiskFile::read_exact_at(old, &mut buf, old_offset).is_ok()
                })
            } else if let Some(&(from, at, _)) = fetched.get(&chunk.hash) {
                if from == idx {
                    temp.read_exact_at(&mut buf, at).is_ok()
                } else {
                    out.iter()
                        .find(|(done, _)| *done == from)
                        .is_some_and(|(_, t)| t.read_exact_at(&mut buf, at).is_ok())
                }
            } else if let Some(copy) = copies.get(&chunk.hash) {
                let verified = read_copy(disk, &mut opened, copy, &chunk.hash, &mut buf);
                if verified {
                    copied_here += 1;
                } else {
                    failed_sources.insert(copy.1.clone());
                }
                verified
            } else if let Some(made) = by_delta.get(&chunk.hash) {
                from_delta = true;
                buf.clear();
                buf.extend_from_slice(made);
                made.len() == chunk.len as usize
            } else {
                from_stream = true;
                let mut header = [0u8; syncstore_proto::FRAME_HEADER_LEN];
                reader.read_exact(&mut header).map_err(early_end)?;
                let (hash, len) =
                    syncstore_proto::decode_frame_header(&header).map_err(Error::Protocol)?;
                if hash != chunk.hash || len != chunk.len {
                    return Err(Error::Protocol(format!(
                        "server sent chunk {hash} out of order"
                    )));
                }
                reader.read_exact(&mut buf).map_err(early_end)?;
                true
            };
            if !got || (from_stream && syncstore_chunk::hash_chunk(&buf) != chunk.hash) {
                ok = false;
                // Keep the stream aligned: frames of this file still have to be consumed.
                continue;
            }
            if disk_full {
                continue;
            }
            if let Err(err) = temp.write_all(&buf) {
                if crate::fsutil::is_out_of_space(&err) {
                    disk_full = true;
                    ok = false;
                    continue;
                }
                return Err(Error::io("could not write temp file", err));
            }
            if from_stream || from_delta {
                fetched.insert(chunk.hash, (idx, offset, chunk.len));
            }
            flight.add(u64::from(chunk.len));
            offset += u64::from(chunk.len);
            if offset - flushed >= WRITEBACK_BYTES {
                temp.start_writeback(flushed, offset - flushed);
                flushed = offset;
            }
        }
        if disk_full {
            // Chunks written to it cannot be copied from it any more.
            fetched.retain(|_, (from, _, _)| *from != idx);
            no_space.push(idx);
            continue;
        }
        if reused_any && disk.stat(&job.path).ok().map(|m| m.stamp()) != job.reuse_stamp {
            ok = false;
        }
        // Every chunk checked (fetched ones by hash, reused ones by stamp), in the order of the
        // entry's list: the content is the entry's if that list gives its hash (the server
        // checked that too).
        if !ok || Some(ContentHash::of_chunks(&job.entry.chunks)) != job.entry.hash {
            tracing::warn!(path = %job.path, "downloaded content did not verify; will retry");
            fetched.retain(|_, (from, _, _)| *from != idx);
            continue;
        }
        temp.set_mtime_ms(job.entry.mtime_ms)
            .map_err(|err| Error::io("could not set mtime", err))?;
        copied += copied_here;
        out.push((idx, temp));
    }
    Ok(Written {
        files: out,
        no_space,
        failed_sources,
        copied,
    })
}
