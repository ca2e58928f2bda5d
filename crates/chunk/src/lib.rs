//! Content-defined chunking (FastCDC) and BLAKE3 hashing over any reader.
//!
//! Equal content gives equal chunks on every device and on the server, so a one-byte edit in a
//! large file changes one or two chunks and only those cross the network. Everything here
//! streams: memory use is bounded by the largest chunk ([`syncstore_proto::CHUNK_MAX`]),
//! whatever the file size.
//!
//! This crate does no IO of its own beyond reading the reader it is given.

use std::io::{self, Read};
use syncstore_proto::{ChunkHash, ChunkRef, ContentHash, CHUNK_AVG, CHUNK_MAX, CHUNK_MIN};

/// The chunks of one file version, and the hash and size of the whole.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Manifest {
    pub hash: ContentHash,
    pub size: u64,
    pub chunks: Vec<ChunkRef>,
}

/// Splits `reader` into chunks, calling `on_chunk` with each chunk's reference and bytes in order,
/// and returns the manifest of the whole.
///
/// # Errors
/// Any error of the reader, or the first error `on_chunk` returns.
pub fn chunk_reader<R: Read>(
    mut reader: R,
    mut on_chunk: impl FnMut(ChunkRef, &[u8]) -> io::Result<()>,
) -> io::Result<Manifest> {
    // Most files are smaller than the smallest chunk: they are one chunk, and need neither the
    // chunker nor its buffer of CHUNK_MAX bytes (allocating that per small file dominated the
    // time to upload 2,000 files of 4 KiB).
    let mut head = Vec::with_capacity(64 * 1024);
    (&mut reader)
        .take(u64::from(CHUNK_MIN) + 1)
        .read_to_end(&mut head)?;
    if head.len() <= CHUNK_MIN as usize {
        if head.is_empty() {
            return Ok(Manifest {
                hash: ContentHash::of_empty(),
                size: 0,
                chunks: Vec::new(),
            });
        }
        let hash = hash_chunk(&head);
        let chunk_ref = ChunkRef {
            hash,
            len: head.len() as u32,
        };
        on_chunk(chunk_ref, &head)?;
        return Ok(Manifest {
            hash: ContentHash(hash.0),
            size: head.len() as u64,
            chunks: vec![chunk_ref],
        });
    }
    let reader = io::Cursor::new(head).chain(reader);
    let mut whole = blake3::Hasher::new();
    let mut size = 0u64;
    let mut chunks = Vec::new();
    let chunker = fastcdc::v2020::StreamCDC::new(reader, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX);
    for chunk in chunker {
        let chunk = chunk.map_err(|err| match err {
            fastcdc::v2020::Error::IoError(io_err) => io_err,
            other => io::Error::other(other.to_string()),
        })?;
        whole.update(&chunk.data);
        size += chunk.data.len() as u64;
        let chunk_ref = ChunkRef {
            hash: hash_chunk(&chunk.data),
            // A chunk is at most CHUNK_MAX bytes, which fits in u32.
            len: chunk.data.len() as u32,
        };
        on_chunk(chunk_ref, &chunk.data)?;
        chunks.push(chunk_ref);
    }
    Ok(Manifest {
        hash: ContentHash(*whole.finalize().as_bytes()),
        size,
        chunks,
    })
}

/// The manifest of `reader` without keeping the bytes.
///
/// # Errors
/// Any error of the reader.
pub fn manifest_of<R: Read>(reader: R) -> io::Result<Manifest> {
    chunk_reader(reader, |_, _| Ok(()))
}

/// BLAKE3 of one chunk.
pub fn hash_chunk(bytes: &[u8]) -> ChunkHash {
    ChunkHash(*blake3::hash(bytes).as_bytes())
}

/// BLAKE3 of everything `reader` yields, and how many bytes that was.
///
/// # Errors
/// Any error of the reader.
pub fn hash_reader<R: Read>(mut reader: R) -> io::Result<(ContentHash, u64)> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((ContentHash(*hasher.finalize().as_bytes()), size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};

    fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut data = vec![0u8; len];
        rng.fill_bytes(&mut data);
        data
    }

    #[test]
    fn manifest_covers_the_whole_input() {
        let data = random_bytes(9 * 1024 * 1024 + 17, 1);
        let mut joined = Vec::new();
        let manifest = chunk_reader(&data[..], |chunk_ref, bytes| {
            assert_eq!(hash_chunk(bytes), chunk_ref.hash);
            joined.extend_from_slice(bytes);
            Ok(())
        })
        .unwrap();
        assert_eq!(joined, data);
        assert_eq!(manifest.size, data.len() as u64);
        assert_eq!(manifest.hash, hash_reader(&data[..]).unwrap().0);
        assert!(
            manifest.chunks.len() > 2,
            "{} chunks",
            manifest.chunks.len()
        );
        assert!(manifest.chunks.iter().all(|c| c.len <= CHUNK_MAX));
    }

    #[test]
    fn one_byte_edit_changes_few_chunks() {
        let mut data = random_bytes(16 * 1024 * 1024, 2);
        let before = manifest_of(&data[..]).unwrap();
        data[8 * 1024 * 1024] ^= 0xff;
        let after = manifest_of(&data[..]).unwrap();
        let changed = after
            .chunks
            .iter()
            .filter(|c| !before.chunks.contains(c))
            .count();
        assert!((1..=2).contains(&changed), "{changed} chunks changed");
    }

    #[test]
    fn small_and_boundary_inputs_match_the_chunker() {
        for len in [
            1usize,
            4096,
            CHUNK_MIN as usize - 1,
            CHUNK_MIN as usize,
            CHUNK_MIN as usize + 1,
            3 * CHUNK_MIN as usize,
        ] {
            let data = random_bytes(len, len as u64);
            let manifest = manifest_of(&data[..]).unwrap();
            assert_eq!(manifest.size, len as u64);
            assert_eq!(
                manifest.hash,
                hash_reader(&data[..]).unwrap().0,
                "len {len}"
            );
            assert_eq!(
                manifest
                    .chunks
                    .iter()
                    .map(|c| u64::from(c.len))
                    .sum::<u64>(),
                len as u64
            );
            let mut joined = Vec::new();
            chunk_reader(&data[..], |_, bytes| {
                joined.extend_from_slice(bytes);
                Ok(())
            })
            .unwrap();
            assert_eq!(joined, data, "len {len}");
        }
    }

    #[test]
    fn empty_input() {
        let manifest = manifest_of(&[][..]).unwrap();
        assert_eq!(manifest.size, 0);
        assert!(manifest.chunks.is_empty());
        assert_eq!(manifest.hash, ContentHash::of_empty());
    }
}
