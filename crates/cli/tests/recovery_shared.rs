//! Nothing lost when the server fails (issue 10), over PostgreSQL + S3: the metadata database
//! restored from a `pg_dump` older than the clients' last sync (while another client pushes
//! changes before the first reconnects), and a lost database with the account re-created beside
//! a bucket that still holds the old chunks. The embedded versions are in `recovery.rs`.
//!
//! The services come from `scripts/services`, as in `scale_out.rs`: unset, these tests skip
//! loudly, except under `CI=true`, where they fail. Each test gets its own database and bucket;
//! the PostgreSQL tools (`pg_dump`, `pg_restore`, `psql`) are those of the PostgreSQL the script
//! runs.

use crate::util::*;
use std::path::PathBuf;
use std::process::Command;

/// The PostgreSQL program `name`, from the newest `/usr/lib/postgresql/*/bin` (where the
/// services script finds `initdb`), else from `PATH`: the tools must match the server's major
/// version.
fn pg_tool(name: &str) -> PathBuf {
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let tool = entry.path().join("bin").join(name);
            tool.is_file().then_some((major, tool))
        })
        .max();
    newest.map_or_else(|| PathBuf::from(name), |(_, tool)| tool)
}

/// Runs a PostgreSQL program and asserts that it succeeded.
fn run_pg_tool(name: &str, args: &[&str]) {
    let out = Command::new(pg_tool(name))
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("could not run {name}: {err}"));
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The database name of a PostgreSQL URL.
fn database_name(db: &str) -> &str {
    let base = db.split_once('?').map_or(db, |(base, _)| base);
    base.rsplit_once('/').map_or(base, |(_, name)| name)
}

/// Drops the database of `db` and creates it again, empty, through the server of `admin_url`:
/// what is left after the disk that held it failed. No server may be connected to it.
fn recreate_empty(admin_url: &str, db: &str) {
    let name = database_name(db);
    run_pg_tool(
        "psql",
        &[
            "--no-psqlrc",
            "--quiet",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            admin_url,
            "-c",
            &format!("DROP DATABASE \"{name}\""),
            "-c",
            &format!("CREATE DATABASE \"{name}\""),
        ],
    );
}

/// The server's journal position (the cursor of `GET /api/v1/tree`).
fn journal_end(server: &Server, token: &str) -> u64 {
    let (status, body) =
        reqwest::send("GET", &format!("{}/api/v1/tree", server.url()), token, None);
    assert_eq!(status, 200, "{body}");
    let tree: serde_json::Value = serde_json::from_str(&body).unwrap();
    tree["cursor"]
        .as_u64()
        .unwrap_or_else(|| panic!("no cursor in {body}"))
}

/// `files` of both folders, once each.
fn union(one: Vec<(String, Vec<u8>)>, two: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    let mut all = one;
    for file in two {
        if !all.contains(&file) {
            all.push(file);
        }
    }
    all
}

