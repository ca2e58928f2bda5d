//! Two daemons and a server: changes propagate both ways while they run.

use crate::util::*;
use std::os::unix::fs::MetadataExt;

struct Setup {
    _tmp: tempfile::TempDir,
    logs: std::path::PathBuf,
    server: Server,
    a_dir: std::path::PathBuf,
    b_dir: std::path::PathBuf,
    token_a: String,
    token_b: String,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().to_path_buf();
    let server = Server::start(&logs, &tmp.path().join("data"));
    let token_a = server.token("alice", "laptop");
    let token_b = server.token("alice", "desktop");
    let a_dir = tmp.path().join("a");
    let b_dir = tmp.path().join("b");
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    Setup {
        _tmp: tmp,
        logs,
        server,
        a_dir,
        b_dir,
        token_a,
        token_b,
    }
}

/// Node id of `path` on the server, read from the tree listing.
fn node_id(setup: &Setup, path: &str) -> Option<u64> {
    setup
        .server
        .entry(&setup.token_a, path)
        .map(|entry| entry.node_id)
}

#[test]
fn create_update_delete_rename_propagate_both_ways() {
    let s = setup();
    let _a = start_client("client-a", &s.logs, &s.a_dir, &s.server.url(), &s.token_a);
    let _b = start_client("client-b", &s.logs, &s.b_dir, &s.server.url(), &s.token_b);

    // Create on A, nested directories and an empty directory included.
    write(&s.a_dir.join("hello.txt"), "hello from a");
    write(&s.a_dir.join("docs/2026/report.md"), "# report");
    std::fs::create_dir_all(s.a_dir.join("empty/inner")).unwrap();
    wait_until("A's files on B", || {
        read(&s.b_dir.join("hello.txt")).as_deref() == Some("hello from a")
            && read(&s.b_dir.join("docs/2026/report.md")).as_deref() == Some("# report")
            && s.b_dir.join("empty/inner").is_dir()
    });

    // Update on B reaches A.
    write(&s.b_dir.join("hello.txt"), "edited on b");
    wait_until("B's edit on A", || {
        read(&s.a_dir.join("hello.txt")).as_deref() == Some("edited on b")
    });

    // Create on B (with an empty dir) reaches A.
    write(&s.b_dir.join("from-b/new.txt"), "new on b");
    std::fs::create_dir_all(s.b_dir.join("b-empty")).unwrap();
    wait_until("B's create on A", || {
        read(&s.a_dir.join("from-b/new.txt")).as_deref() == Some("new on b")
            && s.a_dir.join("b-empty").is_dir()
    });

    // Rename on A is a move on the server (same node) and a rename on B.
    wait_same(&s.a_dir, &s.b_dir);
    let before = node_id(&s, "docs/2026/report.md").expect("report on server");
    let b_inode_before = std::fs::metadata(s.b_dir.join("docs/2026/report.md"))
        .unwrap()
        .ino();
    std::fs::rename(
        s.a_dir.join("docs/2026/report.md"),
        s.a_dir.join("docs/report-final.md"),
    )
    .unwrap();
    wait_until("rename on B", || {
        read(&s.b_dir.join("docs/report-final.md")).as_deref() == Some("# report")
            && !s.b_dir.join("docs/2026/report.md").exists()
    });
    assert_eq!(
        node_id(&s, "docs/report-final.md"),
        Some(before),
        "a rename keeps the node: it is a move, not delete + upload"
    );
    let b_inode_after = std::fs::metadata(s.b_dir.join("docs/report-final.md"))
        .unwrap()
        .ino();
    assert_eq!(
        b_inode_before, b_inode_after,
        "B renamed its file instead of downloading it again"
    );

    // Directory rename on B.
    std::fs::rename(s.b_dir.join("docs"), s.b_dir.join("documents")).unwrap();
    wait_until("dir rename on A", || {
        read(&s.a_dir.join("documents/report-final.md")).as_deref() == Some("# report")
            && !s.a_dir.join("docs").exists()
    });

    // Delete on A reaches B, directories too.
    std::fs::remove_file(s.a_dir.join("hello.txt")).unwrap();
    std::fs::remove_dir_all(s.a_dir.join("empty")).unwrap();
    wait_until("delete on B", || {
        !s.b_dir.join("hello.txt").exists() && !s.b_dir.join("empty").exists()
    });
    wait_same(&s.a_dir, &s.b_dir);
}

#[test]
fn concurrent_edit_keeps_both_versions_as_conflicted_copy() {
    let s = setup();
    let url = s.server.url();
    let once = |dir: &std::path::Path, token: &str| {
        ok(sync_once(dir, &url, Some(token)));
    };
    write(&s.a_dir.join("notes/plan.txt"), "original");
    once(&s.a_dir, &s.token_a);
    once(&s.b_dir, &s.token_b);
    assert_eq!(
        read(&s.b_dir.join("notes/plan.txt")).as_deref(),
        Some("original")
    );

    // Both edit the same file while neither is syncing.
    write(&s.a_dir.join("notes/plan.txt"), "version from laptop");
    write(&s.b_dir.join("notes/plan.txt"), "version from desktop");
    once(&s.a_dir, &s.token_a);
    once(&s.b_dir, &s.token_b);
    once(&s.a_dir, &s.token_a);

    for dir in [&s.a_dir, &s.b_dir] {
        let snap = snapshot(&dir.join("notes"));
        assert_eq!(
            snap.get("plan.txt").cloned().flatten().as_deref(),
            Some(&b"version from laptop"[..]),
            "server's version keeps the name"
        );
        let copies: Vec<_> = snap
            .iter()
            .filter(|(name, _)| {
                name.starts_with("plan (conflicted copy from desktop ") && name.ends_with(").txt")
            })
            .collect();
        assert_eq!(
            copies.len(),
            1,
            "one conflicted copy in {}: {:?}",
            dir.display(),
            snap.keys().collect::<Vec<_>>()
        );
        assert_eq!(copies[0].1.as_deref(), Some(&b"version from desktop"[..]));
    }
}

