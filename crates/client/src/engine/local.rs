//! Local steps: deletes, directories, moves, conflicted copies, mode changes and base-only
//! records.
//!
//! Invariant: a local step destroys or replaces only bytes the plan saw: a delete runs only on
//! a file whose stamp is the one checked (against the plan's hash) when its base entry was
//! cleared, and that clearing is committed before any file of the run is deleted; renames
//! never replace (`RENAME_NOREPLACE`). The run's directory entries are durable before base
//! records them.

use super::SyncEngine;
use crate::scan::Stamp;
use crate::seams::{BaseStore, Clock, Disk, FileKind, World};
use crate::Error;
use std::collections::{BTreeSet, HashMap};
use syncstore_plan::PlanOp;
use syncstore_proto::{ContentHash, RelPath, RemoteEntry};

/// Sets or clears the executable bits of the regular file at `path`, keeping its other mode
/// bits; returns whether the mode changed.
///
/// # Errors
/// When it cannot be stat'ed, is no regular file, or its mode cannot be set.
pub(super) fn set_executable(
    disk: &impl Disk,
    path: &RelPath,
    executable: bool,
) -> std::io::Result<bool> {
    let meta = disk.stat(path)?;
    if meta.kind != FileKind::File {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{path} is not a regular file"),
        ));
    }
    let wanted = crate::fsutil::with_executable(meta.mode, executable);
    if wanted == meta.mode {
        return Ok(false);
    }
    disk.set_mode(path, wanted)?;
    Ok(true)
}

/// The directories whose entries the local ops of `run` change (`None`: the root).
fn touched_dirs(run: &[PlanOp]) -> BTreeSet<Option<RelPath>> {
    let mut dirs = BTreeSet::new();
    for op in run {
        match op {
            PlanOp::DeleteLocal { path, .. }
            | PlanOp::RemoveDirLocal { path }
            | PlanOp::MakeDirLocal { path, .. } => {
                dirs.insert(path.parent());
            }
            PlanOp::MoveLocal { from, to } => {
                dirs.insert(from.parent());
                dirs.insert(to.parent());
            }
            PlanOp::ConflictCopy { path, copy } => {
                dirs.insert(path.parent());
                dirs.insert(copy.parent());
            }
            _ => {}
        }
    }
    dirs
}

/// The directories to sync once `run` was applied: those whose entries it changed, but not
/// one it removed (nor what lay beneath it), which cannot be opened any more: its parent,
/// synced too, makes the removal durable. `gone`: whether a directory no longer exists.
fn dirs_to_sync(run: &[PlanOp], gone: impl Fn(&RelPath) -> bool) -> Vec<Option<RelPath>> {
    let removed: Vec<&RelPath> = run
        .iter()
        .filter_map(|op| match op {
            PlanOp::RemoveDirLocal { path } => Some(path),
            _ => None,
        })
        .collect();
    touched_dirs(run)
        .into_iter()
        .filter(|dir| match dir {
            Some(dir) if removed.iter().any(|r| dir == *r || dir.is_inside(r)) => !gone(dir),
            _ => true,
        })
        .collect()
}

fn stat_error(path: &RelPath, err: std::io::Error) -> Error {
    Error::io(format!("could not stat {path}"), err)
}

impl<W: World> SyncEngine<W> {
    /// Applies a run of local steps; returns how many applied.
    pub(super) fn execute_local_run(&mut self, run: Vec<PlanOp>) -> Result<usize, Error> {
        let cleared = W::blocking(|| self.clear_base_before_deletes(&run))?;
        self.cleared_for_delete = cleared;
        let mut n = 0;
        // The deletions the mass-delete interlock counts, applied here.
        let mut n_counted = 0;
        for op in &run {
            match W::blocking(|| self.execute_local(op)) {
                Ok(true) => {
                    n += 1;
                    if matches!(op, PlanOp::DeleteLocal { path, .. } if self.counted_deletes.contains(path))
                    {
                        n_counted += 1;
                    }
                }
                Ok(false) => self.retry_soon = true,
                Err(err) => {
                    tracing::warn!(?op, cause = %err, "local step failed");
                    self.retry_soon = true;
                }
            }
        }
        if n_counted > 0 {
            self.recent_deletes
                .record(self.clock.monotonic(), n_counted);
        }
        // Deletes and renames become durable before base records them.
        if n > 0 {
            let disk = &self.disk;
            let gone = |dir: &RelPath| matches!(disk.stat(dir), Err(err) if err.kind() == std::io::ErrorKind::NotFound);
            let dirs = dirs_to_sync(&run, gone);
            W::blocking(|| self.disk.sync_dirs(&dirs))
                .map_err(|err| Error::io("could not make local steps durable", err))?;
        }
        Ok(n)
    }

