//! In-place downloads: a download over an unchanged local file of the same size, whose changed
//! ranges are a small part of it ([`crate::seams::InPlaceRule`]), writes only those ranges into
//! the file (`pwrite`) through a journal, instead of a whole new copy renamed over it.
//!
//! Invariant: the file is written only after a journal holding every new byte, the file's
//! identity (path, inode, size) and a BLAKE3 of the old bytes of each 4 KiB block of the ranges
//! is durable in `.syncstore/journal/`, and only while the opened file still has the stamp base
//! recorded for it and one link (checked on the descriptor right before the first write); the
//! journal goes only once the file is durable, and base records the new entry after that. A
//! journal a crash left behind is replayed before the first scan when every block of its ranges
//! holds its old or its new bytes (the file is the one it was written for, changed by nothing
//! else), and discarded otherwise; a torn journal (its BLAKE3 trailer does not match) is
//! discarded, as no byte of the file was written before it was durable.
//!
//! The trade-off: while the ranges are being written (milliseconds), and after a crash until
//! the daemon starts again and replays the journal, a reader of the file sees old and new bytes
//! mixed. A program writing the file during those milliseconds can have its write mixed in too.

use super::delta::{bases_for, fetch_by_delta, hashes, DeltaBudget, MAX_HELD_BYTES};
use super::download::DownloadJob;
use super::{record, SyncEngine};
use crate::seams::{BaseStore, Clock, Disk, DiskFile, InPlaceFile, Server, World};
use crate::Error;
use std::collections::HashMap;
use std::io::Read;
use syncstore_proto::daemon::Direction;
use syncstore_proto::{ChunkHash, ChunkRef, RelPath};

/// Bytes of the old content hashed together in a journal, at file offsets that are multiples
/// of it: the page size, below which neither a killed process nor (we assume, as SQLite's
/// "powersafe overwrite" does) a power loss tears a write.
const BLOCK: usize = 4096;
/// First bytes of every journal.
const MAGIC: &[u8; 8] = b"SSINPL01";

/// A download to write in place; `T` is the disk's temp file type.
pub(super) struct InPlaceJob<T> {
    job: DownloadJob<T>,
    /// The ranges to write: (offset, length), in order, not overlapping.
    ranges: Vec<(u64, u64)>,
}

/// An [`InPlaceJob`] on `W`'s disk.
pub(super) type InPlaceOf<W> = InPlaceJob<<<W as World>::Disk as Disk>::Temp>;
/// A [`DownloadJob`] on `W`'s disk.
type Job<W> = DownloadJob<<<W as World>::Disk as Disk>::Temp>;

/// What [`write_in_place`] did.
enum Outcome {
    /// Written, durably: the file's stat after it.
    Written(crate::seams::Meta),
    /// The file is no longer what the plan saw: nothing written, no journal left.
    Changed,
    /// The journal did not fit on the disk: nothing written, no journal left.
    NoSpace,
}

/// What an in-place journal records.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Journal {
    path: RelPath,
    inode: u64,
    size: u64,
    /// The mtime the file gets once written.
    mtime_ms: i64,
    ranges: Vec<JournalRange>,
}

/// One range of new bytes, with the BLAKE3 of each [`BLOCK`] of the old bytes it replaces.
#[derive(Clone, Debug, PartialEq, Eq)]
struct JournalRange {
    offset: u64,
    bytes: Vec<u8>,
    old_blocks: Vec<[u8; 32]>,
}

/// What replaying one journal did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Replayed {
    /// The file holds the journal's new bytes now (durably).
    Applied(RelPath),
    /// Nothing was written: the journal was torn, or its file is another one or changed.
    Discarded { journal: String, why: &'static str },
}

