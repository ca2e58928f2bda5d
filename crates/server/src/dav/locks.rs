//! [`SyncLocks`]: WebDAV locks as syncstore locks.
//!
//! A WebDAV LOCK takes the store's lock on the path for the request's device (other devices
//! then get 423 on their ops; clients see it in `syncstore locks`), and every lock in the
//! store, whoever took it, shows in `lockdiscovery`. Nothing is stored beside the lock: its
//! token is derived from the lock's identity, `opaquelocktoken:` and a hash of the user's
//! namespace, the path, the device and when the lock was taken (a renewal keeps that time),
//! so every server of a shared store hands out and accepts the same token.
//!
//! WebDAV's rules on top of the store's: a locked resource is changed only by a request that
//! submits the lock's token, even from the device that holds it; a second LOCK on a locked
//! resource is refused; a lock taken by another device (a client's `syncstore lock`) can be
//! seen but not used or released here. A shared lock is granted as an exclusive one (a
//! syncstore lock has one holder), and a lock on a collection always covers everything in it.
//! A LOCK on a path where nothing is creates an empty file first (RFC 4918, 7.3).

use super::fs::{rel_path, SyncFs};
use crate::content;
use crate::routes::now_ms;
use dav_server::davpath::DavPath;
use dav_server::ls::{DavLock, DavLockSystem, LsFuture};
use futures::FutureExt;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::time::{Duration, UNIX_EPOCH};
use syncstore_proto::{LockInfo, Precondition, RelPath};
use syncstore_store::LockOutcome;
use xmltree::Element;

/// How long a lock lasts when the LOCK asks for no timeout (or an infinite one).
const DEFAULT_LOCK_SECS: u64 = 3600;

/// The characters a path component keeps unencoded in a URL.
const PATH_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The locks of one request's user, acting as its device.
#[derive(Clone, Debug)]
pub(crate) struct SyncLocks {
    fs: SyncFs,
}

impl SyncLocks {
    pub(crate) fn new(fs: SyncFs) -> SyncLocks {
        SyncLocks { fs }
    }

    fn ours(&self, lock: &LockInfo) -> bool {
        lock.device == self.fs.principal().device_name
    }

