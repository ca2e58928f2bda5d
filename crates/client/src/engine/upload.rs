//! Uploads: chunk the files (or take the scan's chunks), send the chunks the server lacks in
//! packs, then commit each file with a conditional `PutFile`.
//!
//! Invariant: a file is committed only with the content its stamp had when it was read: it is
//! chunked again unless the scan's chunks are for its current stamp, and dropped from the
//! commit when its stamp changed while its chunks were read back; the server refuses chunks
//! whose bytes do not match their hashes (422), which then waits for the file to settle.

use super::delta::{bases_for, send_by_delta, DeltaBudget};
use super::pack::{join_upload, missing_of, read_chunk_into, PACK_BYTES};
use super::{local::set_executable, record, Notice, SyncEngine};
use crate::http::ApiError;
use crate::scan::Stamp;
use crate::seams::{BaseStore, Clock, Disk, Server, World};
use crate::Error;
use std::collections::BTreeSet;
use syncstore_plan::PlanOp;
use syncstore_proto::daemon::Direction;
use syncstore_proto::{ChunkHash, Op, Precondition, RelPath};

/// Most files uploaded and committed as one group.
const UPLOAD_GROUP: usize = 1000;
/// Packs in flight at once.
const IN_FLIGHT: usize = 2;

/// A file ready to be uploaded: its chunks, and the stamp they were made at.
struct Prepared {
    path: RelPath,
    base: Precondition,
    manifest: syncstore_chunk::Manifest,
    stamp: Stamp,
    executable: bool,
}

/// The path of an upload step.
fn upload_path(op: &PlanOp) -> &RelPath {
    match op {
        PlanOp::Upload { path, .. } => path,
        other => unreachable!("not an upload: {other:?}"),
    }
}

impl<W: World> SyncEngine<W> {
    /// A run of uploads, in groups, each committed before the next is read: other devices
    /// start downloading the first group while this one uploads the rest.
    pub(super) async fn execute_upload_run(
        &mut self,
        mut run: Vec<PlanOp>,
    ) -> Result<usize, Error> {
        let mut n = 0;
        while !run.is_empty() {
            let rest = run.split_off(run.len().min(UPLOAD_GROUP));
            let group = std::mem::replace(&mut run, rest);
            n += self.upload_group(group).await?;
        }
        Ok(n)
    }

    /// Uploads and commits a group; a full server is answered by uploading the files one at a
    /// time, smallest first, so every file that fits still goes, and those that do not wait
    /// for a retry with backoff.
    async fn upload_group(&mut self, group: Vec<PlanOp>) -> Result<usize, Error> {
        match self.execute_uploads(group.clone()).await {
            Ok(n) => Ok(n),
            Err(err) if err.api_status() == Some(422) => {
                self.upload_settling(&err);
                Ok(0)
            }
            Err(err) if err.api_status() == Some(507) && group.len() > 1 => {
                tracing::warn!(cause = %err, "the server's storage is full; uploading file by file, smallest first");
                let mut by_size: Vec<(u64, PlanOp)> = group
                    .into_iter()
                    .map(|op| (self.local_size(upload_path(&op)), op))
                    .collect();
                by_size.sort_by(|(a, op_a), (b, op_b)| {
                    a.cmp(b)
                        .then_with(|| upload_path(op_a).cmp(upload_path(op_b)))
                });
                let mut n = 0;
                for (size, op) in by_size {
                    let path = upload_path(&op).clone();
                    match self.execute_uploads(vec![op]).await {
                        Ok(applied) => n += applied,
                        Err(err) if err.api_status() == Some(507) => {
                            self.upload_full(&path, size, &err)
                        }
                        Err(err) if err.api_status() == Some(422) => self.upload_settling(&err),
                        Err(err) => return Err(err),
                    }
                }
                Ok(n)
            }
            Err(err) if err.api_status() == Some(507) => {
                let path = upload_path(&group[0]).clone();
                let size = self.local_size(&path);
                self.upload_full(&path, size, &err);
                Ok(0)
            }
            Err(err) => Err(err),
        }
    }

