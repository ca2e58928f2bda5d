//! The daemon: one control loop fed by the watcher, the long poll, the rescan timer and retries.
//!
//! The watcher (inotify through `notify`) names the paths that changed; a pass looks again at
//! those only, and plans them with what the server's journal changed (the engine's *focus*).
//! A duplicated event costs a stat; a missed one leaves its path unseen until the periodic
//! rescan, a full walk, which catches whatever the watcher missed. When the watcher cannot be
//! trusted (its queue overflowed, it failed) the next pass walks the whole folder; when the
//! inotify watch limit keeps directories unwatched, that is said once and the folder is
//! rescanned every [`WATCH_LIMIT_RESCAN`] at least.
//!
//! After a failure the loop and the long poll back off (up to [`BACKOFF_MAX`]), but when the
//! servers caused it (unreachable, 5xx) they ask the servers' health every
//! [`HEALTH_PROBE_INTERVAL`] meanwhile and go again as soon as one answers: a client is back
//! within a second or two of its service, however long the outage was.

use crate::engine::{Engine, PassReport};
use crate::http::{ApiClient, ApiError, FAILBACK_PROBE_INTERVAL};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use syncstore_proto::{Cursor, META_DIR};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The longest time between full walks while some directories cannot be watched (the inotify
/// watch limit was reached).
pub const WATCH_LIMIT_RESCAN: Duration = Duration::from_secs(10);

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
/// Set to `0`, the daemon does not fetch other devices' large files while they are uploaded
/// (it fetches them after their commit, as before upload streams existed).
pub const FETCH_AHEAD_ENV: &str = "SYNCSTORE_FETCH_AHEAD";
/// Long-poll wait per request.
const LONG_POLL: Duration = Duration::from_secs(25);
/// Backoff cap when the server is unreachable.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often the daemon asks the server whether it still holds every chunk of base (and
/// uploads again what it lost); also once at start.
const CHUNK_CHECK_INTERVAL: Duration = Duration::from_secs(600);
/// The first backoff after a failure.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// How often the servers' health is asked while waiting to retry after they failed.
const HEALTH_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Runs passes until the folder and the server agree (or nothing more can be done now).
///
/// # Errors
/// When the server cannot be reached or refuses the token, or the folder cannot be used.
pub async fn run_once(engine: &mut Engine) -> Result<PassReport, crate::Error> {
    let mut total = 0;
    for _ in 0..8 {
        let mut report = tracked_pass(engine).await?;
        total += report.applied;
        if report.in_sync || !report.retry_soon {
            report.applied = total;
            return Ok(report);
        }
        // Something was settling (a file being written, a conflict answer): let it settle.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut report = tracked_pass(engine).await?;
    report.applied += total;
    Ok(report)
}

/// One pass, its start and outcome recorded in the engine's progress.
async fn tracked_pass(engine: &mut Engine) -> Result<PassReport, crate::Error> {
    let progress = engine.progress();
    progress.pass_started();
    let outcome = engine.sync_pass().await;
    pass_ended(&progress, engine.root(), &outcome);
    outcome
}

/// Records how a pass ended; a completed batch gets its one INFO line (folder, files, bytes,
/// seconds).
fn pass_ended(
    progress: &crate::progress::Progress,
    root: &Path,
    outcome: &Result<PassReport, crate::Error>,
) {
    match outcome {
        Ok(report) => {
            let now_ms = chrono::Utc::now().timestamp_millis();
            let batch = progress.pass_done(report, now_ms);
            if let Some(batch) = batch.filter(|b| b.files > 0 || report.applied > 0) {
                tracing::info!(
                    folder = %root.display(),
                    files = batch.files,
                    bytes = batch.bytes,
                    secs = format_args!("{:.1}", batch.elapsed.as_secs_f64()),
                    applied = report.applied,
                    in_sync = report.in_sync,
                    "sync pass done"
                );
            }
        }
        Err(crate::Error::Paused) => progress.pass_abandoned(),
        Err(err) => progress.pass_failed(&crate::error_chain(&err)),
    }
}

/// Waits until syncing is paused (at once when it is).
async fn pause_requested(paused: &mut watch::Receiver<bool>) {
    if paused.wait_for(|paused| *paused).await.is_err() {
        // The sender lives as long as the daemon loop.
        std::future::pending::<()>().await;
    }
}

/// While paused, triggers are taken but start no pass; returns false when the daemon stops.
async fn wait_while_paused(
    paused: &mut watch::Receiver<bool>,
    local_dirty: &Notify,
    remote_dirty: &Notify,
    shutdown: &CancellationToken,
) -> bool {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return false,
            resumed = paused.wait_for(|paused| !*paused) => return resumed.is_ok(),
            () = local_dirty.notified() => tracing::debug!("paused: a local change waits for resume"),
            () = remote_dirty.notified() => tracing::debug!("paused: a remote change waits for resume"),
        }
    }
}