impl<W: World> SyncEngine<W> {
    /// Takes the downloads that go in place out of `jobs`: the local file still has base's
    /// stamp and content, the new size is the old one, and its changed ranges fit
    /// [`World::IN_PLACE`] (that it is a writable regular file with one link is checked when
    /// it is opened, in [`SyncEngine::download_in_place`]).
    pub(super) fn take_in_place(&mut self, jobs: Vec<Job<W>>) -> (Vec<InPlaceOf<W>>, Vec<Job<W>>) {
        let mut in_place = Vec::new();
        let mut rest = Vec::new();
        for job in jobs {
            match self.in_place_ranges(&job) {
                Some(ranges) => in_place.push(InPlaceJob { job, ranges }),
                None => rest.push(job),
            }
        }
        (in_place, rest)
    }

    /// The local file opened for writing in place, if it still has base's stamp, one link and
    /// its owner's write bit.
    fn open_unchanged(&self, job: &Job<W>) -> Option<<W::Disk as Disk>::InPlace> {
        let file = self.disk.open_in_place(&job.path).ok()?;
        let (meta, links) = file.stat().ok()?;
        let writable = meta.mode & 0o200 != 0;
        (Some(meta.stamp()) == job.reuse_stamp && links == 1 && writable).then_some(file)
    }

    /// The ranges (offset, length) a download over the unchanged base file must write, when
    /// they fit [`World::IN_PLACE`] and the size stays.
    fn in_place_ranges(&self, job: &Job<W>) -> Option<Vec<(u64, u64)>> {
        let stamp = job.reuse_stamp?;
        // A file fetched ahead from an upload stream is finished from that.
        if job.prefix_len() > 0 {
            return None;
        }
        let base = self.state.base().get(&job.path)?;
        if base.hash.is_none() || base.hash != job.expect_local || stamp.size != job.entry.size {
            return None;
        }
        let old_chunks = self.state.base_chunks().get(&job.path)?;
        let mut old_at: HashMap<u64, (ChunkHash, u32)> = HashMap::new();
        let mut offset = 0u64;
        for chunk in old_chunks {
            old_at.insert(offset, (chunk.hash, chunk.len));
            offset += u64::from(chunk.len);
        }
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        let mut offset = 0u64;
        for chunk in &job.entry.chunks {
            let len = u64::from(chunk.len);
            if old_at.get(&offset) != Some(&(chunk.hash, chunk.len)) {
                match ranges.last_mut() {
                    Some((start, range_len)) if *start + *range_len == offset => *range_len += len,
                    _ => ranges.push((offset, len)),
                }
            }
            offset += len;
        }
        let changed: u64 = ranges.iter().map(|(_, len)| len).sum();
        (offset == job.entry.size && W::IN_PLACE.applies(job.entry.size, changed)).then_some(ranges)
    }

