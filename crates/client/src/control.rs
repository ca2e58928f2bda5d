//! The daemon's control socket, `.syncstore/daemon.sock`: `status`, `pause`, `resume` and
//! `sync --allow-mass-delete` ask the running daemon through it (line-delimited JSON, the types
//! of [`syncstore_proto::daemon`]).
//!
//! The daemon side ([`listen`]) binds the socket while it holds the folder lock (so a stale
//! socket left by a killed daemon is removed by the next one, never by a reader), makes it
//! 0600 (inside the 0700 `.syncstore/`, so there is no moment when others could connect) and
//! removes it when the daemon stops. Every request is bounded: at most
//! [`MAX_REQUEST_LINE`] bytes, [`MAX_CONNECTIONS`] connections, [`IDLE_TIMEOUT`] of silence;
//! a malformed request gets an error reply, never a panic.
//!
//! A folder whose filesystem cannot hold a Unix socket (exFAT and FAT, through FUSE or not), or
//! whose path is too long for one, gets it in a private per-user directory instead
//! ([`fallback_socket_path`]: `$XDG_RUNTIME_DIR/syncstore/`, else `/tmp/syncstore-UID/`, 0700 and
//! owned by the user, or not used), named after the folder's path; readers try both.
//!
//! The reading side ([`ask`]) only connects: it creates and removes nothing, so `status` beside
//! a daemon (or beside a stale socket) disturbs nothing.

use crate::http::ApiClient;
use crate::progress::Progress;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use syncstore_proto::daemon::{
    DaemonReply, DaemonRequest, DaemonState, DAEMON_SOCKET, MAX_REQUEST_LINE,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};

/// Connections served at once; more wait.
pub const MAX_CONNECTIONS: usize = 8;
/// A connection that sends nothing for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest reply [`ask`] reads (a status lists at most 10 000 paths per kind).
const MAX_REPLY: u64 = 64 * 1024 * 1024;
/// How long [`ask`] waits for the daemon's answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// The socket of the folder at `root`.
pub fn socket_path(root: &Path) -> PathBuf {
    crate::config::meta_dir(root).join(DAEMON_SOCKET)
}

/// The listening socket of a running daemon; dropping it stops serving and removes the file.
pub struct ControlSocket {
    path: PathBuf,
    _task: tokio_util::task::AbortOnDropHandle<()>,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What the socket's requests change in the daemon loop, which waits on these channels.
pub struct Controls {
    /// Pause and resume ([`Progress::set_paused`] tells the engine too).
    pub paused: watch::Sender<bool>,
    /// Allowances of the held mass delete, counted: the loop hands each new one to the engine
    /// before its next pass (a count, so one taken during a pass is not lost).
    pub mass_delete_allowed: watch::Sender<u64>,
}

/// Serves the control socket of the folder at `root` until the returned value is dropped:
/// status from `progress` (with the server `api` uses), pause, resume and mass-delete
/// allowances through `controls`.
/// The caller must hold the folder lock: a socket file already there is a dead daemon's.
///
/// # Errors
/// When the socket cannot be bound (its path is too long for a Unix socket, say) or made
/// private.
pub fn listen(
    root: &Path,
    progress: Progress,
    controls: Controls,
    api: Arc<ApiClient>,
) -> std::io::Result<ControlSocket> {
    use std::os::unix::fs::PermissionsExt;
    let bind = |path: &Path| {
        match std::fs::remove_file(path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
        UnixListener::bind(path)
    };
    let primary = socket_path(root);
    let (path, listener) = match bind(&primary) {
        Ok(listener) => (primary, listener),
        Err(err) => {
            let Some(fallback) = fallback_socket_path(root) else {
                return Err(err);
            };
            private_fallback_dir(fallback.parent().expect("a file in a directory"))?;
            let listener = bind(&fallback)?;
            tracing::info!(
                cause = %err,
                socket = %fallback.display(),
                "the folder cannot hold the control socket; it is in the user's runtime directory"
            );
            (fallback, listener)
        }
    };
    let socket = ControlSocket {
        path: path.clone(),
        _task: tokio_util::task::AbortOnDropHandle::new(tokio::spawn(serve(
            listener,
            Arc::new(Context {
                progress,
                controls,
                api,
                folder: root.display().to_string(),
            }),
        ))),
    };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(socket)
}

/// Where the socket of the folder at `root` goes when `.syncstore/` cannot hold it: a file named
/// after the hash of the folder's canonical path in the user's runtime directory.
pub fn fallback_socket_path(root: &Path) -> Option<PathBuf> {
    let root = std::fs::canonicalize(root).ok()?;
    let digest = blake3::hash(root.as_os_str().as_encoded_bytes()).to_hex();
    Some(fallback_dir().join(format!("{}.sock", &digest[..32])))
}

/// The user's private directory for fallback sockets.
fn fallback_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("syncstore"),
        // SAFETY: getuid has no preconditions.
        None => std::env::temp_dir().join(format!("syncstore-{}", unsafe { libc::getuid() })),
    }
}

