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

/// A tmpfs mounted for a test, unmounted on drop.
struct Mount(std::path::PathBuf);

impl Mount {
    /// Mounts an empty tmpfs at `dir`; `None` (with a loud message) when not running as root,
    /// which CI always is.
    fn tmpfs(dir: &Path, test: &str) -> Option<Mount> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs as root and must run {test}"
            );
            eprintln!("SKIPPED {test}: needs root to mount a tmpfs");
            return None;
        }
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount a tmpfs at {}", dir.display());
        Some(Mount(dir.to_path_buf()))
    }

    fn unmount(self) {
        let status = std::process::Command::new("umount")
            .arg(&self.0)
            .status()
            .expect("run umount");
        assert!(status.success(), "umount {}", self.0.display());
        std::mem::forget(self);
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A folder of `n` files under `sub/` and `top/`, synced to a second one.
struct Synced {
    tmp: tempfile::TempDir,
    server: Server,
    token_a: String,
    a_dir: std::path::PathBuf,
    b_dir: std::path::PathBuf,
    a: Proc,
    _b: Proc,
    files: Vec<(String, Vec<u8>)>,
}

fn synced(n: usize) -> Synced {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().to_path_buf();
    let server = Server::start(&logs, &tmp.path().join("data"));
    let token_a = server.token("alice", "laptop");
    let token_b = server.token("alice", "desktop");
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    for idx in 0..n {
        let dir = if idx % 2 == 0 { "sub" } else { "top" };
        write(
            &a_dir.join(format!("{dir}/f{idx}.txt")),
            &format!("file {idx}"),
        );
    }
    let a = start_client("client-a", &logs, &a_dir, &server.url(), &token_a);
    let b = start_client("client-b", &logs, &b_dir, &server.url(), &token_b);
    wait_until("every file on B", || snapshot(&b_dir).len() >= n + 2);
    wait_same(&a_dir, &b_dir);
    let files: Vec<(String, Vec<u8>)> = snapshot(&a_dir)
        .into_iter()
        .filter_map(|(path, bytes)| bytes.map(|bytes| (path, bytes)))
        .collect();
    assert_eq!(files.len(), n);
    Synced {
        tmp,
        server,
        token_a,
        a_dir,
        b_dir,
        a,
        _b: b,
        files,
    }
}

impl Synced {
    /// Every file is still on B and on the server.
    fn nothing_lost(&self) {
        let on_b = snapshot(&self.b_dir);
        let on_server = self.server.tree(&self.token_a);
        for (path, bytes) in &self.files {
            assert_eq!(on_b.get(path), Some(&Some(bytes.clone())), "B lost {path}");
            assert!(
                on_server.iter().any(|e| e.path == *path),
                "the server lost {path}"
            );
        }
    }

    fn count_in_a_log(&self, needle: &str) -> usize {
        self.a.log_text().matches(needle).count()
    }
}

#[test]
fn a_filesystem_mounted_over_a_running_folder_deletes_nothing() {
    let test = "a_filesystem_mounted_over_a_running_folder_deletes_nothing";
    let s = synced(200);
    let Some(mount) = Mount::tmpfs(&s.a_dir, test) else {
        return;
    };
    wait_until("A reports the folder stopped", || {
        s.count_in_a_log("is stopped: another filesystem is mounted over it") == 1
    });
    s.nothing_lost();
    // An application drops a file into the empty disk: still nothing is read as deleted.
    let checks = s.count_in_a_log("the folder is still stopped");
    write(&s.a_dir.join("stray.txt"), "dropped by an application");
    wait_until("A looks at the folder again", || {
        s.count_in_a_log("the folder is still stopped") > checks
    });
    s.nothing_lost();
    assert!(!s.b_dir.join("stray.txt").exists());
    // Unmounted: the folder is back and syncs again, with nothing lost.
    mount.unmount();
    write(&s.a_dir.join("after.txt"), "written after the unmount");
    wait_until("A's new file on B", || {
        read(&s.b_dir.join("after.txt")).as_deref() == Some("written after the unmount")
    });
    assert!(s.count_in_a_log("the folder is back") >= 1);
    s.nothing_lost();
    wait_same(&s.a_dir, &s.b_dir);
    drop(s.tmp);
}

#[test]
fn a_filesystem_mounted_over_a_subfolder_deletes_nothing() {
    let test = "a_filesystem_mounted_over_a_subfolder_deletes_nothing";
    let s = synced(200);
    let Some(mount) = Mount::tmpfs(&s.a_dir.join("sub"), test) else {
        return;
    };
    write(&s.a_dir.join("sub/on-the-mount.txt"), "not synced");
    wait_until("A reports the mount", || {
        s.count_in_a_log("on another filesystem than the folder") >= 1
    });
    // The rest of the folder keeps syncing meanwhile.
    write(
        &s.a_dir.join("top/meanwhile.txt"),
        "synced while sub is mounted over",
    );
    wait_until("A's new file on B", || {
        s.b_dir.join("top/meanwhile.txt").exists()
    });
    s.nothing_lost();
    assert!(!s.b_dir.join("sub/on-the-mount.txt").exists());
    mount.unmount();
    wait_same(&s.a_dir, &s.b_dir);
    s.nothing_lost();
}

#[test]
fn a_folder_moved_away_and_replaced_by_an_empty_one_is_stopped() {
    let s = synced(50);
    std::fs::rename(&s.a_dir, s.tmp.path().join("a-moved")).unwrap();
    std::fs::create_dir(&s.a_dir).unwrap();
    wait_until("A reports the folder stopped", || {
        s.count_in_a_log("is stopped: the directory at its path is not the one being synced") == 1
    });
    s.nothing_lost();
    // Moved back: it resumes.
    std::fs::remove_dir(&s.a_dir).unwrap();
    std::fs::rename(s.tmp.path().join("a-moved"), &s.a_dir).unwrap();
    write(&s.a_dir.join("back.txt"), "the folder is back");
    wait_until("A's new file on B", || s.b_dir.join("back.txt").exists());
    s.nothing_lost();
}

#[test]
fn a_second_daemon_on_one_folder_is_refused_with_the_first_ones_pid() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().to_path_buf();
    let server = Server::start(&logs, &tmp.path().join("data"));
    let token = server.token("alice", "laptop");
    let dir = tmp.path().join("a");
    let first = start_client("client-a", &logs, &dir, &server.url(), &token);
    write(&dir.join("hello.txt"), "hello");
    wait_until("the first daemon syncs", || {
        server.entry(&token, "hello.txt").is_some()
    });
    let second = sync_once(&dir, &server.url(), None);
    let message = String::from_utf8_lossy(&second.stderr).into_owned();
    assert_eq!(second.status.code(), Some(2), "{message}");
    assert!(
        message.contains("already being synced")
            && message.contains(&format!("pid {}", first.child.id())),
        "{message}"
    );
    // `status` only reads, and still works beside the daemon (which says it is in sync once
    // its pass is done).
    wait_until("status beside the daemon says in sync", || {
        run(&["status", dir.to_str().unwrap()]).status.success()
    });
    drop(first);
    let again = sync_once(&dir, &server.url(), None);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}
