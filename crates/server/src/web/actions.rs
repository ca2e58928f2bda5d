//! What a signed-in browser changes: uploads, new folders, renames and moves, deletions (to
//! the trash), locks. Each is an ordinary op or lock change of the user's `web` device,
//! conditional on the revision the browser's page was made from where it matters, so a change
//! made elsewhere meanwhile is refused (409), never overwritten; another device's lock is a 423
//! with its holder.

use super::layout::{file_url, folder_url};
use super::{child_path, parent_of, parse_path, parse_required_path, WebError, WebUser};
use crate::content;
use crate::routes::{now_ms, AppState};
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use bytes::Bytes;
use serde::Deserialize;
use std::io;
use syncstore_proto::{EntryKind, Op, Precondition, RelPath};
use tokio::sync::mpsc;

/// Ops per batch when deleting a folder.
const DELETE_BATCH: usize = 500;
/// The longest text field of the upload form (the CSRF token, the folder's path).
const MAX_FIELD_BYTES: usize = 64 * 1024;

/// Whether the request came from the page's script, which wants a status and a text, not a
/// redirect.
fn from_script(headers: &HeaderMap) -> bool {
    headers
        .get("x-requested-with")
        .is_some_and(|value| value == "fetch")
}

/// Uploads the form's files into its folder, each streamed into chunks as it arrives and
/// committed once whole: a file cut off leaves the path as it was. A file of the same name is
/// replaced (its old content stays in its history).
pub(crate) async fn upload(
    State(state): State<AppState>,
    user: WebUser,
    headers: HeaderMap,
    mut multipart: Multipart,
) -> Result<Response, WebError> {
    let mut csrf_checked = false;
    let mut dir: Option<RelPath> = None;
    let mut uploaded: Vec<String> = Vec::new();
    loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|err| WebError::bad_request(format!("could not read the upload: {err}")))?;
        let Some(mut field) = field else { break };
        match field.name().unwrap_or("") {
            "csrf" => {
                user.check_csrf(&small_text(field).await?)?;
                csrf_checked = true;
            }
            "dir" => dir = parse_path(Some(&small_text(field).await?))?,
            "file" => {
                if !csrf_checked {
                    return Err(WebError::forbidden(
                        "the upload's security token must come before its files: reload the page",
                    ));
                }
                let Some(name) = field.file_name().map(base_name) else {
                    continue;
                };
                if name.is_empty() {
                    // An empty file input sends one nameless part.
                    continue;
                }
                let path = child_path(dir.as_ref(), &name)?;
                let (base, executable) = match state
                    .stores
                    .meta
                    .entry(user.principal.user_id, &path)
                    .await?
                {
                    Some(entry) if entry.kind == EntryKind::Dir => {
                        return Err(WebError::new(
                            StatusCode::CONFLICT,
                            format!("{:?} is a folder: a file cannot replace it", path.as_str()),
                        ))
                    }
                    Some(entry) => (Precondition::Rev(entry.rev), entry.executable),
                    None => (Precondition::MustNotExist, false),
                };
                let (sender, receiver) = mpsc::channel::<io::Result<Bytes>>(4);
                let body = futures::stream::unfold(receiver, |mut receiver| async move {
                    receiver.recv().await.map(|item| (item, receiver))
                });
                let feed = async move {
                    loop {
                        match field.chunk().await {
                            Ok(Some(bytes)) => {
                                if sender.send(Ok(bytes)).await.is_err() {
                                    return;
                                }
                            }
                            Ok(None) => return,
                            Err(err) => {
                                // The file ends with an error, so nothing is committed.
                                let _ = sender.send(Err(io::Error::other(err.to_string()))).await;
                                return;
                            }
                        }
                    }
                };
                let write = content::put_file(
                    &state,
                    &user.principal,
                    path.clone(),
                    base,
                    executable,
                    body,
                );
                let ((), written) = tokio::join!(feed, write);
                written.map_err(|err| {
                    let mut err = WebError::from(err);
                    if !uploaded.is_empty() {
                        err.message = format!(
                            "{} (uploaded before it: {})",
                            err.message,
                            uploaded.join(", ")
                        );
                    }
                    err
                })?;
                tracing::info!(path = %path, "uploaded through the web interface");
                uploaded.push(name);
            }
            _ => {}
        }
    }
    if !csrf_checked {
        return Err(WebError::forbidden(
            "the upload has no security token: reload the page",
        ));
    }
    if from_script(&headers) {
        return Ok((StatusCode::OK, format!("uploaded {}", uploaded.join(", "))).into_response());
    }
    Ok(Redirect::to(&folder_url(dir.as_ref().map(RelPath::as_str))).into_response())
}

