//! Issue 18: a one-byte edit of a large file crosses the network as deltas of the chunk it
//! changed, both ways, not as the chunk: counted by the server's access log, it is less than
//! 0.1 % of the file. A copy of a large file comes from the receiver's own disk; an edit that
//! meets a full disk waits, with the file whole, until there is room.

use crate::util::*;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SIZE: usize = 128 * 1024 * 1024;

/// The requests of an access log's lines: (path without its query, bytes in + out).
fn requests(log: &str) -> Vec<(String, u64)> {
    let field = |line: &str, name: &str| -> Option<String> {
        let at = line.find(&format!(" {name}="))? + name.len() + 2;
        Some(line[at..].split(' ').next()?.to_owned())
    };
    log.lines()
        .filter(|line| line.contains("syncstore_server::access"))
        .filter_map(|line| {
            let path = field(line, "path")?;
            let path = path.split('?').next()?.to_owned();
            let bytes_in: u64 = field(line, "bytes_in")?.parse().ok()?;
            let bytes_out: u64 = field(line, "bytes_out")?.parse().ok()?;
            Some((path, bytes_in + bytes_out))
        })
        .collect()
}

/// `status --json` of the folder says its daemon runs and it is in sync.
fn wait_in_sync(dir: &Path) {
    wait_until("the daemon says the folder is in sync", || {
        let out = run(&["status", "--json", dir.to_str().unwrap()]);
        let doc: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        doc["daemon"] == "running" && doc["in_sync"] == true && doc["syncing"] == false
    });
}

/// A server and two daemons of one user, A and B, with `old` written on A as `big.bin` and
/// both folders in sync with it.
struct Pair {
    server: Server,
    a: PathBuf,
    b: PathBuf,
    _daemon_a: Proc,
    daemon_b: Proc,
    /// The filesystem of its own B's folder is on, if it has one (unmounted after the daemons
    /// stopped).
    disk_b: Option<crate::recovery::Mount>,
    /// Holds the folders (and room beside them, on their filesystem).
    tmp: tempfile::TempDir,
}

fn pair_holding(old: &[u8]) -> Pair {
    pair_on(old, tempfile::tempdir().unwrap(), None)
}

/// [`pair_holding`] with B's folder on a tmpfs of `size` of its own (at `disk_b/b`); `None`
/// when tmpfs cannot be mounted here (not root; CI runs as root).
fn pair_holding_on_a_small_disk(old: &[u8], size: &str) -> Option<Pair> {
    let tmp = tempfile::tempdir().unwrap();
    let mount = crate::recovery::Mount::tmpfs(&tmp.path().join("disk_b"), size)?;
    Some(pair_on(old, tmp, Some(mount)))
}

fn pair_on(old: &[u8], tmp: tempfile::TempDir, disk_b: Option<crate::recovery::Mount>) -> Pair {
    let logs = tmp.path().to_path_buf();
    let server = Server::start(&logs, &tmp.path().join("data"));
    let a = tmp.path().join("a");
    let b = match &disk_b {
        Some(_) => tmp.path().join("disk_b").join("b"),
        None => tmp.path().join("b"),
    };
    let token_a = server.token("alice", "a");
    let token_b = server.token("alice", "b");
    let daemon_a = start_client("client-a", &logs, &a, &server.url(), &token_a);
    let daemon_b = start_client("client-b", &logs, &b, &server.url(), &token_b);
    std::fs::write(a.join("big.bin"), old).unwrap();
    wait_until_for(
        "B has the large file",
        Duration::from_secs(180),
        &mut || std::fs::read(b.join("big.bin")).is_ok_and(|bytes| bytes == old),
    );
    wait_in_sync(&a);
    wait_in_sync(&b);
    Pair {
        server,
        a,
        b,
        _daemon_a: daemon_a,
        daemon_b,
        disk_b,
        tmp,
    }
}

/// `old` with the bytes at `places` flipped by `mask`, as written in place into `file` (durably):
/// what the file holds now.
fn flip_in_place(file: &Path, old: &[u8], places: &[usize], mask: u8) -> Vec<u8> {
    let mut new = old.to_vec();
    let edited = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    for &at in places {
        new[at] ^= mask;
        edited.write_all_at(&new[at..=at], at as u64).unwrap();
    }
    edited.sync_all().unwrap();
    new
}

