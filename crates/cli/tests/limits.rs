//! Issue 10: one client cannot hurt the others (limits), private file modes, and a corrupt
//! client state database that names itself and can be moved aside safely.

use crate::util::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs the binary, killing it and failing the test if it takes longer than `deadline`.
fn run_within(args: &[&str], deadline: Duration) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run syncstore");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "`syncstore {}` did not finish within {deadline:?}; stderr: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// A `serve` on the embedded stores in `data`, with umask 000 (so only explicit modes keep
/// files private) and, when given, a soft limit on open files.
fn spawn_server(
    log_dir: &Path,
    data: &Path,
    port: u16,
    soft_file_limit: Option<libc::rlim_t>,
) -> Proc {
    let log = log_dir.join("server.log");
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .expect("open log");
    let listen = format!("127.0.0.1:{port}");
    let mut command = Command::new(bin());
    command
        .args([
            "serve",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            &listen,
        ])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("clone log"))
        .stderr(log_file);
    // SAFETY: umask and setrlimit are async-signal-safe; nothing else runs in the child.
    unsafe {
        command.pre_exec(move || {
            libc::umask(0);
            if let Some(soft) = soft_file_limit {
                let mut limit = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                limit.rlim_cur = soft.min(limit.rlim_max);
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command.spawn().expect("spawn syncstore serve");
    let proc = Proc {
        child,
        log,
        name: "server".to_owned(),
    };
    let url = format!("http://127.0.0.1:{port}/api/v1/health");
    wait_until("server health endpoint", || reqwest::blocking_get_ok(&url));
    proc
}

/// A device token for `user` on the embedded stores in `data`.
fn token(data: &Path, user: &str, device: &str) -> String {
    let data = data.to_str().unwrap();
    let out = run(&["user", "add", user, "--device", device, "--data", data]);
    let out = if out.status.success() {
        out
    } else {
        run(&["token", "add", user, "--device", device, "--data", data])
    };
    let stdout = ok(out);
    stdout.lines().last().expect("token line").trim().to_owned()
}

/// A GET with a bearer token that must be answered within 10 s.
fn get_within(url: &str, token: &str) -> (u16, String) {
    reqwest::runtime().block_on(async {
        let response = ::reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|err| panic!("GET {url} was not answered within 10 s: {err}"));
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    })
}

/// Raises this process's soft limit on open files to the hard limit; returns the new soft limit.
fn raise_own_file_limit() -> libc::rlim_t {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    limit.rlim_cur
}

/// Opens a connection and sends `head` (may be empty or incomplete).
fn connect_and_send(port: u16, head: &str) -> TcpStream {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
    if !head.is_empty() {
        stream.write_all(head.as_bytes()).expect("send head");
    }
    stream
}

/// Whether the server has neither answered nor closed `stream`.
fn still_open(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let open = matches!(
        (&*stream).read(&mut byte),
        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock
    );
    stream.set_nonblocking(false).unwrap();
    open
}

/// Sends `head` on a fresh connection and reads the answer until the server closes it or it is
/// complete (by Content-Length); returns status and body.
fn raw_request(port: u16, head: &str) -> (u16, String) {
    let mut stream = connect_and_send(port, head);
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
            Err(err) => panic!(
                "no complete answer ({err}); got {:?}",
                String::from_utf8_lossy(&answer)
            ),
        }
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head.lines().find_map(|line| {
                let line = line.to_ascii_lowercase();
                line.strip_prefix("content-length:")
                    .and_then(|len| len.trim().parse::<usize>().ok())
            });
            if len.is_some_and(|len| body.len() >= len) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, body.to_owned())
}

