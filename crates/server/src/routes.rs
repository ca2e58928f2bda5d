//! The router: one handler per row of the API table in `syncstore_proto::api`.

use crate::auth::Auth;
use crate::error::{ApiError, JsonBody, QueryParams};
use crate::limits::{JsonBudget, TransferPermit, TransferSlots};
use crate::{ChangeHub, ServerConfig, Stores};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use bytes::{Buf, Bytes, BytesMut};
use futures::{FutureExt, StreamExt, TryStreamExt};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use syncstore_proto::ChunkHash;
use syncstore_proto::{
    decode_frame_header, encode_frame_header, ChangesQuery, ChangesResponse, ChunkList, Health,
    LockInfo, LockRequest, LocksResponse, OpsRequest, OpsResponse, TreeResponse, UnlockRequest,
    UploadQuery, UploadResponse, WhoAmI, FRAME_HEADER_LEN,
};
use syncstore_store::{ChangesPage, LockOutcome, Principal, StoreError, UserId};
use tokio_util::sync::CancellationToken;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) stores: Stores,
    pub(crate) hub: ChangeHub,
    /// Wakes the long polls of upload stream followers (this process's parts only).
    pub(crate) streams: ChangeHub,
    pub(crate) config: Arc<ServerConfig>,
    /// Cancelled when the server stops: ends long polls at once so shutdown does not wait.
    pub(crate) stopping: CancellationToken,
    /// Set when a handler panicked; `serve` then reports an error instead of a clean stop.
    pub(crate) panicked: Arc<AtomicBool>,
    /// Caps concurrent chunk uploads and downloads per user and in total, and with them the
    /// memory they buffer.
    pub(crate) transfers: Arc<TransferSlots>,
    /// Caps the bytes of JSON request bodies held at once.
    pub(crate) json_budget: Arc<JsonBudget>,
    /// Refused tokens per address, for the rate limit on failed authentication.
    pub(crate) auth_failures: Arc<crate::auth::AuthFailures>,
    /// When this process last recorded each device as seen (at most once a minute).
    pub(crate) last_seen: Arc<crate::auth::LastSeen>,
    /// Chunks each device was served lately: one asked for again is verified first.
    pub(crate) served: Arc<crate::served::ServedChunks>,
}

impl AppState {
    pub(crate) async fn transfer_permit(
        &self,
        user_id: UserId,
    ) -> Result<TransferPermit, ApiError> {
        self.transfers
            .acquire(user_id, self.config.request_timeout)
            .await
    }
}

/// How many chunks a download reads ahead of the one being sent.
const DOWNLOAD_READ_AHEAD: usize = 4;

pub(crate) fn router(state: AppState) -> Router {
    // Every route but the upload is bounded in time and its body in size and in the bytes all
    // of them hold at once; the upload streams a body of any length, one bounded frame at a
    // time. Every body is cut off when it sends nothing for `body_idle_timeout`.
    let bounded = Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/tree", get(tree))
        .route("/api/v1/changes", get(changes))
        .route("/api/v1/chunks/missing", post(chunks_missing))
        .route("/api/v1/chunks/download", post(chunks_download))
        .route("/api/v1/chunks/signature", post(crate::deltas::signature))
        .route("/api/v1/chunks/delta", post(crate::deltas::delta))
        .route("/api/v1/ops", post(ops))
        .route(
            "/api/v1/streams",
            post(crate::streams::announce).get(crate::streams::follow),
        )
        .route("/api/v1/locks", post(take_lock).get(locks))
        .route("/api/v1/locks/release", post(release_lock))
        .route("/api/v1/history", get(crate::history::history))
        .route("/api/v1/trash", get(crate::history::trash))
        .route("/api/v1/restore", post(crate::history::restore))
        .route("/api/v1/usage", get(crate::history::usage))
        .route("/api/v1/devices", get(crate::devices::devices))
        .route("/api/v1/devices/revoke", post(crate::devices::revoke))
        .layer(DefaultBodyLimit::max(state.config.json_body_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::limits::json_budget,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), time_limit));
    let upload = Router::new()
        .route("/api/v1/chunks/upload", post(chunks_upload))
        // A delta's body is bounded by the handler (a chunk's worth).
        .route("/api/v1/chunks/patch", post(crate::deltas::patch))
        .layer(DefaultBodyLimit::disable());
    let (web_pages, web_uploads) = crate::web::routes();
    let web_pages = web_pages.layer(middleware::from_fn_with_state(state.clone(), time_limit));
    // WebDAV streams bodies of any length too (a PUT, a GET); its XML bodies are bounded by
    // dav-server itself.
    let dav = Router::new()
        .route(crate::dav::PREFIX, any(crate::dav::serve))
        .route(&format!("{}/", crate::dav::PREFIX), any(crate::dav::serve))
        .route(
            &format!("{}/{{*path}}", crate::dav::PREFIX),
            any(crate::dav::serve),
        )
        .layer(DefaultBodyLimit::disable());
    Router::new()
        .merge(bounded)
        .merge(upload)
        .merge(web_pages)
        .merge(web_uploads)
        .merge(dav)
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(RequestBodyTimeoutLayer::new(state.config.body_idle_timeout))
        .layer(middleware::from_fn_with_state(state.clone(), stop_on_panic))
        .layer(TraceLayer::new_for_http())
        .layer(middleware::from_fn(crate::access_log::access_log))
        .with_state(state)
}