/// Keeps the folder and the server in sync until `shutdown` fires; then stops at a safe point.
///
/// # Errors
/// When the token is refused or the watcher cannot start; unreachable servers are retried.
pub async fn run(
    mut engine: Engine,
    options: DaemonOptions,
    shutdown: CancellationToken,
) -> Result<(), crate::Error> {
    let root = engine.root().to_path_buf();
    let local_dirty = Arc::new(Notify::new());
    let remote_dirty = Arc::new(Notify::new());
    let changes = Arc::new(std::sync::Mutex::new(WatchedChanges::default()));
    let _watcher = start_watcher(&root, changes.clone(), local_dirty.clone())?;
    let mut scan_interval = options.scan_interval;
    // Whether the watch limit was reported.
    let mut limit_reported = false;
    let (cursor_tx, cursor_rx) = watch::channel(None::<Cursor>);
    let poller = tokio::spawn(long_poll(
        engine.api().clone(),
        cursor_rx,
        remote_dirty.clone(),
        shutdown.clone(),
    ));

    // `SYNCSTORE_FETCH_AHEAD=0` turns fetching ahead off (to measure what it gains).
    let fetch_ahead = std::env::var_os(FETCH_AHEAD_ENV).is_none_or(|value| value != "0");
    let follower = fetch_ahead.then(|| {
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
            engine.follow_streams(shutdown.child_token()),
        ))
    });
    let api = engine.api().clone();
    // Calls probe for failback themselves, but a daemon may make none for a while (a long
    // poll lasts 25 s, a rescan comes every minute).
    let _failback = tokio_util::task::AbortOnDropHandle::new(tokio::spawn({
        let api = api.clone();
        async move {
            let mut ticks = tokio::time::interval(FAILBACK_PROBE_INTERVAL);
            loop {
                ticks.tick().await;
                api.probe_failback();
            }
        }
    }));
    let progress = engine.progress();
    // Pause and resume come from the control socket; the loop waits on this channel.
    let (paused_tx, mut paused_rx) = watch::channel(false);
    // So do allowances of a held mass delete, counted; `allowances_taken` is how many the
    // engine was given.
    let (allowed_tx, mut allowed_rx) = watch::channel(0u64);
    let mut allowances_taken = 0u64;
    let controls = crate::control::Controls {
        paused: paused_tx.clone(),
        mass_delete_allowed: allowed_tx,
    };
    let _control = match crate::control::listen(&root, progress.clone(), controls, api.clone()) {
        Ok(socket) => Some(socket),
        Err(err) => {
            tracing::warn!(cause = %err, "could not open the control socket; status, pause and resume will not reach this daemon");
            None
        }
    };
    let mut next_scan = Instant::now() + scan_interval;
    // The first pass walks the whole folder anyway.
    let mut walk_all = false;
    // Due after the first pass: base is then what this folder synced, including what a pass
    // cut off by the last stop committed on the server without recording it here.
    let mut next_chunk_check = Instant::now();
    let mut retry: Option<Retry>;
    let mut backoff = Backoff::default();
    let mut last_blocked = Vec::new();
    let mut last_skipped: Vec<crate::scan::Skipped> = Vec::new();
    // The last FolderStopped message logged, so a stopped folder is reported once.
    let mut last_stopped: Option<String> = None;
    loop {
        if progress.is_paused() {
            tracing::info!(folder = %root.display(), "paused");
            if !wait_while_paused(&mut paused_rx, &local_dirty, &remote_dirty, &shutdown).await {
                break;
            }
            tracing::info!(folder = %root.display(), "resumed");
        }
        let allowances = *allowed_rx.borrow_and_update();
        if allowances != allowances_taken {
            allowances_taken = allowances;
            engine.allow_mass_delete();
        }
        let limit_hit = take_changes(&changes, &mut engine);
        if limit_hit && !limit_reported {
            limit_reported = true;
            scan_interval = scan_interval.min(WATCH_LIMIT_RESCAN);
            next_scan = next_scan.min(Instant::now() + scan_interval);
            tracing::warn!(
                folder = %root.display(),
                "the folder has more directories than inotify may watch (the limit is {});                  changes in the unwatched ones are found by rescans every {} s instead of at                  once. Raise the limit: sudo sysctl fs.inotify.max_user_watches=1048576 (and                  put fs.inotify.max_user_watches=1048576 in /etc/sysctl.d/90-syncstore.conf to                  keep it), then restart syncstore",
                watch_limit_text(),
                scan_interval.as_secs()
            );
        }
        let pass = async {
            if std::mem::take(&mut walk_all) {
                engine.sync_pass().await
            } else {
                engine.sync_changes().await
            }
        };
        progress.pass_started();
        let outcome = tokio::select! {
            outcome = pass => Some(Some(outcome)),
            () = shutdown.cancelled() => None,
            // Dropping the pass is safe: the daemon does the same on shutdown.
            () = pause_requested(&mut paused_rx) => Some(None),
        };
        let Some(outcome) = outcome else { break };
        let Some(outcome) = outcome.filter(|o| !matches!(o, Err(crate::Error::Paused))) else {
            progress.pass_abandoned();
            if let Err(err) = engine.pass_dropped() {
                tracing::warn!(cause = %err, "could not save what the paused pass applied");
            }
            continue;
        };
        pass_ended(&progress, &root, &outcome);
        retry = None;
        let stopped = outcome.as_ref().err().and_then(|err| match err {
            crate::Error::FolderStopped(stopped) => Some(stopped.to_string()),
            _ => None,
        });
        match (&stopped, &last_stopped) {
            (Some(now), Some(before)) if now == before => {
                tracing::debug!("the folder is still stopped")
            }
            (Some(now), _) => tracing::error!("{now}"),
            (None, Some(_)) => tracing::info!("the folder is back; syncing again"),
            (None, None) => {}
        }
        if let Some(stopped) = stopped {
            // Checked again at the next trigger, or at the rescan interval at the latest; once
            // the folder is back, its first pass walks all of it (what changed meanwhile was
            // not watched).
            engine.local_unknown();
            last_stopped = Some(stopped);
            retry = Some(Retry {
                at: Instant::now() + scan_interval.min(BACKOFF_MAX),
                probe: false,
            });
        } else {
            last_stopped = None;
        }
        match outcome {
            Err(_) if last_stopped.is_some() => {}
            Ok(report) => {
                backoff.succeeded();
                // Each skipped path is reported once, with its reason, until it changes.
                for skipped in &report.skipped {
                    if !last_skipped.contains(skipped) {
                        tracing::warn!(path = %skipped.path, "not synced: {}: {}", skipped.path, skipped.reason);
                    }
                }
                last_skipped = report.skipped.clone();
                // A held mass delete is logged by the engine, once per hold.
                let blocked: Vec<_> = report
                    .blocked
                    .iter()
                    .filter(|b| {
                        !matches!(b.reason, syncstore_plan::BlockReason::MassDeleteHeld { .. })
                    })
                    .cloned()
                    .collect();
                if blocked != last_blocked {
                    for blocked in &blocked {
                        tracing::warn!(?blocked, "not synced");
                    }
                    last_blocked = blocked;
                }
                if report.retry_soon {
                    retry = Some(Retry {
                        at: Instant::now() + Duration::from_millis(300),
                        probe: false,
                    });
                } else if let Some(wait) = report.retry_after {
                    retry = Some(Retry {
                        at: Instant::now() + wait,
                        probe: false,
                    });
                }
                let _ = cursor_tx.send(engine.remote_cursor());
            }
            Err(err) => {
                // Neither a refused token nor a refused certificate goes away by waiting.
                if let crate::Error::Api(ApiError::Unauthorized(_) | ApiError::Untrusted(_)) = &err
                {
                    return Err(err);
                }
                let servers_failed = matches!(&err, crate::Error::Api(api) if api.is_transient());
                let next = backoff.failed(servers_failed);
                tracing::warn!(
                    cause = crate::error_chain(&err),
                    retry_in = ?next.at.saturating_duration_since(Instant::now()),
                    probing_health = next.probe,
                    "sync pass failed"
                );
                retry = Some(next);
            }
        }
        if Instant::now() >= next_chunk_check {
            let checked = tokio::select! {
                checked = engine.check_server_chunks() => Some(checked),
                () = shutdown.cancelled() => None,
            };
            match checked {
                None => break,
                Some(Ok(())) => next_chunk_check = Instant::now() + CHUNK_CHECK_INTERVAL,
                // Tried again after the next pass.
                Some(Err(err)) => tracing::debug!(
                    cause = %err,
                    "could not check the server's chunks"
                ),
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
            _ = paused_rx.changed() => {}
            // Taken at the top of the loop. (An `Err`: no control socket holds the sender;
            // the branch is then left out.)
            Ok(()) = allowed_rx.changed() => {}
            () = tokio::time::sleep_until(next_scan) => {
                next_scan = Instant::now() + scan_interval;
                walk_all = true;
            }
            woke_early = wait_for_retry_opt(&api, retry) => backoff.woke(woke_early),
        }
    }
    tracing::info!("stopping");
    poller.abort();
    drop(follower);
    Ok(())
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// When to try again after a failure.
#[derive(Clone, Copy, Debug)]
struct Retry {
    /// The end of the backoff.
    at: Instant,
    /// Whether to end the wait early once a server answers its health probe.
    probe: bool,
}

/// Exponential backoff between failed attempts, cut short by health probes.
///
/// A wait after a failure the servers caused ends as soon as a health probe succeeds. When the
/// attempt after such an early end fails again, health says nothing about this failure, so the
/// next wait is the plain backoff (and the one after that probes again).
#[derive(Debug)]
struct Backoff {
    delay: Duration,
    woke_early: bool,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            delay: BACKOFF_MIN,
            woke_early: false,
        }
    }
}

