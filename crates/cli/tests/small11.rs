//! Issue 11: default ignores, read-only commands, a full disk on the receiving side.

use crate::util::*;

/// A server and two folders of one user (devices "laptop" and "desktop").
struct Setup {
    tmp: tempfile::TempDir,
    server: Server,
    a_dir: std::path::PathBuf,
    b_dir: std::path::PathBuf,
    token_a: String,
    token_b: String,
}

impl Setup {
    fn logs(&self) -> &std::path::Path {
        self.tmp.path()
    }
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &tmp.path().join("data"));
    let token_a = server.token("alice", "laptop");
    let token_b = server.token("alice", "desktop");
    let a_dir = tmp.path().join("a");
    let b_dir = tmp.path().join("b");
    Setup {
        tmp,
        server,
        a_dir,
        b_dir,
        token_a,
        token_b,
    }
}

#[test]
fn libreoffice_lock_files_stay_local() {
    let s = setup();
    let _a = start_client("client-a", s.logs(), &s.a_dir, &s.server.url(), &s.token_a);
    let _b = start_client("client-b", s.logs(), &s.b_dir, &s.server.url(), &s.token_b);
    write(
        &s.a_dir.join(".~lock.x.odt#"),
        ",alice,laptop,06.05.2026 10:00,file:///home/alice/.config/libreoffice/4;",
    );
    write(&s.a_dir.join(".DS_Store"), "finder");
    // Created after the lock file: once it has arrived, A's daemon has seen the lock file too.
    write(&s.a_dir.join("x.odt"), "the document");
    wait_until("x.odt on B", || {
        read(&s.b_dir.join("x.odt")).as_deref() == Some("the document")
    });
    assert!(
        !s.b_dir.join(".~lock.x.odt#").exists(),
        "the lock file was synced"
    );
    assert!(!s.b_dir.join(".DS_Store").exists(), ".DS_Store was synced");
    assert!(s.server.entry(&s.token_a, ".~lock.x.odt#").is_none());
    assert!(s.server.entry(&s.token_a, ".DS_Store").is_none());
    assert!(
        s.a_dir.join(".~lock.x.odt#").exists(),
        "the lock file stays on A"
    );
}
