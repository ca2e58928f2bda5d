//! Changed chunks sent as deltas against the old chunks they replace (issue 18): a one-byte
//! edit of a large file costs a few KiB each way instead of a chunk (about 1 MiB).
//!
//! Up: the device no longer has the old bytes (it edited the file), the server does, so the
//! device asks for the old chunks' signature, makes the delta and sends it; the server stores
//! the chunk only if the delta makes it. Down: the device still has the old bytes (its file
//! before the download), so it asks for the delta and applies it. Either side trusts a delta
//! only when the result hashes to the chunk's name; any failure (an old chunk the server lost,
//! a delta that does not make the chunk, a lost request) falls back to the whole chunk, so a
//! delta can make a transfer cheaper but never wrong or stuck.
//!
//! Which old chunks a new one replaces is decided by position: those of the previous chunk
//! list that overlap the new chunk's range of the file ([`bases_for`]).

use crate::seams::Server;
use syncstore_chunk::delta;
use syncstore_proto::{ChunkHash, ChunkRef};

/// Most chunks of one pass sent or fetched as deltas (each costs a round trip or two; a
/// large rewrite goes in packs).
const MAX_DELTAS: usize = 64;
/// Deltas of one pass that may come to nothing (a rewrite, not an edit: the delta saves too
/// little; bases the server lacks) before the rest go whole without trying.
const MAX_MISSES: usize = 4;

/// How many more chunks of a pass may be tried as deltas.
#[derive(Debug, Default)]
pub(crate) struct DeltaBudget {
    tried: usize,
    misses: usize,
}

impl DeltaBudget {
    /// Whether another chunk may be tried as a delta.
    pub(crate) fn allows(&self) -> bool {
        self.tried < MAX_DELTAS && self.misses < MAX_MISSES
    }

    /// Counts a try, and whether it came to something.
    pub(crate) fn record(&mut self, worked: bool) {
        self.tried += 1;
        if !worked {
            self.misses += 1;
        }
    }
}

/// Most bytes of chunks made from fetched deltas held at once (by one download batch, or one
/// in-place file) before they are written: the rest of a batch's chunks come whole, in the
/// stream, so a download's memory stays bounded.
pub(crate) const MAX_HELD_BYTES: usize = 16 * 1024 * 1024;

/// Smallest changed chunk sent (or fetched) as a delta by default ([`crate::seams::World`]'s
/// `DELTA_MIN_BYTES`); smaller ones go whole, in packs (a delta costs a round trip or two).
pub(crate) const DELTA_MIN_BYTES: u32 = 128 * 1024;

/// An old chunk a delta is made against: its hash, and where it was in the old file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Base {
    pub(crate) hash: ChunkHash,
    pub(crate) offset: u64,
    pub(crate) len: u32,
}

/// The chunks of `old` (a file's previous chunk list) that overlap the range `offset..offset +
/// len` of the new file, in order; empty when none does, or when they are more than a delta is
/// made against ([`delta::MAX_BASES`], [`delta::MAX_BASE_BYTES`]).
pub(crate) fn bases_for(old: &[ChunkRef], offset: u64, len: u32) -> Vec<Base> {
    let end = offset.saturating_add(u64::from(len));
    let mut bases = Vec::new();
    let mut at = 0u64;
    for chunk in old {
        let chunk_end = at + u64::from(chunk.len);
        if chunk_end > offset && at < end && chunk.len > 0 {
            bases.push(Base {
                hash: chunk.hash,
                offset: at,
                len: chunk.len,
            });
        }
        if at >= end {
            break;
        }
        at = chunk_end;
    }
    let bytes: u64 = bases.iter().map(|b| u64::from(b.len)).sum();
    if bases.len() > delta::MAX_BASES || bytes > delta::MAX_BASE_BYTES {
        return Vec::new();
    }
    bases
}

/// The hashes of `bases`.
pub(crate) fn hashes(bases: &[Base]) -> Vec<ChunkHash> {
    bases.iter().map(|b| b.hash).collect()
}

