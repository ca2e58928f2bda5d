//! The folder's disk and files changing under the daemon (issue 11): bytes rewritten in place
//! with size and mtime kept, a filesystem mounted over the folder or a subfolder, a folder
//! moved away and replaced.

use crate::util::*;
use std::path::Path;
use std::time::SystemTime;

/// Rewrites `path` in place with `bytes` (same length) and puts its mtime back, as
/// `rsync --inplace -t` does: only the ctime tells that it changed.
fn write_in_place_keeping_mtime(path: &Path, bytes: &[u8]) {
    use std::io::{Seek, Write};
    let before: SystemTime = std::fs::metadata(path).unwrap().modified().unwrap();
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(std::io::SeekFrom::Start(0)).unwrap();
    file.write_all(bytes).unwrap();
    file.set_modified(before).unwrap();
    file.sync_all().unwrap();
    drop(file);
    assert_eq!(std::fs::metadata(path).unwrap().modified().unwrap(), before);
}

#[test]
fn an_in_place_write_that_keeps_size_and_mtime_is_synced_and_conflicts_with_an_edit() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().to_path_buf();
    let server = Server::start(&logs, &tmp.path().join("data"));
    let token_a = server.token("alice", "laptop");
    let token_b = server.token("alice", "desktop");
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    let mut a = start_client("client-a", &logs, &a_dir, &server.url(), &token_a);
    let _b = start_client("client-b", &logs, &b_dir, &server.url(), &token_b);
    let original = vec![b'o'; 64 * 1024];
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::write(a_dir.join("disk.img"), &original).unwrap();
    wait_until("disk.img on B", || {
        std::fs::read(b_dir.join("disk.img")).ok().as_deref() == Some(&original[..])
    });

    // The daemon running: the in-place write is uploaded.
    let first = vec![b'1'; 64 * 1024];
    write_in_place_keeping_mtime(&a_dir.join("disk.img"), &first);
    wait_until("the in-place write on B", || {
        std::fs::read(b_dir.join("disk.img")).ok().as_deref() == Some(&first[..])
    });
    wait_same(&a_dir, &b_dir);

    // The daemon stopped: an in-place write on A, an ordinary edit on B meanwhile. When A comes
    // back its bytes are kept as a conflicted copy, not overwritten by B's.
    a.terminate();
    let mine = vec![b'A'; 64 * 1024];
    write_in_place_keeping_mtime(&a_dir.join("disk.img"), &mine);
    let theirs = vec![b'B'; 64 * 1024];
    std::fs::write(b_dir.join("disk.img"), &theirs).unwrap();
    wait_until("B's edit on the server", || {
        server.entry(&token_b, "disk.img").and_then(|e| e.hash)
            == Some(blake3::hash(&theirs).to_hex().to_string())
    });
    let _a = restart_client("client-a-again", &logs, &a_dir);
    wait_until("a conflicted copy on B", || {
        snapshot(&b_dir)
            .values()
            .any(|bytes| bytes.as_deref() == Some(&mine[..]))
    });
    wait_same(&a_dir, &b_dir);
    let held: Vec<Vec<u8>> = snapshot(&a_dir).into_values().flatten().collect();
    assert!(held.contains(&mine), "A's in-place bytes are kept");
    assert!(held.contains(&theirs), "B's edit is kept");
}