/// 200 when the server can serve: its meta store answers (a `SELECT 1` on PostgreSQL), so a
/// client probing it after an outage knows requests will work again; 503 otherwise.
/// Unauthenticated, and as cheap as one pooled query.
async fn health(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    state.stores.meta.ping().await?;
    Ok(Json(Health {
        status: "ok".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    }))
}

#[tracing::instrument(skip_all, fields(user = %auth.0.user_name, device = %auth.0.device_name))]
async fn whoami(auth: Auth) -> Json<WhoAmI> {
    let Auth(principal) = auth;
    Json(WhoAmI {
        user: principal.user_name,
        device: principal.device_name,
        namespace: principal.namespace,
    })
}

#[tracing::instrument(skip_all, fields(user = %auth.0.user_name, device = %auth.0.device_name))]
async fn tree(State(state): State<AppState>, auth: Auth) -> Result<Json<TreeResponse>, ApiError> {
    let tree = state.stores.meta.tree(auth.0.user_id, now_ms()).await?;
    Ok(Json(TreeResponse {
        cursor: tree.cursor,
        cursor_tag: tree.cursor_tag,
        namespace: auth.0.namespace,
        entries: tree.entries,
        locks: tree.locks,
    }))
}

/// Answers at once when there are changes after `since`, when the journal no longer holds the
/// client's `known` position (`diverged`), or when woken while chunks are wanted; otherwise
/// waits for the user's next commit, the timeout, or shutdown.
#[tracing::instrument(skip_all, fields(user = %auth.0.user_name, device = %auth.0.device_name, since = %query.0.since))]
async fn changes(
    State(state): State<AppState>,
    auth: Auth,
    query: QueryParams<ChangesQuery>,
) -> Result<Json<ChangesResponse>, ApiError> {
    let QueryParams(query) = query;
    let Auth(principal) = auth;
    let user_id = principal.user_id;
    let wait = std::time::Duration::from_millis(query.timeout_ms).min(state.config.long_poll_max);
    let deadline = tokio::time::Instant::now() + wait;
    let diverged = match (query.known, query.known_tag) {
        (Some(known), Some(known_tag)) => {
            state.stores.meta.journal_tag(user_id, known).await? != Some(known_tag)
        }
        _ => false,
    };
    // Subscribe before reading, so a commit in between still wakes us.
    let mut changed = state.hub.subscribe(user_id);
    let mut woken = false;
    loop {
        let page = state
            .stores
            .meta
            .changes_since(user_id, query.since, state.config.changes_page_size)
            .await?;
        let answer_now = !page.changes.is_empty()
            || page.reset
            || diverged
            || tokio::time::Instant::now() >= deadline;
        let wanted = if answer_now || woken {
            wanted_chunks(&state, &principal).await?
        } else {
            Vec::new()
        };
        if answer_now || !wanted.is_empty() {
            let mut answer = changes_response(page, &principal, diverged, wanted);
            if query.peek {
                answer.peeked = std::mem::take(&mut answer.changes).len();
            }
            return Ok(Json(answer));
        }
        tokio::select! {
            result = changed.changed() => {
                // The hub never drops a sender that has receivers; if it somehow did, answer
                // rather than spin.
                if result.is_err() {
                    return Ok(Json(changes_response(page, &principal, diverged, Vec::new())));
                }
                woken = true;
            }
            () = tokio::time::sleep_until(deadline) => {
                return Ok(Json(changes_response(page, &principal, diverged, Vec::new())))
            }
            () = state.stopping.cancelled() => {
                return Ok(Json(changes_response(page, &principal, diverged, Vec::new())))
            }
        }
    }
}