    /// Downloads `work` in place; a job that cannot be (its chunks could not be fetched) comes
    /// back, for the temp-file path, which reports and retries what the server cannot serve.
    ///
    /// # Errors
    /// When the journal cannot be written or removed, or the file cannot be written.
    pub(super) async fn download_in_place(
        &mut self,
        work: InPlaceOf<W>,
    ) -> Result<Result<bool, Job<W>>, Error> {
        if self.progress.is_paused() {
            return Err(Error::Paused);
        }
        let started = self.clock.monotonic();
        let InPlaceJob { job, ranges } = work;
        let flight = self
            .progress
            .transfer(&job.path, Direction::Download, job.entry.size);
        // The chunks of the ranges: from the old file where it holds them (elsewhere), the
        // rest fetched once each.
        let mut fetch = Vec::new();
        let mut needed: Vec<(u64, ChunkHash, u32)> = Vec::new();
        let mut offset = 0u64;
        for chunk in &job.entry.chunks {
            let len = u64::from(chunk.len);
            if ranges
                .iter()
                .any(|(start, range_len)| offset >= *start && offset < start + range_len)
            {
                needed.push((offset, chunk.hash, chunk.len));
                if !job.reuse.contains_key(&chunk.hash) && !fetch.contains(&chunk.hash) {
                    fetch.push(chunk.hash);
                }
            }
            offset += len;
        }
        let mut fetched: HashMap<ChunkHash, Vec<u8>> = HashMap::new();
        let to_fetch: Vec<(u64, ChunkHash, u32)> = needed
            .iter()
            .copied()
            .filter(|(_, hash, _)| !job.reuse.contains_key(hash))
            .collect();
        let mut budget = DeltaBudget::default();
        self.fetch_by_deltas(&job.path, &to_fetch, &mut fetched, &mut budget)
            .await;
        fetch.retain(|hash| !fetched.contains_key(hash));
        if !fetch.is_empty() {
            let Ok(stream) = self.server.download_pack(fetch.clone()).await else {
                return Ok(Err(job));
            };
            match W::blocking(|| read_frames(stream, &fetch)) {
                Ok(frames) => fetched.extend(frames),
                Err(why) => {
                    tracing::warn!(path = %job.path, why, "in-place download failed; writing a copy");
                    return Ok(Err(job));
                }
            }
        }
        // Opened only now, so a run of many large files holds one descriptor at a time.
        let Some(file) = self.open_unchanged(&job) else {
            return Ok(Err(job));
        };
        let disk = &self.disk;
        let written = W::blocking(|| write_in_place(disk, &job, &file, &ranges, &needed, &fetched));
        let meta = match written? {
            Outcome::Written(meta) => meta,
            Outcome::Changed => {
                tracing::info!(path = %job.path, "local file changed meanwhile; re-planning");
                self.retry_soon = true;
                return Ok(Ok(false));
            }
            Outcome::NoSpace => return Ok(Err(job)),
        };
        flight.add(job.entry.size);
        // As `place_download`: the stamp recorded is the file's after the write, unless it
        // changed in the moment since.
        let intact = meta.inode == job.reuse_stamp.map_or(0, |s| s.inode)
            && meta.size == job.entry.size
            && meta.mtime_ns == job.entry.mtime_ms.max(0) * 1_000_000;
        let stamp = if intact {
            meta.stamp()
        } else {
            tracing::info!(path = %job.path, "the file changed right after it was written; it is hashed again");
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
        self.waits.remove(&job.path);
        self.progress.file_done(&job.path, Direction::Download);
        let changed: u64 = ranges.iter().map(|(_, len)| len).sum();
        tracing::debug!(
            path = %job.path,
            size = job.entry.size,
            changed,
            took = ?self.clock.monotonic().saturating_sub(started),
            "download batch done (in place)"
        );
        Ok(Ok(true))
    }

    /// Fetches what it can of `to_fetch` (chunks of `path`'s new version the device lacks, each
    /// with its offset in the new file) as deltas against the old chunks of `path` over the
    /// same range (which the unchanged local file still holds), into `fetched`, as far as
    /// `budget` allows and while `fetched` holds less than [`MAX_HELD_BYTES`]; each result is
    /// trusted only as it hashes to its chunk. What is not in `fetched` afterwards goes whole.
    /// Used by in-place downloads and by those through a temp file.
    pub(super) async fn fetch_by_deltas(
        &mut self,
        path: &RelPath,
        to_fetch: &[(u64, ChunkHash, u32)],
        fetched: &mut HashMap<ChunkHash, Vec<u8>>,
        budget: &mut DeltaBudget,
    ) {
        let worth_it = |&&(_, _, len): &&(u64, ChunkHash, u32)| len >= W::DELTA_MIN_BYTES;
        // Most files of a batch have no chunk large enough: no lookup, no open for them.
        if !budget.allows() || !to_fetch.iter().any(|c| worth_it(&c)) {
            return;
        }
        let Some(old) = self.state.base_chunks().get(path).cloned() else {
            return;
        };
        let Ok(file) = self.disk.open(path) else {
            return;
        };
        let mut held: usize = fetched.values().map(Vec::len).sum();
        for &(offset, hash, len) in to_fetch.iter().filter(worth_it) {
            if !budget.allows() || held >= MAX_HELD_BYTES {
                break;
            }
            if fetched.contains_key(&hash) {
                continue;
            }
            let bases = bases_for(&old, offset, len);
            let Some(first) = bases.first() else {
                continue;
            };
            // The bases are consecutive chunks of the old file; a wrong byte read (the file
            // changed since) only makes a result that does not hash to the chunk.
            let total: u64 = bases.iter().map(|b| u64::from(b.len)).sum();
            let mut base = vec![0u8; total as usize];
            if W::blocking(|| file.read_exact_at(&mut base, first.offset)).is_err() {
                continue;
            }
            let target = ChunkRef { hash, len };
            let made = fetch_by_delta(&self.server, target, &base, hashes(&bases)).await;
            budget.record(made.is_some());
            if let Some(chunk) = made {
                held += chunk.len();
                fetched.insert(hash, chunk);
            }
        }
    }

    /// Replays or discards the in-place journals a crash left (before the first scan).
    ///
    /// # Errors
    /// When the journals cannot be read or removed.
    pub(super) fn replay_in_place_journals(&mut self) -> Result<(), Error> {
        for replayed in replay_journals(&self.disk)? {
            match replayed {
                Replayed::Applied(path) => {
                    tracing::info!(%path, "finished an in-place download a crash interrupted")
                }
                Replayed::Discarded { journal, why } => {
                    tracing::warn!(journal, why, "discarded an in-place journal")
                }
            }
        }
        Ok(())
    }
}

/// The journal file's name for `path`.
fn journal_name(path: &RelPath) -> String {
    let hash = blake3::hash(path.as_str().as_bytes()).to_hex();
    format!("{}.journal", &hash[..32])
}

/// Reads the frames of `hashes`, in order, each verified against its hash.
fn read_frames(
    mut stream: impl Read,
    hashes: &[ChunkHash],
) -> Result<HashMap<ChunkHash, Vec<u8>>, &'static str> {
    let mut out = HashMap::new();
    for expected in hashes {
        let mut header = [0u8; syncstore_proto::FRAME_HEADER_LEN];
        stream
            .read_exact(&mut header)
            .map_err(|_| "the download stream ended early")?;
        let (hash, len) = syncstore_proto::decode_frame_header(&header)
            .map_err(|_| "the server sent a bad frame")?;
        if hash != *expected {
            return Err("the server sent a chunk out of order");
        }
        let mut bytes = vec![0u8; len as usize];
        stream
            .read_exact(&mut bytes)
            .map_err(|_| "the download stream ended early")?;
        if syncstore_chunk::hash_chunk(&bytes) != hash {
            return Err("a chunk did not verify");
        }
        out.insert(hash, bytes);
    }
    Ok(out)
}

