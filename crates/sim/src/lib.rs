//! Deterministic simulation of syncstore (in the style of Dropbox's Trinity and CanopyCheck):
//! several devices, one server, a random schedule of user edits, partial syncs, lost requests and
//! crashes, all driven by one `u64` seed, over the **real planner** (`syncstore_plan::plan`) and
//! the **real server op rules** (`syncstore_store::ops::apply_batch`).
//!
//! Start reading at [`run`]; [`device`] holds the simulated client, [`server`] the server.
//!
//! # Replaying
//!
//! `cargo test -p syncstore-sim` runs a fixed range of seeds. A failure prints its seed, the
//! broken invariant and the whole history. `SYNCSTORE_SEED=1234 cargo test -p syncstore-sim`
//! replays exactly that seed; `SYNCSTORE_SEEDS=5000` runs seeds `0..5000` (nightly).
//!
//! # Determinism
//!
//! Every random choice comes from one of several [`StdRng`]s, one per actor (the scheduler, the
//! network, each device), each seeded with `seed ^ actor_hash(actor)`, so adding an actor does not
//! change what the others do under an old seed. Nothing reads the wall clock (time is a simulated
//! millisecond counter), and every map iterated is ordered.
//!
//! # What is modelled
//!
//! - **Server**: the store's own `apply_batch` over an in-memory `Txn` ([`server`]): stable node
//!   ids across moves, a cursor bumped per journal row, conditional `PutFile` (`MustNotExist`,
//!   `Rev`), `Delete` at a revision (refused for a non-empty directory), `Move` to a free name,
//!   implicit parent directories, 409 with the current node. The change feed is the journal; a
//!   full listing is `GET /tree`. Chunks are content-addressed and never deleted.
//! - **Devices** ([`device::Device`]): an in-memory disk with inode numbers (freed inodes are
//!   reused half the time, as real filesystems do) and mtimes from the simulated clock; a base tree
//!   committed as the engine commits it (once per applied plan, and before a local delete), to
//!   which a crash rolls back; a remote tree fed from the journal and from the device's own op
//!   results (the client's own `syncstore_client::remote::RemoteTree`), lost on crash and
//!   reloaded from the full tree.
//!   The executor applies `PlanOp`s with the engine's semantics: runs of one kind, one request per
//!   server-bound run, the same re-checks (a download is placed only if the local path still holds
//!   `expect_local`, with `RENAME_NOREPLACE` when it expects nothing; a local delete only if the
//!   hash matches; uploads conditional and skipped if the file changed since the scan; conflict
//!   copy = local rename), and base updated after each applied op.
//! - **Users**: create, rewrite (in place or by an editor's atomic save), delete files; `mkdir -p`;
//!   `rm -r`; `mv` of files and directories, onto free names or over a file. They never empty the
//!   whole folder: an empty root while base holds files looks like an unmounted disk, so the
//!   planner deletes nothing on its account (row 29; downloads still go), and the user's deletions
//!   would stay blocked for ever. Names come from a tiny pool (`a`, `b`, `c.txt`, up to three
//!   deep), so devices collide, and a file and a directory contend for one name.
//! - **Schedule**: each step picks a device and does one of: a user edit; a sync step (plan, with
//!   the remote view fully refreshed, lagging by a few changes or not refreshed at all, and
//!   sometimes keeping only the first k ops; or apply the next run of the current plan); a crash;
//!   an interrupted pass. Devices' runs interleave, so their ops race at the server and get 409s.
//! - **Concurrent edits**: while a device is in the middle of a run, its user sometimes edits
//!   (before a local op, before a download is placed, between reading a file for upload and
//!   committing it), so the executor's re-checks meet changed files.
//! - **Server faults**: the server's metadata is backed up now and then, restored from one
//!   of those backups (the journal loses everything since; chunks stay), or lost and the account
//!   re-created (a new namespace, no chunks). Devices compare the server's namespace and the tag
//!   of the newest journal position they know with what their base was made against, and
//!   re-adopt the folder (base dropped, planned as on a first sync) when they differ.
//! - **Faults**: a request (ops, chunk upload or download) is lost before the server sees it or
//!   after it applied it (4% each); then the pass aborts, and 30% of the time the device also
//!   crashes. A local step (a placed download, a local delete, move or mkdir) crashes the device
//!   between its disk change and its base update 2% of the time.
//!
//! # What is not modelled
//!
//! Locks, ignore rules, symlinks, unreadable files and a missing local root (all planner inputs
//! are fixed: no locks, nothing ignored, root ok, listing complete); files changing *while* being
//! read or placed (an edit lands between two ops, never inside one; so the engine's own window
//! between a re-check and the rename that follows it is not exercised); the hash cache (scans
//! hash every file, which the real cache matches because every write changes the mtime); chunking
//! (each file is one chunk, as the real chunker makes of any file under 256 KiB); server crashes
//! (other than restores and resets); HTTP itself; the long poll (a refresh is a read of the
//! journal).
//!
//! # Invariants checked at the end
//!
//! After the random steps, faults and edits stop and every device syncs in turn (full refresh,
//! plan, apply, until its plan is empty, at most 32 plans) for up to 12 rounds, until a whole
//! round applies nothing and leaves the server's cursor where it was. Then:
//!
//! 1. **Quiescence**: that round was reached, and a fresh plan on every device is empty (no ops,
//!    nothing blocked).
//! 2. **Convergence**: every device's disk equals the server's tree: the same paths, kinds, and
//!    file bytes (directories included, empty ones too).
//! 3. **No content lost**: every *live* content is the content of some file in the final tree (at
//!    any path, e.g. a conflicted copy). Every user write creates unique bytes, which become live.
//!    A content stops being live only when a user destroys it *on a device where it is visible*:
//!    rewriting or deleting a file, `rm -r` of a directory holding it, or `mv` over it kills the
//!    bytes that were at that path on that device's disk at that moment. Nothing the sync does
//!    kills content, and a user cannot kill what their device has not shown them.
//!
//! The content rule is slightly lenient: bytes killed at one path count as killed even if the
//! same bytes also sat at another path (they can, after a rename raced with an edit).