#[test]
fn offline_edits_sync_after_restart() {
    let s = setup();
    let mut a = start_client("client-a", &s.logs, &s.a_dir, &s.server.url(), &s.token_a);
    let _b = start_client("client-b", &s.logs, &s.b_dir, &s.server.url(), &s.token_b);
    write(&s.a_dir.join("keep.txt"), "v1");
    write(&s.a_dir.join("gone.txt"), "to be deleted");
    wait_until("first sync", || {
        read(&s.b_dir.join("gone.txt")).is_some() && read(&s.b_dir.join("keep.txt")).is_some()
    });

    assert!(a.terminate().success(), "daemon exits 0 on SIGTERM");
    write(&s.a_dir.join("keep.txt"), "v2 edited offline");
    std::fs::remove_file(s.a_dir.join("gone.txt")).unwrap();
    write(&s.a_dir.join("offline/new.txt"), "created offline");

    let _a = restart_client("client-a2", &s.logs, &s.a_dir);
    wait_until("offline edits on B", || {
        read(&s.b_dir.join("keep.txt")).as_deref() == Some("v2 edited offline")
            && !s.b_dir.join("gone.txt").exists()
            && read(&s.b_dir.join("offline/new.txt")).as_deref() == Some("created offline")
    });
    wait_same(&s.a_dir, &s.b_dir);
}

#[test]
fn server_killed_mid_sync_loses_nothing() {
    let mut s = setup();
    let _a = start_client("client-a", &s.logs, &s.a_dir, &s.server.url(), &s.token_a);
    let _b = start_client("client-b", &s.logs, &s.b_dir, &s.server.url(), &s.token_b);
    // Enough work that the kill lands mid-sync: many small files and a few large ones.
    for i in 0..300 {
        write(
            &s.a_dir.join(format!("many/f{i:03}.txt")),
            &format!("file {i}\n").repeat(50),
        );
    }
    let big: Vec<u8> = (0..24 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(s.a_dir.join("big.bin"), &big).unwrap();
    // Kill as soon as the first of it has reached the server (the directory is created first).
    wait_until("upload under way", || node_id(&s, "many").is_some());
    s.server.kill9_and_restart();
    wait_same(&s.a_dir, &s.b_dir);
    assert_eq!(std::fs::read(s.b_dir.join("big.bin")).unwrap(), big);
    assert_eq!(snapshot(&s.b_dir).len(), 300 + 2);
}

#[test]
fn symlinks_are_skipped_and_never_written_through() {
    let s = setup();
    let outside = s._tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    // B plants a symlink where A will create a directory.
    std::os::unix::fs::symlink(&outside, s.b_dir.join("docs")).unwrap();
    write(
        &s.a_dir.join("docs/secret.txt"),
        "must not leave the folder",
    );
    write(&s.a_dir.join("plain.txt"), "fine");
    let url = s.server.url();
    let once = |dir: &std::path::Path, token: &str| sync_once(dir, &url, Some(token));
    assert!(once(&s.a_dir, &s.token_a).status.success());
    let out = once(&s.b_dir, &s.token_b);
    assert_eq!(read(&s.b_dir.join("plain.txt")).as_deref(), Some("fine"));
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written through the symlink"
    );
    // Issue 13: a skipped path is reported, with a warning, but does not make B out of sync
    // for ever.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("docs") && stderr.contains("symlink"),
        "{stderr}"
    );
    let status = run(&["status", "-v", s.b_dir.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("skipped") && l.contains("docs") && l.contains("symlink")),
        "{text}"
    );
    assert!(
        String::from_utf8_lossy(&status.stderr).contains("warning"),
        "skipped paths warn"
    );
    // The symlink itself is never uploaded.
    let tree = s.server.tree(&s.token_a);
    let paths: Vec<&str> = tree.iter().map(|e| e.path.as_str()).collect();
    assert!(
        paths.contains(&"docs/secret.txt") && paths.contains(&"plain.txt"),
        "{paths:?}"
    );
}

#[test]
fn syncignore_and_default_ignores_are_never_synced() {
    let s = setup();
    write(&s.a_dir.join(".syncignore"), "build/\n*.log\n");
    write(&s.a_dir.join("build/out.o"), "binary");
    write(&s.a_dir.join("debug.log"), "noise");
    write(&s.a_dir.join(".notes.txt.swp"), "swap");
    write(&s.a_dir.join("~$report.docx"), "lock");
    write(&s.a_dir.join("kept.txt"), "kept");
    let url = s.server.url();
    for (dir, token) in [(&s.a_dir, &s.token_a), (&s.b_dir, &s.token_b)] {
        ok(sync_once(dir, &url, Some(token)));
    }
    let b: Vec<String> = snapshot(&s.b_dir).into_keys().collect();
    assert_eq!(
        b,
        [".syncignore", "kept.txt"],
        "only non-ignored files reach B"
    );
    // Ignored files stay untouched on A.
    assert_eq!(read(&s.a_dir.join("debug.log")).as_deref(), Some("noise"));
    assert_eq!(
        read(&s.a_dir.join("build/out.o")).as_deref(),
        Some("binary")
    );
}
