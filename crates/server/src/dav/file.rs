//! The open files of a WebDAV request: [`ReadFile`] streams any range of a file from its
//! chunks, [`WriteFile`] streams a PUT body into [`content::put_file`].
//!
//! **Invariant:** a PUT commits only on `flush` with every byte the request announced. The
//! body's bytes go through a bounded channel to a task that cuts and stores chunks while
//! they arrive and commits one `PutFile` when the stream ends. `dav-server` drops a file
//! without flushing it when the body fails (a dropped connection, the idle timeout), so the
//! stream the task reads ends with an error unless `flush` marked it finished: the task then
//! commits nothing, and the path keeps its old version.

use super::fs::{fs_error, Meta, SyncFs};
use crate::content;
use bytes::{Buf, Bytes};
use dav_server::fs::{DavFile, DavMetaData, FsError, FsFuture, FsResult};
use futures::{FutureExt, Stream, StreamExt};
use std::io::{self, SeekFrom};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use syncstore_proto::{Precondition, RelPath, RemoteEntry};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Body pieces waiting for the chunker; with its buffer, what one PUT holds in memory.
const WRITE_AHEAD: usize = 16;

type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// A file opened for reading, at a position.
pub(crate) struct ReadFile {
    fs: SyncFs,
    entry: RemoteEntry,
    pos: u64,
    /// The stream of bytes from `pos` on, once a read started there.
    /// (In a mutex only to be `Sync`, as `DavFile` must be; reached through `get_mut`.)
    reading: std::sync::Mutex<Option<ByteStream>>,
    /// Bytes read off the stream and not returned yet.
    leftover: Bytes,
}

impl std::fmt::Debug for ReadFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadFile")
            .field("path", &self.entry.path)
            .field("pos", &self.pos)
            .finish()
    }
}

impl ReadFile {
    pub(crate) fn new(fs: SyncFs, entry: RemoteEntry) -> ReadFile {
        ReadFile {
            fs,
            entry,
            pos: 0,
            reading: std::sync::Mutex::new(None),
            leftover: Bytes::new(),
        }
    }

    async fn read(&mut self, count: usize) -> FsResult<Bytes> {
        if self.leftover.is_empty() {
            let reading = self
                .reading
                .get_mut()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let stream = reading.get_or_insert_with(|| {
                Box::pin(content::read_range(
                    self.fs.state(),
                    self.fs.principal(),
                    &self.entry,
                    self.pos..self.entry.size,
                ))
            });
            match stream.next().await {
                None => return Ok(Bytes::new()),
                Some(Ok(bytes)) => self.leftover = bytes,
                Some(Err(err)) => {
                    tracing::error!(cause = %err, path = %self.entry.path, "a WebDAV read failed");
                    return Err(FsError::GeneralFailure);
                }
            }
        }
        let take = count.min(self.leftover.len());
        let bytes = self.leftover.split_to(take);
        self.pos += bytes.len() as u64;
        Ok(bytes)
    }
}

impl DavFile for ReadFile {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let meta: Box<dyn DavMetaData> = Box::new(Meta::of(&self.entry));
        Box::pin(std::future::ready(Ok(meta)))
    }

    fn write_buf(&mut self, _buf: Box<dyn Buf + Send>) -> FsFuture<'_, ()> {
        Box::pin(std::future::ready(Err(FsError::Forbidden)))
    }

    fn write_bytes(&mut self, _buf: Bytes) -> FsFuture<'_, ()> {
        Box::pin(std::future::ready(Err(FsError::Forbidden)))
    }

    fn read_bytes(&mut self, count: usize) -> FsFuture<'_, Bytes> {
        self.read(count).boxed()
    }

    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        let size = self.entry.size as i128;
        let target = match pos {
            SeekFrom::Start(offset) => offset as i128,
            SeekFrom::End(delta) => size + delta as i128,
            SeekFrom::Current(delta) => self.pos as i128 + delta as i128,
        };
        let result = if (0..=size).contains(&target) {
            let target = target as u64;
            if target != self.pos {
                self.pos = target;
                self.reading = std::sync::Mutex::new(None);
                self.leftover = Bytes::new();
            }
            Ok(target)
        } else {
            Err(FsError::GeneralFailure)
        };
        Box::pin(std::future::ready(result))
    }

    fn flush(&mut self) -> FsFuture<'_, ()> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// A file opened for writing: its body streams into one `PutFile`, committed on `flush`.
pub(crate) struct WriteFile {
    fs: SyncFs,
    path: RelPath,
    base: Precondition,
    executable: bool,
    /// The length the request announced, if it did: a body of another length commits nothing.
    expected: Option<u64>,
    /// Whether the whole file is replaced; without it (a PUT of a range), nothing is
    /// written: an update of part of a file is not offered.
    replace: bool,
    written: u64,
    /// Feeds the task, once the first bytes came.
    sender: Option<mpsc::Sender<io::Result<Bytes>>>,
    /// Set by `flush` before the sender is dropped: only then does the stream end cleanly.
    finished: Arc<AtomicBool>,
    task: Option<JoinHandle<Result<RemoteEntry, crate::error::ApiError>>>,
    /// The file as committed.
    committed: Option<RemoteEntry>,
}

impl std::fmt::Debug for WriteFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteFile")
            .field("path", &self.path)
            .field("written", &self.written)
            .finish()
    }
}