/// Builds the ranges' new bytes, writes the journal, writes the ranges, sets the mtime (and
/// the executable bit), makes it durable and removes the journal. `None`: the file changed
/// since the plan (nothing written, no journal left).
fn write_in_place<D: Disk>(
    disk: &D,
    job: &DownloadJob<D::Temp>,
    file: &D::InPlace,
    ranges: &[(u64, u64)],
    needed: &[(u64, ChunkHash, u32)],
    fetched: &HashMap<ChunkHash, Vec<u8>>,
) -> Result<Outcome, Error> {
    let io = |what: &str| {
        let text = format!("could not {what} {} in place", job.path);
        move |err| Error::io(text, err)
    };
    let stamp = job.reuse_stamp.expect("in-place jobs have base's stamp");
    let still_base = |file: &D::InPlace| -> Result<bool, Error> {
        let (meta, links) = file.stat().map_err(io("look at"))?;
        Ok(meta.stamp() == stamp && links == 1)
    };
    // Every range's new bytes and the old bytes' block hashes, read before anything is written
    // (a moved chunk is read from where the old file holds it).
    let mut journal = Journal {
        path: job.path.clone(),
        inode: stamp.inode,
        size: job.entry.size,
        mtime_ms: job.entry.mtime_ms,
        ranges: Vec::with_capacity(ranges.len()),
    };
    for &(start, len) in ranges {
        let mut bytes = Vec::with_capacity(len as usize);
        for &(offset, hash, chunk_len) in needed {
            if offset < start || offset >= start + len {
                continue;
            }
            if let Some(chunk) = fetched.get(&hash) {
                bytes.extend_from_slice(chunk);
            } else {
                let &(old_offset, _) = job.reuse.get(&hash).expect("reused or fetched");
                let at = bytes.len();
                bytes.resize(at + chunk_len as usize, 0);
                file.read_exact_at(&mut bytes[at..], old_offset)
                    .map_err(io("read"))?;
            }
        }
        let mut old = vec![0u8; len as usize];
        file.read_exact_at(&mut old, start).map_err(io("read"))?;
        journal.ranges.push(JournalRange {
            offset: start,
            bytes,
            old_blocks: block_hashes(start, &old),
        });
    }
    // The bytes read (reused chunks, old blocks) are the base's while the stamp holds.
    if !still_base(file)? {
        return Ok(Outcome::Changed);
    }
    let name = journal_name(&job.path);
    if let Err(err) = disk.write_journal(&name, &encode(&journal)) {
        if crate::fsutil::is_out_of_space(&err) {
            disk.remove_journal(&name)
                .map_err(io("remove the journal of"))?;
            return Ok(Outcome::NoSpace);
        }
        return Err(io("journal the write to")(err));
    }
    // The re-check right before the first write: the file is still what the plan saw.
    if !still_base(file)? {
        disk.remove_journal(&name)
            .map_err(io("remove the journal of"))?;
        return Ok(Outcome::Changed);
    }
    let written = write_journalled(disk, job, file, &journal, &name);
    // On a failure, what the journal says is finished now if it can be, else at the next start.
    if written.is_err() && replay(disk, &journal).is_ok() {
        let _ = disk.remove_journal(&name);
    }
    written.map(Outcome::Written)
}

