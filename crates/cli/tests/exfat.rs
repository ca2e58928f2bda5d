//! A folder on an exFAT disk (a USB stick, an SD card), mounted through FUSE as Debian's
//! exfat-fuse does: its timestamps are whole seconds, its ctime is its mtime, and it has no
//! modes or symlinks. The image is a file in the test's temp dir, on a loop device.

use crate::util::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// An exFAT filesystem mounted at a directory; unmounted and its loop device freed on drop.
struct ExfatDisk {
    dir: PathBuf,
    loop_device: String,
}

impl ExfatDisk {
    /// Makes an exFAT image of `mib` MiB at `image` and mounts it at `dir`. `None` (after saying
    /// SKIPPED) when not running as root or without the tools; CI runs as root and installs them
    /// (scripts/fs-tools), so there it must work.
    fn mount(test: &str, image: &Path, dir: &Path, mib: u64) -> Option<ExfatDisk> {
        let ci = std::env::var_os("CI").is_some();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(!ci, "CI runs as root and must run {test}");
            eprintln!("SKIPPED {test}: needs root to mount an exFAT image");
            return None;
        }
        let have = |tool: &str| {
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|out| out.status.success())
        };
        if !(have("mkfs.exfat") && have("mount.exfat-fuse")) {
            assert!(
                !ci,
                "{test} needs mkfs.exfat and mount.exfat-fuse (scripts/fs-tools)"
            );
            eprintln!("SKIPPED {test}: no mkfs.exfat or mount.exfat-fuse (run scripts/fs-tools)");
            return None;
        }
        std::fs::File::create(image)
            .and_then(|file| file.set_len(mib << 20))
            .expect("create the exFAT image");
        let run = |cmd: &mut Command| {
            let out = cmd.output().expect("run a filesystem tool");
            assert!(out.status.success(), "{cmd:?}: {out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        run(Command::new("mkfs.exfat").arg(image));
        let loop_device = run(Command::new("losetup").args(["-f", "--show"]).arg(image))
            .trim()
            .to_owned();
        std::fs::create_dir_all(dir).unwrap();
        let disk = ExfatDisk {
            dir: dir.to_path_buf(),
            loop_device,
        };
        run(Command::new("mount.exfat-fuse")
            .arg(&disk.loop_device)
            .arg(dir));
        Some(disk)
    }
}

impl Drop for ExfatDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = Command::new("losetup")
            .args(["-d", &self.loop_device])
            .status();
    }
}

/// The time now in nanoseconds since the Unix epoch.
fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

/// A server, device A's folder on the test's own disk and device B's on an exFAT image (no
/// daemons: each test starts its own). Fields drop in order: the mount goes before the temp dir.
struct OnAStick {
    server: Server,
    token_a: String,
    token_b: String,
    a_dir: PathBuf,
    b_dir: PathBuf,
    _disk: ExfatDisk,
    tmp: tempfile::TempDir,
}

impl OnAStick {
    /// `None` when exFAT cannot be mounted here ([`ExfatDisk::mount`] says why).
    fn new(test: &str) -> Option<OnAStick> {
        let tmp = tempfile::tempdir().unwrap();
        let b_dir = tmp.path().join("b");
        let disk = ExfatDisk::mount(test, &tmp.path().join("b.img"), &b_dir, 64)?;
        let server = Server::start(tmp.path(), &tmp.path().join("data"));
        Some(OnAStick {
            token_a: server.token("alice", "laptop"),
            token_b: server.token("alice", "usb-stick"),
            server,
            a_dir: tmp.path().join("a"),
            b_dir,
            _disk: disk,
            tmp,
        })
    }

    /// Where the processes' logs go.
    fn logs(&self) -> PathBuf {
        self.tmp.path().to_path_buf()
    }
}

