//! File locking end to end: a server and two devices of one user (issue 4).

use crate::util::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

struct Two {
    _tmp: tempfile::TempDir,
    server: Server,
    a_dir: PathBuf,
    b_dir: PathBuf,
    token_a: String,
    token_b: String,
    _a: Option<Proc>,
    _b: Option<Proc>,
}

fn two_devices() -> Two {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &tmp.path().join("data"));
    let token_a = server.token("erin", "laptop");
    let token_b = server.token("erin", "desktop");
    let a_dir = tmp.path().join("a");
    let b_dir = tmp.path().join("b");
    let a = start_client("client-a", tmp.path(), &a_dir, &server.url(), &token_a);
    let b = start_client("client-b", tmp.path(), &b_dir, &server.url(), &token_b);
    Two {
        _tmp: tmp,
        server,
        a_dir,
        b_dir,
        token_a,
        token_b,
        _a: Some(a),
        _b: Some(b),
    }
}

fn cli_in(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin())
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run syncstore")
}

fn is_read_only(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o222 == 0)
}

/// A user's edit of a read-only file: they make it writable first, as an editor would ask to.
fn force_write(path: &Path, text: &str) {
    let mut perms = std::fs::metadata(path).unwrap().permissions();
    perms.set_mode(perms.mode() | 0o200);
    std::fs::set_permissions(path, perms).unwrap();
    std::fs::write(path, text).unwrap();
}

fn server_content(t: &Two, path: &str) -> Option<String> {
    t.server
        .entry(&t.token_a, path)
        .map(|entry| entry.hash.unwrap_or_default())
}

