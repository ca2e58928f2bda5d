//! `syncstore lock`, `unlock` and `locks`.

use crate::cli::{LockArgs, LocksArgs, RemoteArgs, UnlockArgs};
use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use syncstore_client::{ApiClient, ApiError, FolderConfig};
use syncstore_proto::RelPath;

/// Where a command's PATH argument points: the API to ask and the path in the namespace.
struct Target {
    api: ApiClient,
    path: RelPath,
}

/// A local path inside a synced folder names that folder's server; anything else is a path in the
/// namespace of the server given by flags, or of the synced folder around the current directory.
fn resolve(path_arg: &str, remote: &RemoteArgs) -> anyhow::Result<Target> {
    let local = Path::new(path_arg);
    let absolute = if local.is_absolute() {
        local.to_path_buf()
    } else {
        std::env::current_dir()?.join(local)
    };
    if let Some((folder, rel)) = inside_synced_folder(&absolute) {
        let saved = FolderConfig::load(&folder)?.context("synced folder has no config")?;
        let config =
            super::merge_remote(remote, Some(saved)).context("synced folder has no server")?;
        return Ok(Target {
            api: ApiClient::new(config.servers, config.token)?,
            path: rel,
        });
    }
    anyhow::ensure!(
        !local.is_absolute(),
        "{path_arg} is not inside a synced folder"
    );
    let path = RelPath::new(path_arg.trim_start_matches("./").trim_end_matches('/'))
        .with_context(|| format!("invalid path {path_arg:?}"))?;
    Ok(Target {
        api: super::api_from(remote)?,
        path,
    })
}

/// The synced folder containing `absolute` (which need not exist) and the path inside it.
fn inside_synced_folder(absolute: &Path) -> Option<(PathBuf, RelPath)> {
    // Resolve what exists (symlinks in the folder's own path, `..`), keep the rest as written.
    let mut existing = absolute.to_path_buf();
    let mut rest = Vec::new();
    while !existing.exists() {
        rest.push(existing.file_name()?.to_owned());
        existing = existing.parent()?.to_path_buf();
    }
    let mut resolved = existing.canonicalize().ok()?;
    for part in rest.into_iter().rev() {
        resolved.push(part);
    }
    let folder = resolved.ancestors().find(|dir| {
        dir.join(syncstore_proto::META_DIR)
            .join("config.json")
            .is_file()
    })?;
    let rel = resolved.strip_prefix(folder).ok()?;
    let rel = RelPath::new(rel.to_str()?).ok()?;
    Some((folder.to_path_buf(), rel))
}

fn parse_ttl(text: &str) -> anyhow::Result<u64> {
    let duration = humantime::parse_duration(text)
        .with_context(|| format!("invalid --ttl {text:?}: use e.g. 30m, 2h, 1d"))?;
    let secs = duration.as_secs();
    anyhow::ensure!(
        secs > 0,
        "invalid --ttl {text:?}: must be at least one second"
    );
    anyhow::ensure!(
        secs <= syncstore_proto::MAX_LOCK_TTL_SECS,
        "invalid --ttl {text:?}: at most one year"
    );
    Ok(secs)
}

fn api_message(err: ApiError) -> anyhow::Error {
    match err {
        ApiError::Status { message, .. } => anyhow::anyhow!(message),
        other => other.into(),
    }
}

/// `syncstore lock PATH [--ttl D]`.
///
/// # Errors
/// When the path does not exist, another device holds it, or the TTL is invalid.
pub async fn lock(args: LockArgs) -> anyhow::Result<ExitCode> {
    let ttl_secs = args.ttl.as_deref().map(parse_ttl).transpose()?;
    let target = resolve(&args.path, &args.remote)?;
    let lock = target
        .api
        .lock(target.path.clone(), ttl_secs)
        .await
        .map_err(api_message)?;
    match lock.expires_ms {
        Some(end) => println!(
            "locked {} (device {}) until {}",
            lock.path,
            lock.device,
            super::status::time_text(end)
        ),
        None => println!(
            "locked {} (device {}) until unlocked",
            lock.path, lock.device
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `syncstore unlock PATH [--force]`.
///
/// # Errors
/// When there is no lock, or another device holds it and `--force` is not given.
pub async fn unlock(args: UnlockArgs) -> anyhow::Result<ExitCode> {
    let target = resolve(&args.path, &args.remote)?;
    let released = target
        .api
        .unlock(target.path.clone(), args.force)
        .await
        .map_err(api_message)?;
    println!(
        "unlocked {} (was held by {})",
        released.path, released.device
    );
    Ok(ExitCode::SUCCESS)
}

/// `syncstore locks`.
///
/// # Errors
/// When no server is known or it cannot be reached.
pub async fn list(args: LocksArgs) -> anyhow::Result<ExitCode> {
    let locks = super::api_from(&args.remote)?.locks().await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let rows: Vec<serde_json::Value> = locks
            .iter()
            .map(|lock| {
                serde_json::json!({
                    "path": lock.path.as_str(),
                    "device": lock.device.as_str(),
                    "since_ms": lock.since_ms,
                    "expires_ms": lock.expires_ms,
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<16}  {:<19}  {:<19}  PATH",
        "DEVICE", "SINCE", "EXPIRES"
    )?;
    for lock in locks {
        let expires = lock
            .expires_ms
            .map(super::status::time_text)
            .unwrap_or_else(|| "when unlocked".into());
        writeln!(
            out,
            "{:<16}  {:<19}  {:<19}  {}",
            lock.device.as_str(),
            super::status::time_text(lock.since_ms),
            expires,
            lock.path
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