/// The journalled part of [`write_in_place`]: the ranges, the mtime and mode, durably, then
/// the journal goes.
fn write_journalled<D: Disk>(
    disk: &D,
    job: &DownloadJob<D::Temp>,
    file: &D::InPlace,
    journal: &Journal,
    name: &str,
) -> Result<crate::seams::Meta, Error> {
    let io = |what: &str| {
        let text = format!("could not {what} {} in place", job.path);
        move |err| Error::io(text, err)
    };
    for range in &journal.ranges {
        file.write_all_at(&range.bytes, range.offset)
            .map_err(io("write"))?;
    }
    file.set_mtime_ms(job.entry.mtime_ms)
        .map_err(io("set the mtime of"))?;
    let (meta, _) = file.stat().map_err(io("look at"))?;
    if meta.executable() != job.executable {
        let mode = crate::fsutil::with_executable(meta.mode, job.executable);
        disk.set_mode(&job.path, mode)
            .map_err(io("set the mode of"))?;
    }
    file.sync().map_err(io("make durable"))?;
    let (meta, _) = file.stat().map_err(io("look at"))?;
    disk.remove_journal(name)
        .map_err(io("remove the journal of"))?;
    Ok(meta)
}

/// Replays every journal whose file is still the one it was written for, unchanged by anything
/// else; discards the others (torn ones included).
///
/// # Errors
/// When the journals cannot be listed, read or removed.
pub(crate) fn replay_journals<D: Disk>(disk: &D) -> Result<Vec<Replayed>, Error> {
    let journals = disk
        .journals()
        .map_err(|err| Error::io("could not read the in-place journals", err))?;
    let mut out = Vec::new();
    for (name, bytes) in journals {
        let outcome = match decode(&bytes) {
            None => Err("torn (a crash while it was written; the file was not touched)"),
            Some(journal) => replay(disk, &journal).map(|()| journal.path),
        };
        disk.remove_journal(&name)
            .map_err(|err| Error::io(format!("could not remove the journal {name}"), err))?;
        out.push(match outcome {
            Ok(path) => Replayed::Applied(path),
            Err(why) => Replayed::Discarded { journal: name, why },
        });
    }
    Ok(out)
}

