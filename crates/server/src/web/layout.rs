//! The page frame, the static assets, and formatting shared by every page.

use super::{encode, WebUser};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use maud::{html, Markup, DOCTYPE};
use syncstore_proto::RelPath;

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");

pub(crate) async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        CSS,
    )
}

pub(crate) async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        JS,
    )
}

/// A whole page: the header with the navigation (for a signed-in user), then `body`.
pub(crate) fn page(title: &str, user: Option<&WebUser>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(user) = user {
                    meta name="csrf-token" content=(user.csrf);
                }
                title { (title) " · syncstore" }
                link rel="stylesheet" href="/static/app.css";
                script src="/static/app.js" defer {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    a class="brand" href="/" { "syncstore" }
                    @if let Some(user) = user {
                        nav aria-label="Main" {
                            a href="/files" { "Files" }
                            a href="/trash" { "Trash" }
                            a href="/shares" { "Shares" }
                            a href="/devices" { "Devices" }
                        }
                        form class="logout" method="post" action="/logout" {
                            (csrf_field(user))
                            span class="who" { (user.principal.user_name.as_str()) }
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main id="main" { (body) }
            }
        }
    }
}

/// The hidden field every form of a signed-in page carries.
pub(crate) fn csrf_field(user: &WebUser) -> Markup {
    html! { input type="hidden" name="csrf" value=(user.csrf); }
}

/// An error page (also for requests without a session: it has no navigation).
pub(crate) fn error_page(status: StatusCode, message: &str) -> Markup {
    let title = status.canonical_reason().unwrap_or("Error");
    page(
        title,
        None,
        html! {
            h1 { (status.as_u16()) " " (title) }
            p class="error" role="alert" { (message) }
            p { a href="/" { "Back to your files" } }
        },
    )
}

/// The links from the root to `dir`, each to its folder.
pub(crate) fn breadcrumbs(dir: Option<&RelPath>, link: &dyn Fn(Option<&str>) -> String) -> Markup {
    let mut parts: Vec<(String, String)> = Vec::new();
    if let Some(dir) = dir {
        let mut so_far = String::new();
        for component in dir.as_str().split('/') {
            if !so_far.is_empty() {
                so_far.push('/');
            }
            so_far.push_str(component);
            parts.push((component.to_owned(), so_far.clone()));
        }
    }
    html! {
        nav class="crumbs" aria-label="Breadcrumb" {
            ol {
                li { a href=(link(None)) { "Home" } }
                @for (name, path) in &parts {
                    li { a href=(link(Some(path))) { (name) } }
                }
            }
        }
    }
}

/// `/files?path=P`, the listing of a folder of the signed-in user.
pub(crate) fn folder_url(path: Option<&str>) -> String {
    match path {
        None => "/files".to_owned(),
        Some(path) => format!("/files?path={}", encode(path)),
    }
}

/// `/file?path=P`, a file's page.
pub(crate) fn file_url(path: &str) -> String {
    format!("/file?path={}", encode(path))
}

/// Bytes in the units people read: 0 B, 999 B, 1.0 KiB, 12.3 MiB.
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM` UTC, in a `<time>` element.
pub(crate) fn time(ms: i64) -> Markup {
    let at = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms).unwrap_or_default();
    html! {
        time datetime=(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)) {
            (at.format("%Y-%m-%d %H:%M").to_string())
        }
    }
}

/// The script-free `<noscript>` note pages with live updates carry.
pub(crate) fn live_note() -> Markup {
    html! { noscript { p class="note" { "Reload to see changes made elsewhere." } } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(5 * 1024 * 1024 + 512 * 1024), "5.5 MiB");
        assert_eq!(human_size(u64::MAX), "16384.0 PiB");
    }
}