pub mod device;
pub mod fs;
pub mod server;

use device::{show_bytes, Device, Env, Ledger};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use server::Server;
use std::collections::BTreeMap;
use std::fmt;
use syncstore_proto::{DeviceName, EntryKind, RelPath};

/// What one simulation run does.
#[derive(Clone, Debug)]
pub struct Config {
    /// Number of devices.
    pub devices: usize,
    /// Random steps before the final sync.
    pub steps: usize,
    /// Whether requests get lost and devices crash mid-step.
    pub faults: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            devices: 3,
            steps: 150,
            faults: true,
        }
    }
}

/// A broken invariant, with everything needed to understand and replay it.
pub struct Failure {
    pub seed: u64,
    /// Which invariant broke, and how.
    pub message: String,
    /// Every step of the history, one line each.
    pub trace: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed {} failed: {}", self.seed, self.message)?;
        writeln!(
            f,
            "replay with: SYNCSTORE_SEED={} cargo test -p syncstore-sim",
            self.seed
        )?;
        writeln!(f, "history:")?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Counts of what a successful run did, to check that a seed range exercises something.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub edits: usize,
    pub crashes: usize,
    pub server_changes: u64,
    pub final_files: usize,
    /// Conflicted copies in the final tree.
    pub conflict_copies: usize,
    /// Requests the server answered 409.
    pub refused: usize,
    /// Times the server's metadata was restored from an older backup.
    pub restores: usize,
    /// Times the server's metadata was lost and the account re-created.
    pub resets: usize,
    /// Times a disk was mounted over a device's folder or a subfolder.
    pub mounts: usize,
    /// The history, as in a [`Failure`].
    pub trace: Vec<String>,
}

/// A stable 64-bit hash of an actor's name (not `DefaultHasher`, whose output may change
/// between Rust releases).
fn actor_hash(actor: &str) -> u64 {
    let digest = blake3::hash(actor.as_bytes());
    u64::from_le_bytes(digest.as_bytes()[..8].try_into().expect("8 bytes"))
}

fn actor_rng(seed: u64, actor: &str) -> StdRng {
    StdRng::seed_from_u64(seed ^ actor_hash(actor))
}

