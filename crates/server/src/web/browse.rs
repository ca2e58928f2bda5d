//! Folder listings and a file's page.

use super::layout::{
    breadcrumbs, csrf_field, file_url, folder_url, human_size, live_note, page, time,
};
use super::session::MaybeUser;
use super::{encode, name_of, parent_of, parse_path, WebError, WebUser};
use crate::routes::{now_ms, AppState};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;
use syncstore_proto::{EntryKind, LockInfo, RelPath, RemoteEntry, VersionKind};

/// Most entries a search shows.
const MAX_SEARCH_RESULTS: usize = 1000;
/// Most bytes of a text file its page shows.
const TEXT_PREVIEW_BYTES: u64 = 64 * 1024;

pub(crate) async fn home(MaybeUser(user): MaybeUser) -> Response {
    match user {
        Some(_) => Redirect::to("/files").into_response(),
        None => Redirect::to("/login").into_response(),
    }
}

#[derive(Deserialize)]
pub(crate) struct FolderQuery {
    path: Option<String>,
    /// `name` (the default), `size` or `modified`.
    sort: Option<String>,
    /// `desc` for descending.
    order: Option<String>,
    /// Search names under this folder.
    q: Option<String>,
    /// Which page of [`PAGE_SIZE`] entries, from 1.
    page: Option<usize>,
}

/// Entries a listing shows at once; a folder of more has pages.
const PAGE_SIZE: usize = 500;

#[derive(Clone, Copy, PartialEq, Eq)]
enum SortBy {
    Name,
    Size,
    Modified,
}

impl SortBy {
    fn parse(text: Option<&str>) -> SortBy {
        match text {
            Some("size") => SortBy::Size,
            Some("modified") => SortBy::Modified,
            _ => SortBy::Name,
        }
    }

    fn key(self) -> &'static str {
        match self {
            SortBy::Name => "name",
            SortBy::Size => "size",
            SortBy::Modified => "modified",
        }
    }
}

