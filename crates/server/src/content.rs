//! Files written and read by the server itself, for the front ends that speak whole files
//! rather than chunks (the web interface, WebDAV): a byte stream is cut into the chunks a
//! client would cut ([`syncstore_chunk`]), stored, and committed as one conditional `PutFile`;
//! a file is read back as a byte stream from its chunks, any range of it.
//!
//! A stream that fails or is cut off commits nothing: the chunks it completed stay stored
//! (content addressed; garbage collection reclaims them), and the path keeps its old version.

use crate::error::ApiError;
use crate::routes::{now_ms, AppState};
use axum::http::StatusCode;
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use std::io;
use std::ops::Range;
use std::sync::Arc;
use syncstore_proto::NamespaceId;
use syncstore_proto::{ChunkRef, ContentHash, Op, Precondition, RelPath, RemoteEntry};
use syncstore_store::{BatchOutcome, OpOutcome, Principal, StoreError, UserId};
use tokio::sync::mpsc;

/// How many cut chunks wait between the chunker and the store (each at most `CHUNK_MAX`).
const CUT_AHEAD: usize = 4;
/// Most bytes of chunks held before a batch is stored, as for a client's upload.
const STORE_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// How many chunks a read fetches ahead of the one being sent.
const READ_AHEAD: usize = 4;

/// What storing a byte stream gave: the content's hash, size and chunks, all stored.
#[derive(Clone, Debug)]
pub(crate) struct StoredContent {
    pub(crate) hash: ContentHash,
    pub(crate) size: u64,
    pub(crate) chunks: Vec<ChunkRef>,
}

/// Cuts `body` into chunks as the client does and stores them in the principal's namespace.
///
/// Memory stays bounded whatever the length: the chunker's buffer, a few cut chunks and one
/// batch. Holds one of the user's transfer slots while it runs.
///
/// # Errors
/// The body's own error (a client that went away, the body idle timeout), or the store's.
pub(crate) async fn store_stream<S, E>(
    state: &AppState,
    principal: &Principal,
    body: S,
) -> Result<StoredContent, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let _permit = state.transfer_permit(principal.user_id).await?;
    let (cut_tx, mut cut_rx) = mpsc::channel::<(ChunkRef, Bytes)>(CUT_AHEAD);
    // The body's error, kept whole so the answer can tell a timeout from a reset.
    let body_error: Arc<std::sync::Mutex<Option<E>>> = Arc::default();
    let reader = {
        let body_error = Arc::clone(&body_error);
        tokio_util::io::StreamReader::new(Box::pin(body.map_err(move |err| {
            let text = err.to_string();
            if let Ok(mut slot) = body_error.lock() {
                *slot = Some(err);
            }
            io::Error::other(text)
        })))
    };
    let chunker = tokio::task::spawn_blocking(move || {
        let reader = tokio_util::io::SyncIoBridge::new(reader);
        syncstore_chunk::chunk_reader(reader, |chunk_ref, bytes| {
            cut_tx
                .blocking_send((chunk_ref, Bytes::copy_from_slice(bytes)))
                .map_err(|_| io::Error::other("the chunk store stopped taking chunks"))
        })
    });
    let owner = principal.namespace;
    let mut batch: Vec<(syncstore_proto::ChunkHash, Bytes)> = Vec::new();
    let mut batch_bytes = 0usize;
    let mut stored: Result<(), StoreError> = Ok(());
    while let Some((chunk_ref, bytes)) = cut_rx.recv().await {
        batch_bytes += bytes.len();
        batch.push((chunk_ref.hash, bytes));
        if batch_bytes >= STORE_BATCH_BYTES {
            batch_bytes = 0;
            stored = state
                .stores
                .chunks
                .put_batch(owner, std::mem::take(&mut batch))
                .await;
            if stored.is_err() {
                // Dropping the receiver stops the chunker at its next chunk.
                break;
            }
        }
    }
    drop(cut_rx);
    let manifest = chunker
        .await
        .map_err(|err| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))?;
    stored?;
    let manifest = match manifest {
        Ok(manifest) => manifest,
        Err(err) => {
            let body_error = body_error.lock().ok().and_then(|mut slot| slot.take());
            return Err(match body_error {
                Some(body_error) => ApiError::body_read_failed(&body_error),
                None => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
            });
        }
    };
    state.stores.chunks.put_batch(owner, batch).await?;
    Ok(StoredContent {
        hash: manifest.hash,
        size: manifest.size,
        chunks: manifest.chunks,
    })
}

/// Stores `body` and commits it at `path` as one `PutFile` conditional on `base`, as the
/// principal's device: the new version reaches every client like any other change.
///
/// # Errors
/// As [`store_stream`]; or the op's refusal, with the status the sync API gives it (409 when
/// `base` no longer holds, 423 under another device's lock, 507 over quota).
pub(crate) async fn put_file<S, E>(
    state: &AppState,
    principal: &Principal,
    path: RelPath,
    base: Precondition,
    executable: bool,
    body: S,
) -> Result<RemoteEntry, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let content = store_stream(state, principal, body).await?;
    let op = Op::PutFile {
        path: path.clone(),
        base,
        size: content.size,
        mtime_ms: now_ms(),
        hash: content.hash,
        chunks: content.chunks,
        executable,
    };
    let entries = apply_one(state, principal, op).await?;
    entries
        .into_iter()
        .find(|entry| entry.path == path)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the write of {:?} did not report the file", path.as_str()),
            )
        })
}