impl Backoff {
    fn succeeded(&mut self) {
        *self = Backoff::default();
    }

    /// The retry after a failure; `servers_failed`: unreachable or 5xx.
    fn failed(&mut self, servers_failed: bool) -> Retry {
        let retry = Retry {
            at: Instant::now() + self.delay,
            probe: servers_failed && !self.woke_early,
        };
        self.delay = (self.delay * 2).min(BACKOFF_MAX);
        self.woke_early = false;
        retry
    }

    /// Records how the last wait ended.
    fn woke(&mut self, early: bool) {
        self.woke_early = early;
    }
}

/// Waits for `retry`, if any; returns whether a health probe ended the wait early.
async fn wait_for_retry_opt(api: &ApiClient, retry: Option<Retry>) -> bool {
    match retry {
        Some(retry) => wait_for_retry(api, retry).await,
        None => std::future::pending().await,
    }
}

/// Waits until `retry.at`, or, when `retry.probe`, until a health probe (every
/// [`HEALTH_PROBE_INTERVAL`]) finds a server that answers; returns whether it ended early.
async fn wait_for_retry(api: &ApiClient, retry: Retry) -> bool {
    if retry.probe {
        loop {
            let next_probe = Instant::now() + HEALTH_PROBE_INTERVAL;
            if next_probe >= retry.at {
                break;
            }
            tokio::time::sleep_until(next_probe).await;
            if api.probe_health().await {
                tracing::debug!("a server answers its health probe; retrying now");
                return true;
            }
        }
    }
    tokio::time::sleep_until(retry.at).await;
    false
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

/// What the watcher saw since the loop last looked.
#[derive(Default)]
struct WatchedChanges {
    /// Paths named by events, each with whether a directory's entries must be listed again.
    paths: std::collections::BTreeMap<syncstore_proto::RelPath, bool>,
    /// An event could not be trusted (the queue overflowed, the watcher failed): walk it all.
    unknown: bool,
    /// The inotify watch limit kept directories unwatched.
    limit_hit: bool,
}

/// Hands what the watcher saw to the engine; returns whether the watch limit was hit.
fn take_changes(changes: &std::sync::Mutex<WatchedChanges>, engine: &mut Engine) -> bool {
    let taken = std::mem::take(&mut *changes.lock().unwrap_or_else(|e| e.into_inner()));
    if taken.unknown || taken.limit_hit {
        engine.local_unknown();
    }
    for (path, deep) in taken.paths {
        engine.local_changed(path, deep);
    }
    taken.limit_hit
}

/// The current inotify watch limit, as text.
fn watch_limit_text() -> String {
    std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .map(|text| text.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Records one watcher event in `changes`; returns whether the loop should be woken.
fn record_event(
    root: &Path,
    changes: &std::sync::Mutex<WatchedChanges>,
    event: notify::Result<notify::Event>,
) -> bool {
    use notify::event::{EventKind, ModifyKind};
    let mut changes = changes.lock().unwrap_or_else(|e| e.into_inner());
    let event = match event {
        Ok(event) => event,
        Err(err) => {
            if matches!(err.kind, notify::ErrorKind::MaxFilesWatch) {
                changes.limit_hit = true;
            } else {
                tracing::debug!(cause = %err, "watcher error; walking the whole folder");
            }
            changes.unknown = true;
            return true;
        }
    };
    if is_read(&event) {
        return false;
    }
    if event.need_rescan() || event.paths.is_empty() {
        tracing::debug!("the watcher lost events; walking the whole folder");
        changes.unknown = true;
        return true;
    }
    // A create or a rename may bring a directory with entries of its own.
    let deep = matches!(
        event.kind,
        EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_)) | EventKind::Any
    );
    let mut wake = false;
    for full in &event.paths {
        match watched_path(root, full) {
            WatchedPath::Meta => {}
            WatchedPath::Path(path, also_deep) => {
                let slot = changes.paths.entry(path).or_insert(false);
                *slot |= deep || also_deep;
                wake = true;
            }
            WatchedPath::Root => {
                changes.unknown = true;
                wake = true;
            }
        }
    }
    wake
}

/// Opening or reading a file changes nothing; our own scans and uploads do both, and waking on
/// them would start a pass after every pass.
fn is_read(event: &notify::Event) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    matches!(
        event.kind,
        EventKind::Access(
            AccessKind::Open(_) | AccessKind::Read | AccessKind::Close(AccessMode::Read)
        )
    )
}