/// The whole simulated system.
struct World {
    server: Server,
    /// Decides the fate of requests.
    net_rng: StdRng,
    /// Picks who acts and how, and how far the clock moves.
    sched_rng: StdRng,
    /// Decides when the server's metadata is backed up, restored from a backup, or lost.
    server_rng: StdRng,
    /// Decides when disks are mounted over devices' folders and subfolders, and unmounted.
    mount_rng: StdRng,
    devices: Vec<Device>,
    now_ms: i64,
    step: usize,
    trace: Vec<String>,
    ledger: Ledger,
    stats: Stats,
}

/// Runs one seed.
///
/// # Errors
/// A [`Failure`] naming the broken invariant (a panic inside the planner or the op rules counts
/// as one), with the seed and the history.
pub fn run(seed: u64, config: &Config) -> Result<Stats, Failure> {
    let mut world = World {
        server: Server::default(),
        net_rng: actor_rng(seed, "network"),
        sched_rng: actor_rng(seed, "scheduler"),
        server_rng: actor_rng(seed, "server"),
        mount_rng: actor_rng(seed, "mounts"),
        devices: (0..config.devices)
            .map(|idx| {
                let name = format!("d{idx}");
                Device::new(
                    DeviceName::new(&name).expect("valid"),
                    actor_rng(seed, &format!("device {name}")),
                )
            })
            .collect(),
        now_ms: 0,
        step: 0,
        trace: Vec::new(),
        ledger: Ledger::default(),
        stats: Stats::default(),
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| world.simulate(config)));
    let message = match outcome {
        Ok(Ok(())) => {
            world.stats.server_changes = world.server.cursor().0;
            world.stats.edits = world.ledger.edits;
            world.stats.refused = world
                .trace
                .iter()
                .filter(|line| line.contains("-> [") && line.contains("409"))
                .count();
            world.stats.trace = world.trace;
            return Ok(world.stats);
        }
        Ok(Err(message)) => message,
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            format!("panic: {text}")
        }
    };
    Err(Failure {
        seed,
        message,
        trace: world.trace,
    })
}

impl World {
    fn env(&mut self, faults: bool) -> (Env<'_>, &mut Vec<Device>) {
        let env = Env {
            server: &mut self.server,
            faults: if faults {
                Some(&mut self.net_rng)
            } else {
                None
            },
            now_ms: self.now_ms,
            trace: &mut self.trace,
            step: self.step,
            ledger: &mut self.ledger,
            concurrent_edits: faults,
        };
        (env, &mut self.devices)
    }

    fn simulate(&mut self, config: &Config) -> Result<(), String> {
        for step in 0..config.steps {
            self.step = step;
            if config.faults {
                self.server_fault();
                self.mount_fault();
            }
            self.now_ms += self.sched_rng.gen_range(1..2000);
            let idx = self.sched_rng.gen_range(0..self.devices.len());
            let action = self.sched_rng.gen_range(0..100);
            match action {
                0..=29 => self.user_edit(idx),
                30..=91 => {
                    let (mut env, devices) = self.env(config.faults);
                    devices[idx].sync_step(&mut env);
                    // Edits during the step moved the clock.
                    let now_ms = env.now_ms;
                    self.now_ms = now_ms;
                }
                92..=95 => {
                    let (mut env, devices) = self.env(config.faults);
                    devices[idx].crash(&mut env);
                    self.stats.crashes += 1;
                }
                _ => {
                    let (mut env, devices) = self.env(config.faults);
                    devices[idx].interrupt(&mut env);
                }
            }
        }
        for device in &mut self.devices {
            // The reverse of mounting: the disk over the whole folder was mounted last.
            device.disk.unmount_root();
            device.disk.unmount_dirs();
        }
        self.trace.push(
            "--- edits and faults stop; disks unmounted; every device syncs until quiescent ---"
                .to_owned(),
        );
        self.quiesce()?;
        self.check_invariants()
    }

    /// Now and then the administrator backs the server's metadata up; rarely restores it from
    /// a backup (everything journalled since is lost), or loses it and re-creates the account
    /// (a new namespace, no old chunks).
    fn server_fault(&mut self) {
        let roll = self.server_rng.gen_range(0..1000);
        if roll < 40 {
            self.server.back_up();
        } else if roll < 48 && self.server.n_backups() > 0 {
            let idx = self.server_rng.gen_range(0..self.server.n_backups());
            let cursor = self.server.restore(idx);
            self.trace.push(format!(
                "#{} SERVER RESTORED from a backup at cursor {cursor}",
                self.step
            ));
            self.stats.restores += 1;
            self.forget_what_only_the_server_held();
        } else if roll < 51 {
            self.server.reset();
            self.trace.push(format!(
                "#{} SERVER RESET: metadata lost, account re-created",
                self.step
            ));
            self.stats.resets += 1;
            self.forget_what_only_the_server_held();
        }
    }

