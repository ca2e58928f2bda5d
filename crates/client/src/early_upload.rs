//! Early upload: the chunks of a large file go to the server while the scan is still cutting it.
//!
//! The scan hands every chunk of a large changed file to [`EarlyUpload`] as it is cut (its file,
//! offset and reference; not its bytes). A task asks the server which of them it lacks, a pack
//! at a time, reads those back from the file (from the page cache, moments after the scan read
//! them) and uploads them, two packs in flight. By the time the plan says "upload", the chunks
//! are there and only the commit is left; chunking and sending overlap instead of following each
//! other.
//!
//! Once a pack is stored, the chunks of each file it carried are announced as a part of that
//! file's upload stream (`syncstore_proto::streams`), with the chunks before them that needed
//! no upload, so the user's other devices can fetch them before the commit. A file's stream
//! starts only when its first chunk needed an upload, or was the first chunk of a stream this
//! device started before for the same path ([`StreamStarts`]: a file still being written,
//! which each scan sees longer). A file whose start the server already holds otherwise (a
//! renamed or copied file, an editor's save through a temp file) is mostly chunks the other
//! devices hold too, which they copy from their own files once the version commits; fetching
//! it ahead would download it all. Announcements go in file order, one pack at a time.
//!
//! Nothing here decides anything: it only stores content-addressed chunks, which is harmless
//! when the plan then uploads nothing (the file was unchanged remotely, say) and cheap when the
//! server has them already (a renamed file: one `missing` query per pack, nothing sent). Every
//! failure is logged and dropped; the plan's own upload sends whatever is still missing.

use crate::engine::{read_chunk_into, send_by_delta, DeltaBudget, DELTA_MIN_BYTES};
use crate::http::ApiError;
use crate::seams::Server;
use crate::Error;
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use syncstore_proto::{ChunkHash, ChunkRef, RelPath, StreamPart};

/// Files smaller than this are uploaded by the plan alone (in batches of many small files).
pub const EARLY_UPLOAD_MIN_BYTES: u64 = 2 * syncstore_proto::CHUNK_MAX as u64;
/// Bytes of chunk references gathered before one `missing` query and one pack.
const PACK_BYTES: u64 = 8 * 1024 * 1024;
/// Chunk references the scan may run ahead of the uploads.
const QUEUE: usize = 64;
/// Packs in flight at once.
const IN_FLIGHT: usize = 2;

/// How many first chunks of started streams [`StreamStarts`] remembers.
const STREAM_STARTS_KEPT: usize = 64;

/// The paths and first chunks of the streams this device's early uploads started lately,
/// shared by the scans of one engine: a later scan of a file still being written starts its
/// stream again, though the server already holds its first chunk (the earlier scan uploaded
/// it). A copy of the file under another name does not.
#[derive(Clone, Default)]
pub struct StreamStarts(Arc<std::sync::Mutex<VecDeque<(RelPath, ChunkHash)>>>);

impl StreamStarts {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(RelPath, ChunkHash)>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn remember(&self, path: &RelPath, hash: ChunkHash) {
        let mut starts = self.lock();
        if !starts.iter().any(|(p, h)| p == path && *h == hash) {
            if starts.len() >= STREAM_STARTS_KEPT {
                starts.pop_front();
            }
            starts.push_back((path.clone(), hash));
        }
    }

    fn contains(&self, path: &RelPath, hash: &ChunkHash) -> bool {
        self.lock().iter().any(|(p, h)| p == path && h == hash)
    }
}

/// One chunk as the scan cut it.
struct CutChunk {
    file: Arc<PathBuf>,
    offset: u64,
    chunk: ChunkRef,
    /// The old chunks it replaces (an edit's), to send it as a delta against; or none.
    bases: Vec<ChunkHash>,
}

/// The upload task of one scan, and the sending end the scan feeds.
pub struct EarlyUpload {
    sender: Option<tokio::sync::mpsc::Sender<CutChunk>>,
    task: tokio::task::JoinHandle<()>,
}

