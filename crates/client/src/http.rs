//! The HTTP client of the syncstore API, with failover across several server URLs.
//!
//! Servers are tried in the order given. When the one in use stops answering (connection
//! refused, timeout, 5xx), the call moves on to the next at once; the client then stays on the
//! server that answered.

use bytes::Bytes;
use futures::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use syncstore_proto::{
    ChangesResponse, ChunkHash, ChunkList, Cursor, ErrorBody, JournalTag, LockInfo, LockRequest,
    LocksResponse, Op, OpsRequest, OpsResponse, RelPath, TreeResponse, UnlockRequest,
    UploadResponse, WhoAmI,
};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The token was refused: retrying will not help.
    #[error("the server refused the token (401): {0}")]
    Unauthorized(String),
    /// The server answered with an error status.
    #[error("server answered {status}: {message}")]
    Status { status: u16, message: String },
    /// No server could be reached.
    #[error("could not reach the server {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    /// The answer was not what the API promises.
    #[error("unexpected answer from {url}: {message}")]
    Protocol { url: String, message: String },
}

impl ApiError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Unreachable { .. } => true,
            ApiError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// An API client for one device token.
pub struct ApiClient {
    http: reqwest::Client,
    servers: Vec<String>,
    /// Index into `servers` of the server in use; shared by all calls so a failover sticks.
    current: AtomicUsize,
    token: String,
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
    /// A client for `servers` (at least one) with `token`.
    ///
    /// # Errors
    /// When no server is given or the HTTP client cannot be built.
    pub fn new(servers: Vec<String>, token: String) -> anyhow::Result<ApiClient> {
        anyhow::ensure!(!servers.is_empty(), "no server URL given");
        let servers = servers
            .into_iter()
            .map(|s| s.trim_end_matches('/').to_owned())
            .collect();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(ApiClient {
            http,
            servers,
            current: AtomicUsize::new(0),
            token,
        })
    }

    /// The server in use.
    pub fn current_server(&self) -> &str {
        &self.servers[self.current.load(Ordering::Relaxed) % self.servers.len()]
    }

    /// Every configured server.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Body,
        timeout: Duration,
    ) -> Result<reqwest::Response, ApiError> {
        let start = self.current.load(Ordering::Relaxed);
        let mut last_err = None;
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
                Err(source) => {
                    tracing::warn!(%url, cause = %source, "server not answering");
                    last_err = Some(ApiError::Unreachable { url, source });
                }
            }
        }
        Err(last_err.expect("at least one server was tried"))
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
        let mut path = format!(
            "/api/v1/changes?since={}&timeout_ms={}",
            since.0,
            wait.as_millis()
        );
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
        self.json(
            reqwest::Method::POST,
            "/api/v1/chunks/upload?durable=true",
            Body::Bytes(pack),
            Duration::from_secs(600),
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
