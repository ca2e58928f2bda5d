//! Chunks a download needs that another local file already holds, copied from it instead of
//! fetched (as Syncthing's copier does): a large file copied on another device, or saved there
//! as a temp file and renamed over the old one, comes down from this device's own disk.
//!
//! Sources are found through base's index of the chunks of its large files
//! ([`crate::base_chunks::BaseChunks::holders`]): the cost follows the chunks looked up, not the
//! folder's size. A source is a file whose stamp on disk is still the one base recorded, so it
//! holds the chunks base lists for it; each chunk copied is verified by hash before it is
//! written. A wrong read (the file changed without its stamp changing) fails the file, which
//! the next pass retries without that source: a copy can make a download cheaper, never wrong
//! or stuck.

use super::download::DownloadJob;
use super::SyncEngine;
use crate::scan::Stamp;
use crate::seams::{BaseStore, Disk, DiskFile, World};
use std::collections::HashMap;
use syncstore_proto::{ChunkHash, RelPath};

/// Where other local files hold chunks a download batch lacks.
#[derive(Default)]
pub(super) struct LocalCopies {
    /// The files copied from.
    sources: Vec<RelPath>,
    /// Chunk → (index in `sources`, offset there).
    by_hash: HashMap<ChunkHash, (usize, u64)>,
}

impl LocalCopies {
    pub(super) fn contains(&self, hash: &ChunkHash) -> bool {
        self.by_hash.contains_key(hash)
    }

    /// The source file holding `hash` (its index in the sources and path) and the offset there.
    pub(super) fn get(&self, hash: &ChunkHash) -> Option<(usize, &RelPath, u64)> {
        let &(source, offset) = self.by_hash.get(hash)?;
        Some((source, &self.sources[source], offset))
    }

    pub(super) fn len(&self) -> usize {
        self.by_hash.len()
    }
}

/// Reads `buf.len()` bytes at `offset` of source `source` of `copies` (opened once per batch,
/// in `open`), and whether they hash to `hash`.
pub(super) fn read_copy<D: Disk>(
    disk: &D,
    open: &mut HashMap<usize, Option<D::File>>,
    (source, path, offset): (usize, &RelPath, u64),
    hash: &ChunkHash,
    buf: &mut [u8],
) -> bool {
    let file = open.entry(source).or_insert_with(|| disk.open(path).ok());
    file.as_ref()
        .is_some_and(|file| file.read_exact_at(buf, offset).is_ok())
        && syncstore_chunk::hash_chunk(buf) == *hash
}

impl<W: World> SyncEngine<W> {
    /// The chunks `jobs` need that neither their own local file (`reuse`) nor their prefix
    /// holds, found in other local files (through base's index) that still have the stamp base
    /// recorded for them and did not fail a copy before.
    pub(super) fn find_local_copies<T>(&self, jobs: &[DownloadJob<T>]) -> LocalCopies {
        let mut copies = LocalCopies::default();
        // Each source looked at: its index in `copies.sources`, or `None` when it is unusable.
        let mut looked_at: HashMap<&RelPath, Option<usize>> = HashMap::new();
        let chunks = self.state.base_chunks();
        for job in jobs {
            for chunk in &job.entry.chunks[job.prefix_len()..] {
                if job.reuse.contains_key(&chunk.hash) || copies.by_hash.contains_key(&chunk.hash) {
                    continue;
                }
                for (holder, offset) in chunks.holders(&chunk.hash) {
                    let source = *looked_at.entry(holder).or_insert_with(|| {
                        let usable = !self.failed_copy_sources.contains(holder)
                            && self.holds_its_base(holder);
                        usable.then(|| {
                            copies.sources.push(holder.clone());
                            copies.sources.len() - 1
                        })
                    });
                    if let Some(source) = source {
                        copies.by_hash.insert(chunk.hash, (source, *offset));
                        break;
                    }
                }
            }
        }
        copies
    }

    /// Whether the local file at `path` still has the stamp base recorded for it.
    fn holds_its_base(&self, path: &RelPath) -> bool {
        let Some(base) = self.state.base().get(path) else {
            return false;
        };
        let stamp = Stamp::of_base(base);
        stamp != super::record::NO_STAMP && self.disk.stat(path).is_ok_and(|m| m.stamp() == stamp)
    }
}
