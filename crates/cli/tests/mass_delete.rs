//! Issue 14, the mass-delete interlock: "a remote mass delete is held by the interlock until
//! allowed". A device that deleted most of the folder uploads its deletes (they are the user's
//! intent); the other device deletes none of them until `syncstore sync DIR
//! --allow-mass-delete`, and says so in `status` and its log.

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

/// The setup, with 300 files in A (`d0/`, `d1/`, `d2/`, 100 each), uploaded.
fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &tmp.path().join("data"));
    let token_a = server.token("alice", "laptop");
    let token_b = server.token("alice", "desktop");
    let a_dir = tmp.path().join("a");
    let b_dir = tmp.path().join("b");
    for dir_idx in 0..3 {
        for file_idx in 0..100 {
            let name = format!("d{dir_idx}/f{file_idx:03}.txt");
            write(&a_dir.join(&name), &format!("file {name}\n"));
        }
    }
    ok(sync_once(&a_dir, &server.url(), Some(&token_a)));
    std::fs::create_dir_all(&b_dir).unwrap();
    Setup {
        tmp,
        server,
        a_dir,
        b_dir,
        token_a,
        token_b,
    }
}

/// Deletes 250 of A's 300 files (`d0/` and `d1/` whole, half of `d2/`) and uploads the deletes.
fn delete_250_on_a(s: &Setup) {
    std::fs::remove_dir_all(s.a_dir.join("d0")).unwrap();
    std::fs::remove_dir_all(s.a_dir.join("d1")).unwrap();
    for file_idx in 0..50 {
        std::fs::remove_file(s.a_dir.join(format!("d2/f{file_idx:03}.txt"))).unwrap();
    }
    ok(sync_once(&s.a_dir, &s.server.url(), None));
    let on_server = s
        .server
        .tree(&s.token_a)
        .iter()
        .filter(|entry| entry.hash.is_some())
        .count();
    assert_eq!(on_server, 50, "A's deletes reached the server");
}

/// `status --json DIR`: exit code and the parsed document.
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

fn n_files(dir: &Path) -> usize {
    files(dir).len()
}

