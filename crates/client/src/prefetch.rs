//! Files fetched ahead from other devices' upload streams, waiting for their commit.
//!
//! The stream follower (`stream_follower`) writes each announced chunk, verified by its hash,
//! in file order into a temp file of the folder; the engine, when it downloads that path,
//! takes the temp file if what it holds is a prefix of the committed entry's chunk list, and
//! fetches only the rest. A prefetched file is never placed by itself: only the engine's
//! download of a committed version places it, with every check a download makes. One that
//! no commit claims is dropped (its temp file goes with it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use syncstore_proto::{ChunkHash, ChunkRef, RelPath};

/// What the stream a file's stream replaced had fetched (the uploader scanned the file again):
/// its temp file, and where each chunk written to it (verified) starts there. It is read from
/// instead of fetching those chunks again, and goes with the file that holds it.
pub struct Earlier<T> {
    pub temp: T,
    pub at: HashMap<ChunkHash, u64>,
}

/// What was fetched ahead of one path.
pub struct PrefetchedFile<T> {
    /// The stream it came from.
    pub stream: String,
    pub temp: T,
    /// The chunks written to `temp` from its start, in order, each verified by its hash.
    pub chunks: Vec<ChunkRef>,
    /// What the stream has announced so far (the written chunks are a prefix of it).
    pub announced: Vec<ChunkRef>,
    /// Shows the file as being received in `status` while it is held.
    pub shown: Option<crate::progress::TransferGuard>,
    /// What the stream this one replaced had fetched, if anything.
    pub earlier: Option<Earlier<T>>,
}

impl<T> PrefetchedFile<T> {
    /// Bytes written so far.
    pub fn written_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.len)).sum()
    }

    /// Bytes announced so far.
    pub fn announced_bytes(&self) -> u64 {
        self.announced.iter().map(|c| u64::from(c.len)).sum()
    }
}

/// One path's slot: the follower writes into it while holding its lock; the engine empties it.
pub type Slot<T> = Arc<Mutex<Option<PrefetchedFile<T>>>>;

/// The prefetched files of one folder, shared by its follower and its engine.
pub struct Prefetched<T> {
    slots: Arc<Mutex<HashMap<RelPath, Slot<T>>>>,
}

impl<T> Clone for Prefetched<T> {
    fn clone(&self) -> Self {
        Prefetched {
            slots: Arc::clone(&self.slots),
        }
    }
}

impl<T> Default for Prefetched<T> {
    fn default() -> Self {
        Prefetched {
            slots: Arc::default(),
        }
    }
}

fn lock<V>(mutex: &Mutex<V>) -> MutexGuard<'_, V> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<T> Prefetched<T> {
    /// The slot of `path`, if one is held.
    pub fn slot(&self, path: &RelPath) -> Option<Slot<T>> {
        lock(&self.slots).get(path).cloned()
    }

    /// Puts `file` in a new slot for `path` (an earlier one of that path is dropped).
    pub fn start(&self, path: &RelPath, file: PrefetchedFile<T>) -> Slot<T> {
        let slot = Arc::new(Mutex::new(Some(file)));
        if let Some(old) = lock(&self.slots).insert(path.clone(), Arc::clone(&slot)) {
            lock(&old).take();
        }
        slot
    }

    /// Drops what was fetched of `path` for `stream` (the stream ended unclaimed).
    pub fn drop_stream(&self, path: &RelPath, stream: &str) {
        let mut slots = lock(&self.slots);
        let Some(slot) = slots.get(path) else { return };
        let mut held = lock(slot);
        if held.as_ref().is_none_or(|file| file.stream == stream) {
            held.take();
            drop(held);
            slots.remove(path);
        }
    }

    /// Drops everything fetched ahead (syncing was paused: transfers stop, temp files go).
    pub fn drop_all(&self) {
        let slots = std::mem::take(&mut *lock(&self.slots));
        for slot in slots.values() {
            lock(slot).take();
        }
    }

    /// The paths with a slot, and each slot's stream (`None` once emptied).
    pub fn held(&self) -> Vec<(RelPath, Option<String>)> {
        lock(&self.slots)
            .iter()
            .map(|(path, slot)| (path.clone(), lock(slot).as_ref().map(|f| f.stream.clone())))
            .collect()
    }

    /// How many slots are held.
    pub fn len(&self) -> usize {
        lock(&self.slots).len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes what was fetched of `path` when it is a prefix of `chunks` (the committed
    /// version's list): the temp file and how many of `chunks` it holds. Waits while the
    /// follower is writing a part into it. Anything else fetched of `path` is dropped.
    pub fn take_prefix_of(&self, path: &RelPath, chunks: &[ChunkRef]) -> Option<(T, usize)> {
        let slot = lock(&self.slots).remove(path)?;
        let file = lock(&slot).take()?;
        let n = file.chunks.len();
        (n > 0 && chunks.get(..n) == Some(&file.chunks[..])).then_some((file.temp, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncstore_proto::ChunkHash;

    fn chunk(byte: u8) -> ChunkRef {
        ChunkRef {
            hash: ChunkHash([byte; 32]),
            len: 10,
        }
    }

    fn file(stream: &str, chunks: Vec<ChunkRef>) -> PrefetchedFile<&'static str> {
        PrefetchedFile {
            stream: stream.into(),
            temp: "temp",
            announced: chunks.clone(),
            chunks,
            shown: None,
            earlier: None,
        }
    }

    #[test]
    fn only_a_prefix_of_the_committed_list_is_taken_and_a_slot_is_taken_once() {
        let prefetched = Prefetched::default();
        let path = RelPath::new("big.bin").unwrap();
        prefetched.start(&path, file("s1", vec![chunk(1), chunk(2)]));
        assert_eq!(
            prefetched.take_prefix_of(&path, &[chunk(1), chunk(2), chunk(3)]),
            Some(("temp", 2))
        );
        assert!(prefetched
            .take_prefix_of(&path, &[chunk(1), chunk(2)])
            .is_none());
        // A different list (the upload that committed is not the one streamed): dropped.
        prefetched.start(&path, file("s2", vec![chunk(1), chunk(9)]));
        assert!(prefetched
            .take_prefix_of(&path, &[chunk(1), chunk(2)])
            .is_none());
        assert!(prefetched.is_empty());
    }

    #[test]
    fn a_new_stream_of_a_path_replaces_the_old_and_ending_the_old_keeps_the_new() {
        let prefetched = Prefetched::default();
        let path = RelPath::new("big.bin").unwrap();
        let old = prefetched.start(&path, file("s1", vec![chunk(1)]));
        prefetched.start(&path, file("s2", vec![chunk(2)]));
        assert!(old.lock().unwrap().is_none(), "the old slot was emptied");
        prefetched.drop_stream(&path, "s1");
        assert_eq!(prefetched.held(), vec![(path.clone(), Some("s2".into()))]);
        prefetched.drop_stream(&path, "s2");
        assert!(prefetched.is_empty());
    }
}