fn syncstore_blake3(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

fn status_of(dir: &Path) -> (i32, String) {
    let out = run(&["status", "-v", dir.to_str().unwrap()]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn locked_file_is_read_only_elsewhere_and_edits_wait_for_unlock() {
    let t = two_devices();
    write(&t.a_dir.join("sheet.csv"), "v1");
    write(&t.a_dir.join("other.csv"), "o1");
    wait_until("files on B", || {
        read(&t.b_dir.join("sheet.csv")).as_deref() == Some("v1")
            && read(&t.b_dir.join("other.csv")).is_some()
    });

    // A locks both files, by local path from inside its folder.
    ok(cli_in(&t.a_dir, &["lock", "sheet.csv"]));
    ok(cli_in(&t.a_dir, &["lock", "other.csv"]));
    wait_until("sheet read-only on B", || {
        is_read_only(&t.b_dir.join("sheet.csv")) && is_read_only(&t.b_dir.join("other.csv"))
    });
    assert!(
        !is_read_only(&t.a_dir.join("sheet.csv")),
        "the holder can still write"
    );
    let listing = ok(cli_in(&t.b_dir, &["ls"]));
    assert!(
        listing
            .lines()
            .any(|l| l.contains("sheet.csv") && l.contains("locked by laptop")),
        "{listing}"
    );
    let locks = ok(cli_in(&t.b_dir, &["locks"]));
    assert!(
        locks.contains("sheet.csv") && locks.contains("laptop") && locks.contains("when unlocked"),
        "{locks}"
    );

    // A's edits still reach B.
    write(&t.a_dir.join("sheet.csv"), "v2 by holder");
    wait_until("holder's edit on B", || {
        read(&t.b_dir.join("sheet.csv")).as_deref() == Some("v2 by holder")
    });
    wait_until("still read-only after the update", || {
        is_read_only(&t.b_dir.join("sheet.csv"))
    });

    // B edits both anyway: nothing is uploaded, status shows them blocked.
    force_write(&t.b_dir.join("sheet.csv"), "v3 by desktop");
    force_write(&t.b_dir.join("other.csv"), "o2 by desktop");
    wait_until("B's status shows both blocked", || {
        let (code, text) = status_of(&t.b_dir);
        code == 1
            && text
                .lines()
                .filter(|l| l.contains("blocked") && l.contains("locked by laptop"))
                .count()
                == 2
    });
    assert_eq!(
        server_content(&t, "sheet.csv"),
        Some(syncstore_blake3(b"v2 by holder"))
    );
    assert_eq!(
        server_content(&t, "other.csv"),
        Some(syncstore_blake3(b"o1"))
    );
    assert_eq!(
        read(&t.b_dir.join("sheet.csv")).as_deref(),
        Some("v3 by desktop"),
        "B's edit stays on disk"
    );

    // The holder changes sheet.csv again, then unlocks both.
    write(&t.a_dir.join("sheet.csv"), "v4 by holder");
    wait_until("v4 on server", || {
        server_content(&t, "sheet.csv") == Some(syncstore_blake3(b"v4 by holder"))
    });
    ok(cli_in(&t.a_dir, &["unlock", "sheet.csv"]));
    ok(cli_in(&t.a_dir, &["unlock", "other.csv"]));

    // other.csv: unchanged on the server meanwhile, so B's edit simply syncs.
    wait_until("B's pending edit reaches A", || {
        read(&t.a_dir.join("other.csv")).as_deref() == Some("o2 by desktop")
    });
    // sheet.csv: changed on the server meanwhile, so B's edit becomes a conflicted copy; nothing lost.
    wait_until("conflict resolved on both", || {
        [&t.a_dir, &t.b_dir].iter().all(|dir| {
            let snap = snapshot(dir);
            snap.get("sheet.csv").cloned().flatten().as_deref() == Some(&b"v4 by holder"[..])
                && snap.iter().any(|(name, bytes)| {
                    name.starts_with("sheet (conflicted copy from desktop ")
                        && bytes.as_deref() == Some(&b"v3 by desktop"[..])
                })
        })
    });
    wait_until("B's files writable again", || {
        !is_read_only(&t.b_dir.join("sheet.csv")) && !is_read_only(&t.b_dir.join("other.csv"))
    });
    wait_same(&t.a_dir, &t.b_dir);
}

#[test]
fn delete_held_back_by_a_lock_is_never_replayed_over_a_newer_version() {
    let t = two_devices();
    write(&t.a_dir.join("design.txt"), "draft");
    // Another file, so that B's delete does not empty its folder (that is row 29's guard, not a lock).
    write(&t.a_dir.join("readme.txt"), "keep");
    wait_until("files on B", || {
        read(&t.b_dir.join("design.txt")).is_some() && read(&t.b_dir.join("readme.txt")).is_some()
    });
    ok(cli_in(&t.a_dir, &["lock", "design.txt"]));
    wait_until("read-only on B", || {
        is_read_only(&t.b_dir.join("design.txt"))
    });
    std::fs::remove_file(t.b_dir.join("design.txt")).unwrap();
    wait_until("B's delete blocked", || {
        let (_, text) = status_of(&t.b_dir);
        text.lines()
            .any(|l| l.contains("blocked") && l.contains("design.txt"))
    });
    assert!(
        server_content(&t, "design.txt").is_some(),
        "the delete was not sent"
    );
    write(&t.a_dir.join("design.txt"), "final by holder");
    wait_until("edit on server", || {
        server_content(&t, "design.txt") == Some(syncstore_blake3(b"final by holder"))
    });
    ok(cli_in(&t.a_dir, &["unlock", "design.txt"]));
    wait_until("A's edit back on B", || {
        read(&t.b_dir.join("design.txt")).as_deref() == Some("final by holder")
    });
    wait_same(&t.a_dir, &t.b_dir);
    assert_eq!(
        read(&t.a_dir.join("design.txt")).as_deref(),
        Some("final by holder")
    );
}

#[test]
fn lock_with_ttl_expires_by_itself() {
    let t = two_devices();
    write(&t.a_dir.join("notes.md"), "one");
    wait_until("file on B", || read(&t.b_dir.join("notes.md")).is_some());
    ok(cli_in(&t.a_dir, &["lock", "notes.md", "--ttl", "3s"]));
    let locks = ok(cli_in(&t.a_dir, &["locks"]));
    assert!(
        locks.contains("notes.md") && !locks.contains("when unlocked"),
        "{locks}"
    );
    wait_until("read-only on B", || is_read_only(&t.b_dir.join("notes.md")));
    force_write(&t.b_dir.join("notes.md"), "two by desktop");
    // Nobody unlocks: once the TTL passes, B's edit is uploaded and reaches A.
    wait_until("edit after expiry", || {
        read(&t.a_dir.join("notes.md")).as_deref() == Some("two by desktop")
    });
    let locks = ok(cli_in(&t.a_dir, &["locks"]));
    assert!(!locks.contains("notes.md"), "{locks}");
}

#[test]
fn force_breaks_a_lock_and_the_holder_is_told() {
    let t = two_devices();
    write(&t.a_dir.join("plan.txt"), "x");
    wait_until("file on B", || read(&t.b_dir.join("plan.txt")).is_some());
    ok(cli_in(&t.a_dir, &["lock", "plan.txt"]));
    // Without --force B is refused and told who holds it.
    let out = cli_in(&t.b_dir, &["unlock", "plan.txt"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("locked by laptop since"), "{stderr}");
    // Locking a file another device holds fails with the same message.
    let out = cli_in(&t.b_dir, &["lock", "plan.txt"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("locked by laptop since"));
    ok(cli_in(&t.b_dir, &["unlock", "plan.txt", "--force"]));
    let a_log = t._a.as_ref().unwrap();
    wait_until("holder told", || {
        a_log.log_text().contains("was broken by desktop")
    });
    let locks = ok(cli_in(&t.a_dir, &["locks"]));
    assert!(!locks.contains("plan.txt"), "{locks}");
}

#[test]
fn lock_survives_a_server_restart() {
    let mut t = two_devices();
    write(&t.a_dir.join("keep.txt"), "k");
    wait_until("file on B", || read(&t.b_dir.join("keep.txt")).is_some());
    ok(cli_in(&t.a_dir, &["lock", "keep.txt"]));
    t.server.kill9_and_restart();
    let locks = ok(cli_in(&t.b_dir, &["locks"]));
    assert!(
        locks.contains("keep.txt") && locks.contains("laptop"),
        "{locks}"
    );
    // An op from B on the locked file is still refused with 423.
    let entry = t.server.entry(&t.token_b, "keep.txt").unwrap();
    let delete =
        serde_json::json!({"ops": [{"op": "delete", "path": "keep.txt", "base": entry.rev}]})
            .to_string();
    let (status, body) = reqwest::send(
        "POST",
        &format!("{}/api/v1/ops", t.server.url()),
        &t.token_b,
        Some(delete),
    );
    assert_eq!(status, 200, "{body}");
    let response: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(response["results"][0]["status"], 423, "{body}");
    assert!(
        response["results"][0]["message"]
            .as_str()
            .unwrap()
            .contains("locked by laptop"),
        "{body}"
    );
}

#[test]
fn fifty_concurrent_lock_attempts_yield_exactly_one_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &tmp.path().join("data"));
    let first = server.token("frank", "device-0");
    let mut tokens = vec![first.clone()];
    for i in 1..50 {
        tokens.push(server.token("frank", &format!("device-{i}")));
    }
    // A file to lock.
    let mkdir = serde_json::json!({"ops": [{"op": "make_dir", "path": "shared", "mtime_ms": 0}]})
        .to_string();
    let (status, _) = reqwest::send(
        "POST",
        &format!("{}/api/v1/ops", server.url()),
        &first,
        Some(mkdir),
    );
    assert_eq!(status, 200);
    let url = format!("{}/api/v1/locks", server.url());
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(tokens.len()));
    let handles: Vec<_> = tokens
        .into_iter()
        .map(|token| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                reqwest::send(
                    "POST",
                    &url,
                    &token,
                    Some(r#"{"path":"shared"}"#.to_owned()),
                )
                .0
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 423).count(),
        49,
        "{statuses:?}"
    );
}

#[test]
fn bad_lock_requests_get_clear_errors() {
    let t = two_devices();
    write(&t.a_dir.join("real.txt"), "r");
    wait_until("file on server", || {
        server_content(&t, "real.txt").is_some()
    });
    let out = cli_in(&t.a_dir, &["lock", "does-not-exist.txt"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!out.stderr.is_empty());
    let out = cli_in(&t.a_dir, &["lock", "real.txt", "--ttl", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid --ttl"));
    let out = cli_in(&t.a_dir, &["unlock", "real.txt"]);
    assert_eq!(out.status.code(), Some(2), "no lock to release");
}
