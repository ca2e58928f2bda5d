//! The S3 backend itself (the `s3` feature); see [the module](super).

use super::{S3Endpoint, S3Location};
use crate::{ChunkLens, ChunkStore, ScrubReport, Service, StoreError, StoredChunk};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, PutMode, PutOptions, PutPayload, RetryConfig};
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use syncstore_proto::{ChunkHash, NamespaceId, MAX_CHUNK_LEN};

/// How many PUT requests one `put_batch` call has in flight.
const PUT_CONCURRENCY: usize = 8;

/// How many HEAD requests one `missing` call has in flight.
const MISSING_CONCURRENCY: usize = 16;

/// How long connecting to the endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A [`ChunkStore`] in an S3 bucket.
#[derive(Clone)]
pub struct S3ChunkStore {
    store: Arc<AmazonS3>,
    location: S3Location,
}

impl fmt::Debug for S3ChunkStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3ChunkStore")
            .field("location", &self.location.to_string())
            .finish_non_exhaustive()
    }
}

impl S3ChunkStore {
    /// Opens the bucket of `location`, creating it when it does not exist and the credentials
    /// allow.
    ///
    /// # Errors
    /// [`StoreError::ObjectStore`] when the endpoint cannot be reached, the bucket is missing
    /// and cannot be created, or the configuration is invalid.
    pub async fn open(
        location: &S3Location,
        endpoint: &S3Endpoint,
    ) -> Result<S3ChunkStore, StoreError> {
        let region = &endpoint.region;
        let endpoint = &endpoint.url;
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&location.bucket)
            .with_region(region)
            .with_client_options(ClientOptions::new().with_connect_timeout(CONNECT_TIMEOUT))
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(15),
                ..RetryConfig::default()
            });
        if let Some(endpoint) = &endpoint {
            builder = builder.with_endpoint(endpoint);
            if is_loopback_http(endpoint) {
                builder = builder.with_allow_http(true);
            }
        }
        let store = builder
            .build()
            .map_err(|err| StoreError::ObjectStore(Box::new(err)))?;
        ensure_bucket(endpoint.as_deref(), region, &location.bucket).await?;
        Ok(S3ChunkStore {
            store: Arc::new(store),
            location: location.clone(),
        })
    }

    fn chunk_path(&self, owner: NamespaceId, hash: &ChunkHash) -> ObjectPath {
        let hex = hash.to_hex();
        self.key(&format!("chunks/{owner}/{}/{hex}", &hex[..2]))
    }

    fn key(&self, key: &str) -> ObjectPath {
        if self.location.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.location.prefix))
        }
    }

    /// Copies a bad object aside and deletes it; returns where it went.
    async fn quarantine(
        &self,
        owner: NamespaceId,
        hash: &ChunkHash,
        path: &ObjectPath,
    ) -> Result<ObjectPath, StoreError> {
        let suffix = hex::encode(rand::random::<[u8; 8]>());
        let aside = self.key(&format!("quarantine/{owner}/{hash}.{suffix}"));
        self.store
            .copy(path, &aside)
            .await
            .map_err(|err| object_error(path, err))?;
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(err) => return Err(object_error(path, err)),
        }
        tracing::error!(%owner, %hash, aside = %aside, "chunk failed verification; moved aside");
        Ok(aside)
    }

    /// Reads and verifies one object; a bad one is moved aside and reported.
    async fn verified(
        &self,
        owner: NamespaceId,
        hash: &ChunkHash,
        path: &ObjectPath,
    ) -> Result<Bytes, StoreError> {
        let result = match self.store.get(path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StoreError::NotFound(format!("chunk {hash}")));
            }
            Err(err) => return Err(object_error(path, err)),
        };
        let bytes = result
            .bytes()
            .await
            .map_err(|err| object_error(path, err))?;
        // Catches a tampered or damaged object before a client writes it into a folder.
        let hashed = bytes.clone();
        let actual =
            tokio::task::spawn_blocking(move || ChunkHash(*blake3::hash(&hashed).as_bytes()))
                .await
                .map_err(|err| StoreError::Worker(err.to_string()))?;
        if actual != *hash {
            let aside = self.quarantine(owner, hash, path).await?;
            return Err(StoreError::Corrupt(format!(
                "object {path} hashes to {actual}; moved to {aside}"
            )));
        }
        Ok(bytes)
    }
}