    /// For every `DeleteLocal` in `run` whose file still holds what the plan expected (or is
    /// gone), drops the path from base and commits that *before* any file is deleted: a crash
    /// in between then brings a file back (uploaded again) instead of leaving a stale base entry
    /// that a later rename could turn into a remote delete (found by the simulation, seed 1479).
    /// The path a `ConflictCopy` moves aside is dropped from base the same way: a crash between
    /// the rename and the download would otherwise leave the path looking deleted here, and a
    /// server that went back to base's content meanwhile (a restore) would then have it deleted
    /// there (simulation seed 96 of the history histories).
    /// Returns the stamp each file had when checked.
    fn clear_base_before_deletes(
        &mut self,
        run: &[PlanOp],
    ) -> Result<HashMap<RelPath, Stamp>, Error> {
        let mut cleared = HashMap::new();
        let mut moved_aside = false;
        for op in run {
            if let PlanOp::ConflictCopy { path, .. } = op {
                self.state.remove(path)?;
                moved_aside = true;
                continue;
            }
            let PlanOp::DeleteLocal { path, expect_hash } = op else {
                continue;
            };
            let stamp = match self.disk.stat(path) {
                Ok(meta) => meta.stamp(),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    self.state.remove(path)?;
                    continue;
                }
                Err(err) => return Err(stat_error(path, err)),
            };
            if self.local_file_has(path, *expect_hash)? {
                self.state.remove(path)?;
                cleared.insert(path.clone(), stamp);
            }
        }
        if !cleared.is_empty() || moved_aside {
            self.state.commit_batch()?;
            self.state.begin_batch()?;
        }
        Ok(cleared)
    }

    /// Whether the local file at `path` holds `expected`, re-hashing only if its stamp changed.
    pub(super) fn local_file_has(
        &mut self,
        path: &RelPath,
        expected: ContentHash,
    ) -> Result<bool, Error> {
        let stamp = match self.disk.stat(path) {
            Ok(meta) => meta.stamp(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(err) => return Err(stat_error(path, err)),
        };
        if let Some(base) = self.state.base().get(path) {
            if base.hash == Some(expected) && Stamp::of_base(base) == stamp {
                return Ok(true);
            }
        }
        let mut file = self
            .disk
            .open(path)
            .map_err(|err| Error::io(format!("could not open {path}"), err))?;
        let manifest = syncstore_chunk::manifest_of(&mut file)
            .map_err(|err| Error::io(format!("could not read {path}"), err))?;
        let after = self.disk.stat(path).map_err(|err| stat_error(path, err))?;
        Ok(manifest.hash == expected && after.stamp() == stamp)
    }

    /// The server's entries at and below `to`.
    fn remote_entries_under(&self, to: &RelPath) -> Vec<RemoteEntry> {
        self.remote
            .as_ref()
            .map(|r| {
                r.by_path
                    .values()
                    .filter(|e| e.path == *to || e.path.is_inside(to))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The chunk list the server has for `path`.
    fn remote_chunks(&self, path: &RelPath) -> Vec<syncstore_proto::ChunkRef> {
        self.remote
            .as_ref()
            .and_then(|r| r.by_path.get(path))
            .map(|e| e.chunks.clone())
            .unwrap_or_default()
    }

    /// Renames `from` to `to` unless something is at `to` (or nothing at `from`): false then,
    /// and the next plan decides again.
    fn rename_if_free(&self, from: &RelPath, to: &RelPath) -> Result<bool, Error> {
        match self.disk.rename_noreplace(from, to) {
            Ok(()) => Ok(true),
            Err(err)
                if err.kind() == std::io::ErrorKind::AlreadyExists
                    || err.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(false)
            }
            Err(err) => Err(Error::io(format!("could not move {from} to {to}"), err)),
        }
    }

    fn execute_local(&mut self, op: &PlanOp) -> Result<bool, Error> {
        match op {
            PlanOp::DeleteLocal { path, .. } => {
                // Base was cleared (durably) when the file was checked; delete it only if it has
                // not changed since. If it has, it stays, and without a base entry the next plan
                // uploads it: an edit beats a delete.
                let Some(checked) = self.cleared_for_delete.remove(path) else {
                    return Ok(false);
                };
                match self.disk.stat(path) {
                    Ok(now) if now.stamp() == checked => {
                        self.disk
                            .remove_file(path)
                            .map_err(|err| Error::io(format!("could not delete {path}"), err))?;
                        Ok(true)
                    }
                    Ok(_) => Ok(false),
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(true),
                    Err(err) => Err(stat_error(path, err)),
                }
            }
            PlanOp::MakeDirLocal { path, remote } => {
                if !self.disk.on_root_fs(path) {
                    return Ok(false);
                }
                self.disk
                    .create_dir_all(path)
                    .map_err(|err| Error::io(format!("could not create {path}"), err))?;
                let stamp = self
                    .disk
                    .stat(path)
                    .map_err(|err| stat_error(path, err))?
                    .stamp();
                let node = super::record::dir(remote.node_id, remote.rev, stamp);
                self.put_base(path, node, Vec::new())?;
                Ok(true)
            }
            PlanOp::RemoveDirLocal { path } => {
                match self.disk.remove_dir(path) {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => {
                        tracing::info!(%path, cause = %err, "directory not removed (not empty)");
                        return Ok(false);
                    }
                }
                self.state.remove(path)?;
                Ok(true)
            }
            PlanOp::MoveLocal { from, to } => {
                if !self.rename_if_free(from, to)? {
                    return Ok(false);
                }
                self.state.rebase(from, to)?;
                self.cache.rebase(from, to);
                let entries = self.remote_entries_under(to);
                self.refresh_base_revs(&entries)?;
                Ok(true)
            }
            PlanOp::ConflictCopy { path, copy } => {
                if !self.rename_if_free(path, copy)? {
                    return Ok(false);
                }
                self.cache.rebase(path, copy);
                tracing::warn!(%path, %copy, "both sides changed: kept the local version as a conflicted copy");
                Ok(true)
            }
            PlanOp::SetModeLocal {
                path,
                expect_hash,
                executable,
                node,
            } => {
                if !self.local_file_has(path, *expect_hash)? {
                    tracing::info!(%path, "local file changed meanwhile; re-planning");
                    return Ok(false);
                }
                set_executable(&self.disk, path, *executable)
                    .map_err(|err| Error::io(format!("could not set the mode of {path}"), err))?;
                let chunks = self.remote_chunks(path);
                self.put_base(path, node.clone(), chunks)?;
                Ok(true)
            }
            PlanOp::RecordBase { path, node } => {
                let chunks = self.remote_chunks(path);
                self.put_base(path, node.clone(), chunks)?;
                Ok(true)
            }
            PlanOp::ForgetBase { path } => {
                self.state.remove(path)?;
                Ok(true)
            }
            // Upkeep of the files made read-only for other devices' locks: counted as applied
            // even when the chmod fails, so a file that cannot be changed does not keep every
            // plan busy (the planner's rule).
            PlanOp::ProtectLocal { path } => {
                let mut files = crate::state::read_only_for_locks(&self.state)?;
                if let Ok(meta) = self.disk.stat(path) {
                    if meta.kind == FileKind::File {
                        if let Err(err) = self.disk.set_mode(path, meta.mode & !0o222) {
                            tracing::warn!(%path, cause = %err, "could not make a locked file read-only");
                        }
                        files.insert(path.clone(), (meta.inode, meta.mode));
                        crate::state::set_read_only_for_locks(&mut self.state, &files)?;
                    }
                }
                Ok(true)
            }
            PlanOp::UnprotectLocal { path, file } => {
                let mut files = crate::state::read_only_for_locks(&self.state)?;
                if let (Some((inode, mode)), Some(file)) = (files.get(path).copied(), file) {
                    match self.disk.stat(file) {
                        Ok(meta)
                            if meta.kind == FileKind::File
                                && (inode == 0 || inode == meta.inode) =>
                        {
                            // The executable bit may have been synced meanwhile: it is kept,
                            // only the write bits come back.
                            let mode = crate::fsutil::with_executable(mode, meta.executable());
                            if let Err(err) = self.disk.set_mode(file, mode) {
                                tracing::warn!(%file, cause = %err, "could not give a file its mode back");
                            }
                        }
                        _ => {}
                    }
                }
                files.remove(path);
                crate::state::set_read_only_for_locks(&mut self.state, &files)?;
                Ok(true)
            }
            other => unreachable!("not a local op: {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncstore_plan::ContentHash;

    fn path(text: &str) -> RelPath {
        RelPath::new(text).unwrap()
    }

    #[test]
    fn a_directory_the_run_removed_is_not_synced_but_its_parent_is() {
        // A remote `rm -r d`: its files, then d itself (found by the mass-delete tests: a
        // `sync --once` failed with "could not fsync directory d").
        let delete = |text: &str| PlanOp::DeleteLocal {
            path: path(text),
            expect_hash: ContentHash::of_empty(),
        };
        let run = vec![
            delete("d/e/f"),
            delete("d/g"),
            PlanOp::RemoveDirLocal { path: path("d/e") },
            PlanOp::RemoveDirLocal { path: path("d") },
            delete("k/h"),
        ];
        let all_gone = dirs_to_sync(&run, |_| true);
        assert_eq!(all_gone, [None, Some(path("k"))]);
        // A removal that failed (an ignored file kept the directory): its entries are synced.
        let kept = dirs_to_sync(&run, |dir| dir != &path("d"));
        assert_eq!(kept, [None, Some(path("d")), Some(path("k"))]);
    }
}