    /// The size of the local file at `path` now (`u64::MAX` when it cannot be read, so it sorts
    /// last).
    fn local_size(&self, path: &RelPath) -> u64 {
        self.disk.stat(path).map_or(u64::MAX, |meta| meta.size)
    }

    /// A chunk did not match its hash at the server: the file changed while it was read.
    fn upload_settling(&mut self, err: &Error) {
        tracing::info!(cause = %err, "a file changed while it was uploaded; will retry when it settles");
        self.retry_soon = true;
    }

    /// The server had no room for a file: it waits for a retry with backoff.
    fn upload_full(&mut self, path: &RelPath, size: u64, err: &Error) {
        let wait = self.wait_before_retry(path);
        tracing::warn!(%path, size, retry_in = ?wait, cause = %err, "not uploaded: the server's storage is full");
        self.notices.push(Notice::UploadWaits {
            path: path.clone(),
            size,
        });
    }

    /// The chunks of the file at `path` for an upload of `hash`: as the scan found them if the
    /// file is unchanged since, else chunked again (checking it did not change while being
    /// read). `None`: the file no longer holds `hash`, or changed while being read.
    fn prepare_upload(
        &self,
        path: &RelPath,
        hash: syncstore_proto::ContentHash,
        executable: bool,
    ) -> std::io::Result<Option<(syncstore_chunk::Manifest, Stamp)>> {
        // Row 34: the file goes up with the mode the plan merged (the remote's new bit, say),
        // so it gets that bit here first; a chmod changes no bytes.
        set_executable(&self.disk, path, executable)?;
        let before = self.disk.stat(path)?.stamp();
        if let Some(manifest) = self.cache.manifest(path, before) {
            return Ok((manifest.hash == hash).then_some((manifest, before)));
        }
        let mut file = self.disk.open(path)?;
        let manifest = syncstore_chunk::manifest_of(&mut file)?;
        let after = self.disk.stat(path)?.stamp();
        if before != after || manifest.size != after.size || manifest.hash != hash {
            return Ok(None);
        }
        Ok(Some((manifest, after)))
    }

