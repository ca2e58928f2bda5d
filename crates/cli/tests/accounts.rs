//! Accounts and devices end to end (issue 15): `user list|rename|remove`, `device
//! list|revoke`, the devices API, admin commands on a missing database, and the rate limit on
//! refused tokens; a revocation through one server of a shared PostgreSQL database holds on
//! the other. `user passwd` (issue 16) and the device name kept for the web interface.

use crate::util::*;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Stderr of a command that must have failed with exit code 2.
fn failed(out: Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The JSON a command printed.
fn json(out: Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).expect("JSON on stdout")
}

/// The device named `name` in `device list --json`.
fn device<'a>(devices: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    devices
        .as_array()
        .unwrap()
        .iter()
        .find(|device| device["name"] == name)
        .unwrap_or_else(|| panic!("no device {name} in {devices}"))
}

/// Waits until `daemon` has exited and returns its log.
fn wait_exit(daemon: &mut Proc) -> (std::process::ExitStatus, String) {
    let mut status = None;
    wait_until(&format!("{} to exit", daemon.name), || {
        status = daemon.child.try_wait().expect("wait");
        status.is_some()
    });
    (status.unwrap(), daemon.log_text())
}

/// A request with a bearer token from the local address `from` (any 127.0.0.0/8 address
/// reaches a server on 127.0.0.1): status, `Retry-After`, body.
fn send_from(
    from: &str,
    method: &str,
    url: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (u16, Option<String>, String) {
    reqwest::runtime().block_on(async {
        let client = ::reqwest::Client::builder()
            .local_address(from.parse::<IpAddr>().unwrap())
            .build()
            .unwrap();
        let mut request = client
            .request(method.parse().unwrap(), url)
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|value| value.to_str().unwrap().to_owned());
        (status, retry_after, response.text().await.unwrap())
    })
}

fn send(method: &str, url: &str, token: &str, body: Option<serde_json::Value>) -> (u16, String) {
    let (status, _, body) = send_from("127.0.0.1", method, url, token, body);
    (status, body)
}

