//! The web interface over plain HTTP, where a browser is not needed to see it: uploads that
//! are cut off or huge, zips, the sign-in rate limit, sessions ended by a new password, search.

use crate::util::*;
use std::io::{Read, Write};
use std::net::TcpStream;

const PASSWORD: &str = "correct horse battery";

/// A signed-in browser, as HTTP: its session cookie and CSRF token.
struct Web {
    base: String,
    cookie: String,
    csrf: String,
    client: ::reqwest::Client,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn client() -> ::reqwest::Client {
    ::reqwest::Client::builder()
        .redirect(::reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of `name="csrf" value="…"` (or the csrf meta tag) in a page.
fn csrf_in(page: &str) -> String {
    for marker in ["name=\"csrf\" value=\"", "name=\"csrf-token\" content=\""] {
        if let Some(start) = page.find(marker) {
            let rest = &page[start + marker.len()..];
            return rest[..rest.find('"').unwrap()].to_owned();
        }
    }
    panic!("no CSRF token in the page:\n{page}");
}

/// The `name=value` of the `Set-Cookie` named `name`.
fn set_cookie(response: &::reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .map(|value| value.split(';').next().unwrap().to_owned())
        .find(|pair| pair.starts_with(&format!("{name}=")) && pair.len() > name.len() + 1)
}

/// Posts the login form; the answer.
async fn post_login(base: &str, user: &str, password: &str) -> ::reqwest::Response {
    let client = client();
    let form = client.get(format!("{base}/login")).send().await.unwrap();
    let login_cookie = set_cookie(&form, "syncstore_login").expect("login cookie");
    let csrf = csrf_in(&form.text().await.unwrap());
    client
        .post(format!("{base}/login"))
        .header("cookie", login_cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("user", user),
            ("password", password),
            ("next", "/files"),
        ])
        .send()
        .await
        .unwrap()
}

async fn sign_in(base: &str) -> Web {
    let response = post_login(base, "me", PASSWORD).await;
    assert_eq!(response.status(), 303, "{}", response.text().await.unwrap());
    let cookie = set_cookie(&response, "syncstore_session").expect("session cookie");
    let client = client();
    let page = client
        .get(format!("{base}/files"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    Web {
        base: base.to_owned(),
        csrf: csrf_in(&page),
        cookie,
        client,
    }
}

impl Web {
    async fn get(&self, path: &str) -> ::reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap()
    }

    /// A multipart upload of one file into `dir`, as the page's form sends it.
    async fn upload(
        &self,
        dir: &str,
        name: &str,
        body: impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + Sync + 'static,
    ) -> ::reqwest::Response {
        let boundary = "syncstoreboundary7d1f";
        let head = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"dir\"\r\n\r\n{dir}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n",
            self.csrf
        );
        let tail = format!("\r\n--{boundary}--\r\n");
        let body_stream = framed(head, body, tail);
        self.client
            .post(format!("{}/upload", self.base))
            .header("cookie", &self.cookie)
            .header("x-requested-with", "fetch")
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(::reqwest::Body::wrap_stream(body_stream))
            .send()
            .await
            .unwrap()
    }
}

/// `head`, then `body`'s bytes, then `tail`, as one stream.
fn framed(
    head: String,
    body: impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static,
    tail: String,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    use futures::StreamExt;
    futures::stream::once(async move { Ok(bytes::Bytes::from(head)) })
        .chain(body)
        .chain(futures::stream::once(async move {
            Ok(bytes::Bytes::from(tail))
        }))
}

/// A body of one piece.
fn whole(
    text: &str,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    futures::stream::once(futures::future::ready(Ok(bytes::Bytes::from(
        text.to_owned(),
    ))))
}

fn start(logs: &std::path::Path, data: &std::path::Path, flags: &[&str]) -> (Server, String) {
    let server = Server::start_with_flags(logs, data, flags);
    let token = server.token("me", "laptop");
    let out = server.admin_with_input(&["user", "passwd", "me"], &format!("{PASSWORD}\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (server, token)
}

/// The server process's peak resident memory, in bytes.
fn peak_rss(server: &Server) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", server.proc.child.id())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[test]
fn a_cut_off_upload_leaves_the_old_version_and_a_large_one_streams() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let (server, token) = start(&logs, &tmp.path().join("data"), &[]);
    let base = server.url();
    runtime().block_on(async {
        let web = sign_in(&base).await;
        let old = "the old version\n";
        let response = web.upload("", "doc.txt", whole(old)).await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        let old_hash = blake3::hash(old.as_bytes()).to_hex().to_string();

        // A replacement whose connection drops after 3 MiB of a promised 64 MiB.
        let port = server.port;
        let cookie = web.cookie.clone();
        let csrf = web.csrf.clone();
        tokio::task::spawn_blocking(move || {
            let boundary = "cutoffboundary";
            let head = format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"doc.txt\"\r\n\r\n"
            );
            let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            write!(
                stream,
                "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n{head}",
                64 * 1024 * 1024
            )
            .unwrap();
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..48 {
                stream.write_all(&chunk).unwrap();
            }
            stream.flush().unwrap();
            // Gone without the rest of the body.
        })
        .await
        .unwrap();
        wait_until("the server to finish with the cut-off upload", || {
            server.proc.log_text().matches("path=/upload status=").count() >= 2
        });
        let entry = std::thread::scope(|scope| scope.spawn(|| server.entry(&token, "doc.txt")).join().unwrap())
            .expect("doc.txt");
        assert_eq!(entry.hash.as_deref(), Some(old_hash.as_str()), "a cut-off upload replaced the file");
        let history = web.get("/file?path=doc.txt").await.text().await.unwrap();
        assert_eq!(history.matches("restore-version").count(), 0, "a cut-off upload left a version");

        // 192 MiB streams through without the server holding it: its peak memory stays far
        // below the file's size.
        const SIZE: u64 = 192 * 1024 * 1024;
        let before = peak_rss(&server);
        let body = futures::stream::iter((0..SIZE / (1 << 20)).map(|i| {
            let block: Vec<u8> = (0..1u32 << 20).map(|j| (j.wrapping_mul(2654435761).wrapping_add(i as u32) >> 13) as u8).collect();
            Ok::<_, std::io::Error>(bytes::Bytes::from(block))
        }));
        let response = web.upload("", "big.bin", body).await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        let peak = peak_rss(&server);
        eprintln!(
            "server peak memory {} MiB (before the upload {} MiB) for a {} MiB upload",
            peak >> 20,
            before >> 20,
            SIZE >> 20
        );
        assert!(
            peak < 160 * 1024 * 1024,
            "the server's peak memory reached {} MiB (from {} MiB) for a {} MiB upload",
            peak >> 20,
            before >> 20,
            SIZE >> 20
        );
        // And it comes back whole.
        let mut download = web.get("/raw?path=big.bin&download=1").await;
        assert_eq!(download.status(), 200);
        let mut hasher = blake3::Hasher::new();
        let mut got = 0u64;
        while let Some(chunk) = download.chunk().await.unwrap() {
            got += chunk.len() as u64;
            hasher.update(&chunk);
        }
        assert_eq!(got, SIZE);
        let mut expected = blake3::Hasher::new();
        for i in 0..SIZE / (1 << 20) {
            let block: Vec<u8> = (0..1u32 << 20).map(|j| (j.wrapping_mul(2654435761).wrapping_add(i as u32) >> 13) as u8).collect();
            expected.update(&block);
        }
        assert_eq!(hasher.finalize(), expected.finalize(), "the download differs from the upload");
    });
}

#[test]
fn folders_download_as_zips_searches_find_names_and_a_new_password_ends_sessions() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let (server, token) = start(&logs, &tmp.path().join("data"), &[]);
    let base = server.url();
    let zip_path = tmp.path().join("photos.zip");
    runtime().block_on(async {
        let web = sign_in(&base).await;
        for (dir, name, text) in [
            ("photos", "beach.txt", "sand"),
            ("photos/2026", "snow.txt", "cold"),
            ("", "notes.txt", "not in the zip"),
        ] {
            let response = web.upload(dir, name, whole(text)).await;
            assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        }
        let zip = web.get("/zip?path=photos").await;
        assert_eq!(zip.status(), 200);
        assert_eq!(zip.headers()["content-type"], "application/zip");
        std::fs::write(&zip_path, zip.bytes().await.unwrap()).unwrap();

        let found = web.get("/files?q=SNOW").await.text().await.unwrap();
        assert!(found.contains("photos/2026/snow.txt"), "{found}");
        assert!(!found.contains("beach.txt"), "{found}");
        let sorted = web
            .get("/files?path=photos&sort=name&order=desc")
            .await
            .text()
            .await
            .unwrap();
        // Folders first, then files.
        assert!(sorted.find("2026/").unwrap() < sorted.find("beach.txt").unwrap());

        // A folder of more entries than a page holds has pages.
        let empty = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";
        let ops: Vec<serde_json::Value> = (0..520)
            .map(|i| serde_json::json!({"op": "put_file", "path": format!("many/f{i:03}.txt"), "base": "must_not_exist", "size": 0, "mtime_ms": 1_700_000_000_000i64, "hash": empty, "chunks": []}))
            .collect();
        let body = serde_json::json!({ "ops": ops }).to_string();
        let url = format!("{base}/api/v1/ops");
        let (status, answer) = std::thread::scope(|scope| scope.spawn(|| reqwest::send("POST", &url, &token, Some(body))).join().unwrap());
        assert_eq!(status, 200, "{answer}");
        let first = web.get("/files?path=many").await.text().await.unwrap();
        assert!(first.contains("Entries 1–500 of 520"), "{first}");
        assert!(first.contains("f499.txt") && !first.contains("f500.txt"));
        let second = web.get("/files?path=many&page=2").await.text().await.unwrap();
        assert!(second.contains("Entries 501–520 of 520") && second.contains("f519.txt") && !second.contains("f499.txt"));

        // A path that is not one is a clear 400, not a panic.
        let bad = web.get("/files?path=../etc").await;
        assert_eq!(bad.status(), 400);

        // A new password ends the sessions signed in with the old one.
        let out = server.admin_with_input(&["user", "passwd", "me"], "another good password\n");
        assert!(out.status.success());
        let after = web.get("/files").await;
        assert_eq!(after.status(), 303, "an old session still works");
        assert!(after.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/login"));
    });
    // The zip holds the folder's tree, and only it.
    let listing = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1])\nassert z.testzip() is None\nfor n in sorted(z.namelist()): print(n, z.read(n).decode() if not n.endswith('/') else '')",
            zip_path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        listing.status.success(),
        "{}",
        String::from_utf8_lossy(&listing.stderr)
    );
    assert_eq!(
        String::from_utf8(listing.stdout).unwrap(),
        "2026/ \n2026/snow.txt cold\nbeach.txt sand\n"
    );
}

