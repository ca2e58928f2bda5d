//! Issue 15, TLS: `serve --tls-self-signed` with clients that pin its fingerprint, a private CA
//! with `--tls-cert/--tls-key` and clients with `--ca`, refusals that say what to do and are
//! not retried, reloading the certificate on SIGHUP, and the handshake timeout.

use crate::util::*;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use syncstore_proto::CertFingerprint;

/// A `serve` over HTTPS on the embedded stores in `DIR/data`, with `tls_args`.
struct TlsServer {
    proc: Proc,
    data: PathBuf,
    port: u16,
}

impl TlsServer {
    /// Starts the server and waits until it answers over HTTPS.
    fn start(dir: &Path, name: &str, tls_args: &[&str]) -> TlsServer {
        let server = TlsServer::spawn(dir, name, tls_args);
        wait_until(&format!("{name} to answer over HTTPS"), || {
            server.presented().is_some()
        });
        server
    }

    /// Starts the server and waits until it says it serves HTTPS, without connecting to it
    /// (its listener is bound by then; connections wait in its backlog).
    fn spawn(dir: &Path, name: &str, tls_args: &[&str]) -> TlsServer {
        let data = dir.join(format!("{name}-data"));
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec![
            "serve",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            &listen,
        ];
        args.extend(tls_args);
        let server = TlsServer {
            proc: Proc::spawn(name, dir, &args),
            data,
            port,
        };
        wait_until(&format!("{name} to serve HTTPS"), || {
            server.proc.log_text().contains("scheme=\"https\"")
        });
        server
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The fingerprint of the certificate the server presents to a new connection (any
    /// certificate is accepted here), or `None` while it does not answer its health endpoint.
    fn presented(&self) -> Option<CertFingerprint> {
        let url = format!("{}/api/v1/health", self.url());
        reqwest::runtime().block_on(async {
            let client = ::reqwest::Client::builder()
                .danger_accept_invalid_certs(true)
                .tls_info(true)
                .timeout(Duration::from_secs(5))
                .build()
                .expect("reqwest client");
            let response = client.get(&url).send().await.ok()?;
            if !response.status().is_success() {
                return None;
            }
            let info = response.extensions().get::<::reqwest::tls::TlsInfo>()?;
            Some(CertFingerprint::of_der(info.peer_certificate()?))
        })
    }

    /// A device token for `user` (created if needed).
    fn token(&self, user: &str, device: &str) -> String {
        let data = self.data.to_str().unwrap();
        let out = run(&["user", "add", user, "--device", device, "--data", data]);
        let out = if out.status.success() {
            out
        } else {
            run(&["token", "add", user, "--device", device, "--data", data])
        };
        ok(out)
            .lines()
            .last()
            .expect("token line")
            .trim()
            .to_owned()
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.proc.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill failed");
    }
}

/// A test CA that issues server certificates for 127.0.0.1 and localhost.
struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    fn new() -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "syncstore test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    /// Writes the CA's certificate to `path`.
    fn write_ca(&self, path: &Path) {
        std::fs::write(path, self.cert.pem()).unwrap();
    }

    /// Issues a server certificate and writes the chain (server certificate, then the CA's)
    /// to `cert_file` and its key to `key_file`, each renamed into place; returns the server
    /// certificate's fingerprint.
    fn issue(&self, cert_file: &Path, key_file: &Path) -> CertFingerprint {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "syncstore test server");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        write_replacing(cert_file, &format!("{}{}", cert.pem(), self.cert.pem()));
        write_replacing(key_file, &key.serialize_pem());
        CertFingerprint::of_der(cert.der())
    }
}

/// Writes `text` to a temp file beside `path` and renames it over `path`.
fn write_replacing(path: &Path, text: &str) {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

/// Runs the binary in `cwd` to completion.
fn run_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run syncstore")
}

/// The saved config of a folder, if any.
fn saved_config(dir: &Path) -> Option<serde_json::Value> {
    let text = read(&dir.join(".syncstore/config.json"))?;
    Some(serde_json::from_str(&text).unwrap())
}

/// Another fingerprint than `fingerprint` (its first byte changed).
fn other_than(fingerprint: CertFingerprint) -> CertFingerprint {
    let mut bytes = fingerprint.0;
    bytes[0] ^= 0xff;
    CertFingerprint(bytes)
}