/// `old` with one byte inserted in its middle (its size changes, and the chunks after the
/// insertion shift).
fn with_a_byte_inserted(old: &[u8]) -> Vec<u8> {
    let mut new = old.to_vec();
    new.insert(old.len() / 2 + 4321, 0x42);
    new
}

/// Writes `bytes` to a new file at `path` 1 MiB at a time with `pause` after each, as a program
/// does that writes as it produces (a download, a recording, an editor saving a large file),
/// then syncs it.
fn write_slowly(path: &Path, bytes: &[u8], pause: Duration) {
    let mut file = std::fs::File::create(path).unwrap();
    for piece in bytes.chunks(1 << 20) {
        std::io::Write::write_all(&mut file, piece).unwrap();
        std::thread::sleep(pause);
    }
    file.sync_all().unwrap();
}

/// What an edit cost: every request since `before` (both devices', as the server counted
/// them), once B holds `new` and both folders are in sync again.
struct Edit {
    requests: Vec<(String, u64)>,
    total: u64,
    shown: String,
}

fn after_the_edit(server: &Server, a: &Path, b: &Path, new: &[u8], before: usize) -> Edit {
    after_writing(server, (a, b), "big.bin", new, before)
}

/// [`after_the_edit`] of the file `name`.
fn after_writing(
    server: &Server,
    (a, b): (&Path, &Path),
    name: &str,
    new: &[u8],
    before: usize,
) -> Edit {
    wait_until_for("B has the edit", Duration::from_secs(120), &mut || {
        std::fs::read(b.join(name)).is_ok_and(|bytes| bytes == new)
    });
    wait_in_sync(a);
    wait_in_sync(b);
    let requests: Vec<(String, u64)> = requests(&server.proc.log_text())
        .into_iter()
        .skip(before)
        .collect();
    let total = requests.iter().map(|(_, bytes)| bytes).sum();
    let shown: Vec<String> = requests.iter().map(|(p, n)| format!("{p} {n}")).collect();
    Edit {
        total,
        shown: shown.join("\n"),
        requests,
    }
}

#[test]
fn a_one_byte_edit_of_a_large_file_sends_less_than_a_thousandth_of_it() {
    let old = random_bytes(SIZE, 1803);
    let pair = pair_holding(&old);
    let (server, a, b) = (&pair.server, &pair.a, &pair.b);

    // One byte changed in place on A, in the middle of the file.
    let before = requests(&server.proc.log_text()).len();
    let new = flip_in_place(&a.join("big.bin"), &old, &[SIZE / 2 + 12_345], 0x5a);
    let Edit {
        requests: edit,
        total,
        shown,
    } = after_the_edit(server, a, b, &new, before);
    assert!(
        total * 1000 < SIZE as u64,
        "the edit cost {total} bytes on the wire, {:.3} % of the file:\n{shown}",
        total as f64 * 100.0 / SIZE as f64
    );
    // It went as deltas: A's up, B's down.
    for path in [
        "/api/v1/chunks/signature",
        "/api/v1/chunks/patch",
        "/api/v1/chunks/delta",
    ] {
        assert!(
            edit.iter().any(|(p, _)| p == path),
            "no {path} request:\n{shown}"
        );
    }
    eprintln!(
        "a one-byte edit of {SIZE} bytes: {total} bytes on the wire ({:.4} %):\n{shown}",
        total as f64 * 100.0 / SIZE as f64
    );
}

/// `data` cut so that its last chunk is `tail` bytes: everything up to a cut point of the
/// chunker, plus `tail` bytes (cut points depend only on the bytes before them, so the earlier
/// chunks stay as they were).
fn with_a_small_last_chunk(mut data: Vec<u8>, tail: usize) -> Vec<u8> {
    let manifest = syncstore_chunk::manifest_of(&data[..]).unwrap();
    let last = manifest.chunks.last().unwrap();
    let last_cut = data.len() - last.len as usize;
    data.truncate(last_cut + tail);
    let check = syncstore_chunk::manifest_of(&data[..]).unwrap();
    assert_eq!(check.chunks.len(), manifest.chunks.len());
    assert_eq!(check.chunks.last().unwrap().len as usize, tail);
    data
}

