//! [`SyncLocks`]: WebDAV locks as syncstore locks.
//!
//! A WebDAV LOCK takes the store's lock on the path for the request's device (other devices
//! then get 423 on their ops; clients see it in `syncstore locks`), and every lock in the
//! store, whoever took it, shows in `lockdiscovery`. Its token is derived from the lock's
//! identity, `opaquelocktoken:` and a hash of the user's namespace, the path, the device, when
//! the lock was taken (a renewal keeps that time) and a share number, so every server of a
//! shared store hands out and accepts the same token without a table of tokens. What WebDAV
//! adds (the owner XML, shared or exclusive, the shares) is kept beside it ([`super::props`]).
//!
//! WebDAV's rules on top of the store's: a locked resource is changed only by a request that
//! submits a token of the lock, even from the device that holds it; a second LOCK on a locked
//! resource is refused, except a shared LOCK of a resource under a shared lock of the same
//! device, which becomes another share (its own token) of the same store's lock, released
//! when its last share is unlocked. A lock taken by another device (a client's `syncstore
//! lock`) can be seen but not used or released here. A lock on a collection always covers
//! everything in it (depth infinity). A LOCK on a path where nothing is creates an empty
//! file first (RFC 4918, 7.3).

use super::fs::{rel_path, SyncFs};
use super::props::{LockExtra, Share};
use crate::content;
use crate::routes::now_ms;
use dav_server::davpath::DavPath;
use dav_server::ls::{DavLock, DavLockSystem, LsFuture};
use futures::FutureExt;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::time::{Duration, UNIX_EPOCH};
use syncstore_proto::{EntryKind, LockInfo, NodeId, Precondition, RelPath};
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

    /// The WebDAV token of share `share_id` of a stored lock.
    fn token(&self, lock: &LockInfo, share_id: u32) -> String {
        let mut hasher = blake3::Hasher::new_derive_key("syncstore 2025 webdav lock token");
        for part in [
            self.fs.principal().namespace.to_string().as_str(),
            lock.path.as_str(),
            lock.device.as_str(),
            lock.since_ms.to_string().as_str(),
            share_id.to_string().as_str(),
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

    /// A stored lock with what WebDAV keeps of it.
    async fn held(&self, lock: LockInfo) -> Held {
        let node = match self.fs.entry(&lock.path).await {
            Ok(entry) => entry.map(|entry| (entry.node_id, entry.kind == EntryKind::Dir)),
            Err(_) => None,
        };
        let extra = match node {
            Some((node_id, _)) => self.fs.lock_extra(node_id, &lock).await,
            None => LockExtra::default(),
        };
        Held {
            is_dir: node.is_some_and(|(_, is_dir)| is_dir),
            node_id: node.map(|(node_id, _)| node_id),
            lock,
            extra,
        }
    }

    /// Share `share` of a held lock as `dav-server` shows it.
    fn dav_lock(&self, held: &Held, share: &Share) -> DavLock {
        let lock = &held.lock;
        let now = now_ms();
        DavLock {
            token: self.token(lock, share.id),
            path: Box::new(dav_path(&lock.path, held.is_dir)),
            principal: Some(lock.device.as_str().to_owned()),
            owner: share.owner.clone().map(Box::new),
            timeout_at: lock
                .expires_ms
                .map(|end| UNIX_EPOCH + Duration::from_millis(u64::try_from(end).unwrap_or(0))),
            timeout: lock
                .expires_ms
                .map(|end| Duration::from_millis(u64::try_from(end - now).unwrap_or(0))),
            shared: held.extra.shared,
            deep: held.is_dir,
        }
    }

    /// Every WebDAV lock of a held lock.
    fn dav_locks(&self, held: &Held) -> Vec<DavLock> {
        held.extra
            .shares
            .iter()
            .map(|share| self.dav_lock(held, share))
            .collect()
    }

    /// The first WebDAV lock of a stored one, to name it in a refusal.
    async fn first_dav_lock(&self, lock: LockInfo) -> DavLock {
        let held = self.held(lock).await;
        let first = held
            .extra
            .shares
            .first()
            .cloned()
            .unwrap_or(Share { id: 0, owner: None });
        self.dav_lock(&held, &first)
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
        self.fs.locks().await.unwrap_or_default()
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

    /// The held lock with a share of `token` that covers `path`, and that share's id.
    async fn by_token(&self, path: Option<&RelPath>, token: &str) -> Option<(Held, u32)> {
        for lock in self.relevant(path, false).await {
            let held = self.held(lock).await;
            let share = held
                .extra
                .shares
                .iter()
                .find(|share| self.token(&held.lock, share.id) == token)
                .map(|share| share.id);
            if let Some(share_id) = share {
                return Some((held, share_id));
            }
        }
        None
    }

    async fn take(
        &self,
        path: &DavPath,
        timeout: Option<Duration>,
        shared: bool,
        owner: Option<Element>,
    ) -> Result<DavLock, DavLock> {
        let Ok(Some(rel)) = rel_path(path) else {
            return Err(Self::refusal(path));
        };
        let ttl = timeout
            .map(|timeout| timeout.as_secs().max(1))
            .unwrap_or(DEFAULT_LOCK_SECS);
        let in_the_way = self.relevant(Some(&rel), true).await;
        if let Some(lock) = in_the_way.first() {
            let held = self.held(lock.clone()).await;
            let joins = in_the_way.len() == 1
                && shared
                && held.extra.shared
                && held.lock.path == rel
                && self.ours(&held.lock);
            if !joins {
                return Err(self.first_dav_lock(lock.clone()).await);
            }
            // Another shared lock on the same resource: a share of the same store's lock.
            return self.add_share(path, held, ttl, owner).await;
        }
        let existing = self.fs.entry(&rel).await.map_err(|_| Self::refusal(path))?;
        if existing.is_none() {
            let parent_is_dir = self.fs.is_dir(rel.parent().as_ref()).await;
            if !parent_is_dir.unwrap_or(false) {
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
        let lock = match self.take_store_lock(&rel, ttl).await {
            Some(LockOutcome::Done { lock, .. }) => lock,
            Some(LockOutcome::Locked(lock)) => return Err(self.first_dav_lock(lock).await),
            _ => return Err(Self::refusal(path)),
        };
        let extra = LockExtra {
            shared,
            shares: vec![Share { id: 0, owner }],
        };
        let mut held = self.held(lock).await;
        if let Some(node_id) = held.node_id {
            self.fs.keep_lock_extra(node_id, &held.lock, &extra).await;
        }
        held.extra = extra;
        Ok(self.dav_lock(&held, &held.extra.shares[0]))
    }

    async fn add_share(
        &self,
        path: &DavPath,
        mut held: Held,
        ttl: u64,
        owner: Option<Element>,
    ) -> Result<DavLock, DavLock> {
        let (Some(node_id), Some(LockOutcome::Done { lock, .. })) = (
            held.node_id,
            self.take_store_lock(&held.lock.path, ttl).await,
        ) else {
            return Err(Self::refusal(path));
        };
        let id = held
            .extra
            .shares
            .iter()
            .map(|share| share.id)
            .max()
            .unwrap_or(0)
            + 1;
        let share = Share { id, owner };
        held.extra.shares.push(share.clone());
        held.lock = lock;
        self.fs
            .keep_lock_extra(node_id, &held.lock, &held.extra)
            .await;
        Ok(self.dav_lock(&held, &share))
    }

    /// Takes or renews the store's lock on `path` for the request's device.
    async fn take_store_lock(&self, path: &RelPath, ttl: u64) -> Option<LockOutcome> {
        let path = path.clone();
        self.change(|state, principal| async move {
            state
                .stores
                .meta
                .take_lock(
                    principal.user_id,
                    &principal.device_name,
                    &path,
                    Some(ttl),
                    now_ms(),
                )
                .await
        })
        .await
    }

    /// Runs a lock change, wakes the user's long polls when it was made, and forgets the
    /// request's reads; `None` when the store failed.
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
        owner: Option<&Element>,
        timeout: Option<Duration>,
        shared: bool,
        _deep: bool,
    ) -> LsFuture<'_, Result<DavLock, DavLock>> {
        let (path, owner) = (path.clone(), owner.cloned());
        async move { self.take(&path, timeout, shared, owner).await }.boxed()
    }

    fn unlock(&self, path: &DavPath, token: &str) -> LsFuture<'_, Result<(), ()>> {
        let (path, token) = (path.clone(), token.to_owned());
        async move {
            let rel = rel_path(&path).map_err(|_| ())?;
            let (mut held, share_id) = self.by_token(rel.as_ref(), &token).await.ok_or(())?;
            if !self.ours(&held.lock) {
                return Err(());
            }
            if held.extra.shares.len() > 1 {
                // One share of a shared lock ends; the store's lock stays for the others.
                held.extra.shares.retain(|share| share.id != share_id);
                let node_id = held.node_id.ok_or(())?;
                self.fs
                    .keep_lock_extra(node_id, &held.lock, &held.extra)
                    .await;
                return Ok(());
            }
            if self.release(&held.lock).await {
                Ok(())
            } else {
                Err(())
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
            let (held, share_id) = self.by_token(rel.as_ref(), &token).await.ok_or(())?;
            if !self.ours(&held.lock) {
                return Err(());
            }
            let ttl = timeout
                .map(|timeout| timeout.as_secs().max(1))
                .unwrap_or(DEFAULT_LOCK_SECS);
            // A renewal keeps the lock's start, and with it every token.
            let Some(LockOutcome::Done { lock, .. }) =
                self.take_store_lock(&held.lock.path, ttl).await
            else {
                return Err(());
            };
            let held = self.held(lock).await;
            let share = held
                .extra
                .shares
                .iter()
                .find(|share| share.id == share_id)
                .ok_or(())?;
            Ok(self.dav_lock(&held, share))
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
                let held = self.held(lock).await;
                let submitted_one = held
                    .extra
                    .shares
                    .iter()
                    .any(|share| submitted.contains(&self.token(&held.lock, share.id)));
                if !self.ours(&held.lock) || !submitted_one {
                    let first = held
                        .extra
                        .shares
                        .first()
                        .cloned()
                        .unwrap_or(Share { id: 0, owner: None });
                    return Err(self.dav_lock(&held, &first));
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
                let held = self.held(lock).await;
                found.extend(self.dav_locks(&held));
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

/// A stored lock with what WebDAV keeps of it.
struct Held {
    lock: LockInfo,
    /// The locked node (`None`: it went meanwhile).
    node_id: Option<NodeId>,
    is_dir: bool,
    extra: LockExtra,
}
