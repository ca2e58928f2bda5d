//! Early upload: the chunks of a large file go to the server while the scan is still cutting it.
//!
//! The scan hands every chunk of a large changed file to [`EarlyUpload`] as it is cut (its file,
//! offset and reference; not its bytes). A task asks the server which of them it lacks, a pack
//! at a time, reads those back from the file (from the page cache, moments after the scan read
//! them) and uploads them, two packs in flight. By the time the plan says "upload", the chunks
//! are there and only the commit is left; chunking and sending overlap instead of following each
//! other.
//!
//! Nothing here decides anything: it only stores content-addressed chunks, which is harmless
//! when the plan then uploads nothing (the file was unchanged remotely, say) and cheap when the
//! server has them already (a renamed file: one `missing` query per pack, nothing sent). Every
//! failure is logged and dropped; the plan's own upload sends whatever is still missing.

use crate::engine::{join_upload, read_chunk_into};
use crate::seams::Server;
use crate::Error;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use syncstore_proto::{ChunkHash, ChunkRef};

/// Files smaller than this are uploaded by the plan alone (in batches of many small files).
pub const EARLY_UPLOAD_MIN_BYTES: u64 = 2 * syncstore_proto::CHUNK_MAX as u64;
/// Bytes of chunk references gathered before one `missing` query and one pack.
const PACK_BYTES: u64 = 8 * 1024 * 1024;
/// Chunk references the scan may run ahead of the uploads.
const QUEUE: usize = 64;
/// Packs in flight at once.
const IN_FLIGHT: usize = 2;

/// One chunk as the scan cut it.
struct CutChunk {
    file: Arc<PathBuf>,
    offset: u64,
    chunk: ChunkRef,
}

/// The upload task of one scan, and the sending end the scan feeds.
pub struct EarlyUpload {
    sender: Option<tokio::sync::mpsc::Sender<CutChunk>>,
    task: tokio::task::JoinHandle<()>,
}

impl EarlyUpload {
    /// Starts the upload task. Must be called within the Tokio runtime.
    pub fn start<S: Server>(api: S) -> EarlyUpload {
        let (sender, receiver) = tokio::sync::mpsc::channel(QUEUE);
        let task = tokio::spawn(run(api, receiver));
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
    /// Takes the chunk of `file` at `offset`. Blocks while the uploads are a queue behind; must
    /// be called from blocking code (the scan runs in `block_in_place`).
    pub fn chunk(&mut self, file: &Path, offset: u64, chunk: ChunkRef) {
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
        };
        if sender.blocking_send(cut).is_err() {
            // The task ended (it gave up); the plan's upload does the work.
            self.sender = None;
        }
    }
}

async fn run<S: Server>(api: S, mut receiver: tokio::sync::mpsc::Receiver<CutChunk>) {
    let mut group = Vec::new();
    let mut group_bytes = 0u64;
    let mut sent = HashSet::new();
    let mut in_flight = tokio::task::JoinSet::new();
    let mut result = Ok(());
    while let Some(cut) = receiver.recv().await {
        group_bytes += u64::from(cut.chunk.len);
        group.push(cut);
        if group_bytes >= PACK_BYTES {
            group_bytes = 0;
            result = send_group(&api, std::mem::take(&mut group), &mut sent, &mut in_flight).await;
            if result.is_err() {
                break;
            }
        }
    }
    // Dropping the receiver makes the scan's sends fail: it stops handing chunks over.
    drop(receiver);
    if result.is_ok() && !group.is_empty() {
        result = send_group(&api, group, &mut sent, &mut in_flight).await;
    }
    if let Err(err) = result {
        tracing::debug!(cause = %err, "early upload stopped");
    }
    // Packs already sent are waited for either way: `finish` promises nothing is in flight.
    while !in_flight.is_empty() {
        if let Err(err) = join_upload(&mut in_flight).await {
            tracing::debug!(cause = %err, "early upload of a pack failed");
        }
    }
}

/// Asks which chunks of `group` the server lacks and sends those as one pack.
async fn send_group<S: Server>(
    api: &S,
    group: Vec<CutChunk>,
    sent: &mut HashSet<ChunkHash>,
    in_flight: &mut tokio::task::JoinSet<Result<(), crate::http::ApiError>>,
) -> Result<(), Error> {
    let mut hashes: Vec<ChunkHash> = group
        .iter()
        .map(|cut| cut.chunk.hash)
        .filter(|hash| !sent.contains(hash))
        .collect();
    hashes.sort();
    hashes.dedup();
    if hashes.is_empty() {
        return Ok(());
    }
    let missing: HashSet<ChunkHash> = api.missing_chunks(hashes).await?.into_iter().collect();
    let wanted: Vec<CutChunk> = group
        .into_iter()
        .filter(|cut| missing.contains(&cut.chunk.hash) && sent.insert(cut.chunk.hash))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let pack = tokio::task::spawn_blocking(move || read_pack(&wanted))
        .await
        .map_err(|err| Error::Protocol(format!("early upload task failed: {err}")))?
        .map_err(|err| Error::io("could not read a chunk for early upload", err))?;
    while in_flight.len() >= IN_FLIGHT {
        join_upload(in_flight).await?;
    }
    let api = api.clone();
    in_flight.spawn(async move { api.upload_pack(pack, false).await });
    Ok(())
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
