//! [`SyncFs`]: the user's namespace as a `dav-server` filesystem, for one request.
//!
//! Reads are point lookups of the store (`entry`, `entries_under` for a listing, `locks`),
//! cached for the rest of the request and forgotten after each of its writes: a request costs
//! what it touches, not the size of the namespace. Every write is one conditional op of the
//! request's device through [`crate::content`] (`MakeDir`, `Delete`, `Move`, `PutFile`), with
//! the revision the request read: a change made by another device in between is refused,
//! never overwritten.
//!
//! WebDAV wants a missing parent to be an error (409), where the sync API creates parents:
//! the writes here check that the parent is a directory first.

use super::file::{ReadFile, WriteFile};
use crate::content;
use crate::error::ApiError;
use crate::routes::{now_ms, AppState};
use axum::http::StatusCode;
use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavFileSystem, DavMetaData, DavProp, FsError, FsFuture, FsResult,
    FsStream, OpenOptions, ReadDirMeta,
};
use futures::FutureExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use syncstore_proto::{EntryKind, LockInfo, Op, Precondition, RelPath, RemoteEntry};
use syncstore_store::Principal;

/// The namespace of one principal, as its device sees it.
#[derive(Clone)]
pub(crate) struct SyncFs {
    inner: Arc<Inner>,
}

struct Inner {
    state: AppState,
    principal: Principal,
    /// What this request read so far; emptied after each of its writes.
    read: tokio::sync::Mutex<Read>,
}

/// The request's reads, by path.
#[derive(Default)]
struct Read {
    /// What is at a path (`None`: nothing).
    entries: HashMap<String, Option<RemoteEntry>>,
    /// The locks in force, once read.
    locks: Option<Vec<LockInfo>>,
}

impl std::fmt::Debug for SyncFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncFs")
            .field("user", &self.inner.principal.user_name)
            .field("device", &self.inner.principal.device_name)
            .finish()
    }
}

impl SyncFs {
    pub(crate) fn new(state: AppState, principal: Principal) -> SyncFs {
        SyncFs {
            inner: Arc::new(Inner {
                state,
                principal,
                read: tokio::sync::Mutex::new(Read::default()),
            }),
        }
    }

    pub(crate) fn state(&self) -> &AppState {
        &self.inner.state
    }

    pub(crate) fn principal(&self) -> &Principal {
        &self.inner.principal
    }

    fn store_error(err: syncstore_store::StoreError) -> FsError {
        fs_error(&ApiError::from(err))
    }

    /// What is at `path` now (as this request last read it).
    pub(crate) async fn entry(&self, path: &RelPath) -> FsResult<Option<RemoteEntry>> {
        let mut read = self.inner.read.lock().await;
        if let Some(known) = read.entries.get(path.as_str()) {
            return Ok(known.clone());
        }
        let entry = self
            .inner
            .state
            .stores
            .meta
            .entry(self.inner.principal.user_id, path)
            .await
            .map_err(Self::store_error)?;
        read.entries.insert(path.as_str().to_owned(), entry.clone());
        Ok(entry)
    }

    /// Whether `path` (`None`: the root) is a directory.
    pub(crate) async fn is_dir(&self, path: Option<&RelPath>) -> FsResult<bool> {
        Ok(match path {
            None => true,
            Some(path) => self
                .entry(path)
                .await?
                .is_some_and(|entry| entry.kind == EntryKind::Dir),
        })
    }

    /// The entries directly inside `dir` (`None`: the root), in path order.
    async fn children(&self, dir: Option<&RelPath>) -> FsResult<Vec<RemoteEntry>> {
        let under = self
            .inner
            .state
            .stores
            .meta
            .entries_under(self.inner.principal.user_id, dir)
            .await
            .map_err(Self::store_error)?;
        let skip = dir.map_or(0, |dir| dir.as_str().len() + 1);
        let children: Vec<RemoteEntry> = under
            .into_iter()
            .filter(|entry| !entry.path.as_str()[skip..].contains('/'))
            .collect();
        let mut read = self.inner.read.lock().await;
        for child in &children {
            read.entries
                .insert(child.path.as_str().to_owned(), Some(child.clone()));
        }
        Ok(children)
    }

