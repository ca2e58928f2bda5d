//! The HTTP client of the syncstore API, with failover across several server URLs.
//!
//! Servers are tried in the order given. When the one in use stops answering (connection
//! refused, timeout, 5xx), the call moves on to the next at once; the client then stays on the
//! server that answered. While a server other than the first is in use, calls also ask the
//! servers before it for their health now and then (every [`FAILBACK_PROBE_INTERVAL`], in the
//! background), and the client moves back to the first of them that answers: the order given
//! is the order of preference.
//!
//! [`ApiClient::probe_health`] is the cheap check the daemon makes while it waits to retry.
//!
//! `https://` servers are verified as [`Trust`] says (see [`crate::tls`]); a refused
//! certificate is [`ApiError::Untrusted`], never retried as if the server were down.

use bytes::Bytes;
use futures::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::tls::{Trust, Untrusted};
use syncstore_proto::{
    ChangesResponse, ChunkHash, ChunkList, Cursor, DeltaBases, DeltaRequest, ErrorBody,
    HistoryQuery, HistoryResponse, JournalTag, LockInfo, LockRequest, LocksResponse, Op,
    OpsRequest, OpsResponse, RelPath, RestoreRequest, RestoreResponse, StreamPart,
    StreamPartAccepted, StreamsResponse, TrashQuery, TrashResponse, TreeResponse, UnlockRequest,
    UploadResponse, UsageResponse, WhoAmI,
};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The token was refused: retrying will not help.
    #[error("the server refused the token (401): {0}")]
    Unauthorized(String),
    /// The server's TLS certificate is not the pinned one, or not trusted: retrying will not
    /// help. The message names the server, what was wrong and what to do.
    #[error("{0}")]
    Untrusted(String),
    /// The server answered with an error status.
    #[error("server answered {status}: {message}")]
    Status { status: u16, message: String },
    /// No server could be reached.
    #[error("could not reach the server {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    /// The connection broke before the answer arrived (the request may or may not have been
    /// carried out).
    #[error("the connection to {url} broke before an answer arrived: {message}")]
    Interrupted { url: String, message: String },
    /// The answer was not what the API promises.
    #[error("unexpected answer from {url}: {message}")]
    Protocol { url: String, message: String },
}

impl ApiError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Unreachable { .. } | ApiError::Interrupted { .. } => true,
            ApiError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// How often, at most, a client on a server other than its first asks the earlier ones
/// whether they answer again.
pub const FAILBACK_PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// How long a health probe may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// An API client for one device token.
pub struct ApiClient {
    http: reqwest::Client,
    servers: Arc<[String]>,
    /// Index into `servers` of the server in use; shared by all calls so a failover sticks,
    /// and with the failback probe, which moves it back to an earlier server.
    current: Arc<AtomicUsize>,
    /// When the last failback probe started, so at most one starts per
    /// [`FAILBACK_PROBE_INTERVAL`].
    last_failback_probe: Mutex<Option<Instant>>,
    token: String,
    /// `--limit-upload`: every chunk upload waits for its slot.
    upload_limit: Option<Arc<crate::rate_limit::RateLimit>>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

enum Body {
    None,
    Json(Vec<u8>),
    Bytes(Bytes),
}

impl ApiClient {
    /// A client for `servers` (at least one) with `token`, trusting the system's CAs for
    /// `https://` servers.
    ///
    /// # Errors
    /// When no server is given or the HTTP client cannot be built.
    pub fn new(servers: Vec<String>, token: String) -> Result<ApiClient, crate::Error> {
        ApiClient::with_trust(servers, token, &Trust::default())
    }

