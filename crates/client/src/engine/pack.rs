//! Chunk packs: reading chunks back from local files into upload packs, and the repair uploads
//! the server asks for (chunks it lost, or found corrupt and moved aside).
//!
//! Invariant: a chunk is read from a file only while the file has the stamp its chunk list was
//! made at (checked after the read, too); the server verifies every chunk's bytes against its
//! hash besides.

use super::SyncEngine;
use crate::http::ApiError;
use crate::scan::Stamp;
use crate::seams::{BaseStore, Disk, DiskFile, Server, World};
use crate::Error;
use std::collections::BTreeSet;
use syncstore_proto::{encode_frame_header, ChunkHash, ChunkRef, RelPath};

/// Target size of one upload pack.
pub(super) const PACK_BYTES: usize = 8 * 1024 * 1024;
/// Most hashes in one `missing` query.
pub(super) const MISSING_BATCH: usize = 20_000;

/// Appends the frame of `chunk` (read from `file` at `offset`) to `pack`; false if the file is
/// too short for it now. The bytes are not hashed again here: the server checks every chunk.
pub(crate) fn read_chunk_into(
    file: &impl DiskFile,
    offset: u64,
    chunk: &ChunkRef,
    pack: &mut Vec<u8>,
) -> bool {
    let start = pack.len();
    pack.extend_from_slice(&encode_frame_header(&chunk.hash, chunk.len));
    let data_start = pack.len();
    pack.resize(data_start + chunk.len as usize, 0);
    if file.read_exact_at(&mut pack[data_start..], offset).is_err() {
        pack.truncate(start);
        return false;
    }
    true
}

/// Waits for one upload of `in_flight`; its error, or the task's, is the result.
pub(crate) async fn join_upload(
    in_flight: &mut tokio::task::JoinSet<Result<(), ApiError>>,
) -> Result<(), Error> {
    match in_flight.join_next().await {
        Some(Ok(result)) => Ok(result?),
        Some(Err(err)) => Err(Error::Protocol(format!("upload task failed: {err}"))),
        None => Ok(()),
    }
}

/// Which of `hashes` the server lacks, asked in batches.
pub(super) async fn missing_of(
    server: &impl Server,
    hashes: &[ChunkHash],
) -> Result<BTreeSet<ChunkHash>, ApiError> {
    let mut missing = BTreeSet::new();
    for batch in hashes.chunks(MISSING_BATCH) {
        missing.extend(server.missing_chunks(batch.to_vec()).await?);
    }
    Ok(missing)
}

/// Uploads a pack of chunks the server asked for; a failure is logged (the server keeps
/// asking until some device answers).
async fn send_wanted(server: &impl Server, pack: Vec<u8>) {
    if let Err(err) = server.upload_pack(bytes::Bytes::from(pack), true).await {
        tracing::warn!(cause = %err, "could not upload the chunks the server asked for");
    }
}

impl<W: World> SyncEngine<W> {
    /// Uploads again the chunks the server asked for (it lost them, or found them corrupt and
    /// moved them aside), from local files that still hold what base recorded for them.
    /// Failures are logged: the request stays on the server's list until some device answers.
    pub(super) async fn upload_wanted(&mut self) {
        let wanted = std::mem::take(&mut self.wanted);
        // Each local file holding wanted chunks: its stamp in base, and (offset, chunk) of them.
        type Source = (RelPath, Stamp, Vec<(u64, ChunkRef)>);
        let mut sources: Vec<Source> = Vec::new();
        let mut found = BTreeSet::new();
        for (path, chunks) in self.state.base_chunks() {
            let mut offset = 0u64;
            let mut here = Vec::new();
            for chunk in chunks {
                if wanted.contains(&chunk.hash) && found.insert(chunk.hash) {
                    here.push((offset, *chunk));
                }
                offset += u64::from(chunk.len);
            }
            if here.is_empty() {
                continue;
            }
            let Some(base) = self.state.base().get(path) else {
                continue;
            };
            sources.push((path.clone(), Stamp::of_base(base), here));
        }
        if sources.is_empty() {
            tracing::debug!(
                n = wanted.len(),
                "the server wants chunks this device does not have"
            );
            return;
        }
        let mut pack = Vec::new();
        let mut n_chunks = 0usize;
        for (path, stamp, chunks) in sources {
            // Only a file that still holds what base recorded holds the wanted bytes.
            if self.disk.stat(&path).ok().map(|m| m.stamp()) != Some(stamp) {
                continue;
            }
            let Ok(file) = self.disk.open(&path) else {
                continue;
            };
            for (offset, chunk) in chunks {
                if W::blocking(|| read_chunk_into(&file, offset, &chunk, &mut pack)) {
                    n_chunks += 1;
                }
            }
            if pack.len() >= PACK_BYTES {
                self.progress.moved(pack.len() as u64);
                send_wanted(&self.server, std::mem::take(&mut pack)).await;
            }
        }
        if !pack.is_empty() {
            self.progress.moved(pack.len() as u64);
            send_wanted(&self.server, pack).await;
        }
        tracing::warn!(
            n_chunks,
            "uploaded again chunks the server had lost or found corrupt"
        );
    }

    /// Asks the server whether it still has every chunk of base, and uploads again those it
    /// lost (the daemon calls this at start and now and then: a chunk file deleted on the
    /// server is noticed even when no device tries to download it).
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub async fn check_server_chunks(&mut self) -> Result<(), Error> {
        let all: BTreeSet<ChunkHash> = self
            .state
            .base_chunks()
            .values()
            .flat_map(|chunks| chunks.iter().map(|chunk| chunk.hash))
            .collect();
        let all: Vec<ChunkHash> = all.into_iter().collect();
        let missing = missing_of(&self.server, &all).await?;
        if !missing.is_empty() {
            tracing::warn!(
                n = missing.len(),
                "the server lacks chunks of files this folder synced; uploading them again"
            );
            self.wanted.extend(missing);
            self.upload_wanted().await;
        }
        Ok(())
    }
}