#[test]
fn a_pg_dump_restored_loses_no_local_file_even_after_the_other_client_pushed() {
    let Some(admin_url) = services() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().to_path_buf();
    let (db, store) = fresh_database_and_bucket(&admin_url, "restore_dump");
    let mut server_a = Server::start_shared("server-a", &logs, &db, &store);
    let mut server_b = Server::start_shared("server-b", &logs, &db, &store);
    let token_a = server_a.token("alice", "laptop");
    let token_b = server_a.token("alice", "desktop");
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    let mut a = start_client("client-a", &logs, &a_dir, &server_a.url(), &token_a);
    // B runs through the whole outage and restore, on server B only.
    let b = start_client("client-b", &logs, &b_dir, &server_b.url(), &token_b);
    write(&a_dir.join("old/one.txt"), "synced before the backup");
    write(&b_dir.join("old/two.txt"), "also before the backup");
    wait_until("the first files on both sides", || {
        a_dir.join("old/two.txt").is_file() && b_dir.join("old/one.txt").is_file()
    });
    wait_same(&a_dir, &b_dir);

    // Last night's backup, taken while both servers serve (pg_dump reads one snapshot).
    let dump = tmp.path().join("backup.dump");
    run_pg_tool(
        "pg_dump",
        &["--format=custom", "-f", dump.to_str().unwrap(), &db],
    );

    // A day of work after the backup, on both devices: new files, an edit, a delete.
    write(
        &a_dir.join("new/from-a.txt"),
        "written on A after the backup",
    );
    write(
        &b_dir.join("new/from-b.txt"),
        "written on B after the backup",
    );
    write(&b_dir.join("old/one.txt"), "edited on B after the backup");
    std::fs::remove_file(a_dir.join("old/two.txt")).unwrap();
    wait_until("the day's work on both sides", || {
        a_dir.join("new/from-b.txt").is_file()
            && b_dir.join("new/from-a.txt").is_file()
            && !b_dir.join("old/two.txt").exists()
            && read(&a_dir.join("old/one.txt")).as_deref() == Some("edited on B after the backup")
    });
    wait_same(&a_dir, &b_dir);

    // Server B fails first; A syncs one more file that B never sees: after the restore, only A
    // and the lost history know it, so nothing but A's own check can keep A from reading its
    // absence on the server as a delete.
    server_b.stop();
    write(
        &a_dir.join("new/only-on-a.txt"),
        "synced by A while B was away",
    );
    wait_until("only-on-a.txt on the server", || {
        server_a.entry(&token_a, "new/only-on-a.txt").is_some()
    });
    let journal_seen_by_a = journal_end(&server_a, &token_a);
    assert!(a.terminate().success());
    server_a.stop();
    let before_restore = union(files(&a_dir), files(&b_dir));

    // The database's disk fails; the administrator re-creates the database and restores last
    // night's dump into it.
    recreate_empty(&admin_url, &db);
    run_pg_tool(
        "pg_restore",
        &[
            "--exit-on-error",
            "--no-owner",
            "-d",
            &db,
            dump.to_str().unwrap(),
        ],
    );
    server_a.start_again("server-a-restored", &[]);
    server_b.start_again("server-b-restored", &[]);
    assert!(
        journal_end(&server_a, &token_a) < journal_seen_by_a,
        "the restored journal is the older one"
    );

    // B pushes changes to the restored database before A reconnects, until the journal reaches
    // past A's cursor again, with other changes: only the journal tags tell A apart.
    for idx in 0..12 {
        write(
            &b_dir.join(format!("after-restore/note-{idx}.txt")),
            &format!("B, after the restore, note {idx}"),
        );
    }
    wait_until("B's re-adoption and its new files on the server", || {
        let tree = server_a.tree(&token_b);
        let has = |path: &str| tree.iter().any(|entry| entry.path == path);
        (0..12).all(|idx| has(&format!("after-restore/note-{idx}.txt")))
            && has("new/from-a.txt")
            && has("new/from-b.txt")
    });
    assert!(
        journal_end(&server_a, &token_a) > journal_seen_by_a,
        "B's changes took the journal past A's cursor"
    );
    assert!(
        b.log_text().contains("re-adopting the folder"),
        "B says what happened"
    );

    // Before A's daemon runs, `status` says what the next sync will do, and changes nothing.
    let status = run(&["status", a_dir.to_str().unwrap()]);
    let status_text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        status_text.contains("re-adopt") && !status_text.contains("delete local"),
        "{status_text}"
    );
    a = restart_client("client-a-again", &logs, &a_dir);
    wait_until("A re-adopted", || {
        a.log_text().contains("re-adopting the folder")
    });
    wait_until("B's files after the restore on A", || {
        (0..12).all(|idx| read(&a_dir.join(format!("after-restore/note-{idx}.txt"))).is_some())
    });
    wait_same(&a_dir, &b_dir);
    // Nothing written since the backup is lost on either side; the file deleted after the
    // backup may come back (the restored database still has it).
    assert_holds(&a_dir, &before_restore);
    assert_holds(&b_dir, &before_restore);
    assert_eq!(
        read(&b_dir.join("new/only-on-a.txt")).as_deref(),
        Some("synced by A while B was away")
    );
    for line in a.log_text().lines().chain(b.log_text().lines()) {
        assert!(!line.contains("delete local"), "{line}");
    }
    // Both servers serve the converged tree, with every file of the folders.
    let tree = server_b.tree(&token_a);
    assert_eq!(tree, server_a.tree(&token_b), "A and B serve one namespace");
    for (path, bytes) in files(&a_dir) {
        let hash = blake3::hash(&bytes).to_hex().to_string();
        assert!(
            tree.iter()
                .any(|entry| entry.path == path && entry.hash.as_deref() == Some(hash.as_str())),
            "{path} is not on the server as on A: {tree:?}"
        );
    }
}

