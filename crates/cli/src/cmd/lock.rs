//! `syncstore lock`, `unlock` and `locks`.

use super::target::{api_message, resolve};
use crate::cli::{LockArgs, LocksArgs, UnlockArgs};
use anyhow::Context;
use std::io::Write;
use std::process::ExitCode;

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
