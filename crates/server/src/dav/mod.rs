//! WebDAV (class 1 and 2) under `/dav/`: the `dav-server` crate speaks the protocol (XML,
//! headers, conditional requests, lock semantics); this module gives it a filesystem and a
//! lock system over the same stores, journal and locks as the sync API.
//!
//! Each request is authenticated first ([`auth`]: Basic with the user name and a device
//! token as the password, or Bearer), then served by a handler built for that request, whose
//! filesystem ([`fs::SyncFs`]) and lock system ([`locks::SyncLocks`]) act as the request's
//! device. So every write is an op of that device through [`crate::content`] (a new version in
//! the journal, the hub notified), and every WebDAV lock is a syncstore lock of that device.
//!
//! Start reading at [`serve`]; then `fs.rs` (paths, listing, ops), `file.rs` (streamed reads
//! and writes) and `locks.rs` (lock tokens derived from the stored lock).
//!
//! **Invariant:** nothing here keeps state between requests: a server may be one of many on
//! a shared store, and the next request may go to another one.

mod auth;
mod file;
mod fs;
mod locks;
mod props;

use crate::routes::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};

/// Where WebDAV is mounted.
pub(crate) const PREFIX: &str = "/dav";

/// Serves one WebDAV request as the device its credentials name.
pub(crate) async fn serve(State(state): State<AppState>, request: Request) -> Response {
    let principal = match auth::authenticate(&state, request.headers(), request.extensions()).await
    {
        Ok(principal) => principal,
        Err(refusal) => return refusal,
    };
    let fs = fs::SyncFs::new(state.clone(), principal.clone());
    let lock_system = locks::SyncLocks::new(fs.clone());
    let handler = dav_server::DavHandler::builder()
        .strip_prefix(PREFIX)
        .filesystem(Box::new(fs))
        .locksystem(Box::new(lock_system))
        .principal(principal.user_name.as_str())
        .autoindex(true)
        .build_handler();
    let response = handler.handle(request).await;
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, Body::new(body)).into_response()
}