    /// The user's locks in force now.
    pub(crate) async fn locks(&self) -> FsResult<Vec<LockInfo>> {
        let mut read = self.inner.read.lock().await;
        if let Some(locks) = &read.locks {
            return Ok(locks.clone());
        }
        let locks = self
            .inner
            .state
            .stores
            .meta
            .locks(self.inner.principal.user_id, now_ms())
            .await
            .map_err(Self::store_error)?;
        read.locks = Some(locks.clone());
        Ok(locks)
    }

    /// Forgets what this request read, after a write, so the next read sees it.
    pub(crate) async fn changed(&self) {
        *self.inner.read.lock().await = Read::default();
    }

    /// Applies one op as the request's device.
    pub(crate) async fn apply(&self, op: Op) -> FsResult<Vec<RemoteEntry>> {
        let result = content::apply_one(&self.inner.state, &self.inner.principal, op).await;
        self.changed().await;
        result.map_err(|err| fs_error(&err))
    }

    async fn lookup(&self, path: &DavPath) -> FsResult<Node> {
        let Some(path) = rel_path(path)? else {
            return Ok(Node::Root);
        };
        match self.entry(&path).await? {
            Some(entry) => Ok(Node::Entry(entry)),
            None => Err(FsError::NotFound),
        }
    }

    /// Checks that the parent of `path` is a directory (WebDAV does not create parents).
    async fn check_parent(&self, path: &RelPath) -> FsResult<()> {
        if self.is_dir(path.parent().as_ref()).await? {
            Ok(())
        } else {
            Err(FsError::NotFound)
        }
    }

    async fn open_file(&self, path: &DavPath, options: OpenOptions) -> FsResult<Box<dyn DavFile>> {
        let rel = rel_path(path)?.ok_or(FsError::Forbidden)?;
        let existing = self.entry(&rel).await?;
        if let Some(entry) = &existing {
            if entry.kind == EntryKind::Dir {
                return Err(FsError::Forbidden);
            }
        }
        if !options.write {
            let entry = existing.ok_or(FsError::NotFound)?;
            content::check_readable(&self.inner.state, &self.inner.principal, &entry)
                .await
                .map_err(|err| fs_error(&err))?;
            return Ok(Box::new(ReadFile::new(self.clone(), entry)));
        }
        if options.append {
            // An update of part of a file would need the old content spliced in: not offered.
            return Err(FsError::NotImplemented);
        }
        let base = match &existing {
            Some(_) if options.create_new => return Err(FsError::Exists),
            Some(entry) => Precondition::Rev(entry.rev),
            None if !options.create => return Err(FsError::NotFound),
            None => {
                self.check_parent(&rel).await?;
                Precondition::MustNotExist
            }
        };
        let executable = existing.as_ref().is_some_and(|entry| entry.executable);
        Ok(Box::new(WriteFile::new(
            self.clone(),
            rel,
            base,
            executable,
            options.size,
            options.truncate,
        )))
    }
}

/// What a path names.
enum Node {
    Root,
    Entry(RemoteEntry),
}

impl Node {
    fn meta(&self) -> Meta {
        match self {
            Node::Root => Meta::root(),
            Node::Entry(entry) => Meta::of(entry),
        }
    }
}

/// The path inside the namespace a WebDAV path names; `None` for the root.
///
/// # Errors
/// `Forbidden` for a path syncstore cannot hold (not UTF-8, `.syncstore`, too deep).
pub(crate) fn rel_path(path: &DavPath) -> FsResult<Option<RelPath>> {
    let text = std::str::from_utf8(path.as_bytes()).map_err(|_| FsError::Forbidden)?;
    let text = text.trim_matches('/');
    if text.is_empty() {
        return Ok(None);
    }
    RelPath::new(text).map(Some).map_err(|_| FsError::Forbidden)
}