    /// The WebDAV token of a stored lock.
    fn token(&self, lock: &LockInfo) -> String {
        let mut hasher = blake3::Hasher::new_derive_key("syncstore 2025 webdav lock token");
        for part in [
            self.fs.principal().namespace.to_string().as_str(),
            lock.path.as_str(),
            lock.device.as_str(),
            lock.since_ms.to_string().as_str(),
        ] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        let hex = hasher.finalize().to_hex();
        format!(
            "opaquelocktoken:{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }

    /// The stored lock as `dav-server` shows it.
    async fn dav_lock(&self, lock: &LockInfo) -> DavLock {
        let is_dir = match self.fs.snapshot().await {
            Ok(snapshot) => snapshot.is_dir(Some(&lock.path)),
            Err(_) => false,
        };
        let now = now_ms();
        let timeout = lock
            .expires_ms
            .map(|end| Duration::from_millis(u64::try_from(end - now).unwrap_or(0)));
        DavLock {
            token: self.token(lock),
            path: Box::new(dav_path(&lock.path, is_dir)),
            principal: Some(lock.device.as_str().to_owned()),
            owner: None,
            timeout_at: lock
                .expires_ms
                .map(|end| UNIX_EPOCH + Duration::from_millis(u64::try_from(end).unwrap_or(0))),
            timeout,
            shared: false,
            deep: is_dir,
        }
    }

    /// A stand-in for a refusal that names no stored lock.
    fn refusal(path: &DavPath) -> DavLock {
        DavLock {
            token: String::new(),
            path: Box::new(path.clone()),
            principal: None,
            owner: None,
            timeout_at: None,
            timeout: None,
            shared: false,
            deep: false,
        }
    }

    async fn locks(&self) -> Vec<LockInfo> {
        match self.fs.snapshot().await {
            Ok(snapshot) => snapshot.locks.clone(),
            Err(_) => Vec::new(),
        }
    }

    /// The locks that apply to `path`: those covering it, and with `deep` those beneath it.
    async fn relevant(&self, path: Option<&RelPath>, deep: bool) -> Vec<LockInfo> {
        self.locks()
            .await
            .into_iter()
            .filter(|lock| match path {
                None => deep,
                Some(path) => lock.covers(path) || deep && lock.path.is_inside(path),
            })
            .collect()
    }

    /// The lock of `token` that covers `path`.
    async fn by_token(&self, path: Option<&RelPath>, token: &str) -> Option<LockInfo> {
        self.relevant(path, false)
            .await
            .into_iter()
            .find(|lock| self.token(lock) == token)
    }

    async fn take(&self, path: &DavPath, timeout: Option<Duration>) -> Result<DavLock, DavLock> {
        let Ok(Some(rel)) = rel_path(path) else {
            return Err(Self::refusal(path));
        };
        if let Some(in_the_way) = self.relevant(Some(&rel), true).await.first() {
            return Err(self.dav_lock(in_the_way).await);
        }
        let snapshot = self.fs.snapshot().await.map_err(|_| Self::refusal(path))?;
        if snapshot.entry(&rel).is_none() {
            if !snapshot.is_dir(rel.parent().as_ref()) {
                return Err(Self::refusal(path));
            }
            // A lock on an unmapped URL makes an empty file there.
            let empty = futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>();
            let made = content::put_file(
                self.fs.state(),
                self.fs.principal(),
                rel.clone(),
                Precondition::MustNotExist,
                false,
                empty,
            )
            .await;
            self.fs.changed().await;
            if made.is_err() {
                return Err(Self::refusal(path));
            }
        }
        let ttl = timeout
            .map(|timeout| timeout.as_secs().max(1))
            .unwrap_or(DEFAULT_LOCK_SECS);
        let outcome = self.change(|state, principal| async move {
            state
                .stores
                .meta
                .take_lock(
                    principal.user_id,
                    &principal.device_name,
                    &rel,
                    Some(ttl),
                    now_ms(),
                )
                .await
        });
        match outcome.await {
            Some(LockOutcome::Done { lock, .. }) => Ok(self.dav_lock(&lock).await),
            Some(LockOutcome::Locked(lock)) => Err(self.dav_lock(&lock).await),
            _ => Err(Self::refusal(path)),
        }
    }

    /// Runs a lock change, wakes the user's long polls when it was made, and forgets the
    /// snapshot; `None` when the store failed.
    async fn change<F, Fut>(&self, run: F) -> Option<LockOutcome>
    where
        F: FnOnce(crate::routes::AppState, syncstore_store::Principal) -> Fut,
        Fut: std::future::Future<Output = Result<LockOutcome, syncstore_store::StoreError>>,
    {
        let outcome = run(self.fs.state().clone(), self.fs.principal().clone()).await;
        self.fs.changed().await;
        match outcome {
            Ok(outcome) => {
                if let LockOutcome::Done { cursor, .. } = &outcome {
                    self.fs
                        .state()
                        .hub
                        .notify(self.fs.principal().user_id, *cursor);
                }
                Some(outcome)
            }
            Err(err) => {
                tracing::warn!(cause = %err, "a WebDAV lock change failed");
                None
            }
        }
    }

    async fn release(&self, lock: &LockInfo) -> bool {
        let path = lock.path.clone();
        let outcome = self.change(|state, principal| async move {
            state
                .stores
                .meta
                .release_lock(
                    principal.user_id,
                    &principal.device_name,
                    &path,
                    false,
                    now_ms(),
                )
                .await
        });
        matches!(outcome.await, Some(LockOutcome::Done { .. }))
    }
}

/// The WebDAV path (under [`super::PREFIX`]) of a path in the namespace.
fn dav_path(path: &RelPath, is_dir: bool) -> DavPath {
    let mut url = String::from(super::PREFIX);
    for component in path.components() {
        url.push('/');
        url.extend(utf8_percent_encode(component, PATH_SET));
    }
    if is_dir {
        url.push('/');
    }
    // Made of encoded components of a valid path under the prefix, so both steps hold.
    let mut dav_path = DavPath::new(&url).expect("an encoded path is a valid URL path");
    dav_path
        .set_prefix(super::PREFIX)
        .expect("the path starts with the prefix");
    dav_path
}

impl DavLockSystem for SyncLocks {
    fn lock(
        &self,
        path: &DavPath,
        _principal: Option<&str>,
        _owner: Option<&Element>,
        timeout: Option<Duration>,
        _shared: bool,
        _deep: bool,
    ) -> LsFuture<'_, Result<DavLock, DavLock>> {
        let path = path.clone();
        async move { self.take(&path, timeout).await }.boxed()
    }

    fn unlock(&self, path: &DavPath, token: &str) -> LsFuture<'_, Result<(), ()>> {
        let (path, token) = (path.clone(), token.to_owned());
        async move {
            let rel = rel_path(&path).map_err(|_| ())?;
            match self.by_token(rel.as_ref(), &token).await {
                Some(lock) if self.ours(&lock) && self.release(&lock).await => Ok(()),
                _ => Err(()),
            }
        }
        .boxed()
    }