#[test]
fn a_remote_mass_delete_is_held_by_the_interlock_until_allowed() {
    let s = setup();
    let b = start_client("client-b", s.logs(), &s.b_dir, &s.server.url(), &s.token_b);
    wait_same(&s.a_dir, &s.b_dir);

    delete_250_on_a(&s);
    // B holds: status says so with the counts, and every file is still there.
    let mut held = Value::Null;
    wait_until("B's status shows the mass delete held", || {
        let (code, status) = status_json(&s.b_dir);
        if !status["mass_delete_held"].is_object() {
            return false;
        }
        assert_eq!(code, 1, "a held mass delete is not in sync: {status}");
        held = status;
        true
    });
    assert_eq!(
        held["mass_delete_held"],
        serde_json::json!({"files": 250, "folder_files": 300}),
        "{held}"
    );
    assert_eq!(held["in_sync"], false, "{held}");
    assert_eq!(held["pending"]["local_deletes"]["files"], 0, "{held}");
    assert!(
        held["blocked"][0]["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("--allow-mass-delete")),
        "{held}"
    );
    assert_eq!(n_files(&s.b_dir), 300, "nothing was deleted on B");
    let text =
        String::from_utf8_lossy(&run(&["status", s.b_dir.to_str().unwrap()]).stdout).into_owned();
    assert!(
        text.contains("mass delete held: 250 of 300 files") && text.contains("--allow-mass-delete"),
        "{text}"
    );

    // Everything else still syncs meanwhile, and the hold is logged once, not once per pass.
    write(&s.a_dir.join("new.txt"), "written while B holds\n");
    ok(sync_once(&s.a_dir, &s.server.url(), None));
    wait_until("B downloads new.txt while holding", || {
        read(&s.b_dir.join("new.txt")).as_deref() == Some("written while B holds\n")
    });
    let (_, status) = status_json(&s.b_dir);
    assert_eq!(
        status["mass_delete_held"]["files"], 250,
        "still held after another pass: {status}"
    );
    assert_eq!(n_files(&s.b_dir), 301);
    let log = b.log_text();
    let warnings = log
        .lines()
        .filter(|line| line.contains("WARN") && line.contains("--allow-mass-delete"))
        .count();
    assert_eq!(warnings, 1, "one WARN per hold:\n{log}");
    assert!(log.contains("250 of the folder's 300 files"), "{log}");

    // Allowed: the running daemon is told, and deletes them.
    let out = ok(run(&[
        "sync",
        s.b_dir.to_str().unwrap(),
        "--allow-mass-delete",
    ]));
    assert!(out.contains("250 files held"), "{out}");
    wait_same(&s.a_dir, &s.b_dir);
    assert_eq!(n_files(&s.b_dir), 51);
    assert!(!s.b_dir.join("d0").exists() && !s.b_dir.join("d1").exists());
    wait_until("B's status is in sync, nothing held", || {
        let (code, status) = status_json(&s.b_dir);
        code == 0 && status["mass_delete_held"].is_null()
    });
    assert!(b.log_text().contains("the held deletions go, as allowed"));
}

#[test]
fn remote_deletes_under_the_threshold_go_at_once() {
    let s = setup();
    let b = start_client("client-b", s.logs(), &s.b_dir, &s.server.url(), &s.token_b);
    wait_same(&s.a_dir, &s.b_dir);
    // 50 of 300 files: under the default's 50 % and 100 files.
    for file_idx in 0..50 {
        std::fs::remove_file(s.a_dir.join(format!("d0/f{file_idx:03}.txt"))).unwrap();
    }
    ok(sync_once(&s.a_dir, &s.server.url(), None));
    wait_same(&s.a_dir, &s.b_dir);
    assert_eq!(n_files(&s.b_dir), 250);
    // The files are gone before the pass that deleted them ends: its status, polled.
    let mut status = Value::Null;
    wait_until("B's status is in sync", || {
        let code;
        (code, status) = status_json(&s.b_dir);
        code == 0
    });
    assert!(status["mass_delete_held"].is_null(), "{status}");
    assert!(
        !b.log_text().contains("--allow-mass-delete"),
        "nothing held"
    );
}

#[test]
fn without_a_daemon_the_hold_is_kept_across_runs_until_allowed() {
    let s = setup();
    ok(sync_once(&s.b_dir, &s.server.url(), Some(&s.token_b)));
    assert_eq!(n_files(&s.b_dir), 300);
    delete_250_on_a(&s);

    let out = sync_once(&s.b_dir, &s.server.url(), None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("held: 250 of the folder's 300 files")
            && stderr.contains("--allow-mass-delete"),
        "{stderr}"
    );
    assert_eq!(n_files(&s.b_dir), 300, "nothing was deleted on B");
    let (code, status) = status_json(&s.b_dir);
    assert_eq!(code, 1, "{status}");
    assert_eq!(status["daemon"], "not_running", "{status}");
    assert_eq!(
        status["mass_delete_held"],
        serde_json::json!({"files": 250, "folder_files": 300}),
        "{status}"
    );

    // A writes 300 new files (as ransomware writes an encrypted copy of each): B downloads
    // them, and the hold, saved in B's state, is not diluted away by them.
    for file_idx in 0..300 {
        write(
            &s.a_dir.join(format!("new/g{file_idx:03}.txt")),
            &format!("new {file_idx}\n"),
        );
    }
    ok(sync_once(&s.a_dir, &s.server.url(), None));
    let out = sync_once(&s.b_dir, &s.server.url(), None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("held: 250 of the folder's 600 files"),
        "{stderr}"
    );
    assert_eq!(n_files(&s.b_dir), 600);

    // Allowed without a daemon: this run deletes them.
    let out = ok(run(&[
        "sync",
        s.b_dir.to_str().unwrap(),
        "--once",
        "--allow-mass-delete",
    ]));
    assert!(out.contains("in sync"), "{out}");
    assert_eq!(files(&s.a_dir), files(&s.b_dir));
    assert_eq!(n_files(&s.b_dir), 350);
    let (code, status) = status_json(&s.b_dir);
    assert_eq!(code, 0, "{status}");
    assert!(status["mass_delete_held"].is_null(), "{status}");
}

#[test]
fn mass_delete_percent_100_turns_the_interlock_off() {
    let s = setup();
    ok(sync_once(&s.b_dir, &s.server.url(), Some(&s.token_b)));
    delete_250_on_a(&s);
    // A percent over 100 is refused.
    let b_dir = s.b_dir.to_str().unwrap();
    let refused = run(&["sync", b_dir, "--once", "--mass-delete-percent", "150"]);
    assert_eq!(refused.status.code(), Some(2));
    // The env var, as the flag.
    let out = std::process::Command::new(bin())
        .args(["sync", b_dir, "--once"])
        .env("SYNCSTORE_MASS_DELETE_PERCENT", "100")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run syncstore");
    let stdout = ok(out);
    assert!(stdout.contains("in sync"), "{stdout}");
    assert_eq!(n_files(&s.b_dir), 50);
}

/// `syncstore trash --json` run inside `dir`: the deleted files' paths.
fn trash_paths(dir: &Path) -> Vec<String> {
    let out = std::process::Command::new(bin())
        .args(["trash", "--json"])
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run syncstore");
    let text = ok(out);
    let trash: Value = serde_json::from_str(&text).unwrap_or_else(|err| panic!("{err}: {text}"));
    trash["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries: {trash}"))
        .iter()
        .filter_map(|entry| entry["path"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_remote_mass_delete_uploaded_in_batches_is_held_once_they_add_up() {
    let s = setup();
    let b = start_client("client-b", s.logs(), &s.b_dir, &s.server.url(), &s.token_b);
    wait_same(&s.a_dir, &s.b_dir);
    let name = |file_idx: usize| format!("d{}/f{:03}.txt", file_idx / 100, file_idx % 100);

    // A deletes 240 of the 300 files in 4 runs of 60. Each is under the limit on its own (more
    // than 50 % and more than 100), but B counts the deletions it applied in the last 10
    // minutes with each plan's: 60, then 120 of 300 go; 180 of 300 is over the limit.
    for batch_idx in 0..4 {
        let batch: Vec<String> = (batch_idx * 60..(batch_idx + 1) * 60).map(name).collect();
        for path in &batch {
            std::fs::remove_file(s.a_dir.join(path)).unwrap();
        }
        ok(sync_once(&s.a_dir, &s.server.url(), None));
        wait_until("the server's trash has the batch", || {
            let trash = trash_paths(&s.a_dir);
            batch.iter().all(|path| trash.contains(path))
        });
        match batch_idx {
            0 | 1 => {
                let left = 300 - 60 * (batch_idx + 1);
                wait_until(&format!("B deletes batch {batch_idx}"), || {
                    n_files(&s.b_dir) == left
                });
            }
            _ => {
                let counted = 60 * (batch_idx + 1);
                wait_until(&format!("B holds batch {batch_idx}"), || {
                    let (_, status) = status_json(&s.b_dir);
                    status["mass_delete_held"]
                        == serde_json::json!({"files": counted, "folder_files": 300})
                });
            }
        }
    }
    // The first two batches were deleted on B, the last two are held.
    assert_eq!(n_files(&s.b_dir), 180);
    let (code, status) = status_json(&s.b_dir);
    assert_eq!(code, 1, "{status}");
    assert_eq!(status["in_sync"], false, "{status}");
    assert!(b.log_text().contains("180 of the folder's 300 files"));

    // Allowed: the rest goes, and B is in sync with A.
    ok(run(&[
        "sync",
        s.b_dir.to_str().unwrap(),
        "--allow-mass-delete",
    ]));
    wait_same(&s.a_dir, &s.b_dir);
    assert_eq!(n_files(&s.b_dir), 60);
    wait_until("B's status is in sync, nothing held", || {
        let (code, status) = status_json(&s.b_dir);
        code == 0 && status["mass_delete_held"].is_null()
    });
}