#[test]
fn failed_sign_ins_are_rate_limited_per_address() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let (server, _token) = start(&logs, &tmp.path().join("data"), &["--auth-fail-limit", "2"]);
    let base = server.url();
    runtime().block_on(async {
        for _ in 0..2 {
            let response = post_login(&base, "me", "wrong password").await;
            assert_eq!(response.status(), 401);
            assert!(response
                .text()
                .await
                .unwrap()
                .contains("Wrong user name or password"));
        }
        let response = post_login(&base, "nobody", "wrong password").await;
        assert_eq!(response.status(), 429);
        assert!(response.headers().contains_key("retry-after"));
        // Blocked, even the right password is not tried.
        let response = post_login(&base, "me", PASSWORD).await;
        assert_eq!(response.status(), 429);
        assert!(set_cookie(&response, "syncstore_session").is_none());
    });
    // A raw request that is not HTTP at all does not upset the server either.
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream.write_all(b"\x00\x01garbage\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(reqwest::blocking_get_ok(&format!("{base}/api/v1/health")));
}

#[test]
fn a_session_from_server_a_works_on_server_b_over_postgres_and_s3() {
    let Some(admin_url) = services() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let (db, store) = fresh_database_and_bucket(&admin_url, "web_two_servers");
    let a = Server::start_shared("server-a", &logs, &db, &store);
    let b = Server::start_shared("server-b", &logs, &db, &store);
    let token = a.token("me", "laptop");
    let out = a.admin_with_input(&["user", "passwd", "me"], &format!("{PASSWORD}\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    runtime().block_on(async {
        let on_a = sign_in(&a.url()).await;
        // The same cookie and CSRF token, sent to the other server.
        let on_b = Web {
            base: b.url(),
            cookie: on_a.cookie.clone(),
            csrf: on_a.csrf.clone(),
            client: client(),
        };
        let response = on_b
            .upload("", "via-b.txt", whole("written through B"))
            .await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        let listing = on_a.get("/files").await.text().await.unwrap();
        assert!(listing.contains("via-b.txt"), "{listing}");
        let (status, body) = {
            let response = on_a.get("/raw?path=via-b.txt&download=1").await;
            (response.status(), response.text().await.unwrap())
        };
        assert_eq!((status.as_u16(), body.as_str()), (200, "written through B"));
    });
    let entry = a
        .entry(&token, "via-b.txt")
        .expect("the file, seen by a device");
    assert_eq!(
        entry.hash,
        Some(blake3::hash(b"written through B").to_hex().to_string())
    );
}