/// Creates the fallback directory (0700), refusing one that another user owns or others can
/// enter (someone else made it first, to listen in).
fn private_fallback_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(err),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o077 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a private directory of this user (0700): not used for a control socket",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// What a connection's requests are answered from.
struct Context {
    progress: Progress,
    controls: Controls,
    api: Arc<ApiClient>,
    folder: String,
}

async fn serve(listener: UnixListener, context: Arc<Context>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return; // Never closed.
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::debug!(cause = %err, "control socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let context = Arc::clone(&context);
        tokio::spawn(async move {
            if let Err(err) = serve_connection(stream, &context).await {
                tracing::debug!(cause = %err, "control socket: connection ended");
            }
            drop(slot);
        });
    }
}

async fn serve_connection(stream: UnixStream, context: &Context) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut line = Vec::new();
        let limit = MAX_REQUEST_LINE as u64;
        let mut bounded = (&mut reader).take(limit);
        let read = bounded.read_until(b'\n', &mut line);
        let n = match tokio::time::timeout(IDLE_TIMEOUT, read).await {
            Ok(n) => n?,
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        let complete = line.last() == Some(&b'\n');
        let reply = if !complete && line.len() >= MAX_REQUEST_LINE {
            DaemonReply::Error {
                message: format!("request longer than {MAX_REQUEST_LINE} bytes"),
            }
        } else {
            match serde_json::from_slice::<DaemonRequest>(line.trim_ascii()) {
                Ok(request) => answer(request, context),
                Err(err) => DaemonReply::Error {
                    message: format!("invalid request: {err}"),
                },
            }
        };
        let mut text = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
        text.push(b'\n');
        write.write_all(&text).await?;
        if !complete {
            // Too long, or cut off: what follows is not a request.
            return Ok(());
        }
    }
}

fn answer(request: DaemonRequest, context: &Context) -> DaemonReply {
    match request {
        DaemonRequest::Status => {
            context.progress.set_server(context.api.current_server());
            let mut status = context.progress.status();
            status.folder.clone_from(&context.folder);
            status.pid = Some(std::process::id());
            DaemonReply::Status(Box::new(status))
        }
        DaemonRequest::Pause | DaemonRequest::Resume => {
            let pause = request == DaemonRequest::Pause;
            // The engine sees the flag between two download chunks; the loop sees the channel.
            context.progress.set_paused(pause);
            context.controls.paused.send_replace(pause);
            tracing::info!(
                folder = %context.folder,
                "{} on request",
                if pause { "pausing" } else { "resuming" }
            );
            DaemonReply::Done {
                state: if pause {
                    DaemonState::Paused
                } else {
                    DaemonState::Running
                },
            }
        }
        DaemonRequest::AllowMassDelete => {
            let held = context.progress.status().mass_delete_held;
            context
                .controls
                .mass_delete_allowed
                .send_modify(|allowed| *allowed += 1);
            tracing::info!(
                folder = %context.folder,
                held_files = held.map(|held| held.files),
                "mass delete allowed on request: the next pass applies the deletions held"
            );
            DaemonReply::MassDeleteAllowed { held }
        }
    }
}