/// Applies `ops` as one batch as the principal's device and wakes the user's long polls.
///
/// # Errors
/// The store's failure; refused ops are outcomes, not errors.
pub(crate) async fn apply(
    state: &AppState,
    principal: &Principal,
    ops: Vec<Op>,
) -> Result<BatchOutcome, ApiError> {
    // Files large enough to have been streamed: their commit ends the device's stream.
    let streamed: Vec<(usize, RelPath)> = ops
        .iter()
        .enumerate()
        .filter_map(|(idx, op)| match op {
            Op::PutFile { path, size, .. } if *size >= syncstore_proto::STREAM_MIN_BYTES => {
                Some((idx, path.clone()))
            }
            _ => None,
        })
        .collect();
    let batch = syncstore_store::apply_ops(
        &*state.stores.meta,
        &*state.stores.chunks,
        principal,
        ops,
        now_ms(),
    )
    .await?;
    if batch.changed_anything() {
        state.hub.notify(principal.user_id, batch.cursor);
    }
    let committed: Vec<RelPath> = streamed
        .into_iter()
        .filter(|(idx, _)| matches!(batch.outcomes.get(*idx), Some(OpOutcome::Applied(_))))
        .map(|(_, path)| path)
        .collect();
    if !committed.is_empty() {
        crate::streams::end(state, principal, committed).await;
    }
    Ok(batch)
}

/// Applies one op; its refusal is the error, with the sync API's status and message.
///
/// # Errors
/// The op's refusal, or the store's failure.
pub(crate) async fn apply_one(
    state: &AppState,
    principal: &Principal,
    op: Op,
) -> Result<Vec<RemoteEntry>, ApiError> {
    let batch = apply(state, principal, vec![op]).await?;
    match batch.outcomes.into_iter().next() {
        Some(OpOutcome::Applied(entries)) => Ok(entries),
        Some(refused) => {
            let result = crate::wire::op_result(refused);
            let status =
                StatusCode::from_u16(result.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Err(ApiError::new(status, result.message))
        }
        None => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the store answered no outcome for the op",
        )),
    }
}

/// Whose content a read is of: a user and the namespace their chunks are stored under.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Owner {
    pub(crate) user_id: UserId,
    pub(crate) namespace: NamespaceId,
}

impl From<&Principal> for Owner {
    fn from(principal: &Principal) -> Owner {
        Owner {
            user_id: principal.user_id,
            namespace: principal.namespace,
        }
    }
}

/// The bytes `range` of a file (clamped to its size), streamed from its chunks a few at a
/// time. A chunk that turns out missing or corrupt ends the stream with an error (the status
/// may already be sent) and is recorded as wanted, so devices that hold it upload it again.
pub(crate) fn read_range(
    state: &AppState,
    owner: impl Into<Owner>,
    entry: &RemoteEntry,
    range: Range<u64>,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let end = range.end.min(entry.size);
    let start = range.start.min(end);
    // Each chunk with the part of it inside the range.
    let mut pieces: Vec<(ChunkRef, Range<usize>)> = Vec::new();
    let mut offset = 0u64;
    for chunk in &entry.chunks {
        let chunk_end = offset + u64::from(chunk.len);
        if chunk_end > start && offset < end {
            let from = start.saturating_sub(offset) as usize;
            let to = (end.min(chunk_end) - offset) as usize;
            pieces.push((*chunk, from..to));
        }
        offset = chunk_end;
    }
    let state = state.clone();
    let Owner {
        user_id,
        namespace: owner,
    } = owner.into();
    futures::stream::iter(pieces)
        .map(move |(chunk, part)| {
            let state = state.clone();
            async move {
                // Verified: a browser or WebDAV client does not check chunk hashes, so the
                // server is the last to see damage on its storage before the bytes are used.
                match state.stores.chunks.get_verified(owner, &chunk.hash).await {
                    Ok(bytes) if bytes.len() == chunk.len as usize => Ok(bytes.slice(part)),
                    Ok(bytes) => Err(io::Error::other(format!(
                        "chunk {} holds {} bytes, the file says {}",
                        chunk.hash,
                        bytes.len(),
                        chunk.len
                    ))),
                    Err(err) => {
                        tracing::error!(cause = %err, "file read failed mid-stream");
                        if matches!(err, StoreError::Corrupt(_) | StoreError::NotFound(_)) {
                            crate::routes::want_chunks(&state, user_id, &[chunk.hash]).await;
                        }
                        Err(io::Error::other(err.to_string()))
                    }
                }
            }
        })
        .buffered(READ_AHEAD)
}

/// Checks that every chunk of `entry` is stored, before a status is sent for reading it.
///
/// # Errors
/// 404 naming the file when a chunk is missing (recorded as wanted), or the store's failure.
pub(crate) async fn check_readable(
    state: &AppState,
    owner: impl Into<Owner>,
    entry: &RemoteEntry,
) -> Result<(), ApiError> {
    let owner = owner.into();
    let hashes: Vec<_> = entry.chunks.iter().map(|chunk| chunk.hash).collect();
    let missing = state
        .stores
        .chunks
        .missing(owner.namespace, &hashes)
        .await?;
    if missing.is_empty() {
        return Ok(());
    }
    crate::routes::want_chunks(state, owner.user_id, &missing).await;
    Err(ApiError::not_found(format!(
        "{:?} is not readable now: {} of its chunks are missing on the server; the devices \
         that hold it are asked to upload them again",
        entry.path.as_str(),
        missing.len()
    )))
}