/// One in-place edit on B in which one changed chunk comes as a delta and another whole (the
/// last chunk is too small for a delta): both must reach the file. (They once did not: the
/// whole chunks replaced the deltas' results, and B aborted on the missing chunk.)
#[test]
fn an_edit_whose_chunks_come_partly_as_deltas_and_partly_whole_reaches_b() {
    let old = with_a_small_last_chunk(random_bytes(32 * 1024 * 1024, 1804), 1000);
    let size = old.len();
    let pair = pair_holding(&old);
    let (server, a, b) = (&pair.server, &pair.a, &pair.b);

    // Two bytes changed in place on A: one in the middle, one in the last (small) chunk.
    let before = requests(&server.proc.log_text()).len();
    let places = [size / 2 + 777, size - 10];
    let new = flip_in_place(&a.join("big.bin"), &old, &places, 0xa5);
    let edit = after_the_edit(server, a, b, &new, before);
    assert!(
        edit.requests
            .iter()
            .any(|(p, _)| p == "/api/v1/chunks/delta"),
        "B fetched no delta:\n{}",
        edit.shown
    );
    assert!(
        !pair.daemon_b.log_text().contains("internal error"),
        "B's daemon hit a bug:\n{}",
        pair.daemon_b.log_text()
    );
}

/// A byte inserted in the middle of a large file changes its size, so B writes the new version
/// to a temp file (not in place): the changed chunk still comes down as a delta against the
/// chunk B holds at that place, and the edit costs well under 1 % of the file both ways.
#[test]
fn a_byte_inserted_in_a_large_file_comes_down_as_a_delta_into_the_new_copy() {
    let size = 64 * 1024 * 1024;
    let old = random_bytes(size, 1805);
    let pair = pair_holding(&old);
    let (server, a, b) = (&pair.server, &pair.a, &pair.b);

    let before = requests(&server.proc.log_text()).len();
    let new = with_a_byte_inserted(&old);
    // A new file renamed over the old one. It is written beside the folder, not in it: a temp
    // file in the folder may be synced while it is written (as a new file, with no old copy to
    // take a delta against), which this test is not about.
    let written = pair.tmp.path().join("big.bin.new");
    std::fs::write(&written, &new).unwrap();
    std::fs::rename(&written, a.join("big.bin")).unwrap();
    let Edit {
        requests: edit,
        total,
        shown,
    } = after_the_edit(server, a, b, &new, before);
    assert!(
        edit.iter().any(|(p, _)| p == "/api/v1/chunks/delta"),
        "B fetched no delta:\n{shown}"
    );
    assert!(
        total * 100 < size as u64,
        "the insertion cost {total} bytes on the wire:\n{shown}"
    );
    eprintln!("a one-byte insertion in {size} bytes: {total} bytes on the wire:\n{shown}");
}

/// A large file copied on A (a new path, content B already holds in another file) comes to B
/// from B's own disk: the download fetches nothing of it, and the whole copy costs well under
/// 1 % of the file on the wire.
#[test]
fn a_copy_of_a_large_file_comes_from_the_other_devices_own_disk() {
    let size = 64 * 1024 * 1024;
    let old = random_bytes(size, 1806);
    let pair = pair_holding(&old);
    let (server, a, b) = (&pair.server, &pair.a, &pair.b);

    let before = requests(&server.proc.log_text()).len();
    // Copied beside the folder and renamed in, so A sees the copy whole.
    let written = pair.tmp.path().join("copy.bin");
    std::fs::copy(a.join("big.bin"), &written).unwrap();
    std::fs::rename(&written, a.join("copy.bin")).unwrap();
    wait_until_for("B has the copy", Duration::from_secs(120), &mut || {
        std::fs::read(b.join("copy.bin")).is_ok_and(|bytes| bytes == old)
    });
    let Edit {
        requests,
        total,
        shown,
    } = after_the_edit(server, a, b, &old, before);
    let downloaded: u64 = requests
        .iter()
        .filter(|(p, _)| p == "/api/v1/chunks/download" || p == "/api/v1/chunks/delta")
        .map(|(_, n)| n)
        .sum();
    assert!(
        downloaded < 64 * 1024,
        "B fetched {downloaded} bytes of chunks for a file it held:\n{shown}"
    );
    assert!(
        total * 100 < size as u64,
        "the copy cost {total} bytes on the wire:\n{shown}"
    );
    assert_eq!(std::fs::read(b.join("big.bin")).unwrap(), old);
}

