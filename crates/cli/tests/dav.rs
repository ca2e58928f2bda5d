//! WebDAV under `/dav/` end to end (issue 17): the litmus compliance suites, rclone, a
//! running client beside WebDAV writes and locks, authentication, streams cut off.
//!
//! litmus and rclone are installed by `scripts/dav-tools` (which `scripts/test` runs); a test
//! that needs one fails under `CI=true` when it is missing, and is skipped otherwise.

use crate::util::*;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

/// The user every test works as.
const USER: &str = "dora";

/// A server with a WebDAV device of [`USER`].
struct Dav {
    tmp: tempfile::TempDir,
    server: Server,
    token: String,
}

fn dav_server() -> Dav {
    dav_server_with(&[])
}

fn dav_server_with(flags: &[&str]) -> Dav {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with_flags(tmp.path(), &tmp.path().join("data"), flags);
    let token = server.token(USER, "webdav");
    Dav { tmp, server, token }
}

impl Dav {
    fn url(&self, path: &str) -> String {
        format!("{}/dav/{path}", self.server.url())
    }

    /// A request with Basic credentials of the WebDAV device.
    fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        send(
            method,
            &self.url(path),
            Credentials::Basic(USER, &self.token),
            headers,
            body,
        )
    }

    fn get(&self, path: &str) -> Option<Vec<u8>> {
        let answer = self.send("GET", path, &[], b"");
        (answer.status == 200).then_some(answer.body)
    }

    fn server_log(&self) -> String {
        self.server.proc.log_text()
    }
}

enum Credentials<'a> {
    None,
    Basic(&'a str, &'a str),
    Bearer(&'a str),
}

struct Answer {
    status: u16,
    headers: ::reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn send(
    method: &str,
    url: &str,
    credentials: Credentials<'_>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    reqwest::runtime().block_on(async {
        let client = ::reqwest::Client::new();
        let method = ::reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = client.request(method, url).body(body.to_vec());
        request = match credentials {
            Credentials::None => request,
            Credentials::Basic(user, password) => request.basic_auth(user, Some(password)),
            Credentials::Bearer(token) => request.bearer_auth(token),
        };
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap_or_default().to_vec();
        Answer {
            status,
            headers,
            body,
        }
    })
}

/// A tool the test needs: its path, or `None` to skip (a failure under `CI=true`).
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but {name} is not installed: run scripts/dav-tools (scripts/test does)"
        );
        eprintln!(
            "\n*** SKIPPED a WebDAV test: {name} is not installed (run scripts/dav-tools) ***\n"
        );
    }
    found
}

const LOCK_BODY: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner>dav test</D:owner></D:lockinfo>"#;

/// Bytes that are not all alike, so they cut into several chunks.
fn varied_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

#[test]
fn litmus_suites_pass() {
    let Some(litmus) = tool("litmus") else {
        return;
    };
    let dav = dav_server();
    let suites = ["basic", "copymove", "props", "locks", "http"];
    let out = Command::new(litmus)
        .args(["-k", &dav.url(""), USER, &dav.token])
        .env("TESTS", suites.join(" "))
        // litmus writes debug.log and child.log where it runs.
        .current_dir(dav.tmp.path())
        .output()
        .expect("run litmus");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    std::fs::write(dav.tmp.path().join("litmus.out"), &text).unwrap();
    for suite in suites {
        let summary = text
            .lines()
            .find(|line| line.starts_with(&format!("<- summary for `{suite}'")))
            .unwrap_or_else(|| panic!("litmus ran no {suite} suite:\n{text}"));
        assert!(summary.contains(" 0 failed"), "{summary}\n{text}");
    }
    assert!(out.status.success(), "litmus failed:\n{text}");
    let failures: Vec<&str> = text.lines().filter(|line| line.contains("FAIL")).collect();
    assert_eq!(failures, Vec::<&str>::new());
}

