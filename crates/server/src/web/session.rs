//! Signing in and out: the session cookie, the [`WebUser`] extractor, CSRF tokens and the
//! failed-login rate limit (the same per-address limit as refused API tokens).
//!
//! A session is a row in the meta store (so any server of the database knows it), found by the
//! BLAKE3 of the cookie's random value; the value itself is never stored. Each session has its
//! own CSRF token, which every form and script request sends back; the login form, before any
//! session exists, is protected by a double-submit cookie instead.

use super::layout::page;
use super::WebError;
use crate::access_log::Requester;
use crate::conn::PeerAddr;
use crate::routes::{now_ms, AppState};
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;
use serde::Deserialize;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use syncstore_proto::UserName;
use syncstore_store::{NewSession, Principal, TokenHash};

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "syncstore_session";
/// The login form's double-submit cookie.
const LOGIN_COOKIE: &str = "syncstore_login";
/// How long a login lasts.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// A signed-in user: the principal of the user's `web` device and this session's CSRF token.
#[derive(Clone, Debug)]
pub(crate) struct WebUser {
    pub(crate) principal: Principal,
    pub(crate) csrf: String,
    session: TokenHash,
}

impl WebUser {
    /// Refuses a state-changing request whose CSRF token is not this session's.
    pub(crate) fn check_csrf(&self, token: &str) -> Result<(), WebError> {
        if same_secret(token, &self.csrf) {
            Ok(())
        } else {
            Err(WebError::forbidden(
                "this form's security token is missing or stale (a form from another site, or \
                 from before you signed in again): reload the page and try again",
            ))
        }
    }
}

/// Without a session: a page is redirected to the login page, anything else gets a 401.
pub(crate) enum NoSession {
    Redirect(String),
    Refused,
}

impl IntoResponse for NoSession {
    fn into_response(self) -> Response {
        match self {
            NoSession::Redirect(next) => {
                Redirect::to(&format!("/login?next={}", super::encode(&next))).into_response()
            }
            NoSession::Refused => WebError::new(
                StatusCode::UNAUTHORIZED,
                "you are not signed in (or your session ended): sign in again",
            )
            .into_response(),
        }
    }
}

impl FromRequestParts<AppState> for WebUser {
    type Rejection = NoSession;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<WebUser, NoSession> {
        let refuse = || {
            if parts.method == Method::GET {
                let next = parts
                    .uri
                    .path_and_query()
                    .map(|pq| pq.as_str().to_owned())
                    .unwrap_or_else(|| "/".to_owned());
                NoSession::Redirect(next)
            } else {
                NoSession::Refused
            }
        };
        let Some(value) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(refuse());
        };
        let hash = TokenHash::of_token(value);
        let session = match state.stores.meta.session(&hash, now_ms()).await {
            Ok(Some(session)) => session,
            Ok(None) => return Err(refuse()),
            Err(err) => {
                tracing::error!(cause = %err, "could not look up a web session");
                return Err(NoSession::Refused);
            }
        };
        let Some(principal) = session.principal else {
            return Err(refuse());
        };
        if let Some(requester) = parts.extensions.get::<Requester>() {
            requester.set(principal.user_name.as_str(), principal.device_name.as_str());
        }
        if let Some(peer) = parts.extensions.get::<PeerAddr>() {
            crate::auth::record_seen(state, &principal, peer.0.ip());
        }
        Ok(WebUser {
            principal,
            csrf: session.csrf,
            session: hash,
        })
    }
}

/// A signed-in user, or `None`: for pages that also work signed out.
pub(crate) struct MaybeUser(pub(crate) Option<WebUser>);

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<MaybeUser, std::convert::Infallible> {
        Ok(MaybeUser(
            WebUser::from_request_parts(parts, state).await.ok(),
        ))
    }
}

#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
}

pub(crate) async fn login_page(
    MaybeUser(user): MaybeUser,
    Query(query): Query<LoginQuery>,
) -> Response {
    if user.is_some() {
        return Redirect::to(&safe_next(query.next.as_deref())).into_response();
    }
    login_form(StatusCode::OK, query.next.as_deref(), None)
}

