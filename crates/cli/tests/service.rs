//! Issue 15, running the client like a service: tokens out of a daemon's command line, a
//! token saved only once the server accepted it, `syncstore login`, one `syncstore daemon` for
//! several folders, and the generated completions and man pages.

use crate::util::*;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The command line of a running process, as any local user can read it.
fn cmdline(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).expect("read cmdline");
    String::from_utf8_lossy(&raw).replace('\0', " ")
}

fn config_path(dir: &Path) -> std::path::PathBuf {
    dir.join(".syncstore").join("config.json")
}

/// `syncstore login DIR --server URL` with the token on stdin (no terminal).
fn login(dir: &Path, server: &str, token: &str) -> std::process::Output {
    let mut child = Command::new(bin())
        .args(["login", dir.to_str().unwrap(), "--server", server])
        .env("RUST_LOG", "warn")
        .env_remove("SYNCSTORE_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn login");
    writeln!(child.stdin.take().unwrap(), "{token}").unwrap();
    child.wait_with_output().expect("login")
}

#[test]
fn a_daemon_started_with_a_token_flag_does_not_show_it() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &tmp.path().join("data"));
    let token = server.token("me", "laptop");
    let dir = tmp.path().join("sync");
    let mut client = start_client("client", tmp.path(), &dir, &server.url(), &token);
    let pid = client.child.id();
    // Saved once the server accepted it; by then the process runs without it in its argv.
    wait_until("the folder's config saved", || config_path(&dir).is_file());
    let line = cmdline(pid);
    assert!(line.contains("sync"), "{line}");
    assert!(!line.contains(&token), "the token is visible: {line}");
    // And it syncs.
    write(&dir.join("hello.txt"), "hello\n");
    wait_until("hello.txt on the server", || {
        server.entry(&token, "hello.txt").is_some()
    });
    assert!(client.terminate().success());

    // The server's access log at the default level: one line per request, naming the user and
    // the device, never the token.
    let log = server.proc.log_text();
    let upload = log
        .lines()
        .find(|line| line.contains("request") && line.contains("path=/api/v1/ops"))
        .unwrap_or_else(|| panic!("no access-log line for the ops request:\n{log}"));
    for field in [
        "method=POST",
        "status=200",
        "user=me",
        "device=laptop",
        "peer=127.0.0.1:",
        "bytes_in=",
        "bytes_out=",
        "ms=",
    ] {
        assert!(upload.contains(field), "{field} missing in {upload}");
    }
    // A streamed upload (no Content-Length) counts the bytes read.
    let upload_in: Vec<u64> = log
        .lines()
        .filter(|line| line.contains("path=/api/v1/chunks/upload") && line.contains("status=200"))
        .filter_map(|line| {
            line.split("bytes_in=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(
        upload_in.iter().any(|bytes| *bytes >= 6),
        "no upload line with the file's bytes: {upload_in:?}\n{log}"
    );
    assert!(!log.contains(&token), "the token is in the server's log");
}

#[test]
fn login_then_sync_keeps_the_token_out_of_argv_and_a_refused_token_is_never_saved() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &tmp.path().join("data"));
    let token = server.token("me", "laptop");
    let dir = tmp.path().join("sync");

    // A wrong token: refused, nothing saved, a message that says what to do.
    let out = login(&dir, &server.url(), "sst_not_a_token");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refused the token"), "{stderr}");
    assert!(stderr.contains("nothing was saved"), "{stderr}");
    assert!(!config_path(&dir).exists());
    let out = sync_once(&dir, &server.url(), Some("sst_not_a_token"));
    assert_eq!(out.status.code(), Some(2));
    assert!(!config_path(&dir).exists(), "a refused token was saved");

    // A server that cannot be reached: nothing saved either.
    let out = sync_once(
        &dir,
        &format!("http://127.0.0.1:{}", free_port()),
        Some(&token),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!config_path(&dir).exists(), "an unchecked token was saved");

    // The right one.
    let out = login(&dir, &server.url(), &token);
    assert!(out.status.success(), "{out:?}");
    let saved = std::fs::read_to_string(config_path(&dir)).unwrap();
    assert!(saved.contains(&token));
    let mut client = restart_client("client", tmp.path(), &dir);
    write(&dir.join("a.txt"), "a\n");
    wait_until("a.txt on the server", || {
        server.entry(&token, "a.txt").is_some()
    });
    assert!(!cmdline(client.child.id()).contains("sst_"));
    assert!(client.terminate().success());

    // A new token replaces the saved one; a refused one leaves it as it was.
    let second = server.token("me", "laptop-2");
    assert!(!login(&dir, &server.url(), "sst_wrong").status.success());
    assert_eq!(std::fs::read_to_string(config_path(&dir)).unwrap(), saved);
    assert!(login(&dir, &server.url(), &second).status.success());
    assert!(std::fs::read_to_string(config_path(&dir))
        .unwrap()
        .contains(&second));
}

