//! `syncstore history`, `trash` and `restore`: the server's version history, read and used.

use super::bar::bytes_text;
use super::status::time_text;
use super::target::{api_message, namespace_path, resolve, resolve_prefix};
use super::when::{now_ms, parse_time};
use crate::cli::{HistoryArgs, RestoreArgs, TrashArgs};
use anyhow::Context;
use std::io::Write;
use std::process::ExitCode;
use syncstore_proto::{
    DeviceName, RestoreAction, RestoreRequest, RestoreResponse, RestoreTarget, Revision,
    TrashQuery, VersionKind,
};

/// `syncstore history PATH [--json]`.
///
/// # Errors
/// When no version of the path is kept, or the server cannot be reached.
pub async fn history(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let target = resolve(&args.path, &args.remote)?;
    let answer = target
        .api
        .history(&target.path)
        .await
        .map_err(api_message)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&answer)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:>8}  {:<19}  {:<8}  {:>10}  {:<16}  {:<12}  PATH",
        "REV", "TIME", "WHAT", "SIZE", "DEVICE", "HASH"
    )?;
    for version in &answer.versions {
        let what = match version.kind {
            VersionKind::File => "written",
            VersionKind::Moved => "moved",
            VersionKind::Deleted => "deleted",
        };
        let hash = version
            .hash
            .map(|hash| hash.to_hex()[..12].to_owned())
            .unwrap_or_default();
        let size = match version.kind {
            VersionKind::Deleted => String::new(),
            _ => bytes_text(version.size),
        };
        writeln!(
            out,
            "{:>8}  {:<19}  {:<8}  {:>10}  {:<16}  {:<12}  {}{}",
            version.rev,
            time_text(version.at_ms),
            what,
            size,
            version.device.as_str(),
            hash,
            version.path,
            if version.current { "  (current)" } else { "" }
        )?;
    }
    if answer.kept_since_ms > 0 {
        writeln!(
            out,
            "(history before {} is no longer kept)",
            time_text(answer.kept_since_ms)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `syncstore trash [DIR] [--since TIME] [--by DEVICE] [--json]`.
///
/// # Errors
/// When a flag is invalid or the server cannot be reached.
pub async fn trash(args: TrashArgs) -> anyhow::Result<ExitCode> {
    let (api, prefix) = resolve_prefix(args.dir.as_deref(), &args.remote)?;
    let query = TrashQuery {
        prefix,
        since_ms: args
            .since
            .as_deref()
            .map(|text| parse_time(text, now_ms()))
            .transpose()?,
        by: args.by.as_deref().map(device_name).transpose()?,
    };
    let answer = api.trash(&query).await.map_err(api_message)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&answer)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "{:<19}  {:<16}  {:>10}  PATH", "DELETED", "BY", "SIZE")?;
    for entry in &answer.entries {
        writeln!(
            out,
            "{:<19}  {:<16}  {:>10}  {}",
            time_text(entry.deleted_at_ms),
            entry.deleted_by.as_str(),
            bytes_text(entry.size),
            entry.path
        )?;
    }
    let total: u64 = answer.entries.iter().map(|entry| entry.size).sum();
    writeln!(
        out,
        "{} deleted file(s), {}; bring them back with `syncstore restore --deleted`",
        answer.entries.len(),
        bytes_text(total)
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `syncstore restore [PATH] (--rev R | --at TIME | --deleted [--since TIME] [--by DEVICE])
/// [--to NEWPATH] [--dry-run] [--json]`. Exit 0 when every step went through, 1 when some
/// failed (each is printed with why).
///
/// # Errors
/// When the request is not valid, the server refuses it, or cannot be reached.
pub async fn restore(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let now = now_ms();
    let to = args.to.as_deref().map(namespace_path).transpose()?;
    let (api, target) = if args.deleted {
        let (api, prefix) = resolve_prefix(args.path.as_deref(), &args.remote)?;
        let since_ms = args
            .since
            .as_deref()
            .map(|text| parse_time(text, now))
            .transpose()?;
        let by = args.by.as_deref().map(device_name).transpose()?;
        (
            api,
            RestoreTarget::Deleted {
                prefix,
                since_ms,
                by,
            },
        )
    } else if let Some(at) = &args.at {
        let at_ms = parse_time(at, now)?;
        let (api, path) = resolve_prefix(args.path.as_deref(), &args.remote)?;
        (api, RestoreTarget::Moment { path, at_ms, to })
    } else if let Some(rev) = args.rev {
        let path = args
            .path
            .as_deref()
            .context("give the PATH whose version --rev names")?;
        let target = resolve(path, &args.remote)?;
        (
            target.api,
            RestoreTarget::Version {
                path: target.path,
                rev: Revision(rev),
                to,
            },
        )
    } else {
        anyhow::bail!("say what to restore: --rev R, --at TIME, or --deleted (see --help)");
    };
    let request = RestoreRequest {
        target,
        dry_run: args.dry_run,
    };
    let answer = api.restore(&request).await.map_err(api_message)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&answer)?)?;
    } else {
        print_restore(&mut out, &answer)?;
    }
    Ok(if answer.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_restore(out: &mut impl Write, answer: &RestoreResponse) -> std::io::Result<()> {
    let verb = |action: RestoreAction| match (action, answer.dry_run) {
        (RestoreAction::Reverted, false) => "reverted",
        (RestoreAction::Reverted, true) => "would revert",
        (RestoreAction::Undeleted, false) => "restored",
        (RestoreAction::Undeleted, true) => "would restore",
        (RestoreAction::Trashed, false) => "moved to trash",
        (RestoreAction::Trashed, true) => "would move to trash",
        (RestoreAction::MadeDir, false) => "made directory",
        (RestoreAction::MadeDir, true) => "would make directory",
    };
    for step in &answer.steps {
        let rev = step
            .rev
            .map(|rev| format!(" (revision {rev})"))
            .unwrap_or_default();
        if step.error.is_empty() {
            writeln!(out, "{} {}{rev}", verb(step.action), step.path)?;
        } else {
            writeln!(
                out,
                "FAILED {} {}{rev}: {}",
                verb(step.action),
                step.path,
                step.error
            )?;
        }
    }
    let counts = [
        RestoreAction::Reverted,
        RestoreAction::Undeleted,
        RestoreAction::Trashed,
        RestoreAction::MadeDir,
    ]
    .map(|action| format!("{} {}", answer.count(action), verb(action)));
    writeln!(
        out,
        "{}{}, {} unchanged, {} failed",
        if answer.dry_run { "dry run: " } else { "" },
        counts.join(", "),
        answer.unchanged,
        answer.failed()
    )
}

fn device_name(text: &str) -> anyhow::Result<DeviceName> {
    DeviceName::new(text).with_context(|| format!("invalid device name {text:?}"))
}