/// A small text field of the upload form.
async fn small_text(mut field: axum::extract::multipart::Field<'_>) -> Result<String, WebError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|err| WebError::bad_request(format!("could not read the upload: {err}")))?
    {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > MAX_FIELD_BYTES {
            return Err(WebError::bad_request(
                "a text field of the upload is too long",
            ));
        }
    }
    String::from_utf8(bytes)
        .map_err(|_| WebError::bad_request("a text field of the upload is not UTF-8"))
}

/// The last component of a file name as a browser sends it (some send a whole path).
fn base_name(name: &str) -> String {
    name.rsplit(['/', '\\'])
        .next()
        .unwrap_or("")
        .trim()
        .to_owned()
}

#[derive(Deserialize)]
pub(crate) struct MkdirForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    dir: String,
    name: String,
}

pub(crate) async fn mkdir(
    State(state): State<AppState>,
    user: WebUser,
    Form(form): Form<MkdirForm>,
) -> Result<Response, WebError> {
    user.check_csrf(&form.csrf)?;
    let dir = parse_path(Some(&form.dir))?;
    let path = child_path(dir.as_ref(), &form.name)?;
    if state
        .stores
        .meta
        .entry(user.principal.user_id, &path)
        .await?
        .is_some()
    {
        return Err(WebError::new(
            StatusCode::CONFLICT,
            format!("{:?} already exists", path.as_str()),
        ));
    }
    content::apply_one(
        &state,
        &user.principal,
        Op::MakeDir {
            path: path.clone(),
            mtime_ms: now_ms(),
        },
    )
    .await?;
    Ok(Redirect::to(&folder_url(Some(path.as_str()))).into_response())
}

#[derive(Deserialize)]
pub(crate) struct MoveForm {
    #[serde(default)]
    csrf: String,
    from: String,
    to: String,
}

/// Renames or moves a file or a whole folder (one op: the folder keeps its contents).
pub(crate) async fn move_entry(
    State(state): State<AppState>,
    user: WebUser,
    Form(form): Form<MoveForm>,
) -> Result<Response, WebError> {
    user.check_csrf(&form.csrf)?;
    let from = parse_required_path(&form.from)?;
    let to = parse_required_path(&form.to)?;
    if from == to {
        return Err(WebError::bad_request(
            "the new path is the same as the old one",
        ));
    }
    let entry = state
        .stores
        .meta
        .entry(user.principal.user_id, &from)
        .await?
        .ok_or_else(|| WebError::not_found(format!("there is no {:?} any more", from.as_str())))?;
    content::apply_one(
        &state,
        &user.principal,
        Op::Move {
            from,
            to: to.clone(),
            base: entry.rev,
        },
    )
    .await?;
    Ok(Redirect::to(&match entry.kind {
        EntryKind::Dir => folder_url(Some(to.as_str())),
        EntryKind::File => file_url(to.as_str()),
    })
    .into_response())
}

#[derive(Deserialize)]
pub(crate) struct PathForm {
    #[serde(default)]
    csrf: String,
    path: String,
}

