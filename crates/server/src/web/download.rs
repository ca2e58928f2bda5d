//! Downloads: a file, streamed from its chunks (with `Range`, `ETag` and `If-None-Match`), or a
//! folder as a zip streamed as it is made (stored entries, zip64 where needed): neither is ever
//! held whole in memory.

use super::{encode, name_of, parse_path, parse_required_path, WebError, WebUser};
use crate::content;
use crate::content::Owner;
use crate::routes::AppState;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{AsyncWriteExt, StreamExt};
use serde::Deserialize;
use std::ops::Range;
use syncstore_proto::{EntryKind, RelPath, RemoteEntry};

/// What user content is served under: nothing it holds runs or loads anything.
const CONTENT_POLICY: &str =
    "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox";

#[derive(Deserialize)]
pub(crate) struct RawQuery {
    path: String,
    /// Any value: as an attachment, never inline.
    download: Option<String>,
}

pub(crate) async fn raw(
    State(state): State<AppState>,
    user: WebUser,
    headers: HeaderMap,
    Query(query): Query<RawQuery>,
) -> Result<Response, WebError> {
    let path = parse_required_path(&query.path)?;
    let owner = Owner::from(&user.principal);
    let entry = file_entry(&state, owner, &path).await?;
    serve_file(&state, owner, &entry, &headers, query.download.is_none()).await
}

/// The file at `path`.
pub(crate) async fn file_entry(
    state: &AppState,
    owner: Owner,
    path: &RelPath,
) -> Result<RemoteEntry, WebError> {
    match state.stores.meta.entry(owner.user_id, path).await? {
        Some(entry) if entry.kind == EntryKind::File => Ok(entry),
        Some(_) => Err(WebError::bad_request(format!(
            "{:?} is a folder: download it as a zip",
            path.as_str()
        ))),
        None => Err(WebError::not_found(format!(
            "there is no file {:?}",
            path.as_str()
        ))),
    }
}

/// Whether the browser may show a file of this type inline: raster images only (an SVG can
/// hold script).
pub(crate) fn inline_image(mime: &mime_guess::Mime) -> bool {
    mime.type_() == mime_guess::mime::IMAGE
        && matches!(
            mime.subtype().as_str(),
            "png" | "jpeg" | "gif" | "webp" | "avif" | "bmp"
        )
}

/// A file's bytes, all of them or the one range asked for.
pub(crate) async fn serve_file(
    state: &AppState,
    owner: Owner,
    entry: &RemoteEntry,
    headers: &HeaderMap,
    inline_if_safe: bool,
) -> Result<Response, WebError> {
    let etag = entry
        .hash
        .map(|hash| format!("\"{hash}\""))
        .unwrap_or_else(|| format!("\"rev-{}\"", entry.rev.0));
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    let mime = mime_guess::from_path(entry.path.as_str()).first_or_octet_stream();
    let inline = inline_if_safe && inline_image(&mime);
    let mut response_headers = HeaderMap::new();
    let insert = |headers: &mut HeaderMap, name: header::HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    insert(&mut response_headers, header::ETAG, &etag);
    insert(&mut response_headers, header::ACCEPT_RANGES, "bytes");
    insert(
        &mut response_headers,
        header::CACHE_CONTROL,
        "private, no-cache",
    );
    insert(
        &mut response_headers,
        header::X_CONTENT_TYPE_OPTIONS,
        "nosniff",
    );
    insert(
        &mut response_headers,
        header::CONTENT_SECURITY_POLICY,
        CONTENT_POLICY,
    );
    insert(
        &mut response_headers,
        header::LAST_MODIFIED,
        &http_date(entry.mtime_ms),
    );
    insert(
        &mut response_headers,
        header::CONTENT_TYPE,
        if inline {
            mime.essence_str()
        } else {
            "application/octet-stream"
        },
    );
    insert(
        &mut response_headers,
        header::CONTENT_DISPOSITION,
        &disposition(
            if inline { "inline" } else { "attachment" },
            name_of(&entry.path),
        ),
    );
    if if_none_match.is_some_and(|tags| {
        tags.split(',')
            .any(|tag| tag.trim() == etag || tag.trim() == "*")
    }) {
        return Ok((StatusCode::NOT_MODIFIED, response_headers).into_response());
    }
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(text) => match parse_range(text, entry.size) {
            Ok(range) => range,
            Err(()) => {
                insert(
                    &mut response_headers,
                    header::CONTENT_RANGE,
                    &format!("bytes */{}", entry.size),
                );
                return Ok((StatusCode::RANGE_NOT_SATISFIABLE, response_headers).into_response());
            }
        },
    };
    content::check_readable(state, owner, entry).await?;
    let (status, range) = match range {
        Some(range) => {
            insert(
                &mut response_headers,
                header::CONTENT_RANGE,
                &format!("bytes {}-{}/{}", range.start, range.end - 1, entry.size),
            );
            (StatusCode::PARTIAL_CONTENT, range)
        }
        None => (StatusCode::OK, 0..entry.size),
    };
    insert(
        &mut response_headers,
        header::CONTENT_LENGTH,
        &(range.end - range.start).to_string(),
    );
    let body = Body::from_stream(content::read_range(state, owner, entry, range));
    Ok((status, response_headers, body).into_response())
}

