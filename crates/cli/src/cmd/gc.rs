//! `syncstore gc`, `usage` and quotas: what the server keeps, and what it may delete.

use super::bar::bytes_text;
use super::status::time_text;
use super::target::api_message;
use crate::cli::{GcArgs, RetentionArgs, UsageArgs};
use anyhow::Context;
use std::io::Write;
use std::process::ExitCode;
use syncstore_proto::UserName;
use syncstore_server::{ChunkLocation, MetaLocation};
use syncstore_store::gc::GcPolicy;
use syncstore_store::{MetaStore, Retention};

/// The retention `--keep-history` asks for.
pub fn retention(args: &RetentionArgs) -> Retention {
    Retention {
        keep_ms: i64::try_from(args.keep_history.as_millis()).unwrap_or(i64::MAX),
    }
}

/// `syncstore gc [--dry-run] [--keep-history D] [--gc-grace D] [--json]`: one run now, over
/// every user, against the server's stores (a running server may keep serving meanwhile).
///
/// # Errors
/// When the stores cannot be opened or a store fails during the run.
pub async fn run(
    meta: &MetaLocation,
    chunks: &ChunkLocation,
    args: &GcArgs,
) -> anyhow::Result<ExitCode> {
    let stores = syncstore_server::open_existing_stores(meta, chunks).await?;
    let policy = GcPolicy {
        retention: Retention {
            keep_ms: i64::try_from(args.keep_history.as_millis()).unwrap_or(i64::MAX),
        },
        grace_ms: i64::try_from(args.gc_grace.as_millis()).unwrap_or(i64::MAX),
    };
    let now_ms = chrono::Utc::now().timestamp_millis();
    let report =
        syncstore_store::gc::collect(&*stores.meta, &*stores.chunks, now_ms, policy, args.dry_run)
            .await
            .context("garbage collection failed")?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let json = serde_json::json!({
            "dry_run": args.dry_run,
            "users": report.users,
            "rows_removed": report.rows_removed,
            "chunks_deleted": report.chunks_deleted,
            "bytes_freed": report.bytes_freed,
            "chunks_kept": report.chunks_kept,
            "bytes_kept": report.bytes_kept,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
    } else {
        let (verb, rows) = if args.dry_run {
            ("would free", "would compact")
        } else {
            ("freed", "compacted")
        };
        writeln!(
            out,
            "{}{} users: {verb} {} in {} chunks, {rows} {} journal rows; {} in {} chunks kept",
            if args.dry_run { "dry run: " } else { "" },
            report.users,
            bytes_text(report.bytes_freed),
            report.chunks_deleted,
            report.rows_removed,
            bytes_text(report.bytes_kept),
            report.chunks_kept
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Sets or lifts a user's quota, and says so.
///
/// # Errors
/// When the user does not exist or the store fails.
pub async fn set_quota(
    meta: &dyn MetaStore,
    user: &UserName,
    quota: Option<u64>,
) -> anyhow::Result<()> {
    let found = meta
        .user_by_name(user)
        .await?
        .with_context(|| format!("no user {user}"))?;
    meta.set_quota(found.id, quota).await?;
    match quota {
        Some(bytes) => println!("quota of {user}: {}", bytes_text(bytes)),
        None => println!("quota of {user}: none"),
    }
    Ok(())
}

/// `syncstore usage [--json]`.
///
/// # Errors
/// When no server is known or it cannot be reached.
pub async fn usage(args: UsageArgs) -> anyhow::Result<ExitCode> {
    let usage = super::api_from(&args.remote)?
        .usage()
        .await
        .map_err(api_message)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&usage)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let quota = usage.quota_bytes.map_or_else(
        || "no quota".to_owned(),
        |quota| {
            format!(
                "quota {} ({}% used)",
                bytes_text(quota),
                usage.current_bytes.saturating_mul(100) / quota.max(1)
            )
        },
    );
    writeln!(
        out,
        "current: {} in {} files; {quota}",
        bytes_text(usage.current_bytes),
        usage.current_files
    )?;
    writeln!(out, "history: {}", bytes_text(usage.history_bytes))?;
    writeln!(
        out,
        "trash:   {} in {} files",
        bytes_text(usage.trash_bytes),
        usage.trash_files
    )?;
    if usage.kept_since_ms > 0 {
        writeln!(
            out,
            "history is kept since {}",
            time_text(usage.kept_since_ms)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