/// What a path in a watcher event is to the folder.
enum WatchedPath {
    /// Inside `.syncstore/` (or outside the folder): not the user's.
    Meta,
    /// An entry of the folder; `true` when its own name could not be synced, so this is its
    /// nearest syncable ancestor, to be listed again.
    Path(syncstore_proto::RelPath, bool),
    /// The root itself, or an entry with no syncable ancestor: walk the whole folder.
    Root,
}

fn watched_path(root: &Path, full: &Path) -> WatchedPath {
    let Ok(rel) = full.strip_prefix(root) else {
        return WatchedPath::Meta;
    };
    if rel.starts_with(META_DIR) {
        return WatchedPath::Meta;
    }
    let mut at = Some(rel);
    let mut own_name = true;
    while let Some(candidate) = at.filter(|p| !p.as_os_str().is_empty()) {
        if let Some(path) = candidate
            .to_str()
            .and_then(|text| syncstore_proto::RelPath::new(text).ok())
        {
            return WatchedPath::Path(path, !own_name);
        }
        own_name = false;
        at = candidate.parent();
    }
    WatchedPath::Root
}

fn start_watcher(
    root: &Path,
    changes: Arc<std::sync::Mutex<WatchedChanges>>,
    local_dirty: Arc<Notify>,
) -> Result<notify::RecommendedWatcher, crate::Error> {
    use notify::Watcher;
    let watched_root = root.to_path_buf();
    let handler_changes = changes.clone();
    // Test hook: every event arrives as a queue overflow does (no paths, "rescan"), so the
    // end-to-end tests can check what an overflow leads to without flooding the kernel queue
    // (its size, `fs.inotify.max_queued_events`, is one setting for the whole machine).
    let overflow_always = std::env::var_os("SYNCSTORE_TEST_WATCHER_OVERFLOWS").is_some();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let event = match event {
            Ok(event) if overflow_always && !is_read(&event) => {
                Ok(notify::Event::new(notify::EventKind::Other)
                    .set_flag(notify::event::Flag::Rescan))
            }
            other => other,
        };
        if record_event(&watched_root, &handler_changes, event) {
            local_dirty.notify_one();
        }
    })
    .map_err(|err| crate::Error::Setup(format!("could not start the file watcher: {err}")))?;
    match watcher.watch(root, notify::RecursiveMode::Recursive) {
        Ok(()) => {}
        // The watches added so far stay; the loop reports the limit and rescans more often.
        Err(err) if matches!(err.kind, notify::ErrorKind::MaxFilesWatch) => {
            let mut changes = changes.lock().unwrap_or_else(|e| e.into_inner());
            changes.limit_hit = true;
            changes.unknown = true;
        }
        Err(err) => {
            return Err(crate::Error::Setup(format!(
                "could not watch {}: {err}",
                root.display()
            )))
        }
    }
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
    let mut backoff = Backoff::default();
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
            result = api.peek_changes(since, LONG_POLL) => result,
            () = shutdown.cancelled() => return,
        };
        match result {
            Ok(page) => {
                backoff.succeeded();
                // (`diverged` is never set here: the long poll names no known position, the
                // pass it wakes checks that.)
                if page.peeked > 0
                    || !page.changes.is_empty()
                    || page.reset
                    || !page.wanted.is_empty()
                {
                    remote_dirty.notify_one();
                }
                seen = Some(page.cursor.max(since));
            }
            Err(err) => {
                tracing::debug!(cause = %err, "long poll failed");
                remote_dirty.notify_one();
                let retry = backoff.failed(err.is_transient());
                tokio::select! {
                    woke_early = wait_for_retry(&api, retry) => backoff.woke(woke_early),
                    () = shutdown.cancelled() => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watcher_events_name_paths_and_an_overflow_asks_for_a_full_walk() {
        use notify::event::{CreateKind, DataChange, EventKind, Flag, ModifyKind, RenameMode};
        let root = Path::new("/sync");
        let changes = std::sync::Mutex::new(WatchedChanges::default());
        let event = |kind: EventKind, paths: &[&str]| {
            let mut event = notify::Event::new(kind);
            for path in paths {
                event = event.add_path(root.join(path));
            }
            Ok(event)
        };
        let data = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        assert!(record_event(root, &changes, event(data, &["a/b.txt"])));
        // The same event twice, and a rename of a directory: both ends, listed again.
        assert!(record_event(root, &changes, event(data, &["a/b.txt"])));
        let renamed = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert!(record_event(root, &changes, event(renamed, &["d", "e"])));
        // A name that cannot be synced: its directory is listed again.
        assert!(record_event(
            root,
            &changes,
            event(EventKind::Create(CreateKind::File), &["a/bad\\name"])
        ));
        // Our own state, and reads, wake nothing.
        assert!(!record_event(
            root,
            &changes,
            event(data, &[".syncstore/state.sqlite"])
        ));
        let read = EventKind::Access(notify::event::AccessKind::Read);
        assert!(!record_event(root, &changes, event(read, &["a/b.txt"])));
        {
            let seen = changes.lock().unwrap();
            let paths: Vec<(&str, bool)> = seen
                .paths
                .iter()
                .map(|(p, deep)| (p.as_str(), *deep))
                .collect();
            assert_eq!(
                paths,
                [("a", true), ("a/b.txt", false), ("d", true), ("e", true)]
            );
            assert!(!seen.unknown);
        }
        let overflow = Ok(notify::Event::new(EventKind::Other).set_flag(Flag::Rescan));
        assert!(record_event(root, &changes, overflow));
        assert!(changes.lock().unwrap().unknown);
        let limit = Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch));
        assert!(record_event(root, &changes, limit));
        assert!(changes.lock().unwrap().limit_hit);
    }

    #[test]
    fn backoff_probes_health_only_after_server_failures_and_not_twice_in_vain() {
        let mut backoff = Backoff::default();
        let first = backoff.failed(true);
        assert!(first.probe);
        // The probe found a server, but the next attempt failed too: wait the plain backoff.
        backoff.woke(true);
        assert!(!backoff.failed(true).probe);
        // After a plain wait, probing is worth trying again.
        backoff.woke(false);
        assert!(backoff.failed(true).probe);
        // A failure the servers did not cause (a local error, a 4xx) never probes.
        assert!(!backoff.failed(false).probe);
        // The delay doubles up to its cap and starts over after a success.
        for _ in 0..10 {
            backoff.failed(true);
        }
        assert_eq!(backoff.delay, BACKOFF_MAX);
        backoff.succeeded();
        assert_eq!(backoff.delay, BACKOFF_MIN);
    }
}