fn replay<D: Disk>(disk: &D, journal: &Journal) -> Result<(), &'static str> {
    let file = disk
        .open_in_place(&journal.path)
        .map_err(|_| "its file is gone")?;
    let (meta, links) = file.stat().map_err(|_| "its file cannot be read")?;
    if meta.inode != journal.inode || meta.size != journal.size || links != 1 {
        return Err("its file was replaced since");
    }
    for range in &journal.ranges {
        let mut now = vec![0u8; range.bytes.len()];
        file.read_exact_at(&mut now, range.offset)
            .map_err(|_| "its file cannot be read")?;
        for (block, old) in blocks(range.offset, now.len()).zip(&range.old_blocks) {
            let (now, new) = (&now[block.clone()], &range.bytes[block]);
            if now != new && blake3::hash(now).as_bytes() != old {
                return Err("its file was changed since");
            }
        }
    }
    for range in &journal.ranges {
        file.write_all_at(&range.bytes, range.offset)
            .map_err(|_| "its file cannot be written")?;
    }
    file.set_mtime_ms(journal.mtime_ms)
        .map_err(|_| "its file cannot be written")?;
    file.sync().map_err(|_| "its file cannot be made durable")
}

/// The blocks of `len` bytes at file offset `offset`, as ranges of those bytes: cut where the
/// file offset is a multiple of [`BLOCK`].
fn blocks(offset: u64, len: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let first = (BLOCK - (offset % BLOCK as u64) as usize) % BLOCK;
    let mut cuts = vec![0];
    cuts.extend((first..len).step_by(BLOCK).filter(|cut| *cut > 0));
    cuts.push(len);
    cuts.dedup();
    (0..cuts.len() - 1).map(move |i| cuts[i]..cuts[i + 1])
}

/// The BLAKE3 of each block of `bytes`, which are at file offset `offset`.
fn block_hashes(offset: u64, bytes: &[u8]) -> Vec<[u8; 32]> {
    blocks(offset, bytes.len())
        .map(|block| *blake3::hash(&bytes[block]).as_bytes())
        .collect()
}

/// The journal's bytes: [`MAGIC`], the body's length, the body, and the body's BLAKE3.
fn encode(journal: &Journal) -> Vec<u8> {
    let mut body = Vec::new();
    let path = journal.path.as_str().as_bytes();
    body.extend_from_slice(&(path.len() as u32).to_le_bytes());
    body.extend_from_slice(path);
    body.extend_from_slice(&journal.inode.to_le_bytes());
    body.extend_from_slice(&journal.size.to_le_bytes());
    body.extend_from_slice(&journal.mtime_ms.to_le_bytes());
    body.extend_from_slice(&(journal.ranges.len() as u32).to_le_bytes());
    for range in &journal.ranges {
        body.extend_from_slice(&range.offset.to_le_bytes());
        body.extend_from_slice(&(range.bytes.len() as u64).to_le_bytes());
        body.extend_from_slice(&range.bytes);
        for old in &range.old_blocks {
            body.extend_from_slice(old);
        }
    }
    let mut out = Vec::with_capacity(body.len() + 48);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(blake3::hash(&body).as_bytes());
    out
}

/// A journal's content; `None` when it is torn or no journal.
fn decode(bytes: &[u8]) -> Option<Journal> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let (len, rest) = rest.split_first_chunk::<8>()?;
    let len = usize::try_from(u64::from_le_bytes(*len)).ok()?;
    if rest.len() != len.checked_add(32)? {
        return None;
    }
    let (body, sum) = rest.split_at(len);
    if blake3::hash(body).as_bytes() != sum {
        return None;
    }
    let mut reader = Reader(body);
    let path_len = reader.u32()? as usize;
    let path = RelPath::new(std::str::from_utf8(reader.take(path_len)?).ok()?).ok()?;
    let inode = reader.u64()?;
    let size = reader.u64()?;
    let mtime_ms = reader.u64()? as i64;
    let n_ranges = reader.u32()?;
    let mut ranges = Vec::new();
    for _ in 0..n_ranges {
        let offset = reader.u64()?;
        let len = usize::try_from(reader.u64()?).ok()?;
        let bytes = reader.take(len)?.to_vec();
        let n_blocks = blocks(offset, len).count();
        let mut old_blocks = Vec::with_capacity(n_blocks);
        for _ in 0..n_blocks {
            old_blocks.push(*reader.take(32)?.first_chunk::<32>()?);
        }
        offset.checked_add(len as u64).filter(|end| *end <= size)?;
        ranges.push(JournalRange {
            offset,
            bytes,
            old_blocks,
        });
    }
    reader.0.is_empty().then_some(Journal {
        path,
        inode,
        size,
        mtime_ms,
        ranges,
    })
}

