//! `syncstore ls [PATH]`: the remote listing, `ls -l` style.

use crate::cli::LsArgs;
use std::io::Write;
use std::process::ExitCode;
use syncstore_proto::{EntryKind, RelPath};

/// Prints the listing.
///
/// # Errors
/// When no server/token is known, the path is invalid, or the server cannot be reached.
pub async fn run(args: LsArgs) -> anyhow::Result<ExitCode> {
    let dir = match args.path.as_deref().map(|p| p.trim_matches('/')) {
        None | Some("") | Some(".") => None,
        Some(text) => Some(RelPath::new(text)?),
    };
    let api = super::api_from(&args.remote)?;
    let tree = api.tree().await?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let lock_of = |path: &RelPath| {
        tree.locks
            .iter()
            .find(|lock| lock.in_force(now_ms) && lock.covers(path))
            .map(|lock| format!("locked by {}", lock.device))
    };
    if let Some(dir) = &dir {
        match tree.entries.iter().find(|e| &e.path == dir) {
            Some(entry) if entry.kind == EntryKind::Dir => {}
            Some(_) => {}
            None => anyhow::bail!("{dir}: no such file or directory on the server"),
        }
    }
    let mut rows: Vec<_> = tree
        .entries
        .iter()
        .filter(|e| match &dir {
            None => args.recursive || e.path.depth() == 1,
            Some(dir) if args.recursive => e.path.is_inside(dir),
            Some(dir) => e.path.parent().as_ref() == Some(dir),
        })
        .collect();
    if let Some(dir) = &dir {
        if rows.is_empty() {
            rows = tree.entries.iter().filter(|e| &e.path == dir).collect();
        }
    }
    rows.sort_by(|a, b| a.path.cmp(&b.path));
    let mut out = std::io::stdout().lock();
    if args.json {
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .map(|entry| {
                serde_json::json!({
                    "path": entry.path.as_str(),
                    "kind": match entry.kind {
                        EntryKind::Dir => "dir",
                        EntryKind::File => "file",
                    },
                    "size": entry.size,
                    "mtime_ms": entry.mtime_ms,
                    "device": entry.device.as_str(),
                    "executable": entry.executable,
                    "locked_by": tree
                        .locks
                        .iter()
                        .find(|lock| lock.in_force(now_ms) && lock.covers(&entry.path))
                        .map(|lock| lock.device.as_str()),
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<4} {:>12}  {:<19}  {:<16}  {:<24}  NAME",
        "TYPE", "SIZE", "MODIFIED", "DEVICE", "LOCK"
    )?;
    for entry in rows {
        let (kind, size, name) = match entry.kind {
            EntryKind::Dir => ("d", "-".to_string(), format!("{}/", entry.path)),
            EntryKind::File => ("-", entry.size.to_string(), entry.path.to_string()),
        };
        let lock = lock_of(&entry.path).unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "{kind:<4} {size:>12}  {:<19}  {:<16}  {lock:<24}  {name}",
            super::status::time_text(entry.mtime_ms),
            entry.device.as_str()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
