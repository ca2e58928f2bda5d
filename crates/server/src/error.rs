//! [`ApiError`], answered as a JSON [`ErrorBody`], and extractors whose rejections are ones.

use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use syncstore_proto::ErrorBody;
use syncstore_store::StoreError;

/// An error answer: a status and a message for the client.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    /// Seconds for a `Retry-After` header.
    pub(crate) retry_after_secs: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// A 429 that tells the client to wait `retry_after` (rounded up to whole seconds).
    pub(crate) fn too_many_requests(
        message: impl Into<String>,
        retry_after: std::time::Duration,
    ) -> ApiError {
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        ApiError {
            retry_after_secs: Some(secs.max(1)),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, message)
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// The answer when reading a request body failed: 408 when it sent nothing for the body
    /// idle timeout, else 400.
    pub(crate) fn body_read_failed(err: &(dyn std::error::Error + 'static)) -> ApiError {
        if is_body_timeout(err) {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "the request body sent nothing for too long (serve --body-idle-timeout); \
                 the request is cut off",
            );
        }
        ApiError::bad_request(format!("could not read the body: {err}"))
    }
}

/// Whether `err` or one of its causes is the body idle timeout of
/// `tower_http::timeout::RequestBodyTimeoutLayer`.
fn is_body_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(err) = cause {
        if err.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = err.source();
    }
    false
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            axum::Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        match &err {
            StoreError::NotFound(_) => ApiError::not_found(err.to_string()),
            StoreError::AlreadyExists(_)
            | StoreError::DeviceNameRetired { .. }
            | StoreError::ReservedDeviceName => {
                ApiError::new(StatusCode::CONFLICT, err.to_string())
            }
            // 422, not 400: the request is well formed, but a chunk's bytes are not its name's,
            // which is what a file rewritten while it was read for upload sends.
            StoreError::HashMismatch { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, err.to_string())
            }
            StoreError::ChunkTooLarge { .. } => ApiError::bad_request(err.to_string()),
            StoreError::Full(_) => {
                tracing::error!(cause = %err, "store full");
                ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "server storage is full; see its log",
                )
            }
            StoreError::Unavailable { service, .. } => {
                tracing::warn!(cause = %err, "store unavailable");
                // Clients retry a 503; the cause (which never holds the database password)
                // stays in the server log.
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{service} unavailable; try again shortly"),
                )
            }
            // Five races in a row with garbage collection: the client retries the batch.
            StoreError::GcRaced => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
            StoreError::SchemaTooNew { .. }
            | StoreError::Corrupt(_)
            | StoreError::Database(_)
            | StoreError::ObjectStore(_)
            | StoreError::Io { .. }
            | StoreError::Worker(_) => {
                tracing::error!(cause = %err, "store failed");
                // The details (paths, SQL) stay in the server log.
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the server's storage failed; see its log",
                )
            }
        }
    }
}

/// A JSON request body; malformed JSON or invalid values (such as a `..` path) give a 400 with
/// serde's message, a body over the limit a 413. The content type is not checked.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<JsonBody<T>, ApiError> {
        let bytes =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection| match rejection.status() {
                    // Only a body without a Content-Length gets here: `limits::json_budget`
                    // refuses a declared length over the limit before the body is read.
                    StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "the request body is larger than the limit (serve --max-json-body)",
                    ),
                    _ => ApiError::body_read_failed(&rejection),
                })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|err| ApiError::bad_request(format!("invalid JSON body: {err}")))
    }
}

/// A query string; invalid ones give a 400 with the parser's message.
pub(crate) struct QueryParams<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<QueryParams<T>, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| QueryParams(value))
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
    }
}