/// The mtime of `path` in nanoseconds.
fn mtime_ns(path: &Path) -> i128 {
    let modified = std::fs::metadata(path).unwrap().modified().unwrap();
    modified
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

#[test]
fn a_rewrite_of_the_same_size_in_the_second_just_synced_is_synced_too() {
    const TEST: &str = "a_rewrite_of_the_same_size_in_the_second_just_synced_is_synced_too";
    let Some(stick) = OnAStick::new(TEST) else {
        return;
    };
    let OnAStick {
        server,
        token_a,
        token_b,
        a_dir,
        b_dir,
        ..
    } = &stick;
    let logs = stick.logs();
    let _a = start_client("client-a", &logs, a_dir, &server.url(), token_a);
    let _b = start_client("client-b", &logs, b_dir, &server.url(), token_b);
    // B syncs a file, and the same program writes it again, as long as before, within the same
    // second: every part of its stamp (size, mtime, ctime, inode) stays as B last saw it. An
    // attempt whose two writes fell into two seconds tests nothing, so it is tried again.
    let (on_b, on_a) = (b_dir.join("status.txt"), a_dir.join("status.txt"));
    for attempt in 0..10 {
        let first = format!("attempt {attempt}: first ");
        let second = format!("attempt {attempt}: second");
        assert_eq!(first.len(), second.len());
        write(&on_b, &first);
        let synced_at = mtime_ns(&on_b);
        wait_until("the first write on A", || {
            read(&on_a).as_deref() == Some(first.as_str())
        });
        write(&on_b, &second);
        if mtime_ns(&on_b) != synced_at {
            eprintln!("attempt {attempt}: the second write fell into the next second; again");
            continue;
        }
        assert_eq!(
            std::fs::metadata(&on_b).unwrap().len() as usize,
            second.len()
        );
        wait_until("the second write on A", || {
            read(&on_a).as_deref() == Some(second.as_str())
        });
        // And it stays there: B does not take A's copy of the first write back.
        wait_same(a_dir, b_dir);
        assert_eq!(read(&on_b).as_deref(), Some(second.as_str()));
        return;
    }
    panic!("no attempt wrote twice within one second");
}

#[test]
fn a_rewrite_of_the_same_size_while_the_daemon_was_stopped_is_synced_at_its_restart() {
    const TEST: &str =
        "a_rewrite_of_the_same_size_while_the_daemon_was_stopped_is_synced_at_its_restart";
    let Some(stick) = OnAStick::new(TEST) else {
        return;
    };
    let OnAStick {
        server,
        token_a,
        token_b,
        a_dir,
        b_dir,
        ..
    } = &stick;
    let logs = stick.logs();
    let _a = start_client("client-a", &logs, a_dir, &server.url(), token_a);
    let mut b = Some(start_client(
        "client-b",
        &logs,
        b_dir,
        &server.url(),
        token_b,
    ));
    // As above, but B is killed right after syncing the first write: the second write happens
    // while no daemon watches, and only what B's state recorded of the first can tell.
    let (on_b, on_a) = (b_dir.join("status.txt"), a_dir.join("status.txt"));
    for attempt in 0..10 {
        let first = format!("attempt {attempt}: first ");
        let second = format!("attempt {attempt}: second");
        let mut running = b
            .take()
            .unwrap_or_else(|| restart_client(&format!("client-b-{attempt}"), &logs, b_dir));
        write(&on_b, &first);
        let synced_at = mtime_ns(&on_b);
        wait_until("the first write on A", || {
            read(&on_a).as_deref() == Some(first.as_str())
        });
        running.kill9();
        write(&on_b, &second);
        if mtime_ns(&on_b) != synced_at {
            eprintln!("attempt {attempt}: the second write fell into the next second; again");
            continue;
        }
        // Restarted once the stamp is old enough to be trusted by the clock alone (FAT's 2 s
        // and a margin): only base's record of the first write can tell now.
        wait_until("the stamp to be 3 s old", || {
            now_ns() >= synced_at + 3_000_000_000
        });
        let _b = restart_client(&format!("client-b-restarted-{attempt}"), &logs, b_dir);
        wait_until("the second write on A", || {
            read(&on_a).as_deref() == Some(second.as_str())
        });
        wait_same(a_dir, b_dir);
        assert_eq!(read(&on_b).as_deref(), Some(second.as_str()));
        return;
    }
    panic!("no attempt wrote twice within one second");
}

/// The file names in `dir` (not `.syncstore`), sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != ".syncstore")
        .collect();
    names.sort();
    names
}