#[test]
fn rclone_copies_a_nested_tree_in_and_out() {
    let Some(rclone) = tool("rclone") else {
        return;
    };
    let dav = dav_server();
    let source = dav.tmp.path().join("source");
    let tree: Vec<(&str, Vec<u8>)> = vec![
        ("top.txt", b"top".to_vec()),
        ("empty", Vec::new()),
        ("docs/readme.md", b"# readme\n".to_vec()),
        ("docs/deep/er/notes.txt", b"deep notes".to_vec()),
        (
            "docs/deep/er/big.bin",
            varied_bytes(5 * 1024 * 1024 + 17, 1),
        ),
        ("media/été photo.jpg", varied_bytes(300_000, 2)),
    ];
    for (path, bytes) in &tree {
        let path = source.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let obscured = Command::new(&rclone)
        .args(["obscure", &dav.token])
        .output()
        .expect("rclone obscure");
    assert!(obscured.status.success());
    let obscured = String::from_utf8(obscured.stdout)
        .unwrap()
        .trim()
        .to_owned();
    let config = dav.tmp.path().join("rclone.conf");
    std::fs::write(&config, "").unwrap();
    let rclone_run = |args: &[&str]| {
        let out = Command::new(&rclone)
            .args(args)
            .args(["--config", config.to_str().unwrap()])
            .env("RCLONE_CONFIG_SS_TYPE", "webdav")
            .env("RCLONE_CONFIG_SS_URL", dav.url(""))
            .env("RCLONE_CONFIG_SS_VENDOR", "other")
            .env("RCLONE_CONFIG_SS_USER", USER)
            .env("RCLONE_CONFIG_SS_PASS", &obscured)
            .output()
            .expect("run rclone");
        assert!(
            out.status.success(),
            "rclone {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    rclone_run(&["copy", source.to_str().unwrap(), "ss:tree"]);
    let back = dav.tmp.path().join("back");
    rclone_run(&["copy", "ss:tree", back.to_str().unwrap()]);
    // Byte by byte, both ways.
    rclone_run(&["check", "--download", source.to_str().unwrap(), "ss:tree"]);
    for (path, bytes) in &tree {
        assert_eq!(&std::fs::read(back.join(path)).unwrap(), bytes, "{path}");
    }
    // The same tree through the sync API.
    let entries = dav.server.tree(&dav.token);
    for (path, _) in &tree {
        let path = format!("tree/{path}");
        assert!(entries.iter().any(|entry| entry.path == path), "{path}");
    }
}

#[test]
fn a_put_reaches_a_running_client_and_a_client_change_the_next_propfind() {
    let dav = dav_server();
    let laptop = dav.server.token(USER, "laptop");
    let folder = dav.tmp.path().join("laptop");
    let _client = start_client(
        "client",
        dav.tmp.path(),
        &folder,
        &dav.server.url(),
        &laptop,
    );

    assert_eq!(dav.send("MKCOL", "inbox", &[], b"").status, 201);
    assert_eq!(
        dav.send("PUT", "inbox/hello.txt", &[], b"from webdav")
            .status,
        201
    );
    wait_until("the PUT in the client's folder", || {
        read(&folder.join("inbox/hello.txt")).as_deref() == Some("from webdav")
    });
    // An overwrite is a new version of the same file.
    assert_eq!(
        dav.send("PUT", "inbox/hello.txt", &[], b"again").status,
        204
    );
    wait_until("the overwrite in the client's folder", || {
        read(&folder.join("inbox/hello.txt")).as_deref() == Some("again")
    });
    let history = reqwest::send(
        "GET",
        &format!("{}/api/v1/history?path=inbox/hello.txt", dav.server.url()),
        &laptop,
        None,
    );
    assert_eq!(history.0, 200, "{}", history.1);
    let history: serde_json::Value = serde_json::from_str(&history.1).unwrap();
    assert_eq!(
        history["versions"].as_array().unwrap().len(),
        2,
        "{history}"
    );

    write(&folder.join("from-laptop.txt"), "typed on the laptop");
    wait_until("the client's file in a PROPFIND", || {
        let answer = dav.send("PROPFIND", "", &[("Depth", "1")], b"");
        answer.status == 207 && answer.text().contains("/dav/from-laptop.txt")
    });
    assert_eq!(
        dav.get("from-laptop.txt").as_deref(),
        Some(b"typed on the laptop".as_slice())
    );
    // A DELETE goes to the trash like any other.
    assert_eq!(dav.send("DELETE", "inbox/hello.txt", &[], b"").status, 204);
    wait_until("the DELETE in the client's folder", || {
        !folder.join("inbox/hello.txt").exists()
    });
    let trash = reqwest::send(
        "GET",
        &format!("{}/api/v1/trash", dav.server.url()),
        &laptop,
        None,
    );
    assert!(trash.1.contains("inbox/hello.txt"), "{}", trash.1);
}

#[test]
fn a_webdav_lock_blocks_a_clients_edit_until_unlock() {
    let dav = dav_server();
    let laptop = dav.server.token(USER, "laptop");
    let folder = dav.tmp.path().join("laptop");
    let _client = start_client(
        "client",
        dav.tmp.path(),
        &folder,
        &dav.server.url(),
        &laptop,
    );
    write(&folder.join("plan.txt"), "v1");
    wait_until("the client's file on the server", || {
        dav.get("plan.txt").as_deref() == Some(b"v1".as_slice())
    });

    let locked = dav.send(
        "LOCK",
        "plan.txt",
        &[
            ("Timeout", "Second-600"),
            ("Content-Type", "application/xml"),
        ],
        LOCK_BODY.as_bytes(),
    );
    assert_eq!(locked.status, 200, "{}", locked.text());
    let token = locked.header("lock-token");
    assert!(token.starts_with("<opaquelocktoken:"), "{token}");
    let path = folder.join("plan.txt");
    wait_until("the file read-only on the laptop", || {
        std::fs::metadata(&path).is_ok_and(|meta| meta.permissions().mode() & 0o222 == 0)
    });
    let locks = Command::new(bin())
        .arg("locks")
        .current_dir(&folder)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run syncstore locks");
    let locks = ok(locks);
    assert!(
        locks.contains("plan.txt") && locks.contains("webdav"),
        "{locks}"
    );

    // The user edits it anyway: the client is refused (423) and says it is blocked.
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    perms.set_mode(perms.mode() | 0o200);
    std::fs::set_permissions(&path, perms).unwrap();
    std::fs::write(&path, "v2 on the laptop").unwrap();
    wait_until("the laptop's edit blocked", || {
        let out = run(&["status", "-v", folder.to_str().unwrap()]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|line| line.contains("blocked") && line.contains("locked by webdav"))
    });
    assert_eq!(dav.get("plan.txt").as_deref(), Some(b"v1".as_slice()));
    // WebDAV itself needs the token to write, and a wrong token does not unlock.
    assert_eq!(dav.send("PUT", "plan.txt", &[], b"no token").status, 423);
    let wrong = "<opaquelocktoken:00000000-0000-0000-0000-000000000000>";
    assert_eq!(
        dav.send("UNLOCK", "plan.txt", &[("Lock-Token", wrong)], b"")
            .status,
        409
    );
    assert_eq!(
        dav.send("UNLOCK", "plan.txt", &[("Lock-Token", &token)], b"")
            .status,
        204
    );
    wait_until("the laptop's edit on the server once unlocked", || {
        dav.get("plan.txt").as_deref() == Some(b"v2 on the laptop".as_slice())
    });
}

#[test]
fn a_client_lock_shows_in_lockdiscovery_and_refuses_webdav_writes() {
    let dav = dav_server();
    let laptop = dav.server.token(USER, "laptop");
    assert_eq!(dav.send("PUT", "sheet.csv", &[], b"a,b").status, 201);
    let (status, body) = reqwest::send(
        "POST",
        &format!("{}/api/v1/locks", dav.server.url()),
        &laptop,
        Some(r#"{"path":"sheet.csv"}"#.to_owned()),
    );
    assert_eq!(status, 200, "{body}");
    let found = dav.send(
        "PROPFIND",
        "sheet.csv",
        &[("Depth", "0")],
        br#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:lockdiscovery/></D:prop></D:propfind>"#,
    );
    assert_eq!(found.status, 207);
    assert!(
        found.text().contains("activelock") && found.text().contains("opaquelocktoken:"),
        "{}",
        found.text()
    );
    assert_eq!(dav.send("PUT", "sheet.csv", &[], b"c,d").status, 423);
    assert_eq!(dav.send("DELETE", "sheet.csv", &[], b"").status, 423);
    assert_eq!(dav.get("sheet.csv").as_deref(), Some(b"a,b".as_slice()));
}

#[test]
fn credentials_are_checked_and_users_kept_apart() {
    let dav = dav_server_with(&["--auth-fail-limit", "3"]);
    let bob = dav.server.token("bob", "phone");
    assert_eq!(dav.send("PUT", "mine.txt", &[], b"dora's").status, 201);

    // File managers ask without credentials first: 401 with the challenge, never 429.
    for _ in 0..6 {
        let answer = send("PROPFIND", &dav.url(""), Credentials::None, &[], b"");
        assert_eq!(answer.status, 401);
        assert!(
            answer
                .header("www-authenticate")
                .starts_with("Basic realm=\"syncstore\""),
            "{}",
            answer.header("www-authenticate")
        );
    }
    let wrong_password = send(
        "PUT",
        &dav.url("mine.txt"),
        Credentials::Basic(USER, "not-the-token"),
        &[],
        b"overwritten",
    );
    assert_eq!(wrong_password.status, 401);
    assert!(wrong_password
        .header("www-authenticate")
        .starts_with("Basic"));
    // Bob's token with Dora's name.
    let wrong_user = send(
        "GET",
        &dav.url("mine.txt"),
        Credentials::Basic(USER, &bob),
        &[],
        b"",
    );
    assert_eq!(wrong_user.status, 401);
    assert_eq!(dav.get("mine.txt").as_deref(), Some(b"dora's".as_slice()));
    // Bob sees his own (empty) namespace, with Bearer too.
    let bobs = send(
        "GET",
        &dav.url("mine.txt"),
        Credentials::Bearer(&bob),
        &[],
        b"",
    );
    assert_eq!(bobs.status, 404);
    let listing = send(
        "PROPFIND",
        &dav.url(""),
        Credentials::Basic("bob", &bob),
        &[("Depth", "1")],
        b"",
    );
    assert_eq!(listing.status, 207);
    assert!(!listing.text().contains("mine.txt"), "{}", listing.text());
    // Past the limit, wrong credentials get 429: two were refused above, so the third is the
    // last 401 (had the six requests without credentials counted, all would be 429).
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let answer = send(
            "GET",
            &dav.url(""),
            Credentials::Basic(USER, "guess"),
            &[],
            b"",
        );
        statuses.push(answer.status);
    }
    assert_eq!(statuses, [401, 429, 429]);
}

#[test]
fn a_put_cut_off_keeps_the_old_version() {
    let dav = dav_server();
    assert_eq!(dav.send("PUT", "doc.bin", &[], b"old content").status, 201);
    let uploads_refused = |log: &str| {
        log.lines()
            .filter(|line| line.contains("a WebDAV upload was not committed"))
            .count()
    };
    assert_eq!(uploads_refused(&dav.server_log()), 0);

    // Announce 16 MiB, send 5 (several chunks get cut and stored), then hang up.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", dav.server.port)).unwrap();
    let head = format!(
        "PUT /dav/doc.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Content-Length: {}\r\n\r\n",
        dav.token,
        16 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&varied_bytes(5 * 1024 * 1024, 3)).unwrap();
    stream.flush().unwrap();
    drop(stream);
    wait_until("the server to give up the cut-off upload", || {
        uploads_refused(&dav.server_log()) == 1
    });
    assert_eq!(
        dav.get("doc.bin").as_deref(),
        Some(b"old content".as_slice())
    );
    let history = |dav: &Dav| {
        let (status, body) = reqwest::send(
            "GET",
            &format!("{}/api/v1/history?path=doc.bin", dav.server.url()),
            &dav.token,
            None,
        );
        assert_eq!(status, 200, "{body}");
        let history: serde_json::Value = serde_json::from_str(&body).unwrap();
        history["versions"].as_array().unwrap().len()
    };
    assert_eq!(history(&dav), 1);
    // A whole body is committed, as a second version.
    let whole = varied_bytes(5 * 1024 * 1024, 3);
    assert_eq!(dav.send("PUT", "doc.bin", &[], &whole).status, 204);
    assert_eq!(history(&dav), 2);
    assert_eq!(dav.get("doc.bin"), Some(whole));
}

#[test]
fn get_honours_ranges_and_copy_shares_the_chunks() {
    let dav = dav_server();
    let bytes = varied_bytes(3 * 1024 * 1024 + 5, 4);
    assert_eq!(dav.send("PUT", "video.bin", &[], &bytes).status, 201);
    let part = dav.send(
        "GET",
        "video.bin",
        &[("Range", "bytes=1000000-2500000")],
        b"",
    );
    assert_eq!(part.status, 206);
    assert_eq!(part.body, bytes[1_000_000..=2_500_000]);
    let tail = dav.send("GET", "video.bin", &[("Range", "bytes=-10")], b"");
    assert_eq!(tail.body, bytes[bytes.len() - 10..]);

    let destination = dav.url("copy.bin");
    let copied = dav.send("COPY", "video.bin", &[("Destination", &destination)], b"");
    assert_eq!(copied.status, 201);
    assert_eq!(dav.get("copy.bin"), Some(bytes));
    let entries = dav.server.tree(&dav.token);
    let hash_of = |path: &str| {
        entries
            .iter()
            .find(|entry| entry.path == path)
            .and_then(|entry| entry.hash.clone())
    };
    assert!(hash_of("copy.bin").is_some());
    assert_eq!(hash_of("copy.bin"), hash_of("video.bin"));
}

#[test]
fn two_servers_on_postgres_and_s3_share_locks_properties_and_files() {
    let Some(admin_url) = services() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (db, store) = fresh_database_and_bucket(&admin_url, "dav_two_servers");
    let a = Server::start_shared("server-a", tmp.path(), &db, &store);
    let b = Server::start_shared("server-b", tmp.path(), &db, &store);
    let token = a.token(USER, "webdav");
    let on = |server: &Server, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]| {
        send(
            method,
            &format!("{}/dav/{path}", server.url()),
            Credentials::Basic(USER, &token),
            headers,
            body,
        )
    };
    let bytes = varied_bytes(2 * 1024 * 1024 + 3, 5);
    assert_eq!(on(&a, "PUT", "shared.bin", &[], &bytes).status, 201);
    let read_back = on(&b, "GET", "shared.bin", &[], b"");
    assert_eq!(read_back.status, 200);
    assert_eq!(read_back.body, bytes);

    // A lock taken through A is known to B by the same token: B refuses a write without it,
    // and releases it with it.
    let locked = on(&a, "LOCK", "shared.bin", &[], LOCK_BODY.as_bytes());
    assert_eq!(locked.status, 200, "{}", locked.text());
    let token_header = locked.header("lock-token");
    assert_eq!(on(&b, "PUT", "shared.bin", &[], b"no token").status, 423);
    let discovered = on(&b, "PROPFIND", "shared.bin", &[("Depth", "0")], b"");
    let lock_token = token_header.trim_matches(|c| c == '<' || c == '>');
    assert!(
        discovered.text().contains(lock_token) && discovered.text().contains("dav test"),
        "{}",
        discovered.text()
    );
    let with_token = format!("({token_header})");
    assert_eq!(
        on(
            &b,
            "PUT",
            "shared.bin",
            &[("If", &with_token)],
            b"with token"
        )
        .status,
        204
    );
    assert_eq!(
        on(
            &b,
            "UNLOCK",
            "shared.bin",
            &[("Lock-Token", &token_header)],
            b""
        )
        .status,
        204
    );
    assert_eq!(on(&a, "PUT", "shared.bin", &[], b"free").status, 204);

    // A property set through B is read through A.
    let set = on(
        &b,
        "PROPPATCH",
        "shared.bin",
        &[],
        br#"<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:example"><D:set><D:prop><Z:color>teal</Z:color></D:prop></D:set></D:propertyupdate>"#,
    );
    assert_eq!(set.status, 207, "{}", set.text());
    let props = on(
        &a,
        "PROPFIND",
        "shared.bin",
        &[("Depth", "0")],
        br#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:Z="urn:example"><D:prop><Z:color/></D:prop></D:propfind>"#,
    );
    assert!(props.text().contains("teal"), "{}", props.text());
}
