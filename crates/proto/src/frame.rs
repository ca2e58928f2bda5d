//! The chunk pack format: chunks streamed back to back in one HTTP body.
//!
//! Each frame is a 36-byte header, the 32-byte BLAKE3 hash and the length as a big-endian `u32`,
//! followed by that many bytes. Used for uploads (`POST /api/v1/chunks/upload`) and downloads
//! (`POST /api/v1/chunks/download`), so many small files cost one round trip, not one each.

use crate::{ChunkHash, MAX_CHUNK_LEN};

/// Size of a frame header in bytes.
pub const FRAME_HEADER_LEN: usize = 36;

/// Encodes the header of a frame holding `len` bytes of the chunk `hash`.
pub fn encode_frame_header(hash: &ChunkHash, len: u32) -> [u8; FRAME_HEADER_LEN] {
    let mut header = [0u8; FRAME_HEADER_LEN];
    header[..32].copy_from_slice(&hash.0);
    header[32..].copy_from_slice(&len.to_be_bytes());
    header
}

/// Decodes a frame header.
///
/// # Errors
/// A message when the length exceeds [`MAX_CHUNK_LEN`].
pub fn decode_frame_header(header: &[u8; FRAME_HEADER_LEN]) -> Result<(ChunkHash, u32), String> {
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&header[..32]);
    let len = u32::from_be_bytes([header[32], header[33], header[34], header[35]]);
    if len > MAX_CHUNK_LEN {
        return Err(format!(
            "chunk frame of {len} bytes exceeds the limit of {MAX_CHUNK_LEN}"
        ));
    }
    Ok((ChunkHash(hash), len))
}
