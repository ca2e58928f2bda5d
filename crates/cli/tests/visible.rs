//! Issue 13, "a daemon you can see": `status` from the running daemon, `--json`, `pause` and
//! `resume`, one daemon per folder.

use crate::util::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A server and two folders of one user (devices "laptop" and "desktop").
struct Setup {
    tmp: tempfile::TempDir,
    server: Server,
    a_dir: PathBuf,
    b_dir: PathBuf,
    token_a: String,
    token_b: String,
}

impl Setup {
    fn logs(&self) -> &Path {
        self.tmp.path()
    }
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &tmp.path().join("data"));
    let token_a = server.token("alice", "laptop");
    let token_b = server.token("alice", "desktop");
    let a_dir = tmp.path().join("a");
    let b_dir = tmp.path().join("b");
    std::fs::create_dir_all(&a_dir).unwrap();
    Setup {
        tmp,
        server,
        a_dir,
        b_dir,
        token_a,
        token_b,
    }
}

/// `status --json DIR`: exit code and the parsed document. Before a new daemon's first
/// answer the folder may not be set up yet: that is exit 2 and `{"error": stderr}`.
fn status_json(dir: &Path) -> (i32, Value) {
    let out = run(&["status", "--json", dir.to_str().unwrap()]);
    let code = out.status.code().unwrap_or(-1);
    let text = String::from_utf8_lossy(&out.stdout);
    if code == 2 {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return (code, serde_json::json!({ "error": stderr }));
    }
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("status --json is not JSON ({err}): {text}"));
    (code, json)
}

/// The transfer of `path` the status lists, if any.
fn transfer<'a>(status: &'a Value, path: &str) -> Option<&'a Value> {
    status["transfers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["path"] == path)
}

fn file_is(path: &Path, content: &[u8]) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.len() == content.len() as u64)
        && std::fs::read(path).is_ok_and(|bytes| bytes == content)
}

/// The binary run with `dir` as the current directory.
fn cli_in(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin())
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run syncstore")
}

/// Files in `.syncstore/tmp/` (downloads under way).
fn temp_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join(".syncstore/tmp")).map_or(0, |entries| entries.count())
}

#[test]
fn status_during_a_large_download_shows_its_progress_and_leaves_it_alone() {
    let s = setup();
    const SIZE: usize = 128 << 20;
    let content = random_bytes(SIZE, 13);
    std::fs::write(s.a_dir.join("big.bin"), &content).unwrap();
    ok(sync_once(&s.a_dir, &s.server.url(), Some(&s.token_a)));
    let b = start_client("client-b", s.logs(), &s.b_dir, &s.server.url(), &s.token_b);
    // Polled until the daemon reports bytes of the file moving.
    let mut seen = Value::Null;
    wait_until("B's status shows the download under way", || {
        let (code, status) = status_json(&s.b_dir);
        let moving = transfer(&status, "big.bin").is_some_and(|t| {
            t["direction"] == "download"
                && t["bytes_done"].as_u64() > Some(0)
                && t["bytes_total"].as_u64() == Some(SIZE as u64)
        });
        if moving {
            assert_eq!(code, 1, "a download under way is not in sync: {status}");
            seen = status;
        }
        moving
    });
    assert_eq!(seen["daemon"], "running", "{seen}");
    assert_eq!(
        seen["pid"].as_u64(),
        Some(u64::from(b.child.id())),
        "{seen}"
    );
    assert_eq!(seen["syncing"], true, "{seen}");
    assert_eq!(seen["in_sync"], false, "{seen}");
    assert_eq!(seen["pending"]["downloads"]["files"], 1, "{seen}");
    assert_eq!(
        seen["pending"]["downloads"]["bytes"].as_u64(),
        Some(SIZE as u64),
        "{seen}"
    );
    assert_eq!(seen["pending"]["downloads"]["paths"][0], "big.bin");
    let progress = &seen["progress"];
    assert_eq!(progress["files_total"], 1, "{seen}");
    assert_eq!(
        progress["bytes_total"].as_u64(),
        Some(SIZE as u64),
        "{seen}"
    );
    assert!(progress["bytes_done"].as_u64() > Some(0), "{seen}");
    assert!(progress.get("bytes_per_sec").is_some() && progress.get("eta_secs").is_some());

    // Undisturbed: the file arrives whole, and no pass failed.
    wait_until("big.bin on B", || {
        file_is(&s.b_dir.join("big.bin"), &content)
    });
    wait_until("B's status says in sync", || {
        let (code, status) = status_json(&s.b_dir);
        code == 0 && status["in_sync"] == true && status["pending"]["downloads"]["files"] == 0
    });
    let log = b.log_text();
    assert!(!log.contains("sync pass failed"), "{log}");
    // One INFO line for the batch: folder, files, bytes, seconds.
    assert!(
        log.lines().any(|l| l.contains("INFO")
            && l.contains("sync pass done")
            && l.contains("files=1")
            && l.contains(&format!("bytes={SIZE}"))
            && l.contains("secs=")
            && l.contains(&format!(
                "folder={}",
                s.b_dir.canonicalize().unwrap().display()
            ))),
        "{log}"
    );
    // The human form: counts and the daemon's state.
    let out = ok(run(&["status", s.b_dir.to_str().unwrap()]));
    assert!(
        out.contains("daemon: running")
            && out.contains("pending: nothing")
            && out.contains("in sync"),
        "{out}"
    );
}

