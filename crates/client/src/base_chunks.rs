//! The chunk list of each base file, and which files hold each chunk of the large ones, kept
//! together so a download can find a chunk in another local file without reading every list
//! (`engine/local_copy.rs`): the cost of a lookup follows the chunks looked up, not the folder.
//!
//! Invariant: `holders` lists exactly the paths of `by_path` whose list has at least
//! `min_chunks` chunks ([`INDEXED_MIN_CHUNKS`], or 1 for the simulation's small files), under
//! each chunk of that list, once each, with the offset of the chunk's first place in it. Files of one chunk (small files, most of a large folder)
//! are not indexed by default: copying them would save little, and indexing them would cost
//! memory in proportion to the folder.

use std::collections::{BTreeMap, HashMap};
use syncstore_proto::{ChunkHash, ChunkRef, RelPath};

/// Fewest chunks a file's list has for its chunks to be indexed.
pub const INDEXED_MIN_CHUNKS: usize = 2;

/// Base's chunk lists, by path, with the holders of each chunk of the large files.
#[derive(Clone, Debug)]
pub struct BaseChunks {
    by_path: BTreeMap<RelPath, Vec<ChunkRef>>,
    /// Chunk → (file, offset of the chunk's first place in it).
    holders: HashMap<ChunkHash, Vec<(RelPath, u64)>>,
    /// Fewest chunks of an indexed file's list.
    min_chunks: usize,
}

impl Default for BaseChunks {
    fn default() -> BaseChunks {
        BaseChunks {
            by_path: BTreeMap::new(),
            holders: HashMap::new(),
            min_chunks: INDEXED_MIN_CHUNKS,
        }
    }
}

impl PartialEq for BaseChunks {
    /// The same lists (the index follows from them).
    fn eq(&self, other: &BaseChunks) -> bool {
        self.by_path == other.by_path
    }
}

impl Eq for BaseChunks {}

impl std::ops::Deref for BaseChunks {
    type Target = BTreeMap<RelPath, Vec<ChunkRef>>;

    fn deref(&self) -> &Self::Target {
        &self.by_path
    }
}

impl<'a> IntoIterator for &'a BaseChunks {
    type Item = (&'a RelPath, &'a Vec<ChunkRef>);
    type IntoIter = std::collections::btree_map::Iter<'a, RelPath, Vec<ChunkRef>>;

    fn into_iter(self) -> Self::IntoIter {
        self.by_path.iter()
    }
}

impl BaseChunks {
    /// Lists that index the chunks of every file, small ones too (the simulation's files are
    /// small: it covers copies through them).
    pub fn indexing_every_file() -> BaseChunks {
        BaseChunks {
            min_chunks: 1,
            ..BaseChunks::default()
        }
    }

    /// Sets the list of `path`.
    pub fn insert(&mut self, path: RelPath, chunks: Vec<ChunkRef>) {
        self.remove(&path);
        if chunks.len() >= self.min_chunks {
            let mut offset = 0u64;
            for chunk in &chunks {
                let holders = self.holders.entry(chunk.hash).or_default();
                if !holders.iter().any(|(held, _)| *held == path) {
                    holders.push((path.clone(), offset));
                }
                offset += u64::from(chunk.len);
            }
        }
        self.by_path.insert(path, chunks);
    }

    /// Drops the list of `path`, and gives it back.
    pub fn remove(&mut self, path: &RelPath) -> Option<Vec<ChunkRef>> {
        let chunks = self.by_path.remove(path)?;
        if chunks.len() >= self.min_chunks {
            for chunk in &chunks {
                if let Some(holders) = self.holders.get_mut(&chunk.hash) {
                    holders.retain(|(held, _)| held != path);
                    if holders.is_empty() {
                        self.holders.remove(&chunk.hash);
                    }
                }
            }
        }
        Some(chunks)
    }

    pub fn clear(&mut self) {
        self.by_path.clear();
        self.holders.clear();
    }

    /// The indexed files whose list holds `hash`, each with the offset of its first place there.
    pub fn holders(&self, hash: &ChunkHash) -> &[(RelPath, u64)] {
        self.holders.get(hash).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(byte: u8) -> ChunkRef {
        ChunkRef {
            hash: ChunkHash([byte; 32]),
            len: 1,
        }
    }

    fn path(text: &str) -> RelPath {
        RelPath::new(text).unwrap()
    }

    /// Every indexed path of `chunks`, under each of its chunks, once, with the offset of the
    /// chunk's first place there; and nothing else.
    fn index_follows_lists(chunks: &BaseChunks) {
        let mut expected: HashMap<ChunkHash, Vec<(RelPath, u64)>> = HashMap::new();
        for (path, list) in chunks.iter().filter(|(_, l)| l.len() >= chunks.min_chunks) {
            for (index, c) in list.iter().enumerate() {
                let first = list.iter().position(|other| other.hash == c.hash).unwrap();
                if first == index {
                    let offset = list[..index].iter().map(|c| u64::from(c.len)).sum();
                    expected
                        .entry(c.hash)
                        .or_default()
                        .push((path.clone(), offset));
                }
            }
        }
        let mut actual = chunks.holders.clone();
        for list in expected.values_mut().chain(actual.values_mut()) {
            list.sort();
        }
        assert_eq!(actual, expected);
    }

    #[test]
    fn the_index_follows_inserts_replacements_and_removals() {
        let mut chunks = BaseChunks::default();
        chunks.insert(path("a"), vec![chunk(1), chunk(2), chunk(1)]);
        chunks.insert(path("b"), vec![chunk(2), chunk(3)]);
        chunks.insert(path("small"), vec![chunk(4)]);
        index_follows_lists(&chunks);
        assert_eq!(
            chunks.holders(&ChunkHash([2; 32])),
            &[(path("a"), 1), (path("b"), 0)]
        );
        assert_eq!(chunks.holders(&ChunkHash([1; 32])), &[(path("a"), 0)]);
        assert!(chunks.holders(&ChunkHash([4; 32])).is_empty());

        chunks.insert(path("a"), vec![chunk(5)]);
        index_follows_lists(&chunks);
        assert!(chunks.holders(&ChunkHash([1; 32])).is_empty());
        assert_eq!(chunks.holders(&ChunkHash([2; 32])), &[(path("b"), 0)]);

        let moved = chunks.remove(&path("b")).unwrap();
        chunks.insert(path("c/b"), moved);
        index_follows_lists(&chunks);
        assert_eq!(chunks.holders(&ChunkHash([3; 32])), &[(path("c/b"), 1)]);

        chunks.clear();
        index_follows_lists(&chunks);
        assert!(chunks.is_empty());

        let mut every = BaseChunks::indexing_every_file();
        every.insert(path("small"), vec![chunk(4)]);
        index_follows_lists(&every);
        assert_eq!(every.holders(&ChunkHash([4; 32])), &[(path("small"), 0)]);
    }
}
