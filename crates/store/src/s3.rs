//! [`S3ChunkStore`]: a [`ChunkStore`](crate::ChunkStore) in an S3-compatible bucket (AWS S3, MinIO, Garage, Ceph
//! RGW, moto), shared by any number of server processes.
//!
//! Layout: `PREFIX/chunks/<namespace id>/<first 2 hex digits>/<64 hex digits>`, like the local
//! disk store, so chunks are per user namespace. An object found not to match its name is
//! copied to `PREFIX/quarantine/<namespace id>/<hash>.<random>` and deleted, so it is reported
//! missing and an upload of the right bytes replaces it. A chunk is verified against its hash before it is sent, and
//! sent with `If-None-Match: *`, so an object either holds exactly the bytes of its name or
//! does not exist; a PUT acknowledged by S3 is durable before any metadata commit can name it.
//!
//! Endpoint, region and credentials come from the standard AWS variables (`AWS_ENDPOINT_URL`,
//! `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, ...), read by `object_store`.
//! `object_store` cannot create buckets, so [`S3ChunkStore::open`] checks for the bucket and
//! creates it with one request signed by `rusty-s3`.
//!
//! The backend is built with the `s3` feature (on by default); [`S3Location`] and
//! [`S3Endpoint`] always are, so that a build without it still parses and names the bucket it
//! refuses.

use std::fmt;

#[cfg(feature = "s3")]
mod backend;

#[cfg(feature = "s3")]
pub use backend::S3ChunkStore;

/// Where chunks go: `s3://BUCKET[/PREFIX]`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct S3Location {
    pub bucket: String,
    /// Without leading or trailing slashes; may be empty.
    pub prefix: String,
}

impl S3Location {
    /// Parses `s3://BUCKET[/PREFIX]`; `None` for anything else.
    pub fn parse(url: &str) -> Option<S3Location> {
        let rest = url.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return None;
        }
        Some(S3Location {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
        })
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// Which S3 service to talk to; credentials always come from the environment.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct S3Endpoint {
    /// `AWS_ENDPOINT_URL`: an S3-compatible service; `None` for AWS itself.
    pub url: Option<String>,
    /// `AWS_REGION` (or `AWS_DEFAULT_REGION`), `us-east-1` when unset.
    pub region: String,
}

impl S3Endpoint {
    /// The endpoint the standard AWS environment variables name.
    pub fn from_env() -> S3Endpoint {
        S3Endpoint {
            url: std::env::var("AWS_ENDPOINT_URL")
                .or_else(|_| std::env::var("AWS_ENDPOINT"))
                .ok()
                .filter(|url| !url.is_empty()),
            region: std::env::var("AWS_REGION")
                .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|_| "us-east-1".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        let parsed = |url: &str| S3Location::parse(url).map(|l| (l.bucket, l.prefix));
        assert_eq!(parsed("s3://b"), Some(("b".into(), "".into())));
        assert_eq!(parsed("s3://b/"), Some(("b".into(), "".into())));
        assert_eq!(parsed("s3://b/p/q/"), Some(("b".into(), "p/q".into())));
        assert_eq!(parsed("s3://"), None);
        assert_eq!(parsed("/srv/chunks"), None);
    }
}