/// Uploads chunk `target` (`bytes`) as a delta against `bases`; `false` when it did not go
/// that way (the caller sends it whole): the server could not sign the bases, the delta would
/// save little, or the server refused it.
pub(crate) async fn send_by_delta<S: Server>(
    server: &S,
    target: ChunkHash,
    bytes: &[u8],
    bases: Vec<ChunkHash>,
) -> bool {
    let signature = match server.chunk_signature(bases.clone()).await {
        Ok(signature) => signature,
        Err(err) => {
            tracing::debug!(chunk = %target, cause = %err, "no signature for a delta; sending the chunk whole");
            return false;
        }
    };
    let made = match delta::diff(signature, bytes) {
        Ok(made) => made,
        Err(err) => {
            tracing::debug!(chunk = %target, cause = %err, "no delta; sending the chunk whole");
            return false;
        }
    };
    if made.len() >= bytes.len() / 2 {
        return false;
    }
    let sent = made.len();
    match server
        .upload_delta(target, bases, bytes::Bytes::from(made))
        .await
    {
        Ok(()) => {
            tracing::debug!(chunk = %target, len = bytes.len(), delta = sent, "chunk sent as a delta");
            true
        }
        Err(err) => {
            tracing::debug!(chunk = %target, cause = %err, "delta refused; sending the chunk whole");
            false
        }
    }
}

/// Chunk `target` made from the old bytes `base` (the bases' bytes, concatenated, already
/// verified) and the server's delta; `None` when that did not work (the caller fetches it
/// whole).
pub(crate) async fn fetch_by_delta<S: Server>(
    server: &S,
    target: ChunkRef,
    base: &[u8],
    bases: Vec<ChunkHash>,
) -> Option<Vec<u8>> {
    let made = match server.download_delta(target.hash, bases).await {
        Ok(made) => made,
        Err(err) => {
            tracing::debug!(chunk = %target.hash, cause = %err, "no delta; fetching the chunk whole");
            return None;
        }
    };
    match delta::apply(base, &made, target.hash) {
        Ok(chunk) if chunk.len() == target.len as usize => {
            tracing::debug!(chunk = %target.hash, len = target.len, delta = made.len(), "chunk fetched as a delta");
            Some(chunk)
        }
        Ok(_) => None,
        Err(err) => {
            tracing::debug!(chunk = %target.hash, cause = %err, "the delta did not apply; fetching the chunk whole");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(lens: &[u32]) -> Vec<ChunkRef> {
        lens.iter()
            .enumerate()
            .map(|(i, len)| ChunkRef {
                hash: syncstore_chunk::hash_chunk(&i.to_le_bytes()),
                len: *len,
            })
            .collect()
    }

    #[test]
    fn a_pass_stops_trying_deltas_after_a_few_come_to_nothing() {
        let mut budget = DeltaBudget::default();
        for _ in 0..40 {
            assert!(budget.allows());
            budget.record(true);
        }
        for _ in 0..MAX_MISSES {
            assert!(budget.allows());
            budget.record(false);
        }
        assert!(
            !budget.allows(),
            "a rewrite goes whole after {MAX_MISSES} misses"
        );
        let mut budget = DeltaBudget::default();
        for _ in 0..MAX_DELTAS {
            budget.record(true);
        }
        assert!(!budget.allows(), "at most {MAX_DELTAS} a pass");
    }

    #[test]
    fn a_new_chunk_replaces_the_old_ones_over_its_range() {
        let old = chunks(&[100, 200, 300, 400]);
        let at = |bases: Vec<Base>| bases.iter().map(|b| (b.offset, b.len)).collect::<Vec<_>>();
        // The same place: the chunk it replaces.
        assert_eq!(at(bases_for(&old, 100, 200)), [(100, 200)]);
        // A cut that moved: both chunks it overlaps, not the ones it only touches.
        assert_eq!(at(bases_for(&old, 150, 300)), [(100, 200), (300, 300)]);
        assert_eq!(at(bases_for(&old, 0, 100)), [(0, 100)]);
        // Past the old end (the file grew): the last chunk it overlaps, or none.
        assert_eq!(at(bases_for(&old, 900, 500)), [(600, 400)]);
        assert_eq!(bases_for(&old, 1000, 500), []);
        assert_eq!(bases_for(&[], 0, 500), []);
        // Over more old chunks than a delta takes: none.
        let many = chunks(&[10; 10]);
        assert_eq!(bases_for(&many, 0, 100), []);
        assert_eq!(
            at(bases_for(&many, 0, 40)),
            [(0, 10), (10, 10), (20, 10), (30, 10)]
        );
        let big = chunks(&[syncstore_proto::CHUNK_MAX; 3]);
        assert_eq!(bases_for(&big, 0, 3 * syncstore_proto::CHUNK_MAX), []);
        assert_eq!(bases_for(&big, 0, 2 * syncstore_proto::CHUNK_MAX).len(), 2);
    }
}
