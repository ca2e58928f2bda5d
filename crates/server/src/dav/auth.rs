//! Who a WebDAV request comes from: `Authorization: Basic` with the user name and a device
//! token as the password (what file managers, davfs2 and rclone send), or `Bearer TOKEN` as
//! on the sync API.
//!
//! A request without credentials gets 401 with `WWW-Authenticate: Basic realm="syncstore"`
//! and is not counted as a refused token: file managers send every first request without
//! them and wait for the challenge. Wrong credentials are refused as on the API (logged,
//! counted per address in [`crate::auth::AuthFailures`], 429 once past the limit).

use crate::access_log::Requester;
use crate::conn::PeerAddr;
use crate::error::ApiError;
use crate::routes::AppState;
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use syncstore_store::{Principal, TokenHash};

/// The challenge every 401 carries.
const CHALLENGE: &str = "Basic realm=\"syncstore\", charset=\"UTF-8\"";

/// The principal the request's credentials name, or the refusal to answer with (nothing
/// else is read or touched before this).
pub(super) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> Result<Principal, Response> {
    let peer = extensions.get::<PeerAddr>().map(|peer| peer.0.ip());
    let requester = extensions.get::<Requester>().cloned();
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(challenge(ApiError::unauthorized(
            "log in with your user name and a device token as the password",
        )));
    };
    let (user_name, token) = match parse(value) {
        Some(credentials) => credentials,
        None => {
            return Err(challenge(crate::auth::refuse(
                state,
                peer,
                "the Authorization header is neither \"Basic\" with a user name and token nor \"Bearer TOKEN\"",
            )))
        }
    };
    let principal = state
        .stores
        .meta
        .authenticate(&TokenHash::of_token(&token))
        .await
        .map_err(|err| ApiError::from(err).into_response())?;
    let Some(principal) = principal else {
        return Err(challenge(crate::auth::refuse(
            state,
            peer,
            "unknown or revoked token",
        )));
    };
    if user_name.is_some_and(|name| name != principal.user_name.as_str()) {
        return Err(challenge(crate::auth::refuse(
            state,
            peer,
            "the user name is not the token's user",
        )));
    }
    if let Some(requester) = requester {
        requester.set(principal.user_name.as_str(), principal.device_name.as_str());
    }
    if let Some(peer) = peer {
        crate::auth::record_seen(state, &principal, peer);
    }
    Ok(principal)
}

/// The user name (Basic only) and the token of an `Authorization` header.
fn parse(value: &HeaderValue) -> Option<(Option<String>, String)> {
    let text = value.to_str().ok()?.trim();
    let (scheme, rest) = text.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return (!rest.is_empty()).then(|| (None, rest.to_owned()));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, token) = decoded.split_once(':')?;
    if token.is_empty() {
        return None;
    }
    Some((Some(user.to_owned()), token.to_owned()))
}

/// A refusal as an answer; a 401 carries the Basic challenge, so clients ask for a password.
fn challenge(refusal: ApiError) -> Response {
    let status = refusal.status;
    let mut response = refusal.into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(header: &str, expect: Option<(Option<&str>, &str)>) {
        let parsed = parse(&HeaderValue::from_str(header).unwrap());
        let parsed = parsed
            .as_ref()
            .map(|(user, token)| (user.as_deref(), token.as_str()));
        assert_eq!(parsed, expect, "{header}");
    }

    #[test]
    fn credentials_are_read_from_basic_and_bearer() {
        // "alice:tok:en" (a token may hold a colon; a user name may not).
        check("Basic YWxpY2U6dG9rOmVu", Some((Some("alice"), "tok:en")));
        check("basic   YWxpY2U6dG9rOmVu ", Some((Some("alice"), "tok:en")));
        check("Bearer abc", Some((None, "abc")));
        // "alice:" (no password), not base64, another scheme, no token.
        check("Basic YWxpY2U6", None);
        check("Basic !!!", None);
        check("Digest abc", None);
        check("Bearer ", None);
    }
}