#[async_trait]
impl ChunkStore for S3ChunkStore {
    #[tracing::instrument(skip(self, bytes), fields(len = bytes.len()))]
    async fn put(
        &self,
        owner: NamespaceId,
        hash: &ChunkHash,
        bytes: Bytes,
    ) -> Result<(), StoreError> {
        if bytes.len() > MAX_CHUNK_LEN as usize {
            return Err(StoreError::ChunkTooLarge { len: bytes.len() });
        }
        let claimed = *hash;
        let hashed = bytes.clone();
        let actual =
            tokio::task::spawn_blocking(move || ChunkHash(*blake3::hash(&hashed).as_bytes()))
                .await
                .map_err(|err| StoreError::Worker(err.to_string()))?;
        if actual != claimed {
            return Err(StoreError::HashMismatch { claimed, actual });
        }
        let path = self.chunk_path(owner, hash);
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&path, PutPayload::from(bytes.clone()), options)
            .await
        {
            Ok(_) => Ok(()),
            // The same name holds the same bytes: already stored is success.
            Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            // A store without conditional PUTs: a plain PUT of the same bytes is just as safe.
            Err(object_store::Error::NotImplemented) => self
                .store
                .put(&path, PutPayload::from(bytes))
                .await
                .map(|_| ())
                .map_err(|err| object_error(&path, err)),
            Err(err) => Err(object_error(&path, err)),
        }
    }

    async fn put_batch(
        &self,
        owner: NamespaceId,
        chunks: Vec<(ChunkHash, Bytes)>,
    ) -> Result<(), StoreError> {
        // Each PUT is durable when acknowledged; sending several at once hides the round trips.
        futures::stream::iter(chunks)
            .map(|(hash, bytes)| async move { self.put(owner, &hash, bytes).await })
            .buffer_unordered(PUT_CONCURRENCY)
            .try_collect::<()>()
            .await
    }

    async fn missing(
        &self,
        owner: NamespaceId,
        hashes: &[ChunkHash],
    ) -> Result<Vec<ChunkHash>, StoreError> {
        let lens = self.lens(owner, hashes).await?;
        Ok(lens
            .into_iter()
            .filter_map(|(hash, len)| len.is_none().then_some(hash))
            .collect())
    }

    async fn get(&self, owner: NamespaceId, hash: &ChunkHash) -> Result<Bytes, StoreError> {
        let path = self.chunk_path(owner, hash);
        match self.store.get(&path).await {
            Ok(result) => result.bytes().await.map_err(|err| object_error(&path, err)),
            Err(object_store::Error::NotFound { .. }) => {
                Err(StoreError::NotFound(format!("chunk {hash}")))
            }
            Err(err) => Err(object_error(&path, err)),
        }
    }

    async fn get_verified(
        &self,
        owner: NamespaceId,
        hash: &ChunkHash,
    ) -> Result<Bytes, StoreError> {
        let path = self.chunk_path(owner, hash);
        self.verified(owner, hash, &path).await
    }

    async fn durable_chunk_lens(
        &self,
        owner: NamespaceId,
        hashes: &[ChunkHash],
    ) -> Result<ChunkLens, StoreError> {
        // A PUT is durable when acknowledged: only the lengths are left to learn.
        Ok(self
            .lens(owner, hashes)
            .await?
            .into_iter()
            .filter_map(|(hash, len)| len.map(|len| (hash, len)))
            .collect())
    }

    async fn list(&self, owner: NamespaceId) -> Result<Vec<StoredChunk>, StoreError> {
        let prefix = self.key(&format!("chunks/{owner}"));
        let mut listing = self.store.list(Some(&prefix));
        let mut listed = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|err| object_error(&prefix, err))?;
            let Some(hash) = meta
                .location
                .filename()
                .and_then(|name| ChunkHash::from_hex(name).ok())
            else {
                continue;
            };
            listed.push(StoredChunk {
                hash,
                len: meta.size,
                stored_ms: meta.last_modified.timestamp_millis(),
            });
        }
        Ok(listed)
    }

    async fn delete(&self, owner: NamespaceId, chunks: &[StoredChunk]) -> Result<u64, StoreError> {
        let mut freed = 0;
        for chunk in chunks {
            let path = self.chunk_path(owner, &chunk.hash);
            match self.store.delete(&path).await {
                Ok(()) => freed += chunk.len,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(err) => return Err(object_error(&path, err)),
            }
        }
        Ok(freed)
    }

    async fn holds_content(&self) -> Result<bool, StoreError> {
        let prefix = self.key("chunks");
        let first = self.store.list(Some(&prefix)).next().await;
        match first {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(err)) => Err(object_error(&prefix, err)),
        }
    }

    async fn scrub(
        &self,
        progress: &(dyn for<'r> Fn(&'r ScrubReport) + Send + Sync),
    ) -> Result<ScrubReport, StoreError> {
        let prefix = self.key("chunks");
        let mut listing = self.store.list(Some(&prefix));
        let mut report = ScrubReport::default();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|err| object_error(&prefix, err))?;
            // `.../chunks/<namespace>/<xx>/<hash>`
            let parts: Vec<&str> = meta.location.as_ref().rsplitn(4, '/').collect();
            let (Some(hash), Some(owner)) = (
                parts
                    .first()
                    .and_then(|text| ChunkHash::from_hex(text).ok()),
                parts
                    .get(2)
                    .and_then(|text| NamespaceId::from_hex(text).ok()),
            ) else {
                tracing::warn!(key = %meta.location, "not a chunk; skipped");
                continue;
            };
            let read = self.verified(owner, &hash, &meta.location).await;
            if report.record(owner, hash, read)? {
                progress(&report);
            }
        }
        Ok(report)
    }
}