#[test]
fn a_lost_database_and_a_recreated_account_lose_nothing_and_read_no_old_chunk() {
    let Some(admin_url) = services() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().to_path_buf();
    let (db, store) = fresh_database_and_bucket(&admin_url, "recreated_account");
    let mut server = Server::start_shared("server", &logs, &db, &store);
    let old_token = server.token("alice", "laptop");
    let a_dir = tmp.path().join("a");
    let mut a = start_client("client-a", &logs, &a_dir, &server.url(), &old_token);
    write(&a_dir.join("docs/only-copy.txt"), "the only remaining copy");
    write(&a_dir.join("photo.bin"), &"x".repeat(300_000));
    wait_until("A's files on the server", || {
        server.entry(&old_token, "docs/only-copy.txt").is_some()
            && server.entry(&old_token, "photo.bin").is_some()
    });
    let old_chunk = server
        .entry(&old_token, "docs/only-copy.txt")
        .unwrap()
        .hash
        .unwrap();
    assert!(a.terminate().success());
    let before = files(&a_dir);

    // The database is lost; the bucket still holds the chunks. `serve` on the empty database
    // refuses to start as a first install.
    server.stop();
    recreate_empty(&admin_url, &db);
    let (refused, log) = server.start_refused("server-refused");
    assert_eq!(refused.code(), Some(2), "{log}");
    assert!(
        log.contains("has no accounts") && log.contains("--new-database"),
        "{log}"
    );

    // The administrator starts over on purpose and re-creates the account.
    server.start_again("server-new", &["--new-database"]);
    let new_token = server.token("alice", "laptop");
    let download = |token: &str| {
        reqwest::send(
            "POST",
            &format!("{}/api/v1/chunks/download", server.url()),
            token,
            Some(format!("{{\"hashes\":[\"{old_chunk}\"]}}")),
        )
    };

    // The new account cannot read the old one's content by its hash.
    let (status, body) = download(&new_token);
    assert_eq!(status, 404, "{body}");

    // The device reconnects with the new token: it deletes nothing, uploads everything.
    let again = Proc::spawn(
        "client-a-new-token",
        &logs,
        &[
            "sync",
            a_dir.to_str().unwrap(),
            "--token",
            &new_token,
            "--scan-interval",
            "5",
        ],
    );
    wait_until("A's files on the new account", || {
        let tree = server.tree(&new_token);
        before.iter().all(|(path, bytes)| {
            let hash = blake3::hash(bytes).to_hex().to_string();
            tree.iter()
                .any(|entry| entry.path == *path && entry.hash.as_deref() == Some(hash.as_str()))
        })
    });
    assert_holds(&a_dir, &before);
    assert_eq!(files(&a_dir), before, "the folder is as it was");
    assert!(
        again.log_text().contains("namespace id changed"),
        "A says why it re-adopted"
    );
    // Uploaded again by the new account, the same content is its own to read: the 404 above
    // was the old chunk being out of reach, not downloads failing.
    let (status, body) = download(&new_token);
    assert_eq!(status, 200, "{body}");
}