/// Directories named like namespace ids (32 hex digits) in a chunk store.
fn namespace_dirs(chunks: &Path) -> Vec<String> {
    std::fs::read_dir(chunks)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|name| name.len() == 32 && name.chars().all(|c| c.is_ascii_hexdigit()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn users_are_listed_renamed_and_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(tmp.path(), &data);
    let token = server.token("alice", "laptop");
    server.token("bob", "phone");
    let dir = tmp.path().join("alice");
    std::fs::create_dir_all(&dir).unwrap();
    write(&dir.join("notes.txt"), "alice's notes");
    ok(sync_once(&dir, &server.url(), Some(&token)));

    let users = json(server.admin(&["user", "list", "--json"]));
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|user| user["name"].as_str().unwrap())
        .collect();
    // `me` is the one `serve` creates on its first start.
    assert_eq!(names, ["alice", "bob", "me"]);
    assert_eq!(users[0]["devices"], 1);
    assert_eq!(users[0]["used_bytes"], "alice's notes".len());
    assert!(users[0]["created_ms"].as_i64().unwrap() > 0, "{users}");
    let table = ok(server.admin(&["user", "list"]));
    assert!(table.starts_with("USER"), "{table}");
    assert!(
        table.lines().any(|line| line.starts_with("alice ")),
        "{table}"
    );

    // A rename keeps the namespace and the tokens: the folder syncs on.
    let out = ok(server.admin(&["user", "rename", "alice", "carol"]));
    assert!(out.contains("renamed user alice to carol"), "{out}");
    assert!(failed(server.admin(&["user", "rename", "carol", "bob"]))
        .contains("user bob already exists"));
    write(&dir.join("more.txt"), "after the rename");
    ok(sync_once(&dir, &server.url(), None));
    let (status, body) = send(
        "GET",
        &format!("{}/api/v1/whoami", server.url()),
        &token,
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"carol\""), "{body}");
    assert_eq!(namespace_dirs(&data.join("chunks")).len(), 1);

    // Without --yes and without a terminal to ask on, nothing is removed.
    let err = failed(server.admin(&["user", "remove", "carol"]));
    assert!(err.contains("give --yes"), "{err}");
    assert!(err.contains("2 file(s)"), "{err}");
    assert_eq!(
        json(server.admin(&["user", "list", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let out = ok(server.admin(&["user", "remove", "carol", "--yes"]));
    assert!(out.contains("removed user carol"), "{out}");
    // Its token is refused at once, its content is gone from the chunk store, the folder
    // keeps its files.
    let (status, body) = send(
        "GET",
        &format!("{}/api/v1/tree", server.url()),
        &token,
        None,
    );
    assert_eq!(status, 401, "{body}");
    let err = failed(sync_once(&dir, &server.url(), None));
    assert!(err.contains("401"), "{err}");
    assert_eq!(
        read(&dir.join("notes.txt")).as_deref(),
        Some("alice's notes")
    );
    assert_eq!(namespace_dirs(&data.join("chunks")), Vec::<String>::new());
    let users = json(server.admin(&["user", "list", "--json"]));
    assert_eq!(users.as_array().unwrap().len(), 2, "{users}");
    assert!(failed(server.admin(&["user", "remove", "carol", "--yes"]))
        .contains("there is no user carol"));

    // The name is free again: a new account, a new namespace, empty.
    let new_token = server.token("carol", "laptop");
    assert_eq!(server.tree(&new_token), []);
}

#[test]
fn a_revoked_device_is_refused_at_its_next_request_while_another_syncs_on() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &tmp.path().join("data"));
    let laptop_token = server.token("alice", "laptop");
    let desktop_token = server.token("alice", "desktop");
    let (dir1, dir2) = (tmp.path().join("one"), tmp.path().join("two"));
    let mut laptop = start_client("laptop", tmp.path(), &dir1, &server.url(), &laptop_token);
    let _desktop = start_client("desktop", tmp.path(), &dir2, &server.url(), &desktop_token);
    write(&dir1.join("hello.txt"), "from the laptop");
    wait_until("hello.txt in two", || {
        read(&dir2.join("hello.txt")).as_deref() == Some("from the laptop")
    });

    // Both were seen, from loopback, when they connected.
    let mut devices = serde_json::Value::Null;
    wait_until("both devices seen", || {
        devices = json(server.admin(&["device", "list", "alice", "--json"]));
        ["laptop", "desktop"]
            .iter()
            .all(|name| device(&devices, name)["last_seen_ms"].is_i64())
    });
    for name in ["laptop", "desktop"] {
        let listed = device(&devices, name);
        assert_eq!(listed["last_address"], "127.0.0.1", "{devices}");
        assert_eq!(listed["user"], "alice");
        assert!(listed["created_ms"].is_i64(), "{devices}");
        assert!(listed["revoked_ms"].is_null(), "{devices}");
    }
    let table = ok(server.admin(&["device", "list"]));
    assert!(
        table
            .lines()
            .any(|line| line.contains("laptop") && line.contains("127.0.0.1")),
        "{table}"
    );

    let out = ok(server.admin(&["device", "revoke", "alice", "laptop"]));
    assert!(out.contains("revoked device laptop of user alice"), "{out}");
    // The laptop's next request is refused: its daemon says so and stops.
    write(&dir1.join("after.txt"), "written after the revocation");
    let (status, log) = wait_exit(&mut laptop);
    assert!(!status.success());
    assert!(log.contains("refused the token (401)"), "{log}");
    // The desktop syncs on.
    write(&dir2.join("desktop.txt"), "still syncing");
    wait_until("desktop.txt on the server", || {
        server.entry(&desktop_token, "desktop.txt").is_some()
    });
    assert!(server.entry(&desktop_token, "after.txt").is_none());
    let devices = json(server.admin(&["device", "list", "alice", "--json"]));
    assert!(
        device(&devices, "laptop")["revoked_ms"].is_i64(),
        "{devices}"
    );
    assert!(
        device(&devices, "desktop")["revoked_ms"].is_null(),
        "{devices}"
    );
    let out = ok(server.admin(&["device", "revoke", "alice", "laptop"]));
    assert!(out.contains("revoked already"), "{out}");
    assert!(
        failed(server.admin(&["device", "revoke", "alice", "tablet"]))
            .contains("user alice has no device tablet")
    );

    // The name stays with the history that names it.
    let err = failed(server.admin(&["token", "add", "alice", "--device", "laptop"]));
    assert!(
        err.contains("device laptop of user alice was revoked"),
        "{err}"
    );
    // The server logged the refused token with its peer address, and never the token.
    let server_log = server.proc.log_text();
    assert!(
        server_log.lines().any(|line| line.contains("WARN")
            && line.contains("refused")
            && line.contains("peer=127.0.0.1")),
        "{server_log}"
    );
    assert!(
        !server_log.contains(&laptop_token),
        "the token is in the log"
    );
}

#[test]
fn a_device_revokes_another_through_the_api() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &tmp.path().join("data"));
    let laptop = server.token("alice", "laptop");
    let phone = server.token("alice", "phone");
    let other = server.token("bob", "laptop");
    let url = |path: &str| format!("{}/api/v1/{path}", server.url());
    // The laptop holds a lock on a file.
    let dir = tmp.path().join("laptop");
    std::fs::create_dir_all(&dir).unwrap();
    write(&dir.join("report.md"), "# report");
    ok(sync_once(&dir, &server.url(), Some(&laptop)));
    let (status, body) = send(
        "POST",
        &url("locks"),
        &laptop,
        Some(serde_json::json!({"path": "report.md"})),
    );
    assert_eq!(status, 200, "{body}");

    let (status, body) = send("GET", &url("devices"), &phone, None);
    assert_eq!(status, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let devices = &listed["devices"];
    assert_eq!(devices.as_array().unwrap().len(), 2, "{listed}");
    assert_eq!(device(devices, "phone")["current"], true);
    assert_eq!(device(devices, "laptop")["current"], false);
    assert!(
        device(devices, "laptop")["last_seen_ms"].is_i64(),
        "{listed}"
    );

    let revoke = |token: &str, name: &str| {
        send(
            "POST",
            &url("devices/revoke"),
            token,
            Some(serde_json::json!({ "device": name })),
        )
    };
    // Bob cannot reach alice's devices: he has no laptop of hers.
    let (status, body) = revoke(&other, "phone");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    let (status, body) = revoke(&phone, "laptop");
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["already_revoked"], false);
    assert_eq!(answer["released_locks"], serde_json::json!(["report.md"]));
    let (status, _) = send("GET", &url("whoami"), &laptop, None);
    assert_eq!(status, 401);
    let (status, body) = send("GET", &url("locks"), &phone, None);
    assert_eq!((status, body.contains("report.md")), (200, false), "{body}");
    let (status, body) = revoke(&phone, "laptop");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"already_revoked\":true"), "{body}");
    let (status, body) = revoke(&phone, "tablet");
    assert_eq!(status, 404, "{body}");
    let (status, body) = send(
        "POST",
        &url("devices/revoke"),
        &phone,
        Some(serde_json::json!({"device": "a b"})),
    );
    assert_eq!(status, 400, "{body}");
    // A device may revoke itself.
    let (status, body) = revoke(&phone, "phone");
    assert_eq!(status, 200, "{body}");
    let (status, _) = send("GET", &url("whoami"), &phone, None);
    assert_eq!(status, 401);
    let (status, _) = send("GET", &url("whoami"), &other, None);
    assert_eq!(status, 200);
}