    /// At the moment the server loses history, content that no device holds (on its disk, or
    /// hidden by a mount) and the server no longer has is gone with it: the server's failure,
    /// not the sync's. (A device may rightly have dropped its copy before: a file moved, on the
    /// server, to where that device does not look, beneath a disk mounted there.) What a device
    /// deletes after the failure is still counted: the engine checks the server's history
    /// before every local delete.
    fn forget_what_only_the_server_held(&mut self) {
        let mut held: std::collections::BTreeSet<&Vec<u8>> = self
            .devices
            .iter()
            .flat_map(|device| device.disk.all_file_bytes())
            .collect();
        let on_server = self.server.snapshot();
        held.extend(
            on_server
                .values()
                .filter(|(kind, _)| *kind == EntryKind::File)
                .map(|(_, bytes)| bytes),
        );
        let gone: Vec<Vec<u8>> = self
            .ledger
            .live
            .keys()
            .filter(|bytes| !held.contains(bytes))
            .cloned()
            .collect();
        for bytes in gone {
            self.ledger.live.remove(&bytes);
            self.trace.push(format!(
                "#{} {} was held by the server alone, and is lost with its history",
                self.step,
                show_bytes(&bytes)
            ));
        }
    }

    /// Now and then a disk is mounted over a device's folder or one of its subfolders (an
    /// empty one, which users and applications may then write into), and later unmounted.
    fn mount_fault(&mut self) {
        let roll = self.mount_rng.gen_range(0..1000);
        let idx = self.mount_rng.gen_range(0..self.devices.len());
        let now_ns = self.now_ms * 1_000_000;
        let device = &mut self.devices[idx];
        let line = if roll < 10 {
            let dirs: Vec<RelPath> = device
                .disk
                .nodes
                .iter()
                .filter(|(_, node)| node.kind == EntryKind::Dir)
                .map(|(path, _)| path.clone())
                .collect();
            if dirs.is_empty() || device.disk.root_mounted() {
                return;
            }
            let dir = dirs[self.mount_rng.gen_range(0..dirs.len())].clone();
            if !device.disk.mount(&dir, now_ns) {
                return;
            }
            format!("a disk is mounted over {dir}")
        } else if roll < 16 {
            if !device.disk.mount_root() {
                return;
            }
            "a disk is mounted over the whole folder".to_owned()
        } else if roll < 60 {
            if device.disk.mount_points().next().is_none() && !device.disk.root_mounted() {
                return;
            }
            device.disk.unmount_root();
            device.disk.unmount_dirs();
            "its disks are unmounted".to_owned()
        } else {
            return;
        };
        self.stats.mounts += usize::from(line.contains("mounted over"));
        self.trace
            .push(format!("#{} {} MOUNT: {line}", self.step, device.name));
    }

    fn user_edit(&mut self, idx: usize) {
        let device = &mut self.devices[idx];
        let Some(edit) = device.user_edit(self.now_ms, &mut self.ledger.counter) else {
            return;
        };
        let line = format!("#{} {} {}", self.step, device.name, edit.text);
        self.ledger.record(&line, edit);
        self.trace.push(line);
    }

