//! Upload streams (issue 18): a device announces the runs of a large file's chunks the server
//! holds while it uploads it; the user's other devices follow them and fetch the chunks before
//! the commit. See `syncstore_proto::streams` for the wire and `syncstore_store::streams` for
//! the rules.
//!
//! A part is accepted only when every chunk it names is stored (or staged) here, so a follower
//! can fetch it at once, and a stream starts only for a path with no version yet (followers
//! fetch ahead only new files); it never makes a version, and is never shown as a file. A follower's
//! long poll is woken by this process's parts ([`AppState::streams`]); parts through another
//! server process are seen at the follower's next poll.

use crate::auth::Auth;
use crate::error::{ApiError, JsonBody, QueryParams};
use crate::routes::{now_ms, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use syncstore_proto::{
    is_stream_name, ChunkHash, RelPath, StreamPart, StreamPartAccepted, StreamPartInfo,
    StreamsQuery, StreamsResponse, MAX_CHUNK_LEN, MAX_STREAM_PART_CHUNKS,
};
use syncstore_store::streams::StreamsPage;
use syncstore_store::Principal;

/// Most parts in one answer.
const PARTS_PAGE: usize = 256;

/// `POST /api/v1/streams`.
#[tracing::instrument(skip_all, fields(user = %auth.0.user_name, device = %auth.0.device_name))]
pub(crate) async fn announce(
    State(state): State<AppState>,
    auth: Auth,
    body: JsonBody<StreamPart>,
) -> Result<Json<StreamPartAccepted>, ApiError> {
    let Auth(principal) = auth;
    let JsonBody(part) = body;
    check_part(&part)?;
    // Followers fetch ahead only files they do not have; an edit of a file the user has is
    // fetched by what changed, so it is not streamed (it would cost every follower its whole
    // chunk list for nothing).
    if part.offset == 0
        && state
            .stores
            .meta
            .entry(principal.user_id, &part.path)
            .await?
            .is_some()
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "{} has a version already; only new files are streamed",
                part.path
            ),
        ));
    }
    let hashes: Vec<ChunkHash> = part.chunks.iter().map(|chunk| chunk.hash).collect();
    let missing = state
        .stores
        .chunks
        .missing(principal.namespace, &hashes)
        .await?;
    if let Some(hash) = missing.first() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("chunk {hash} of this part is not stored here; upload it first"),
        ));
    }
    let seq = state
        .stores
        .meta
        .add_stream_part(principal.user_id, principal.device_id, part, now_ms())
        .await?
        .map_err(|refused| ApiError::new(StatusCode::CONFLICT, refused.to_string()))?;
    state.streams.wake(principal.user_id);
    Ok(Json(StreamPartAccepted { seq }))
}

/// What a part must be, whatever the stream holds.
fn check_part(part: &StreamPart) -> Result<(), ApiError> {
    let bad = |message: String| Err(ApiError::new(StatusCode::BAD_REQUEST, message));
    if !is_stream_name(&part.stream) {
        return bad(format!(
            "stream name {:?} is not 32 lowercase hex digits",
            part.stream
        ));
    }
    if part.chunks.is_empty() || part.chunks.len() > MAX_STREAM_PART_CHUNKS {
        return bad(format!(
            "a part names 1 to {MAX_STREAM_PART_CHUNKS} chunks, not {}",
            part.chunks.len()
        ));
    }
    if let Some(chunk) = part
        .chunks
        .iter()
        .find(|chunk| chunk.len == 0 || chunk.len > MAX_CHUNK_LEN)
    {
        return bad(format!(
            "chunk {} is {} bytes long; chunks are 1 to {MAX_CHUNK_LEN} bytes",
            chunk.hash, chunk.len
        ));
    }
    let end = syncstore_store::streams::part_end(part.offset, &part.chunks);
    if end > part.size || end == u64::MAX {
        return bad(format!(
            "the part ends at byte {end}, past the file's size of {}",
            part.size
        ));
    }
    Ok(())
}

/// `GET /api/v1/streams`: answers at once when there are parts after `after` from other
/// devices; otherwise waits for this process's next part or stream end, the timeout, or
/// shutdown, and then answers what there is.
#[tracing::instrument(skip_all, fields(user = %auth.0.user_name, device = %auth.0.device_name, after = query.0.after))]
pub(crate) async fn follow(
    State(state): State<AppState>,
    auth: Auth,
    query: QueryParams<StreamsQuery>,
) -> Result<Json<StreamsResponse>, ApiError> {
    let Auth(principal) = auth;
    let QueryParams(query) = query;
    let wait = std::time::Duration::from_millis(query.timeout_ms).min(state.config.long_poll_max);
    let deadline = tokio::time::Instant::now() + wait;
    let mut woken = state.streams.subscribe(principal.user_id);
    let mut page = parts_page(&state, &principal, query.after).await?;
    if page.parts.is_empty() && page.seq == query.after && !page.more {
        tokio::select! {
            _ = woken.changed() => page = parts_page(&state, &principal, query.after).await?,
            () = tokio::time::sleep_until(deadline) => {}
            () = state.stopping.cancelled() => {}
        }
    }
    Ok(Json(StreamsResponse {
        seq: page.seq,
        parts: page
            .parts
            .into_iter()
            .map(|stored| StreamPartInfo {
                seq: stored.seq,
                device: stored.device_name,
                part: stored.part,
            })
            .collect(),
        live: page.live,
        more: page.more,
    }))
}

async fn parts_page(
    state: &AppState,
    principal: &Principal,
    after: u64,
) -> Result<StreamsPage, ApiError> {
    Ok(state
        .stores
        .meta
        .stream_parts(
            principal.user_id,
            principal.device_id,
            after,
            PARTS_PAGE,
            now_ms(),
        )
        .await?)
}

/// Ends the device's streams of `paths`, which it just committed; a failure is logged (the
/// streams then end when idle).
pub(crate) async fn end(state: &AppState, principal: &Principal, paths: Vec<RelPath>) {
    match state
        .stores
        .meta
        .end_streams(principal.user_id, principal.device_id, paths)
        .await
    {
        Ok(()) => state.streams.wake(principal.user_id),
        Err(err) => tracing::warn!(cause = %err, "could not end upload streams"),
    }
}