    /// A client for `servers` (at least one) with `token`, trusting `https://` servers as
    /// `trust` says. Warns once when a server is plain `http://` off this machine.
    ///
    /// # Errors
    /// When no server is given, the CA file cannot be read or holds no certificate, or the
    /// HTTP client cannot be built.
    pub fn with_trust(
        servers: Vec<String>,
        token: String,
        trust: &Trust,
    ) -> Result<ApiClient, crate::Error> {
        if servers.is_empty() {
            return Err(crate::Error::Setup("no server URL given".to_owned()));
        }
        let servers: Arc<[String]> = servers
            .into_iter()
            .map(|s| s.trim_end_matches('/').to_owned())
            .collect();
        let plaintext: Vec<&str> = servers
            .iter()
            .map(String::as_str)
            .filter(|server| crate::tls::is_plaintext_remote(server))
            .collect();
        if !plaintext.is_empty() {
            tracing::warn!(
                servers = ?plaintext,
                "plain http:// to another machine: the token and the files travel unencrypted; \
                 serve with TLS (see README, \"TLS\") and use https://"
            );
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30));
        if let Some(pin) = trust.pin {
            let config = crate::tls::pinned_config(pin).map_err(|err| {
                crate::Error::Setup(format!(
                    "could not set up TLS for the pinned certificate: {err}"
                ))
            })?;
            builder = builder.use_preconfigured_tls(config);
        } else if let Some(ca) = &trust.ca {
            for cert in read_ca(ca)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|err| crate::Error::Setup(format!("could not start an HTTP client: {err}")))?;
        Ok(ApiClient {
            http,
            servers,
            current: Arc::new(AtomicUsize::new(0)),
            last_failback_probe: Mutex::new(None),
            token,
            upload_limit: None,
        })
    }

    /// Limits the average rate of chunk uploads to `bytes_per_s` (`None`: no limit).
    #[must_use]
    pub fn with_upload_limit(mut self, bytes_per_s: Option<u64>) -> ApiClient {
        self.upload_limit =
            bytes_per_s.map(|rate| Arc::new(crate::rate_limit::RateLimit::new(rate)));
        self
    }

    async fn pace_upload(&self, bytes: usize) {
        if let Some(limit) = &self.upload_limit {
            limit.take(bytes as u64).await;
        }
    }

    /// The server in use.
    pub fn current_server(&self) -> &str {
        &self.servers[self.current.load(Ordering::Relaxed) % self.servers.len()]
    }

    /// Every configured server.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// Asks each server's `GET /api/v1/health` in order and moves to the first that answers
    /// 200, which a server does when it can reach its database. Returns whether one did.
    pub async fn probe_health(&self) -> bool {
        for (idx, server) in self.servers.iter().enumerate() {
            if health_ok(&self.http, server).await {
                let before = self.current.swap(idx, Ordering::Relaxed);
                if before != idx {
                    tracing::info!(%server, "now using this server");
                }
                return true;
            }
        }
        false
    }