fn changes_response(
    page: ChangesPage,
    principal: &Principal,
    diverged: bool,
    wanted: Vec<ChunkHash>,
) -> ChangesResponse {
    ChangesResponse {
        cursor: page.cursor,
        cursor_tag: page.cursor_tag,
        namespace: principal.namespace,
        changes: page.changes,
        more: page.more,
        reset: page.reset,
        diverged,
        wanted,
        peeked: 0,
    }
}

/// Most wanted chunks named in one answer.
const WANTED_PAGE: usize = 1000;

/// The chunks the server asks the user's devices to upload again; those stored again since
/// are dropped from the list.
async fn wanted_chunks(
    state: &AppState,
    principal: &Principal,
) -> Result<Vec<ChunkHash>, ApiError> {
    let wanted = state
        .stores
        .meta
        .wanted_chunks(principal.user_id, WANTED_PAGE)
        .await?;
    if wanted.is_empty() {
        return Ok(wanted);
    }
    let still_missing = state
        .stores
        .chunks
        .missing(principal.namespace, &wanted)
        .await?;
    if still_missing.len() < wanted.len() {
        let stored: Vec<ChunkHash> = wanted
            .iter()
            .filter(|hash| !still_missing.contains(hash))
            .copied()
            .collect();
        state
            .stores
            .meta
            .unwant_chunks(principal.user_id, &stored)
            .await?;
        tracing::info!(n = stored.len(), "wanted chunks are stored again");
    }
    Ok(still_missing)
}

/// Records chunks a download found missing or corrupt, so devices that hold them upload them
/// again, and wakes the user's long polls to tell them.
pub(crate) async fn want_chunks(state: &AppState, user_id: UserId, hashes: &[ChunkHash]) {
    match state.stores.meta.want_chunks(user_id, hashes).await {
        Ok(0) => {}
        Ok(added) => {
            tracing::warn!(
                added,
                "chunks lost or corrupt; asking devices to upload them again"
            );
            state.hub.wake(user_id);
        }
        Err(err) => tracing::error!(cause = %err, "could not record wanted chunks"),
    }
}

#[tracing::instrument(skip_all, fields(user = %auth.0.user_name, n_hashes = body.0.hashes.len()))]
async fn chunks_missing(
    State(state): State<AppState>,
    auth: Auth,
    body: JsonBody<ChunkList>,
) -> Result<Json<ChunkList>, ApiError> {
    let hashes = state
        .stores
        .chunks
        .missing(auth.0.namespace, &body.0.hashes)
        .await?;
    Ok(Json(ChunkList { hashes }))
}

/// Most bytes of chunks held before a batch is stored (bounds the memory of one upload).
const UPLOAD_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Most chunks held before a batch is stored.
const UPLOAD_BATCH_CHUNKS: usize = 4096;

