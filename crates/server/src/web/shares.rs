//! Share links: a read-only link to a file or folder, with an optional expiry and password,
//! listed and revocable by its owner; and the link's own pages, which need no account.
//!
//! A link names the shared node by id, so a rename or move keeps it working; it dies with the
//! node, its expiry or its revocation. A link's pages serve only the shared node and what is
//! under it: every path they take is relative to it and validated as a `RelPath` (no `..`), and
//! they never show the names of the folders above it. A password-protected link, once its
//! password was given, gets a session of its own (a cookie scoped to the link's path).

use super::download::{serve_file, serve_zip};
use super::layout::{csrf_field, human_size, page, time};
use super::session::{cookie, random_secret, same_secret, session_cookie, set_cookie};
use super::{encode, name_of, parse_path, parse_required_path, WebError, WebUser};
use crate::conn::PeerAddr;
use crate::content::Owner;
use crate::routes::{now_ms, AppState};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;
use std::time::{Duration, Instant};
use syncstore_proto::{EntryKind, RelPath, RemoteEntry};
use syncstore_store::{NewSession, ShareId, ShareRecord, TokenHash};

/// The cookie of an unlocked password-protected link (its path is the link's).
const SHARE_COOKIE: &str = "syncstore_share";
/// The unlock form's double-submit cookie.
const SHARE_FORM_COOKIE: &str = "syncstore_share_form";
/// How long an unlocked link stays unlocked in one browser.
const SHARE_SESSION_TTL: Duration = Duration::from_secs(24 * 3600);

/// The form on a file's or folder's page that makes a link to it.
pub(crate) fn share_form(user: &WebUser, path: &str) -> Markup {
    html! {
        form class="share" method="post" action="/shares" {
            (csrf_field(user))
            input type="hidden" name="path" value=(path);
            fieldset {
                legend { "Share a read-only link" }
                label for="share-expires" { "Expires on (optional)" }
                input id="share-expires" name="expires" type="date";
                label for="share-password" { "Password (optional)" }
                input id="share-password" name="password" type="password" autocomplete="new-password";
                button type="submit" id="share-create" { "Create link" }
            }
        }
    }
}