#[test]
fn names_differing_only_in_case_are_neither_merged_nor_deleted_on_an_exfat_folder() {
    const TEST: &str =
        "names_differing_only_in_case_are_neither_merged_nor_deleted_on_an_exfat_folder";
    let Some(stick) = OnAStick::new(TEST) else {
        return;
    };
    let OnAStick {
        server,
        token_a,
        token_b,
        a_dir,
        b_dir,
        ..
    } = &stick;
    let logs = stick.logs();
    // A (ext4) holds two files whose names differ only in case, and a directory pair too.
    write(&a_dir.join("Report.txt"), "the upper one");
    write(&a_dir.join("report.txt"), "the lower one");
    write(&a_dir.join("Docs/plan.txt"), "in Docs");
    write(&a_dir.join("docs/notes.txt"), "in docs");
    write(&a_dir.join("other.txt"), "nothing special");
    let _a = start_client("client-a", &logs, a_dir, &server.url(), token_a);
    wait_until("A's files on the server", || {
        server.tree(token_a).len() == 7
    });
    let a_before = files(a_dir);

    // B, on exFAT, holds one of each pair (the first in byte order) and says why not the other.
    let mut b = start_client("client-b", &logs, b_dir, &server.url(), token_b);
    wait_until("other.txt on B", || {
        read(&b_dir.join("other.txt")).is_some()
    });
    wait_until("B says why it holds only one of each", || {
        let log = b.log_text();
        log.contains("report.txt") && log.contains("docs") && log.contains("differs only in case")
    });
    wait_until("B's pass done", || b.log_text().contains("in_sync=true"));
    assert_eq!(names(b_dir), ["Docs", "Report.txt", "other.txt"]);
    assert_eq!(
        read(&b_dir.join("Report.txt")).as_deref(),
        Some("the upper one")
    );
    assert_eq!(names(&b_dir.join("Docs")), ["plan.txt"]);
    let status = run(&["status", "-v", b_dir.to_str().unwrap()]);
    let status_text = String::from_utf8_lossy(&status.stdout).into_owned()
        + &String::from_utf8_lossy(&status.stderr);
    assert!(
        status_text.contains("differs only in case from Report.txt"),
        "status names the file it cannot hold: {status_text}"
    );

    // Restarted, B still deletes nothing anywhere, and makes no conflicted copies.
    b.terminate();
    let mut b = restart_client("client-b-again", &logs, b_dir);
    // The daemon reports what it did not sync at the end of each pass.
    wait_until("B's pass after the restart", || {
        b.log_text().contains("not synced: report.txt")
    });
    assert_eq!(files(a_dir), a_before, "A's files are all there, unchanged");
    assert_eq!(
        server.tree(token_a).len(),
        7,
        "nothing deleted or added on the server"
    );

    // An edit of the hidden file stays on the devices that can hold it.
    write(&a_dir.join("report.txt"), "the lower one, edited");
    wait_until("the edit on the server", || {
        server.entry(token_a, "report.txt").and_then(|e| e.hash)
            == Some(blake3::hash(b"the lower one, edited").to_hex().to_string())
    });
    // Once the name B holds goes, B takes the other.
    std::fs::remove_file(a_dir.join("Report.txt")).unwrap();
    wait_until("report.txt on B, in place of Report.txt", || {
        names(b_dir) == ["Docs", "other.txt", "report.txt"]
            && read(&b_dir.join("report.txt")).as_deref() == Some("the lower one, edited")
    });
    b.terminate();
}