    /// When a server other than the first is in use, starts a background probe of the servers
    /// before it (at most once per [`FAILBACK_PROBE_INTERVAL`]), which moves the client back to
    /// the first of them that is healthy. Every call does this; an idle daemon calls it on a
    /// timer.
    pub fn probe_failback(&self) {
        let in_use = self.current.load(Ordering::Relaxed) % self.servers.len();
        if in_use == 0 {
            return;
        }
        {
            let mut last = self
                .last_failback_probe
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            // A tenth of slack, so a timer ticking at the interval never finds the last probe
            // a few milliseconds too recent and skips a whole period.
            if last.is_some_and(|started| started.elapsed() < FAILBACK_PROBE_INTERVAL * 9 / 10) {
                return;
            }
            *last = Some(Instant::now());
        }
        let http = self.http.clone();
        let servers = Arc::clone(&self.servers);
        let current = Arc::clone(&self.current);
        tokio::spawn(async move {
            for (idx, server) in servers.iter().enumerate().take(in_use) {
                if health_ok(&http, server).await {
                    // Unless a call moved on meanwhile: it knows better.
                    if current
                        .compare_exchange(in_use, idx, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                    {
                        tracing::info!(%server, "a preferred server answers again; moving back to it");
                    }
                    return;
                }
            }
        });
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Body,
        timeout: Duration,
    ) -> Result<reqwest::Response, ApiError> {
        self.probe_failback();
        let start = self.current.load(Ordering::Relaxed);
        let mut last_err = None;
        // A refused certificate is reported over any other server's failure: it does not go
        // away by waiting.
        let mut untrusted = None;
        for attempt in 0..self.servers.len() {
            let idx = (start + attempt) % self.servers.len();
            let url = format!("{}{}", self.servers[idx], path);
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(&self.token)
                .timeout(timeout);
            request = match &body {
                Body::None => request,
                Body::Json(bytes) => request
                    .header("content-type", "application/json")
                    .body(bytes.clone()),
                Body::Bytes(bytes) => request
                    .header("content-type", "application/octet-stream")
                    .body(bytes.clone()),
            };
            match request.send().await {
                Ok(response)
                    if response.status().is_server_error() && attempt + 1 < self.servers.len() =>
                {
                    tracing::warn!(%url, status = %response.status(), "server error; trying the next server");
                    last_err = Some(status_error(response).await);
                }
                Ok(response) => {
                    if idx != start % self.servers.len() {
                        tracing::info!(server = %self.servers[idx], "now using this server");
                        self.current.store(idx, Ordering::Relaxed);
                    }
                    return check(response).await;
                }
                Err(source) => match crate::tls::untrusted(&source) {
                    Some(why) => {
                        let message = untrusted_message(&self.servers[idx], why);
                        // The error says it all, once, where it is reported.
                        tracing::debug!(%url, "{message}");
                        untrusted = Some(ApiError::Untrusted(message));
                    }
                    None => {
                        tracing::warn!(%url, cause = %crate::error_chain(&source), "server not answering");
                        last_err = Some(ApiError::Unreachable { url, source });
                    }
                },
            }
        }
        Err(untrusted
            .or(last_err)
            .expect("at least one server was tried"))
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Body,
        timeout: Duration,
    ) -> Result<T, ApiError> {
        let response = self.send(method, path, body, timeout).await?;
        let url = response.url().to_string();
        let bytes = response
            .bytes()
            .await
            .map_err(|source| ApiError::Unreachable {
                url: url.clone(),
                source,
            })?;
        serde_json::from_slice(&bytes).map_err(|err| ApiError::Protocol {
            url,
            message: err.to_string(),
        })
    }

    fn encode<B: Serialize>(body: &B) -> Body {
        // Our request types always serialize.
        Body::Json(serde_json::to_vec(body).expect("request serializes"))
    }

    /// `GET /api/v1/whoami`.
    ///
    /// # Errors
    /// [`ApiError`].
    pub async fn whoami(&self) -> Result<WhoAmI, ApiError> {
        self.json(
            reqwest::Method::GET,
            "/api/v1/whoami",
            Body::None,
            Duration::from_secs(30),
        )
        .await
    }

    /// `GET /api/v1/tree`.
    ///
    /// # Errors
    /// [`ApiError`].
    pub async fn tree(&self) -> Result<TreeResponse, ApiError> {
        self.json(
            reqwest::Method::GET,
            "/api/v1/tree",
            Body::None,
            Duration::from_secs(300),
        )
        .await
    }

    /// `GET /api/v1/changes`, waiting up to `wait` for a change after `since`; with `known`,
    /// the server checks that its journal still holds that position with that tag (the answer
    /// is `diverged` when not).
    ///
    /// # Errors
    /// [`ApiError`].
    pub async fn changes(
        &self,
        since: Cursor,
        wait: Duration,
        known: Option<(Cursor, JournalTag)>,
    ) -> Result<ChangesResponse, ApiError> {
        self.changes_or_peek(since, wait, known, false).await
    }

    /// `GET /api/v1/changes?peek=true`: as [`ApiClient::changes`], but the answer only says
    /// whether there are changes (`peeked`; `changes` empty, unless the server is older and
    /// sends them anyway), for a long poll that wakes the pass that reads them.
    ///
    /// # Errors
    /// [`ApiError`].
    pub async fn peek_changes(
        &self,
        since: Cursor,
        wait: Duration,
    ) -> Result<ChangesResponse, ApiError> {
        self.changes_or_peek(since, wait, None, true).await
    }

    async fn changes_or_peek(
        &self,
        since: Cursor,
        wait: Duration,
        known: Option<(Cursor, JournalTag)>,
        peek: bool,
    ) -> Result<ChangesResponse, ApiError> {
        let mut path = format!(
            "/api/v1/changes?since={}&timeout_ms={}",
            since.0,
            wait.as_millis()
        );
        if peek {
            path.push_str("&peek=true");
        }
        if let Some((cursor, tag)) = known {
            path.push_str(&format!("&known={}&known_tag={tag}", cursor.0));
        }
        self.json(
            reqwest::Method::GET,
            &path,
            Body::None,
            wait + Duration::from_secs(30),
        )
        .await
    }

    /// `POST /api/v1/chunks/missing`: which of `hashes` the server lacks.
    ///
    /// # Errors
    /// [`ApiError`].
    pub async fn missing_chunks(&self, hashes: Vec<ChunkHash>) -> Result<Vec<ChunkHash>, ApiError> {
        let list: ChunkList = self
            .json(
                reqwest::Method::POST,
                "/api/v1/chunks/missing",
                Self::encode(&ChunkList { hashes }),
                Duration::from_secs(120),
            )
            .await?;
        Ok(list.hashes)
    }

    /// `POST /api/v1/chunks/upload` with a pack of frames.
    ///
    /// # Errors
    /// [`ApiError`].
    pub async fn upload_pack(&self, pack: Bytes) -> Result<UploadResponse, ApiError> {
        self.pace_upload(pack.len()).await;
        self.json(
            reqwest::Method::POST,
            "/api/v1/chunks/upload",
            Body::Bytes(pack),
            Duration::from_secs(600),
        )
        .await
    }

    /// `POST /api/v1/chunks/upload?durable=true`: chunks the server asked for again, durable
    /// under their names when the call returns.
    ///
    /// # Errors
    /// [`ApiError`].
    pub async fn upload_pack_durable(&self, pack: Bytes) -> Result<UploadResponse, ApiError> {
        self.pace_upload(pack.len()).await;
        self.json(
            reqwest::Method::POST,
            "/api/v1/chunks/upload?durable=true",
            Body::Bytes(pack),
            Duration::from_secs(600),
        )
        .await
    }

    /// `POST /api/v1/streams`: announces a run of a file's chunks the server holds now.
    ///
    /// # Errors
    /// [`ApiError`]; a 409 when the part does not continue its stream.
    pub async fn announce_stream(&self, part: StreamPart) -> Result<StreamPartAccepted, ApiError> {
        self.json(
            reqwest::Method::POST,
            "/api/v1/streams",
            Self::encode(&part),
            Duration::from_secs(60),
        )
        .await
    }

    /// `GET /api/v1/streams`: other devices' stream parts after `after`, waiting up to `wait`
    /// for one.
    ///
    /// # Errors
    /// [`ApiError`].
    pub async fn follow_streams(
        &self,
        after: u64,
        wait: Duration,
    ) -> Result<StreamsResponse, ApiError> {
        let path = format!(
            "/api/v1/streams?after={after}&timeout_ms={}",
            wait.as_millis()
        );
        self.json(
            reqwest::Method::GET,
            &path,
            Body::None,
            wait + Duration::from_secs(30),
        )
        .await
    }

    /// An answer's body as octets.
    async fn octets(&self, path: &str, body: Body) -> Result<Vec<u8>, ApiError> {
        let response = self
            .send(reqwest::Method::POST, path, body, Duration::from_secs(120))
            .await?;
        let url = response.url().to_string();
        let bytes = response
            .bytes()
            .await
            .map_err(|source| ApiError::Unreachable { url, source })?;
        Ok(bytes.to_vec())
    }

    /// `POST /api/v1/chunks/signature`: the signature of the old chunks `bases`.
    ///
    /// # Errors
    /// [`ApiError`].
    pub async fn chunk_signature(&self, bases: Vec<ChunkHash>) -> Result<Vec<u8>, ApiError> {
        self.octets(
            "/api/v1/chunks/signature",
            Self::encode(&DeltaBases { bases }),
        )
        .await
    }

    /// `POST /api/v1/chunks/patch`: chunk `target` as a delta against `bases`.
    ///
    /// # Errors
    /// [`ApiError`]; a 422 when the delta does not make `target` from the server's bases.
    pub async fn upload_delta(
        &self,
        target: ChunkHash,
        bases: Vec<ChunkHash>,
        delta: Bytes,
    ) -> Result<UploadResponse, ApiError> {
        self.pace_upload(delta.len()).await;
        let bases: Vec<String> = bases.iter().map(ToString::to_string).collect();
        let path = format!(
            "/api/v1/chunks/patch?target={target}&bases={}",
            bases.join(",")
        );
        self.json(
            reqwest::Method::POST,
            &path,
            Body::Bytes(delta),
            Duration::from_secs(120),
        )
        .await
    }

    /// `POST /api/v1/chunks/delta`: the delta that makes `target` from `bases`.
    ///
    /// # Errors
    /// [`ApiError`].
    pub async fn download_delta(
        &self,
        target: ChunkHash,
        bases: Vec<ChunkHash>,
    ) -> Result<Vec<u8>, ApiError> {
        self.octets(
            "/api/v1/chunks/delta",
            Self::encode(&DeltaRequest { target, bases }),
        )
        .await
    }

    /// `POST /api/v1/chunks/download`: a stream of frames for `hashes`, in order.
    ///
    /// # Errors
    /// [`ApiError`].
    pub async fn download_pack(
        &self,
        hashes: Vec<ChunkHash>,
    ) -> Result<impl Stream<Item = Result<Bytes, reqwest::Error>>, ApiError> {
        let response = self
            .send(
                reqwest::Method::POST,
                "/api/v1/chunks/download",
                Self::encode(&ChunkList { hashes }),
                Duration::from_secs(3600),
            )
            .await?;
        Ok(response.bytes_stream())
    }

    /// `POST /api/v1/ops`.
    ///
    /// # Errors
    /// [`ApiError`].
    pub async fn ops(
        &self,
        ops: Vec<Op>,
        known: Option<(Cursor, JournalTag)>,
    ) -> Result<OpsResponse, ApiError> {
        let (known, known_tag) = known.unzip();
        self.json(
            reqwest::Method::POST,
            "/api/v1/ops",
            Self::encode(&OpsRequest {
                ops,
                known,
                known_tag,
            }),
            Duration::from_secs(300),
        )
        .await
    }
}

impl ApiClient {
    /// `POST /api/v1/locks`.
    ///
    /// # Errors
    /// [`ApiError`]; status 423 when another device holds the path, 404 when it does not exist.
    pub async fn lock(&self, path: RelPath, ttl_secs: Option<u64>) -> Result<LockInfo, ApiError> {
        self.json(
            reqwest::Method::POST,
            "/api/v1/locks",
            Self::encode(&LockRequest { path, ttl_secs }),
            Duration::from_secs(30),
        )
        .await
    }

