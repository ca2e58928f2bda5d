//! Wire types of the syncstore HTTP API, plus newtypes that validate once at the edge.
//!
//! Everything that crosses the network is defined here and nowhere else: the other crates convert
//! these types into their own by hand, so the wire format cannot change by accident.
//! A value of a newtype here ([`RelPath`], [`ChunkHash`], [`DeviceName`], ...) is valid by
//! construction; code past this crate asserts instead of re-checking.
//!
//! Start reading at [`RelPath`] (what a path may be), then [`Op`] (what a client may ask) and
//! [`Change`] (what the journal tells every device).
//! `devices.rs` holds a user's devices as the web UI lists and revokes them ([`DeviceInfo`],
//! [`RevokeRequest`]).
//! `streams.rs` holds upload streams, which let other devices fetch a large file's chunks while
//! it is being uploaded ([`StreamPart`], [`StreamsResponse`]).
//! [`daemon`] holds the messages of the client daemon's local control socket, which is a wire
//! too.
//! This crate does no IO.

mod api;
pub mod daemon;
mod devices;
mod frame;
mod history;
mod names;
mod path;
mod streams;
mod tls;

pub use api::*;
pub use devices::*;
pub use frame::{decode_frame_header, encode_frame_header, FRAME_HEADER_LEN};
pub use history::*;
pub use names::{DeviceName, NameError, UserName};
pub use path::{map_beneath, set_beneath, PathError, RelPath};
pub use streams::*;
pub use tls::{CertFingerprint, FingerprintError};

use serde::{Deserialize, Serialize};
use std::fmt;

/// The largest chunk the server accepts (the chunker never produces a bigger one).
pub const MAX_CHUNK_LEN: u32 = 8 * 1024 * 1024;
/// Chunker parameters: shared by client and server so that equal content gives equal chunks.
pub const CHUNK_MIN: u32 = 256 * 1024;
/// Average chunk size targeted by FastCDC.
pub const CHUNK_AVG: u32 = 1024 * 1024;
/// Largest chunk FastCDC may cut.
pub const CHUNK_MAX: u32 = 4 * 1024 * 1024;
/// The name of the client's private directory at the root of a synced folder; never synced.
pub const META_DIR: &str = ".syncstore";

/// Error for a hex hash that is not 64 hex digits.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid hash {0:?}: expected 64 hex digits")]
pub struct HashError(pub String);

macro_rules! hash_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The hash as 64 lowercase hex digits.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            /// Parses 64 hex digits.
            ///
            /// # Errors
            /// [`HashError`] when the text is not exactly 64 hex digits.
            pub fn from_hex(text: &str) -> Result<Self, HashError> {
                let mut bytes = [0u8; 32];
                if text.len() != 64 {
                    return Err(HashError(text.chars().take(80).collect()));
                }
                hex::decode_to_slice(text, &mut bytes)
                    .map_err(|_| HashError(text.chars().take(80).collect()))?;
                Ok(Self(bytes))
            }
        }
        impl TryFrom<String> for $name {
            type Error = HashError;
            fn try_from(text: String) -> Result<Self, HashError> {
                Self::from_hex(&text)
            }
        }
        impl From<$name> for String {
            fn from(hash: $name) -> String {
                hash.to_hex()
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &self.to_hex()[..12])
            }
        }
    };
}

hash_newtype!(
    /// BLAKE3 of one chunk's bytes: the address of the chunk in the chunk store.
    ChunkHash
);
hash_newtype!(
    /// The identity of a file's content: what the planner compares to tell changed from
    /// unchanged. Defined by the file's chunks ([`ContentHash::of_chunks`]), so it costs no pass
    /// over the bytes beyond the chunking, and the server can check it against the chunk list.
    ContentHash
);

/// Domain of the BLAKE3 key derivation for [`ContentHash::of_chunks`] of several chunks.
const CHUNK_LIST_CONTEXT: &str = "syncstore 2026-11-25 content hash of a chunk list";

impl ContentHash {
    /// The content hash of the empty file.
    pub fn of_empty() -> Self {
        // BLAKE3 of zero bytes.
        Self::from_hex("af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262")
            .expect("constant is valid hex")
    }