/// Deletes a file, or a folder with everything in it: every file goes to the trash.
pub(crate) async fn delete(
    State(state): State<AppState>,
    user: WebUser,
    Form(form): Form<PathForm>,
) -> Result<Response, WebError> {
    user.check_csrf(&form.csrf)?;
    let path = parse_required_path(&form.path)?;
    let meta = &state.stores.meta;
    let user_id = user.principal.user_id;
    let entry = meta
        .entry(user_id, &path)
        .await?
        .ok_or_else(|| WebError::not_found(format!("there is no {:?} any more", path.as_str())))?;
    let mut ops = Vec::new();
    if entry.kind == EntryKind::Dir {
        let mut under = meta.entries_under(user_id, Some(&path)).await?;
        // Files first, then folders from the deepest, so each folder is empty when deleted.
        under.sort_by_key(|entry| {
            (
                entry.kind == EntryKind::Dir,
                std::cmp::Reverse(entry.path.as_str().matches('/').count()),
            )
        });
        ops.extend(under.into_iter().map(|entry| Op::Delete {
            path: entry.path,
            base: entry.rev,
        }));
    }
    ops.push(Op::Delete {
        path: path.clone(),
        base: entry.rev,
    });
    let mut refused = Vec::new();
    for batch in ops.chunks(DELETE_BATCH) {
        let outcome = content::apply(&state, &user.principal, batch.to_vec()).await?;
        for (op, outcome) in batch.iter().zip(outcome.outcomes) {
            if !outcome.is_applied() {
                let result = crate::wire::op_result(outcome);
                refused.push((op.path().clone(), result));
            }
        }
    }
    if let Some((first, result)) = refused.first() {
        let status = StatusCode::from_u16(result.status).unwrap_or(StatusCode::CONFLICT);
        return Err(WebError::new(
            status,
            format!(
                "{} of {} could not be deleted; the first, {:?}: {}",
                refused.len(),
                ops.len(),
                first.as_str(),
                result.message
            ),
        ));
    }
    tracing::info!(path = %path, files = ops.len(), "deleted through the web interface");
    Ok(Redirect::to(&folder_url(parent_of(&path).as_ref().map(RelPath::as_str))).into_response())
}

pub(crate) async fn lock(
    State(state): State<AppState>,
    user: WebUser,
    Form(form): Form<PathForm>,
) -> Result<Response, WebError> {
    user.check_csrf(&form.csrf)?;
    let path = parse_required_path(&form.path)?;
    let principal = &user.principal;
    let outcome = state
        .stores
        .meta
        .take_lock(
            principal.user_id,
            &principal.device_name,
            &path,
            None,
            now_ms(),
        )
        .await?;
    let _lock = crate::routes::lock_answer(&state, principal.user_id, outcome)?;
    Ok(Redirect::to(&back_to(&state, &user, &path).await?).into_response())
}

pub(crate) async fn unlock(
    State(state): State<AppState>,
    user: WebUser,
    Form(form): Form<PathForm>,
) -> Result<Response, WebError> {
    user.check_csrf(&form.csrf)?;
    let path = parse_required_path(&form.path)?;
    let principal = &user.principal;
    let outcome = state
        .stores
        .meta
        .release_lock(
            principal.user_id,
            &principal.device_name,
            &path,
            false,
            now_ms(),
        )
        .await?;
    let _lock = crate::routes::lock_answer(&state, principal.user_id, outcome)?;
    Ok(Redirect::to(&back_to(&state, &user, &path).await?).into_response())
}

/// The page of what is at `path`: a file's page, or a folder's listing.
async fn back_to(state: &AppState, user: &WebUser, path: &RelPath) -> Result<String, WebError> {
    Ok(
        match state
            .stores
            .meta
            .entry(user.principal.user_id, path)
            .await?
        {
            Some(entry) if entry.kind == EntryKind::Dir => folder_url(Some(path.as_str())),
            _ => file_url(path.as_str()),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_names_drop_what_browsers_prefix() {
        assert_eq!(base_name("report.pdf"), "report.pdf");
        assert_eq!(base_name("C:\\Users\\me\\report.pdf"), "report.pdf");
        assert_eq!(base_name("a/b/c.txt"), "c.txt");
        assert_eq!(base_name(""), "");
    }
}
