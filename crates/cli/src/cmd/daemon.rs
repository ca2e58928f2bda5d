//! `syncstore daemon`: every folder of the config file, synced in one process.
//!
//! Each folder runs the same daemon loop as `syncstore sync DIR`, on its own task, with its own
//! control socket (so `status`, `pause` and `resume` work per folder) and its own log span. A
//! folder missing at start is waited for (its disk may not be mounted yet); one that cannot
//! start, or stops (its token refused, its root gone), is reported and the others go on; the
//! process exits when every folder has stopped (2 if any failed), or on SIGTERM/SIGINT.

use super::setup::{self, WhenUnreachable};
use crate::cli::DaemonRunArgs;
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use syncstore_client::daemon_config::{self, DaemonConfig, FolderEntry};
use syncstore_client::{Engine, FolderConfig};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Runs the daemon until every folder stopped or a signal came.
///
/// # Errors
/// When the config file cannot be read or names no folder that could start.
pub async fn run(args: DaemonRunArgs) -> anyhow::Result<ExitCode> {
    let file = match args.config {
        Some(file) => file,
        None => daemon_config::default_path().context(
            "no config file: give --config FILE (neither XDG_CONFIG_HOME nor HOME is set)",
        )?,
    };
    let config = DaemonConfig::load(&file)?;
    let scan_interval =
        Duration::from_secs(config.scan_interval.unwrap_or(args.scan_interval).max(1));
    let limit_upload = super::upload_limit(config.limit_upload.unwrap_or(args.limit_upload));
    let shutdown = super::shutdown_on_signals();
    tracing::info!(config = %file.display(), folders = config.folders.len(), "starting the daemon");
    let mut tasks = tokio::task::JoinSet::new();
    for folder in &config.folders {
        let span = tracing::info_span!("folder", path = %folder.path.display());
        let folder = folder.clone();
        let account = config.account.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(
            async move {
                let path = folder.path.clone();
                let outcome =
                    run_folder(folder, &account, scan_interval, limit_upload, shutdown).await;
                (path, outcome)
            }
            .instrument(span),
        );
    }
    let mut failed = 0usize;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, Ok(()))) => {}
            Ok((path, Err(err))) => {
                failed += 1;
                let message = syncstore_client::error_chain(err.as_ref());
                tracing::error!(folder = %path.display(), cause = %message, "folder stopped");
                eprintln!("error: {}: {message}", path.display());
            }
            Err(err) => {
                failed += 1;
                tracing::error!(cause = %err, "a folder's task failed");
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// One folder: its config resolved and checked, then the daemon loop until `shutdown`.
async fn run_folder(
    folder: FolderEntry,
    account: &daemon_config::Remote,
    scan_interval: Duration,
    limit_upload: Option<u64>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some(dir) = wait_for_folder(&folder.path, &shutdown).await else {
        return Ok(());
    };
    let config = resolve(&dir, &folder, account)?;
    let api = Arc::new(super::api_client(&config)?.with_upload_limit(limit_upload));
    let mut engine = Engine::open(&dir, api)?;
    engine.set_mass_delete_limit(Some(syncstore_plan::MassDeleteLimit {
        percent: crate::cli::MASS_DELETE_PERCENT,
        min_files: crate::cli::MASS_DELETE_MIN,
    }));
    if !setup::check_and_save(&dir, &config, WhenUnreachable::Wait(&shutdown)).await? {
        return Ok(());
    }
    let options = syncstore_client::daemon::DaemonOptions { scan_interval };
    syncstore_client::daemon::run(engine, options, shutdown)
        .await
        .map_err(|err| setup::with_login_hint(err, &dir))?;
    Ok(())
}

/// How often a folder that is missing at start (a disk not mounted yet) is looked for again.
const MISSING_FOLDER_POLL: Duration = Duration::from_secs(5);

/// The folder's canonical path once it exists (it is never created: a missing folder may be a
/// disk not mounted yet); `None` when `shutdown` fired first.
async fn wait_for_folder(path: &std::path::Path, shutdown: &CancellationToken) -> Option<PathBuf> {
    let mut warned = false;
    loop {
        match super::canonical_dir(path) {
            Ok(dir) => {
                if warned {
                    tracing::info!("the folder is there now; starting it");
                }
                return Some(dir);
            }
            Err(err) if !warned => {
                warned = true;
                tracing::warn!(
                    cause = %syncstore_client::error_chain(err.as_ref()),
                    "waiting for the folder to appear (it is not created: create it, or mount its disk)"
                );
            }
            Err(_) => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(MISSING_FOLDER_POLL) => {}
        }
    }
}

/// The folder's server and token: the config file's, each falling back to the folder's saved
/// config, as `sync`'s flags do.
fn resolve(
    dir: &std::path::Path,
    folder: &FolderEntry,
    account: &daemon_config::Remote,
) -> anyhow::Result<FolderConfig> {
    let remote = folder.remote(account);
    let as_flags = crate::cli::RemoteArgs {
        servers: remote.servers,
        token: remote.token,
        token_file: remote.token_file,
        ca: remote.ca,
        pin: remote.pin,
    };
    let Some(config) = super::merge_remote(&as_flags, FolderConfig::load(dir)?)? else {
        anyhow::bail!(
            "{} is not set up: give it servers and token_file in the config file (or in its \
             [account]), or run `syncstore login {} --server URL` once",
            dir.display(),
            dir.display()
        );
    };
    super::check_urls(&config.servers)?;
    Ok(config)
}
