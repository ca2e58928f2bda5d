//! The web interface at `/`: server-rendered HTML (maud) with a little JavaScript, over the same
//! stores, ops and change hub as the sync API. A browser session acts as the user's `web`
//! device, so its changes, locks and conflicted copies are named like any device's and reach
//! every client through the journal.
//!
//! - `session`: login and logout, the session cookie, CSRF tokens, the login rate limit.
//! - `layout`: the page frame and the small formatting helpers (sizes, times, breadcrumbs).
//! - `browse`: folder listings (sortable, searchable) and a file's page (preview, versions).
//! - `actions`: upload (streamed, multipart), new folder, rename/move, delete, lock, unlock.
//! - `download`: a file (streamed, with Range) or a folder as a zip (streamed).
//! - `trash`: the trash, and restoring a version, a deleted file or a folder to a moment.
//! - `devices`: the user's devices and revoking one.
//! - `shares`: share links: made, listed and revoked by the owner; the link's own pages.
//! - `events`: server-sent events from the change hub, so an open page follows changes.
//!
//! Every path comes in as a query parameter and is validated into a `RelPath` once. Every POST
//! carries the session's CSRF token. User content is only ever served as an attachment, or
//! inline for image types that cannot run script, with `nosniff` and a sandboxing CSP.

mod actions;
mod browse;
mod devices;
mod download;
mod events;
mod layout;
mod session;
mod shares;
mod trash;

use crate::error::ApiError;
use crate::routes::AppState;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use syncstore_proto::RelPath;

pub(crate) use session::WebUser;

/// The routes of the web interface; `bounded` ones get the request time limit, the others
/// (uploads) stream bodies of any length.
pub(crate) fn routes() -> (Router<AppState>, Router<AppState>) {
    let bounded = Router::new()
        .route("/", get(browse::home))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/files", get(browse::folder))
        .route("/file", get(browse::file))
        .route("/raw", get(download::raw))
        .route("/zip", get(download::zip))
        .route("/mkdir", post(actions::mkdir))
        .route("/move", post(actions::move_entry))
        .route("/delete", post(actions::delete))
        .route("/lock", post(actions::lock))
        .route("/unlock", post(actions::unlock))
        .route("/trash", get(trash::trash_page))
        .route("/restore", post(trash::restore))
        .route("/devices", get(devices::devices_page))
        .route("/devices/revoke", post(devices::revoke))
        .route("/shares", get(shares::shares_page).post(shares::create))
        .route("/shares/revoke", post(shares::revoke))
        .route("/s/{id}", get(shares::open).post(shares::unlock))
        .route("/s/{id}/raw", get(shares::raw))
        .route("/s/{id}/zip", get(shares::zip))
        .route("/events", get(events::events))
        .route("/static/app.css", get(layout::css))
        .route("/static/app.js", get(layout::js));
    let streaming = Router::new()
        .route("/upload", post(actions::upload))
        .layer(DefaultBodyLimit::disable());
    (
        bounded.layer(axum::middleware::from_fn(security_headers)),
        streaming.layer(axum::middleware::from_fn(security_headers)),
    )
}

/// What every answer of the web interface carries, unless it set its own (a file's bytes set
/// a stricter policy): no framing by other sites, scripts and styles from this site only, no
/// caching of pages, and no referrer beyond this site (share links are secrets in the URL).
async fn security_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let defaults = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self'; script-src 'self'; style-src 'self'; \
             connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in defaults {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

/// An error answered as a page (or, to a script, as its text), with the status it stands for.
#[derive(Debug)]
pub(crate) struct WebError {
    status: StatusCode,
    message: String,
}

impl WebError {
    fn new(status: StatusCode, message: impl Into<String>) -> WebError {
        WebError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> WebError {
        WebError::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(message: impl Into<String>) -> WebError {
        WebError::new(StatusCode::NOT_FOUND, message)
    }

    fn forbidden(message: impl Into<String>) -> WebError {
        WebError::new(StatusCode::FORBIDDEN, message)
    }
}

impl From<ApiError> for WebError {
    fn from(err: ApiError) -> WebError {
        WebError::new(err.status, err.message)
    }
}

impl From<syncstore_store::StoreError> for WebError {
    fn from(err: syncstore_store::StoreError) -> WebError {
        ApiError::from(err).into()
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let page = layout::error_page(self.status, &self.message);
        let mut response = (self.status, page).into_response();
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// Checks that `dir` is a folder of the user (the root always is).
async fn check_folder(
    state: &AppState,
    user_id: syncstore_store::UserId,
    dir: Option<&RelPath>,
) -> Result<(), WebError> {
    let Some(dir) = dir else { return Ok(()) };
    match state.stores.meta.entry(user_id, dir).await? {
        Some(entry) if entry.kind == syncstore_proto::EntryKind::Dir => Ok(()),
        Some(_) => Err(WebError::bad_request(format!(
            "{:?} is a file, not a folder",
            dir.as_str()
        ))),
        None => Err(WebError::not_found(format!(
            "there is no folder {:?}",
            dir.as_str()
        ))),
    }
}

/// A path from a query parameter: empty (or absent) is the root.
fn parse_path(text: Option<&str>) -> Result<Option<RelPath>, WebError> {
    match text.map(|text| text.trim_matches('/')) {
        None | Some("") => Ok(None),
        Some(text) => RelPath::new(text)
            .map(Some)
            .map_err(|err| WebError::bad_request(format!("not a valid path {text:?}: {err}"))),
    }
}

/// A path that must name something (not the root).
fn parse_required_path(text: &str) -> Result<RelPath, WebError> {
    parse_path(Some(text))?.ok_or_else(|| WebError::bad_request("the path is empty"))
}

/// `dir/name` (or `name` at the root), validated; `name` must be one component.
fn child_path(dir: Option<&RelPath>, name: &str) -> Result<RelPath, WebError> {
    let name = name.trim();
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(WebError::bad_request(format!(
            "{name:?} is not a valid name: it must be one non-empty path component without '/'"
        )));
    }
    let joined = match dir {
        Some(dir) => format!("{}/{name}", dir.as_str()),
        None => name.to_owned(),
    };
    RelPath::new(&joined)
        .map_err(|err| WebError::bad_request(format!("not a valid path {joined:?}: {err}")))
}

/// The folder a path is in (`None`: the root).
fn parent_of(path: &RelPath) -> Option<RelPath> {
    let (parent, _) = path.as_str().rsplit_once('/')?;
    RelPath::new(parent).ok()
}

/// The last component of a path.
fn name_of(path: &RelPath) -> &str {
    path.as_str().rsplit('/').next().unwrap_or(path.as_str())
}

/// A URL query value, percent-encoded.
fn encode(text: &str) -> String {
    serde_urlencoded::to_string([("", text)])
        .map(|pair| pair[1..].to_owned())
        .unwrap_or_default()
}
