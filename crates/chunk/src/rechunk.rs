//! Re-chunking a changed file from its previous chunk list: the unchanged regions are hashed
//! (BLAKE3 only, on two threads), not cut again, and the chunker runs only around the changes.
//!
//! Why it gives exactly the chunks a full [`crate::chunk_reader`] pass gives: FastCDC's cut
//! after a cut at `s` is a function of the bytes from `s` up to and including the byte at the
//! cut (`cut_gear` reads that byte before it decides), and of the window length
//! `min(bytes left, max)`, which picks the masks once fewer than `avg` bytes are left. So when
//! `s` is a cut of the new file, an old chunk `[s_old, s_old + len)` whose bytes hash equal at
//! `s` is the new file's next chunk too, provided
//! - the byte after it is unchanged when the old cut was found by the mask (the old chunk
//!   after it hashes equal at its place too), and
//! - its window behaves the same: the same length in both files, or, for a cut found by the
//!   mask, at least `len + 2` bytes in the new one, so the scan reaches the cut. (Fewer than
//!   `avg` bytes left makes the whole window use the stricter mask; a cut at `p` is then below
//!   `avg` in both files, where the stricter mask applies in any window.)
//!
//! Otherwise the real chunker runs from `s`; each of its cuts is a cut of the new file, so
//! after each one the old list is tried again there: at the old boundary the same distance
//! away as before (an overwrite keeps sizes), or after an old chunk equal to the one just cut
//! (an insertion or deletion shifted what follows). A try that fails costs a hash of a chunk
//! or two; what is kept is always verified by the rules above, so which tries are made changes
//! only the speed, never the result.

use crate::{hash_chunk, Cutter, Manifest, Params};
use std::collections::HashMap;
use std::io::{self, Read};
use syncstore_proto::{ChunkHash, ChunkRef, ContentHash};

/// Reads exactly `buf.len()` bytes at an offset of the file (`pread`; `FileExt::read_exact_at`).
pub type ReadAt<'a> = dyn Fn(&mut [u8], u64) -> io::Result<()> + Sync + 'a;

/// What [`rechunk`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rechunked {
    /// The file's chunks: exactly those [`crate::chunk_reader`] cuts.
    pub manifest: Manifest,
    /// Bytes of old chunks kept because their bytes hashed equal (no cut point searched).
    pub kept_bytes: u64,
    /// Bytes the chunker cut again, around the changes.
    pub cut_bytes: u64,
    /// Bytes hashed to compare with old chunks that were not kept (the price of the tries).
    pub wasted_bytes: u64,
}

/// The chunks of a file of `new_size` bytes, read through `read_at`, whose previous version
/// had the chunks `old`. `on_cut` gets each chunk the chunker cut again (with its offset), in
/// order: every chunk that is not an old chunk at an unchanged place, so every new one.
///
/// # Errors
/// Any error of `read_at` (a file shorter than `new_size` gives `UnexpectedEof`).
pub fn rechunk(
    old: &[ChunkRef],
    new_size: u64,
    read_at: &ReadAt<'_>,
    on_cut: impl FnMut(u64, ChunkRef),
) -> io::Result<Rechunked> {
    rechunk_with(Params::REAL, old, new_size, read_at, on_cut)
}

/// Old chunks hashed at once before the first is decided, at most (a batch grows from 2 while
/// the old chunks keep matching, so a wrong try wastes little and a long run of kept chunks
/// keeps both threads busy).
const MAX_BATCH: usize = 64;
/// Bytes read per `read_at` while hashing: small enough to stay in the CPU's cache.
const HASH_PIECE: usize = 256 * 1024;

