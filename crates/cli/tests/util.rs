//! Test harness: spawn the real binary, wait for readiness by polling, snapshot folders.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_syncstore"))
}

/// How long a condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `cond` every 20 ms until it holds, or panics with `what` after `DEADLINE`.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    wait_until_for(what, DEADLINE, &mut cond);
}

/// Like [`wait_until`] with an explicit deadline.
pub fn wait_until_for(what: &str, deadline: Duration, cond: &mut dyn FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {deadline:?} waiting for: {what}");
}

/// A free loopback port (bound then released; the server binds it right after).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// A running child process, killed on drop, with its stderr in a log file.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, log_dir: &Path, args: &[&str]) -> Proc {
        let mut command = Command::new(bin());
        command.args(args);
        Proc::spawn_command(name, log_dir, command)
    }

    /// Spawns `command` (the binary, or a wrapper that runs it) with the tests' logging.
    pub fn spawn_command(name: &str, log_dir: &Path, mut command: Command) -> Proc {
        let log = log_dir.join(format!("{name}.log"));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open log");
        let child = command
            .env("RUST_LOG", "info,syncstore_client=debug")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log"))
            .stderr(log_file)
            .spawn()
            .expect("spawn syncstore");
        Proc {
            child,
            log,
            name: name.to_owned(),
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{} did not stop after SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let text = self.log_text();
            let tail: String = text
                .lines()
                .rev()
                .take(60)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            eprintln!("----- last lines of {} log -----\n{tail}", self.name);
        }
    }
}

/// Runs the binary to completion.
pub fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run syncstore")
}

/// A `serve` process on a loopback port.
pub struct Server {
    pub proc: Proc,
    pub name: String,
    pub port: u16,
    log_dir: PathBuf,
    /// The flags that pick the stores, for `serve`.
    store_args: Vec<String>,
    /// The flags that reach the metadata store, for `user add` and `token add`.
    admin_args: Vec<String>,
}

impl Server {
    /// A server on the embedded stores (SQLite and files) in `data`.
    pub fn start(log_dir: &Path, data: &Path) -> Server {
        let data = data.to_str().unwrap().to_owned();
        let store_args = vec!["--data".to_owned(), data.clone()];
        Server::start_with(
            "server",
            log_dir,
            store_args,
            vec!["--data".to_owned(), data],
        )
    }

    /// [`Server::start`] with more flags for `serve` (kept for restarts).
    pub fn start_with_flags(log_dir: &Path, data: &Path, extra: &[&str]) -> Server {
        let data = data.to_str().unwrap().to_owned();
        let mut store_args = vec!["--data".to_owned(), data.clone()];
        store_args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        Server::start_with(
            "server",
            log_dir,
            store_args,
            vec!["--data".to_owned(), data],
        )
    }

    /// Runs an admin command (`user …`, `token …`, `device …`) against this server's
    /// metadata store.
    pub fn admin(&self, args: &[&str]) -> Output {
        let admin: Vec<&str> = self.admin_args.iter().map(String::as_str).collect();
        run(&[args, &admin].concat())
    }

    /// [`Server::admin`] with `input` on the command's standard input.
    pub fn admin_with_input(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let admin: Vec<&str> = self.admin_args.iter().map(String::as_str).collect();
        let mut child = Command::new(bin())
            .args([args, &admin].concat())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run syncstore");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("wait for syncstore")
    }

    /// A server on the PostgreSQL database `db` and the bucket `store`, which other servers may share.
    pub fn start_shared(name: &str, log_dir: &Path, db: &str, store: &str) -> Server {
        let data = log_dir.join(format!("{name}-data"));
        let store_args = vec![
            "--db".to_owned(),
            db.to_owned(),
            "--store".to_owned(),
            store.to_owned(),
            "--data".to_owned(),
            data.to_str().unwrap().to_owned(),
        ];
        Server::start_with(
            name,
            log_dir,
            store_args,
            vec!["--db".to_owned(), db.to_owned()],
        )
    }