/// A refusal of the sync API as the filesystem error `dav-server` answers with.
pub(crate) fn fs_error(err: &ApiError) -> FsError {
    match err.status {
        StatusCode::NOT_FOUND => FsError::NotFound,
        StatusCode::CONFLICT | StatusCode::PRECONDITION_FAILED => FsError::Exists,
        StatusCode::LOCKED | StatusCode::FORBIDDEN => FsError::Forbidden,
        StatusCode::INSUFFICIENT_STORAGE => FsError::InsufficientStorage,
        StatusCode::PAYLOAD_TOO_LARGE => FsError::TooLarge,
        StatusCode::BAD_REQUEST => FsError::Forbidden,
        _ => {
            tracing::warn!(status = %err.status, message = %err.message, "a WebDAV request failed");
            FsError::GeneralFailure
        }
    }
}

/// What PROPFIND shows of an entry.
#[derive(Clone, Debug)]
pub(crate) struct Meta {
    len: u64,
    modified_ms: i64,
    dir: bool,
    etag: Option<String>,
    executable: bool,
}

impl Meta {
    pub(crate) fn of(entry: &RemoteEntry) -> Meta {
        let dir = entry.kind == EntryKind::Dir;
        Meta {
            len: entry.size,
            modified_ms: entry.mtime_ms,
            dir,
            // The content hash for a file, so every server and every upload of the same bytes
            // agree; a directory's changes with its revision.
            etag: Some(match &entry.hash {
                Some(hash) if !dir => hash.to_string()[..32].to_owned(),
                _ => format!("r{}", entry.rev),
            }),
            executable: entry.executable,
        }
    }

    fn root() -> Meta {
        Meta {
            len: 0,
            modified_ms: now_ms(),
            dir: true,
            etag: None,
            executable: false,
        }
    }
}

impl DavMetaData for Meta {
    fn len(&self) -> u64 {
        self.len
    }

    fn modified(&self) -> FsResult<SystemTime> {
        let ms = u64::try_from(self.modified_ms).unwrap_or(0);
        Ok(UNIX_EPOCH + Duration::from_millis(ms))
    }

    fn is_dir(&self) -> bool {
        self.dir
    }

    fn etag(&self) -> Option<String> {
        self.etag.clone()
    }

    fn executable(&self) -> FsResult<bool> {
        Ok(self.executable)
    }
}

struct DirEntry {
    name: Vec<u8>,
    meta: Meta,
}

impl DavDirEntry for DirEntry {
    fn name(&self) -> Vec<u8> {
        self.name.clone()
    }

    fn metadata(&self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let meta: Box<dyn DavMetaData> = Box::new(self.meta.clone());
        Box::pin(std::future::ready(Ok(meta)))
    }
}