/// Reads chunk frames off the body and stores them in batches once their hashes check out.
///
/// A body that ends inside a frame is a 400; the chunks completed before it stay stored (they
/// are content addressed), the incomplete one is never written.
#[tracing::instrument(skip_all, fields(user = %auth.0.user_name, device = %auth.0.device_name))]
async fn chunks_upload(
    State(state): State<AppState>,
    auth: Auth,
    query: QueryParams<UploadQuery>,
    body: Body,
) -> Result<Json<UploadResponse>, ApiError> {
    let owner = auth.0.namespace;
    let QueryParams(UploadQuery { durable }) = query;
    // With `durable`, every chunk of the body, to be made durable before the answer.
    let mut received: Vec<ChunkHash> = Vec::new();
    let chunk_store = &state.stores.chunks;
    let _permit = state.transfer_permit(auth.0.user_id).await?;
    let mut frames = FrameReader {
        stream: body.into_data_stream(),
        buffer: BytesMut::new(),
    };
    let mut stored = 0u64;
    // Chunks are stored in batches so the store can make many small ones durable at once.
    let mut batch: Vec<(ChunkHash, Bytes)> = Vec::new();
    let mut batch_bytes = 0usize;
    let cut_short = loop {
        if batch_bytes >= UPLOAD_BATCH_BYTES || batch.len() >= UPLOAD_BATCH_CHUNKS {
            stored += batch.len() as u64;
            batch_bytes = 0;
            chunk_store
                .put_batch(owner, std::mem::take(&mut batch))
                .await?;
        }
        if !frames.fill(FRAME_HEADER_LEN).await? {
            if frames.buffer.is_empty() {
                break None;
            }
            break Some("the body ends inside a frame header".to_owned());
        }
        let mut header = [0u8; FRAME_HEADER_LEN];
        header.copy_from_slice(&frames.buffer[..FRAME_HEADER_LEN]);
        frames.buffer.advance(FRAME_HEADER_LEN);
        let (hash, len) = decode_frame_header(&header).map_err(ApiError::bad_request)?;
        let len = len as usize;
        if !frames.fill(len).await? {
            break Some(format!("the body ends inside chunk {hash}"));
        }
        let bytes = frames.buffer.split_to(len).freeze();
        if durable {
            received.push(hash);
        }
        batch_bytes += len;
        batch.push((hash, bytes));
    };
    // The complete chunks are stored even when the body was cut short.
    stored += batch.len() as u64;
    chunk_store.put_batch(owner, batch).await?;
    if durable && !received.is_empty() {
        // A repair: no commit will name these chunks, so they are settled here, and the
        // server stops asking for them.
        let lens = chunk_store.durable_chunk_lens(owner, &received).await?;
        let repaired: Vec<ChunkHash> = lens.into_keys().collect();
        state
            .stores
            .meta
            .unwant_chunks(auth.0.user_id, &repaired)
            .await?;
        tracing::info!(n = repaired.len(), "chunks stored again");
    }
    if let Some(problem) = cut_short {
        return Err(ApiError::bad_request(format!(
            "{problem} after {stored} complete chunks"
        )));
    }
    tracing::debug!(stored, "upload done");
    Ok(Json(UploadResponse { stored }))
}

/// A request body read into a buffer up to the bytes the parser needs next.
struct FrameReader {
    stream: axum::body::BodyDataStream,
    buffer: BytesMut,
}

impl FrameReader {
    /// Reads until the buffer holds `len` bytes; `false` when the body ends first.
    async fn fill(&mut self, len: usize) -> Result<bool, ApiError> {
        self.buffer.reserve(len.saturating_sub(self.buffer.len()));
        while self.buffer.len() < len {
            match self.stream.next().await {
                Some(Ok(data)) => self.buffer.extend_from_slice(&data),
                Some(Err(err)) => return Err(ApiError::body_read_failed(&err)),
                None => return Ok(false),
            }
        }
        Ok(true)
    }
}