impl WriteFile {
    pub(crate) fn new(
        fs: SyncFs,
        path: RelPath,
        base: Precondition,
        executable: bool,
        expected: Option<u64>,
        replace: bool,
    ) -> WriteFile {
        WriteFile {
            fs,
            path,
            base,
            executable,
            expected,
            replace,
            written: 0,
            sender: None,
            finished: Arc::new(AtomicBool::new(false)),
            task: None,
            committed: None,
        }
    }

    /// Starts the task that stores and commits the body, on the first bytes (or on `flush`).
    fn start(&mut self) -> &mpsc::Sender<io::Result<Bytes>> {
        if self.sender.is_none() {
            let (sender, receiver) = mpsc::channel(WRITE_AHEAD);
            let body = Body {
                receiver,
                finished: Arc::clone(&self.finished),
                ended: false,
            };
            let (state, principal) = (self.fs.state().clone(), self.fs.principal().clone());
            let (path, base, executable) = (self.path.clone(), self.base, self.executable);
            self.task = Some(tokio::spawn(async move {
                let written =
                    content::put_file(&state, &principal, path.clone(), base, executable, body)
                        .await;
                if let Err(err) = &written {
                    tracing::warn!(
                        %path,
                        status = %err.status,
                        cause = %err.message,
                        "a WebDAV upload was not committed; the file keeps its old version"
                    );
                }
                written
            }));
            self.sender = Some(sender);
        }
        // Set just above when it was not.
        self.sender.as_ref().expect("the sender was just set")
    }

    async fn write(&mut self, bytes: Bytes) -> FsResult<()> {
        if !self.replace {
            return Err(FsError::NotImplemented);
        }
        if self.committed.is_some() {
            return Err(FsError::GeneralFailure);
        }
        self.written += bytes.len() as u64;
        if self.start().send(Ok(bytes)).await.is_err() {
            // The task stopped: its error is the answer.
            return Err(self
                .outcome()
                .await
                .err()
                .unwrap_or(FsError::GeneralFailure));
        }
        Ok(())
    }

    async fn finish(&mut self) -> FsResult<()> {
        if self.committed.is_some() {
            return Ok(());
        }
        if self
            .expected
            .is_some_and(|expected| expected != self.written)
        {
            // A body shorter or longer than announced: nothing is committed (dropping the
            // sender unfinished ends the stream with an error).
            self.sender = None;
            let _ = self.outcome().await;
            return Err(FsError::GeneralFailure);
        }
        self.start();
        self.finished.store(true, Ordering::SeqCst);
        self.sender = None;
        let entry = self.outcome().await?;
        self.committed = Some(entry);
        Ok(())
    }

    /// Waits for the task and turns its result into the filesystem's.
    async fn outcome(&mut self) -> FsResult<RemoteEntry> {
        let Some(task) = self.task.take() else {
            return Err(FsError::GeneralFailure);
        };
        let result = match task.await {
            Ok(Ok(entry)) => Ok(entry),
            Ok(Err(err)) => Err(fs_error(&err)),
            Err(_) => Err(FsError::GeneralFailure),
        };
        self.fs.changed().await;
        result
    }
}

impl Drop for WriteFile {
    fn drop(&mut self) {
        // Not flushed: the body was cut off. The sender goes without `finished`, so the
        // stream ends with an error and the task commits nothing.
        if let Some(sender) = self.sender.take() {
            let _ = sender.try_send(Err(io::Error::other(
                "the request body was cut off before its end",
            )));
        }
    }
}

impl DavFile for WriteFile {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let result = match &self.committed {
            Some(entry) => {
                let meta: Box<dyn DavMetaData> = Box::new(Meta::of(entry));
                Ok(meta)
            }
            None => Err(FsError::NotFound),
        };
        Box::pin(std::future::ready(result))
    }

    fn write_buf(&mut self, mut buf: Box<dyn Buf + Send>) -> FsFuture<'_, ()> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        self.write(bytes).boxed()
    }

    fn write_bytes(&mut self, buf: Bytes) -> FsFuture<'_, ()> {
        self.write(buf).boxed()
    }

    fn read_bytes(&mut self, _count: usize) -> FsFuture<'_, Bytes> {
        Box::pin(std::future::ready(Err(FsError::Forbidden)))
    }

    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        // Only where the body starts anyway: a partial PUT is not offered.
        let result = match pos {
            SeekFrom::Start(0) if self.replace && self.written == 0 => Ok(0),
            _ => Err(FsError::NotImplemented),
        };
        Box::pin(std::future::ready(result))
    }

    fn flush(&mut self) -> FsFuture<'_, ()> {
        self.finish().boxed()
    }
}

/// The body as the task reads it: what the request sent, then its end only if `finished`.
struct Body {
    receiver: mpsc::Receiver<io::Result<Bytes>>,
    finished: Arc<AtomicBool>,
    ended: bool,
}

impl Stream for Body {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.receiver.poll_recv(cx) {
            Poll::Ready(None) if !self.finished.load(Ordering::SeqCst) => {
                self.ended = true;
                Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the request body was cut off before its end",
                ))))
            }
            Poll::Ready(Some(Err(err))) => {
                self.ended = true;
                Poll::Ready(Some(Err(err)))
            }
            other => other,
        }
    }
}