/// The `error` of an `ErrorBody`.
fn error_message(body: &str) -> String {
    let value: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|err| panic!("{err}: {body:?}"));
    value["error"].as_str().expect("error field").to_owned()
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn one_users_stalled_uploads_do_not_stop_another_users_transfers() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &tmp.path().join("data"));
    let alice = server.token("alice", "laptop");
    let bob_desk = server.token("bob", "desk");
    let bob_laptop = server.token("bob", "laptop");
    let desk = tmp.path().join("bob-desk");
    let laptop = tmp.path().join("bob-laptop");
    std::fs::create_dir_all(&desk).unwrap();
    std::fs::create_dir_all(&laptop).unwrap();
    let content: Vec<u8> = (0..3_000_000u32).map(|idx| (idx % 251) as u8).collect();
    std::fs::write(desk.join("report.bin"), &content).unwrap();
    ok(sync_once(&desk, &server.url(), Some(&bob_desk)));

    // Sixteen uploads by alice (as many as the server ran at once in total): the head with a
    // valid token and a body length, then nothing.
    let head = format!(
        "POST /api/v1/chunks/upload HTTP/1.1\r\nhost: 127.0.0.1:{}\r\nauthorization: Bearer {alice}\r\ncontent-type: application/octet-stream\r\ncontent-length: 100000000\r\n\r\n",
        server.port
    );
    let stalled: Vec<TcpStream> = (0..16)
        .map(|_| connect_and_send(server.port, &head))
        .collect();
    // Let the server pick them up; there is nothing to observe from outside.
    std::thread::sleep(Duration::from_millis(500));

    let started = Instant::now();
    let out = run_within(
        &[
            "sync",
            laptop.to_str().unwrap(),
            "--server",
            &server.url(),
            "--token",
            &bob_laptop,
            "--once",
        ],
        Duration::from_secs(20),
    );
    ok(out);
    assert_eq!(std::fs::read(laptop.join("report.bin")).unwrap(), content);
    std::fs::write(desk.join("reply.txt"), "uploaded during the stall").unwrap();
    ok(run_within(
        &["sync", desk.to_str().unwrap(), "--once"],
        Duration::from_secs(20),
    ));
    assert!(server.entry(&bob_desk, "reply.txt").is_some());
    let elapsed = started.elapsed();
    assert!(
        stalled.iter().all(still_open),
        "alice's stalled uploads are still waiting (not cut off before the idle timeout)"
    );
    assert!(
        elapsed < Duration::from_secs(25),
        "bob's transfers took {elapsed:?}"
    );
}

#[test]
fn half_open_connections_do_not_stop_a_legitimate_request() {
    let own_limit = raise_own_file_limit();
    assert!(
        own_limit >= 6000,
        "the test needs 5,000 sockets; the hard file limit is {own_limit}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let user_token = token(&data, "alice", "laptop");
    let port = free_port();
    // The server starts with the usual soft limit of 4096 files, below the 5,000 connections.
    let _server = spawn_server(tmp.path(), &data, port, Some(4096));

    let half_line = "GET /api/v1/heal".to_owned();
    let half_open: Vec<TcpStream> = (0..5000)
        .map(|idx| connect_and_send(port, if idx % 2 == 0 { "" } else { &half_line }))
        .collect();
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let (status, body) = get_within(&format!("{url}/api/v1/health"), "");
    assert_eq!(status, 200, "{body}");
    let (status, body) = get_within(&format!("{url}/api/v1/whoami"), &user_token);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("alice"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "served after {:?}",
        started.elapsed()
    );
    assert!(
        half_open.iter().filter(|stream| still_open(stream)).count() > 4000,
        "the half-open connections were still open while the requests were served"
    );
}

#[test]
fn too_deep_paths_too_large_batches_and_bodies_get_a_4xx_with_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &tmp.path().join("data"));
    let token = server.token("carol", "laptop");
    let ops_url = format!("{}/api/v1/ops", server.url());
    let make_dirs = |paths: Vec<String>| {
        let ops: Vec<serde_json::Value> = paths
            .into_iter()
            .map(|path| serde_json::json!({"op": "make_dir", "path": path, "mtime_ms": 0}))
            .collect();
        serde_json::json!({ "ops": ops }).to_string()
    };

    let too_deep = vec!["d"; 129].join("/");
    let (status, body) = reqwest::send("POST", &ops_url, &token, Some(make_dirs(vec![too_deep])));
    assert_eq!(status, 400, "{body}");
    assert!(
        error_message(&body).contains("more than 128 components"),
        "{body}"
    );

    let too_many = make_dirs((0..10_001).map(|idx| format!("d{idx}")).collect());
    let (status, body) = reqwest::send("POST", &ops_url, &token, Some(too_many));
    assert_eq!(status, 413, "{body}");
    let message = error_message(&body);
    assert!(
        message.contains("10001 ops") && message.contains("--max-batch-ops"),
        "{message}"
    );

    // 200 separate chains of 128 levels: 25,400 directories to create.
    let deep_chains = make_dirs(
        (0..200)
            .map(|idx| format!("c{idx}/{}", vec!["x"; 127].join("/")))
            .collect(),
    );
    let (status, body) = reqwest::send("POST", &ops_url, &token, Some(deep_chains));
    assert_eq!(status, 413, "{body}");
    assert!(error_message(&body).contains("--max-batch-dirs"), "{body}");

    // A body over the JSON limit (32 MiB) is refused from its declared length, unread.
    let head = format!(
        "POST /api/v1/ops HTTP/1.1\r\nhost: 127.0.0.1:{}\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        server.port,
        33 * 1024 * 1024
    );
    let (status, body) = raw_request(server.port, &head);
    assert_eq!(status, 413, "{body}");
    assert!(error_message(&body).contains("--max-json-body"), "{body}");

    assert!(server.tree(&token).is_empty(), "nothing was created");
}