#[test]
fn admin_commands_refuse_a_missing_database_and_name_no_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-data");
    let missing_arg = missing.to_str().unwrap();
    for args in [
        &["token", "add", "me", "--device", "laptop"][..],
        &["user", "list"],
        &["user", "set", "me", "--quota", "1G"],
        &["user", "rename", "me", "you"],
        &["user", "remove", "me", "--yes"],
        &["device", "list"],
        &["device", "revoke", "me", "laptop"],
        &["gc", "--keep-history", "30d"],
        &["scrub"],
    ] {
        let err = failed(run(&[args, &["--data", missing_arg]].concat()));
        assert!(
            err.contains("there is no syncstore database"),
            "{args:?}: {err}"
        );
        assert!(!missing.exists(), "{args:?} created {}", missing.display());
    }

    // A device name taken: the message names the user, not an internal id.
    let data = tmp.path().join("data");
    let data_arg = data.to_str().unwrap();
    ok(run(&["user", "add", "me", "--data", data_arg]));
    let err = failed(run(&[
        "token",
        "add",
        "me",
        "--device",
        "first-device",
        "--data",
        data_arg,
    ]));
    assert!(
        err.contains("device first-device of user me already exists"),
        "{err}"
    );
    assert!(!err.contains("user 1"), "{err}");
}

