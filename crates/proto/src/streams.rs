//! Wire types of upload streams: other devices fetch a large file's chunks while it is still
//! being uploaded (issue 18; Dropbox's "streaming sync").
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `POST /api/v1/streams` | [`StreamPart`] | [`StreamPartAccepted`]; 409 when the part does not continue the stream, names a chunk the server does not hold, or starts a stream of a path that has a version (only new files are streamed) |
//! | `GET /api/v1/streams?after=S&timeout_ms=T` | | [`StreamsResponse`]; long-polls up to T ms for a part after S from another device |
//!
//! While a device uploads a large file, it announces each run of the file's chunks once the
//! server holds them all (uploaded, or there already), in file order: `offset` is where the
//! run starts, and a part at offset 0 starts a new stream of that path (dropping the device's
//! earlier one). Other devices of the user follow the parts and fetch the chunks into a temp
//! file of theirs. A stream announces, it never commits: the file becomes a version, and shows
//! up in any folder, only through the `PutFile` that ends the upload, like any other; a stream
//! its device abandons (killed, offline, the file changed again) ends unused when it has had no
//! part for a while, and its temp files go.

use crate::{ChunkRef, DeviceName, RelPath};
use serde::{Deserialize, Serialize};

/// Files at least this large are streamed (twice the largest chunk: smaller ones go in one
/// upload anyway).
pub const STREAM_MIN_BYTES: u64 = 2 * crate::CHUNK_MAX as u64;

/// The most chunks one [`StreamPart`] may name.
pub const MAX_STREAM_PART_CHUNKS: usize = 4096;

/// `POST /api/v1/streams` body: a run of a file's chunks the server now holds.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct StreamPart {
    /// The file being uploaded.
    pub path: RelPath,
    /// The uploader's random name for this upload of the file (32 hex digits).
    pub stream: String,
    /// The file's size as the uploader's scan saw it.
    pub size: u64,
    /// Where `chunks` start in the file: 0 starts the stream, any other value must be where
    /// the stream's previous part ended.
    pub offset: u64,
    /// Consecutive chunks of the file from `offset`, in order.
    pub chunks: Vec<ChunkRef>,
}

/// `POST /api/v1/streams` answer.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct StreamPartAccepted {
    /// The part's position in the user's stream parts (what [`StreamsQuery::after`] counts).
    pub seq: u64,
}

/// `GET /api/v1/streams` query string.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StreamsQuery {
    /// Parts after this position (0: all that are live).
    #[serde(default)]
    pub after: u64,
    /// How long to wait for a part when there is none yet.
    #[serde(default)]
    pub timeout_ms: u64,
}

/// One announced part, as other devices see it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct StreamPartInfo {
    pub seq: u64,
    pub device: DeviceName,
    #[serde(flatten)]
    pub part: StreamPart,
}

/// `GET /api/v1/streams` answer.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct StreamsResponse {
    /// The position of the last part returned, or `after` when none was; ask after it next.
    pub seq: u64,
    /// Parts after `after` of other devices' live streams, oldest first.
    pub parts: Vec<StreamPartInfo>,
    /// Every live stream of another device (its `stream` name): a follower drops what it
    /// fetched for a stream that is not here any more and whose file was not committed.
    pub live: Vec<String>,
    /// More parts wait beyond this answer: ask again at once.
    #[serde(default)]
    pub more: bool,
}

/// Whether `stream` is a stream name as uploaders make them (32 lowercase hex digits).
pub fn is_stream_name(stream: &str) -> bool {
    stream.len() == 32
        && stream
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_are_32_lowercase_hex_digits() {
        assert!(is_stream_name("0123456789abcdef0123456789abcdef"));
        assert!(!is_stream_name("0123456789ABCDEF0123456789abcdef"));
        assert!(!is_stream_name("0123456789abcdef"));
        assert!(!is_stream_name("../../../../etc/passwd/xxxxxxxxxx"));
    }

    #[test]
    fn a_part_info_is_flat_on_the_wire() {
        let info = StreamPartInfo {
            seq: 3,
            device: DeviceName::new("laptop").unwrap(),
            part: StreamPart {
                path: RelPath::new("big.bin").unwrap(),
                stream: "0123456789abcdef0123456789abcdef".into(),
                size: 10,
                offset: 0,
                chunks: Vec::new(),
            },
        };
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["path"], "big.bin");
        assert_eq!(json["device"], "laptop");
        let back: StreamPartInfo = serde_json::from_value(json).unwrap();
        assert_eq!(back, info);
    }
}
