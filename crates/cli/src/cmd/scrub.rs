//! `syncstore scrub`: verify every stored chunk, move bad ones aside, ask devices for them.

use anyhow::Context;
use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use syncstore_server::{ChunkLocation, MetaLocation};
use syncstore_store::ScrubReport;

/// How often progress is printed while scrubbing.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

pub async fn run(
    meta: &MetaLocation,
    chunks: &ChunkLocation,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let stores = syncstore_server::open_existing_stores(meta, chunks).await?;
    let started = Instant::now();
    let last_print = std::sync::Mutex::new(Instant::now());
    let progress = |report: &ScrubReport| {
        let mut last = last_print
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.elapsed() >= PROGRESS_EVERY {
            *last = Instant::now();
            eprintln!(
                "scrub: {} chunks ({}) checked, {} bad",
                report.checked,
                human_bytes(report.bytes),
                report.bad.len()
            );
        }
    };
    let report = stores
        .chunks
        .scrub(&progress)
        .await
        .with_context(|| format!("could not scrub the chunk store {chunks}"))?;
    // Devices that hold a bad chunk's file are asked for it on their next look at the journal.
    let users = stores.meta.users().await.context("could not list users")?;
    let by_namespace: HashMap<_, _> = users.iter().map(|user| (user.namespace, user)).collect();
    let mut by_user: HashMap<_, Vec<_>> = HashMap::new();
    for bad in &report.bad {
        match by_namespace.get(&bad.owner) {
            Some(user) => by_user.entry(user.id).or_default().push(bad.hash),
            None => tracing::warn!(namespace = %bad.owner, "bad chunk of no current account"),
        }
    }
    for (user_id, hashes) in by_user {
        stores
            .meta
            .want_chunks(user_id, &hashes)
            .await
            .context("could not record the bad chunks")?;
    }
    if json {
        let bad: Vec<serde_json::Value> = report
            .bad
            .iter()
            .map(|bad| {
                serde_json::json!({
                    "namespace": bad.owner.to_hex(),
                    "user": by_namespace.get(&bad.owner).map(|user| user.name.as_str()),
                    "hash": bad.hash.to_hex(),
                    "detail": bad.detail,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "checked": report.checked,
                "bytes": report.bytes,
                "bad": bad,
                "seconds": started.elapsed().as_secs_f64(),
            })
        );
    } else {
        for bad in &report.bad {
            let user = by_namespace
                .get(&bad.owner)
                .map_or("(no account)", |user| user.name.as_str());
            println!("bad chunk {} of user {user}: {}", bad.hash, bad.detail);
        }
        println!(
            "checked {} chunks ({}) in {:.1} s: {} bad{}",
            report.checked,
            human_bytes(report.bytes),
            started.elapsed().as_secs_f64(),
            report.bad.len(),
            if report.bad.is_empty() {
                ""
            } else {
                " (moved aside; devices that have them will upload them again)"
            }
        );
    }
    Ok(if report.bad.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