/// Reads a journal's body front to back.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(*self.take(4)?.first_chunk::<4>()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(*self.take(8)?.first_chunk::<8>()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folder::FolderId;
    use crate::seams::OsDisk;
    use std::os::unix::fs::{FileExt, MetadataExt};
    use std::path::Path;

    /// An [`OsDisk`] over a fresh folder holding `big.bin` with `content`.
    fn folder(dir: &Path, content: &[u8]) -> OsDisk {
        let meta_dir = dir.join(".syncstore");
        std::fs::create_dir_all(meta_dir.join("tmp")).unwrap();
        std::fs::write(meta_dir.join("state.sqlite"), b"").unwrap();
        std::fs::write(dir.join("big.bin"), content).unwrap();
        let folder = FolderId::open(dir, &meta_dir.join("state.sqlite")).unwrap();
        OsDisk::new(dir, meta_dir.join("tmp"), folder).unwrap()
    }

    fn big() -> RelPath {
        RelPath::new("big.bin").unwrap()
    }

    /// A journal replacing `old[offset..offset + new.len()]` of `big.bin` with `new`.
    fn journal_of(dir: &Path, old: &[u8], offset: usize, new: &[u8]) -> Journal {
        let old_range = &old[offset..offset + new.len()];
        Journal {
            path: big(),
            inode: std::fs::metadata(dir.join("big.bin")).unwrap().ino(),
            size: old.len() as u64,
            mtime_ms: 1_700_000_000_000,
            ranges: vec![JournalRange {
                offset: offset as u64,
                bytes: new.to_vec(),
                old_blocks: block_hashes(offset as u64, old_range),
            }],
        }
    }

    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    #[test]
    fn blocks_are_cut_at_page_boundaries_of_the_file() {
        let cut = |offset: u64, len: usize| blocks(offset, len).collect::<Vec<_>>();
        assert_eq!(cut(0, 2 * BLOCK), [0..BLOCK, BLOCK..2 * BLOCK]);
        assert_eq!(cut(100, BLOCK), [0..BLOCK - 100, BLOCK - 100..BLOCK]);
        let whole = |len: usize| std::iter::once(0..len).collect::<Vec<_>>();
        assert_eq!(cut(BLOCK as u64 - 1, 1), whole(1));
        assert_eq!(cut(5, 10), whole(10));
        assert_eq!(cut(7, 0), Vec::<std::ops::Range<usize>>::new());
    }

    #[test]
    fn a_journal_reads_back_and_any_cut_or_flipped_bit_is_torn() {
        let journal = Journal {
            path: RelPath::new("dir/big.bin").unwrap(),
            inode: 42,
            size: 3 * BLOCK as u64,
            mtime_ms: -5,
            ranges: vec![JournalRange {
                offset: 10,
                bytes: bytes(BLOCK + 7, 1),
                old_blocks: vec![[7; 32], [9; 32]],
            }],
        };
        let encoded = encode(&journal);
        assert_eq!(decode(&encoded), Some(journal));
        for cut in [0, 8, 16, encoded.len() / 2, encoded.len() - 1] {
            assert_eq!(decode(&encoded[..cut]), None, "cut at {cut}");
        }
        for at in [0, 20, encoded.len() / 2, encoded.len() - 1] {
            let mut flipped = encoded.clone();
            flipped[at] ^= 1;
            assert_eq!(decode(&flipped), None, "bit flipped at {at}");
        }
    }

    #[test]
    fn replay_finishes_a_write_a_crash_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        let old = bytes(16 * BLOCK, 3);
        let disk = folder(dir.path(), &old);
        // A range that starts and ends inside pages.
        let (start, new) = (5 * BLOCK + 100, bytes(3 * BLOCK, 200));
        let journal = journal_of(dir.path(), &old, start, &new);
        disk.write_journal(&journal_name(&big()), &encode(&journal))
            .unwrap();
        // The crash came after the range's first pages were written: up to a page boundary.
        let mut torn = old.clone();
        let cut = 7 * BLOCK;
        torn[start..cut].copy_from_slice(&new[..cut - start]);
        std::fs::write(dir.path().join("big.bin"), &torn).unwrap();
        let replayed = replay_journals(&disk).unwrap();
        assert_eq!(replayed, vec![Replayed::Applied(big())]);
        let mut expected = old.clone();
        expected[start..start + new.len()].copy_from_slice(&new);
        assert_eq!(std::fs::read(dir.path().join("big.bin")).unwrap(), expected);
        assert!(disk.journals().unwrap().is_empty(), "the journal is gone");
        let mtime = std::fs::metadata(dir.path().join("big.bin"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(
            mtime,
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_000)
        );
    }

    #[test]
    fn a_torn_journal_is_discarded_and_the_file_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let old = bytes(8 * BLOCK, 3);
        let disk = folder(dir.path(), &old);
        let journal = journal_of(dir.path(), &old, BLOCK, &bytes(BLOCK, 9));
        let encoded = encode(&journal);
        disk.write_journal("torn.journal", &encoded[..encoded.len() - 40])
            .unwrap();
        let replayed = replay_journals(&disk).unwrap();
        assert!(
            matches!(&replayed[..], [Replayed::Discarded { journal, .. }] if journal == "torn.journal"),
            "{replayed:?}"
        );
        assert_eq!(std::fs::read(dir.path().join("big.bin")).unwrap(), old);
        assert!(disk.journals().unwrap().is_empty());
    }

    #[test]
    fn a_replaced_or_changed_file_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let old = bytes(8 * BLOCK, 3);
        let disk = folder(dir.path(), &old);
        let journal = journal_of(dir.path(), &old, BLOCK, &bytes(2 * BLOCK, 9));
        let name = journal_name(&big());
        // Replaced (an editor's save: another inode, the same size).
        disk.write_journal(&name, &encode(&journal)).unwrap();
        let saved = bytes(8 * BLOCK, 77);
        std::fs::write(dir.path().join("saved.tmp"), &saved).unwrap();
        std::fs::rename(dir.path().join("saved.tmp"), dir.path().join("big.bin")).unwrap();
        let replayed = replay_journals(&disk).unwrap();
        assert!(
            matches!(&replayed[..], [Replayed::Discarded { why, .. }] if why.contains("replaced")),
            "{replayed:?}"
        );
        assert_eq!(std::fs::read(dir.path().join("big.bin")).unwrap(), saved);
        // Changed in place within the range (the user wrote it after the crash).
        let journal = journal_of(dir.path(), &saved, BLOCK, &bytes(2 * BLOCK, 9));
        disk.write_journal(&name, &encode(&journal)).unwrap();
        let mut changed = saved.clone();
        changed[2 * BLOCK + 100] ^= 0xff;
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("big.bin"))
            .unwrap()
            .write_all_at(&changed[2 * BLOCK..3 * BLOCK], 2 * BLOCK as u64)
            .unwrap();
        let replayed = replay_journals(&disk).unwrap();
        assert!(
            matches!(&replayed[..], [Replayed::Discarded { why, .. }] if why.contains("changed")),
            "{replayed:?}"
        );
        assert_eq!(std::fs::read(dir.path().join("big.bin")).unwrap(), changed);
        assert!(disk.journals().unwrap().is_empty());
    }
}