#[test]
fn refused_tokens_from_one_address_are_answered_429_for_a_while() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with_flags(
        tmp.path(),
        &tmp.path().join("data"),
        &["--auth-fail-limit", "3", "--auth-block", "10m"],
    );
    let good = server.token("alice", "laptop");
    let whoami = format!("{}/api/v1/whoami", server.url());
    let bad = "sst_not_a_token_of_this_server";
    for _ in 0..3 {
        let (status, retry_after, body) = send_from("127.0.0.1", "GET", &whoami, bad, None);
        assert_eq!((status, retry_after), (401, None), "{body}");
    }
    let (status, retry_after, body) = send_from("127.0.0.1", "GET", &whoami, bad, None);
    assert_eq!(status, 429, "{body}");
    let retry_after: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((590..=600).contains(&retry_after), "{retry_after}");
    let error: syncstore_proto::ErrorBody = serde_json::from_str(&body).unwrap();
    assert!(error.error.contains("too many"), "{}", error.error);
    // A request without a token counts as refused too.
    let (status, _, _) = send_from("127.0.0.1", "GET", &whoami, "", None);
    assert_eq!(status, 429);
    // A good token is served, from that address too; another address is not blocked.
    let (status, _, body) = send_from("127.0.0.1", "GET", &whoami, &good, None);
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = send_from("127.0.0.2", "GET", &whoami, bad, None);
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = send_from("127.0.0.2", "GET", &whoami, &good, None);
    assert_eq!(status, 200, "{body}");

    let log = server.proc.log_text();
    assert!(
        log.lines().any(|line| line.contains("WARN")
            && line.contains("too many refused tokens")
            && line.contains("peer=127.0.0.1")),
        "{log}"
    );
    assert!(!log.contains(bad), "a token in the log");
}

/// Servers A and B on one PostgreSQL database: a device revoked offline against the database
/// (as `syncstore device revoke --db` does anywhere) is refused by both at its next request,
/// the daemon syncing through B stops, and a device syncing through A goes on. Admin commands
/// refuse a database without a syncstore schema and create none.
#[test]
fn a_device_revoked_on_a_shared_database_is_refused_by_every_server() {
    let Some(admin_url) = services() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path();
    let (empty_db, _) = fresh_database_and_bucket(&admin_url, "accounts_empty");
    for _ in 0..2 {
        let err = failed(run(&[
            "token", "add", "me", "--device", "x", "--db", &empty_db,
        ]));
        assert!(err.contains("there is no syncstore database"), "{err}");
    }

    let (db, store) = fresh_database_and_bucket(&admin_url, "accounts_revoke");
    let a = Server::start_shared("server-a", logs, &db, &store);
    let b = Server::start_shared("server-b", logs, &db, &store);
    let laptop_token = a.token("alice", "laptop");
    let desktop_token = a.token("alice", "desktop");
    let (dir1, dir2) = (tmp.path().join("one"), tmp.path().join("two"));
    let mut laptop = start_client("laptop", logs, &dir1, &b.url(), &laptop_token);
    let mut desktop = start_client("desktop", logs, &dir2, &a.url(), &desktop_token);
    write(&dir1.join("hello.txt"), "through B");
    wait_until("hello.txt in two", || {
        read(&dir2.join("hello.txt")).as_deref() == Some("through B")
    });
    let mut devices = serde_json::Value::Null;
    wait_until("both devices seen", || {
        devices = json(a.admin(&["device", "list", "--json"]));
        ["laptop", "desktop"]
            .iter()
            .all(|name| device(&devices, name)["last_address"] == "127.0.0.1")
    });

    ok(a.admin(&["device", "revoke", "alice", "laptop"]));
    for server in [&a, &b] {
        let (status, body) = send(
            "GET",
            &format!("{}/api/v1/whoami", server.url()),
            &laptop_token,
            None,
        );
        assert_eq!(status, 401, "{}: {body}", server.name);
        let (status, body) = send(
            "GET",
            &format!("{}/api/v1/whoami", server.url()),
            &desktop_token,
            None,
        );
        assert_eq!(status, 200, "{}: {body}", server.name);
    }
    write(&dir1.join("after.txt"), "after the revocation");
    let (status, log) = wait_exit(&mut laptop);
    assert!(!status.success());
    assert!(log.contains("refused the token (401)"), "{log}");
    write(&dir2.join("desktop.txt"), "through A");
    wait_until("desktop.txt on the server", || {
        b.entry(&desktop_token, "desktop.txt").is_some()
    });
    assert!(b.entry(&desktop_token, "after.txt").is_none());

    // Removing the account while both servers run: its other daemon stops at its next request.
    let err = failed(a.admin(&["user", "remove", "alice", "--yes"]));
    assert!(err.contains("--store"), "{err}");
    let out = ok(run(&[
        "user", "remove", "alice", "--yes", "--db", &db, "--store", &store,
    ]));
    assert!(out.contains("removed user alice"), "{out}");
    write(&dir2.join("late.txt"), "after the removal");
    let (status, log) = wait_exit(&mut desktop);
    assert!(!status.success());
    assert!(log.contains("refused the token (401)"), "{log}");
    assert_eq!(read(&dir2.join("hello.txt")).as_deref(), Some("through B"));
    let users = json(b.admin(&["user", "list", "--json"]));
    assert!(
        users
            .as_array()
            .unwrap()
            .iter()
            .all(|user| user["name"] != "alice"),
        "{users}"
    );
}