impl EarlyUpload {
    /// Starts the upload task for the folder at `root`. Must be called within the Tokio
    /// runtime.
    pub fn start<S: Server>(api: S, root: PathBuf, starts: StreamStarts) -> EarlyUpload {
        let (sender, receiver) = tokio::sync::mpsc::channel(QUEUE);
        let task = tokio::spawn(run(api, root, starts, receiver));
        EarlyUpload {
            sender: Some(sender),
            task,
        }
    }

    /// What the scan calls with each chunk of a large file (from blocking code).
    pub fn sink(&self) -> ChunkSink {
        ChunkSink {
            sender: self.sender.clone(),
            file: None,
        }
    }

    /// Waits until every chunk handed over is uploaded (or given up on).
    pub async fn finish(mut self) {
        self.sender = None;
        if let Err(err) = self.task.await {
            tracing::warn!(cause = %err, "early upload task failed");
        }
    }
}

/// The scan's end of an [`EarlyUpload`].
pub struct ChunkSink {
    sender: Option<tokio::sync::mpsc::Sender<CutChunk>>,
    file: Option<Arc<PathBuf>>,
}

impl ChunkSink {
    /// Takes the chunk of `file` at `offset`, with the old chunks it replaces if it is an
    /// edit's (`bases`, to send it as a delta against them). Blocks while the uploads are a
    /// queue behind; must be called from blocking code (the scan runs in `block_in_place`).
    pub fn chunk(&mut self, file: &Path, offset: u64, chunk: ChunkRef, bases: Vec<ChunkHash>) {
        let Some(sender) = &self.sender else {
            return;
        };
        let file = match &self.file {
            Some(known) if known.as_path() == file => Arc::clone(known),
            _ => {
                let new = Arc::new(file.to_path_buf());
                self.file = Some(Arc::clone(&new));
                new
            }
        };
        let cut = CutChunk {
            file,
            offset,
            chunk,
            bases,
        };
        if sender.blocking_send(cut).is_err() {
            // The task ended (it gave up); the plan's upload does the work.
            self.sender = None;
        }
    }
}

/// The upload stream of one file: its chunks so far, and what was announced of them.
struct FileStream {
    /// `None` when the file is not under the folder, or its stream failed: nothing more is
    /// announced for it.
    path: Option<RelPath>,
    stream: String,
    size: u64,
    /// Every chunk cut so far, in file order.
    chunks: Vec<ChunkRef>,
    /// How many of `chunks` were announced.
    announced: usize,
    /// Whether a pack carried the file's first chunk (the stream has started).
    started: bool,
}

/// A pack in flight, and the files whose chunks it carried (announced once it is stored).
struct InFlight {
    upload: tokio::task::JoinHandle<Result<(), ApiError>>,
    /// Each file of the group and how many of its chunks were cut when the group was sent.
    files: Vec<(Arc<PathBuf>, usize)>,
}

async fn run<S: Server>(
    api: S,
    root: PathBuf,
    starts: StreamStarts,
    mut receiver: tokio::sync::mpsc::Receiver<CutChunk>,
) {
    let mut early = Early {
        api,
        root,
        starts,
        sent: HashSet::new(),
        deltas: DeltaBudget::default(),
        in_flight: VecDeque::new(),
        streams: HashMap::new(),
    };
    let mut group = Vec::new();
    let mut group_bytes = 0u64;
    let mut result = Ok(());
    while let Some(cut) = receiver.recv().await {
        early.cut(&cut);
        group_bytes += u64::from(cut.chunk.len);
        group.push(cut);
        if group_bytes >= PACK_BYTES {
            group_bytes = 0;
            result = early.send_group(std::mem::take(&mut group)).await;
            if result.is_err() {
                break;
            }
        }
    }
    // Dropping the receiver makes the scan's sends fail: it stops handing chunks over.
    drop(receiver);
    if result.is_ok() && !group.is_empty() {
        result = early.send_group(group).await;
    }
    if let Err(err) = result {
        tracing::debug!(cause = %err, "early upload stopped");
    }
    // Packs already sent are waited for either way: `finish` promises nothing is in flight.
    while let Some(pack) = early.in_flight.pop_front() {
        if early.landed(pack).await.is_err() {
            // The rest cannot be announced in order.
            for pack in early.in_flight.drain(..) {
                let _ = pack.upload.await;
            }
        }
    }
}