/// One range of `bytes=A-B`, `bytes=A-` or `bytes=-N`: `Ok(None)` to send the whole file (a
/// header of another unit, or several ranges, which a single answer may ignore), `Err` when it
/// asks for nothing inside the file (416).
fn parse_range(text: &str, size: u64) -> Result<Option<Range<u64>>, ()> {
    let Some(spec) = text.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Err(());
    };
    let (first, last) = (first.trim(), last.trim());
    let range = if first.is_empty() {
        let suffix: u64 = last.parse().map_err(|_| ())?;
        if suffix == 0 {
            return Err(());
        }
        size.saturating_sub(suffix)..size
    } else {
        let start: u64 = first.parse().map_err(|_| ())?;
        let end = if last.is_empty() {
            size
        } else {
            let last: u64 = last.parse().map_err(|_| ())?;
            if last < start {
                return Err(());
            }
            last.saturating_add(1).min(size)
        };
        start..end
    };
    if range.start >= size || range.is_empty() {
        return Err(());
    }
    Ok(Some(range))
}

/// `attachment; filename="ascii"; filename*=UTF-8''percent-encoded`.
fn disposition(kind: &str, name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{kind}; filename=\"{ascii}\"; filename*=UTF-8''{}",
        encode(name).replace('+', "%20")
    )
}

fn http_date(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

#[derive(Deserialize)]
pub(crate) struct ZipQuery {
    path: Option<String>,
}

pub(crate) async fn zip(
    State(state): State<AppState>,
    user: WebUser,
    Query(query): Query<ZipQuery>,
) -> Result<Response, WebError> {
    let dir = parse_path(query.path.as_deref())?;
    serve_zip(
        &state,
        Owner::from(&user.principal),
        dir.as_ref(),
        "syncstore",
    )
    .await
}

/// Bytes of zip buffered between the writer and the answer.
const ZIP_PIPE: usize = 256 * 1024;

/// Everything under `dir` (the whole namespace for `None`) as a zip named after it, streamed.
/// A file that cannot be read mid-way ends the answer with an error, so the browser reports a
/// failed download rather than keep a truncated zip.
pub(crate) async fn serve_zip(
    state: &AppState,
    owner: Owner,
    dir: Option<&RelPath>,
    root_name: &str,
) -> Result<Response, WebError> {
    super::check_folder(state, owner.user_id, dir).await?;
    let entries = state.stores.meta.entries_under(owner.user_id, dir).await?;
    let prefix_len = dir.map_or(0, |dir| dir.as_str().len() + 1);
    let name = dir.map_or(root_name, |dir| name_of(dir)).to_owned();
    let (writer, reader) = tokio::io::duplex(ZIP_PIPE);
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<String>();
    let state = state.clone();
    tokio::spawn(async move {
        let mut zip = async_zip::base::write::ZipFileWriter::with_tokio(writer);
        let result: Result<(), String> = async {
            for entry in &entries {
                let inner = &entry.path.as_str()[prefix_len..];
                let modified =
                    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(entry.mtime_ms)
                        .unwrap_or_default();
                let (file_name, compression) = match entry.kind {
                    EntryKind::Dir => (format!("{inner}/"), async_zip::Compression::Stored),
                    EntryKind::File => (inner.to_owned(), async_zip::Compression::Stored),
                };
                let builder = async_zip::ZipEntryBuilder::new(file_name.into(), compression)
                    .last_modification_date(async_zip::ZipDateTime::from_chrono(&modified))
                    .unix_permissions(match entry.kind {
                        EntryKind::Dir => 0o755,
                        EntryKind::File if entry.executable => 0o755,
                        EntryKind::File => 0o644,
                    });
                let mut entry_writer = zip
                    .write_entry_stream(builder)
                    .await
                    .map_err(|e| e.to_string())?;
                if entry.kind == EntryKind::File {
                    let mut bytes = content::read_range(&state, owner, entry, 0..entry.size);
                    while let Some(chunk) = bytes.next().await {
                        let chunk = chunk.map_err(|e| format!("{}: {e}", entry.path.as_str()))?;
                        entry_writer
                            .write_all(&chunk)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                }
                entry_writer.close().await.map_err(|e| e.to_string())?;
            }
            zip.close().await.map_err(|e| e.to_string())?;
            Ok(())
        }
        .await;
        if let Err(err) = result {
            tracing::warn!(cause = %err, "a zip download failed mid-way");
            let _ = failed_tx.send(err);
        }
    });
    let failed = futures::stream::once(async move {
        match failed_rx.await {
            Ok(err) => Err(std::io::Error::other(err)),
            // The writer finished: nothing more to send.
            Err(_) => Ok(bytes::Bytes::new()),
        }
    });
    let body = tokio_util::io::ReaderStream::new(reader).chain(failed);
    let headers = [
        (header::CONTENT_TYPE, "application/zip".to_owned()),
        (
            header::CONTENT_DISPOSITION,
            disposition("attachment", &format!("{name}.zip")),
        ),
        (header::CACHE_CONTROL, "private, no-store".to_owned()),
    ];
    Ok((headers, Body::from_stream(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_as_rfc_9110_says() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some(0..10)));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some(90..100)));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some(90..100)));
        assert_eq!(parse_range("bytes=-200", 100), Ok(Some(0..100)));
        assert_eq!(parse_range("bytes=50-1000", 100), Ok(Some(50..100)));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=9-3", 100), Err(()));
        assert_eq!(parse_range("bytes=x-3", 100), Err(()));
        assert_eq!(parse_range("bytes=-0", 100), Err(()));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=0-0", 0), Err(()));
    }

    #[test]
    fn dispositions_carry_any_name() {
        assert_eq!(
            disposition("attachment", "a b.txt"),
            "attachment; filename=\"a b.txt\"; filename*=UTF-8''a%20b.txt"
        );
        assert!(disposition("attachment", "é\".txt").starts_with("attachment; filename=\"__.txt\""));
    }
}