/// B's disk fills up (another program's file), then a one-byte edit of a large file arrives:
/// B reports that it has no room and keeps its file whole and as it was; once the space is
/// back, the edit arrives at a later retry.
#[test]
fn a_full_disk_holds_an_edit_of_a_large_file_whole_until_space_returns() {
    let size = 24 * 1024 * 1024;
    let old = random_bytes(size, 1807);
    let Some(pair) = pair_holding_on_a_small_disk(&old, "64m") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and must run the full-disk test"
        );
        eprintln!("SKIPPED a_full_disk_holds_an_edit_of_a_large_file_whole_until_space_returns: needs root to mount a tmpfs");
        return;
    };
    let (a, b) = (&pair.a, &pair.b);
    assert!(pair.disk_b.is_some());

    // Another program fills B's disk, beside the folder.
    let filler = pair.tmp.path().join("disk_b").join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let block = vec![7u8; 64 * 1024];
    loop {
        match std::io::Write::write_all(&mut file, &block) {
            Ok(()) => {}
            Err(err) if err.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(err) => panic!("filling the disk: {err}"),
        }
    }
    drop(file);

    let logged_before = pair.daemon_b.log_text().len();
    let new = flip_in_place(&a.join("big.bin"), &old, &[size / 2 + 99], 0x3c);

    wait_until_for(
        "B reports it has no room",
        Duration::from_secs(60),
        &mut || {
            pair.daemon_b.log_text()[logged_before..]
                .lines()
                .any(|line| line.contains("could not download big.bin: not enough free space"))
        },
    );
    assert!(
        std::fs::read(b.join("big.bin")).unwrap() == old,
        "B's file changed while its disk was full"
    );

    std::fs::remove_file(&filler).unwrap();
    wait_until_for(
        "B has the edit once space is back",
        Duration::from_secs(120),
        &mut || std::fs::read(b.join("big.bin")).is_ok_and(|bytes| bytes == new),
    );
    wait_in_sync(b);
    let log = pair.daemon_b.log_text();
    assert!(
        !log.contains("panicked") && !log.contains("internal error"),
        "B's daemon hit a bug:\n{log}"
    );
}

/// An editor's save of a large file through a temp file in the folder (written over a second or
/// so, then renamed over the old one): A's scans see the temp file while it grows, but B fetches
/// none of it ahead (its start is chunks the server already holds, so A starts no upload stream
/// for it) and whatever B downloads of it is copied from B's own old file, not fetched: B's
/// chunk downloads stay a small part of the file. (Fetching it ahead once cost B 78 % of it.)
#[test]
fn a_save_through_a_temp_file_in_the_folder_costs_the_other_device_little() {
    let size = 64 * 1024 * 1024;
    let old = random_bytes(size, 1808);
    let pair = pair_holding(&old);
    let (server, a, b) = (&pair.server, &pair.a, &pair.b);
    let before = requests(&server.proc.log_text()).len();
    let new = with_a_byte_inserted(&old);
    let temp = a.join(".big.bin.new");
    // The pace lets A's scans see it grow.
    write_slowly(&temp, &new, Duration::from_millis(20));
    std::fs::rename(&temp, a.join("big.bin")).unwrap();
    let Edit {
        requests, shown, ..
    } = after_the_edit(server, a, b, &new, before);
    assert!(!b.join(".big.bin.new").exists());
    let downloaded: u64 = requests
        .iter()
        .filter(|(p, _)| p == "/api/v1/chunks/download")
        .map(|(_, n)| n)
        .sum();
    assert!(
        downloaded * 4 < size as u64,
        "B fetched {downloaded} bytes of chunks for a save of a file it held:\n{shown}"
    );
    let log = pair.daemon_b.log_text();
    assert!(
        !log.contains("receiving .big.bin.new from"),
        "B fetched the temp file ahead:\n{log}"
    );
}

