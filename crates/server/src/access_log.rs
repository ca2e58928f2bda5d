//! The access log: one INFO line per request, written when its answer has been sent (or the
//! client went away), with method, path, status, user, device, peer, the body bytes read and
//! sent, and milliseconds. Never a token, a header or a query string (which may name files).

use crate::conn::PeerAddr;
use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

/// Who a request was from, once [`crate::auth::Auth`] knows: shared between the extractor and
/// the log line.
#[derive(Clone, Default)]
pub(crate) struct Requester(Arc<Mutex<Option<(String, String)>>>);

impl Requester {
    /// Records the request's user and device.
    pub(crate) fn set(&self, user: &str, device: &str) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some((user.to_owned(), device.to_owned()));
        }
    }

    fn get(&self) -> Option<(String, String)> {
        self.0.lock().ok().and_then(|slot| slot.clone())
    }
}

/// The middleware: hands the request a [`Requester`] and wraps the answer's body so the line
/// is written once the body is done.
pub(crate) async fn access_log(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let requester = Requester::default();
    request.extensions_mut().insert(requester.clone());
    // The bytes of the body the handler read (a streamed upload has no Content-Length).
    let bytes_in = Arc::new(AtomicU64::new(0));
    let (parts, body) = request.into_parts();
    let request = Request::from_parts(
        parts,
        Body::new(Counted {
            body,
            bytes: Arc::clone(&bytes_in),
            _line: None,
        }),
    );
    let mut line = Line {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
        peer: request
            .extensions()
            .get::<PeerAddr>()
            .map(|peer| peer.0.to_string()),
        bytes_in,
        requester,
        started,
        status: 0,
        bytes_out: Arc::new(AtomicU64::new(0)),
    };
    // A request whose client went away before the answer is logged with status 0.
    let response = next.run(request).await;
    let (parts, body) = response.into_parts();
    line.status = parts.status.as_u16();
    let bytes = Arc::clone(&line.bytes_out);
    Response::from_parts(
        parts,
        Body::new(Counted {
            body,
            bytes,
            _line: Some(line),
        }),
    )
}

/// What one line says; written when dropped.
struct Line {
    method: String,
    path: String,
    peer: Option<String>,
    bytes_in: Arc<AtomicU64>,
    requester: Requester,
    started: Instant,
    status: u16,
    bytes_out: Arc<AtomicU64>,
}

impl Drop for Line {
    fn drop(&mut self) {
        let (user, device) = self.requester.get().unzip();
        tracing::info!(
            target: "syncstore_server::access",
            method = %self.method,
            path = %self.path,
            status = self.status,
            user = %user.as_deref().unwrap_or("-"),
            device = %device.as_deref().unwrap_or("-"),
            peer = %self.peer.as_deref().unwrap_or("-"),
            bytes_in = self.bytes_in.load(Ordering::Relaxed),
            bytes_out = self.bytes_out.load(Ordering::Relaxed),
            ms = self.started.elapsed().as_millis() as u64,
            "request"
        );
    }
}

/// A body that counts the bytes read of it into `bytes`; the answer's also carries the
/// [`Line`], written when the body is done or dropped.
struct Counted {
    body: Body,
    bytes: Arc<AtomicU64>,
    _line: Option<Line>,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
