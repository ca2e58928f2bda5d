//! Upload streams (issue 18): what a device announces of a large file while it uploads it, so
//! the user's other devices fetch its chunks before the commit.
//!
//! The rules are here, once, over the [`MetaTxn`] primitives every backend implements: a part
//! at offset 0 starts a stream of its path (the device's earlier parts of that path go); any
//! other part must continue a stream of the same device and path exactly where its last part
//! ended; a stream with no part for [`STREAM_IDLE_MS`] is dead (a killed or offline uploader)
//! and its parts go at the next write; a commit of the path by its device ends the stream.
//! Parts are announcements only: nothing here ever becomes a file version.

use crate::meta::MetaTxn;
use crate::{DeviceId, StoreError, UserId};
use syncstore_proto::{ChunkRef, DeviceName, StreamPart};

/// A stream with no new part for this long is abandoned.
pub const STREAM_IDLE_MS: i64 = 120_000;

/// One stored part.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StoredStreamPart {
    pub seq: u64,
    pub device_id: DeviceId,
    pub device_name: DeviceName,
    pub part: StreamPart,
    pub at_ms: i64,
}

/// A stream as [`MetaTxn::stream_heads`] lists it: its name, device and latest part's time.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StreamHead {
    pub stream: String,
    pub device_id: DeviceId,
    pub last_ms: i64,
}

/// What [`crate::MetaStore::stream_parts`] answers.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct StreamsPage {
    /// The position of the last part looked at (returned or not); `after` when none was.
    pub seq: u64,
    /// Parts of other devices' live streams after `after`, oldest first.
    pub parts: Vec<StoredStreamPart>,
    /// The names of other devices' live streams.
    pub live: Vec<String>,
    pub more: bool,
}

/// Why a part was refused.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum PartRefused {
    #[error("stream {stream} has no part; start it again at offset 0")]
    UnknownStream { stream: String },
    #[error("stream {stream} belongs to another device or path")]
    NotYours { stream: String },
    #[error("stream {stream} ends at offset {end}, not {offset}; start it again at offset 0")]
    NotContinuing {
        stream: String,
        end: u64,
        offset: u64,
    },
}

/// The end offset of a part (saturating: a part past `u64::MAX` ends there, which no file
/// size reaches, so it is refused as ending past the file).
pub fn part_end(start: u64, chunks: &[ChunkRef]) -> u64 {
    chunks
        .iter()
        .fold(start, |end, c| end.saturating_add(u64::from(c.len)))
}

/// Adds `part` from `device_id` by the rules above; the part's position, or why not.
///
/// # Errors
/// Backend failures.
pub fn add_part(
    txn: &mut dyn MetaTxn,
    user_id: UserId,
    device_id: DeviceId,
    part: &StreamPart,
    now_ms: i64,
) -> Result<Result<u64, PartRefused>, StoreError> {
    txn.serialize_writes(user_id)?;
    for head in txn.stream_heads(user_id)? {
        if head.last_ms < now_ms - STREAM_IDLE_MS {
            txn.delete_stream(user_id, &head.stream)?;
        }
    }
    if part.offset == 0 {
        txn.delete_streams_of(user_id, device_id, &part.path)?;
    } else {
        let stream = part.stream.clone();
        match txn.stream_tail(user_id, &part.stream)? {
            None => return Ok(Err(PartRefused::UnknownStream { stream })),
            Some((owner, path, _)) if owner != device_id || path != part.path => {
                return Ok(Err(PartRefused::NotYours { stream }))
            }
            Some((_, _, end)) if end != part.offset => {
                return Ok(Err(PartRefused::NotContinuing {
                    stream,
                    end,
                    offset: part.offset,
                }))
            }
            Some(_) => {}
        }
    }
    let seq = txn.next_stream_seq(user_id)?;
    txn.insert_stream_part(user_id, seq, device_id, part, now_ms)?;
    Ok(Ok(seq))
}

/// The parts after `after` of live streams of devices other than `device_id`, at most `limit`.
///
/// # Errors
/// Backend failures.
pub fn parts_for(
    txn: &mut dyn MetaTxn,
    user_id: UserId,
    device_id: DeviceId,
    after: u64,
    limit: usize,
    now_ms: i64,
) -> Result<StreamsPage, StoreError> {
    let live: Vec<String> = txn
        .stream_heads(user_id)?
        .into_iter()
        .filter(|head| head.device_id != device_id && head.last_ms >= now_ms - STREAM_IDLE_MS)
        .map(|head| head.stream)
        .collect();
    let mut rows = txn.stream_parts_after(user_id, after, limit + 1)?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let seq = rows.last().map_or(after, |row| row.seq);
    let parts = rows
        .into_iter()
        .filter(|row| row.device_id != device_id && live.contains(&row.part.stream))
        .collect();
    Ok(StreamsPage {
        seq,
        parts,
        live,
        more,
    })
}