    /// `POST /api/v1/locks/release`.
    ///
    /// # Errors
    /// [`ApiError`]; status 423 when another device holds it and `force` is false, 404 when there is no lock.
    pub async fn unlock(&self, path: RelPath, force: bool) -> Result<LockInfo, ApiError> {
        self.json(
            reqwest::Method::POST,
            "/api/v1/locks/release",
            Self::encode(&UnlockRequest { path, force }),
            Duration::from_secs(30),
        )
        .await
    }

    /// `GET /api/v1/locks`.
    ///
    /// # Errors
    /// [`ApiError`].
    pub async fn locks(&self) -> Result<Vec<LockInfo>, ApiError> {
        let response: LocksResponse = self
            .json(
                reqwest::Method::GET,
                "/api/v1/locks",
                Body::None,
                Duration::from_secs(30),
            )
            .await?;
        Ok(response.locks)
    }

    /// `GET /api/v1/history?path=P`.
    ///
    /// # Errors
    /// [`ApiError`]; status 404 when no version of the path is kept.
    pub async fn history(&self, path: &RelPath) -> Result<HistoryResponse, ApiError> {
        let query = HistoryQuery { path: path.clone() };
        self.json(
            reqwest::Method::GET,
            &format!("/api/v1/history?{}", Self::query(&query)),
            Body::None,
            Duration::from_secs(60),
        )
        .await
    }