impl S3ChunkStore {
    /// Each distinct hash among `hashes`, in the order given, with its stored length (`None`:
    /// not stored).
    async fn lens(
        &self,
        owner: NamespaceId,
        hashes: &[ChunkHash],
    ) -> Result<Vec<(ChunkHash, Option<u32>)>, StoreError> {
        let mut seen = HashSet::new();
        let unique: Vec<ChunkHash> = hashes
            .iter()
            .filter(|hash| seen.insert(**hash))
            .copied()
            .collect();
        futures::stream::iter(unique)
            .map(|hash| async move {
                let path = self.chunk_path(owner, &hash);
                match self.store.head(&path).await {
                    Ok(meta) => Ok((hash, Some(u32::try_from(meta.size).unwrap_or(u32::MAX)))),
                    Err(object_store::Error::NotFound { .. }) => Ok((hash, None)),
                    Err(err) => Err(object_error(&path, err)),
                }
            })
            // `buffered` keeps the order of the input.
            .buffered(MISSING_CONCURRENCY)
            .try_collect()
            .await
    }
}

fn object_error(path: &ObjectPath, err: object_store::Error) -> StoreError {
    let unreachable = is_unreachable(&err);
    let source = format!("{path}: {err}").into();
    if unreachable {
        StoreError::Unavailable {
            service: Service::ObjectStore,
            source,
        }
    } else {
        StoreError::ObjectStore(source)
    }
}

/// Whether `err` says the object store could not be reached (connecting failed or timed out,
/// after the client's own retries), rather than that it refused the request.
fn is_unreachable(err: &object_store::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = cause {
        if let Some(http) = current.downcast_ref::<reqwest::Error>() {
            if http.is_connect() || http.is_timeout() {
                return true;
            }
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind;
            if matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::NotConnected
                    | ErrorKind::TimedOut
            ) {
                return true;
            }
        }
        cause = current.source();
    }
    false
}

/// Whether `endpoint` is plain HTTP to this machine, where TLS is not needed.
fn is_loopback_http(endpoint: &str) -> bool {
    let Some(rest) = endpoint.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', ':']).next().unwrap_or("");
    host == "localhost" || host.starts_with("127.") || rest.starts_with("[::1]")
}

/// Checks that the bucket exists and creates it when it does not, with a request signed with
/// the credentials in the environment. Without credentials there (an instance role, say), it
/// leaves the check to the first request.
async fn ensure_bucket(
    endpoint: Option<&str>,
    region: &str,
    bucket_name: &str,
) -> Result<(), StoreError> {
    use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
    let Some(credentials) = Credentials::from_env() else {
        tracing::info!(
            bucket = bucket_name,
            "no AWS credentials in the environment; not checking the bucket"
        );
        return Ok(());
    };
    let (endpoint_url, style) = match endpoint {
        Some(endpoint) => (endpoint.to_owned(), UrlStyle::Path),
        None => (
            format!("https://s3.{region}.amazonaws.com"),
            UrlStyle::VirtualHost,
        ),
    };
    let parsed = endpoint_url.parse().map_err(|err| {
        StoreError::ObjectStore(format!("invalid S3 endpoint {endpoint_url:?}: {err}").into())
    })?;
    let bucket =
        Bucket::new(parsed, style, bucket_name.to_owned(), region.to_owned()).map_err(|err| {
            StoreError::ObjectStore(format!("invalid S3 endpoint {endpoint_url:?}: {err}").into())
        })?;
    let http = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|err| StoreError::ObjectStore(Box::new(err)))?;
    let unreachable = |err: reqwest::Error| {
        StoreError::ObjectStore(
            format!("could not reach the S3 endpoint {endpoint_url}: {err}").into(),
        )
    };
    let expires = Duration::from_secs(60);
    let head_url = bucket.head_bucket(Some(&credentials)).sign(expires);
    let status = http
        .head(head_url)
        .send()
        .await
        .map_err(unreachable)?
        .status();
    if status.is_success() {
        return Ok(());
    }
    if status != reqwest::StatusCode::NOT_FOUND {
        // 403: the bucket may exist with credentials that may not look at it; the first real
        // request will tell.
        tracing::warn!(bucket = bucket_name, %status, "could not check the bucket");
        return Ok(());
    }
    let create_url = bucket.create_bucket(&credentials).sign(expires);
    let body = if region == "us-east-1" {
        String::new()
    } else {
        format!(
            "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <LocationConstraint>{region}</LocationConstraint></CreateBucketConfiguration>"
        )
    };
    let response = http
        .put(create_url)
        .header(reqwest::header::CONTENT_LENGTH, body.len())
        .body(body)
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    if status.is_success() || status == reqwest::StatusCode::CONFLICT {
        // 409: another server created it first.
        tracing::info!(bucket = bucket_name, "created the bucket");
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    Err(StoreError::ObjectStore(
        format!("bucket {bucket_name} does not exist and could not be created ({status}): {text}")
            .into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_http_is_allowed() {
        assert!(is_loopback_http("http://127.0.0.1:9000"));
        assert!(is_loopback_http("http://localhost:9000/"));
        assert!(is_loopback_http("http://[::1]:9000"));
        assert!(!is_loopback_http("http://minio.internal:9000"));
        assert!(!is_loopback_http("https://127.0.0.1"));
    }
}