/// [`rechunk`] for chunks of the sizes `params` says.
pub(crate) fn rechunk_with(
    params: Params,
    old: &[ChunkRef],
    new_size: u64,
    read_at: &ReadAt<'_>,
    mut on_cut: impl FnMut(u64, ChunkRef),
) -> io::Result<Rechunked> {
    let old_list = OldList::new(params, old);
    let mut out = Rechunked {
        manifest: Manifest {
            hash: ContentHash::of_empty(),
            size: new_size,
            chunks: Vec::new(),
        },
        kept_bytes: 0,
        cut_bytes: 0,
        wasted_bytes: 0,
    };
    // Whether old chunk `idx` hashed equal at `idx`'s old start + `delta`, once looked at.
    let mut matched: HashMap<(usize, i64), bool> = HashMap::new();
    let mut cutter = Cutter::new(
        params,
        Vec::new(),
        2 * params.max,
        Positional {
            read_at,
            offset: 0,
            end: new_size,
        },
    );
    // Where the cutter cuts next (`None`: it must be moved first).
    let mut cutter_at: Option<u64> = None;
    // A cut of the new file: everything before it is in `out`.
    let mut pos = 0u64;
    // The old chunk tried at `pos`, and how far the new file's bytes moved from the old ones.
    let mut align: Option<(usize, i64)> = (!old_list.chunks.is_empty()).then_some((0, 0));
    let mut delta = 0i64;
    let mut batch = 2;
    let mut hashed_bytes = 0u64;
    while pos < new_size {
        if let Some((idx, try_delta)) = align {
            let want: Vec<usize> = (idx..old_list.chunks.len().min(idx + batch + 1))
                .filter(|j| !matched.contains_key(&(*j, try_delta)))
                .collect();
            let (found, hashed) = hash_regions(&old_list, &want, try_delta, new_size, read_at)?;
            hashed_bytes += hashed;
            for (j, equal) in found {
                matched.insert((j, try_delta), equal);
            }
            let mut kept = 0;
            let mut stopped_at_change = false;
            for j in idx..old_list.chunks.len().min(idx + batch) {
                let next_equal = matched.get(&(j + 1, try_delta)).copied();
                match old_list.keep(j, try_delta, new_size, &matched, next_equal) {
                    Keep::Yes => {
                        let chunk = old_list.chunks[j];
                        out.manifest.chunks.push(chunk);
                        out.kept_bytes += u64::from(chunk.len);
                        pos += u64::from(chunk.len);
                        kept += 1;
                    }
                    Keep::Unknown => break,
                    Keep::No => {
                        stopped_at_change = true;
                        break;
                    }
                }
            }
            if kept > 0 {
                delta = try_delta;
            }
            let next = idx + kept;
            if stopped_at_change || next == old_list.chunks.len() {
                align = None;
                batch = 2;
            } else {
                align = Some((next, try_delta));
                batch = (batch * 2).min(MAX_BATCH);
            }
            continue;
        }
        if cutter_at != Some(pos) {
            cutter.reader.offset = pos;
            cutter.restart();
        }
        let Some(bytes) = cutter.next_chunk()? else {
            // The file ended before `new_size`: read_at would have said so, but a reader that
            // does not is not trusted either.
            return Err(io::ErrorKind::UnexpectedEof.into());
        };
        let chunk = ChunkRef {
            hash: hash_chunk(bytes),
            // A chunk is at most `max` bytes, which fits in u32.
            len: bytes.len() as u32,
        };
        on_cut(pos, chunk);
        out.manifest.chunks.push(chunk);
        out.cut_bytes += u64::from(chunk.len);
        pos += u64::from(chunk.len);
        cutter_at = Some(pos);
        align = old_list.try_at(pos, delta, &chunk, &matched);
        if align.is_some() {
            batch = 2;
        }
    }
    out.manifest.hash = ContentHash::of_chunks(&out.manifest.chunks);
    out.wasted_bytes = hashed_bytes.saturating_sub(out.kept_bytes);
    Ok(out)
}

/// The previous chunk list, with each chunk's start and an index by hash.
struct OldList<'a> {
    params: Params,
    chunks: &'a [ChunkRef],
    /// `starts[j]` is the offset of chunk `j`; the last entry is the old size.
    starts: Vec<u64>,
    /// Old chunk indices by hash, for finding where shifted content resumes.
    by_hash: HashMap<ChunkHash, Vec<usize>>,
}

