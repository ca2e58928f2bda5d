//! Issue 18: the receiver writes a small edit of a large file in place, through a journal, and
//! never keeps a torn file: killed in the middle of that write, it finishes it when it starts
//! again.

use crate::util::*;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::Command;

/// `bytes` with `patch` written over it at `at`.
fn patched(bytes: &[u8], at: usize, patch: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[at..at + patch.len()].copy_from_slice(patch);
    out
}

/// Writes `patch` into the file at `at`, in place (the inode and size stay).
fn edit_in_place(path: &Path, at: usize, patch: &[u8]) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(patch, at as u64).unwrap();
    file.sync_all().unwrap();
}

fn journals(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join(".syncstore/journal"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `status --json` of the folder, once its daemon answers and says it is in sync.
fn wait_in_sync(dir: &Path) -> serde_json::Value {
    let mut doc = serde_json::Value::Null;
    wait_until("the daemon says the folder is in sync", || {
        let out = run(&["status", "--json", dir.to_str().unwrap()]);
        doc = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        doc["daemon"] == "running" && doc["in_sync"] == true && doc["syncing"] == false
    });
    doc
}

#[test]
fn b_killed_in_the_middle_of_an_in_place_write_shows_the_new_file_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().to_path_buf();
    let server = Server::start(&logs, &tmp.path().join("data"));
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let token_a = server.token("alice", "a");
    let token_b = server.token("alice", "b");
    let _daemon_a = start_client("client-a", &logs, &a, &server.url(), &token_a);
    // B stops in the middle of its first in-place write (after the journal is durable and
    // half of the first range is written) and says so in its log.
    std::fs::create_dir_all(&b).unwrap();
    let mut command = Command::new(bin());
    command
        .args(["sync", b.to_str().unwrap(), "--server", &server.url()])
        .args(["--token", &token_b, "--scan-interval", "5"])
        .env("SYNCSTORE_TEST_STOP_IN_PLACE", "1");
    let mut daemon_b = Proc::spawn_command("client-b", &logs, command);

    let old = random_bytes(64 * 1024 * 1024, 18);
    std::fs::write(a.join("big.bin"), &old).unwrap();
    wait_until_for(
        "B has the large file",
        std::time::Duration::from_secs(120),
        &mut || std::fs::read(b.join("big.bin")).is_ok_and(|bytes| bytes == old),
    );
    wait_in_sync(&b);
    let inode = std::fs::metadata(b.join("big.bin")).unwrap().ino();

    // 2 MiB rewritten in the middle on A: a few chunks of 64 MiB.
    let at = 31 * 1024 * 1024 + 12_345;
    let patch = random_bytes(2 * 1024 * 1024, 99);
    let new = patched(&old, at, &patch);
    edit_in_place(&a.join("big.bin"), at, &patch);
    wait_until_for(
        "B stops in the middle of its in-place write",
        std::time::Duration::from_secs(120),
        &mut || {
            daemon_b
                .log_text()
                .contains("test: stopped in the middle of an in-place write")
        },
    );
    daemon_b.kill9();
    // The crash left a torn file (old and new bytes mixed) and its journal.
    let torn = std::fs::read(b.join("big.bin")).unwrap();
    assert_eq!(torn.len(), old.len());
    assert!(
        torn != old && torn != new,
        "the write was cut in the middle"
    );
    assert_eq!(journals(&b).len(), 1, "the journal is there");
    assert_eq!(std::fs::metadata(b.join("big.bin")).unwrap().ino(), inode);

    // Started again (without the variable), B finishes the write before anything else, sees the
    // file as the server's version, and records it without a conflict.
    let daemon_b = restart_client("client-b-again", &logs, &b);
    wait_in_sync(&b);
    assert!(
        std::fs::read(b.join("big.bin")).unwrap() == new,
        "B's file is A's new content"
    );
    assert!(journals(&b).is_empty(), "the journal is gone");
    assert!(
        daemon_b
            .log_text()
            .contains("finished an in-place download a crash interrupted"),
        "the journal was replayed"
    );
    let names: Vec<String> = files(&b).into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["big.bin"], "no conflicted copy on B");
    let on_server: Vec<String> = server
        .tree(&token_a)
        .into_iter()
        .map(|entry| entry.path)
        .collect();
    assert_eq!(on_server, ["big.bin"], "no conflicted copy on the server");

    // The next edit goes in place to its end: same inode, A's bytes.
    let at = 7 * 1024 * 1024 + 3;
    let patch = b"a few bytes changed";
    let newer = patched(&new, at, patch);
    edit_in_place(&a.join("big.bin"), at, patch);
    wait_until_for(
        "B has the newer content",
        std::time::Duration::from_secs(60),
        &mut || std::fs::read(b.join("big.bin")).is_ok_and(|bytes| bytes == newer),
    );
    assert_eq!(
        std::fs::metadata(b.join("big.bin")).unwrap().ino(),
        inode,
        "written in place"
    );
    assert!(daemon_b
        .log_text()
        .contains("download batch done (in place)"));
    wait_in_sync(&b);
}