/// A folder's listing: its folders first, then its files, sorted as asked; or, with `q`, the
/// entries under it whose names hold `q`.
pub(crate) async fn folder(
    State(state): State<AppState>,
    user: WebUser,
    Query(query): Query<FolderQuery>,
) -> Result<Markup, WebError> {
    let dir = parse_path(query.path.as_deref())?;
    let meta = &state.stores.meta;
    let user_id = user.principal.user_id;
    super::check_folder(&state, user_id, dir.as_ref()).await?;
    let under = meta.entries_under(user_id, dir.as_ref()).await?;
    let locks = meta.locks(user_id, now_ms()).await?;
    let search = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let sort = SortBy::parse(query.sort.as_deref());
    let descending = query.order.as_deref() == Some("desc");
    let mut shown: Vec<RemoteEntry> = match search {
        Some(q) => {
            let needle = q.to_lowercase();
            under
                .into_iter()
                .filter(|entry| name_of(&entry.path).to_lowercase().contains(&needle))
                .take(MAX_SEARCH_RESULTS)
                .collect()
        }
        None => {
            let depth = dir
                .as_ref()
                .map_or(0, |dir| dir.as_str().split('/').count());
            under
                .into_iter()
                .filter(|entry| entry.path.as_str().split('/').count() == depth + 1)
                .collect()
        }
    };
    sort_entries(&mut shown, sort, descending);
    let total = shown.len();
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let page_no = query.page.unwrap_or(1).clamp(1, pages);
    let shown: Vec<RemoteEntry> = shown
        .into_iter()
        .skip((page_no - 1) * PAGE_SIZE)
        .take(PAGE_SIZE)
        .collect();
    let dir_text = dir.as_ref().map(RelPath::as_str);
    let title = dir.as_ref().map_or("Your files", |dir| name_of(dir));
    let held = covering_lock(&locks, dir.as_ref());
    let body = html! {
        (breadcrumbs(dir.as_ref(), &folder_url))
        h1 { (title) }
        @if let Some(lock) = held {
            p class="lock-note" { "This folder is locked by " strong { (lock.device.as_str()) } " since " (time(lock.since_ms)) "." }
        }
        form class="search" method="get" action="/files" role="search" {
            @if let Some(dir) = dir_text { input type="hidden" name="path" value=(dir); }
            label for="q" { "Search names in this folder" }
            input id="q" name="q" type="search" value=(search.unwrap_or(""));
            button type="submit" { "Search" }
            @if search.is_some() { a href=(folder_url(dir_text)) { "Clear" } }
        }
        div id="live" data-live="" {
            @if let Some(q) = search {
                p class="note" { (shown.len()) " result(s) for “" (q) "”" }
            }
            (listing(&shown, &locks, dir_text, sort, descending, search.is_some()))
            @if pages > 1 {
                @let link = |n: usize| {
                    let mut href = format!("/files?page={n}&sort={}&order={}", sort.key(), if descending { "desc" } else { "asc" });
                    if let Some(dir) = dir_text { href.push_str(&format!("&path={}", encode(dir))); }
                    if let Some(q) = search { href.push_str(&format!("&q={}", encode(q))); }
                    href
                };
                nav class="pages" aria-label="Pages" {
                    @if page_no > 1 { a rel="prev" href=(link(page_no - 1)) { "← Previous" } " " }
                    span { "Entries " ((page_no - 1) * PAGE_SIZE + 1) "–" ((page_no - 1) * PAGE_SIZE + shown.len()) " of " (total) }
                    @if page_no < pages { " " a rel="next" href=(link(page_no + 1)) { "Next →" } }
                }
            }
        }
        (live_note())
        section class="tools" aria-label="Folder actions" {
            form id="upload" class="upload" method="post" action="/upload" enctype="multipart/form-data" data-dropzone="" {
                (csrf_field(&user))
                input type="hidden" name="dir" value=(dir_text.unwrap_or(""));
                label for="files" { "Upload files" }
                input id="files" name="file" type="file" multiple;
                button type="submit" { "Upload" }
                p class="note drop-hint" { "or drop files anywhere on this page" }
                progress id="upload-progress" max="100" value="0" hidden {}
                p id="upload-status" role="status" {}
            }
            form class="mkdir" method="post" action="/mkdir" {
                (csrf_field(&user))
                input type="hidden" name="dir" value=(dir_text.unwrap_or(""));
                label for="new-folder" { "New folder" }
                input id="new-folder" name="name" type="text" required;
                button type="submit" { "Create" }
            }
            p { a class="button" href=(format!("/zip?path={}", encode(dir_text.unwrap_or("")))) { "Download this folder as a zip" } }
            form class="restore-moment" method="post" action="/restore" {
                (csrf_field(&user))
                input type="hidden" name="kind" value="moment";
                input type="hidden" name="path" value=(dir_text.unwrap_or(""));
                label for="moment" { "Restore this folder as it was at (UTC)" }
                input id="moment" name="at" type="datetime-local" step="1" required;
                button type="submit" { "Restore" }
            }
            (super::shares::share_form(&user, dir_text.unwrap_or("")))
            @if let Some(dir) = &dir {
                (move_and_delete(&user, dir, true))
            }
        }
    };
    Ok(page(title, Some(&user), body))
}

fn sort_entries(entries: &mut [RemoteEntry], sort: SortBy, descending: bool) {
    entries.sort_by(|a, b| {
        let dirs_first = (a.kind != EntryKind::Dir).cmp(&(b.kind != EntryKind::Dir));
        let by = match sort {
            SortBy::Name => a
                .path
                .as_str()
                .to_lowercase()
                .cmp(&b.path.as_str().to_lowercase()),
            SortBy::Size => a.size.cmp(&b.size),
            SortBy::Modified => a.mtime_ms.cmp(&b.mtime_ms),
        };
        let by = if descending { by.reverse() } else { by };
        dirs_first
            .then(by)
            .then_with(|| a.path.as_str().cmp(b.path.as_str()))
    });
}

/// The lock in force on `path` itself or a folder above it.
fn covering_lock<'a>(locks: &'a [LockInfo], path: Option<&RelPath>) -> Option<&'a LockInfo> {
    let path = path?;
    locks.iter().find(|lock| {
        lock.path == *path
            || path
                .as_str()
                .starts_with(&format!("{}/", lock.path.as_str()))
    })
}