/// The state of one early upload task.
struct Early<S> {
    api: S,
    root: PathBuf,
    starts: StreamStarts,
    /// Which chunks may still be tried as deltas.
    deltas: DeltaBudget,
    /// Chunks sent (or found on the server) already.
    sent: HashSet<ChunkHash>,
    /// Packs in flight, oldest first.
    in_flight: VecDeque<InFlight>,
    streams: HashMap<Arc<PathBuf>, FileStream>,
}

impl<S: Server> Early<S> {
    /// Records a cut chunk in its file's stream.
    fn cut(&mut self, cut: &CutChunk) {
        let root = &self.root;
        let stream = self
            .streams
            .entry(Arc::clone(&cut.file))
            .or_insert_with(|| FileStream {
                path: cut
                    .file
                    .strip_prefix(root)
                    .ok()
                    .and_then(|rel| rel.to_str())
                    .and_then(|rel| RelPath::new(rel).ok()),
                stream: new_stream_name(),
                size: std::fs::metadata(cut.file.as_path()).map_or(0, |m| m.len()),
                chunks: Vec::new(),
                announced: 0,
                started: false,
            });
        // The scan cuts each file from its start, in order; anything else is not a stream.
        let expected: u64 = stream.chunks.iter().map(|c| u64::from(c.len)).sum();
        if expected == cut.offset {
            stream.chunks.push(cut.chunk);
        } else {
            stream.path = None;
        }
    }

    /// Asks which chunks of `group` the server lacks and sends those as one pack.
    async fn send_group(&mut self, group: Vec<CutChunk>) -> Result<(), Error> {
        let mut hashes: Vec<ChunkHash> = group
            .iter()
            .map(|cut| cut.chunk.hash)
            .filter(|hash| !self.sent.contains(hash))
            .collect();
        hashes.sort();
        hashes.dedup();
        let missing: HashSet<ChunkHash> = if hashes.is_empty() {
            HashSet::new()
        } else {
            self.api.missing_chunks(hashes).await?.into_iter().collect()
        };
        // The files this group carries chunks of, with how far each was cut.
        let mut files: Vec<(Arc<PathBuf>, usize)> = Vec::new();
        for cut in &group {
            if !files.iter().any(|(file, _)| Arc::ptr_eq(file, &cut.file)) {
                let cut_so_far = self.streams.get(&cut.file).map_or(0, |s| s.chunks.len());
                files.push((Arc::clone(&cut.file), cut_so_far));
            }
        }
        for cut in group.iter().filter(|cut| cut.offset == 0) {
            let Some(stream) = self.streams.get_mut(&cut.file) else {
                continue;
            };
            let Some(path) = &stream.path else { continue };
            let hash = cut.chunk.hash;
            if missing.contains(&hash) {
                self.starts.remember(path, hash);
                stream.started = true;
            } else if self.starts.contains(path, &hash) {
                stream.started = true;
            }
        }
        let sent = &mut self.sent;
        let wanted: Vec<CutChunk> = group
            .into_iter()
            .filter(|cut| missing.contains(&cut.chunk.hash) && sent.insert(cut.chunk.hash))
            .collect();
        let wanted = self.send_deltas(wanted).await;
        if wanted.is_empty() {
            // Nothing to upload: the group's chunks are on the server; announce them in turn.
            let done = tokio::spawn(async { Ok(()) });
            self.in_flight.push_back(InFlight {
                upload: done,
                files,
            });
            return self.land_while_over(0).await;
        }
        let pack = tokio::task::spawn_blocking(move || read_pack(&wanted))
            .await
            .map_err(|err| Error::Protocol(format!("early upload task failed: {err}")))?
            .map_err(|err| Error::io("could not read a chunk for early upload", err))?;
        self.land_while_over(IN_FLIGHT - 1).await?;
        let api = self.api.clone();
        let upload = tokio::spawn(async move { api.upload_pack(pack, false).await });
        self.in_flight.push_back(InFlight { upload, files });
        Ok(())
    }

