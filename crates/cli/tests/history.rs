//! Version history, the trash and restores end to end (issue 14): a server and two devices of
//! one user, the real binary, and the CLI commands a user types.

use crate::util::*;
use std::path::{Path, PathBuf};

struct Two {
    tmp: tempfile::TempDir,
    server: Server,
    a_dir: PathBuf,
    b_dir: PathBuf,
    token_a: String,
    a_proc: Proc,
    _b: Proc,
}

fn two_devices() -> Two {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &tmp.path().join("data"));
    let token_a = server.token("hana", "laptop");
    let token_b = server.token("hana", "desktop");
    let a_dir = tmp.path().join("a");
    let b_dir = tmp.path().join("b");
    let a = start_client("client-a", tmp.path(), &a_dir, &server.url(), &token_a);
    let b = start_client("client-b", tmp.path(), &b_dir, &server.url(), &token_b);
    Two {
        tmp,
        server,
        a_dir,
        b_dir,
        token_a,
        a_proc: a,
        _b: b,
    }
}

/// Runs the CLI inside `dir` (so it finds the folder's server and token).
fn cli_in(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin())
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run syncstore")
}

fn json_in(dir: &Path, args: &[&str]) -> serde_json::Value {
    let out = ok(cli_in(dir, args));
    serde_json::from_str(&out).unwrap_or_else(|err| panic!("{err}: {out}"))
}

fn server_hash(t: &Two, path: &str) -> Option<String> {
    t.server
        .entry(&t.token_a, path)
        .and_then(|entry| entry.hash)
}

