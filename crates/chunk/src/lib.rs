//! Content-defined chunking (FastCDC) and BLAKE3 hashing over any reader.
//!
//! Equal content gives equal chunks on every device and on the server, so a one-byte edit in a
//! large file changes one or two chunks and only those cross the network. One pass over the
//! bytes gives the chunks and the file's content hash ([`ContentHash::of_chunks`]). Everything
//! here streams: memory use is bounded by a read buffer of four of the largest chunks
//! ([`syncstore_proto::CHUNK_MAX`]), whatever the file size.
//!
//! [`rechunk`] finds the chunks of a file that changed from its previous chunk list, hashing
//! the unchanged regions instead of cutting them again; it gives exactly what [`chunk_reader`]
//! gives.
//!
//! [`delta`] sends a changed chunk as an rsync-style delta against the chunks it replaces,
//! verified by the chunk's BLAKE3 once applied.
//!
//! This crate does no IO of its own beyond reading the reader it is given.

pub mod delta;
mod rechunk;

use std::io::{self, Read};
use syncstore_proto::{ChunkHash, ChunkRef, ContentHash, CHUNK_AVG, CHUNK_MAX, CHUNK_MIN};

pub use rechunk::{rechunk, ReadAt, Rechunked};

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
    let mut size = 0u64;
    let mut chunks = Vec::new();
    let mut cutter = Cutter::new(Params::REAL, head, CUTTER_BUFFER, reader);
    while let Some(data) = cutter.next_chunk()? {
        size += data.len() as u64;
        let chunk_ref = ChunkRef {
            hash: hash_chunk(data),
            // A chunk is at most CHUNK_MAX bytes, which fits in u32.
            len: data.len() as u32,
        };
        on_chunk(chunk_ref, data)?;
        chunks.push(chunk_ref);
    }
    Ok(Manifest {
        hash: ContentHash::of_chunks(&chunks),
        size,
        chunks,
    })
}

/// Bytes read ahead of the chunker: a few chunks, so the unconsumed tail moved to the front
/// before each refill is small next to what is read.
const CUTTER_BUFFER: usize = 4 * CHUNK_MAX as usize;

/// The chunk sizes FastCDC cuts to. Every party uses [`Params::REAL`]; the tests of
/// [`rechunk`] also use tiny ones, so that thousands of cases with many chunks each run fast.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Params {
    pub(crate) min: usize,
    pub(crate) avg: usize,
    pub(crate) max: usize,
}

impl Params {
    /// The protocol's chunk sizes.
    pub(crate) const REAL: Params = Params {
        min: CHUNK_MIN as usize,
        avg: CHUNK_AVG as usize,
        max: CHUNK_MAX as usize,
    };
}

/// FastCDC (v2020, normalization level 1, the crate's own gear table) over a reader, cutting
/// at exactly the points `fastcdc::v2020::StreamCDC` cuts at, without its per-chunk copy:
/// chunks are handed out as slices of one buffer.
///
/// A cut depends only on the bytes from the previous cut up to and including the byte at the
/// cut (`cut_gear` reads it before it decides), and on how many bytes are left there, up to
/// `max` (fewer than `avg` left changes which mask applies); [`rechunk`] relies on that.
pub(crate) struct Cutter<R> {
    pub(crate) reader: R,
    params: Params,
    buffer: Vec<u8>,
    /// Start of the next chunk in `buffer`.
    pos: usize,
    /// End of the bytes read into `buffer`.
    len: usize,
    eof: bool,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
    mask_s: u64,
    mask_l: u64,
}

impl<R: Read> Cutter<R> {
    /// A cutter over `head` and then `reader`, reading ahead up to `buffer_len` bytes (at least
    /// one window of `params.max`).
    pub(crate) fn new(params: Params, head: Vec<u8>, buffer_len: usize, reader: R) -> Cutter<R> {
        use fastcdc::v2020::{get_gear_with_seed, logarithm2, Normalization, MASKS};
        let mut buffer = head;
        let len = buffer.len();
        buffer.resize(buffer_len.max(params.max).max(len), 0);
        let bits = logarithm2(params.avg as u32);
        let normalization = Normalization::Level1.bits();
        let (gear, gear_ls) = get_gear_with_seed(0);
        Cutter {
            reader,
            params,
            buffer,
            pos: 0,
            len,
            eof: false,
            gear,
            gear_ls,
            mask_s: MASKS[(bits + normalization) as usize],
            mask_l: MASKS[(bits - normalization) as usize],
        }
    }

    /// Forgets what was read ahead: the next chunk starts at what `reader` reads next (the
    /// caller moved it).
    pub(crate) fn restart(&mut self) {
        self.pos = 0;
        self.len = 0;
        self.eof = false;
    }

    /// The next chunk, or `None` at the end of the input.
    pub(crate) fn next_chunk(&mut self) -> io::Result<Option<&[u8]>> {
        let max = self.params.max;
        if self.len - self.pos < max && !self.eof {
            // The window of one cut is `max` bytes (or the rest of the input): move the
            // unconsumed tail to the front and read until the buffer is full or the input ends.
            self.buffer.copy_within(self.pos..self.len, 0);
            self.len -= self.pos;
            self.pos = 0;
            while self.len < self.buffer.len() {
                match self.reader.read(&mut self.buffer[self.len..]) {
                    Ok(0) => {
                        self.eof = true;
                        break;
                    }
                    Ok(n) => self.len += n,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(err),
                }
            }
        }
        if self.pos == self.len {
            return Ok(None);
        }
        let window = &self.buffer[self.pos..self.len.min(self.pos + max)];
        let (_, count) = fastcdc::v2020::cut_gear(
            window,
            self.params.min,
            self.params.avg,
            max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear,
            &self.gear_ls,
        );
        let start = self.pos;
        self.pos += count;
        Ok(Some(&self.buffer[start..self.pos]))
    }
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
        assert_eq!(manifest.hash, ContentHash::of_chunks(&manifest.chunks));
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
                ContentHash::of_chunks(&manifest.chunks),
                "len {len}"
            );
            if manifest.chunks.len() == 1 {
                // A one-chunk file's content hash is its BLAKE3.
                assert_eq!(manifest.hash.0, *blake3::hash(&data).as_bytes());
            }
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
    fn cuts_where_the_fastcdc_stream_chunker_cuts() {
        // Chunk boundaries are part of the protocol (equal content, equal chunks everywhere):
        // the buffered cutter must agree with the crate's own streaming chunker, also when the
        // reader hands out odd-sized pieces.
        struct Dribble<'a>(&'a [u8]);
        impl Read for Dribble<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(777_777);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut data = random_bytes(41 * 1024 * 1024 + 5, 3);
        // A long run of zeros forces maximum-size chunks.
        data[10 * 1024 * 1024..20 * 1024 * 1024].fill(0);
        let expected: Vec<usize> =
            fastcdc::v2020::StreamCDC::new(&data[..], CHUNK_MIN, CHUNK_AVG, CHUNK_MAX)
                .map(|c| c.unwrap().length)
                .collect();
        let got: Vec<usize> = manifest_of(Dribble(&data))
            .unwrap()
            .chunks
            .iter()
            .map(|c| c.len as usize)
            .collect();
        assert_eq!(got, expected);
        assert!(expected.contains(&(CHUNK_MAX as usize)));
    }

    #[test]
    fn empty_input() {
        let manifest = manifest_of(&[][..]).unwrap();
        assert_eq!(manifest.size, 0);
        assert!(manifest.chunks.is_empty());
        assert_eq!(manifest.hash, ContentHash::of_empty());
    }
}
