//! Deltas of a changed chunk against the old chunks it replaces (rsync's algorithm, through
//! Dropbox's `fast_rsync`): a one-byte edit in a 1 MiB chunk sends a few KiB, not the chunk.
//!
//! The side that has the old bytes (the *base*: one or more old chunks, concatenated) makes a
//! [`signature`] of them; the side that has the new chunk makes a [`diff`] against it; the side
//! with the base [`apply`]s it. A delta says nothing about what it makes: the result is trusted
//! only when it hashes to the chunk's name (BLAKE3), so a wrong base, a bad delta or an MD4
//! collision in the signature is an error, never a wrong chunk. Chunks, their names and the
//! content hash do not change: a delta is only a way of sending a chunk.

use syncstore_proto::{ChunkHash, CHUNK_MAX};

/// Most old chunks one delta is made against.
pub const MAX_BASES: usize = 4;
/// Most bytes of base one delta is made against.
pub const MAX_BASE_BYTES: u64 = 2 * CHUNK_MAX as u64;
/// Bytes of MD4 kept per block of a signature (collisions only cost a failed delta).
const CRYPTO_HASH_BYTES: u32 = 8;

/// Why a delta could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeltaError {
    #[error("the signature is not valid")]
    BadSignature,
    #[error("the delta is not valid: {0}")]
    BadDelta(String),
    #[error("the delta makes a chunk of more than {0} bytes")]
    TooLarge(usize),
    #[error("the delta applied to its base does not make chunk {0}")]
    Mismatch(ChunkHash),
}

/// The block size of a signature over `len` bytes: about a thousand blocks, between 1 and
/// 8 KiB, so a signature is about 12 KB whatever the base and an edit costs a block or two.
fn block_size(len: usize) -> u32 {
    let target = (len / 1024).next_power_of_two();
    target.clamp(1024, 8192) as u32
}

/// The signature of `base` (what the side without it makes a delta against).
pub fn signature(base: &[u8]) -> Vec<u8> {
    let options = fast_rsync::SignatureOptions {
        block_size: block_size(base.len()),
        crypto_hash_size: CRYPTO_HASH_BYTES,
    };
    fast_rsync::Signature::calculate(base, options).into_serialized()
}

/// The delta that makes `target` from the base `signature` was made of.
///
/// # Errors
/// When `signature` is not one.
pub fn diff(signature: Vec<u8>, target: &[u8]) -> Result<Vec<u8>, DeltaError> {
    let signature =
        fast_rsync::Signature::deserialize(signature).map_err(|_| DeltaError::BadSignature)?;
    let mut out = Vec::new();
    fast_rsync::diff(&signature.index(), target, &mut out).map_err(|_| DeltaError::BadSignature)?;
    Ok(out)
}

/// The delta that makes `target` from `base`, both at hand (the server's side of a download).
pub fn delta_between(base: &[u8], target: &[u8]) -> Vec<u8> {
    diff(signature(base), target).expect("a signature just made is valid")
}

/// Applies `delta` to `base`; the result must be chunk `expected` (at most
/// [`CHUNK_MAX`] bytes).
///
/// # Errors
/// When the delta is not valid, makes too much, or makes anything but `expected`.
pub fn apply(base: &[u8], delta: &[u8], expected: ChunkHash) -> Result<Vec<u8>, DeltaError> {
    let limit = CHUNK_MAX as usize;
    let mut out = Vec::new();
    fast_rsync::apply_limited(base, delta, &mut out, limit).map_err(|err| match err {
        fast_rsync::ApplyError::OutputLimit { .. } => DeltaError::TooLarge(limit),
        other => DeltaError::BadDelta(other.to_string()),
    })?;
    if crate::hash_chunk(&out) != expected {
        return Err(DeltaError::Mismatch(expected));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..len).map(|_| rng.gen()).collect()
    }

    #[test]
    fn a_one_byte_edit_of_a_chunk_costs_a_few_kib_and_applies_exactly() {
        let base = random(1024 * 1024, 1);
        let mut target = base.clone();
        target[500_000] ^= 0xff;
        let sig = signature(&base);
        assert!(sig.len() < 16 * 1024, "signature of {} bytes", sig.len());
        let delta = diff(sig, &target).unwrap();
        assert!(delta.len() < 4 * 1024, "delta of {} bytes", delta.len());
        assert_eq!(
            apply(&base, &delta, crate::hash_chunk(&target)).unwrap(),
            target
        );
        // Against two old chunks, with an insertion that moved the cut between them.
        let mut second = base.clone();
        second.extend(random(300_000, 2));
        let mut moved = second.clone();
        moved.splice(1_000_000..1_000_000, *b"inserted");
        let delta = delta_between(&second, &moved);
        assert!(delta.len() < 12 * 1024, "delta of {} bytes", delta.len());
        assert_eq!(
            apply(&second, &delta, crate::hash_chunk(&moved)).unwrap(),
            moved
        );
    }

    #[test]
    fn a_delta_that_makes_anything_else_is_refused() {
        let base = random(300_000, 3);
        let target = random(300_000, 4);
        let delta = delta_between(&base, &target);
        let wrong = crate::hash_chunk(b"something else");
        assert_eq!(
            apply(&base, &delta, wrong),
            Err(DeltaError::Mismatch(wrong))
        );
        // Applied to another base, a copy command makes other bytes: refused by the hash.
        let edited = {
            let mut t = base.clone();
            t[10] ^= 1;
            t
        };
        let delta = delta_between(&base, &edited);
        let other_base = random(300_000, 5);
        assert!(apply(&other_base, &delta, crate::hash_chunk(&edited)).is_err());
        // Garbage, a cut delta and a bad signature are errors, not panics.
        assert!(matches!(
            apply(&base, b"garbage", wrong),
            Err(DeltaError::BadDelta(_))
        ));
        assert!(apply(&base, &delta[..delta.len() / 2], crate::hash_chunk(&edited)).is_err());
        assert_eq!(
            diff(b"nonsense".to_vec(), &target),
            Err(DeltaError::BadSignature)
        );
        assert_eq!(diff(Vec::new(), &target), Err(DeltaError::BadSignature));
    }

    #[test]
    fn a_delta_cannot_make_more_than_a_chunk() {
        let base = random(64 * 1024, 6);
        // 5 MiB of copies of the base: a small delta that would make more than a chunk.
        let target: Vec<u8> = base.iter().copied().cycle().take(5 * 1024 * 1024).collect();
        let delta = delta_between(&base, &target);
        assert!(delta.len() < 64 * 1024, "delta of {} bytes", delta.len());
        let err = apply(&base, &delta, crate::hash_chunk(&target)).unwrap_err();
        assert_eq!(err, DeltaError::TooLarge(CHUNK_MAX as usize));
    }
}