    /// The content hash of a file made of `chunks`, in order: BLAKE3 of the bytes for an empty
    /// or one-chunk file (so for most files it equals `b3sum`), and for more chunks a BLAKE3
    /// derived key over each chunk's hash and length. Chunk boundaries depend only on the
    /// bytes, so equal content always gives the equal hash.
    pub fn of_chunks(chunks: &[ChunkRef]) -> Self {
        match chunks {
            [] => Self::of_empty(),
            [one] => ContentHash(one.hash.0),
            many => {
                let mut hasher = blake3::Hasher::new_derive_key(CHUNK_LIST_CONTEXT);
                for chunk in many {
                    hasher.update(&chunk.hash.0);
                    hasher.update(&chunk.len.to_le_bytes());
                }
                ContentHash(*hasher.finalize().as_bytes())
            }
        }
    }
}

macro_rules! id16_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(pub [u8; 16]);

        impl $name {
            /// The id as 32 lowercase hex digits.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            /// Parses 32 hex digits.
            ///
            /// # Errors
            /// [`IdError`] when the text is not exactly 32 hex digits.
            pub fn from_hex(text: &str) -> Result<Self, IdError> {
                let mut bytes = [0u8; 16];
                if text.len() != 32 {
                    return Err(IdError(text.chars().take(80).collect()));
                }
                hex::decode_to_slice(text, &mut bytes)
                    .map_err(|_| IdError(text.chars().take(80).collect()))?;
                Ok(Self(bytes))
            }
        }
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(text: String) -> Result<Self, IdError> {
                Self::from_hex(&text)
            }
        }
        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.to_hex()
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }
    };
}

/// Error for an id that is not 32 hex digits.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid id {0:?}: expected 32 hex digits")]
pub struct IdError(pub String);

id16_newtype!(
    /// The identity of one user namespace: 16 random bytes drawn when the account is created and
    /// never reused. A client compares it with the one its base was made against, so an account
    /// re-created after its database was lost is never mistaken for the old one; the chunk store
    /// keys content by it, so a new account can never read an old account's chunks.
    NamespaceId
);
id16_newtype!(
    /// The identity of one journal position: 16 random bytes drawn when the change at that
    /// cursor was committed (all zero for cursor 0). A journal restored from a backup older than
    /// a client's last sync either lacks the client's cursor or holds another change there, with
    /// another tag, so the client can tell that the history it saw is gone.
    JournalTag
);

macro_rules! u64_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

u64_newtype!(
    /// The journal position of the change that last touched a node; conditional writes name it.
    Revision
);
u64_newtype!(
    /// A position in a user's change journal: "everything up to and including this change".
    Cursor
);
u64_newtype!(
    /// A node's identity, stable across renames, so a rename is one update and not delete + create.
    NodeId
);

impl Revision {
    /// The cursor at which this revision was written (they share one counter).
    pub fn as_cursor(self) -> Cursor {
        Cursor(self.0)
    }

    /// The revision a change written at journal position `cursor` gives its node.
    pub fn written_at(cursor: Cursor) -> Revision {
        Revision(cursor.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(byte: u8, len: u32) -> ChunkRef {
        ChunkRef {
            hash: ChunkHash([byte; 32]),
            len,
        }
    }

    #[test]
    fn content_hash_of_chunks() {
        assert_eq!(ContentHash::of_chunks(&[]), ContentHash::of_empty());
        // One chunk: the file's BLAKE3, which is the chunk's hash.
        assert_eq!(ContentHash::of_chunks(&[chunk(7, 10)]).0, [7; 32]);
        let two = ContentHash::of_chunks(&[chunk(1, 10), chunk(2, 10)]);
        assert_ne!(two.0, [1; 32]);
        assert_ne!(two.0, [2; 32]);
        // Order and lengths are part of the identity.
        assert_ne!(two, ContentHash::of_chunks(&[chunk(2, 10), chunk(1, 10)]));
        assert_ne!(two, ContentHash::of_chunks(&[chunk(1, 11), chunk(2, 10)]));
        assert_eq!(two, ContentHash::of_chunks(&[chunk(1, 10), chunk(2, 10)]));
    }
}