    /// `GET /api/v1/trash`.
    ///
    /// # Errors
    /// [`ApiError`].
    pub async fn trash(&self, query: &TrashQuery) -> Result<TrashResponse, ApiError> {
        self.json(
            reqwest::Method::GET,
            &format!("/api/v1/trash?{}", Self::query(query)),
            Body::None,
            Duration::from_secs(120),
        )
        .await
    }

    /// `POST /api/v1/restore`.
    ///
    /// # Errors
    /// [`ApiError`]; status 400 with the reason when the restore cannot be done.
    pub async fn restore(&self, request: &RestoreRequest) -> Result<RestoreResponse, ApiError> {
        self.json(
            reqwest::Method::POST,
            "/api/v1/restore",
            Self::encode(request),
            Duration::from_secs(600),
        )
        .await
    }

    /// `GET /api/v1/usage`.
    ///
    /// # Errors
    /// [`ApiError`].
    pub async fn usage(&self) -> Result<UsageResponse, ApiError> {
        self.json(
            reqwest::Method::GET,
            "/api/v1/usage",
            Body::None,
            Duration::from_secs(120),
        )
        .await
    }

    fn query<Q: Serialize>(query: &Q) -> String {
        // Our query types are flat structs of strings and numbers, which always encode.
        serde_urlencoded::to_string(query).expect("query encodes")
    }
}

/// The CA certificates of a PEM file, at least one.
fn read_ca(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, crate::Error> {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| {
            crate::Error::Setup(format!(
                "could not read the CA file {} (--ca): {err}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(crate::Error::Setup(format!(
            "the CA file {} (--ca) holds no certificate (expected PEM, \"-----BEGIN CERTIFICATE-----\")",
            path.display()
        )));
    }
    certs
        .iter()
        .map(|cert| {
            reqwest::Certificate::from_der(cert.as_ref()).map_err(|err| {
                crate::Error::Setup(format!(
                    "the CA file {} (--ca) holds a certificate that cannot be used: {err}",
                    path.display()
                ))
            })
        })
        .collect()
}

/// What [`ApiError::Untrusted`] says: the server, what was wrong, what to do.
fn untrusted_message(server: &str, why: Untrusted) -> String {
    match why {
        Untrusted::Pin(mismatch) => format!(
            "refusing {server}: it presented the certificate {seen}, not the pinned {expected}. \
             If the server's certificate was replaced on purpose (`syncstore tls fingerprint` \
             on the server prints it), pin the new one with `syncstore login DIR --pin NEW` or \
             by running the command again with `--pin NEW`; if not, something else answered \
             in the server's place",
            seen = mismatch.seen,
            expected = mismatch.expected,
        ),
        Untrusted::Certificate(reason) => format!(
            "refusing {server}: its TLS certificate is not trusted ({reason}). For a server \
             with a private CA give `--ca FILE`; for a self-signed one give `--pin FINGERPRINT` \
             (`syncstore tls fingerprint` on the server prints it)"
        ),
    }
}

/// Whether `server` answers its unauthenticated health endpoint with 200.
async fn health_ok(http: &reqwest::Client, server: &str) -> bool {
    let url = format!("{server}/api/v1/health");
    match http.get(&url).timeout(HEALTH_TIMEOUT).send().await {
        Ok(response) => response.status().is_success(),
        Err(err) => {
            tracing::debug!(%url, cause = %err, "health probe failed");
            false
        }
    }
}

async fn status_error(response: reqwest::Response) -> ApiError {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<ErrorBody>(&text)
        .map(|b| b.error)
        .unwrap_or(text);
    if status == 401 {
        ApiError::Unauthorized(message)
    } else {
        ApiError::Status { status, message }
    }
}

async fn check(response: reqwest::Response) -> Result<reqwest::Response, ApiError> {
    if response.status().is_success() {
        Ok(response)
    } else {
        Err(status_error(response).await)
    }
}

impl crate::seams::Server for Arc<ApiClient> {
    type Download = Box<dyn std::io::Read + Send>;