/// Runs the binary with `input` on its standard input (a pipe, not a terminal).
fn run_with_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run syncstore");
    // A command that refuses before reading may have closed its end: that is its answer.
    let _ = child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes());
    child.wait_with_output().expect("wait for syncstore")
}

/// The web password of `user` as the meta store under `data` holds it.
fn stored_password(data: &Path, user: &str) -> Option<String> {
    reqwest::runtime().block_on(async {
        let location = syncstore_server::MetaLocation::embedded(data);
        let meta_store = syncstore_server::open_existing_meta_store(&location)
            .await
            .expect("open the meta store");
        let name = syncstore_proto::UserName::new(user).unwrap();
        let (_, phc) = meta_store
            .login_record(&name)
            .await
            .unwrap()
            .expect("the user exists");
        phc
    })
}

/// `user passwd` reads exactly one line from a pipe and stores an argon2 hash of it; it
/// refuses an unknown user, a short password and a password in argv; `--clear` removes it.
/// No token device may be named `web`, the device every browser session acts as.
#[test]
fn user_passwd_sets_a_web_password_from_stdin() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_arg = data.to_str().unwrap();
    ok(run(&["user", "add", "alice", "--data", data_arg]));
    assert_eq!(stored_password(&data, "alice"), None);

    let password = "correct horse battery";
    let out = run_with_stdin(
        &["user", "passwd", "alice", "--data", data_arg],
        &format!("{password}\nsecond line\n"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = ok(out);
    assert!(stdout.contains("password set for user alice"), "{stdout}");
    assert!(!stdout.contains(password) && !stderr.contains(password));
    let phc = stored_password(&data, "alice").expect("a password is set");
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    assert!(!phc.contains(password));
    assert!(syncstore_server::password::verify_password(&phc, password));
    assert!(!syncstore_server::password::verify_password(
        &phc,
        "second line"
    ));
    assert!(!syncstore_server::password::verify_password(
        &phc,
        &format!("{password}\n")
    ));
    // The browser's device exists, and no token device may take its name.
    let devices = json(run(&[
        "device", "list", "alice", "--json", "--data", data_arg,
    ]));
    assert_eq!(
        device(&devices, "web")["revoked_ms"],
        serde_json::Value::Null
    );
    let err = failed(run(&[
        "token", "add", "alice", "--device", "web", "--data", data_arg,
    ]));
    assert!(
        err.contains("the device name web is kept for the web interface"),
        "{err}"
    );

    // Refusals change nothing.
    let err = failed(run_with_stdin(
        &["user", "passwd", "nobody", "--data", data_arg],
        "another password\n",
    ));
    assert!(err.contains("there is no user nobody"), "{err}");
    let err = failed(run_with_stdin(
        &["user", "passwd", "alice", "--data", data_arg],
        "short\n",
    ));
    assert!(err.contains("too short"), "{err}");
    assert!(!err.contains("short\n"), "{err}");
    let err = failed(run_with_stdin(
        &["user", "passwd", "alice", "--data", data_arg],
        "",
    ));
    assert!(err.contains("too short"), "{err}");
    let long = "x".repeat(1025);
    let err = failed(run_with_stdin(
        &["user", "passwd", "alice", "--data", data_arg],
        &format!("{long}\n"),
    ));
    assert!(err.contains("too long"), "{err}");
    let out = run(&[
        "user",
        "passwd",
        "alice",
        "hunter2hunter2",
        "--data",
        data_arg,
    ]);
    assert!(!out.status.success());
    assert_eq!(stored_password(&data, "alice").as_deref(), Some(&*phc));

    // A new password replaces the old one.
    ok(run_with_stdin(
        &["user", "passwd", "alice", "--data", data_arg],
        "a second password\r\n",
    ));
    let second = stored_password(&data, "alice").expect("a password is set");
    assert!(syncstore_server::password::verify_password(
        &second,
        "a second password"
    ));
    assert!(!syncstore_server::password::verify_password(
        &second, password
    ));

    let out = ok(run(&[
        "user", "passwd", "alice", "--clear", "--data", data_arg,
    ]));
    assert!(out.contains("web sign-in is off for user alice"), "{out}");
    assert_eq!(stored_password(&data, "alice"), None);
}