#[test]
fn one_daemon_syncs_every_folder_of_its_config() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &tmp.path().join("data"));
    // Two accounts, so the folders are independent namespaces.
    let alice = server.token("alice", "daemon");
    let alice_peer = server.token("alice", "peer");
    let bob = server.token("bob", "daemon");
    let bob_peer = server.token("bob", "peer");
    let alice_dir = tmp.path().join("alice");
    let bob_dir = tmp.path().join("bob");
    std::fs::create_dir_all(&alice_dir).unwrap();
    std::fs::create_dir_all(&bob_dir).unwrap();
    // A third folder (Alice's too) is missing at start: the daemon waits for it.
    let late_dir = tmp.path().join("late");
    let bob_token_file = tmp.path().join("bob.token");
    std::fs::write(&bob_token_file, format!("{bob}\n")).unwrap();
    let config = tmp.path().join("config.toml");
    // Alice's folder uses the shared account; Bob's names its own token file.
    std::fs::write(
        &config,
        format!(
            "scan_interval = 5\n\
             [account]\nservers = [\"{url}\"]\ntoken = \"{alice}\"\n\n\
             [[folder]]\npath = \"{alice_dir}\"\n\n\
             [[folder]]\npath = \"{bob_dir}\"\ntoken_file = \"{bob_file}\"\n\n\
             [[folder]]\npath = \"{late_dir}\"\n",
            url = server.url(),
            alice_dir = alice_dir.display(),
            bob_dir = bob_dir.display(),
            bob_file = bob_token_file.display(),
            late_dir = late_dir.display(),
        ),
    )
    .unwrap();
    // An inline token in a file others can read is refused.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(&["daemon", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();

    let mut daemon = Proc::spawn(
        "daemon",
        tmp.path(),
        &["daemon", "--config", config.to_str().unwrap()],
    );
    let alice_peer_dir = tmp.path().join("alice-peer");
    let bob_peer_dir = tmp.path().join("bob-peer");
    let _alice_peer = start_client(
        "alice-peer",
        tmp.path(),
        &alice_peer_dir,
        &server.url(),
        &alice_peer,
    );
    let _bob_peer = start_client(
        "bob-peer",
        tmp.path(),
        &bob_peer_dir,
        &server.url(),
        &bob_peer,
    );

    // Up from each daemon folder, down into each.
    write(&alice_dir.join("from-daemon.txt"), "alice up\n");
    write(&bob_peer_dir.join("from-peer.txt"), "bob down\n");
    wait_until("alice's file at her peer", || {
        read(&alice_peer_dir.join("from-daemon.txt")).as_deref() == Some("alice up\n")
    });
    wait_until("bob's file in the daemon's folder", || {
        read(&bob_dir.join("from-peer.txt")).as_deref() == Some("bob down\n")
    });
    // The namespaces stay apart.
    assert!(!bob_dir.join("from-daemon.txt").exists());
    assert!(!alice_dir.join("from-peer.txt").exists());
    // Each folder has its own control socket: status asks the daemon.
    let status = run(&["status", alice_dir.to_str().unwrap(), "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
    assert_eq!(status["daemon"], "running", "{status}");
    assert_eq!(status["pid"], daemon.child.id(), "{status}");
    // The missing folder was waited for, not created; once it is there, it syncs too.
    assert!(!late_dir.exists());
    assert!(daemon
        .log_text()
        .contains("waiting for the folder to appear"));
    std::fs::create_dir(&late_dir).unwrap();
    write(&late_dir.join("late.txt"), "late\n");
    wait_until_for(
        "the late folder's file at alice's peer",
        3 * DEADLINE / 2,
        &mut || read(&alice_peer_dir.join("late.txt")).as_deref() == Some("late\n"),
    );
    assert!(daemon.terminate().success(), "{}", daemon.log_text());
}

#[test]
fn completions_and_man_pages_are_generated() {
    let out = ok(run(&["completions", "bash"]));
    assert!(
        out.contains("_syncstore()"),
        "{}",
        &out[..out.len().min(200)]
    );
    assert!(out.contains("login") && out.contains("daemon"));
    let zsh = ok(run(&["completions", "zsh"]));
    assert!(
        zsh.starts_with("#compdef syncstore"),
        "{}",
        &zsh[..zsh.len().min(200)]
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("man");
    ok(run(&["man", "--dir", dir.to_str().unwrap()]));
    let page = std::fs::read_to_string(dir.join("syncstore.1")).unwrap();
    assert!(
        page.contains(".TH syncstore"),
        "{}",
        &page[..page.len().min(200)]
    );
    let sync = std::fs::read_to_string(dir.join("syncstore-sync.1")).unwrap();
    assert!(sync.contains("token\\-file"), "{sync}");
}