    /// Syncs every device in turn until a whole round changes nothing.
    fn quiesce(&mut self) -> Result<(), String> {
        const ROUNDS: usize = 12;
        const MAX_PLANS: usize = 32;
        for round in 0..ROUNDS {
            self.step = self.step.max(round) + 1;
            self.now_ms += 1000;
            let cursor_before = self.server.cursor();
            let mut quiet = true;
            for idx in 0..self.devices.len() {
                let (mut env, devices) = self.env(false);
                let (idle, applied) = devices[idx].sync_until_idle(&mut env, MAX_PLANS);
                if !idle || applied > 0 {
                    quiet = false;
                }
            }
            if quiet && self.server.cursor() == cursor_before {
                return Ok(());
            }
        }
        let mut message = format!(
            "no quiescence after {ROUNDS} rounds of syncing every device; plans still pending:"
        );
        for idx in 0..self.devices.len() {
            let (mut env, devices) = self.env(false);
            let plan = devices[idx].make_plan(&mut env, device::Refresh::Full);
            let shown: Vec<String> = plan.ops.iter().map(device::show_op).collect();
            message.push_str(&format!(
                "\n  {}: {} (blocked: {:?})",
                devices[idx].name,
                shown.join("; "),
                plan.blocked
            ));
        }
        Err(message)
    }

    fn check_invariants(&mut self) -> Result<(), String> {
        let mut problems = Vec::new();
        // 1. Quiescence: a fresh plan is empty everywhere.
        for idx in 0..self.devices.len() {
            let (mut env, devices) = self.env(false);
            let plan = devices[idx].make_plan(&mut env, device::Refresh::Full);
            if !plan.ops.is_empty() || !plan.blocked.is_empty() {
                let shown: Vec<String> = plan.ops.iter().map(device::show_op).collect();
                problems.push(format!(
                    "{} still plans: {} (blocked: {:?})",
                    devices[idx].name,
                    shown.join("; "),
                    plan.blocked
                ));
            }
        }
        // 2. Convergence.
        let server_tree = self.server.snapshot();
        let server_modes = self.server.modes();
        for device in &self.devices {
            let disk = device.disk.snapshot();
            if disk != server_tree {
                problems.push(format!(
                    "{} differs from the server:\n{}",
                    device.name,
                    tree_diff(&disk, &server_tree)
                ));
            } else if device.disk.modes() != server_modes {
                let differ: Vec<String> = device
                    .disk
                    .modes()
                    .iter()
                    .filter(|(path, x)| server_modes.get(*path) != Some(*x))
                    .map(|(path, x)| format!("    {path}: executable {x} here"))
                    .collect();
                problems.push(format!(
                    "{}'s executable bits differ from the server's:\n{}",
                    device.name,
                    differ.join("\n")
                ));
            }
        }
        // 3. No content lost.
        let present: std::collections::BTreeSet<&Vec<u8>> = server_tree
            .values()
            .filter(|(kind, _)| *kind == EntryKind::File)
            .map(|(_, bytes)| bytes)
            .collect();
        for (bytes, origin) in &self.ledger.live {
            if !present.contains(bytes) {
                problems.push(format!(
                    "content {} was lost (written by: {origin})",
                    show_bytes(bytes)
                ));
            }
        }
        self.stats.final_files = present.len();
        self.stats.conflict_copies = server_tree
            .keys()
            .filter(|p| p.as_str().contains("(conflicted copy"))
            .count();
        if problems.is_empty() {
            return Ok(());
        }
        let mut message = problems.join("\n");
        message.push_str("\nserver tree:\n");
        message.push_str(&show_tree(&server_tree));
        for device in &self.devices {
            message.push_str(&format!(
                "{} disk:\n{}",
                device.name,
                show_tree(&device.disk.snapshot())
            ));
        }
        Err(message)
    }
}

type Snapshot = BTreeMap<RelPath, (EntryKind, Vec<u8>)>;

fn show_entry(entry: &(EntryKind, Vec<u8>)) -> String {
    match entry.0 {
        EntryKind::Dir => "dir".to_owned(),
        EntryKind::File => show_bytes(&entry.1),
    }
}

fn show_tree(tree: &Snapshot) -> String {
    tree.iter()
        .map(|(path, entry)| format!("    {path} = {}\n", show_entry(entry)))
        .collect()
}

fn tree_diff(device: &Snapshot, server: &Snapshot) -> String {
    let mut out = String::new();
    let paths: std::collections::BTreeSet<&RelPath> = device.keys().chain(server.keys()).collect();
    for path in paths {
        let (here, there) = (device.get(path), server.get(path));
        if here != there {
            let show = |e: Option<&(EntryKind, Vec<u8>)>| e.map_or("absent".to_owned(), show_entry);
            out.push_str(&format!(
                "    {path}: device {} / server {}\n",
                show(here),
                show(there)
            ));
        }
    }
    out
}