#[test]
fn a_folder_on_exfat_which_shows_every_file_as_0777_makes_nothing_executable() {
    use std::os::unix::fs::PermissionsExt;
    const TEST: &str = "a_folder_on_exfat_which_shows_every_file_as_0777_makes_nothing_executable";
    let Some(stick) = OnAStick::new(TEST) else {
        return;
    };
    let OnAStick {
        server,
        token_a,
        token_b,
        a_dir,
        b_dir,
        ..
    } = &stick;
    let logs = stick.logs();
    write(&a_dir.join("plain.txt"), "not a program");
    write(&a_dir.join("run.sh"), "#!/bin/sh\necho hi\n");
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    std::fs::set_permissions(a_dir.join("plain.txt"), PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::set_permissions(a_dir.join("run.sh"), PermissionsExt::from_mode(0o755)).unwrap();
    let _a = start_client("client-a", &logs, a_dir, &server.url(), token_a);
    wait_until("A's files on the server", || {
        server.tree(token_a).len() == 2
    });
    let _b = start_client("client-b", &logs, b_dir, &server.url(), token_b);
    wait_until("both files on B", || {
        read(&b_dir.join("plain.txt")).is_some() && read(&b_dir.join("run.sh")).is_some()
    });
    assert_eq!(
        mode(&b_dir.join("plain.txt")),
        0o777,
        "exFAT shows every file as 0777"
    );
    // A file B writes after that reaches A after whatever B's first pass sent.
    write(&b_dir.join("from-b.txt"), "written on the stick");
    wait_until("from-b.txt on A", || {
        read(&a_dir.join("from-b.txt")).is_some()
    });
    assert_eq!(
        mode(&a_dir.join("plain.txt")),
        0o644,
        "plain.txt stays not executable"
    );
    assert_eq!(
        mode(&a_dir.join("run.sh")),
        0o755,
        "run.sh stays executable"
    );
    assert_eq!(
        mode(&a_dir.join("from-b.txt")) & 0o111,
        0,
        "a file from the stick is no program"
    );
    // Nor can the stick hold a Unix socket: `status` still reaches the daemon, through the one
    // in the user's runtime directory.
    let status = run(&["status", b_dir.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(stdout.contains("daemon: running"), "status: {stdout}");
}

#[test]
fn a_rename_that_changes_only_the_case_reaches_an_exfat_folder_and_deletes_nothing() {
    const TEST: &str =
        "a_rename_that_changes_only_the_case_reaches_an_exfat_folder_and_deletes_nothing";
    let Some(stick) = OnAStick::new(TEST) else {
        return;
    };
    let OnAStick {
        server,
        token_a,
        token_b,
        a_dir,
        b_dir,
        ..
    } = &stick;
    let logs = stick.logs();
    write(&a_dir.join("notes.md"), "my notes");
    write(&a_dir.join("Docs/plan.txt"), "the plan");
    let _a = start_client("client-a", &logs, a_dir, &server.url(), token_a);
    let _b = start_client("client-b", &logs, b_dir, &server.url(), token_b);
    wait_until("both on B", || {
        read(&b_dir.join("notes.md")).is_some() && read(&b_dir.join("Docs/plan.txt")).is_some()
    });
    // A renames a file and a directory, changing only the case of their names.
    std::fs::rename(a_dir.join("notes.md"), a_dir.join("Notes.md")).unwrap();
    std::fs::rename(a_dir.join("Docs"), a_dir.join("docs")).unwrap();
    wait_until("the new names on B", || {
        names(b_dir) == ["Notes.md", "docs"] && names(&b_dir.join("docs")) == ["plan.txt"]
    });
    assert_eq!(read(&b_dir.join("Notes.md")).as_deref(), Some("my notes"));
    // Whatever B does next, A keeps both.
    write(&b_dir.join("later.txt"), "written on the stick");
    wait_until("later.txt on A", || {
        read(&a_dir.join("later.txt")).is_some()
    });
    wait_same(a_dir, b_dir);
    assert_eq!(read(&a_dir.join("Notes.md")).as_deref(), Some("my notes"));
    assert_eq!(
        read(&a_dir.join("docs/plan.txt")).as_deref(),
        Some("the plan")
    );
}