#[test]
fn server_and_client_files_are_private_whatever_the_umask() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let mut server = spawn_server(tmp.path(), &data, port, None);
    let user_token = token(&data, "dave", "laptop");
    let url = format!("http://127.0.0.1:{port}");
    let dir = tmp.path().join("folder");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "private notes").unwrap();
    // The client too runs with umask 000.
    let sync = |dir: &Path, token: Option<&str>| {
        let mut command = Command::new(bin());
        command.args(["sync", dir.to_str().unwrap(), "--server", &url, "--once"]);
        if let Some(token) = token {
            command.args(["--token", token]);
        }
        // SAFETY: umask is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::umask(0);
                Ok(())
            });
        }
        ok(command.env("RUST_LOG", "warn").output().expect("run sync"))
    };
    sync(&dir, Some(&user_token));

    let meta = data.join("meta.sqlite");
    let check_server = |data: &Path| {
        assert_eq!(mode_of(data), 0o700, "data dir");
        assert_eq!(mode_of(&data.join("chunks")), 0o700, "chunk dir");
        // The server keeps the database open, so its -wal and -shm exist.
        for suffix in ["", "-wal", "-shm"] {
            let file = data.join(format!("meta.sqlite{suffix}"));
            assert_eq!(mode_of(&file), 0o600, "{}", file.display());
        }
        let mut n_chunk_files = 0;
        for user_dir in std::fs::read_dir(data.join("chunks")).unwrap() {
            let user_dir = user_dir.unwrap().path();
            assert_eq!(mode_of(&user_dir), 0o700, "{}", user_dir.display());
            for fan_out in std::fs::read_dir(&user_dir).unwrap() {
                let fan_out = fan_out.unwrap().path();
                assert_eq!(mode_of(&fan_out), 0o700, "{}", fan_out.display());
                for chunk in std::fs::read_dir(&fan_out).unwrap() {
                    let chunk = chunk.unwrap().path();
                    assert_eq!(mode_of(&chunk), 0o600, "{}", chunk.display());
                    n_chunk_files += 1;
                }
            }
        }
        assert!(n_chunk_files > 0, "the upload stored a chunk");
    };
    check_server(&data);
    let check_client = |dir: &Path| {
        let meta_dir = dir.join(".syncstore");
        assert_eq!(mode_of(&meta_dir), 0o700, ".syncstore");
        for entry in std::fs::read_dir(&meta_dir).unwrap() {
            let path = entry.unwrap().path();
            let expected = if path.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode_of(&path), expected, "{}", path.display());
        }
        assert!(meta_dir.join("state.sqlite").is_file());
        assert!(meta_dir.join("config.json").is_file());
    };
    check_client(&dir);

    // Files an older version left readable by others are narrowed at the next open.
    server.kill9();
    let widen = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    widen(&data, 0o755);
    widen(&data.join("chunks"), 0o755);
    for suffix in ["", "-wal", "-shm"] {
        let file = data.join(format!("meta.sqlite{suffix}"));
        if file.exists() {
            widen(&file, 0o644);
        }
    }
    widen(&meta, 0o644);
    let meta_dir = dir.join(".syncstore");
    widen(&meta_dir, 0o755);
    widen(&meta_dir.join("state.sqlite"), 0o644);
    widen(&meta_dir.join("config.json"), 0o644);
    let _server = spawn_server(tmp.path(), &data, port, None);
    std::fs::write(dir.join("more.txt"), "more").unwrap();
    sync(&dir, None);
    check_server(&data);
    check_client(&dir);
}

