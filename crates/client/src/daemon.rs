//! The daemon: one control loop fed by the watcher, the long poll, the rescan timer and retries.
//!
//! The watcher (inotify through `notify`) and the long poll only *wake* the loop; every pass
//! rescans and re-plans from the three trees, so a missed or duplicated event costs at most a
//! pass, never a wrong decision. The periodic rescan catches whatever the watcher missed.

use crate::engine::{Engine, PassReport};
use crate::http::{ApiClient, ApiError};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use syncstore_proto::{Cursor, META_DIR};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How the daemon runs.
#[derive(Clone, Debug)]
pub struct DaemonOptions {
    /// How often the whole folder is rescanned, whatever the watcher says.
    pub scan_interval: Duration,
}

/// How long the loop waits after a local event for the burst to settle.
const DEBOUNCE: Duration = Duration::from_millis(10);
/// The longest a burst of local events can delay a pass.
const DEBOUNCE_MAX: Duration = Duration::from_millis(250);
/// Long-poll wait per request.
const LONG_POLL: Duration = Duration::from_secs(25);
/// Backoff cap when the server is unreachable.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often the daemon asks the server whether it still holds every chunk of base (and
/// uploads again what it lost); also once at start.
const CHUNK_CHECK_INTERVAL: Duration = Duration::from_secs(600);

