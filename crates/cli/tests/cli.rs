//! The command line and the API refuse bad input with clear errors.

use crate::util::*;

#[test]
fn wrong_token_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &tmp.path().join("data"));
    let good = server.token("bob", "phone");
    let (status, body) = reqwest::send(
        "GET",
        &format!("{}/api/v1/tree", server.url()),
        "sst_wrong",
        None,
    );
    assert_eq!(status, 401, "{body}");
    let (status, _) = reqwest::send("GET", &format!("{}/api/v1/tree", server.url()), &good, None);
    assert_eq!(status, 200);

    let dir = tmp.path().join("folder");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("secret.txt"), "x").unwrap();
    let out = run(&[
        "sync",
        dir.to_str().unwrap(),
        "--server",
        &server.url(),
        "--token",
        "sst_wrong",
        "--once",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("401") || stderr.contains("token"),
        "{stderr}"
    );
    let (_, tree) = reqwest::send("GET", &format!("{}/api/v1/tree", server.url()), &good, None);
    assert!(
        !tree.contains("secret.txt"),
        "nothing was uploaded with a wrong token"
    );
}

#[test]
fn dotdot_path_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &tmp.path().join("data"));
    let token = server.token("carol", "laptop");
    for path in ["../escape.txt", "a/../../b", "/etc/passwd"] {
        let body = serde_json::json!({"ops": [{"op": "make_dir", "path": path, "mtime_ms": 0}]})
            .to_string();
        let (status, text) = reqwest::send(
            "POST",
            &format!("{}/api/v1/ops", server.url()),
            &token,
            Some(body),
        );
        assert_eq!(status, 400, "{path}: {text}");
        let error: serde_json::Value = serde_json::from_str(&text).expect("JSON error body");
        assert!(
            error["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{text}"
        );
    }
    let (_, tree) = reqwest::send(
        "GET",
        &format!("{}/api/v1/tree", server.url()),
        &token,
        None,
    );
    let tree: serde_json::Value = serde_json::from_str(&tree).unwrap();
    assert_eq!(
        tree["entries"].as_array().unwrap().len(),
        0,
        "nothing was created"
    );
    assert!(!tmp.path().join("escape.txt").exists());
}

#[test]
fn status_reports_differences_and_exits_zero_once_in_sync() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &tmp.path().join("data"));
    let token = server.token("dave", "laptop");
    let dir = tmp.path().join("folder");
    std::fs::create_dir_all(&dir).unwrap();
    let out = run(&[
        "sync",
        dir.to_str().unwrap(),
        "--server",
        &server.url(),
        "--token",
        &token,
        "--once",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    write(&dir.join("new.txt"), "not yet uploaded");
    // Without a daemon: counts, and with -v the paths.
    let out = run(&["status", dir.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("pending: 1 upload (16 B)") && !stdout.contains("new.txt"),
        "{stdout}"
    );
    let out = run(&["status", "-v", dir.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("upload") && l.contains("new.txt")),
        "{stdout}"
    );

    let out = run(&["sync", dir.to_str().unwrap(), "--once"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["status", dir.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("in sync"), "{stdout}");

    let out = run(&["ls", "--server", &server.url(), "--token", &token]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("new.txt") && stdout.contains("16"),
        "{stdout}"
    );
}

#[test]
fn bad_command_lines_exit_non_zero_with_a_message() {
    let out = run(&["sync"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!out.stderr.is_empty());
    let tmp = tempfile::tempdir().unwrap();
    let out = run(&["status", tmp.path().join("missing").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));
    let out = run(&["sync", tmp.path().to_str().unwrap(), "--once"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--server"));
    let out = run(&[
        "user",
        "add",
        "bad name",
        "--data",
        tmp.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid name"));
}

#[test]
fn every_command_has_help() {
    for cmd in [
        &["--help"][..],
        &["serve", "--help"],
        &["sync", "--help"],
        &["status", "--help"],
        &["pause", "--help"],
        &["resume", "--help"],
        &["ls", "--help"],
        &["locks", "--help"],
        &["demo", "--help"],
        &["user", "add", "--help"],
        &["token", "add", "--help"],
    ] {
        let out = run(cmd);
        assert!(out.status.success(), "{cmd:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{cmd:?}"
        );
    }
}

#[test]
fn demo_syncs_two_folders_and_stops_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let demo_dir = tmp.path().join("demo");
    let mut demo = Proc::spawn(
        "demo",
        tmp.path(),
        &["demo", "--dir", demo_dir.to_str().unwrap()],
    );
    wait_until("demo ready", || {
        demo.log_text().contains("Press Ctrl-C to stop.")
    });
    write(&demo_dir.join("laptop/hello.txt"), "hello from the laptop");
    wait_until("file on the desktop", || {
        read(&demo_dir.join("desktop/hello.txt")).as_deref() == Some("hello from the laptop")
    });
    write(&demo_dir.join("desktop/reply.txt"), "hi back");
    wait_until("reply on the laptop", || {
        read(&demo_dir.join("laptop/reply.txt")).as_deref() == Some("hi back")
    });
    assert!(demo.terminate().success(), "demo exits 0 on SIGTERM");
}