fn listing(
    entries: &[RemoteEntry],
    locks: &[LockInfo],
    dir: Option<&str>,
    sort: SortBy,
    descending: bool,
    show_paths: bool,
) -> Markup {
    let header = |label: &str, key: SortBy| {
        let active = key == sort;
        let order = if active && !descending { "desc" } else { "asc" };
        let mut href = format!("/files?sort={}&order={order}", key.key());
        if let Some(dir) = dir {
            href.push_str(&format!("&path={}", encode(dir)));
        }
        let aria = match (active, descending) {
            (true, false) => "ascending",
            (true, true) => "descending",
            _ => "none",
        };
        html! { th scope="col" aria-sort=(aria) { a href=(href) { (label) @if active { (if descending { " ↓" } else { " ↑" }) } } } }
    };
    html! {
        @if entries.is_empty() {
            p class="empty" { "Nothing here yet." }
        } @else {
            table class="listing" {
                thead { tr {
                    (header("Name", SortBy::Name))
                    (header("Size", SortBy::Size))
                    (header("Modified", SortBy::Modified))
                    th scope="col" { "Lock" }
                } }
                tbody {
                    @for entry in entries {
                        @let path = entry.path.as_str();
                        @let label = if show_paths { path } else { name_of(&entry.path) };
                        tr data-path=(path) {
                            td class="name" data-label="Name" {
                                @if entry.kind == EntryKind::Dir {
                                    a class="dir" href=(folder_url(Some(path))) { (label) "/" }
                                } @else {
                                    a class="file" href=(file_url(path)) { (label) }
                                }
                            }
                            td class="size" data-label="Size" {
                                @if entry.kind == EntryKind::Dir { "—" } @else { (human_size(entry.size)) }
                            }
                            td class="modified" data-label="Modified" { (time(entry.mtime_ms)) }
                            td class="lock" data-label="Lock" {
                                @if let Some(lock) = covering_lock(locks, Some(&entry.path)) {
                                    span class="locked" title=(format!("locked since {}", lock.since_ms)) {
                                        "🔒 " (lock.device.as_str()) ", " (time(lock.since_ms))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct FileQuery {
    path: String,
}

/// A file's page: its details, a preview, its actions and its versions.
pub(crate) async fn file(
    State(state): State<AppState>,
    user: WebUser,
    Query(query): Query<FileQuery>,
) -> Result<Response, WebError> {
    let path = super::parse_required_path(&query.path)?;
    let meta = &state.stores.meta;
    let user_id = user.principal.user_id;
    let entry = match meta.entry(user_id, &path).await? {
        Some(entry) if entry.kind == EntryKind::File => entry,
        Some(_) => return Ok(Redirect::to(&folder_url(Some(path.as_str()))).into_response()),
        None => {
            return Err(WebError::not_found(format!(
                "there is no file {:?}: it may have been moved or deleted (see the trash)",
                path.as_str()
            )))
        }
    };
    let locks = meta.locks(user_id, now_ms()).await?;
    let lock = covering_lock(&locks, Some(&path));
    let history = meta.history(user_id, &path).await?;
    let preview = preview(&state, &user, &entry).await;
    let parent = parent_of(&path);
    let raw = format!("/raw?path={}", encode(path.as_str()));
    let body = html! {
        (breadcrumbs(parent.as_ref(), &folder_url))
        h1 { (name_of(&path)) }
        div id="live" data-live="" {
            dl class="details" {
                dt { "Size" } dd { (human_size(entry.size)) " (" (entry.size) " bytes)" }
                dt { "Modified" } dd { (time(entry.mtime_ms)) }
                dt { "Last changed by" } dd { (entry.device.as_str()) }
                dt { "Lock" } dd id="lock-state" {
                    @match lock {
                        Some(lock) => { "Locked by " strong { (lock.device.as_str()) } " since " (time(lock.since_ms)) }
                        None => { "Not locked" }
                    }
                }
            }
            p class="actions" {
                a class="button" id="download" href=(format!("{raw}&download=1")) download=(name_of(&path)) { "Download" }
            }
            (preview)
            h2 { "Versions" }
            (versions(&user, &path, &history.versions))
        }
        (live_note())
        section class="tools" aria-label="File actions" {
            @match lock {
                Some(lock) if lock.device == user.principal.device_name => {
                    form method="post" action="/unlock" {
                        (csrf_field(&user))
                        input type="hidden" name="path" value=(path.as_str());
                        button type="submit" id="unlock" { "Unlock" }
                    }
                }
                Some(_) => {}
                None => {
                    form method="post" action="/lock" {
                        (csrf_field(&user))
                        input type="hidden" name="path" value=(path.as_str());
                        button type="submit" id="lock" { "Lock" }
                        span class="note" { " Other devices cannot change it until you unlock it." }
                    }
                }
            }
            (move_and_delete(&user, &path, false))
            (super::shares::share_form(&user, path.as_str()))
        }
    };
    Ok(page(name_of(&path), Some(&user), body).into_response())
}

/// The rename/move and delete forms of a file or folder.
fn move_and_delete(user: &WebUser, path: &RelPath, is_dir: bool) -> Markup {
    let what = if is_dir { "folder" } else { "file" };
    html! {
        form class="move" method="post" action="/move" {
            (csrf_field(user))
            input type="hidden" name="from" value=(path.as_str());
            label for="move-to" { "Rename or move this " (what) " to" }
            input id="move-to" name="to" type="text" value=(path.as_str()) required;
            button type="submit" { "Rename / move" }
        }
        form class="delete" method="post" action="/delete" data-confirm=(format!("Move this {what} to the trash?")) {
            (csrf_field(user))
            input type="hidden" name="path" value=(path.as_str());
            button type="submit" class="danger" id="delete" { "Delete " (what) }
            span class="note" { " Deleted files stay in the trash." }
        }
    }
}

fn versions(user: &WebUser, path: &RelPath, versions: &[syncstore_proto::Version]) -> Markup {
    html! {
        @if versions.is_empty() {
            p class="empty" { "No older versions are kept." }
        } @else {
            table class="versions" {
                thead { tr { th scope="col" { "When" } th scope="col" { "What" } th scope="col" { "Size" } th scope="col" { "By" } th scope="col" { span class="sr-only" { "Restore" } } } }
                tbody {
                    @for (index, version) in versions.iter().enumerate().rev() {
                        @let current = index + 1 == versions.len();
                        tr {
                            td data-label="When" { (time(version.at_ms)) }
                            td data-label="What" { (match version.kind {
                                VersionKind::File => "written",
                                VersionKind::Moved => "moved here",
                                VersionKind::Deleted => "deleted",
                            }) @if version.path != *path { " (as " (version.path.as_str()) ")" } }
                            td data-label="Size" { (human_size(version.size)) }
                            td data-label="By" { (version.device.as_str()) }
                            td {
                                @if current {
                                    span class="note" { "current" }
                                } @else if version.kind != VersionKind::Deleted {
                                    form method="post" action="/restore" class="inline" {
                                        (csrf_field(user))
                                        input type="hidden" name="kind" value="version";
                                        input type="hidden" name="path" value=(path.as_str());
                                        input type="hidden" name="rev" value=(version.rev.0);
                                        button type="submit" class="restore-version" { "Restore this version" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// An image shown by the browser, or the start of a text file; nothing for other files.
async fn preview(state: &AppState, user: &WebUser, entry: &RemoteEntry) -> Markup {
    let mime = mime_guess::from_path(entry.path.as_str()).first_or_octet_stream();
    if super::download::inline_image(&mime) {
        let src = format!("/raw?path={}", encode(entry.path.as_str()));
        return html! { figure class="preview" { img src=(src) alt=(format!("Preview of {}", name_of(&entry.path))); } };
    }
    let looks_text = mime.type_() == mime_guess::mime::TEXT
        || matches!(
            mime.subtype().as_str(),
            "json" | "xml" | "javascript" | "toml" | "x-sh"
        );
    if !looks_text || entry.size == 0 {
        return html! {};
    }
    let stream = crate::content::read_range(state, &user.principal, entry, 0..TEXT_PREVIEW_BYTES);
    let bytes: Vec<u8> =
        match futures::TryStreamExt::try_concat(futures::StreamExt::map(stream, |r| {
            r.map(|b| b.to_vec())
        }))
        .await
        {
            Ok(bytes) => bytes,
            Err(err) => {
                return html! { p class="error" { "The preview could not be read: " (err) } }
            }
        };
    let text = String::from_utf8_lossy(&bytes);
    html! {
        figure class="preview" {
            pre class="text-preview" tabindex="0" aria-label="Text preview" { (text) }
            @if entry.size > TEXT_PREVIEW_BYTES {
                figcaption class="note" { "The first " (human_size(TEXT_PREVIEW_BYTES)) " of " (human_size(entry.size)) "." }
            }
        }
    }
}