/// The login form, with a fresh double-submit token in a cookie and in the form.
fn login_form(status: StatusCode, next: Option<&str>, problem: Option<&str>) -> Response {
    let token = random_secret();
    let body = html! {
        h1 { "Sign in" }
        @if let Some(problem) = problem {
            p class="error" role="alert" id="login-error" { (problem) }
        }
        form class="login" method="post" action="/login" {
            input type="hidden" name="csrf" value=(token);
            input type="hidden" name="next" value=(next.unwrap_or("/files"));
            label for="user" { "User name" }
            input id="user" name="user" type="text" autocomplete="username" required autofocus;
            label for="password" { "Password" }
            input id="password" name="password" type="password" autocomplete="current-password" required;
            button type="submit" { "Sign in" }
        }
        p class="note" { "No password yet? The server's operator sets one with "
            code { "syncstore user passwd NAME" } "." }
    };
    let cookie =
        format!("{LOGIN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/login; Max-Age=3600");
    let mut response = (status, page("Sign in", None, body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    csrf: String,
    user: String,
    password: String,
    next: Option<String>,
}

pub(crate) async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Option<axum::Extension<PeerAddr>>,
    Form(form): Form<LoginForm>,
) -> Response {
    let peer = peer.map(|peer| peer.0 .0.ip());
    let next = form.next.as_deref();
    match cookie(&headers, LOGIN_COOKIE) {
        Some(token) if same_secret(token, &form.csrf) => {}
        _ => {
            return login_form(
                StatusCode::FORBIDDEN,
                next,
                Some("The sign-in form expired or came from another site: please try again."),
            )
        }
    }
    if let Some(retry_after) =
        peer.and_then(|peer| state.auth_failures.blocked(peer, Instant::now()))
    {
        return too_many(next, retry_after);
    }
    let principal = match check_password(&state, &form.user, &form.password).await {
        Ok(Some(user_id)) => user_id,
        Ok(None) => return failed_login(&state, peer, next),
        Err(err) => return err.into_response(),
    };
    let secret = random_secret();
    let now = now_ms();
    let session = NewSession {
        id_hash: TokenHash::of_token(&secret),
        user_id: principal,
        share_id: None,
        csrf: random_secret(),
        created_ms: now,
        expires_ms: now + SESSION_TTL.as_millis() as i64,
    };
    if let Err(err) = state.stores.meta.create_session(&session).await {
        return WebError::from(err).into_response();
    }
    tracing::info!(user = %form.user, "signed in to the web interface");
    let mut response = Redirect::to(&safe_next(next)).into_response();
    set_cookie(
        &mut response,
        &session_cookie(&state, SESSION_COOKIE, &secret, "/", SESSION_TTL),
    );
    set_cookie(
        &mut response,
        &format!("{LOGIN_COOKIE}=; HttpOnly; SameSite=Strict; Path=/login; Max-Age=0"),
    );
    response
}

/// The user id when the name and password are right; `None` when either is wrong (or the
/// user has no password), after the same work either way.
async fn check_password(
    state: &AppState,
    user: &str,
    password: &str,
) -> Result<Option<syncstore_store::UserId>, WebError> {
    let record = match UserName::new(user.trim()) {
        Ok(name) => state.stores.meta.login_record(&name).await?,
        Err(_) => None,
    };
    let (user_id, phc) = match record {
        Some((user, Some(phc))) => (Some(user.id), phc),
        // Verified against a hash of nothing anyone knows, so a wrong name costs as long.
        _ => (None, crate::password::unknown_user_hash().to_owned()),
    };
    let password = password.to_owned();
    let matches =
        tokio::task::spawn_blocking(move || crate::password::verify_password(&phc, &password))
            .await
            .unwrap_or(false);
    Ok(user_id.filter(|_| matches))
}

fn failed_login(state: &AppState, peer: Option<IpAddr>, next: Option<&str>) -> Response {
    if let Some(peer) = peer {
        tracing::warn!(%peer, "refused a web sign-in");
        if let crate::auth::Verdict::Blocked { retry_after, .. } =
            state.auth_failures.failed(peer, Instant::now())
        {
            return too_many(next, retry_after);
        }
    }
    login_form(
        StatusCode::UNAUTHORIZED,
        next,
        Some("Wrong user name or password."),
    )
}

fn too_many(next: Option<&str>, retry_after: Duration) -> Response {
    let secs = retry_after.as_secs().max(1);
    let mut response = login_form(
        StatusCode::TOO_MANY_REQUESTS,
        next,
        Some(&format!(
            "Too many failed sign-ins from your address: try again in {secs} s."
        )),
    );
    if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub(crate) async fn logout(
    State(state): State<AppState>,
    user: WebUser,
    Form(form): Form<CsrfForm>,
) -> Result<Response, WebError> {
    user.check_csrf(&form.csrf)?;
    state.stores.meta.end_session(&user.session).await?;
    let mut response = Redirect::to("/login").into_response();
    set_cookie(
        &mut response,
        &session_cookie(&state, SESSION_COOKIE, "", "/", Duration::ZERO),
    );
    Ok(response)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, Secure when the server speaks TLS.
pub(crate) fn session_cookie(
    state: &AppState,
    name: &str,
    value: &str,
    path: &str,
    ttl: Duration,
) -> String {
    let secure = if state.config.tls.is_some() {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{name}={value}; HttpOnly; SameSite=Lax; Path={path}; Max-Age={}{secure}",
        ttl.as_secs()
    )
}

pub(crate) fn set_cookie(response: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

/// 32 random bytes, hex.
pub(crate) fn random_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Compares two secrets in time that depends only on their lengths.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && !a.is_empty()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Where to go after signing in: a path on this site, never another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(next) if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') => {
            next.to_owned()
        }
        _ => "/files".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_never_leaves_the_site() {
        assert_eq!(safe_next(Some("/file?path=a")), "/file?path=a");
        assert_eq!(safe_next(Some("//evil.example/")), "/files");
        assert_eq!(safe_next(Some("https://evil.example/")), "/files");
        assert_eq!(safe_next(Some("/\\evil.example")), "/files");
        assert_eq!(safe_next(None), "/files");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; syncstore_session=abc"),
        );
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "b"), Some("2"));
        assert_eq!(cookie(&headers, "c"), None);
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
        assert!(!same_secret("", ""));
    }
}