/// Runs passes until the folder and the server agree (or nothing more can be done now).
///
/// # Errors
/// When the server cannot be reached or refuses the token, or the folder cannot be used.
pub async fn run_once(engine: &mut Engine) -> anyhow::Result<PassReport> {
    let mut total = 0;
    for _ in 0..8 {
        let mut report = engine.sync_pass().await?;
        total += report.applied;
        if report.in_sync || !report.retry_soon {
            report.applied = total;
            return Ok(report);
        }
        // Something was settling (a file being written, a conflict answer): let it settle.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut report = engine.sync_pass().await?;
    report.applied += total;
    Ok(report)
}

/// Keeps the folder and the server in sync until `shutdown` fires; then stops at a safe point.
///
/// # Errors
/// When the token is refused or the watcher cannot start; unreachable servers are retried.
pub async fn run(
    mut engine: Engine,
    options: DaemonOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let root = engine.root().to_path_buf();
    let local_dirty = Arc::new(Notify::new());
    let remote_dirty = Arc::new(Notify::new());
    let _watcher = start_watcher(&root, local_dirty.clone())?;
    let (cursor_tx, cursor_rx) = watch::channel(None::<Cursor>);
    let poller = tokio::spawn(long_poll(
        engine.api().clone(),
        cursor_rx,
        remote_dirty.clone(),
        shutdown.clone(),
    ));

    let mut next_scan = Instant::now() + options.scan_interval;
    // Due at once: the first pass checks the server's chunks too.
    let mut next_chunk_check = Instant::now();
    let mut retry_at: Option<Instant>;
    let mut backoff = Duration::from_millis(500);
    let mut last_blocked = Vec::new();
    loop {
        if Instant::now() >= next_chunk_check {
            let checked = tokio::select! {
                checked = engine.check_server_chunks() => Some(checked),
                () = shutdown.cancelled() => None,
            };
            match checked {
                None => break,
                Some(Ok(())) => next_chunk_check = Instant::now() + CHUNK_CHECK_INTERVAL,
                // Tried again before the next pass.
                Some(Err(err)) => tracing::debug!(
                    cause = format!("{err:#}"),
                    "could not check the server's chunks"
                ),
            }
        }
        let outcome = tokio::select! {
            outcome = engine.sync_pass() => Some(outcome),
            () = shutdown.cancelled() => None,
        };
        let Some(outcome) = outcome else { break };
        retry_at = None;
        match outcome {
            Ok(report) => {
                backoff = Duration::from_millis(500);
                if report.applied > 0 {
                    tracing::info!(
                        applied = report.applied,
                        in_sync = report.in_sync,
                        "sync pass done"
                    );
                }
                if report.blocked != last_blocked {
                    for blocked in &report.blocked {
                        tracing::warn!(?blocked, "not synced");
                    }
                    last_blocked = report.blocked.clone();
                }
                if report.retry_soon {
                    retry_at = Some(Instant::now() + Duration::from_millis(300));
                } else if let Some(wait) = report.retry_after {
                    retry_at = Some(Instant::now() + wait);
                }
                let _ = cursor_tx.send(engine.remote_cursor());
            }
            Err(err) => {
                if let Some(ApiError::Unauthorized(message)) = err.downcast_ref::<ApiError>() {
                    anyhow::bail!("the server refused this device's token: {message}");
                }
                tracing::warn!(cause = format!("{err:#}"), retry_in = ?backoff, "sync pass failed");
                retry_at = Some(Instant::now() + backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
        // Notices are already logged; the daemon has nobody else to tell.
        engine.take_notices();
        // A lock that ends by itself changes what may be uploaded: pass again right then.
        let lock_expiry = engine.next_lock_expiry_ms().map(|end_ms| {
            let wait_ms = (end_ms - chrono::Utc::now().timestamp_millis()).max(0) as u64 + 50;
            Instant::now() + Duration::from_millis(wait_ms)
        });
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = local_dirty.notified() => debounce(&local_dirty).await,
            () = sleep_until_opt(lock_expiry) => {}
            () = remote_dirty.notified() => {}
            () = tokio::time::sleep_until(next_scan) => next_scan = Instant::now() + options.scan_interval,
            () = sleep_until_opt(retry_at) => {}
        }
    }
    tracing::info!("stopping");
    poller.abort();
    Ok(())
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Waits until local events pause for [`DEBOUNCE`], at most [`DEBOUNCE_MAX`].
async fn debounce(local_dirty: &Notify) {
    let deadline = Instant::now() + DEBOUNCE_MAX;
    loop {
        tokio::select! {
            () = local_dirty.notified() => {
                if Instant::now() >= deadline {
                    return;
                }
            }
            () = tokio::time::sleep(DEBOUNCE) => return,
        }
    }
}

fn start_watcher(
    root: &Path,
    local_dirty: Arc<Notify>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let meta_dir = root.join(META_DIR);
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) => {
                // Opening or reading a file changes nothing; our own scans and uploads do both,
                // and waking on them would start a pass after every pass.
                use notify::event::{AccessKind, AccessMode, EventKind};
                let read_only = matches!(
                    event.kind,
                    EventKind::Access(
                        AccessKind::Open(_)
                            | AccessKind::Read
                            | AccessKind::Close(AccessMode::Read)
                    )
                );
                if !read_only
                    && (event.paths.is_empty()
                        || event.paths.iter().any(|p| !p.starts_with(&meta_dir)))
                {
                    local_dirty.notify_one();
                }
            }
            Err(err) => {
                // The queue overflowed or similar: a rescan finds whatever was missed.
                tracing::warn!(cause = %err, "watcher error; rescanning");
                local_dirty.notify_one();
            }
        })
        .map_err(|err| anyhow::anyhow!("could not start the file watcher: {err}"))?;
    watcher
        .watch(root, notify::RecursiveMode::Recursive)
        .map_err(|err| anyhow::anyhow!("could not watch {}: {err}", root.display()))?;
    Ok(watcher)
}

/// Long-polls the change feed and wakes the control loop when something changed remotely.
async fn long_poll(
    api: Arc<ApiClient>,
    mut engine_cursor: watch::Receiver<Option<Cursor>>,
    remote_dirty: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut seen: Option<Cursor> = None;
    let mut backoff = Duration::from_millis(500);
    loop {
        let engine_at = *engine_cursor.borrow();
        let since = match (engine_at, seen) {
            (Some(a), Some(b)) => a.max(b),
            (Some(a), None) => a,
            (None, _) => {
                // Not connected yet: wait for the first pass.
                tokio::select! {
                    _ = engine_cursor.changed() => continue,
                    () = shutdown.cancelled() => return,
                }
            }
        };
        let result = tokio::select! {
            result = api.changes(since, LONG_POLL, None) => result,
            () = shutdown.cancelled() => return,
        };
        match result {
            Ok(page) => {
                backoff = Duration::from_millis(500);
                if !page.changes.is_empty()
                    || page.reset
                    || page.diverged
                    || !page.wanted.is_empty()
                {
                    remote_dirty.notify_one();
                }
                seen = Some(page.cursor.max(since));
            }
            Err(err) => {
                tracing::debug!(cause = %err, "long poll failed");
                remote_dirty.notify_one();
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}