    fn describe(&self) -> String {
        self.current_server().to_owned()
    }

    async fn whoami(&self) -> Result<WhoAmI, ApiError> {
        ApiClient::whoami(self).await
    }

    async fn tree(&self) -> Result<TreeResponse, ApiError> {
        ApiClient::tree(self).await
    }

    async fn changes(
        &self,
        since: Cursor,
        known: Option<(Cursor, JournalTag)>,
    ) -> Result<ChangesResponse, ApiError> {
        ApiClient::changes(self, since, Duration::ZERO, known).await
    }

    async fn missing_chunks(&self, hashes: Vec<ChunkHash>) -> Result<Vec<ChunkHash>, ApiError> {
        ApiClient::missing_chunks(self, hashes).await
    }

    async fn upload_pack(&self, pack: Bytes, durable: bool) -> Result<(), ApiError> {
        if durable {
            ApiClient::upload_pack_durable(self, pack).await.map(|_| ())
        } else {
            ApiClient::upload_pack(self, pack).await.map(|_| ())
        }
    }

    async fn announce_stream(&self, part: StreamPart) -> Result<(), ApiError> {
        ApiClient::announce_stream(self, part).await.map(|_| ())
    }

    async fn chunk_signature(&self, bases: Vec<ChunkHash>) -> Result<Vec<u8>, ApiError> {
        ApiClient::chunk_signature(self, bases).await
    }

    async fn upload_delta(
        &self,
        target: ChunkHash,
        bases: Vec<ChunkHash>,
        delta: Bytes,
    ) -> Result<(), ApiError> {
        ApiClient::upload_delta(self, target, bases, delta)
            .await
            .map(|_| ())
    }

    async fn download_delta(
        &self,
        target: ChunkHash,
        bases: Vec<ChunkHash>,
    ) -> Result<Vec<u8>, ApiError> {
        ApiClient::download_delta(self, target, bases).await
    }

    async fn download_pack(&self, hashes: Vec<ChunkHash>) -> Result<Self::Download, ApiError> {
        use futures::TryStreamExt;
        let stream = ApiClient::download_pack(self, hashes).await?;
        let reader = tokio_util::io::StreamReader::new(stream.map_err(std::io::Error::other));
        // Read from blocking code (`block_in_place`), which may block on the runtime.
        Ok(Box::new(tokio_util::io::SyncIoBridge::new(Box::pin(
            reader,
        ))))
    }

    async fn ops(
        &self,
        ops: Vec<Op>,
        known: Option<(Cursor, JournalTag)>,
    ) -> Result<OpsResponse, ApiError> {
        ApiClient::ops(self, ops, known).await
    }
}