    fn refresh(
        &self,
        path: &DavPath,
        token: &str,
        timeout: Option<Duration>,
    ) -> LsFuture<'_, Result<DavLock, ()>> {
        let (path, token) = (path.clone(), token.to_owned());
        async move {
            let rel = rel_path(&path).map_err(|_| ())?;
            let lock = self.by_token(rel.as_ref(), &token).await.ok_or(())?;
            if !self.ours(&lock) {
                return Err(());
            }
            let ttl = timeout
                .map(|timeout| timeout.as_secs().max(1))
                .unwrap_or(DEFAULT_LOCK_SECS);
            let lock_path = lock.path.clone();
            let outcome = self.change(|state, principal| async move {
                state
                    .stores
                    .meta
                    .take_lock(
                        principal.user_id,
                        &principal.device_name,
                        &lock_path,
                        Some(ttl),
                        now_ms(),
                    )
                    .await
            });
            match outcome.await {
                Some(LockOutcome::Done { lock, .. }) => Ok(self.dav_lock(&lock).await),
                _ => Err(()),
            }
        }
        .boxed()
    }

    fn check(
        &self,
        path: &DavPath,
        _principal: Option<&str>,
        _ignore_principal: bool,
        deep: bool,
        submitted_tokens: &[String],
    ) -> LsFuture<'_, Result<(), DavLock>> {
        let path = path.clone();
        let submitted: Vec<String> = submitted_tokens.to_vec();
        async move {
            let rel = rel_path(&path).map_err(|_| Self::refusal(&path))?;
            for lock in self.relevant(rel.as_ref(), deep).await {
                if !self.ours(&lock) || !submitted.contains(&self.token(&lock)) {
                    return Err(self.dav_lock(&lock).await);
                }
            }
            Ok(())
        }
        .boxed()
    }

    fn discover(&self, path: &DavPath) -> LsFuture<'_, Vec<DavLock>> {
        let path = path.clone();
        async move {
            let Ok(rel) = rel_path(&path) else {
                return Vec::new();
            };
            let mut found = Vec::new();
            for lock in self.relevant(rel.as_ref(), false).await {
                found.push(self.dav_lock(&lock).await);
            }
            found
        }
        .boxed()
    }

    fn delete(&self, path: &DavPath) -> LsFuture<'_, Result<(), ()>> {
        let path = path.clone();
        async move {
            let rel = rel_path(&path).map_err(|_| ())?;
            for lock in self.relevant(rel.as_ref(), true).await {
                let beneath = match &rel {
                    None => true,
                    Some(rel) => lock.path == *rel || lock.path.is_inside(rel),
                };
                if beneath && self.ours(&lock) {
                    self.release(&lock).await;
                }
            }
            Ok(())
        }
        .boxed()
    }
}