    fn start_with(
        name: &str,
        log_dir: &Path,
        store_args: Vec<String>,
        admin_args: Vec<String>,
    ) -> Server {
        let port = free_port();
        let server = Server {
            proc: spawn_server(name, log_dir, &store_args, port),
            name: name.to_owned(),
            port,
            log_dir: log_dir.to_path_buf(),
            store_args,
            admin_args,
        };
        server.wait_ready();
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn wait_ready(&self) {
        let url = format!("{}/api/v1/health", self.url());
        wait_until(&format!("{} health endpoint", self.name), || {
            reqwest::blocking_get_ok(&url)
        });
    }

    /// SIGKILL, then start again on the same port and stores, logging to `{name}-restarted.log`.
    pub fn kill9_and_restart(&mut self) {
        self.proc.kill9();
        self.proc = spawn_server(
            &format!("{}-restarted", self.name),
            &self.log_dir,
            &self.store_args,
            self.port,
        );
        self.wait_ready();
    }

    /// SIGTERM, and asserts a clean exit.
    pub fn stop(&mut self) {
        let status = self.proc.terminate();
        assert!(status.success(), "{} exited with {status}", self.name);
    }

    /// Starts a stopped server again on the same port and stores, with `extra` flags for
    /// `serve` (such as `--new-database`), logging to `{log_name}.log`.
    pub fn start_again(&mut self, log_name: &str, extra: &[&str]) {
        let mut store_args = self.store_args.clone();
        store_args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        self.proc = spawn_server(log_name, &self.log_dir, &store_args, self.port);
        self.wait_ready();
    }

    /// `serve` on the same port and stores, logging to `{log_name}.log`, for a start that is
    /// expected to fail: its exit status, or a panic if it is still running after `DEADLINE`.
    pub fn start_refused(&self, log_name: &str) -> (std::process::ExitStatus, String) {
        let mut proc = spawn_server(log_name, &self.log_dir, &self.store_args, self.port);
        let mut status = None;
        wait_until(&format!("{log_name} to exit"), || {
            status = proc.child.try_wait().expect("wait");
            status.is_some()
        });
        (status.unwrap(), proc.log_text())
    }

    /// A new device token for `user` (created if needed).
    pub fn token(&self, user: &str, device: &str) -> String {
        let admin: Vec<&str> = self.admin_args.iter().map(String::as_str).collect();
        let out = run(&[&["user", "add", user, "--device", device][..], &admin].concat());
        let out = if out.status.success() {
            out
        } else {
            run(&[&["token", "add", user, "--device", device][..], &admin].concat())
        };
        assert!(
            out.status.success(),
            "token add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).expect("utf8");
        stdout.lines().last().expect("token line").trim().to_owned()
    }

    /// The server's tree as the device with `token` sees it.
    pub fn tree(&self, token: &str) -> Vec<TreeEntry> {
        let (status, body) =
            reqwest::send("GET", &format!("{}/api/v1/tree", self.url()), token, None);
        assert_eq!(status, 200, "{body}");
        let tree: serde_json::Value = serde_json::from_str(&body).unwrap();
        tree["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| TreeEntry {
                path: e["path"].as_str().unwrap().to_owned(),
                node_id: e["node_id"].as_u64().unwrap(),
                rev: e["rev"].as_u64().unwrap(),
                hash: e["hash"].as_str().map(str::to_owned),
            })
            .collect()
    }

    /// The entry at `path` in the server's tree, if any.
    pub fn entry(&self, token: &str, path: &str) -> Option<TreeEntry> {
        self.tree(token).into_iter().find(|e| e.path == path)
    }
}

/// One row of `GET /api/v1/tree`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    pub path: String,
    pub node_id: u64,
    pub rev: u64,
    /// The BLAKE3 hex digest of a file's content; `None` for a directory.
    pub hash: Option<String>,
}

fn spawn_server(name: &str, log_dir: &Path, store_args: &[String], port: u16) -> Proc {
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["serve"];
    args.extend(store_args.iter().map(String::as_str));
    args.extend(["--listen", &listen]);
    Proc::spawn(name, log_dir, &args)
}

