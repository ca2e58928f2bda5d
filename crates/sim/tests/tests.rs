//! Runs the simulation over a range of seeds (see the crate docs of `syncstore_sim`).
//!
//! `SYNCSTORE_SEED=N` replays one seed; `SYNCSTORE_SEEDS=N` runs seeds `0..N` (and
//! `SYNCSTORE_SEEDS=A..B` seeds `A..B`) instead of the default range. `SYNCSTORE_STEPS` and `SYNCSTORE_DEVICES` change the size of each run.

use syncstore_sim::{run, Config};

/// Seeds run by default: keep `cargo test -p syncstore-sim` well under 20 s in debug.
const DEFAULT_SEEDS: u64 = 200;

/// Seeds of the default configuration that fail because of known bugs outside this crate;
/// skipped in ranges, never in a replay. None is in the default range today; the known failures
/// (found with the planner at 1a5d871) are outside it:
///
// FIXME(seed 267, SYNCSTORE_DEVICES=2): content lost. d1 renames dir `a/c.txt` to `a/b` while the
// remote holds a file at `a/b`; the planner falls back to "move the remote file aside, delete
// `a/c.txt/c.txt` and `a/c.txt` remotely, upload `a/b/c.txt`", deletions first. The request with
// the delete is applied but its answer is lost, so base still names `a/c.txt/c.txt`. The next plan
// can apply the rename as a move, rebases base to `a/b/c.txt`, and reads the missing remote file
// as a remote delete (row 7): `DeleteLocal a/b/c.txt`. The other device follows the delete too.
// FIXME(seed 3227, SYNCSTORE_DEVICES=2): content lost, same class. d1 renames file `a` to `b`
// while the remote holds a dir at `b`; the fallback sends `Delete a`, `Delete b` before
// `Upload b`; the deletes are applied, the answer lost; the user renames `b` back to `a`; the next
// plan sees `a` unchanged locally and gone remotely, and deletes it locally.
// FIXME(seed 1479): content lost. d0 cannot apply a remote dir move `b/c.txt -> c.txt/a` (a local
// file is at `c.txt`), so it plans `DeleteLocal b/c.txt/a` plus a later download; the engine
// unlinks the file and crashes before forgetting it in base; after restart the move applies,
// base is rebased to `c.txt/a/a`, and the next plan reads it as a local delete (row 6):
// `DeleteRemote`. The engine's order (unlink, then base) makes a crash look like a user delete.
// FIXME(seed 1974, SYNCSTORE_DEVICES=2): no quiescence. The user deletes the last local file
// while another device edits it (the delete gets 409: the edit must come back), and the sync
// empties the rest of the folder; row 29 (empty root while base holds files) then blocks every
// pass for ever, so the edit is never downloaded.
const KNOWN_FAILING: &[u64] = &[];

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
    )
}

#[test]
fn seeds() {
    let mut config = Config::default();
    if let Some(steps) = env_u64("SYNCSTORE_STEPS") {
        config.steps = steps as usize;
    }
    if let Some(devices) = env_u64("SYNCSTORE_DEVICES") {
        config.devices = devices as usize;
    }
    if let Some(seed) = env_u64("SYNCSTORE_SEED") {
        match run(seed, &config) {
            Ok(stats) => {
                if std::env::var_os("SYNCSTORE_TRACE").is_some() {
                    for line in &stats.trace {
                        eprintln!("  {line}");
                    }
                }
                eprintln!("seed {seed} passed: {} edits, {} crashes, {} server changes, {} refused requests, {} files at the end, {} of them conflicted copies", stats.edits, stats.crashes, stats.server_changes, stats.refused, stats.final_files, stats.conflict_copies);
            }
            Err(failure) => panic!("{failure}"),
        }
        return;
    }
    let (first_seed, end_seed) = match std::env::var("SYNCSTORE_SEEDS") {
        Ok(text) => match text.split_once("..") {
            Some((a, b)) => (
                a.trim().parse().expect("SYNCSTORE_SEEDS=A..B"),
                b.trim().parse().expect("SYNCSTORE_SEEDS=A..B"),
            ),
            None => (0, text.trim().parse().expect("SYNCSTORE_SEEDS=N or A..B")),
        },
        Err(_) => (0, DEFAULT_SEEDS),
    };
    let n_seeds = end_seed - first_seed;
    let mut failures = Vec::new();
    let mut edits = 0;
    let mut server_changes = 0;
    for seed in (first_seed..end_seed).filter(|seed| !KNOWN_FAILING.contains(seed)) {
        match run(seed, &config) {
            Ok(stats) => {
                edits += stats.edits;
                server_changes += stats.server_changes;
            }
            Err(failure) => failures.push(failure),
        }
    }
    if let Some(first) = failures.first() {
        let seeds: Vec<u64> = failures.iter().map(|f| f.seed).collect();
        panic!(
            "{} of {n_seeds} seeds failed: {seeds:?}\nfirst failure:\n{first}",
            failures.len()
        );
    }
    // A range that does nothing would pass vacuously.
    assert!(
        edits > n_seeds as usize * 10 && server_changes > n_seeds * 10,
        "the simulation barely ran: {edits} edits, {server_changes} server changes"
    );
}