/// Whether an old chunk is the new file's next chunk.
enum Keep {
    Yes,
    No,
    /// It depends on the byte after it, which is not looked at yet.
    Unknown,
}

impl<'a> OldList<'a> {
    fn new(params: Params, chunks: &'a [ChunkRef]) -> OldList<'a> {
        // A list no chunker could have cut (a chunk empty or over `max`) is not used at all.
        let usable = chunks
            .iter()
            .all(|c| c.len > 0 && c.len as usize <= params.max);
        let chunks = if usable { chunks } else { &[] };
        let mut starts = Vec::with_capacity(chunks.len() + 1);
        let mut offset = 0u64;
        let mut by_hash: HashMap<ChunkHash, Vec<usize>> = HashMap::new();
        for (idx, chunk) in chunks.iter().enumerate() {
            starts.push(offset);
            offset += u64::from(chunk.len);
            by_hash.entry(chunk.hash).or_default().push(idx);
        }
        starts.push(offset);
        OldList {
            params,
            chunks,
            starts,
            by_hash,
        }
    }

    /// The old size.
    fn size(&self) -> u64 {
        self.starts[self.chunks.len()]
    }

    /// Where old chunk `idx` starts in the new file when its bytes moved by `delta` (`None`:
    /// before the start).
    fn new_start(&self, idx: usize, delta: i64) -> Option<u64> {
        self.starts[idx].checked_add_signed(delta)
    }

    /// Whether old chunk `idx`, at its old start moved by `delta` (a cut of the new file), is
    /// the new file's next chunk (see the module's docs), given what `matched` knows and
    /// whether the chunk after it hashed equal (`next_equal`, if looked at).
    fn keep(
        &self,
        idx: usize,
        delta: i64,
        new_size: u64,
        matched: &HashMap<(usize, i64), bool>,
        next_equal: Option<bool>,
    ) -> Keep {
        if matched.get(&(idx, delta)) != Some(&true) {
            return Keep::No;
        }
        let Some(new_start) = self.new_start(idx, delta) else {
            return Keep::No;
        };
        let max = self.params.max as u64;
        let len = u64::from(self.chunks[idx].len);
        let window_old = (self.size() - self.starts[idx]).min(max);
        let window_new = new_size.saturating_sub(new_start).min(max);
        let by_mask = len < window_old;
        let same_cut = window_old == window_new || (by_mask && window_new >= len + 2);
        if !same_cut {
            return Keep::No;
        }
        if !by_mask {
            return Keep::Yes;
        }
        // The cut read the byte after the chunk: the next old chunk starts with it (a cut by
        // the mask leaves bytes after it, so there is one).
        match next_equal {
            Some(true) => Keep::Yes,
            Some(false) => Keep::No,
            None => Keep::Unknown,
        }
    }

    /// The old chunk to try at `pos`, a cut of the new file that `chunk` ends: the old boundary
    /// `delta` away, else the one after an old chunk equal to `chunk`; never one known to
    /// differ there.
    fn try_at(
        &self,
        pos: u64,
        delta: i64,
        chunk: &ChunkRef,
        matched: &HashMap<(usize, i64), bool>,
    ) -> Option<(usize, i64)> {
        let unknown_or_equal =
            |idx: usize, delta: i64| matched.get(&(idx, delta)).copied().unwrap_or(true);
        let same_delta = pos
            .checked_add_signed(-delta)
            .and_then(|old_pos| {
                self.starts[..self.chunks.len()]
                    .binary_search(&old_pos)
                    .ok()
            })
            .filter(|&idx| unknown_or_equal(idx, delta))
            .map(|idx| (idx, delta));
        same_delta.or_else(|| {
            self.by_hash
                .get(&chunk.hash)?
                .iter()
                .filter(|&&idx| self.chunks[idx].len == chunk.len && idx + 1 < self.chunks.len())
                .map(|&idx| {
                    let next = idx + 1;
                    (next, pos as i64 - self.starts[next] as i64)
                })
                .filter(|&(next, try_delta)| unknown_or_equal(next, try_delta))
                // Repeated content (a run of zeros) has many candidates: the nearest to where
                // the last kept chunks were is the likeliest.
                .min_by_key(|&(_, try_delta)| try_delta.abs_diff(delta))
        })
    }
}

/// Hashes the new file's bytes where each old chunk of `indices` would be (moved by `delta`)
/// and says whether they equal the old chunk; on two threads when there are several. Also
/// returns the bytes hashed.
fn hash_regions(
    old_list: &OldList<'_>,
    indices: &[usize],
    delta: i64,
    new_size: u64,
    read_at: &ReadAt<'_>,
) -> io::Result<(Vec<(usize, bool)>, u64)> {
    let one = |idx: usize, buf: &mut Vec<u8>, hashed: &mut u64| -> io::Result<(usize, bool)> {
        let chunk = old_list.chunks[idx];
        let Some(start) = old_list.new_start(idx, delta) else {
            return Ok((idx, false));
        };
        let len = u64::from(chunk.len);
        if start.checked_add(len).is_none_or(|end| end > new_size) {
            return Ok((idx, false));
        }
        *hashed += len;
        Ok((idx, region_hash(read_at, start, len, buf)? == chunk.hash))
    };
    let run = |part: &[usize]| -> io::Result<(Vec<(usize, bool)>, u64)> {
        let mut buf = vec![0u8; HASH_PIECE];
        let mut hashed = 0;
        let found = part
            .iter()
            .map(|&idx| one(idx, &mut buf, &mut hashed))
            .collect::<io::Result<Vec<_>>>()?;
        Ok((found, hashed))
    };
    if indices.len() < 2 {
        return run(indices);
    }
    let (first, second) = indices.split_at(indices.len() / 2);
    std::thread::scope(|scope| {
        let helper = scope.spawn(|| run(second));
        let (mut found, mut hashed) = run(first)?;
        // A panic in the helper is a bug here, not bad input: pass it on.
        let (rest, rest_hashed) = helper
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        found.extend(rest);
        hashed += rest_hashed;
        Ok((found, hashed))
    })
}

/// BLAKE3 of `len` bytes of the file at `start`, read a piece at a time into `buf`.
fn region_hash(
    read_at: &ReadAt<'_>,
    start: u64,
    len: u64,
    buf: &mut [u8],
) -> io::Result<ChunkHash> {
    let mut hasher = blake3::Hasher::new();
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        read_at(&mut buf[..n], start + done)?;
        hasher.update(&buf[..n]);
        done += n as u64;
    }
    Ok(ChunkHash(*hasher.finalize().as_bytes()))
}