/// Minimal blocking HTTP helpers on top of reqwest's async client.
pub mod reqwest {
    pub fn blocking_get_ok(url: &str) -> bool {
        runtime().block_on(async {
            ::reqwest::get(url)
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false)
        })
    }

    pub fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// Sends a request with a bearer token; returns status and body text.
    pub fn send(method: &str, url: &str, token: &str, body: Option<String>) -> (u16, String) {
        runtime().block_on(async {
            let client = ::reqwest::Client::new();
            let mut request = client
                .request(method.parse().expect("method"), url)
                .bearer_auth(token);
            if let Some(body) = body {
                request = request
                    .header("content-type", "application/json")
                    .body(body);
            }
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        })
    }
}

/// A sync daemon on a folder.
pub fn start_client(name: &str, log_dir: &Path, dir: &Path, server_url: &str, token: &str) -> Proc {
    start_client_with_servers(name, log_dir, dir, &[server_url.to_owned()], token)
}

/// A sync daemon on a folder with `servers` in order of preference.
pub fn start_client_with_servers(
    name: &str,
    log_dir: &Path,
    dir: &Path,
    servers: &[String],
    token: &str,
) -> Proc {
    start_client_rescanning_every(name, log_dir, dir, servers, token, 5)
}

/// A sync daemon that rescans only every `scan_secs` seconds: with a long interval, a remote
/// change can reach it only through the long poll, so a test can tell the two apart.
pub fn start_client_rescanning_every(
    name: &str,
    log_dir: &Path,
    dir: &Path,
    servers: &[String],
    token: &str,
    scan_secs: u64,
) -> Proc {
    std::fs::create_dir_all(dir).expect("create client dir");
    let scan_secs = scan_secs.to_string();
    let mut args = vec!["sync", dir.to_str().unwrap()];
    for server in servers {
        args.extend(["--server", server]);
    }
    args.extend(["--token", token, "--scan-interval", &scan_secs]);
    Proc::spawn(name, log_dir, &args)
}

/// `sync --once` on a folder; the token is needed only the first time.
pub fn sync_once(dir: &Path, server_url: &str, token: Option<&str>) -> Output {
    let mut args = vec![
        "sync",
        dir.to_str().unwrap(),
        "--server",
        server_url,
        "--once",
    ];
    if let Some(token) = token {
        args.extend(["--token", token]);
    }
    run(&args)
}

/// Stdout of a command that must have succeeded.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Restarts a daemon on a folder that is already set up (no flags needed).
pub fn restart_client(name: &str, log_dir: &Path, dir: &Path) -> Proc {
    Proc::spawn(
        name,
        log_dir,
        &["sync", dir.to_str().unwrap(), "--scan-interval", "5"],
    )
}

