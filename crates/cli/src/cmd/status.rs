//! `syncstore status DIR`: what a pass would do, changing nothing.

use chrono::TimeZone;
use std::path::Path;
use std::process::ExitCode;
use syncstore_plan::PlanOp;
use syncstore_proto::RelPath;

/// Prints the differences; exit 0 in sync, 1 not.
///
/// # Errors
/// When the folder is not set up or the server cannot be reached.
pub async fn run(dir: &Path) -> anyhow::Result<ExitCode> {
    let mut engine = super::open_engine_read_only(dir)?;
    let preview = engine.preview().await?;
    println!("server: {}", engine.api().current_server());
    let mut differences = 0;
    if let Some(why) = &preview.untrusted {
        differences += 1;
        println!(
            "re-adopt   whole folder: {why}; the next sync re-adopts it as on a first sync \
             (nothing is deleted on either side; files that differ become conflicted copies)"
        );
    }
    if let Some(when_why) = &preview.readopted {
        println!("note: the folder was re-adopted at {when_why}");
    }
    let describe = |path: &RelPath| {
        let local = preview
            .local
            .get(path)
            .map(|n| format!("{} B, {}", n.size, time_text(n.mtime_ns / 1_000_000)))
            .unwrap_or_else(|| "-".into());
        let remote = preview
            .remote
            .get(path)
            .map(|e| format!("{} B, {}", e.size, time_text(e.mtime_ms)))
            .unwrap_or_else(|| "-".into());
        format!("local: {local}; server: {remote}")
    };
    for op in &preview.plan.ops {
        let line = match op {
            PlanOp::Upload { path, .. } => format!("upload     {path}  ({})", describe(path)),
            PlanOp::Download { path, .. } => format!("download   {path}  ({})", describe(path)),
            PlanOp::DeleteLocal { path, .. } | PlanOp::RemoveDirLocal { path } => {
                format!("delete local   {path}  ({})", describe(path))
            }
            PlanOp::DeleteRemote { path, .. } => {
                format!("delete on server  {path}  ({})", describe(path))
            }
            PlanOp::SetModeRemote {
                path, executable, ..
            } => format!(
                "mode on server  {path}  ({})",
                if *executable { "+x" } else { "-x" }
            ),
            PlanOp::SetModeLocal {
                path, executable, ..
            } => format!(
                "mode local  {path}  ({})",
                if *executable { "+x" } else { "-x" }
            ),
            PlanOp::MakeDirLocal { path, .. } => format!("create local dir  {path}"),
            PlanOp::MakeDirRemote { path } => format!("create dir on server  {path}"),
            PlanOp::MoveRemote { from, to, .. } => format!("rename on server  {from} -> {to}"),
            PlanOp::MoveLocal { from, to } => format!("rename local  {from} -> {to}"),
            PlanOp::ConflictCopy { path, copy } => format!(
                "conflict   {path}  ({}); local version kept as {copy}",
                describe(path)
            ),
            // Upkeep, not differences between the sides (see the `syncstore_plan` crate docs).
            PlanOp::RecordBase { .. }
            | PlanOp::ForgetBase { .. }
            | PlanOp::ProtectLocal { .. }
            | PlanOp::UnprotectLocal { .. } => continue,
        };
        differences += 1;
        println!("{line}");
    }
    for blocked in &preview.plan.blocked {
        differences += 1;
        match (&blocked.path, &blocked.reason) {
            (Some(path), syncstore_plan::BlockReason::LockedBy(device)) => println!(
                "blocked    {path}  (locked by {device}; {})",
                describe(path)
            ),
            (None, reason) => println!("blocked    whole folder: {reason:?}"),
            (Some(path), reason) => println!("blocked    {path}: {reason:?}"),
        }
    }
    for skipped in &preview.skipped {
        differences += 1;
        println!("skipped    {}  ({})", skipped.path, skipped.reason);
    }
    if differences == 0 {
        println!("in sync");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{differences} difference(s)");
        Ok(ExitCode::from(1))
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