/// Sends `request` to the daemon of the folder at `root`; `None` when no daemon runs there
/// (no socket, or nobody listening on it).
///
/// # Errors
/// When the daemon does not answer in time, or answers something that is not a reply.
pub async fn ask(root: &Path, request: &DaemonRequest) -> std::io::Result<Option<DaemonReply>> {
    let no_daemon = |err: &std::io::Error| {
        matches!(
            err.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
        )
    };
    let primary = socket_path(root);
    let (path, stream) = match UnixStream::connect(&primary).await {
        Ok(stream) => (primary, stream),
        Err(err) => match fallback_socket_path(root) {
            Some(fallback) => match UnixStream::connect(&fallback).await {
                Ok(stream) => (fallback, stream),
                // Listening at neither: no daemon (the folder's own path may not be able to
                // hold a socket at all).
                Err(second) if no_daemon(&second) => return Ok(None),
                Err(second) => return Err(second),
            },
            None if no_daemon(&err) => return Ok(None),
            None => return Err(err),
        },
    };
    let exchange = async {
        let (read, mut write) = stream.into_split();
        let mut text = serde_json::to_vec(request).map_err(std::io::Error::other)?;
        text.push(b'\n');
        write.write_all(&text).await?;
        let mut line = Vec::new();
        BufReader::new(read)
            .take(MAX_REPLY)
            .read_until(b'\n', &mut line)
            .await?;
        serde_json::from_slice::<DaemonReply>(line.trim_ascii()).map_err(|err| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the daemon's answer is not a reply: {err}"),
            )
        })
    };
    match tokio::time::timeout(ASK_TIMEOUT, exchange).await {
        Ok(reply) => reply.map(Some),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the daemon did not answer on {} in time", path.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api() -> Arc<ApiClient> {
        Arc::new(ApiClient::new(vec!["http://127.0.0.1:9".into()], "sst_test".into()).unwrap())
    }

    /// Raw lines to the socket, and the reply lines.
    async fn exchange(path: &Path, send: &[u8]) -> Vec<String> {
        let mut stream = UnixStream::connect(path).await.unwrap();
        stream.write_all(send).await.unwrap();
        let _ = stream.shutdown().await;
        // A daemon that closes on a request it will not read further may reset the
        // connection after its reply: keep what arrived.
        let mut bytes = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            bytes.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[tokio::test]
    async fn requests_are_answered_and_bad_ones_get_errors() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(syncstore_proto::META_DIR)).unwrap();
        let progress = Progress::default();
        let (paused, paused_rx) = watch::channel(false);
        let (mass_delete_allowed, allowed_rx) = watch::channel(0);
        let controls = Controls {
            paused,
            mass_delete_allowed,
        };
        let socket = listen(dir.path(), progress.clone(), controls, api()).unwrap();
        let path = socket_path(dir.path());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let status = ask(dir.path(), &DaemonRequest::Status).await.unwrap();
        let Some(DaemonReply::Status(status)) = status else {
            panic!("{status:?}")
        };
        assert_eq!(status.daemon, DaemonState::Running);
        assert_eq!(status.pid, Some(std::process::id()));
        assert_eq!(status.server, "http://127.0.0.1:9");

        let reply = ask(dir.path(), &DaemonRequest::Pause).await.unwrap();
        assert_eq!(
            reply,
            Some(DaemonReply::Done {
                state: DaemonState::Paused
            })
        );
        assert!(progress.is_paused() && *paused_rx.borrow());

        let reply = ask(dir.path(), &DaemonRequest::AllowMassDelete)
            .await
            .unwrap();
        assert_eq!(reply, Some(DaemonReply::MassDeleteAllowed { held: None }));
        assert_eq!(*allowed_rx.borrow(), 1, "counted for the loop");

        let replies = exchange(
            &path,
            b"{\"request\":\"resume\"}\nnot json\n{\"request\":\"x\"}\n",
        )
        .await;
        assert_eq!(replies.len(), 3, "{replies:?}");
        assert!(replies[0].contains("\"done\""), "{replies:?}");
        assert!(replies[1].contains("\"error\"") && replies[2].contains("\"error\""));
        assert!(!progress.is_paused());

        let long = vec![b'x'; MAX_REQUEST_LINE * 4];
        let replies = exchange(&path, &long).await;
        assert_eq!(replies.len(), 1, "{replies:?}");
        assert!(replies[0].contains("longer than"), "{replies:?}");

        drop(socket);
        assert!(!path.exists(), "removed on stop");
        assert_eq!(ask(dir.path(), &DaemonRequest::Status).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_stale_socket_reads_as_no_daemon_and_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(syncstore_proto::META_DIR)).unwrap();
        let path = socket_path(dir.path());
        // A daemon killed with SIGKILL leaves its socket behind.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        assert_eq!(ask(dir.path(), &DaemonRequest::Status).await.unwrap(), None);
        assert!(path.exists(), "a reader removes nothing");
        let controls = Controls {
            paused: watch::channel(false).0,
            mass_delete_allowed: watch::channel(0).0,
        };
        let _socket = listen(dir.path(), Progress::default(), controls, api()).unwrap();
        assert!(matches!(
            ask(dir.path(), &DaemonRequest::Status).await.unwrap(),
            Some(DaemonReply::Status(_))
        ));
    }
}