/// A [`Read`] over `read_at` from `offset` up to `end`, for the chunker.
struct Positional<'r, 'a> {
    read_at: &'r ReadAt<'a>,
    offset: u64,
    end: u64,
}

impl Read for Positional<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.end.saturating_sub(self.offset)) as usize;
        if n == 0 {
            return Ok(0);
        }
        (self.read_at)(&mut buf[..n], self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, RngCore, SeedableRng};

    /// Chunk sizes small enough for many chunks in a few KiB.
    const TINY: Params = Params {
        min: 64,
        avg: 256,
        max: 1024,
    };

    /// What a full pass of the chunker cuts, with `params`.
    fn chunk_all(params: Params, data: &[u8]) -> Vec<ChunkRef> {
        let mut cutter = Cutter::new(params, Vec::new(), 2 * params.max, data);
        let mut chunks = Vec::new();
        while let Some(bytes) = cutter.next_chunk().unwrap() {
            chunks.push(ChunkRef {
                hash: hash_chunk(bytes),
                len: bytes.len() as u32,
            });
        }
        chunks
    }

    fn read_at(data: &[u8]) -> impl Fn(&mut [u8], u64) -> io::Result<()> + Sync + '_ {
        move |buf, offset| {
            let start = usize::try_from(offset).map_err(io::Error::other)?;
            let end = start + buf.len();
            if end > data.len() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            buf.copy_from_slice(&data[start..end]);
            Ok(())
        }
    }

    /// Re-chunks `new` from `old`'s chunks with `params` and checks the result against a full
    /// pass: the same list, every byte kept or cut once, and each chunk handed to `on_cut` at
    /// its offset.
    fn check(params: Params, old: &[u8], new: &[u8]) -> Rechunked {
        let old_chunks = chunk_all(params, old);
        let read = read_at(new);
        let mut cut = Vec::new();
        let found = rechunk_with(
            params,
            &old_chunks,
            new.len() as u64,
            &read,
            |offset, chunk| cut.push((offset, chunk)),
        )
        .unwrap();
        let expected = chunk_all(params, new);
        assert_eq!(found.manifest.chunks, expected);
        assert_eq!(found.manifest.hash, ContentHash::of_chunks(&expected));
        assert_eq!(found.manifest.size, new.len() as u64);
        assert_eq!(found.kept_bytes + found.cut_bytes, new.len() as u64);
        assert_eq!(
            cut.iter().map(|(_, c)| u64::from(c.len)).sum::<u64>(),
            found.cut_bytes
        );
        for (offset, chunk) in cut {
            let at = offset as usize;
            assert_eq!(hash_chunk(&new[at..at + chunk.len as usize]), chunk.hash);
        }
        found
    }

    /// A file of random bytes, runs of zeros (cut at `max`) and repeats of earlier pieces (equal
    /// chunks at several places).
    fn file(pieces: &[(u8, usize)], seed: u64) -> Vec<u8> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut data = Vec::new();
        for &(kind, len) in pieces {
            match kind % 4 {
                0 | 1 => {
                    let mut piece = vec![0u8; len];
                    rng.fill_bytes(&mut piece);
                    data.extend_from_slice(&piece);
                }
                2 => data.resize(data.len() + len, 0),
                _ if !data.is_empty() => {
                    let start = rng.gen_range(0..data.len());
                    let end = (start + len).min(data.len());
                    data.extend_from_within(start..end);
                }
                _ => {}
            }
        }
        data
    }

    /// Where an edit goes: a share of the file, or near an old chunk boundary.
    #[derive(Clone, Debug)]
    enum At {
        Share(u16),
        Boundary(usize, i8),
    }

    #[derive(Clone, Debug)]
    enum Edit {
        Overwrite(At, Vec<u8>),
        Insert(At, Vec<u8>),
        Delete(At, usize),
        Truncate(At),
        Append(Vec<u8>),
        Flip(At),
    }

    fn at() -> impl Strategy<Value = At> {
        prop_oneof![
            any::<u16>().prop_map(At::Share),
            (any::<usize>(), -2i8..=2).prop_map(|(idx, off)| At::Boundary(idx, off)),
        ]
    }

    fn edit() -> impl Strategy<Value = Edit> {
        let bytes = prop::collection::vec(any::<u8>(), 1..700);
        prop_oneof![
            (at(), bytes.clone()).prop_map(|(at, b)| Edit::Overwrite(at, b)),
            (at(), bytes.clone()).prop_map(|(at, b)| Edit::Insert(at, b)),
            (at(), 1usize..3000).prop_map(|(at, n)| Edit::Delete(at, n)),
            at().prop_map(Edit::Truncate),
            bytes.prop_map(Edit::Append),
            at().prop_map(Edit::Flip),
        ]
    }

    fn position(at: &At, data: &[u8], boundaries: &[usize]) -> usize {
        let pos = match *at {
            At::Share(share) => data.len() * usize::from(share) / usize::from(u16::MAX),
            At::Boundary(idx, off) if !boundaries.is_empty() => {
                boundaries[idx % boundaries.len()].saturating_add_signed(isize::from(off))
            }
            At::Boundary(..) => 0,
        };
        pos.min(data.len())
    }

    fn apply(data: &mut Vec<u8>, edit: &Edit, boundaries: &[usize]) {
        match edit {
            Edit::Overwrite(at, bytes) => {
                let pos = position(at, data, boundaries);
                let end = (pos + bytes.len()).min(data.len());
                data[pos..end].copy_from_slice(&bytes[..end - pos]);
            }
            Edit::Insert(at, bytes) => {
                let pos = position(at, data, boundaries);
                data.splice(pos..pos, bytes.iter().copied());
            }
            Edit::Delete(at, n) => {
                let pos = position(at, data, boundaries);
                let end = (pos + n).min(data.len());
                data.drain(pos..end);
            }
            Edit::Truncate(at) => {
                let pos = position(at, data, boundaries);
                data.truncate(pos);
            }
            Edit::Append(bytes) => data.extend_from_slice(bytes),
            Edit::Flip(at) => {
                let pos = position(at, data, boundaries);
                if let Some(byte) = data.get_mut(pos) {
                    *byte ^= 0x5a;
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2000)))]

        #[test]
        fn gives_what_a_full_pass_gives(
            pieces in prop::collection::vec((any::<u8>(), 1usize..6000), 0..8),
            seed in any::<u64>(),
            edits in prop::collection::vec(edit(), 0..4),
        ) {
            let old = file(&pieces, seed);
            let boundaries: Vec<usize> = chunk_all(TINY, &old)
                .iter()
                .scan(0usize, |offset, chunk| {
                    *offset += chunk.len as usize;
                    Some(*offset)
                })
                .collect();
            let mut new = old.clone();
            for edit in &edits {
                apply(&mut new, edit, &boundaries);
            }
            check(TINY, &old, &new);
        }
    }

    #[test]
    fn a_one_byte_edit_cuts_a_chunk_or_two_with_the_real_sizes() {
        let old = file(&[(0, 40 << 20)], 7);
        for pos in [0, 1, 20 << 20, old.len() - 1] {
            let mut new = old.clone();
            new[pos] ^= 1;
            let found = check(Params::REAL, &old, &new);
            assert!(
                found.cut_bytes <= 2 * u64::from(syncstore_proto::CHUNK_MAX),
                "edit at {pos}: {found:?}"
            );
        }
        // The real sizes, through the public function, against the real chunker.
        let mut new = old.clone();
        new.splice(30 << 20..30 << 20, [1, 2, 3]);
        let found = rechunk(
            &crate::manifest_of(&old[..]).unwrap().chunks,
            new.len() as u64,
            &read_at(&new),
            |_, _| {},
        )
        .unwrap();
        assert_eq!(found.manifest, crate::manifest_of(&new[..]).unwrap());
        assert!(found.cut_bytes <= 2 * u64::from(syncstore_proto::CHUNK_MAX));
    }

    #[test]
    fn unchanged_and_shifted_content_is_kept_not_cut() {
        let old = file(&[(0, 200_000)], 9);
        let unchanged = check(TINY, &old, &old);
        assert_eq!(unchanged.cut_bytes, 0);
        assert_eq!(unchanged.wasted_bytes, 0);
        // Bytes inserted at the front shift everything: the rest is found again.
        let mut shifted = vec![7u8; 100];
        shifted.extend_from_slice(&old);
        let found = check(TINY, &old, &shifted);
        assert!(found.cut_bytes < 8 * TINY.max as u64, "{found:?}");
        // Appending cuts the old last chunk again, and the new bytes.
        let mut appended = old.clone();
        appended.extend_from_slice(&[3u8; 5000]);
        let found = check(TINY, &old, &appended);
        assert!(found.cut_bytes < 5000 + 3 * TINY.max as u64, "{found:?}");
    }

    #[test]
    fn a_list_no_chunker_cut_is_not_trusted() {
        let data = file(&[(0, 10_000)], 11);
        let mut bogus = chunk_all(TINY, &data);
        bogus[0].len = 0;
        let found =
            rechunk_with(TINY, &bogus, data.len() as u64, &read_at(&data), |_, _| {}).unwrap();
        assert_eq!(found.manifest.chunks, chunk_all(TINY, &data));
        assert_eq!(found.kept_bytes, 0);
    }

    #[test]
    fn a_file_shorter_than_said_is_an_error() {
        let data = file(&[(0, 10_000)], 12);
        let old = chunk_all(TINY, &data);
        let err = rechunk_with(TINY, &old, 20_000, &read_at(&data), |_, _| {}).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