#[test]
fn a_corrupt_state_database_names_itself_and_moving_it_aside_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &tmp.path().join("data"));
    let first = server.token("erin", "first");
    let second = server.token("erin", "second");
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    write(&a.join("shared.txt"), "v1");
    write(&a.join("docs/kept.txt"), "kept");
    write(&a.join("unchanged.txt"), "same on both sides");
    ok(sync_once(&a, &server.url(), Some(&first)));
    ok(sync_once(&b, &server.url(), Some(&second)));
    wait_same(&a, &b);

    // Both sides move on while a's state is broken.
    write(&a.join("shared.txt"), "edited on a");
    write(&a.join("only-on-a.txt"), "new on a");
    write(&b.join("shared.txt"), "edited on b");
    write(&b.join("only-on-b.txt"), "new on b");
    ok(sync_once(&b, &server.url(), None));

    // Keep SQLite's header, overwrite the table pages.
    let state = a.join(".syncstore/state.sqlite");
    let mut bytes = std::fs::read(&state).unwrap();
    assert!(bytes.len() > 4096, "state has more than one page");
    for byte in &mut bytes[4096..] {
        *byte = 0xA5;
    }
    std::fs::write(&state, &bytes).unwrap();

    let out = sync_once(&a, &server.url(), None);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let shown = state.display().to_string();
    assert!(stderr.contains(&format!("{shown} is corrupt")), "{stderr}");
    assert!(
        stderr.contains(&format!("mv {shown} {shown}.corrupt")),
        "{stderr}"
    );
    assert!(stderr.contains("nothing is deleted"), "{stderr}");
    assert_eq!(
        read(&a.join("shared.txt")).as_deref(),
        Some("edited on a"),
        "the failed run changed nothing"
    );

    std::fs::rename(&state, a.join(".syncstore/state.sqlite.corrupt")).unwrap();
    ok(sync_once(&a, &server.url(), None));
    ok(sync_once(&b, &server.url(), None));
    wait_same(&a, &b);
    let files = snapshot(&a);
    for (path, text) in [
        ("docs/kept.txt", "kept"),
        ("unchanged.txt", "same on both sides"),
        ("only-on-a.txt", "new on a"),
        ("only-on-b.txt", "new on b"),
    ] {
        assert_eq!(
            files.get(path).cloned().flatten().as_deref(),
            Some(text.as_bytes()),
            "{path}: {:?}",
            files.keys().collect::<Vec<_>>()
        );
    }
    // Both edits of shared.txt survive: one under the name, one as a conflicted copy.
    let shared: Vec<&[u8]> = files
        .iter()
        .filter(|(path, _)| path.starts_with("shared"))
        .filter_map(|(_, content)| content.as_deref())
        .collect();
    assert_eq!(shared.len(), 2, "{:?}", files.keys().collect::<Vec<_>>());
    assert!(shared.contains(&&b"edited on a"[..]));
    assert!(shared.contains(&&b"edited on b"[..]));
}
