//! The server over HTTP: `run` on `127.0.0.1:0` with a temp data dir, driven by reqwest.

use reqwest::StatusCode;
use std::time::{Duration, Instant};
use syncstore_proto::{
    decode_frame_header, encode_frame_header, Change, ChangesResponse, ChunkHash, ChunkList,
    ChunkRef, ContentHash, Cursor, DeviceName, ErrorBody, LockInfo, LockRequest, LocksResponse, Op,
    OpsRequest, OpsResponse, Precondition, RelPath, RemoteEntry, Revision, TreeResponse,
    UnlockRequest, UploadResponse, UserName, WhoAmI, FRAME_HEADER_LEN, MAX_LOCK_TTL_SECS,
};
use syncstore_server::{
    add_token, add_user, ensure_first_user, open_embedded_stores, run, serve, ChangeHub,
    ServerConfig, Stores,
};
use tokio::sync::oneshot;

/// A running server and a client for it.
struct TestServer {
    base: String,
    data_dir: tempfile::TempDir,
    http: reqwest::Client,
    stores: Stores,
    hub: ChangeHub,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    /// Serves the embedded stores through `serve`, keeping the stores and the hub for checks.
    async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// [`TestServer::start`] with the default config changed by `adjust`.
    async fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let data_dir = tempfile::tempdir().unwrap();
        let stores = open_embedded_stores(data_dir.path()).await.unwrap();
        let hub = ChangeHub::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let mut config = ServerConfig::new(data_dir.path().to_owned());
        adjust(&mut config);
        let task = tokio::spawn(serve(
            listener,
            stores.clone(),
            hub.clone(),
            config,
            async {
                let _ = stopped.await;
            },
        ));
        // The listener is bound, so connections queue until the server accepts them.
        TestServer {
            base: format!("http://{addr}"),
            data_dir,
            http: reqwest::Client::new(),
            stores,
            hub,
            stop: Some(stop),
            task,
        }
    }

    /// Waits until a long poll of `user` is waiting on the hub, up to a deadline.
    async fn wait_for_long_poll(&self, user: &str) {
        let user_name = UserName::new(user).unwrap();
        let user_id = self
            .stores
            .meta
            .user_by_name(&user_name)
            .await
            .unwrap()
            .unwrap()
            .id;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.hub.has_waiters(user_id) {
            assert!(
                Instant::now() < deadline,
                "the long poll never started waiting"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn user(&self, user: &str, device: &str) -> String {
        add_user(
            self.data_dir.path(),
            &UserName::new(user).unwrap(),
            &DeviceName::new(device).unwrap(),
        )
        .await
        .unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, token: &str, path: &str) -> T {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }

    async fn post<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        path: &str,
        body: &B,
    ) -> T {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "POST {path}");
        response.json().await.unwrap()
    }

    async fn upload(&self, token: &str, body: Vec<u8>) -> reqwest::Response {
        self.http
            .post(self.url("/api/v1/chunks/upload"))
            .bearer_auth(token)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn ops(&self, token: &str, ops: Vec<Op>) -> OpsResponse {
        let request = OpsRequest {
            ops,
            known: None,
            known_tag: None,
        };
        self.post(token, "/api/v1/ops", &request).await
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

fn chunk_hash(bytes: &[u8]) -> ChunkHash {
    ChunkHash(*blake3::hash(bytes).as_bytes())
}

fn frames(chunks: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    for chunk in chunks {
        body.extend_from_slice(&encode_frame_header(&chunk_hash(chunk), chunk.len() as u32));
        body.extend_from_slice(chunk);
    }
    body
}

fn parse_frames(mut body: &[u8]) -> Vec<(ChunkHash, Vec<u8>)> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let header: [u8; FRAME_HEADER_LEN] = body[..FRAME_HEADER_LEN].try_into().unwrap();
        let (hash, len) = decode_frame_header(&header).unwrap();
        let len = len as usize;
        out.push((
            hash,
            body[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len].to_vec(),
        ));
        body = &body[FRAME_HEADER_LEN + len..];
    }
    out
}

/// A PutFile of `content` as one chunk.
fn put_file(path: &str, base: Precondition, content: &[u8]) -> Op {
    Op::PutFile {
        path: RelPath::new(path).unwrap(),
        base,
        size: content.len() as u64,
        mtime_ms: 1_700_000_000_000,
        hash: ContentHash(*blake3::hash(content).as_bytes()),
        chunks: vec![ChunkRef {
            hash: chunk_hash(content),
            len: content.len() as u32,
        }],
        executable: false,
    }
}

async fn error_of(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: ErrorBody = response.json().await.unwrap();
    (status, body.error)
}

#[tokio::test]
async fn health_needs_no_auth_and_everything_else_does() {
    let server = TestServer::start().await;
    let token = server.user("alice", "laptop").await;

    let health = server
        .http
        .get(server.url("/api/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    let cases = [
        server.http.get(server.url("/api/v1/whoami")),
        server
            .http
            .get(server.url("/api/v1/tree"))
            .bearer_auth("sst_wrong"),
        server
            .http
            .get(server.url("/api/v1/tree"))
            .header("Authorization", format!("Basic {token}")),
        server
            .http
            .post(server.url("/api/v1/ops"))
            .bearer_auth("nope")
            .body("{\"ops\": []}"),
        server
            .http
            .post(server.url("/api/v1/chunks/upload"))
            .bearer_auth("nope")
            .body(frames(&[b"x"])),
    ];
    for request in cases {
        let (status, message) = error_of(request.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(!message.is_empty());
    }
    // Nothing was stored by the refused upload.
    let missing: ChunkList = server
        .post(
            &token,
            "/api/v1/chunks/missing",
            &ChunkList {
                hashes: vec![chunk_hash(b"x")],
            },
        )
        .await;
    assert_eq!(missing.hashes.len(), 1);

    let whoami: WhoAmI = server.get(&token, "/api/v1/whoami").await;
    assert_eq!(
        (whoami.user.as_str(), whoami.device.as_str()),
        ("alice", "laptop")
    );

    let (status, _) = error_of(
        server
            .http
            .get(server.url("/api/v1/nothing"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn malformed_input_is_a_400_with_a_message() {
    let server = TestServer::start().await;
    let token = server.user("alice", "laptop").await;
    let dotdot = r#"{"ops": [{"op": "make_dir", "path": "../etc", "mtime_ms": 0}]}"#;
    let bodies = [
        dotdot,
        "{not json",
        r#"{"ops": [{"op": "teleport"}]}"#,
        r#"{"hashes": ["abc"]}"#,
    ];
    for body in bodies {
        let path = if body.contains("hashes") {
            "/api/v1/chunks/missing"
        } else {
            "/api/v1/ops"
        };
        let response = server
            .http
            .post(server.url(path))
            .bearer_auth(&token)
            .body(body)
            .send()
            .await
            .unwrap();
        let (status, message) = error_of(response).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(message.starts_with("invalid JSON body"), "{message}");
    }
    let response = server
        .http
        .post(server.url("/api/v1/ops"))
        .bearer_auth(&token)
        .body(dotdot)
        .send()
        .await
        .unwrap();
    assert!(error_of(response).await.1.contains("'..'"));

    let response = server
        .http
        .get(server.url("/api/v1/changes?since=minus-one"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(response).await.0, StatusCode::BAD_REQUEST);

    // Nothing was applied.
    let tree: TreeResponse = server.get(&token, "/api/v1/tree").await;
    assert_eq!((tree.cursor.0, tree.entries.len()), (0, 0));
    server.stop().await;
}

#[tokio::test]
async fn put_file_flow_and_stale_revision() {
    let server = TestServer::start().await;
    let token = server.user("alice", "laptop").await;
    let content = b"hello, world".as_slice();

    let missing: ChunkList = server
        .post(
            &token,
            "/api/v1/chunks/missing",
            &ChunkList {
                hashes: vec![chunk_hash(content)],
            },
        )
        .await;
    assert_eq!(missing.hashes, [chunk_hash(content)]);

    // Ops naming a chunk the server lacks fail on their own.
    let early = server
        .ops(
            &token,
            vec![put_file("docs/a.txt", Precondition::MustNotExist, content)],
        )
        .await;
    assert_eq!(early.results[0].status, 400);
    assert!(
        early.results[0].message.contains("missing chunk"),
        "{}",
        early.results[0].message
    );

    let response = server.upload(&token, frames(&[content])).await;
    assert_eq!(response.status(), StatusCode::OK);
    let uploaded: UploadResponse = response.json().await.unwrap();
    assert_eq!(uploaded.stored, 1);
    let missing: ChunkList = server
        .post(
            &token,
            "/api/v1/chunks/missing",
            &ChunkList {
                hashes: vec![chunk_hash(content)],
            },
        )
        .await;
    assert!(missing.hashes.is_empty());

    let applied = server
        .ops(
            &token,
            vec![put_file("docs/a.txt", Precondition::MustNotExist, content)],
        )
        .await;
    assert_eq!(
        applied.results[0].status, 200,
        "{}",
        applied.results[0].message
    );
    assert_eq!(applied.cursor.0, 2);
    let entries = &applied.results[0].entries;
    assert_eq!(
        entries
            .iter()
            .map(|entry| entry.path.as_str())
            .collect::<Vec<_>>(),
        ["docs", "docs/a.txt"]
    );
    let file = entries[1].clone();
    assert_eq!(
        (file.rev, file.size, file.device.as_str()),
        (Revision(2), 12, "laptop")
    );

    let stale = server
        .ops(
            &token,
            vec![put_file(
                "docs/a.txt",
                Precondition::Rev(Revision(1)),
                content,
            )],
        )
        .await;
    assert_eq!(stale.results[0].status, 409);
    assert_eq!(stale.results[0].entries, std::slice::from_ref(&file));
    assert_eq!(stale.cursor.0, 2);

    let tree: TreeResponse = server.get(&token, "/api/v1/tree").await;
    assert_eq!(tree.cursor.0, 2);
    assert_eq!(tree.entries[1], file);
    server.stop().await;
}

#[tokio::test]
async fn long_poll_wakes_when_another_device_commits() {
    let server = TestServer::start().await;
    let laptop = server.user("alice", "laptop").await;
    let phone = add_token(
        server.data_dir.path(),
        &UserName::new("alice").unwrap(),
        &DeviceName::new("phone").unwrap(),
    )
    .await
    .unwrap();

    // Nothing new: a short poll times out empty.
    let quiet: ChangesResponse = server
        .get(&laptop, "/api/v1/changes?since=0&timeout_ms=50")
        .await;
    assert_eq!(
        (quiet.cursor.0, quiet.changes.len(), quiet.more, quiet.reset),
        (0, 0, false, false)
    );

    let poll = {
        let request = server
            .http
            .get(server.url("/api/v1/changes?since=0&timeout_ms=60000"))
            .bearer_auth(&laptop);
        tokio::spawn(async move {
            request
                .send()
                .await
                .unwrap()
                .json::<ChangesResponse>()
                .await
                .unwrap()
        })
    };
    // The poll waits before the commit, so only the hub can answer it in time.
    server.wait_for_long_poll("alice").await;
    let made = server
        .ops(
            &phone,
            vec![Op::MakeDir {
                path: RelPath::new("photos").unwrap(),
                mtime_ms: 1,
            }],
        )
        .await;
    assert_eq!(made.results[0].status, 200);

    let woken = tokio::time::timeout(Duration::from_secs(30), poll)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(woken.cursor.0, 1);
    assert_eq!(woken.changes.len(), 1);
    let Change::Upsert { entry, .. } = &woken.changes[0] else {
        panic!("{woken:?}")
    };
    assert_eq!(
        (entry.path.as_str(), entry.device.as_str()),
        ("photos", "phone")
    );

    // A cursor ahead of the journal asks for a reset at once.
    let ahead: ChangesResponse = server
        .get(&laptop, "/api/v1/changes?since=7&timeout_ms=60000")
        .await;
    assert!(ahead.reset);
    assert_eq!(ahead.cursor.0, 1);

    // A peek says there is a change and where the journal is, without the change itself.
    let peeked: ChangesResponse = server
        .get(
            &laptop,
            "/api/v1/changes?since=0&timeout_ms=60000&peek=true",
        )
        .await;
    assert_eq!(
        (peeked.cursor.0, peeked.changes.len(), peeked.peeked),
        (1, 0, 1)
    );
    let quiet: ChangesResponse = server
        .get(&laptop, "/api/v1/changes?since=1&timeout_ms=50&peek=true")
        .await;
    assert_eq!((quiet.cursor.0, quiet.peeked), (1, 0));
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_a_waiting_long_poll() {
    let server = TestServer::start().await;
    let token = server.user("alice", "laptop").await;
    let request = server
        .http
        .get(server.url("/api/v1/changes?since=0&timeout_ms=60000"))
        .bearer_auth(&token);
    let poll = tokio::spawn(request.send());
    server.wait_for_long_poll("alice").await;

    let started = Instant::now();
    server.stop().await;
    // Far below the 60 s the poll asked for and the 10 s shutdown grace.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let response = tokio::time::timeout(Duration::from_secs(30), poll)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: ChangesResponse = response.json().await.unwrap();
    assert!(answer.changes.is_empty());
}

#[tokio::test]
async fn run_serves_the_data_dir_until_shutdown() {
    let data_dir = tempfile::tempdir().unwrap();
    let (_, _, token) = ensure_first_user(data_dir.path()).await.unwrap().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(run(
        listener,
        ServerConfig::new(data_dir.path().to_owned()),
        async {
            let _ = stopped.await;
        },
    ));
    let whoami: WhoAmI = reqwest::Client::new()
        .get(format!("{base}/api/v1/whoami"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(whoami.user.as_str(), "me");
    assert!(
        data_dir.path().join("meta.sqlite").exists() && data_dir.path().join("chunks").is_dir()
    );
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn download_round_trip() {
    let server = TestServer::start().await;
    let token = server.user("alice", "laptop").await;
    let first = b"first chunk".as_slice();
    let second = vec![42u8; 300_000];
    let response = server
        .upload(&token, frames(&[first, &second, first]))
        .await;
    assert_eq!(response.json::<UploadResponse>().await.unwrap().stored, 3);

    let asked = vec![chunk_hash(&second), chunk_hash(first), chunk_hash(&second)];
    let response = server
        .http
        .post(server.url("/api/v1/chunks/download"))
        .bearer_auth(&token)
        .json(&ChunkList {
            hashes: asked.clone(),
        })
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.bytes().await.unwrap();
    let got = parse_frames(&body);
    assert_eq!(got.iter().map(|(hash, _)| *hash).collect::<Vec<_>>(), asked);
    assert_eq!(got[0].1, second);
    assert_eq!(got[1].1, first);

    let unknown = ChunkList {
        hashes: vec![chunk_hash(first), chunk_hash(b"never")],
    };
    let response = server
        .http
        .post(server.url("/api/v1/chunks/download"))
        .bearer_auth(&token)
        .json(&unknown)
        .send()
        .await
        .unwrap();
    let (status, message) = error_of(response).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        message.contains(&chunk_hash(b"never").to_hex()),
        "{message}"
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_uploads_store_no_partial_chunk() {
    let server = TestServer::start().await;
    let token = server.user("alice", "laptop").await;
    let whole = b"complete".as_slice();
    let cut = b"this one is cut short".as_slice();

    let mut body = frames(&[whole, cut]);
    body.truncate(body.len() - 5);
    let (status, message) = error_of(server.upload(&token, body).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        message.contains("ends inside chunk") && message.ends_with("after 1 complete chunks"),
        "{message}"
    );
    let (status, _) = error_of(server.upload(&token, frames(&[whole])[..10].to_vec()).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Bytes under another chunk's name.
    let mut forged = encode_frame_header(&chunk_hash(b"claimed"), cut.len() as u32).to_vec();
    forged.extend_from_slice(cut);
    // 422: what a client whose file changed while it was read sends, which it retries.
    let (status, message) = error_of(server.upload(&token, forged).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(message.contains("does not match"), "{message}");

    // A frame longer than the limit is refused from its header.
    let mut huge = encode_frame_header(&chunk_hash(b"x"), 1).to_vec();
    huge[32..].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        error_of(server.upload(&token, huge).await).await.0,
        StatusCode::BAD_REQUEST
    );

    let hashes = vec![chunk_hash(whole), chunk_hash(cut), chunk_hash(b"claimed")];
    let missing: ChunkList = server
        .post(&token, "/api/v1/chunks/missing", &ChunkList { hashes })
        .await;
    assert_eq!(missing.hashes, [chunk_hash(cut), chunk_hash(b"claimed")]);

    // An empty body stores nothing and is fine.
    let response = server.upload(&token, Vec::new()).await;
    assert_eq!(response.json::<UploadResponse>().await.unwrap().stored, 0);
    server.stop().await;
}

#[tokio::test]
async fn users_are_isolated() {
    let server = TestServer::start().await;
    let alice = server.user("alice", "laptop").await;
    let bob = server.user("bob", "laptop").await;
    let secret = b"alice's secret".as_slice();
    server.upload(&alice, frames(&[secret])).await;
    let applied = server
        .ops(
            &alice,
            vec![put_file("secret.txt", Precondition::MustNotExist, secret)],
        )
        .await;
    assert_eq!(applied.results[0].status, 200);

    let missing: ChunkList = server
        .post(
            &bob,
            "/api/v1/chunks/missing",
            &ChunkList {
                hashes: vec![chunk_hash(secret)],
            },
        )
        .await;
    assert_eq!(missing.hashes, [chunk_hash(secret)]);
    let response = server
        .http
        .post(server.url("/api/v1/chunks/download"))
        .bearer_auth(&bob)
        .json(&ChunkList {
            hashes: vec![chunk_hash(secret)],
        })
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let stolen = server
        .ops(
            &bob,
            vec![put_file("stolen.txt", Precondition::MustNotExist, secret)],
        )
        .await;
    assert_eq!(stolen.results[0].status, 400);

    let tree: TreeResponse = server.get(&bob, "/api/v1/tree").await;
    assert_eq!((tree.cursor.0, tree.entries.len()), (0, 0));
    let changes: ChangesResponse = server.get(&bob, "/api/v1/changes?since=0").await;
    assert!(changes.changes.is_empty());
    let whoami: WhoAmI = server.get(&bob, "/api/v1/whoami").await;
    assert_eq!(whoami.user.as_str(), "bob");
    server.stop().await;
}

#[tokio::test]
async fn admin_helpers() {
    let data_dir = tempfile::tempdir().unwrap();
    let (user, device, token) = ensure_first_user(data_dir.path()).await.unwrap().unwrap();
    assert_eq!((user.as_str(), device.as_str()), ("me", "first-device"));
    assert!(
        token.starts_with("sst_") && token.len() == 4 + 64,
        "{token}"
    );
    assert!(ensure_first_user(data_dir.path()).await.unwrap().is_none());

    let me = UserName::new("me").unwrap();
    let err = add_user(data_dir.path(), &me, &DeviceName::new("x").unwrap())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("already exists"), "{err:#}");
    let err = add_token(data_dir.path(), &me, &device).await.unwrap_err();
    assert!(format!("{err:#}").contains("already exists"), "{err:#}");
    let err = add_token(data_dir.path(), &UserName::new("ghost").unwrap(), &device)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("no user ghost"), "{err:#}");
    let second = add_token(data_dir.path(), &me, &DeviceName::new("phone").unwrap())
        .await
        .unwrap();
    assert_ne!(second, token);
}

/// Alice's laptop and phone, with `docs/a.txt` on the server.
async fn two_devices_and_a_file(server: &TestServer) -> (String, String, RemoteEntry) {
    let laptop = server.user("alice", "laptop").await;
    let phone = add_token(
        server.data_dir.path(),
        &UserName::new("alice").unwrap(),
        &DeviceName::new("phone").unwrap(),
    )
    .await
    .unwrap();
    let content = b"the plan".as_slice();
    server.upload(&laptop, frames(&[content])).await;
    let applied = server
        .ops(
            &laptop,
            vec![put_file("docs/a.txt", Precondition::MustNotExist, content)],
        )
        .await;
    assert_eq!(applied.results[0].status, 200);
    let file = applied.results[0].entries[1].clone();
    (laptop, phone, file)
}

/// Asserts that `message` reads `"PATH" is locked by DEVICE since YYYY-MM-DD HH:MM:SS`.
fn assert_held_message(message: &str, path: &str, device: &str) {
    let prefix = format!("\"{path}\" is locked by {device} since ");
    let time = message
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{message:?} does not start with {prefix:?}"));
    let shape: String = time
        .chars()
        .map(|c| if c.is_ascii_digit() { '9' } else { c })
        .collect();
    assert_eq!(shape, "9999-99-99 99:99:99", "{message:?}");
}

#[tokio::test]
async fn lock_endpoints_answer_200_400_404_423() {
    let server = TestServer::start().await;
    let (laptop, phone, _) = two_devices_and_a_file(&server).await;
    let lock_at = |token: &str, body: serde_json::Value| {
        server
            .http
            .post(server.url("/api/v1/locks"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };

    let lock: LockInfo = lock_at(
        &laptop,
        serde_json::json!({"path": "docs/a.txt", "ttl_secs": 3600}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        (lock.path.as_str(), lock.device.as_str()),
        ("docs/a.txt", "laptop")
    );
    assert_eq!(lock.expires_ms, Some(lock.since_ms + 3_600_000));

    let cases = [
        (
            &phone,
            serde_json::json!({"path": "docs/a.txt"}),
            StatusCode::LOCKED,
        ),
        (
            &phone,
            serde_json::json!({"path": "docs/a.txt/x"}),
            StatusCode::NOT_FOUND,
        ),
        (
            &laptop,
            serde_json::json!({"path": "nothing"}),
            StatusCode::NOT_FOUND,
        ),
        (
            &laptop,
            serde_json::json!({"path": "docs/a.txt", "ttl_secs": 0}),
            StatusCode::BAD_REQUEST,
        ),
        (
            &laptop,
            serde_json::json!({"path": "docs/a.txt", "ttl_secs": MAX_LOCK_TTL_SECS + 1}),
            StatusCode::BAD_REQUEST,
        ),
        (
            &laptop,
            serde_json::json!({"path": "../etc"}),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (token, body, status) in cases {
        let (got, message) = error_of(lock_at(token, body.clone()).await.unwrap()).await;
        assert_eq!(got, status, "{body}: {message}");
        assert!(!message.is_empty());
    }
    let (_, message) = error_of(
        lock_at(&phone, serde_json::json!({"path": "docs/a.txt"}))
            .await
            .unwrap(),
    )
    .await;
    assert_held_message(&message, "docs/a.txt", "laptop");
    // The directory above is out of reach too: the lock lies beneath it.
    let (status, message) = error_of(
        lock_at(&phone, serde_json::json!({"path": "docs"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::LOCKED);
    assert_held_message(&message, "docs/a.txt", "laptop");

    let listed: LocksResponse = server.get(&phone, "/api/v1/locks").await;
    assert_eq!(listed.locks, std::slice::from_ref(&lock));
    let tree: TreeResponse = server.get(&phone, "/api/v1/tree").await;
    assert_eq!(tree.locks, std::slice::from_ref(&lock));

    // Releasing: 404 without a lock, 423 for another device without force, 200 for the holder.
    let release = |token: &str, body: serde_json::Value| {
        server
            .http
            .post(server.url("/api/v1/locks/release"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let (status, message) = error_of(
        release(&laptop, serde_json::json!({"path": "docs"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, message.as_str()),
        (StatusCode::NOT_FOUND, "no lock on \"docs\"")
    );
    let (status, message) = error_of(
        release(&phone, serde_json::json!({"path": "docs/a.txt"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::LOCKED);
    assert_held_message(&message, "docs/a.txt", "laptop");
    let released: LockInfo = release(&laptop, serde_json::json!({"path": "docs/a.txt"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(released, lock);
    let listed: LocksResponse = server.get(&phone, "/api/v1/locks").await;
    assert!(listed.locks.is_empty());

    // Lock, then break with force: the journal names the breaker.
    let _: LockInfo = server
        .post(
            &laptop,
            "/api/v1/locks",
            &LockRequest {
                path: RelPath::new("docs").unwrap(),
                ttl_secs: None,
            },
        )
        .await;
    let broken: LockInfo = server
        .post(
            &phone,
            "/api/v1/locks/release",
            &UnlockRequest {
                path: RelPath::new("docs").unwrap(),
                force: true,
            },
        )
        .await;
    assert_eq!(broken.device.as_str(), "laptop");
    let changes: ChangesResponse = server.get(&laptop, "/api/v1/changes?since=2").await;
    let summary: Vec<String> = changes
        .changes
        .iter()
        .map(|change| match change {
            Change::Lock { lock, .. } => format!("lock {} {}", lock.path, lock.device),
            Change::Unlock {
                path,
                device,
                broken_by,
                ..
            } => {
                format!("unlock {path} {device} {broken_by:?}")
            }
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        summary,
        [
            "lock docs/a.txt laptop",
            "unlock docs/a.txt laptop None",
            "lock docs laptop",
            "unlock docs laptop Some(\"phone\")",
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn ops_on_a_locked_file_get_423_except_from_the_holder() {
    let server = TestServer::start().await;
    let (laptop, phone, file) = two_devices_and_a_file(&server).await;
    let _: LockInfo = server
        .post(
            &laptop,
            "/api/v1/locks",
            &LockRequest {
                path: file.path.clone(),
                ttl_secs: None,
            },
        )
        .await;
    let cursor = server
        .get::<TreeResponse>(&phone, "/api/v1/tree")
        .await
        .cursor;

    let edit = b"phone's edit".as_slice();
    server.upload(&phone, frames(&[edit])).await;
    let refused = server
        .ops(
            &phone,
            vec![
                put_file("docs/a.txt", Precondition::Rev(file.rev), edit),
                Op::Delete {
                    path: file.path.clone(),
                    base: file.rev,
                },
                Op::Move {
                    from: RelPath::new("docs").unwrap(),
                    to: RelPath::new("elsewhere").unwrap(),
                    base: Revision(1),
                },
                put_file("free.txt", Precondition::MustNotExist, edit),
            ],
        )
        .await;
    let statuses: Vec<u16> = refused.results.iter().map(|result| result.status).collect();
    assert_eq!(statuses, [423, 423, 423, 200]);
    for result in &refused.results[..3] {
        assert_held_message(&result.message, "docs/a.txt", "laptop");
    }
    assert_eq!(refused.cursor.0, cursor.0 + 1);

    let own = server
        .ops(
            &laptop,
            vec![put_file("docs/a.txt", Precondition::Rev(file.rev), edit)],
        )
        .await;
    assert_eq!(own.results[0].status, 200, "{}", own.results[0].message);
    server.stop().await;
}

#[tokio::test]
async fn long_poll_wakes_when_another_device_locks() {
    let server = TestServer::start().await;
    let (laptop, phone, file) = two_devices_and_a_file(&server).await;
    let since = server
        .get::<TreeResponse>(&phone, "/api/v1/tree")
        .await
        .cursor;
    let poll = {
        let request = server
            .http
            .get(server.url(&format!("/api/v1/changes?since={since}&timeout_ms=60000")))
            .bearer_auth(&phone);
        tokio::spawn(async move {
            request
                .send()
                .await
                .unwrap()
                .json::<ChangesResponse>()
                .await
                .unwrap()
        })
    };
    server.wait_for_long_poll("alice").await;
    let lock: LockInfo = server
        .post(
            &laptop,
            "/api/v1/locks",
            &LockRequest {
                path: file.path.clone(),
                ttl_secs: Some(60),
            },
        )
        .await;
    let woken = tokio::time::timeout(Duration::from_secs(30), poll)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        woken.changes,
        [Change::Lock {
            cursor: Cursor(since.0 + 1),
            lock
        }]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_lock_survives_a_server_restart() {
    let data_dir = tempfile::tempdir().unwrap();
    let (_, _, token) = ensure_first_user(data_dir.path()).await.unwrap().unwrap();
    let http = reqwest::Client::new();
    let mut taken = None;
    for round in 0..2 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(run(
            listener,
            ServerConfig::new(data_dir.path().to_owned()),
            async {
                let _ = stopped.await;
            },
        ));
        if round == 0 {
            let made: OpsResponse = http
                .post(format!("{base}/api/v1/ops"))
                .bearer_auth(&token)
                .json(&OpsRequest {
                    ops: vec![Op::MakeDir {
                        path: RelPath::new("d").unwrap(),
                        mtime_ms: 1,
                    }],
                    known: None,
                    known_tag: None,
                })
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(made.results[0].status, 200);
            let lock: LockInfo = http
                .post(format!("{base}/api/v1/locks"))
                .bearer_auth(&token)
                .json(&LockRequest {
                    path: RelPath::new("d").unwrap(),
                    ttl_secs: None,
                })
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            taken = Some(lock);
        } else {
            let listed: LocksResponse = http
                .get(format!("{base}/api/v1/locks"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(listed.locks, taken.iter().cloned().collect::<Vec<_>>());
        }
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

// Limits (issue 10): one client cannot hurt the others.

/// Sends the head of a chunk upload that promises `len` body bytes and then sends nothing.
async fn stalled_upload(server: &TestServer, token: &str, len: usize) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = server.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/v1/chunks/upload HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\ncontent-length: {len}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Reads an HTTP answer off a raw connection until the peer closes it or it is complete.
async fn read_answer(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buffer))
            .await
            .expect("an answer within 30 s");
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
        }
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|len| len.trim().parse::<usize>().ok());
            if len.is_some_and(|len| body.len() >= len) {
                break;
            }
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_stalled_upload_is_cut_off_and_frees_its_transfer_slot() {
    let server = TestServer::start_with(|config| {
        config.body_idle_timeout = Duration::from_millis(300);
        config.max_transfers_per_user = 1;
    })
    .await;
    let token = server.user("alice", "laptop").await;
    let mut stalled = stalled_upload(&server, &token, 1000).await;
    let started = Instant::now();
    let answer = read_answer(&mut stalled).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("--body-idle-timeout"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The user's only slot is free again.
    let response = server.upload(&token, frames(&[b"after the stall"])).await;
    assert_eq!(response.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn one_users_transfers_do_not_take_another_users_slots() {
    let server = TestServer::start_with(|config| {
        config.max_parallel_transfers = 4;
        config.max_transfers_per_user = 2;
        config.request_timeout = Duration::from_millis(500);
    })
    .await;
    let alice = server.user("alice", "laptop").await;
    let bob = server.user("bob", "phone").await;
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(stalled_upload(&server, &alice, 1000).await);
    }
    // Two of alice's uploads hold her slots; the other two wait for them and are refused.
    // Which two is the server's to decide (it may reach the fourth before the second: CI saw
    // that once), so all four are read at once; the holders get no answer while they stall.
    let answers = futures::future::join_all(
        stalled
            .iter_mut()
            .map(|stream| tokio::time::timeout(Duration::from_secs(10), read_answer(stream))),
    )
    .await;
    let refused: Vec<&String> = answers
        .iter()
        .filter_map(|answer| answer.as_ref().ok())
        .filter(|answer| answer.starts_with("HTTP/1.1 503"))
        .collect();
    assert_eq!(refused.len(), 2, "{answers:?}");
    for answer in refused {
        assert!(answer.contains("--max-transfers-per-user"), "{answer}");
    }
    let started = Instant::now();
    let response = server.upload(&bob, frames(&[b"bob's chunk"])).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(stalled);
    server.stop().await;
}

#[tokio::test]
async fn oversized_json_bodies_and_batches_get_413() {
    let server = TestServer::start_with(|config| {
        config.json_body_limit = 64 * 1024;
        config.max_batch_ops = 10;
        config.max_batch_dirs = 20;
    })
    .await;
    let token = server.user("alice", "laptop").await;

    // Declared too long: refused before the body is read.
    use tokio::io::AsyncWriteExt;
    let addr = server.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/v1/ops HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_answer(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("--max-json-body"), "{answer}");

    // Too long without a declared length (chunked).
    let chunks = futures::stream::iter(
        (0..100).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 1024]))),
    );
    let response = server
        .http
        .post(server.url("/api/v1/ops"))
        .bearer_auth(&token)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    // The server may close before the client has sent everything; when it answers, it is 413.
    if let Ok(response) = response {
        let (status, message) = error_of(response).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{message}");
        assert!(message.contains("--max-json-body"), "{message}");
    }

    let make_dirs = |paths: Vec<String>| OpsRequest {
        ops: paths
            .into_iter()
            .map(|path| Op::MakeDir {
                path: RelPath::new(&path).unwrap(),
                mtime_ms: 0,
            })
            .collect(),
        known: None,
        known_tag: None,
    };
    let too_many = make_dirs((0..11).map(|idx| format!("d{idx}")).collect());
    let response = server
        .http
        .post(server.url("/api/v1/ops"))
        .bearer_auth(&token)
        .json(&too_many)
        .send()
        .await
        .unwrap();
    let (status, message) = error_of(response).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{message}");
    assert!(
        message.contains("11 ops") && message.contains("--max-batch-ops"),
        "{message}"
    );

    let deep = make_dirs(vec![vec!["x"; 30].join("/")]);
    let response = server
        .http
        .post(server.url("/api/v1/ops"))
        .bearer_auth(&token)
        .json(&deep)
        .send()
        .await
        .unwrap();
    let (status, message) = error_of(response).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{message}");
    assert!(message.contains("--max-batch-dirs"), "{message}");

    let tree: TreeResponse = server.get(&token, "/api/v1/tree").await;
    assert!(tree.entries.is_empty(), "nothing was applied");
    let fine = make_dirs(vec![vec!["x"; 20].join("/")]);
    let answer: OpsResponse = server.post(&token, "/api/v1/ops", &fine).await;
    assert_eq!(answer.results[0].entries.len(), 20);
    server.stop().await;
}

#[tokio::test]
async fn a_too_deep_path_is_a_400_naming_the_limit() {
    let server = TestServer::start().await;
    let token = server.user("alice", "laptop").await;
    let path = vec!["d"; RelPath::MAX_DEPTH + 1].join("/");
    let body = serde_json::json!({"ops": [{"op": "make_dir", "path": path, "mtime_ms": 0}]});
    let response = server
        .http
        .post(server.url("/api/v1/ops"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, message) = error_of(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{message}");
    assert!(message.contains("more than 128 components"), "{message}");
    server.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_get_503_and_silent_ones_are_closed() {
    let server = TestServer::start_with(|config| {
        config.max_connections = 3;
        config.header_read_timeout = Duration::from_millis(500);
    })
    .await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // Give the server time to accept the three.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut over = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let answer = read_answer(&mut over).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too many open connections"), "{answer}");
    // The silent ones are closed after the header read timeout, freeing their slots.
    for stream in &mut silent {
        let closed = read_answer(stream).await;
        assert!(!closed.contains("200"), "{closed}");
    }
    let health = server
        .http
        .get(server.url("/api/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    server.stop().await;
}

/// `n` bytes that do not repeat (so a delta of an edit is small only because of the edit).
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 32);
    let mut block = blake3::hash(&seed.to_le_bytes());
    while out.len() < n {
        out.extend_from_slice(block.as_bytes());
        block = blake3::hash(block.as_bytes());
    }
    out.truncate(n);
    out
}

/// POSTs raw bytes.
async fn post_bytes(
    server: &TestServer,
    token: &str,
    path: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    server
        .http
        .post(server.url(path))
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_chunk_sent_as_a_delta_is_stored_only_when_it_makes_the_chunk() {
    use syncstore_chunk::delta;
    let server = TestServer::start().await;
    let token = server.user("alice", "laptop").await;
    let other = server.user("bob", "desk").await;
    let old = noise(512 * 1024, 1);
    let mut new = old.clone();
    new[300_000] ^= 0xff;
    let (old_hash, new_hash) = (chunk_hash(&old), chunk_hash(&new));
    assert_eq!(
        server.upload(&token, frames(&[&old])).await.status(),
        StatusCode::OK
    );

    // Up: the signature of the old chunk, the device's delta, the server makes the chunk.
    let bases = serde_json::json!({ "bases": [old_hash] });
    let response = server
        .http
        .post(server.url("/api/v1/chunks/signature"))
        .bearer_auth(&token)
        .json(&bases)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let signature = response.bytes().await.unwrap().to_vec();
    let made = delta::diff(signature, &new).unwrap();
    assert!(
        made.len() < new.len() / 50,
        "a one-byte edit's delta is {} bytes",
        made.len()
    );
    let patch = |target: ChunkHash, bases: &str| {
        format!("/api/v1/chunks/patch?target={target}&bases={bases}")
    };
    let response = post_bytes(
        &server,
        &token,
        &patch(new_hash, &old_hash.to_string()),
        made.clone(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<UploadResponse>().await.unwrap().stored, 1);
    let missing: ChunkList = server
        .post(
            &token,
            "/api/v1/chunks/missing",
            &ChunkList {
                hashes: vec![new_hash],
            },
        )
        .await;
    assert_eq!(missing.hashes, []);

    // Down: the delta that makes the new chunk from the old one.
    let request = serde_json::json!({ "target": new_hash, "bases": [old_hash] });
    let response = server
        .http
        .post(server.url("/api/v1/chunks/delta"))
        .bearer_auth(&token)
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let down = response.bytes().await.unwrap();
    assert!(down.len() < new.len() / 50, "{} bytes", down.len());
    assert_eq!(delta::apply(&old, &down, new_hash).unwrap(), new);

    // A delta that makes other bytes than its target: 422, and nothing stored under it.
    let claimed = chunk_hash(b"claimed");
    let (status, message) = error_of(
        post_bytes(
            &server,
            &token,
            &patch(claimed, &old_hash.to_string()),
            made.clone(),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{message}");
    assert!(message.contains("does not make"), "{message}");
    // Not a delta at all, too many bases, a base that is no hash: 400.
    let garbage = post_bytes(
        &server,
        &token,
        &patch(new_hash, &old_hash.to_string()),
        b"nonsense".to_vec(),
    )
    .await;
    assert_eq!(error_of(garbage).await.0, StatusCode::BAD_REQUEST);
    let five = vec![old_hash.to_string(); 5].join(",");
    let (status, message) =
        error_of(post_bytes(&server, &token, &patch(new_hash, &five), made.clone()).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("1 to 4 bases"), "{message}");
    let bad = post_bytes(&server, &token, &patch(new_hash, "xyz"), made.clone()).await;
    assert_eq!(error_of(bad).await.0, StatusCode::BAD_REQUEST);
    // A body over a chunk's worth: 400, read no further.
    let huge = vec![0u8; 2 * syncstore_proto::CHUNK_MAX as usize];
    let response = post_bytes(
        &server,
        &token,
        &patch(new_hash, &old_hash.to_string()),
        huge,
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // Another user's chunk is no base: unknown to them.
    let theirs = post_bytes(
        &server,
        &other,
        &patch(new_hash, &old_hash.to_string()),
        made,
    )
    .await;
    assert_eq!(error_of(theirs).await.0, StatusCode::NOT_FOUND);
    let missing: ChunkList = server
        .post(
            &other,
            "/api/v1/chunks/missing",
            &ChunkList {
                hashes: vec![new_hash],
            },
        )
        .await;
    assert_eq!(missing.hashes, [new_hash]);
    let missing: ChunkList = server
        .post(
            &token,
            "/api/v1/chunks/missing",
            &ChunkList {
                hashes: vec![claimed],
            },
        )
        .await;
    assert_eq!(missing.hashes, [claimed]);
    // Each needs a token.
    for path in [
        "/api/v1/chunks/signature".to_owned(),
        "/api/v1/chunks/delta".to_owned(),
        patch(new_hash, &old_hash.to_string()),
    ] {
        let response = post_bytes(&server, "sst_wrong", &path, b"{}".to_vec()).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    server.stop().await;
}