/// Every file and directory below `root` (except `.syncstore`), with file contents.
pub fn snapshot(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Option<Vec<u8>>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel == ".syncstore" {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                out.insert(rel, None);
                walk(root, &path, out);
            } else if meta.is_file() {
                if let Ok(bytes) = std::fs::read(&path) {
                    out.insert(rel, Some(bytes));
                }
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// Waits until the two folders hold the same tree with the same contents.
pub fn wait_same(a: &Path, b: &Path) {
    let mut last = (BTreeMap::new(), BTreeMap::new());
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        let (sa, sb) = (snapshot(a), snapshot(b));
        if sa == sb {
            return;
        }
        last = (sa, sb);
        std::thread::sleep(Duration::from_millis(20));
    }
    let names = |m: &BTreeMap<String, Option<Vec<u8>>>| m.keys().cloned().collect::<Vec<_>>();
    panic!(
        "folders never converged:\n a: {:?}\n b: {:?}",
        names(&last.0),
        names(&last.1)
    );
}

/// Every file under `root` that is not in `.syncstore`, with its bytes.
pub fn files(root: &Path) -> Vec<(String, Vec<u8>)> {
    snapshot(root)
        .into_iter()
        .filter_map(|(path, bytes)| bytes.map(|bytes| (path, bytes)))
        .collect()
}

/// Asserts that `folder` holds the content of every `(path, bytes)` of `expected`: at its
/// path, or (where both sides changed it) in a conflicted copy beside it.
pub fn assert_holds(folder: &Path, expected: &[(String, Vec<u8>)]) {
    let now = snapshot(folder);
    for (path, bytes) in expected {
        let stem = path
            .rsplit_once('.')
            .map_or(path.as_str(), |(stem, _)| stem);
        let kept = now.iter().any(|(at, held)| {
            held.as_ref() == Some(bytes)
                && (at == path || at.starts_with(&format!("{stem} (conflicted copy")))
        });
        assert!(
            kept,
            "{} lost the content of {path} (holds {:?})",
            folder.display(),
            now.keys().collect::<Vec<_>>()
        );
    }
}

/// Reads a file as text, or None.
pub fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Writes a file, creating parents.
pub fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

/// A PostgreSQL of the test's own (`scripts/services pg-start`), for tests that stop or restart
/// it under running servers: the instance the other tests share is never touched. Removed on
/// drop.
pub struct PrivatePostgres {
    dir: String,
    /// The admin URL.
    pub url: String,
}

impl PrivatePostgres {
    const SCRIPT: &'static str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/services");

    pub fn start() -> PrivatePostgres {
        let out = Command::new(Self::SCRIPT)
            .arg("pg-start")
            .output()
            .expect("run scripts/services pg-start");
        assert!(
            out.status.success(),
            "scripts/services pg-start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let (dir, url) = stdout
            .trim()
            .split_once(' ')
            .unwrap_or_else(|| panic!("pg-start printed {stdout:?}, not \"DIR URL\""));
        PrivatePostgres {
            dir: dir.to_owned(),
            url: url.to_owned(),
        }
    }

    /// `stop`, `start` or `restart`; stopping ends every session at once, as an
    /// administrator's restart does.
    pub fn ctl(&self, action: &str) {
        let out = Command::new(Self::SCRIPT)
            .args(["pg-ctl", &self.dir, action])
            .output()
            .expect("run scripts/services pg-ctl");
        assert!(
            out.status.success(),
            "scripts/services pg-ctl {action} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = Command::new(Self::SCRIPT)
            .args(["pg-remove", &self.dir])
            .output();
    }
}

/// The admin URL of the test PostgreSQL server, or `None` to skip.
pub fn services() -> Option<String> {
    match std::env::var("SYNCSTORE_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => {
            assert!(
                std::env::var("AWS_ENDPOINT_URL").is_ok(),
                "SYNCSTORE_TEST_POSTGRES is set but AWS_ENDPOINT_URL is not: eval \"$(scripts/services env)\""
            );
            Some(url)
        }
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but SYNCSTORE_TEST_POSTGRES is not set: the PostgreSQL + S3 tests must run (use ./scripts/test)")
        }
        _ => {
            eprintln!(
                "\n*** SKIPPED a PostgreSQL + S3 end-to-end test: SYNCSTORE_TEST_POSTGRES is not set. \
                 Run ./scripts/test, or scripts/services start && eval \"$(scripts/services env)\". ***\n"
            );
            None
        }
    }
}

/// A fresh database on the PostgreSQL server of `admin_url` and a fresh bucket on the S3 server
/// of `AWS_ENDPOINT_URL`, named after `name`: the `--db` URL and the `--store` URL.
pub fn fresh_database_and_bucket(admin_url: &str, name: &str) -> (String, String) {
    let db = reqwest::runtime()
        .block_on(syncstore_store::postgres::create_test_database(
            admin_url, name,
        ))
        .unwrap_or_else(|err| panic!("could not create a test database on {admin_url}: {err}"));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let store = format!(
        "s3://e2e-{}-{}-{nanos}/syncstore",
        name.replace('_', "-"),
        std::process::id()
    );
    (db, store)
}

/// `len` bytes of a xorshift stream from `seed`: incompressible test data, the same every run.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}