#[test]
fn another_devices_lock_blocks_the_browser_and_a_folder_restores_to_a_moment() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let (server, token) = start(&logs, &tmp.path().join("data"), &[]);
    let base = server.url();
    let api = |method: &'static str, path: &str, body: Option<String>| {
        let url = format!("{base}{path}");
        let token = token.clone();
        std::thread::scope(|scope| {
            scope
                .spawn(move || reqwest::send(method, &url, &token, body))
                .join()
                .unwrap()
        })
    };
    runtime().block_on(async {
        let web = sign_in(&base).await;
        for (name, text) in [("plan.txt", "plan v1"), ("keep.txt", "kept")] {
            let response = web.upload("project", name, whole(text)).await;
            assert_eq!(response.status(), 200);
        }

        // The laptop locks plan.txt: the browser's replacement and rename are refused with
        // the lock's holder, and nothing changes.
        let (status, body) = api(
            "POST",
            "/api/v1/locks",
            Some(r#"{"path":"project/plan.txt"}"#.to_owned()),
        );
        assert_eq!(status, 200, "{body}");
        let response = web
            .upload("project", "plan.txt", whole("plan v2 from the browser"))
            .await;
        assert_eq!(response.status(), 423);
        let message = response.text().await.unwrap();
        assert!(message.contains("is locked by laptop since"), "{message}");
        let response = web
            .client
            .post(format!("{base}/move"))
            .header("cookie", &web.cookie)
            .form(&[
                ("csrf", web.csrf.as_str()),
                ("from", "project/plan.txt"),
                ("to", "project/moved.txt"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 423);
        let (status, _) = api(
            "POST",
            "/api/v1/locks/release",
            Some(r#"{"path":"project/plan.txt"}"#.to_owned()),
        );
        assert_eq!(status, 200);

        // The folder as it was at a moment: after the first versions, before the changes.
        let page = web
            .get("/file?path=project/plan.txt")
            .await
            .text()
            .await
            .unwrap();
        assert!(page.contains("plan v1"), "{page}");
        let moment = chrono::Utc::now() + chrono::Duration::seconds(1);
        let moment_text = moment.format("%Y-%m-%dT%H:%M:%S").to_string();
        // The changes must come after that second.
        let changes_from = moment.timestamp() + 1;
        wait_until("the clock to pass the moment", || {
            chrono::Utc::now().timestamp() >= changes_from
        });
        assert_eq!(
            web.upload("project", "plan.txt", whole("plan v2"))
                .await
                .status(),
            200
        );
        assert_eq!(
            web.upload("project", "extra.txt", whole("added later"))
                .await
                .status(),
            200
        );
        let response = web
            .client
            .post(format!("{base}/restore"))
            .header("cookie", &web.cookie)
            .form(&[
                ("csrf", web.csrf.as_str()),
                ("kind", "moment"),
                ("path", "project"),
                ("at", moment_text.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let result = response.text().await.unwrap();
        assert!(result.contains("change(s) made"), "{result}");
        let plan = web
            .get("/raw?path=project/plan.txt&download=1")
            .await
            .text()
            .await
            .unwrap();
        assert_eq!(plan, "plan v1");
        assert_eq!(web.get("/raw?path=project/extra.txt").await.status(), 404);
        let trash = web.get("/trash").await.text().await.unwrap();
        assert!(
            trash.contains("project/extra.txt"),
            "the file the restore removed is not in the trash:\n{trash}"
        );
        let kept = web
            .get("/raw?path=project/keep.txt&download=1")
            .await
            .text()
            .await
            .unwrap();
        assert_eq!(kept, "kept");
    });
}