/// A new large file written slowly on A (1 MiB every 50 ms): each of A's scans sees it longer and
/// starts its upload stream again, and B, which follows each, reads what it fetched of the
/// earlier streams from their temp files instead of fetching it again. B's chunk downloads stay
/// under 2.5 times the file (following each stream afresh cost 3.6 times it).
#[test]
fn a_large_file_written_slowly_is_not_fetched_again_for_each_of_its_streams() {
    let size = 64 * 1024 * 1024;
    let first = random_bytes(1 << 20, 1810);
    let pair = pair_holding(&first);
    let (server, a, b) = (&pair.server, &pair.a, &pair.b);
    let before = requests(&server.proc.log_text()).len();
    let new = random_bytes(size, 1811);
    write_slowly(&a.join("slow.bin"), &new, Duration::from_millis(50));
    let Edit { requests, .. } = after_writing(server, (a, b), "slow.bin", &new, before);
    let downloaded: u64 = requests
        .iter()
        .filter(|(p, _)| p == "/api/v1/chunks/download")
        .map(|(_, n)| n)
        .sum();
    let streams = pair
        .daemon_b
        .log_text()
        .matches("receiving slow.bin from a while it is being uploaded")
        .count();
    assert!(
        downloaded * 2 < size as u64 * 5,
        "B fetched {downloaded} bytes of chunks for a file of {size} ({streams} streams followed)"
    );
    // What each stream fetched went with it: nothing is left once the file is placed.
    let left: Vec<_> = std::fs::read_dir(b.join(".syncstore").join("tmp"))
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name())
        .collect();
    assert!(left.is_empty(), "temp files left behind: {left:?}");
    eprintln!("a file of {size} bytes written slowly: B fetched {downloaded} bytes, {streams} streams followed");
}

/// B killed (SIGKILL) once it has found the chunks of a large copy in its own file, while it
/// copies them into its temp file: after the kill neither file is torn (the copy is absent or
/// whole), and after a restart B holds the copy, both files as A has them, and no temp file
/// is left behind.
#[test]
fn b_killed_while_copying_chunks_from_its_own_file_restarts_consistent() {
    let size = 128 * 1024 * 1024;
    let old = random_bytes(size, 1812);
    let mut pair = pair_holding(&old);
    let (a, b) = (pair.a.clone(), pair.b.clone());
    let logged_before = pair.daemon_b.log_text().len();

    let written = pair.tmp.path().join("copy.bin");
    std::fs::copy(a.join("big.bin"), &written).unwrap();
    std::fs::rename(&written, a.join("copy.bin")).unwrap();
    wait_until_for(
        "B found the copy's chunks in its own file",
        Duration::from_secs(60),
        &mut || {
            pair.daemon_b.log_text()[logged_before..]
                .contains("chunks of the download found in other local files")
        },
    );
    pair.daemon_b.kill9();
    assert!(
        std::fs::read(b.join("big.bin")).unwrap() == old,
        "big.bin torn by the kill"
    );
    if let Ok(copy) = std::fs::read(b.join("copy.bin")) {
        assert!(copy == old, "copy.bin torn by the kill");
    }

    let logs = pair.tmp.path().to_path_buf();
    pair.daemon_b = restart_client("client-b-again", &logs, &b);
    wait_until_for(
        "B has the copy after its restart",
        Duration::from_secs(120),
        &mut || std::fs::read(b.join("copy.bin")).is_ok_and(|bytes| bytes == old),
    );
    wait_in_sync(&b);
    assert!(std::fs::read(b.join("big.bin")).unwrap() == old);
    let left: Vec<_> = std::fs::read_dir(b.join(".syncstore").join("tmp"))
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name())
        .collect();
    assert!(left.is_empty(), "temp files left behind: {left:?}");
}