impl DavFileSystem for SyncFs {
    fn open<'a>(
        &'a self,
        path: &'a DavPath,
        options: OpenOptions,
    ) -> FsFuture<'a, Box<dyn DavFile>> {
        self.open_file(path, options).boxed()
    }

    fn read_dir<'a>(
        &'a self,
        path: &'a DavPath,
        _meta: ReadDirMeta,
    ) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        async move {
            let dir = rel_path(path)?;
            if !self.is_dir(dir.as_ref()).await? {
                return Err(FsError::NotFound);
            }
            let entries: Vec<FsResult<Box<dyn DavDirEntry>>> = self
                .children(dir.as_ref())
                .await?
                .iter()
                .map(|entry| {
                    let name = entry
                        .path
                        .components()
                        .last()
                        .unwrap_or_default()
                        .as_bytes()
                        .to_vec();
                    let entry: Box<dyn DavDirEntry> = Box::new(DirEntry {
                        name,
                        meta: Meta::of(entry),
                    });
                    Ok(entry)
                })
                .collect();
            let stream: FsStream<Box<dyn DavDirEntry>> = Box::pin(futures::stream::iter(entries));
            Ok(stream)
        }
        .boxed()
    }

    fn metadata<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, Box<dyn DavMetaData>> {
        async move {
            let meta: Box<dyn DavMetaData> = Box::new(self.lookup(path).await?.meta());
            Ok(meta)
        }
        .boxed()
    }

    fn create_dir<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            let rel = rel_path(path)?.ok_or(FsError::Exists)?;
            if self.entry(&rel).await?.is_some() {
                return Err(FsError::Exists);
            }
            self.check_parent(&rel).await?;
            self.apply(Op::MakeDir {
                path: rel,
                mtime_ms: now_ms(),
            })
            .await?;
            Ok(())
        }
        .boxed()
    }

    fn remove_dir<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        self.remove(path).boxed()
    }

    fn remove_file<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        self.remove(path).boxed()
    }

    fn rename<'a>(&'a self, from: &'a DavPath, to: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            let (Node::Entry(source), Some(to)) = (self.lookup(from).await?, rel_path(to)?) else {
                return Err(FsError::Forbidden);
            };
            if let Some(existing) = self.entry(&to).await? {
                // dav-server has deleted a destination it may overwrite; a file left there is
                // replaced, as rename(2) does.
                if existing.kind == EntryKind::Dir || source.kind == EntryKind::Dir {
                    return Err(FsError::Exists);
                }
                self.apply(Op::Delete {
                    path: to.clone(),
                    base: existing.rev,
                })
                .await?;
                self.forget_dead_props(existing.node_id).await;
            }
            self.check_parent(&to).await?;
            self.apply(Op::Move {
                from: source.path,
                to,
                base: source.rev,
            })
            .await?;
            Ok(())
        }
        .boxed()
    }

    fn copy<'a>(&'a self, from: &'a DavPath, to: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            let (Node::Entry(source), Some(to)) = (self.lookup(from).await?, rel_path(to)?) else {
                return Err(FsError::Forbidden);
            };
            let (EntryKind::File, Some(hash)) = (source.kind, source.hash) else {
                return Err(FsError::Forbidden);
            };
            let base = match self.entry(&to).await? {
                Some(existing) if existing.kind == EntryKind::Dir => return Err(FsError::Exists),
                Some(existing) => Precondition::Rev(existing.rev),
                None => Precondition::MustNotExist,
            };
            self.check_parent(&to).await?;
            // The same chunks: a copy stores no bytes.
            let copied = self
                .apply(Op::PutFile {
                    path: to.clone(),
                    base,
                    size: source.size,
                    mtime_ms: now_ms(),
                    hash,
                    chunks: source.chunks,
                    executable: source.executable,
                })
                .await?;
            if let Some(copy) = copied.iter().find(|entry| entry.path == to) {
                self.copy_dead_props(source.node_id, copy.node_id).await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn have_props<'a>(
        &'a self,
        path: &'a DavPath,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        // Every entry but the root, which is no node.
        let has_node = matches!(rel_path(path), Ok(Some(_)));
        Box::pin(std::future::ready(has_node))
    }

    fn patch_props<'a>(
        &'a self,
        path: &'a DavPath,
        patch: Vec<(bool, DavProp)>,
    ) -> FsFuture<'a, Vec<(StatusCode, DavProp)>> {
        self.patch_dead_props(path, patch).boxed()
    }

    fn get_props<'a>(&'a self, path: &'a DavPath, do_content: bool) -> FsFuture<'a, Vec<DavProp>> {
        self.get_dead_props(path, do_content).boxed()
    }

    fn get_prop<'a>(&'a self, path: &'a DavPath, prop: DavProp) -> FsFuture<'a, Vec<u8>> {
        self.get_dead_prop(path, prop).boxed()
    }

    fn get_quota(&self) -> FsFuture<'_, (u64, Option<u64>)> {
        async move {
            let usage = self
                .inner
                .state
                .stores
                .meta
                .usage(self.inner.principal.user_id)
                .await
                .map_err(|err| fs_error(&ApiError::from(err)))?;
            Ok((usage.current_bytes, usage.quota_bytes))
        }
        .boxed()
    }
}

impl SyncFs {
    async fn remove(&self, path: &DavPath) -> FsResult<()> {
        let Node::Entry(entry) = self.lookup(path).await? else {
            return Err(FsError::Forbidden);
        };
        // The deletion is journalled: the file stays in the trash, restorable.
        self.apply(Op::Delete {
            path: entry.path,
            base: entry.rev,
        })
        .await?;
        self.forget_dead_props(entry.node_id).await;
        Ok(())
    }
}