    async fn execute_uploads(&mut self, run: Vec<PlanOp>) -> Result<usize, Error> {
        let started = self.clock.monotonic();
        // 1. The chunks of every file.
        let mut prepared = Vec::new();
        for op in run {
            let PlanOp::Upload {
                path,
                base,
                hash,
                executable,
            } = op
            else {
                unreachable!("only uploads are batched here")
            };
            match W::blocking(|| self.prepare_upload(&path, hash, executable)) {
                Ok(Some((manifest, stamp))) => prepared.push(Prepared {
                    path,
                    base,
                    manifest,
                    stamp,
                    executable,
                }),
                Ok(None) => {
                    tracing::info!(%path, "file changed while being read; will retry when it settles");
                    self.retry_soon = true;
                }
                Err(err) => {
                    tracing::warn!(%path, cause = %err, "could not read file for upload");
                    self.retry_soon = true;
                }
            }
        }
        if prepared.is_empty() {
            return Ok(0);
        }
        let prepared_at = self.clock.monotonic().saturating_sub(started);
        // 2. Ask which chunks the server lacks.
        let all: BTreeSet<ChunkHash> = prepared
            .iter()
            .flat_map(|p| p.manifest.chunks.iter().map(|c| c.hash))
            .collect();
        let all: Vec<ChunkHash> = all.into_iter().collect();
        let mut missing = missing_of(&self.server, &all).await?;
        // 3. Send the missing chunks in packs, reading each from its file again. A file that
        // changed since it was chunked is caught by its stamp after the read, or else by the
        // server, which stores no chunk whose bytes do not hash to its name.
        let mut failed: BTreeSet<usize> = BTreeSet::new();
        let mut pack = Vec::with_capacity(PACK_BYTES + syncstore_proto::CHUNK_MAX as usize);
        let mut in_flight: tokio::task::JoinSet<Result<(), ApiError>> = tokio::task::JoinSet::new();
        let mut deltas = DeltaBudget::default();
        for (file_idx, item) in prepared.iter().enumerate() {
            let mut offset = 0u64;
            let Ok(file) = self.disk.open(&item.path) else {
                failed.insert(file_idx);
                continue;
            };
            // Chunks the server has already count as moved: they need not be sent.
            let flight = self
                .progress
                .transfer(&item.path, Direction::Upload, item.manifest.size);
            // The chunks an edit changed go as deltas against the ones they replace.
            let previous = self.state.base_chunks().get(&item.path).cloned();
            for chunk in &item.manifest.chunks {
                flight.add(u64::from(chunk.len));
                if missing.remove(&chunk.hash) {
                    let frame_start = pack.len();
                    let ok = W::blocking(|| read_chunk_into(&file, offset, chunk, &mut pack));
                    if !ok {
                        // Another file with the same chunk must still send it.
                        missing.insert(chunk.hash);
                        failed.insert(file_idx);
                        break;
                    }
                    let bases = match &previous {
                        Some(old) if chunk.len >= W::DELTA_MIN_BYTES && deltas.allows() => {
                            bases_for(old, offset, chunk.len)
                        }
                        _ => Vec::new(),
                    };
                    if !bases.is_empty() {
                        let bytes = &pack[frame_start + syncstore_proto::FRAME_HEADER_LEN..];
                        let bases = bases.iter().map(|b| b.hash).collect();
                        let sent = send_by_delta(&self.server, chunk.hash, bytes, bases).await;
                        deltas.record(sent);
                        if sent {
                            pack.truncate(frame_start);
                        }
                    }
                    if pack.len() >= PACK_BYTES {
                        let body = bytes::Bytes::from(std::mem::take(&mut pack));
                        pack.reserve(PACK_BYTES + syncstore_proto::CHUNK_MAX as usize);
                        while in_flight.len() >= IN_FLIGHT {
                            join_upload(&mut in_flight).await?;
                        }
                        let server = self.server.clone();
                        in_flight.spawn(async move { server.upload_pack(body, false).await });
                    }
                }
                offset += u64::from(chunk.len);
            }
            if self.disk.stat(&item.path).ok().map(|m| m.stamp()) != Some(item.stamp) {
                failed.insert(file_idx);
            }
        }
        if !pack.is_empty() {
            let server = self.server.clone();
            let body = bytes::Bytes::from(pack);
            in_flight.spawn(async move { server.upload_pack(body, false).await });
        }
        while !in_flight.is_empty() {
            join_upload(&mut in_flight).await?;
        }
        let uploaded_at = self.clock.monotonic().saturating_sub(started);
        // 4. Commit the files, each conditional on what the plan saw.
        let committed: Vec<Prepared> = prepared
            .into_iter()
            .enumerate()
            .filter(|(idx, _)| !failed.contains(idx))
            .map(|(_, p)| p)
            .collect();
        if !failed.is_empty() {
            self.retry_soon = true;
        }
        let ops = committed
            .iter()
            .map(|p| Op::PutFile {
                path: p.path.clone(),
                base: p.base,
                size: p.manifest.size,
                mtime_ms: p.stamp.mtime_ns / 1_000_000,
                hash: p.manifest.hash,
                chunks: p.manifest.chunks.clone(),
                executable: p.executable,
            })
            .collect();
        let applied = self
            .send_ops(ops, |engine, idx, result, _| {
                let item = &committed[idx];
                let Some(entry) = result.entries.iter().find(|e| e.path == item.path) else {
                    return Err(Error::Protocol(format!(
                        "server did not return the uploaded file {}",
                        item.path
                    )));
                };
                let node = record::file(entry, item.manifest.hash, item.stamp);
                engine.put_base(&item.path, node, item.manifest.chunks.clone())?;
                engine.progress.file_done(&item.path, Direction::Upload);
                Ok(())
            })
            .await?;
        tracing::debug!(
            files = committed.len(),
            prepare = ?prepared_at,
            upload = ?uploaded_at - prepared_at,
            commit = ?self.clock.monotonic().saturating_sub(started) - uploaded_at,
            "upload group done"
        );
        Ok(applied)
    }
}
