//! `syncstore status DIR`: what the folder's daemon is doing, or, when none runs, what a pass
//! would do; changes nothing either way. `pause DIR`, `resume DIR` and `sync DIR
//! --allow-mass-delete` (beside a running daemon) ask the daemon.
//!
//! Both forms give a [`FolderStatus`] (the daemon's comes over its control socket); it is
//! printed as counts (`-v` lists the paths) or as JSON (`--json`).

use super::bar::{bytes_text, progress_line};
use anyhow::Context;
use chrono::TimeZone;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use syncstore_client::control;
use syncstore_client::Progress;
use syncstore_proto::daemon::{
    DaemonReply, DaemonRequest, DaemonState, Direction, FolderStatus, PathReason, PendingKind,
};

/// Prints the folder's status; exit 0 in sync (skipped paths only warn), 1 not.
///
/// # Errors
/// When the folder is not set up, or no daemon runs and the server cannot be reached.
pub async fn run(args: &crate::cli::StatusArgs) -> anyhow::Result<ExitCode> {
    let dir = super::canonical_dir(&args.dir)?;
    let status = match ask(&dir, &DaemonRequest::Status).await? {
        Some(DaemonReply::Status(status)) => *status,
        Some(other) => anyhow::bail!("unexpected answer from the daemon: {other:?}"),
        None => offline(&dir).await?,
    };
    // Written with `?`: a closed pipe (`status | head`) ends the command quietly (see `main`).
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&status)?)?;
    } else {
        write!(out, "{}", summary(&status, args.verbose))?;
    }
    drop(out);
    if !status.in_sync {
        return Ok(ExitCode::from(1));
    }
    if !status.skipped.is_empty() {
        eprintln!(
            "warning: in sync, but {} path(s) are not synced and were skipped (`syncstore status \
             -v {}` lists them with the reason)",
            status.skipped.len(),
            args.dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `syncstore pause DIR` (`pause`) or `resume DIR`.
///
/// # Errors
/// When no daemon runs on the folder, or it refuses.
pub async fn pause_or_resume(dir: &Path, pause: bool) -> anyhow::Result<ExitCode> {
    let dir = super::canonical_dir(dir)?;
    let request = if pause {
        DaemonRequest::Pause
    } else {
        DaemonRequest::Resume
    };
    match ask(&dir, &request).await? {
        Some(DaemonReply::Done { state }) => {
            let done = if state == DaemonState::Paused {
                "paused: no sync starts until `syncstore resume`"
            } else {
                "resumed: syncing"
            };
            writeln!(std::io::stdout(), "{}: {done}", dir.display())?;
            Ok(ExitCode::SUCCESS)
        }
        Some(other) => anyhow::bail!("unexpected answer from the daemon: {other:?}"),
        None => anyhow::bail!(
            "no syncstore daemon runs on {}: start one with `syncstore sync {}`",
            dir.display(),
            dir.display()
        ),
    }
}

/// `syncstore sync DIR --allow-mass-delete` beside a running daemon: tells it to apply the
/// deletions held, once. `None` when no daemon runs on DIR (the caller syncs with the
/// allowance itself).
///
/// # Errors
/// When the daemon refuses or answers something else.
pub async fn allow_mass_delete(dir: &Path) -> anyhow::Result<Option<ExitCode>> {
    let dir = super::canonical_dir(dir)?;
    let held = match ask(&dir, &DaemonRequest::AllowMassDelete).await? {
        None => return Ok(None),
        Some(DaemonReply::MassDeleteAllowed { held }) => held,
        Some(other) => anyhow::bail!("unexpected answer from the daemon: {other:?}"),
    };
    let text = match held {
        Some(held) => format!(
            "allowed: the daemon deletes the {} files held (of {}) in its next pass",
            held.files, held.folder_files
        ),
        None => "allowed: the daemon held no deletions; its next pass deletes whatever the \
                 server deleted"
            .to_owned(),
    };
    writeln!(std::io::stdout(), "{}: {text}", dir.display())?;
    Ok(Some(ExitCode::SUCCESS))
}

/// The daemon's answer; `None` when none runs.
async fn ask(dir: &Path, request: &DaemonRequest) -> anyhow::Result<Option<DaemonReply>> {
    let reply = control::ask(dir, request)
        .await
        .with_context(|| format!("could not ask the daemon of {}", dir.display()))?;
    if let Some(DaemonReply::Error { message }) = &reply {
        anyhow::bail!("the daemon of {} refused: {message}", dir.display());
    }
    Ok(reply)
}

/// No daemon: what a pass would do, from the folder's state and the server.
async fn offline(dir: &Path) -> anyhow::Result<FolderStatus> {
    let mut engine = super::open_engine_read_only(dir)?;
    let preview = engine.preview().await?;
    let progress = Progress::default();
    progress.planned_with_sizes(
        &preview.plan,
        &|path| preview.local.get(path).map_or(0, |node| node.size),
        &|path| preview.remote.get(path).map_or(0, |entry| entry.size),
    );
    let mut status = progress.status();
    status.daemon = DaemonState::NotRunning;
    status.folder = dir.display().to_string();
    status.server = engine.api().current_server().to_owned();
    status.progress = None;
    status.skipped = preview
        .skipped
        .iter()
        .map(syncstore_client::progress::skipped_reason)
        .collect();
    if let Some(why) = &preview.untrusted {
        status.notes.push(format!(
            "re-adopt   whole folder: {why}; the next sync re-adopts it as on a first sync \
             (nothing is deleted on either side; files that differ become conflicted copies)"
        ));
    }
    if let Some(when_why) = &preview.readopted {
        status
            .notes
            .push(format!("the folder was re-adopted at {when_why}"));
    }
    status.in_sync = status.pending.total_files() == 0
        && status.blocked.is_empty()
        && preview.untrusted.is_none();
    Ok(status)
}

fn summary(status: &FolderStatus, verbose: bool) -> String {
    use std::fmt::Write;
    let mut text = String::new();
    // Writing to a String cannot fail.
    macro_rules! say {
        ($($arg:tt)*) => {{
            let _ = writeln!(text, $($arg)*);
        }};
    }
    say!("folder: {}", status.folder);
    let pid = status
        .pid
        .map(|pid| format!("pid {pid}"))
        .unwrap_or_default();
    match status.daemon {
        DaemonState::Running if status.syncing => say!("daemon: running ({pid}), syncing"),
        DaemonState::Running => say!("daemon: running ({pid}), idle"),
        DaemonState::Paused if status.syncing => say!("daemon: paused ({pid}), stopping"),
        DaemonState::Paused => say!("daemon: paused ({pid}): `syncstore resume` goes on"),
        DaemonState::NotRunning => say!("daemon: not running; compared with the server"),
    }
    say!("server: {}", status.server);
    if status.daemon != DaemonState::NotRunning {
        match status.last_pass_ms {
            Some(ms) => say!("last pass: {}", time_text(ms)),
            None => say!("last pass: none completed yet"),
        }
        say!(
            "passes: {} full walks, {} incremental",
            status.full_walks,
            status.incremental_passes
        );
    }
    let pending = &status.pending;
    let kinds: [(&PendingKind, &str, &str); 5] = [
        (&pending.uploads, "upload", "upload"),
        (&pending.downloads, "download", "download"),
        (&pending.local_deletes, "local delete", "delete local"),
        (
            &pending.remote_deletes,
            "delete on server",
            "delete on server",
        ),
        (&pending.other, "other step", "other"),
    ];
    let counts: Vec<String> = kinds
        .iter()
        .filter(|(kind, _, _)| kind.files > 0)
        .map(|(kind, name, _)| {
            let plural = if kind.files == 1 { "" } else { "s" };
            if kind.bytes > 0 {
                format!("{} {name}{plural} ({})", kind.files, bytes_text(kind.bytes))
            } else {
                format!("{} {name}{plural}", kind.files)
            }
        })
        .collect();
    if counts.is_empty() {
        say!("pending: nothing");
    } else {
        say!("pending: {}", counts.join(", "));
    }
    if verbose {
        for (kind, _, label) in kinds {
            for path in &kind.paths {
                say!("{label:<16} {path}");
            }
            let unlisted = kind.files.saturating_sub(kind.paths.len() as u64);
            if unlisted > 0 {
                say!("{label:<16} ... and {unlisted} more");
            }
        }
    }
    for transfer in &status.transfers {
        let direction = match transfer.direction {
            Direction::Upload => "upload",
            Direction::Download => "download",
        };
        say!(
            "transferring {direction:<8} {}  {} of {}",
            transfer.path,
            bytes_text(transfer.bytes_done),
            bytes_text(transfer.bytes_total)
        );
    }
    if let Some(batch) = &status.progress {
        say!("progress: {}", progress_line(batch));
    }
    if let Some(held) = &status.mass_delete_held {
        say!(
            "mass delete held: {} of {} files were deleted on the server and are kept here; \
             `syncstore sync {} --allow-mass-delete` deletes them here too (or restore them on \
             the server)",
            held.files,
            held.folder_files,
            status.folder
        );
    }
    paths_text(&mut text, "blocked", &status.blocked, verbose);
    paths_text(&mut text, "skipped", &status.skipped, verbose);
    if let Some(error) = &status.last_error {
        say!("last error: {error}");
    }
    for note in &status.notes {
        say!("note: {note}");
    }
    let differences = pending.total_files()
        + status.blocked.len() as u64
        + u64::from(
            status
                .notes
                .iter()
                .any(|note| note.starts_with("re-adopt ")),
        );
    if status.in_sync {
        say!("in sync");
    } else if differences > 0 {
        say!("{differences} difference(s)");
    } else if status.last_error.is_some() {
        say!("the last pass failed; the daemon retries");
    } else if status.last_pass_ms.is_none() {
        say!("the daemon's first pass is under way");
    } else {
        say!("transfers under way");
    }
    text
}

/// Blocked or skipped paths: a count, or with `verbose` one line each.
fn paths_text(text: &mut String, label: &str, paths: &[PathReason], verbose: bool) {
    use std::fmt::Write;
    if paths.is_empty() {
        return;
    }
    // Writing to a String cannot fail.
    if !verbose {
        let _ = writeln!(text, "{label}: {} path(s) (-v lists them)", paths.len());
        return;
    }
    for entry in paths {
        let _ = writeln!(text, "{label:<10} {}  ({})", entry.path, entry.reason);
    }
}

/// Milliseconds since the epoch as local `YYYY-MM-DD HH:MM:SS`.
pub fn time_text(ms: i64) -> String {
    chrono::Local
        .timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "?".into())
}
