//! Streaming through the server (issue 18): B fetches a large file's chunks while A is still
//! uploading it, and the file shows up on B only once A's upload commits; an upload cut off
//! by a kill leaves no file and no version anywhere, and the retry completes.
//!
//! A's uploads are held to a low rate (`--limit-upload`), so the upload lasts seconds and the
//! order of events is not left to chance: B must report what it fetched ahead while the server
//! still has no version of the file.

use crate::util::*;
use std::path::Path;

/// A's upload rate: 4 MiB/s, so the file below takes about ten seconds to upload.
const LIMIT_KIB: &str = "4096";
const SIZE: usize = 40 * 1024 * 1024;

fn start_limited(name: &str, logs: &Path, dir: &Path, url: &str, token: &str) -> Proc {
    std::fs::create_dir_all(dir).unwrap();
    Proc::spawn(
        name,
        logs,
        &[
            "sync",
            dir.to_str().unwrap(),
            "--server",
            url,
            "--token",
            token,
            "--scan-interval",
            "5",
            "--limit-upload",
            LIMIT_KIB,
        ],
    )
}

/// The bytes B says it fetched ahead when it placed `name`.
fn prefetched_when_placed(log: &str, name: &str) -> Option<u64> {
    let marker = format!("placed {name}: ");
    let line = log.lines().find(|line| line.contains(&marker))?;
    let rest = &line[line.find(&marker)? + marker.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Files in B's temp directory (what it fetched ahead, or is writing).
fn temp_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join(".syncstore/tmp"))
        .map(|entries| entries.count())
        .unwrap_or(0)
}

/// Waits until B reports fetching big.bin from A's upload stream.
fn wait_receiving(b: &Proc) {
    wait_until("B receiving big.bin while A uploads it", || {
        b.log_text()
            .contains("receiving big.bin from laptop while it is being uploaded")
    });
}

#[test]
fn b_fetches_a_large_file_while_a_is_still_uploading_it() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path();
    let server = Server::start(logs, &tmp.path().join("data"));
    let token_a = server.token("alice", "laptop");
    let token_b = server.token("alice", "desktop");
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    let _a = start_limited("client-a", logs, &a_dir, &server.url(), &token_a);
    let b = start_client("client-b", logs, &b_dir, &server.url(), &token_b);
    write(&a_dir.join("seed.txt"), "both up");
    wait_until("both folders in sync", || b_dir.join("seed.txt").exists());

    let big = random_bytes(SIZE, 18);
    std::fs::write(a_dir.join("big.bin"), &big).unwrap();
    wait_receiving(&b);
    // B holds fetched bytes of a file the server has no version of yet, and shows no file.
    assert!(
        server.entry(&token_b, "big.bin").is_none(),
        "the upload had committed before B fetched anything: the order of events is not the one under test"
    );
    assert!(
        !b_dir.join("big.bin").exists(),
        "B shows a file before its commit"
    );
    wait_until("B has big.bin", || {
        std::fs::read(b_dir.join("big.bin")).is_ok_and(|bytes| bytes == big)
    });
    let fetched = prefetched_when_placed(&b.log_text(), "big.bin")
        .expect("B reports what it fetched ahead when it places the file");
    assert!(fetched > 0 && fetched <= SIZE as u64, "{fetched}");
    assert_eq!(temp_files(&b_dir), 0, "B's temp files are all used or gone");

    // An edit of a file that has a version is not streamed (followers fetch what changed).
    let part = serde_json::json!({
        "path": "big.bin",
        "stream": "0123456789abcdef0123456789abcdef",
        "size": SIZE,
        "offset": 0,
        "chunks": [{"hash": "00".repeat(32), "len": 1024}],
    });
    let (status, body) = reqwest::send(
        "POST",
        &format!("{}/api/v1/streams", server.url()),
        &token_a,
        Some(part.to_string()),
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("only new files are streamed"), "{body}");

    // A part whose end overflows is a 400, not a crash.
    let hostile = serde_json::json!({
        "path": "other.bin",
        "stream": "0123456789abcdef0123456789abcdef",
        "size": 10,
        "offset": u64::MAX,
        "chunks": [{"hash": "00".repeat(32), "len": 5}],
    });
    let (status, body) = reqwest::send(
        "POST",
        &format!("{}/api/v1/streams", server.url()),
        &token_a,
        Some(hostile.to_string()),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        server.entry(&token_a, "big.bin").is_some(),
        "the server still answers"
    );
}

#[test]
fn a_killed_mid_upload_leaves_nothing_and_its_retry_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path();
    let server = Server::start(logs, &tmp.path().join("data"));
    let token_a = server.token("alice", "laptop");
    let token_b = server.token("alice", "desktop");
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    let mut a = start_limited("client-a", logs, &a_dir, &server.url(), &token_a);
    let b = start_client("client-b", logs, &b_dir, &server.url(), &token_b);
    write(&a_dir.join("seed.txt"), "both up");
    wait_until("both folders in sync", || b_dir.join("seed.txt").exists());

    let big = random_bytes(SIZE, 81);
    std::fs::write(a_dir.join("big.bin"), &big).unwrap();
    wait_receiving(&b);
    a.kill9();
    // Nothing of the cut-off upload is a file or a version anywhere.
    assert!(server.entry(&token_b, "big.bin").is_none());
    let (status, body) = reqwest::send(
        "GET",
        &format!("{}/api/v1/history?path=big.bin", server.url()),
        &token_b,
        None,
    );
    if status != 404 {
        assert_eq!(status, 200, "{body}");
        let history: serde_json::Value = serde_json::from_str(&body).unwrap();
        let versions = history["versions"].as_array().expect("a list of versions");
        assert!(versions.is_empty(), "{body}");
    }
    assert!(
        !b_dir.join("big.bin").exists(),
        "B shows a file nobody committed"
    );

    // A again, without the limit: the upload completes and B gets the whole file.
    let _a = restart_client("client-a-again", logs, &a_dir);
    wait_until("B has big.bin", || {
        std::fs::read(b_dir.join("big.bin")).is_ok_and(|bytes| bytes == big)
    });
    assert!(server.entry(&token_b, "big.bin").is_some());
    wait_until("B's temp files are all used or gone", || {
        temp_files(&b_dir) == 0
    });
}