fn hash_of(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Saves `text` at `path` on A as an editor does (a whole file renamed into place, so no
/// half-written state can be seen and uploaded as a version), then waits for the server.
fn write_and_wait(t: &Two, path: &str, text: &str) {
    let staged = t.tmp.path().join("staged");
    std::fs::write(&staged, text).unwrap();
    std::fs::rename(&staged, t.a_dir.join(path)).unwrap();
    let want = hash_of(text.as_bytes());
    wait_until(&format!("{path} = {text:?} on the server"), || {
        server_hash(t, path).as_deref() == Some(want.as_str())
    });
}

#[test]
fn history_lists_every_version_and_restore_rev_brings_the_first_back_everywhere() {
    let t = two_devices();
    for text in ["first draft", "second draft", "third draft"] {
        write_and_wait(&t, "notes.txt", text);
    }
    let history = json_in(&t.a_dir, &["history", "notes.txt", "--json"]);
    let versions = history["versions"].as_array().unwrap();
    let hashes: Vec<&str> = versions
        .iter()
        .map(|v| v["hash"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = ["first draft", "second draft", "third draft"]
        .iter()
        .map(|text| hash_of(text.as_bytes()))
        .collect();
    assert_eq!(hashes, expected, "{history}");
    assert!(versions
        .iter()
        .all(|v| v["device"] == "laptop" && v["at_ms"].as_i64() > Some(0)));
    assert_eq!(versions.last().unwrap()["current"], true);
    // The human form names every revision too.
    let table = ok(cli_in(&t.a_dir, &["history", "notes.txt"]));
    for version in versions {
        assert!(table.contains(&version["rev"].to_string()), "{table}");
    }

    let first = versions[0]["rev"].to_string();
    let out = ok(cli_in(&t.a_dir, &["restore", "notes.txt", "--rev", &first]));
    assert!(out.contains("reverted notes.txt"), "{out}");
    for dir in [&t.a_dir, &t.b_dir] {
        wait_until(
            &format!("the first draft back in {}", dir.display()),
            || read(&dir.join("notes.txt")).as_deref() == Some("first draft"),
        );
    }
    // The version it replaced stays in history, and the restore is a version of its own.
    let after = json_in(&t.b_dir, &["history", "notes.txt", "--json"]);
    let after = after["versions"].as_array().unwrap();
    assert_eq!(after.len(), 4);
    assert_eq!(after[2]["hash"].as_str().unwrap(), expected[2]);

    // Beside it, with --to: the current file is not touched.
    ok(cli_in(
        &t.a_dir,
        &[
            "restore",
            "notes.txt",
            "--rev",
            &versions[1]["rev"].to_string(),
            "--to",
            "notes (second).txt",
        ],
    ));
    wait_until("the second draft beside it on B", || {
        read(&t.b_dir.join("notes (second).txt")).as_deref() == Some("second draft")
    });
    assert_eq!(
        read(&t.b_dir.join("notes.txt")).as_deref(),
        Some("first draft")
    );
    // A revision that is no version of the path is refused with a message and exit 2.
    let out = cli_in(&t.a_dir, &["restore", "notes.txt", "--rev", "999999"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not kept"),
        "{out:?}"
    );
}

#[test]
fn a_mass_delete_comes_back_with_one_restore_deleted_since() {
    let t = two_devices();
    // 500 files, so deleting 200 stays under the client's mass-delete threshold.
    for i in 0..500 {
        write(
            &t.a_dir.join(format!("photos/{:03}.txt", i)),
            &format!("photo {i}"),
        );
    }
    wait_until_for(
        "500 files on B",
        std::time::Duration::from_secs(120),
        &mut || files(&t.b_dir).len() == 500,
    );
    let before = files(&t.a_dir);
    for i in 0..200 {
        std::fs::remove_file(t.a_dir.join(format!("photos/{:03}.txt", i))).unwrap();
    }
    wait_until_for(
        "the deletes on B",
        std::time::Duration::from_secs(120),
        &mut || files(&t.b_dir).len() == 300,
    );
    let trash = json_in(&t.b_dir, &["trash", "--since", "10m", "--json"]);
    let entries = trash["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 200, "{trash}");
    assert!(entries.iter().all(|e| e["deleted_by"] == "laptop"));
    let listed = ok(cli_in(&t.b_dir, &["trash", "photos"]));
    assert!(listed.contains("200 deleted file(s)"), "{listed}");

    // A dry run says what it would do and changes nothing.
    let dry = ok(cli_in(
        &t.b_dir,
        &[
            "restore",
            "--deleted",
            "--since",
            "10m",
            "--by",
            "laptop",
            "--dry-run",
        ],
    ));
    assert!(
        dry.contains("dry run: 0 would revert, 200 would restore"),
        "{dry}"
    );
    assert_eq!(files(&t.b_dir).len(), 300);

    let out = ok(cli_in(
        &t.b_dir,
        &["restore", "--deleted", "--since", "10m"],
    ));
    assert!(out.contains("200 restored"), "{out}");
    for dir in [&t.a_dir, &t.b_dir] {
        wait_until_for(
            &format!("all 500 back in {}", dir.display()),
            std::time::Duration::from_secs(120),
            &mut || files(dir) == before,
        );
    }
    assert!(json_in(&t.a_dir, &["trash", "--json"])["entries"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn a_folder_restored_at_a_moment_before_ransomware_matches_the_original_everywhere() {
    let t = two_devices();
    for i in 0..40 {
        write(
            &t.a_dir.join(format!("docs/{i:02}.txt")),
            &format!("the original text of document {i}"),
        );
    }
    write(&t.a_dir.join("keep/untouched.txt"), "never encrypted");
    wait_until("41 files on B", || files(&t.b_dir).len() == 41);
    let original = files(&t.a_dir);
    // The moment before the attack, as the user would type it (RFC 3339, UTC).
    std::thread::sleep(std::time::Duration::from_millis(20));
    let moment = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    std::thread::sleep(std::time::Duration::from_millis(20));

    // The "encryption": every document rewritten, plus a ransom note.
    for i in 0..40 {
        let path = t.a_dir.join(format!("docs/{i:02}.txt"));
        let bytes: Vec<u8> = std::fs::read(&path)
            .unwrap()
            .iter()
            .map(|b| b ^ 0x5a)
            .collect();
        std::fs::write(&path, bytes).unwrap();
    }
    write(&t.a_dir.join("docs/README-RANSOM.txt"), "pay up");
    wait_until("the encrypted files on B", || {
        read(&t.b_dir.join("docs/README-RANSOM.txt")).is_some()
            && files(&t.b_dir)
                .iter()
                .filter(|(path, bytes)| {
                    path.starts_with("docs/") && bytes.first() == Some(&(b't' ^ 0x5a))
                })
                .count()
                == 40
    });

    let dry = ok(cli_in(
        &t.a_dir,
        &[
            "restore",
            t.a_dir.to_str().unwrap(),
            "--at",
            &moment,
            "--dry-run",
        ],
    ));
    assert!(
        dry.contains("40 would revert, 0 would restore, 1 would move to trash"),
        "{dry}"
    );
    let out = ok(cli_in(
        &t.a_dir,
        &["restore", t.a_dir.to_str().unwrap(), "--at", &moment],
    ));
    assert!(out.contains("40 reverted"), "{out}");
    for dir in [&t.a_dir, &t.b_dir] {
        wait_until(&format!("the originals back in {}", dir.display()), || {
            files(dir) == original
        });
    }
    // The encrypted versions are still in history, and the note is in the trash.
    let history = json_in(&t.b_dir, &["history", "docs/07.txt", "--json"]);
    // Rewritten in place, a file may also show a half-written version; what must be there is
    // the encrypted one, and the original as the current version.
    let versions = history["versions"].as_array().unwrap();
    let plain = original
        .iter()
        .find(|(path, _)| path == "docs/07.txt")
        .map(|(_, bytes)| bytes.clone())
        .unwrap();
    let encrypted: Vec<u8> = plain.iter().map(|b| b ^ 0x5a).collect();
    let has = |bytes: &[u8]| versions.iter().any(|v| v["hash"] == hash_of(bytes));
    assert!(
        has(&encrypted),
        "the encrypted version is in history: {history}"
    );
    let current = versions.iter().find(|v| v["current"] == true).unwrap();
    assert_eq!(current["hash"], hash_of(&plain), "{history}");
    let trash = json_in(&t.b_dir, &["trash", "--json"]);
    assert_eq!(trash["entries"][0]["path"], "docs/README-RANSOM.txt");
    let _ = &t.tmp;
}

/// Bytes of every file under `dir`.
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

#[test]
fn gc_frees_the_content_of_deleted_files_once_retention_lets_it_go() {
    let t = two_devices();
    let big: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(t.a_dir.join("big.bin"), &big).unwrap();
    write(&t.a_dir.join("keep.txt"), "kept");
    wait_until("both files on B", || files(&t.b_dir).len() == 2);
    std::fs::remove_file(t.a_dir.join("big.bin")).unwrap();
    wait_until("big.bin in the trash", || {
        json_in(&t.a_dir, &["trash", "--json"])["entries"]
            .as_array()
            .unwrap()
            .len()
            == 1
    });
    let data = t.tmp.path().join("data");
    let gc = |extra: &[&str]| {
        let data = data.to_str().unwrap();
        let mut args = vec!["gc", "--data", data, "--json"];
        args.extend_from_slice(extra);
        let out = ok(run(&args));
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    // With the default retention nothing of it may go; a dry run with none frees nothing.
    let before = du(&data.join("chunks"));
    assert_eq!(
        gc(&["--keep-history", "30d", "--gc-grace", "0"])["bytes_freed"],
        0
    );
    let dry = gc(&["--keep-history", "0", "--gc-grace", "0", "--dry-run"]);
    assert!(
        dry["bytes_freed"].as_u64().unwrap() >= big.len() as u64,
        "{dry}"
    );
    assert_eq!(du(&data.join("chunks")), before);
    // Keeping only current versions, beside the running server: its chunks go.
    let report = gc(&["--keep-history", "0", "--gc-grace", "0"]);
    let freed = report["bytes_freed"].as_u64().unwrap();
    assert!(freed >= big.len() as u64, "{report}");
    assert_eq!(
        before - du(&data.join("chunks")),
        freed,
        "measured on the chunk store"
    );
    assert!(json_in(&t.a_dir, &["trash", "--json"])["entries"]
        .as_array()
        .unwrap()
        .is_empty());
    // What is current still downloads and hashes right, on a device that starts from nothing.
    let token_c = t.server.token("hana", "phone");
    let c_dir = t.tmp.path().join("c");
    std::fs::create_dir(&c_dir).unwrap();
    ok(sync_once(&c_dir, &t.server.url(), Some(&token_c)));
    assert_eq!(read(&c_dir.join("keep.txt")).as_deref(), Some("kept"));
    // The devices that saw the compacted history carry on: a new change still reaches B.
    write(&t.a_dir.join("after.txt"), "after the collection");
    wait_until("a change after the collection on B", || {
        read(&t.b_dir.join("after.txt")).as_deref() == Some("after the collection")
    });
    let usage = json_in(&t.b_dir, &["usage", "--json"]);
    assert_eq!(usage["current_files"], 2, "{usage}");
    assert_eq!(usage["trash_files"], 0, "{usage}");
}

#[test]
fn a_quota_refuses_what_does_not_fit_and_the_file_goes_up_once_it_is_lifted() {
    let t = two_devices();
    let data = t.tmp.path().join("data");
    let data = data.to_str().unwrap();
    let out = ok(run(&[
        "user", "set", "hana", "--quota", "4K", "--data", data,
    ]));
    assert!(out.contains("quota of hana: 4.0 KiB"), "{out}");
    write(&t.a_dir.join("small.txt"), "fits");
    wait_until("small.txt on B", || {
        read(&t.b_dir.join("small.txt")).as_deref() == Some("fits")
    });
    std::fs::write(t.a_dir.join("big.bin"), vec![7u8; 64 * 1024]).unwrap();
    wait_until("the quota refusal in A's log", || {
        t.a_proc.log_text().contains("over the account's quota")
    });
    write(&t.a_dir.join("after.txt"), "still syncs");
    wait_until("after.txt on B", || {
        read(&t.b_dir.join("after.txt")).as_deref() == Some("still syncs")
    });
    assert!(t.server.entry(&t.token_a, "big.bin").is_none());
    let usage = json_in(&t.a_dir, &["usage", "--json"]);
    assert_eq!(usage["quota_bytes"], 4096, "{usage}");
    assert!(usage["current_bytes"].as_u64().unwrap() <= 4096, "{usage}");
    ok(run(&[
        "user", "set", "hana", "--quota", "none", "--data", data,
    ]));
    wait_until_for(
        "big.bin on B once the quota is lifted",
        std::time::Duration::from_secs(90),
        &mut || std::fs::read(t.b_dir.join("big.bin")).is_ok_and(|bytes| bytes.len() == 64 * 1024),
    );
}