#[test]
fn self_signed_server_and_pinned_folders_sync_both_ways() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TlsServer::start(tmp.path(), "server", &["--tls-self-signed"]);
    let printed = server.proc.log_text();
    let fingerprint = CertFingerprint::parse(
        ok(run(&[
            "tls",
            "fingerprint",
            "--data",
            server.data.to_str().unwrap(),
        ]))
        .trim(),
    )
    .unwrap();
    assert_eq!(server.presented(), Some(fingerprint));
    // The ready-to-paste command is over HTTPS and pins the certificate.
    let paste = format!(
        "syncstore login ~/Sync --server {} --pin {fingerprint} && syncstore sync ~/Sync",
        server.url()
    );
    assert!(printed.contains(&paste), "{printed}");
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(server.data.join("tls/key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600);

    let token_a = server.token("me", "laptop");
    let token_b = server.token("me", "desktop");
    let pin = fingerprint.to_string();
    // The pin is read liberally: plain lowercase hex works as well.
    let plain_pin = hex_of(fingerprint);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let mut daemons = Vec::new();
    for (name, dir, token, pin) in [("a", &a, &token_a, &pin), ("b", &b, &token_b, &plain_pin)] {
        std::fs::create_dir_all(dir).unwrap();
        daemons.push(Proc::spawn(
            name,
            tmp.path(),
            &[
                "sync",
                dir.to_str().unwrap(),
                "--server",
                &server.url(),
                "--pin",
                pin,
                "--token",
                token,
                "--scan-interval",
                "5",
            ],
        ));
    }
    write(&a.join("from-a.txt"), "written in a");
    wait_until("a's file in b", || {
        read(&b.join("from-a.txt")).as_deref() == Some("written in a")
    });
    write(&b.join("docs/from-b.txt"), "written in b");
    wait_until("b's file in a", || {
        read(&a.join("docs/from-b.txt")).as_deref() == Some("written in b")
    });
    wait_same(&a, &b);
    for dir in [&a, &b] {
        let config = saved_config(dir).expect("config saved");
        assert_eq!(config["pin"], pin.as_str(), "{config}");
        assert_eq!(config["servers"][0], server.url().as_str(), "{config}");
    }
}

/// The fingerprint as 64 lowercase hex digits.
fn hex_of(fingerprint: CertFingerprint) -> String {
    fingerprint.0.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_wrong_pin_is_refused_with_both_fingerprints_and_nothing_is_saved() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TlsServer::start(tmp.path(), "server", &["--tls-self-signed"]);
    let right = server.presented().unwrap();
    let wrong = other_than(right);
    let token = server.token("me", "laptop");
    let dir = tmp.path().join("folder");
    write(&dir.join("secret.txt"), "not for a stranger");
    let dir_arg = dir.to_str().unwrap();
    let url = server.url();
    let wrong_pin = wrong.to_string();
    let out = run(&[
        "sync", dir_arg, "--server", &url, "--pin", &wrong_pin, "--token", &token, "--once",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for part in [
        format!("presented the certificate {right}"),
        format!("not the pinned {wrong}"),
        "--pin NEW".to_owned(),
        url.clone(),
    ] {
        assert!(stderr.contains(&part), "{part:?} missing from: {stderr}");
    }
    assert!(
        saved_config(&dir).is_none(),
        "a refused server's config was saved"
    );

    // A daemon stops at once instead of retrying for ever.
    let mut daemon = Proc::spawn(
        "daemon",
        tmp.path(),
        &[
            "sync", dir_arg, "--server", &url, "--pin", &wrong_pin, "--token", &token,
        ],
    );
    let mut status = None;
    wait_until("the daemon with a wrong pin to exit", || {
        status = daemon.child.try_wait().expect("wait");
        status.is_some()
    });
    assert!(!status.unwrap().success());
    assert!(
        daemon
            .log_text()
            .contains(&format!("not the pinned {wrong}")),
        "{}",
        daemon.log_text()
    );
    assert!(
        saved_config(&dir).is_none(),
        "a refused server's config was saved"
    );

    // Nothing reached the server: the right pin sees an empty namespace.
    let right_pin = right.to_string();
    let listing = ok(run(&[
        "ls", "--server", &url, "--pin", &right_pin, "--token", &token,
    ]));
    assert!(!listing.contains("secret.txt"), "{listing}");
}

#[test]
fn a_private_ca_is_trusted_with_ca_and_refused_without() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    ca.write_ca(&tmp.path().join("ca.pem"));
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    let issued = ca.issue(&cert, &key);
    let server = TlsServer::start(
        tmp.path(),
        "server",
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(server.presented(), Some(issued));
    let printed = ok(run(&[
        "tls",
        "fingerprint",
        "--cert",
        cert.to_str().unwrap(),
    ]));
    assert_eq!(printed.trim(), issued.to_string());
    let token = server.token("me", "laptop");
    let url = server.url();

    // Without --ca the certificate is refused, with a message that says what to give.
    let untrusting = tmp.path().join("untrusting");
    write(&untrusting.join("a.txt"), "a");
    let out = run(&[
        "sync",
        untrusting.to_str().unwrap(),
        "--server",
        &url,
        "--token",
        &token,
        "--once",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not trusted"), "{stderr}");
    assert!(stderr.contains("--ca FILE"), "{stderr}");
    assert!(saved_config(&untrusting).is_none());

    // With --ca (relative: saved as an absolute path) it syncs, and later runs need no flags.
    let folder = tmp.path().join("folder");
    write(&folder.join("a.txt"), "a");
    let out = run_in(
        tmp.path(),
        &[
            "sync", "folder", "--server", &url, "--ca", "ca.pem", "--token", &token, "--once",
        ],
    );
    assert!(ok(out).contains("in sync"));
    let config = saved_config(&folder).expect("config saved");
    let saved_ca = tmp.path().join("ca.pem");
    assert_eq!(config["ca"], saved_ca.to_str().unwrap(), "{config}");
    write(&folder.join("b.txt"), "b");
    assert!(ok(run(&["sync", folder.to_str().unwrap(), "--once"])).contains("in sync"));
    let listing = ok(run_in(&folder, &["ls"]));
    assert!(
        listing.contains("a.txt") && listing.contains("b.txt"),
        "{listing}"
    );
}

#[test]
fn sighup_reloads_the_certificate_and_a_bad_one_keeps_the_old() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    let first = ca.issue(&cert, &key);
    let server = TlsServer::start(
        tmp.path(),
        "server",
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(server.presented(), Some(first));
    let token = server.token("me", "laptop");
    let url = server.url();

    let second = ca.issue(&cert, &key);
    assert_ne!(first, second);
    // Not reread until told.
    assert_eq!(server.presented(), Some(first));
    server.signal(libc::SIGHUP);
    wait_until("new connections to get the new certificate", || {
        server.presented() == Some(second)
    });
    let second_pin = second.to_string();
    ok(run(&[
        "ls",
        "--server",
        &url,
        "--pin",
        &second_pin,
        "--token",
        &token,
    ]));

    // A broken file: a WARN with the reason, and the certificate in use stays.
    write_replacing(&cert, "not a certificate");
    server.signal(libc::SIGHUP);
    wait_until("a warning about the failed reload", || {
        server.proc.log_text().lines().any(|line| {
            line.contains("WARN") && line.contains("could not reload the TLS certificate")
        })
    });
    let log = server.proc.log_text();
    assert!(log.contains("holds no certificate"), "{log}");
    assert_eq!(server.presented(), Some(second));
    ok(run(&[
        "ls",
        "--server",
        &url,
        "--pin",
        &second_pin,
        "--token",
        &token,
    ]));
}

#[test]
fn bad_certificate_files_at_start_are_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    ca.issue(&cert, &key);
    let (other_cert, other_key) = (tmp.path().join("other.pem"), tmp.path().join("other.key"));
    ca.issue(&other_cert, &other_key);
    let data = tmp.path().join("data");
    let listen = format!("127.0.0.1:{}", free_port());
    let missing = tmp.path().join("missing.pem");
    let serve = |cert: &Path, key: &Path| {
        run(&[
            "serve",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            &listen,
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ])
    };
    for (cert, key, says) in [
        (&missing, &key, "could not read PEM certificates from"),
        (&cert, &missing, "could not read a PEM private key from"),
        (&cert, &other_key, "is not usable with the certificate in"),
    ] {
        let out = serve(cert, key);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(says), "{says:?} missing from: {stderr}");
        assert!(stderr.contains("--tls-cert"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // Half of a pair is refused by the flags.
    let out = run(&["serve", "--tls-cert", cert.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
}

#[test]
fn a_silent_client_holds_a_slot_only_until_the_handshake_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    // No connection before the silent ones, so they are the two that hold the slots.
    let server = TlsServer::spawn(
        tmp.path(),
        "server",
        &[
            "--tls-self-signed",
            "--max-connections",
            "2",
            "--header-read-timeout",
            "3s",
        ],
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], server.port));
    let silent: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect"))
        .collect();
    // Both slots are taken: a TLS client is turned away (closed) while they are silent.
    assert_eq!(server.presented(), None);
    // The server closes them once the handshake timeout has passed; then it serves again.
    for stream in &silent {
        stream
            .set_read_timeout(Some(DEADLINE))
            .expect("read timeout");
        let mut byte = [0u8; 1];
        let read = std::io::Read::read(&mut &*stream, &mut byte);
        assert!(
            matches!(read, Ok(0)),
            "a silent connection was not closed: {read:?}"
        );
    }
    wait_until("the server to serve again", || server.presented().is_some());
}