    /// Sends the chunks of `wanted` that replace old ones as deltas against those, as far as
    /// the budget goes; gives back the rest, to go in the pack.
    async fn send_deltas(&mut self, wanted: Vec<CutChunk>) -> Vec<CutChunk> {
        let mut rest = Vec::with_capacity(wanted.len());
        for cut in wanted {
            if cut.bases.is_empty() || cut.chunk.len < DELTA_MIN_BYTES || !self.deltas.allows() {
                rest.push(cut);
                continue;
            }
            let (file, offset, chunk) = (Arc::clone(&cut.file), cut.offset, cut.chunk);
            let read = tokio::task::spawn_blocking(move || {
                let mut bytes = Vec::new();
                let file = std::fs::File::open(file.as_path()).ok()?;
                read_chunk_into(&file, offset, &chunk, &mut bytes).then_some(bytes)
            })
            .await;
            let Ok(Some(frame)) = read else {
                rest.push(cut);
                continue;
            };
            let bytes = &frame[syncstore_proto::FRAME_HEADER_LEN..];
            let sent = send_by_delta(&self.api, cut.chunk.hash, bytes, cut.bases.clone()).await;
            self.deltas.record(sent);
            if !sent {
                rest.push(cut);
            }
        }
        rest
    }

    /// Waits for the oldest packs until at most `limit` are in flight.
    async fn land_while_over(&mut self, limit: usize) -> Result<(), Error> {
        while self.in_flight.len() > limit {
            let pack = self.in_flight.pop_front().expect("over the limit");
            self.landed(pack).await?;
        }
        Ok(())
    }

    /// Waits for a pack, then announces what it made available of each of its files.
    async fn landed(&mut self, pack: InFlight) -> Result<(), Error> {
        match pack.upload.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(err.into()),
            Err(err) => return Err(Error::Protocol(format!("upload task failed: {err}"))),
        }
        for (file, cut_so_far) in pack.files {
            self.announce(&file, cut_so_far).await;
        }
        Ok(())
    }

    /// Announces the chunks of `file` up to `upto` that were not announced yet, if its stream
    /// has started; a refusal ends the file's stream (the plan's upload and commit go on).
    async fn announce(&mut self, file: &Arc<PathBuf>, upto: usize) {
        let Some(stream) = self.streams.get_mut(file) else {
            return;
        };
        let Some(path) = stream.path.clone() else {
            return;
        };
        if !stream.started || upto <= stream.announced {
            return;
        }
        while stream.announced < upto {
            let offset: u64 = stream.chunks[..stream.announced]
                .iter()
                .map(|c| u64::from(c.len))
                .sum();
            let end = upto.min(stream.announced + syncstore_proto::MAX_STREAM_PART_CHUNKS);
            let part = StreamPart {
                path: path.clone(),
                stream: stream.stream.clone(),
                size: stream.size,
                offset,
                chunks: stream.chunks[stream.announced..end].to_vec(),
            };
            match self.api.announce_stream(part).await {
                Ok(()) => stream.announced = end,
                Err(err) => {
                    tracing::debug!(file = %file.display(), cause = %err, "upload stream ended");
                    stream.path = None;
                    return;
                }
            }
        }
    }
}

/// A fresh stream name: 32 random hex digits.
fn new_stream_name() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The frames of `chunks`, read from their files. A file that changed since it was cut yields
/// bytes the server refuses (it checks every hash); that pack is lost, nothing else.
fn read_pack(chunks: &[CutChunk]) -> std::io::Result<bytes::Bytes> {
    let total: usize = chunks
        .iter()
        .map(|cut| syncstore_proto::FRAME_HEADER_LEN + cut.chunk.len as usize)
        .sum();
    let mut pack = Vec::with_capacity(total);
    let mut open: Option<(Arc<PathBuf>, std::fs::File)> = None;
    for cut in chunks {
        let file = match &open {
            Some((path, file)) if Arc::ptr_eq(path, &cut.file) => file,
            _ => {
                let file = std::fs::File::open(cut.file.as_path())?;
                &open.insert((Arc::clone(&cut.file), file)).1
            }
        };
        if !read_chunk_into(file, cut.offset, &cut.chunk, &mut pack) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{} is shorter than it was when cut", cut.file.display()),
            ));
        }
    }
    Ok(bytes::Bytes::from(pack))
}
