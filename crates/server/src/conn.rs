//! The accept loop: one hyper HTTP/1 connection per accepted socket, with a header read timeout,
//! a cap on open connections, and a backoff when the process runs out of file descriptors.
//!
//! `axum::serve` has neither a header read timeout nor a connection cap, so a client that
//! opens connections and sends nothing (or half a request line) could hold sockets until the
//! process hit its file limit and stopped serving anyone (slowloris). Here every connection
//! holds a slot of a semaphore; a connection over the cap is answered 503 and closed at once,
//! and hyper closes a connection that has not sent a whole request head within
//! [`ServerConfig::header_read_timeout`] (also the most an idle keep-alive connection stays
//! open).
//!
//! With [`ServerConfig::tls`], each connection first runs the TLS handshake on its own task,
//! holding its slot, and is closed when the handshake has not finished within the same
//! header read timeout, so a client that connects and says nothing holds a slot no longer
//! than on plain HTTP. A TLS connection over the cap is closed without an answer: a plain-text
//! 503 would mean nothing to a TLS client.

use crate::ServerConfig;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The first wait after accept fails for want of resources (EMFILE and the like).
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// The longest wait between two accepts that failed for want of resources.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// The least time between two warnings about refused connections, so a flood does not flood
/// the log too.
const REFUSED_WARN_EVERY: Duration = Duration::from_secs(10);

/// What a connection over the cap gets before it is closed.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
content-length: 71\r\n\
connection: close\r\n\
\r\n\
{\"error\":\"the server has too many open connections; try again shortly\"}";

/// The address of the client a request came from, in every request's extensions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerAddr(pub(crate) std::net::SocketAddr);

/// Accepts connections until `stopping` is cancelled, serving each with `app` on a task of
/// `connections`, which the caller waits for (with a deadline) to drain.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    app: Router,
    config: &ServerConfig,
    stopping: CancellationToken,
    connections: &TaskTracker,
) {
    // One slot per open connection: the cap keeps the process below its file limit.
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    let tls = config.tls.as_ref().map(crate::ServerTls::acceptor);
    let handshake_timeout = config.header_read_timeout;
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut refused = Refused::default();
    loop {
        let accepted = tokio::select! {
            () = stopping.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = ACCEPT_BACKOFF_MIN;
                accepted
            }
            // The peer gave up before we accepted: nothing to do for it.
            Err(err) if is_connection_error(&err) => continue,
            Err(err) => {
                // Out of file descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM): retrying
                // at once would spin, so wait for connections to close.
                tracing::warn!(cause = %err, ?backoff, "could not accept a connection; waiting");
                tokio::select! {
                    () = stopping.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            if tls.is_none() {
                refuse(stream);
            }
            refused.count(config.max_connections);
            continue;
        };
        // Responses are written in pieces (headers, then body frames): with Nagle's algorithm
        // on, a piece that follows another small one waits for the client's delayed ACK, 40 ms
        // on Linux. That wait was two thirds of a one-file edit's latency (W4: 64 ms, 20 ms
        // when a request happened to dodge it).
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(cause = %err, "could not set TCP_NODELAY");
        }
        // Every request of the connection carries its peer's address (for the access log, the
        // refused-token warnings and the failed-login rate limit).
        let service = tower::ServiceExt::map_request(
            app.clone(),
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(PeerAddr(peer));
                request
            },
        );
        let http = http.clone();
        let tls = tls.clone();
        let stopping = stopping.clone();
        connections.spawn(async move {
            // Held until the connection is closed.
            let _slot = slot;
            let stream = match tls {
                None => Either::Left(stream),
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(handshake_timeout, acceptor.accept(stream));
                    let handshake = tokio::select! {
                        handshake = handshake => handshake,
                        () = stopping.cancelled() => return,
                    };
                    match handshake {
                        Ok(Ok(stream)) => Either::Right(stream),
                        // Scanners, clients that refuse the certificate, plain HTTP to the
                        // HTTPS port: the client has its own message.
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, cause = %err, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, timeout = ?handshake_timeout, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            let connection =
                http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            tokio::pin!(connection);
            let mut shutting_down = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(err) = result {
                            tracing::debug!(%peer, cause = %err, "connection closed with an error");
                        }
                        return;
                    }
                    // Finishes the request in progress, if any, then closes.
                    () = stopping.cancelled(), if !shutting_down => {
                        shutting_down = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        });
    }
}

/// Answers 503 without reading the request and closes. Best effort: the answer is one small
/// write to a fresh socket, which does not block; if it cannot be written at once, the client
/// just sees the connection closed.
fn refuse(stream: TcpStream) {
    let _ = stream.try_write(TOO_MANY_CONNECTIONS);
}

/// Counts connections refused over the cap, warning now and then.
#[derive(Default)]
struct Refused {
    since_warning: u64,
    last_warning: Option<Instant>,
}

impl Refused {
    fn count(&mut self, max_connections: usize) {
        self.since_warning += 1;
        if self
            .last_warning
            .is_some_and(|at| at.elapsed() < REFUSED_WARN_EVERY)
        {
            return;
        }
        tracing::warn!(
            max_connections,
            refused = self.since_warning,
            "too many open connections; refusing new ones (serve --max-connections)"
        );
        self.since_warning = 0;
        self.last_warning = Some(Instant::now());
    }
}

/// Errors of one connection that accept reports, after which the next accept may succeed.
fn is_connection_error(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_whole_http_answer() {
        let text = std::str::from_utf8(TOO_MANY_CONNECTIONS).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let body: syncstore_proto::ErrorBody = serde_json::from_str(body).unwrap();
        assert!(body.error.contains("too many open connections"));
    }
}
