//! Chunks sent as deltas (issue 18): a one-byte edit of a large file crosses the network as a
//! few KiB, not as the chunks it changed.
//!
//! - `POST /api/v1/chunks/signature`: the signature of old chunks (the bases), for a device
//!   that has a changed chunk but no longer the old bytes (it edited its file);
//! - `POST /api/v1/chunks/patch?target=H&bases=…`: the device's delta against that signature;
//!   the server applies it to the bases and stores chunk `target` only when the result hashes
//!   to `target` (else 422, and the device sends the chunk whole);
//! - `POST /api/v1/chunks/delta`: the delta that makes a chunk from old chunks the asking
//!   device still holds, which it applies and verifies itself.
//!
//! Bases are this user's chunks, read as any download reads them; at most
//! [`delta::MAX_BASES`] of them and [`delta::MAX_BASE_BYTES`] together, and a result of at
//! most a chunk, so a hostile client costs the server no more than sending chunks would.

use crate::auth::Auth;
use crate::error::{ApiError, JsonBody, QueryParams};
use crate::routes::AppState;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use syncstore_chunk::delta;
use syncstore_proto::{
    ChunkHash, DeltaBases, DeltaRequest, NamespaceId, PatchQuery, UploadResponse, CHUNK_MAX,
};

/// Most bytes of a delta's body: a chunk sent as literals, with the format's overhead.
const MAX_DELTA_BODY: usize = CHUNK_MAX as usize + CHUNK_MAX as usize / 64 + 1024;

/// The bases' bytes, concatenated, after checking how many and how large they are.
async fn read_bases(
    state: &AppState,
    owner: NamespaceId,
    bases: &[ChunkHash],
) -> Result<Vec<u8>, ApiError> {
    if bases.is_empty() || bases.len() > delta::MAX_BASES {
        return Err(ApiError::bad_request(format!(
            "a delta needs 1 to {} bases, not {}",
            delta::MAX_BASES,
            bases.len()
        )));
    }
    let mut out = Vec::new();
    for hash in bases {
        let bytes = state.stores.chunks.get(owner, hash).await?;
        out.extend_from_slice(&bytes);
        if out.len() as u64 > delta::MAX_BASE_BYTES {
            return Err(ApiError::bad_request(format!(
                "the bases of a delta hold at most {} bytes",
                delta::MAX_BASE_BYTES
            )));
        }
    }
    Ok(out)
}

fn octets(bytes: Vec<u8>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from(bytes),
    )
        .into_response()
}

/// Runs CPU work (signatures, deltas: milliseconds per MiB) off the async workers.
async fn cpu<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))
}

#[tracing::instrument(skip_all, fields(user = %auth.0.user_name))]
pub(crate) async fn signature(
    State(state): State<AppState>,
    auth: Auth,
    body: JsonBody<DeltaBases>,
) -> Result<Response, ApiError> {
    let _permit = state.transfer_permit(auth.0.user_id).await?;
    let base = read_bases(&state, auth.0.namespace, &body.0.bases).await?;
    Ok(octets(cpu(move || delta::signature(&base)).await?))
}

#[tracing::instrument(skip_all, fields(user = %auth.0.user_name, target = %body.0.target))]
pub(crate) async fn delta(
    State(state): State<AppState>,
    auth: Auth,
    body: JsonBody<DeltaRequest>,
) -> Result<Response, ApiError> {
    let JsonBody(DeltaRequest { target, bases }) = body;
    let _permit = state.transfer_permit(auth.0.user_id).await?;
    let base = read_bases(&state, auth.0.namespace, &bases).await?;
    // Trusted by name like any download; the device verifies what the delta makes.
    let target = state.stores.chunks.get(auth.0.namespace, &target).await?;
    Ok(octets(
        cpu(move || delta::delta_between(&base, &target)).await?,
    ))
}

#[tracing::instrument(skip_all, fields(user = %auth.0.user_name, device = %auth.0.device_name))]
pub(crate) async fn patch(
    State(state): State<AppState>,
    auth: Auth,
    query: QueryParams<PatchQuery>,
    body: Body,
) -> Result<Json<UploadResponse>, ApiError> {
    let QueryParams(PatchQuery { target, bases }) = query;
    let bases = bases
        .split(',')
        .map(|hash| {
            ChunkHash::from_hex(hash)
                .map_err(|err| ApiError::bad_request(format!("bases: {hash:?}: {err}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let owner = auth.0.namespace;
    let _permit = state.transfer_permit(auth.0.user_id).await?;
    let delta_bytes: Bytes = axum::body::to_bytes(body, MAX_DELTA_BODY)
        .await
        .map_err(|err| {
            ApiError::bad_request(format!(
                "a delta's body is at most {MAX_DELTA_BODY} bytes, and whole: {err}"
            ))
        })?;
    let base = read_bases(&state, owner, &bases).await?;
    let made = cpu(move || delta::apply(&base, &delta_bytes, target)).await?;
    let chunk = match made {
        Ok(chunk) => chunk,
        Err(err @ delta::DeltaError::Mismatch(_)) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                err.to_string(),
            ))
        }
        Err(err) => return Err(ApiError::bad_request(err.to_string())),
    };
    // The store checks the name again, as for every chunk it is given.
    state
        .stores
        .chunks
        .put_batch(owner, vec![(target, Bytes::from(chunk))])
        .await?;
    Ok(Json(UploadResponse { stored: 1 }))
}
