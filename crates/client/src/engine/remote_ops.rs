//! Steps applied on the server: deletes, moves, directories and mode changes, in `/ops`
//! batches, and the base updates their answers allow.
//!
//! Invariant: every op is conditional on the revision the plan saw (or on nothing existing),
//! and base changes only for an op the server answered 200; an answer from a diverged history
//! applies nothing.

use super::{record, SyncEngine};
use crate::seams::{BaseStore, Disk, Server, World};
use crate::Error;
use syncstore_plan::PlanOp;
use syncstore_proto::{Op, OpResult, RelPath, RemoteEntry, Revision};

/// Most ops in one `/ops` request.
const OPS_BATCH: usize = 1000;

impl<W: World> SyncEngine<W> {
    /// Sends ops in batches and hands each applied result to `on_result` (with the revision
    /// the batch's changes were written at); counts the applied ones.
    pub(super) async fn send_ops(
        &mut self,
        ops: Vec<Op>,
        mut on_result: impl FnMut(&mut SyncEngine<W>, usize, &OpResult, Revision) -> Result<(), Error>,
    ) -> Result<usize, Error> {
        let mut applied = 0;
        let mut offset = 0;
        let mut ops = ops;
        while !ops.is_empty() {
            let rest = ops.split_off(ops.len().min(OPS_BATCH));
            let batch = std::mem::replace(&mut ops, rest);
            let n = batch.len();
            // Only the paths are needed afterwards (for the log); the ops, with their chunk
            // lists, are moved into the request.
            let paths: Vec<RelPath> = batch.iter().map(|op| op.path().clone()).collect();
            let response = self.server.ops(batch, self.identity.known).await?;
            self.check_history(response.diverged, None);
            if response.results.len() != n {
                return Err(Error::Protocol(format!(
                    "server answered {} results for {n} ops",
                    response.results.len()
                )));
            }
            if !response.diverged {
                self.note_known(response.cursor, response.cursor_tag);
            }
            let written_at = Revision::written_at(response.cursor);
            for (idx, (path, result)) in paths.iter().zip(&response.results).enumerate() {
                if result.status == 200 {
                    if let Some(remote) = self.remote.as_mut() {
                        for entry in &result.entries {
                            remote.upsert(entry.clone());
                        }
                    }
                    on_result(self, offset + idx, result, written_at)?;
                    applied += 1;
                } else if result.status == 507 {
                    // Over the account's quota: like a full server, the file waits with backoff
                    // (and `status` says so) instead of being tried again at once.
                    let wait = self.wait_before_retry(path);
                    let size = self.disk.stat(path).map_or(0, |meta| meta.size);
                    tracing::warn!(%path, retry_in = ?wait, message = %result.message, "not uploaded: over the account's quota");
                    self.notices.push(super::locks::Notice::UploadWaits {
                        path: path.clone(),
                        size,
                    });
                } else {
                    self.retry_soon = true;
                    tracing::info!(%path, status = result.status, message = %result.message, "server refused a step; re-planning");
                }
            }
            offset += n;
        }
        Ok(applied)
    }

    pub(super) async fn execute_remote_ops(&mut self, run: Vec<PlanOp>) -> Result<usize, Error> {
        let mut ops = Vec::new();
        for op in &run {
            ops.push(match op {
                PlanOp::DeleteRemote { path, rev } => Op::Delete {
                    path: path.clone(),
                    base: *rev,
                },
                PlanOp::MoveRemote { from, to, rev } => Op::Move {
                    from: from.clone(),
                    to: to.clone(),
                    base: *rev,
                },
                PlanOp::SetModeRemote {
                    path,
                    rev,
                    executable,
                    ..
                } => Op::SetMode {
                    path: path.clone(),
                    base: *rev,
                    executable: *executable,
                },
                PlanOp::MakeDirRemote { path } => {
                    let mtime_ms = self.disk.stat(path).map_or(0, |m| m.mtime_ns / 1_000_000);
                    Op::MakeDir {
                        path: path.clone(),
                        mtime_ms,
                    }
                }
                _ => unreachable!("only remote ops are batched here"),
            });
        }
        self.send_ops(ops, |engine, idx, result, written_at| {
            match &run[idx] {
                PlanOp::DeleteRemote { path, .. } => {
                    if let Some(remote) = engine.remote.as_mut() {
                        if let Some(node_id) = remote.by_path.get(path).map(|e| e.node_id) {
                            remote.delete(node_id, written_at);
                        }
                    }
                    engine.state.remove(path)?;
                }
                PlanOp::MoveRemote { from, to, .. } => {
                    engine.state.rebase(from, to)?;
                    engine.cache.rebase(from, to);
                    engine.refresh_base_revs(&result.entries)?;
                }
                PlanOp::SetModeRemote { path, node, .. } => {
                    // The node the plan saw, with the server's new revision: no content moved.
                    if let Some(entry) = result.entries.iter().find(|e| &e.path == path) {
                        engine.put_base(
                            path,
                            record::with_mode(node, entry),
                            entry.chunks.clone(),
                        )?;
                    }
                }
                PlanOp::MakeDirRemote { path } => {
                    let stamp = engine
                        .disk
                        .stat(path)
                        .map_or(record::NO_STAMP, |m| m.stamp());
                    if let Some(entry) = result.entries.iter().find(|e| &e.path == path) {
                        let node = record::dir(entry.node_id, entry.rev, stamp);
                        engine.put_base(path, node, Vec::new())?;
                    }
                }
                _ => {}
            }
            Ok(())
        })
        .await
    }

    /// After the server moved nodes, base takes their new revisions.
    pub(super) fn refresh_base_revs(&mut self, entries: &[RemoteEntry]) -> Result<(), Error> {
        for entry in entries {
            let Some(node) = self.state.base().get(&entry.path) else {
                continue;
            };
            if let Some(node) = record::moved(node, entry) {
                let chunks = self
                    .state
                    .base_chunks()
                    .get(&entry.path)
                    .cloned()
                    .unwrap_or_default();
                self.put_base(&entry.path, node, chunks)?;
            }
        }
        Ok(())
    }
}