/// Streams the asked chunks as frames, in the order asked; an unknown hash is a 404 before the
/// first byte.
#[tracing::instrument(skip_all, fields(user = %auth.0.user_name, n_hashes = body.0.hashes.len()))]
async fn chunks_download(
    State(state): State<AppState>,
    auth: Auth,
    body: JsonBody<ChunkList>,
) -> Result<Response, ApiError> {
    let user_id = auth.0.user_id;
    let owner = auth.0.namespace;
    let device_id = auth.0.device_id;
    let JsonBody(ChunkList { hashes }) = body;
    let missing = state.stores.chunks.missing(owner, &hashes).await?;
    if let Some(first) = missing.first() {
        want_chunks(&state, user_id, &missing).await;
        return Err(ApiError::not_found(format!(
            "unknown chunk {first} ({} of the {} asked are unknown)",
            missing.len(),
            hashes.len()
        )));
    }
    let permit = state.transfer_permit(user_id).await?;
    let chunk_store = Arc::clone(&state.stores.chunks);
    let frames = futures::stream::iter(hashes)
        .map(move |hash| {
            // The permit lives as long as the body stream.
            let _permit = &permit;
            let chunk_store = Arc::clone(&chunk_store);
            let state = state.clone();
            async move {
                // Trusted by name, as verified when received; verified again only for a device
                // that asks for it a second time (it may not have verified: see `served`).
                let read = if state.served.served_again(device_id, hash) {
                    chunk_store.get_verified(owner, &hash).await
                } else {
                    chunk_store.get(owner, &hash).await
                };
                let bytes = match read {
                    Ok(bytes) => bytes,
                    Err(err) => {
                        // The status is already sent: all we can do is cut the body short. A
                        // corrupt chunk was moved aside: the devices that have it are asked
                        // for it, and the client learns it is missing when it asks again.
                        tracing::error!(cause = %err, "download failed mid-stream");
                        if matches!(err, StoreError::Corrupt(_) | StoreError::NotFound(_)) {
                            want_chunks(&state, user_id, &[hash]).await;
                        }
                        return Err(std::io::Error::other(err.to_string()));
                    }
                };
                let len = u32::try_from(bytes.len()).map_err(|_| {
                    std::io::Error::other(format!("chunk {hash} of {} bytes", bytes.len()))
                })?;
                let header = Bytes::copy_from_slice(&encode_frame_header(&hash, len));
                Ok::<_, std::io::Error>(futures::stream::iter([
                    Ok::<Bytes, std::io::Error>(header),
                    Ok(bytes),
                ]))
            }
        })
        .buffered(DOWNLOAD_READ_AHEAD)
        .try_flatten();
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(frames),
    )
        .into_response())
}

#[tracing::instrument(skip_all, fields(user = %auth.0.user_name, device = %auth.0.device_name, n_ops = body.0.ops.len()))]
async fn ops(
    State(state): State<AppState>,
    auth: Auth,
    body: JsonBody<OpsRequest>,
) -> Result<Json<OpsResponse>, ApiError> {
    let Auth(principal) = auth;
    let JsonBody(OpsRequest {
        ops,
        known,
        known_tag,
    }) = body;
    crate::limits::check_batch(
        &ops,
        state.config.max_batch_ops,
        state.config.max_batch_dirs,
    )?;
    if let (Some(known), Some(known_tag)) = (known, known_tag) {
        let meta = &state.stores.meta;
        if meta.journal_tag(principal.user_id, known).await? != Some(known_tag) {
            // The plan was made from a history this journal lost: its revisions may name other
            // changes now. Nothing is applied; the client re-adopts its folder and plans again.
            let cursor = meta.current_cursor(principal.user_id).await?;
            let cursor_tag = meta
                .journal_tag(principal.user_id, cursor)
                .await?
                .unwrap_or_default();
            let refused = syncstore_proto::OpResult {
                status: 409,
                entries: Vec::new(),
                message: "the server's journal no longer holds what this device saw".to_owned(),
            };
            return Ok(Json(OpsResponse {
                results: vec![refused; ops.len()],
                cursor,
                cursor_tag,
                diverged: true,
            }));
        }
    }
    let batch = crate::content::apply(&state, &principal, ops).await?;
    Ok(Json(OpsResponse {
        results: batch
            .outcomes
            .into_iter()
            .map(crate::wire::op_result)
            .collect(),
        cursor: batch.cursor,
        cursor_tag: batch.cursor_tag,
        diverged: false,
    }))
}

/// Takes or renews a lock: 200 with the lock, 400 for a bad TTL, 404 when nothing is at the path,
/// 423 "... is locked by DEVICE since TIME" when another device's lock is in the way.
#[tracing::instrument(skip_all, fields(user = %auth.0.user_name, device = %auth.0.device_name, path = %body.0.path))]
async fn take_lock(
    State(state): State<AppState>,
    auth: Auth,
    body: JsonBody<LockRequest>,
) -> Result<Json<LockInfo>, ApiError> {
    let Auth(principal) = auth;
    let JsonBody(LockRequest { path, ttl_secs }) = body;
    let outcome = state
        .stores
        .meta
        .take_lock(
            principal.user_id,
            &principal.device_name,
            &path,
            ttl_secs,
            now_ms(),
        )
        .await?;
    lock_answer(&state, principal.user_id, outcome)
}

