//! [`Auth`]: the bearer-token extractor every endpoint but health takes first, so an
//! unauthenticated request is refused before its body is read.

use crate::access_log::Requester;
use crate::error::ApiError;
use crate::routes::AppState;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use syncstore_store::{Principal, TokenHash};

/// The device a request comes from, from `Authorization: Bearer TOKEN`.
pub(crate) struct Auth(pub(crate) Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Auth, ApiError> {
        let Some(value) = parts.headers.get(AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "missing header Authorization: Bearer TOKEN",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|text| text.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header is not \"Bearer TOKEN\"")
            })?;
        let principal = state
            .stores
            .meta
            .authenticate(&TokenHash::of_token(token))
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown token"))?;
        if let Some(requester) = parts.extensions.get::<Requester>() {
            requester.set(principal.user_name.as_str(), principal.device_name.as_str());
        }
        Ok(Auth(principal))
    }
}