#[test]
fn status_json_names_the_pending_counts_with_and_without_a_daemon() {
    let s = setup();
    write(&s.a_dir.join("old.txt"), "synced before");
    ok(sync_once(&s.a_dir, &s.server.url(), Some(&s.token_a)));
    write(&s.a_dir.join("docs/one.txt"), "0123456789");
    write(&s.a_dir.join("two.txt"), "01234567890123456789");
    std::fs::remove_file(s.a_dir.join("old.txt")).unwrap();

    // No daemon: the comparison with the server, in the same shape.
    let (code, status) = status_json(&s.a_dir);
    assert_eq!(code, 1, "{status}");
    assert_eq!(status["daemon"], "not_running", "{status}");
    assert_eq!(status["in_sync"], false);
    assert_eq!(status["server"], s.server.url());
    let pending = &status["pending"];
    assert_eq!(pending["uploads"]["files"], 2, "{status}");
    assert_eq!(pending["uploads"]["bytes"], 30, "{status}");
    assert_eq!(
        pending["uploads"]["paths"],
        serde_json::json!(["docs/one.txt", "two.txt"])
    );
    assert_eq!(pending["remote_deletes"]["files"], 1, "{status}");
    assert_eq!(pending["remote_deletes"]["paths"][0], "old.txt");
    assert_eq!(pending["downloads"]["files"], 0);
    assert_eq!(pending["local_deletes"]["files"], 0);
    for key in ["full_walks", "incremental_passes"] {
        assert!(status[key].is_u64(), "{key} in {status}");
    }
    // The human form gives the counts; -v the paths.
    let out = run(&["status", s.a_dir.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("pending: 2 uploads (30 B), 1 delete on server (13 B)")
            && !text.contains("two.txt"),
        "{text}"
    );
    let out = run(&["status", "-v", s.a_dir.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("two.txt") && text.contains("docs/one.txt") && text.contains("old.txt"),
        "{text}"
    );

    // With a daemon: the same keys, from the daemon, until it is in sync.
    let a = start_client("client-a", s.logs(), &s.a_dir, &s.server.url(), &s.token_a);
    wait_until("A's daemon says in sync", || {
        let (code, status) = status_json(&s.a_dir);
        code == 0
            && status["daemon"] == "running"
            && status["in_sync"] == true
            && status["pending"]["uploads"]["files"] == 0
            && status["pending"]["remote_deletes"]["files"] == 0
            && status["last_pass_ms"].is_i64()
    });
    let (_, status) = status_json(&s.a_dir);
    assert_eq!(status["pid"].as_u64(), Some(u64::from(a.child.id())));
    assert!(status["full_walks"].is_u64() && status["incremental_passes"].is_u64());

    // `ls --json` and `locks --json` are machine-readable too.
    ok(cli_in(&s.a_dir, &["lock", "two.txt"]));
    let listing: Value =
        serde_json::from_str(&ok(cli_in(&s.a_dir, &["ls", "--json", "-R"]))).unwrap();
    let rows = listing.as_array().unwrap();
    let two = rows.iter().find(|r| r["path"] == "two.txt").unwrap();
    assert_eq!(two["kind"], "file");
    assert_eq!(two["size"], 20);
    assert_eq!(two["locked_by"], "laptop");
    assert!(rows
        .iter()
        .any(|r| r["path"] == "docs" && r["kind"] == "dir"));
    assert!(!rows.iter().any(|r| r["path"] == "old.txt"));
    let locks: Value = serde_json::from_str(&ok(cli_in(&s.a_dir, &["locks", "--json"]))).unwrap();
    assert_eq!(locks[0]["path"], "two.txt", "{locks}");
    assert_eq!(locks[0]["device"], "laptop", "{locks}");
    assert!(locks[0]["since_ms"].is_i64() && locks[0]["expires_ms"].is_null());
}

#[test]
fn pause_stops_transfers_and_resume_finishes_them() {
    let s = setup();
    let dir = s.b_dir.to_str().unwrap();
    // The downloads under test start after A's commit: B does not fetch ahead while A uploads
    // (that would leave nothing to download; pausing what is fetched ahead drops it, see
    // `stream_follower`).
    std::fs::create_dir_all(&s.b_dir).unwrap();
    let mut command = std::process::Command::new(bin());
    command
        .args([
            "sync",
            dir,
            "--server",
            &s.server.url(),
            "--token",
            &s.token_b,
        ])
        .args(["--scan-interval", "5"])
        .env("SYNCSTORE_FETCH_AHEAD", "0");
    let b = Proc::spawn_command("client-b", s.logs(), command);
    wait_until("B's first pass", || {
        let (code, status) = status_json(&s.b_dir);
        code == 0 && status["last_pass_ms"].is_i64()
    });
    let out = ok(run(&["pause", dir]));
    assert!(out.contains("paused"), "{out}");
    let (_, status) = status_json(&s.b_dir);
    assert_eq!(status["daemon"], "paused", "{status}");

    // Paused before the change: the daemon hears of it and starts nothing.
    let first = random_bytes(32 << 20, 21);
    std::fs::write(s.a_dir.join("first.bin"), &first).unwrap();
    ok(sync_once(&s.a_dir, &s.server.url(), Some(&s.token_a)));
    wait_until("B's daemon woken while paused", || {
        b.log_text()
            .contains("paused: a remote change waits for resume")
    });
    let (_, status) = status_json(&s.b_dir);
    assert_eq!(status["daemon"], "paused", "{status}");
    assert_eq!(status["syncing"], false, "{status}");
    assert_eq!(status["transfers"], serde_json::json!([]), "{status}");
    assert!(!s.b_dir.join("first.bin").exists());
    assert_eq!(temp_files(&s.b_dir), 0, "nothing is being downloaded");
    let text = ok(run(&["status", dir]));
    assert!(text.contains("daemon: paused"), "{text}");

    let out = ok(run(&["resume", dir]));
    assert!(out.contains("resumed"), "{out}");
    wait_until("first.bin on B after resume", || {
        file_is(&s.b_dir.join("first.bin"), &first)
    });

    // Paused during a download: the transfer stops (its temp file goes), and resumes.
    const SIZE: usize = 128 << 20;
    let second = random_bytes(SIZE, 22);
    std::fs::write(s.a_dir.join("second.bin"), &second).unwrap();
    ok(sync_once(&s.a_dir, &s.server.url(), None));
    wait_until("B downloading second.bin", || {
        let (_, status) = status_json(&s.b_dir);
        transfer(&status, "second.bin").is_some_and(|t| t["bytes_done"].as_u64() > Some(0))
    });
    ok(run(&["pause", dir]));
    wait_until("B's pass stopped", || {
        let (_, status) = status_json(&s.b_dir);
        status["daemon"] == "paused"
            && status["syncing"] == false
            && status["transfers"] == serde_json::json!([])
    });
    if !s.b_dir.join("second.bin").exists() {
        // Stopped before it was placed (the likely case): nothing is left being written.
        assert_eq!(
            temp_files(&s.b_dir),
            0,
            "the stopped download left its temp file"
        );
        let (code, status) = status_json(&s.b_dir);
        assert_eq!(code, 1, "{status}");
        assert_eq!(
            status["pending"]["downloads"]["paths"][0], "second.bin",
            "{status}"
        );
    }
    ok(run(&["resume", dir]));
    wait_until("second.bin on B after resume", || {
        file_is(&s.b_dir.join("second.bin"), &second)
    });
    wait_until("B in sync", || status_json(&s.b_dir).0 == 0);
    let log = b.log_text();
    assert!(!log.contains("sync pass failed"), "{log}");
}

#[test]
fn a_second_daemon_is_refused_and_the_first_keeps_its_socket() {
    let s = setup();
    let dir = s.a_dir.to_str().unwrap();
    let mut first = start_client("client-a", s.logs(), &s.a_dir, &s.server.url(), &s.token_a);
    wait_until("A's first pass", || status_json(&s.a_dir).0 == 0);
    let socket = s.a_dir.join(".syncstore/daemon.sock");
    {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let meta = std::fs::metadata(&socket).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "the socket is private"
        );
    }
    let mut second = Proc::spawn("client-a-second", s.logs(), &["sync", dir]);
    let mut exit = None;
    wait_until("the second daemon exits", || {
        exit = second.child.try_wait().unwrap();
        exit.is_some()
    });
    assert_eq!(exit.unwrap().code(), Some(2));
    let log = second.log_text();
    assert!(
        log.contains("already being synced") && log.contains(&format!("pid {}", first.child.id())),
        "{log}"
    );
    // The refused one touched nothing: the first still answers on its socket.
    let (_, status) = status_json(&s.a_dir);
    assert_eq!(
        status["pid"].as_u64(),
        Some(u64::from(first.child.id())),
        "{status}"
    );

    // A clean stop removes the socket; then status compares by itself, pause and resume refuse.
    assert!(first.terminate().success());
    assert!(!socket.exists(), "the socket is removed on a clean stop");
    let (code, status) = status_json(&s.a_dir);
    assert_eq!(
        (code, &status["daemon"]),
        (0, &Value::from("not_running")),
        "{status}"
    );
    for command in ["pause", "resume"] {
        let out = run(&[command, dir]);
        assert_eq!(out.status.code(), Some(2), "{command}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("no syncstore daemon runs on"), "{stderr}");
    }
}