/// Releases (or with `force` breaks) a lock: 200 with the lock as it was, 404 "no lock on PATH",
/// 423 with the holder's message when another device holds it and `force` is not set.
#[tracing::instrument(skip_all, fields(user = %auth.0.user_name, device = %auth.0.device_name, path = %body.0.path, force = body.0.force))]
async fn release_lock(
    State(state): State<AppState>,
    auth: Auth,
    body: JsonBody<UnlockRequest>,
) -> Result<Json<LockInfo>, ApiError> {
    let Auth(principal) = auth;
    let JsonBody(UnlockRequest { path, force }) = body;
    let outcome = state
        .stores
        .meta
        .release_lock(
            principal.user_id,
            &principal.device_name,
            &path,
            force,
            now_ms(),
        )
        .await?;
    lock_answer(&state, principal.user_id, outcome)
}

/// Wakes the user's long polls after a committed lock change, or turns a refusal into its
/// status and message.
pub(crate) fn lock_answer(
    state: &AppState,
    user_id: UserId,
    outcome: LockOutcome,
) -> Result<Json<LockInfo>, ApiError> {
    let (lock, cursor) = crate::wire::lock_change(outcome)?;
    state.hub.notify(user_id, cursor);
    Ok(Json(lock))
}

/// Every lock of the user in force now.
#[tracing::instrument(skip_all, fields(user = %auth.0.user_name, device = %auth.0.device_name))]
async fn locks(State(state): State<AppState>, auth: Auth) -> Result<Json<LocksResponse>, ApiError> {
    let locks = state.stores.meta.locks(auth.0.user_id, now_ms()).await?;
    Ok(Json(LocksResponse { locks }))
}

/// The server clock in milliseconds since the Unix epoch: the one clock that decides which locks
/// are in force (the store takes the time as an argument).
pub(crate) fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

async fn unknown_route(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "no such endpoint: {} {}",
        request.method(),
        request.uri().path()
    ))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// Answers 503 when a request outlives `config.request_timeout`.
async fn time_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(state.config.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the request took too long")
            .into_response(),
    }
}

/// Turns a handler panic into a 500 and stops the server: after a panic its state is unknown,
/// and a crash plus restart is safe (every write is atomic), a half-alive server is not.
async fn stop_on_panic(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|text| (*text).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %message, "a request handler panicked; stopping the server");
            state.panicked.store(true, Ordering::SeqCst);
            state.stopping.cancel();
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; the server is stopping",
            )
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_handler_panic_answers_500_and_stops_the_server() {
        let data_dir = tempfile::tempdir().unwrap();
        let stores = crate::open_embedded_stores(data_dir.path()).await.unwrap();
        let state = AppState {
            stores,
            hub: ChangeHub::default(),
            streams: ChangeHub::default(),
            config: Arc::new(ServerConfig::new(data_dir.path().to_owned())),
            stopping: CancellationToken::new(),
            panicked: Arc::new(AtomicBool::new(false)),
            transfers: Arc::new(TransferSlots::new(1, 1)),
            json_budget: Arc::new(JsonBudget::new(1024 * 1024)),
            auth_failures: Arc::new(crate::auth::AuthFailures::new(&ServerConfig::new(
                data_dir.path().to_owned(),
            ))),
            last_seen: Arc::new(crate::auth::LastSeen::default()),
            served: Arc::new(crate::served::ServedChunks::default()),
        };
        let app = Router::new()
            .route("/boom", get(|| async { panic!("boom") as &'static str }))
            .layer(middleware::from_fn_with_state(state.clone(), stop_on_panic))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/boom", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let response = reqwest::get(url).await.unwrap();
        assert_eq!(
            response.status(),
            reqwest::StatusCode::INTERNAL_SERVER_ERROR
        );
        let body: syncstore_proto::ErrorBody = response.json().await.unwrap();
        assert!(body.error.contains("stopping"), "{}", body.error);
        assert!(state.stopping.is_cancelled());
        assert!(state.panicked.load(Ordering::SeqCst));
    }
}