/// The owner's list of links.
pub(crate) async fn shares_page(
    State(state): State<AppState>,
    user: WebUser,
    headers: HeaderMap,
) -> Result<Markup, WebError> {
    let meta = &state.stores.meta;
    let user_id = user.principal.user_id;
    let shares = meta.shares(user_id).await?;
    let now = now_ms();
    let base = site_url(&state, &headers);
    let mut rows = Vec::new();
    for share in &shares {
        let current = meta.node(user_id, share.node_id).await?;
        rows.push((share, current));
    }
    let body = html! {
        h1 { "Share links" }
        @if rows.is_empty() {
            p class="empty" { "You have no share links. Make one from a file's or folder's page." }
        } @else {
            table class="listing shares" {
                thead { tr { th scope="col" { "Shared" } th scope="col" { "Link" } th scope="col" { "Made" } th scope="col" { "Expires" } th scope="col" { "State" } } }
                tbody {
                    @for (share, current) in &rows {
                        @let url = format!("{base}/s/{}", share.id.as_str());
                        tr data-share=(share.id.as_str()) {
                            td data-label="Shared" {
                                @match current {
                                    Some(entry) => { (entry.path.as_str()) @if entry.kind == EntryKind::Dir { "/" } }
                                    None => { del { (share.path.as_str()) } " (gone)" }
                                }
                                @if share.password_hash.is_some() { " " span class="note" { "🔑 password" } }
                            }
                            td data-label="Link" { input class="share-url" type="text" readonly value=(url) aria-label="Share link"; }
                            td data-label="Made" { (time(share.created_ms)) }
                            td data-label="Expires" { @if let Some(ms) = share.expires_ms { (time(ms)) } @else { "never" } }
                            td data-label="State" {
                                @if let Some(ms) = share.revoked_ms {
                                    "revoked " (time(ms))
                                } @else if share.expires_ms.is_some_and(|ms| ms <= now) {
                                    "expired"
                                } @else {
                                    form method="post" action="/shares/revoke" class="inline" {
                                        (csrf_field(&user))
                                        input type="hidden" name="id" value=(share.id.as_str());
                                        button type="submit" class="danger share-revoke" { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Share links", Some(&user), body))
}

/// `http(s)://host` of this server as the browser reached it.
fn site_url(state: &AppState, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .filter(|host| {
            host.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
        })
        .unwrap_or("localhost");
    let scheme = if state.config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{host}")
}

#[derive(Deserialize)]
pub(crate) struct CreateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    expires: String,
    #[serde(default)]
    password: String,
}

pub(crate) async fn create(
    State(state): State<AppState>,
    user: WebUser,
    Form(form): Form<CreateForm>,
) -> Result<Response, WebError> {
    user.check_csrf(&form.csrf)?;
    let path = parse_required_path(&form.path).map_err(|_| {
        WebError::bad_request("share a file or a folder, not the whole of your files")
    })?;
    let entry = state
        .stores
        .meta
        .entry(user.principal.user_id, &path)
        .await?
        .ok_or_else(|| WebError::not_found(format!("there is no {:?} any more", path.as_str())))?;
    let now = now_ms();
    let expires_ms = match form.expires.trim() {
        "" => None,
        date => {
            let day = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|_| {
                WebError::bad_request(format!("{date:?} is not a date like 2026-12-31"))
            })?;
            // Valid through the whole of that day, UTC.
            let end = day
                .succ_opt()
                .and_then(|next| next.and_hms_opt(0, 0, 0))
                .map(|end| end.and_utc().timestamp_millis())
                .ok_or_else(|| WebError::bad_request("that date is out of range"))?;
            if end <= now {
                return Err(WebError::bad_request("the expiry date is in the past"));
            }
            Some(end)
        }
    };
    let password_hash = match form.password.as_str() {
        "" => None,
        password => {
            let password = password.to_owned();
            let hashed =
                tokio::task::spawn_blocking(move || crate::password::hash_password(&password))
                    .await
                    .map_err(|err| {
                        WebError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
                    })?
                    .map_err(|err| WebError::bad_request(format!("{err:#}")))?;
            Some(hashed)
        }
    };
    let share = ShareRecord {
        id: ShareId::new(hex::encode(rand::random::<[u8; 16]>()))
            .map_err(|err| WebError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))?,
        user_id: user.principal.user_id,
        node_id: entry.node_id,
        path: entry.path.clone(),
        created_ms: now,
        expires_ms,
        password_hash,
        revoked_ms: None,
        created_by: user.principal.device_name.clone(),
    };
    state.stores.meta.create_share(&share).await?;
    tracing::info!(path = %entry.path, "made a share link");
    Ok(Redirect::to(&format!("/shares#{}", share.id.as_str())).into_response())
}

#[derive(Deserialize)]
pub(crate) struct RevokeForm {
    #[serde(default)]
    csrf: String,
    id: String,
}

pub(crate) async fn revoke(
    State(state): State<AppState>,
    user: WebUser,
    Form(form): Form<RevokeForm>,
) -> Result<Response, WebError> {
    user.check_csrf(&form.csrf)?;
    let id =
        ShareId::new(form.id.clone()).map_err(|_| WebError::not_found("no such share link"))?;
    if !state
        .stores
        .meta
        .revoke_share(user.principal.user_id, &id, now_ms())
        .await?
    {
        return Err(WebError::not_found("you have no such share link"));
    }
    Ok(Redirect::to("/shares").into_response())
}

/// A live link, its owner, and what it shares.
struct Shared {
    share: ShareRecord,
    owner: Owner,
    root: RemoteEntry,
}

/// 410 for a link revoked, or expired at `now_ms` (its expiry is the first millisecond it no
/// longer works).
fn check_in_force(share: &ShareRecord, now_ms: i64) -> Result<(), WebError> {
    if share.revoked_ms.is_some() {
        return Err(WebError::new(
            StatusCode::GONE,
            "this share link was revoked by its owner",
        ));
    }
    if share.expires_ms.is_some_and(|ms| ms <= now_ms) {
        return Err(WebError::new(
            StatusCode::GONE,
            "this share link has expired",
        ));
    }
    Ok(())
}

/// The link `id`, if it may be used now: 404 for no such link (or its node gone), 410 for one
/// revoked or expired. Its password is checked separately.
async fn live_share(state: &AppState, id: &str) -> Result<Shared, WebError> {
    let gone = || WebError::not_found("there is no such share link");
    let id = ShareId::new(id.to_owned()).map_err(|_| gone())?;
    let share = state.stores.meta.share(&id).await?.ok_or_else(gone)?;
    check_in_force(&share, now_ms())?;
    let root = state
        .stores
        .meta
        .node(share.user_id, share.node_id)
        .await?
        .ok_or_else(|| WebError::not_found("what this link shared was deleted"))?;
    let owner = state
        .stores
        .meta
        .user_by_id(share.user_id)
        .await?
        .ok_or_else(gone)?;
    Ok(Shared {
        owner: Owner {
            user_id: share.user_id,
            namespace: owner.namespace,
        },
        share,
        root,
    })
}

/// Whether this browser may see the link: it has no password, or this browser gave it.
async fn unlocked(
    state: &AppState,
    shared: &Shared,
    headers: &HeaderMap,
) -> Result<bool, WebError> {
    if shared.share.password_hash.is_none() {
        return Ok(true);
    }
    let Some(value) = cookie(headers, SHARE_COOKIE) else {
        return Ok(false);
    };
    let session = state
        .stores
        .meta
        .session(&TokenHash::of_token(value), now_ms())
        .await?;
    Ok(session.is_some_and(|session| session.share_id.as_ref() == Some(&shared.share.id)))
}

/// The entry at `sub` (relative to the shared node; empty: the node itself). No path can
/// leave the shared node: `sub` has no `..`, and is only ever appended to the node's path.
async fn resolve(
    state: &AppState,
    shared: &Shared,
    sub: Option<&RelPath>,
) -> Result<RemoteEntry, WebError> {
    let Some(sub) = sub else {
        return Ok(shared.root.clone());
    };
    let missing = || WebError::not_found(format!("there is no {:?} in this share", sub.as_str()));
    if shared.root.kind != EntryKind::Dir {
        return Err(missing());
    }
    let path = RelPath::new(&format!("{}/{}", shared.root.path.as_str(), sub.as_str()))
        .map_err(|_| missing())?;
    state
        .stores
        .meta
        .entry(shared.owner.user_id, &path)
        .await?
        .ok_or_else(missing)
}

/// `entry`'s path relative to the shared node (`None`: the node itself).
fn relative(shared: &Shared, entry: &RemoteEntry) -> Option<String> {
    entry
        .path
        .as_str()
        .strip_prefix(shared.root.path.as_str())
        .and_then(|rest| rest.strip_prefix('/'))
        .map(str::to_owned)
}

#[derive(Deserialize)]
pub(crate) struct ShareQuery {
    path: Option<String>,
    download: Option<String>,
}

/// The link's page: the shared file, or a listing of the shared folder (or a folder in it).
pub(crate) async fn open(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<ShareQuery>,
) -> Result<Response, WebError> {
    let shared = live_share(&state, &id).await?;
    if !unlocked(&state, &shared, &headers).await? {
        return Ok(password_form(&id, StatusCode::OK, None));
    }
    let sub = parse_path(query.path.as_deref())?;
    let entry = resolve(&state, &shared, sub.as_ref()).await?;
    let base = format!("/s/{id}");
    let link = |rel: Option<&str>| match rel {
        None => base.clone(),
        Some(rel) => format!("{base}?path={}", encode(rel)),
    };
    let title = name_of(&entry.path).to_owned();
    let rel = relative(&shared, &entry);
    let body = if entry.kind == EntryKind::File {
        let raw = match &rel {
            None => format!("{base}/raw"),
            Some(rel) => format!("{base}/raw?path={}", encode(rel)),
        };
        let sep = if raw.contains('?') { '&' } else { '?' };
        let mime = mime_guess::from_path(entry.path.as_str()).first_or_octet_stream();
        html! {
            h1 { (title) }
            p { (human_size(entry.size)) " · modified " (time(entry.mtime_ms)) }
            p { a class="button" id="share-download" href=(format!("{raw}{sep}download=1")) download=(title) { "Download" } }
            @if super::download::inline_image(&mime) {
                figure class="preview" { img src=(raw) alt=(format!("Preview of {title}")); }
            }
        }
    } else {
        let mut children: Vec<RemoteEntry> = state
            .stores
            .meta
            .entries_under(shared.owner.user_id, Some(&entry.path))
            .await?
            .into_iter()
            .filter(|child| {
                child.path.as_str().matches('/').count()
                    == entry.path.as_str().matches('/').count() + 1
            })
            .collect();
        children.sort_by(|a, b| {
            (a.kind != EntryKind::Dir)
                .cmp(&(b.kind != EntryKind::Dir))
                .then(a.path.as_str().cmp(b.path.as_str()))
        });
        let zip = match &rel {
            None => format!("{base}/zip"),
            Some(rel) => format!("{base}/zip?path={}", encode(rel)),
        };
        html! {
            nav class="crumbs" aria-label="Breadcrumb" { ol {
                li { a href=(link(None)) { (name_of(&shared.root.path)) } }
                @if let Some(rel) = &rel {
                    @for (i, part) in rel.split('/').enumerate() {
                        @let upto = rel.split('/').take(i + 1).collect::<Vec<_>>().join("/");
                        li { a href=(link(Some(&upto))) { (part) } }
                    }
                }
            } }
            h1 { (title) }
            p { a class="button" id="share-zip" href=(zip) { "Download all as a zip" } }
            @if children.is_empty() { p class="empty" { "This folder is empty." } } @else {
                table class="listing" {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Size" } th scope="col" { "Modified" } } }
                    tbody {
                        @for child in &children {
                            @let child_rel = relative(&shared, child).unwrap_or_default();
                            tr {
                                td data-label="Name" {
                                    a href=(link(Some(&child_rel))) { (name_of(&child.path)) @if child.kind == EntryKind::Dir { "/" } }
                                }
                                td data-label="Size" { @if child.kind == EntryKind::Dir { "—" } @else { (human_size(child.size)) } }
                                td data-label="Modified" { (time(child.mtime_ms)) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page(
        &title,
        None,
        html! { p class="note" { "Shared with you through syncstore (read-only)." } (body) },
    )
    .into_response())
}

fn password_form(id: &str, status: StatusCode, problem: Option<&str>) -> Response {
    let token = random_secret();
    let body = html! {
        h1 { "This link is protected" }
        @if let Some(problem) = problem { p class="error" role="alert" id="share-error" { (problem) } }
        form method="post" action=(format!("/s/{id}")) {
            input type="hidden" name="csrf" value=(token);
            label for="share-password" { "Password" }
            input id="share-password" name="password" type="password" required autofocus;
            button type="submit" { "Open" }
        }
    };
    let mut response = (status, page("Protected link", None, body)).into_response();
    set_cookie(
        &mut response,
        &format!(
            "{SHARE_FORM_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/s/{id}; Max-Age=3600"
        ),
    );
    response
}

#[derive(Deserialize)]
pub(crate) struct UnlockForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    password: String,
}

/// The password of a protected link: right, and this browser may open the link for a day.
pub(crate) async fn unlock(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    peer: Option<axum::Extension<PeerAddr>>,
    Form(form): Form<UnlockForm>,
) -> Result<Response, WebError> {
    let shared = live_share(&state, &id).await?;
    let Some(phc) = shared.share.password_hash.clone() else {
        return Ok(Redirect::to(&format!("/s/{id}")).into_response());
    };
    match cookie(&headers, SHARE_FORM_COOKIE) {
        Some(token) if same_secret(token, &form.csrf) => {}
        _ => {
            return Ok(password_form(
                &id,
                StatusCode::FORBIDDEN,
                Some("The form expired: please try again."),
            ))
        }
    }
    let peer = peer.map(|peer| peer.0 .0.ip());
    if let Some(retry_after) =
        peer.and_then(|peer| state.auth_failures.blocked(peer, Instant::now()))
    {
        let mut response = password_form(
            &id,
            StatusCode::TOO_MANY_REQUESTS,
            Some(&format!(
                "Too many wrong passwords from your address: try again in {} s.",
                retry_after.as_secs().max(1)
            )),
        );
        if let Ok(value) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return Ok(response);
    }
    let password = form.password.clone();
    let right =
        tokio::task::spawn_blocking(move || crate::password::verify_password(&phc, &password))
            .await
            .unwrap_or(false);
    if !right {
        if let Some(peer) = peer {
            tracing::warn!(%peer, "refused a share link's password");
            if let crate::auth::Verdict::Blocked { .. } =
                state.auth_failures.failed(peer, Instant::now())
            {
                return Ok(password_form(
                    &id,
                    StatusCode::TOO_MANY_REQUESTS,
                    Some("Too many wrong passwords from your address: try again later."),
                ));
            }
        }
        return Ok(password_form(
            &id,
            StatusCode::UNAUTHORIZED,
            Some("Wrong password."),
        ));
    }
    let secret = random_secret();
    let now = now_ms();
    state
        .stores
        .meta
        .create_session(&NewSession {
            id_hash: TokenHash::of_token(&secret),
            user_id: shared.owner.user_id,
            share_id: Some(shared.share.id.clone()),
            csrf: random_secret(),
            created_ms: now,
            expires_ms: now + SHARE_SESSION_TTL.as_millis() as i64,
        })
        .await?;
    let mut response = Redirect::to(&format!("/s/{id}")).into_response();
    set_cookie(
        &mut response,
        &session_cookie(
            &state,
            SHARE_COOKIE,
            &secret,
            &format!("/s/{id}"),
            SHARE_SESSION_TTL,
        ),
    );
    Ok(response)
}

/// The link's entry at `sub`, for a browser that may open the link (401 otherwise).
async fn unlocked_entry(
    state: &AppState,
    id: &str,
    headers: &HeaderMap,
    sub: Option<&str>,
) -> Result<(Shared, RemoteEntry), WebError> {
    let shared = live_share(state, id).await?;
    if !unlocked(state, &shared, headers).await? {
        return Err(WebError::new(
            StatusCode::UNAUTHORIZED,
            "this link needs its password: open the link first",
        ));
    }
    let sub = parse_path(sub)?;
    let entry = resolve(state, &shared, sub.as_ref()).await?;
    Ok((shared, entry))
}

/// A file of the link.
pub(crate) async fn raw(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<ShareQuery>,
) -> Result<Response, WebError> {
    let (shared, entry) = unlocked_entry(&state, &id, &headers, query.path.as_deref()).await?;
    if entry.kind != EntryKind::File {
        return Err(WebError::bad_request(
            "that is a folder: download it as a zip",
        ));
    }
    serve_file(
        &state,
        shared.owner,
        &entry,
        &headers,
        query.download.is_none(),
    )
    .await
}

/// A folder of the link as a zip.
pub(crate) async fn zip(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<ShareQuery>,
) -> Result<Response, WebError> {
    let (shared, entry) = unlocked_entry(&state, &id, &headers, query.path.as_deref()).await?;
    if entry.kind != EntryKind::Dir {
        return Err(WebError::bad_request(
            "that is a file: download it directly",
        ));
    }
    serve_zip(&state, shared.owner, Some(&entry.path), "shared").await
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncstore_proto::{DeviceName, NodeId};
    use syncstore_store::UserId;

    fn link(expires_ms: Option<i64>, revoked_ms: Option<i64>) -> ShareRecord {
        ShareRecord {
            id: ShareId::new("0123456789abcdef0123456789abcdef".to_owned()).unwrap(),
            user_id: UserId(1),
            node_id: NodeId(7),
            path: RelPath::new("docs").unwrap(),
            created_ms: 1_000,
            expires_ms,
            password_hash: None,
            revoked_ms,
            created_by: DeviceName::new("web").unwrap(),
        }
    }

    #[test]
    fn a_link_works_until_its_expiry_and_never_once_revoked() {
        assert!(check_in_force(&link(None, None), i64::MAX).is_ok());
        assert!(check_in_force(&link(Some(5_000), None), 4_999).is_ok());
        let expired = check_in_force(&link(Some(5_000), None), 5_000).unwrap_err();
        assert_eq!(expired.status, StatusCode::GONE);
        assert!(expired.message.contains("expired"), "{}", expired.message);
        let revoked = check_in_force(&link(Some(5_000), Some(2_000)), 3_000).unwrap_err();
        assert_eq!(revoked.status, StatusCode::GONE);
        assert!(revoked.message.contains("revoked"), "{}", revoked.message);
    }
}
