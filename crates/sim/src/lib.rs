//! Deterministic simulation of syncstore (in the style of Dropbox's Trinity): several devices,
//! each running **the client's real engine** (`syncstore_client::SyncEngine`, the code the
//! daemon runs), one server running **the store's real op and lock rules**
//! (`syncstore_store::ops::apply_batch`, `syncstore_store::locks`), a random schedule of user
//! edits, passes, lost requests, crashes and server failures, all driven by one `u64` seed.
//!
//! This crate holds no sync logic: it implements the engine's seams ([`disk::SimDisk`] for
//! the folder, [`net::SimServer`] and [`net::SimClock`] for the network and time, the client's
//! own [`MemBase`] for base), and a driver that decides what happens when.
//!
//! # Replaying
//!
//! `cargo test -p syncstore-sim` runs a fixed range of seeds. A failure prints its seed, the
//! broken invariant and the whole history. `SYNCSTORE_SEED=1234 cargo test -p syncstore-sim`
//! replays exactly that seed; `SYNCSTORE_SEEDS=5000` runs seeds `0..5000`.
//!
//! # Determinism
//!
//! Every random choice comes from one of several [`StdRng`]s, one per actor (the scheduler, the
//! network, the disks, the server, the mounts, the locks, each user), each seeded with
//! `seed ^ actor_hash(actor)`. Time is a simulated millisecond counter (the engine's clock
//! seam reads it). The devices' passes are tasks on one current-thread Tokio runtime, which
//! polls them in a fixed order; every request yields a seeded number of turns first, so the
//! interleaving of devices (and of one device's uploads in flight) is decided by the seed.
//! Every map iterated is ordered. Two runs of a seed give the same trace (a test checks it).
//!
//! # What is modelled
//!
//! - **Devices**: the real engine over a simulated disk ([`fs::SimFs`]: inode numbers reused
//!   half the time, mtimes and ctimes from the clock, directory mtimes, modes, read-only files,
//!   mounts; a quarter of the disks stamp whole seconds, as FAT and exFAT do, and their users
//!   often rewrite a file of this second in place at the same size, keeping its whole stamp). Base lives in a [`MemBase`] whose committed state survives a crash; the engine,
//!   its remote tree and its hash cache do not. Everything the engine does is what it does in
//!   production: scans with the hash cache and the real chunker (files are sometimes large,
//!   several chunks, sharing chunks with earlier versions), ignore rules (`.syncignore`, which
//!   users write and which syncs, and the default list: `x.tmp` is one of the names), locks
//!   in force (planner input, read-only files), re-adoption after a server restore or reset.
//! - **Users**: create, rewrite (in place, by an editor's atomic save, or in place keeping the
//!   mtime), delete files; `mkdir -p`; `rm -r`; `mv` of files and directories, onto free names
//!   or over a file; `chmod ±x`; write `.syncignore`; lock and unlock paths, or break another
//!   device's lock. Names come from a tiny pool, so devices collide. Users never empty the
//!   whole folder (an emptied root looks like an unmounted disk, row 29).
//! - **Concurrency**: a device's user edits in the middle of its engine's work, right before
//!   a re-check (`stat`, `open`): the re-checks meet files changed since the plan.
//! - **Network faults**: a request is lost before the server sees it or after it carried it out
//!   (4 % each); 30 % of those also crash the device.
//! - **Crashes**: a device is killed at a random await point of its pass, or right after a disk
//!   change (2 %), before the base update that follows it. Its seams then refuse everything;
//!   it restarts from its disk and its committed base.
//! - **Server faults**: the metadata is backed up now and then, restored from one of those
//!   backups (the journal loses everything since; chunks stay), or lost and the account
//!   re-created (a new namespace, no chunks); the server process restarts (uploads not yet
//!   named by a commit are lost).
//! - **Mounts**: a disk is mounted over a device's folder or one of its subfolders, and later
//!   unmounted.
//!
//! # What is not modelled
//!
//! Symlinks, unreadable files and names that are not valid paths (the scan's tests cover
//! them); the daemon's control loop (the driver decides when passes run) and the long poll;
//! HTTP itself; early upload (it needs a multi-threaded runtime; it only stores
//! content-addressed chunks); full disks.
//!
//! # Invariants checked at the end
//!
//! After the random steps, faults and edits stop, locks are released, disks unmounted, and
//! every device passes in turn for up to 12 rounds, until a whole round applies nothing and
//! leaves the server's cursor where it was. Then:
//!
//! 1. **Quiescence**: that round was reached, and a fresh plan on every device is empty.
//! 2. **Convergence**: every device's disk equals the server's tree, outside the paths its
//!    ignore rules exclude: the same paths, kinds, file bytes and executable bits.
//! 3. **No content lost**: every *live* content is in the server's final tree (at any path,
//!    e.g. a conflicted copy) or in a file a device ignores. Every user write creates unique
//!    bytes, which become live; a content stops being live only when a user destroys it on a
//!    device where it is visible (rewriting or deleting a file, `rm -r`, `mv` over it), or when
//!    the server loses history while it alone held it.

pub mod disk;
pub mod fs;
pub mod net;
pub mod server;
pub mod shared;
pub mod user;

use disk::SimDisk;
use net::{SimClock, SimServer};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use server::Server;
use shared::{DeviceState, Shared, Sim};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use syncstore_client::scan::IgnoreRules;
use syncstore_client::seams::{InPlaceRule, MemBase, MemBaseCommitted, World};
use syncstore_client::{PassReport, SyncEngine};
use syncstore_proto::{DeviceName, EntryKind, RelPath, RestoreTarget};
use user::{show_bytes, Ledger};

/// The seams the simulated devices run the real engine on.
pub struct SimWorld;

impl World for SimWorld {
    type Disk = SimDisk;
    type Server = SimServer;
    type Clock = SimClock;
    type Base = MemBase;

    /// The simulated files are small: every download over an unchanged file of the same size
    /// goes in place, so the simulation covers the journal, its crashes and its replay.
    const IN_PLACE: InPlaceRule = InPlaceRule {
        min_size: 0,
        max_share: 1,
        max_bytes: 32 * 1024 * 1024,
    };

    /// Every changed chunk of a simulated (small) file may go as a delta, so the simulation
    /// covers deltas lost, refused and made against chunks the server no longer has.
    const DELTA_MIN_BYTES: u32 = 0;
}

/// The engine of a simulated device.
pub type SimEngine = SyncEngine<SimWorld>;

/// What a pass task gives back.
type PassOutcome = (Box<SimEngine>, Result<PassReport, syncstore_client::Error>);

/// A device's process.
enum Slot {
    /// Running, between passes.
    Idle(Box<SimEngine>),
    /// In the middle of a pass.
    Running(tokio::task::JoinHandle<PassOutcome>),
    /// Dead (crashed); restarted by the next pass the schedule asks for.
    Down,
}

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
    /// Restores users asked of the server's history.
    pub user_restores: usize,
    /// Garbage collection runs that went to their end.
    pub gc_runs: usize,
    /// How often the histories met what the engine must handle.
    pub features: Features,
    /// The history, as in a [`Failure`].
    pub trace: Vec<String>,
}

/// How often the histories met each thing the engine must handle, counted from the trace.
#[derive(Clone, Debug, Default)]
pub struct Features {
    pub crashes: usize,
    pub lost_requests: usize,
    pub locks_taken: usize,
    pub locks_broken: usize,
    pub ignore_rules_written: usize,
    pub large_files_written: usize,
    pub journal_resets: usize,
    pub server_restarts: usize,
    pub edits_at_rechecks: usize,
    pub conflicted_copies_made: usize,
    /// Passes over what the watcher named, and watcher events it lost or told twice.
    pub incremental_passes: usize,
    pub events_missed: usize,
    pub events_twice: usize,
    /// Restores from history, and garbage collection runs that deleted chunks.
    pub user_restores: usize,
    pub gc_deletions: usize,
    /// Files a device fetched ahead (as from an upload stream).
    pub fetched_ahead: usize,
    /// Writes of downloads in place, crashes in the middle of one (its journal written or being
    /// written), and starts that found journals to replay or discard.
    pub in_place_writes: usize,
    pub in_place_crashes: usize,
    pub journals_found: usize,
    /// Chunks a device sent as a delta the server applied, and made from a delta it fetched.
    pub deltas_sent: usize,
    pub deltas_fetched: usize,
    /// Passes whose downloads copied chunks from other local files.
    pub chunks_copied: usize,
    /// Same-size rewrites, on a disk of whole-second timestamps, in the second of the write
    /// before: every part of the stamp stays as it was.
    pub rewrites_within_the_second: usize,
}

impl Features {
    fn of(trace: &[String]) -> Features {
        let count = |needle: &str| trace.iter().filter(|line| line.contains(needle)).count();
        Features {
            crashes: count(" CRASH "),
            lost_requests: count("LOST"),
            locks_taken: trace
                .iter()
                .filter(|line| line.contains("user locks") && line.contains("(done)"))
                .count(),
            locks_broken: count("'s lock on "),
            ignore_rules_written: count("user writes .syncignore"),
            // A large content shows as `"d0#7"+614405B`.
            large_files_written: trace
                .iter()
                .filter(|line| line.contains(" user ") && line.contains("\"+"))
                .count(),
            journal_resets: count("-> journal reset"),
            server_restarts: count("SERVER RESTARTS"),
            edits_at_rechecks: count("(while the engine works)"),
            conflicted_copies_made: count("(conflicted copy"),
            incremental_passes: count("pass starts (what changed)"),
            events_missed: count("WATCHER MISSES"),
            events_twice: count("WATCHER REPEATS"),
            user_restores: trace
                .iter()
                .filter(|line| line.contains("USER RESTORE") && !line.contains(": 0 steps applied"))
                .filter(|line| !line.contains("refused:"))
                .count(),
            gc_deletions: trace
                .iter()
                .filter(|line| line.contains("GC ENDS") && !line.contains(": 0 chunks"))
                .count(),
            fetched_ahead: count(" FETCHES AHEAD "),
            in_place_writes: count("IN PLACE writing"),
            in_place_crashes: trace
                .iter()
                .filter(|line| line.contains(" CRASH "))
                .filter(|line| line.contains("in place") || line.contains("in-place"))
                .count(),
            journals_found: count("IN-PLACE JOURNALS"),
            deltas_sent: count(" PATCH STORED "),
            deltas_fetched: count(" DELTA SENT "),
            chunks_copied: count(" COPIED LOCALLY "),
            rewrites_within_the_second: count("rewrite-within-the-second"),
        }
    }

    /// Adds another run's counts.
    pub fn add(&mut self, other: &Features) {
        self.crashes += other.crashes;
        self.lost_requests += other.lost_requests;
        self.locks_taken += other.locks_taken;
        self.locks_broken += other.locks_broken;
        self.ignore_rules_written += other.ignore_rules_written;
        self.large_files_written += other.large_files_written;
        self.journal_resets += other.journal_resets;
        self.server_restarts += other.server_restarts;
        self.edits_at_rechecks += other.edits_at_rechecks;
        self.conflicted_copies_made += other.conflicted_copies_made;
        self.incremental_passes += other.incremental_passes;
        self.events_missed += other.events_missed;
        self.events_twice += other.events_twice;
        self.user_restores += other.user_restores;
        self.gc_deletions += other.gc_deletions;
        self.fetched_ahead += other.fetched_ahead;
        self.in_place_writes += other.in_place_writes;
        self.in_place_crashes += other.in_place_crashes;
        self.journals_found += other.journals_found;
        self.deltas_sent += other.deltas_sent;
        self.deltas_fetched += other.deltas_fetched;
        self.chunks_copied += other.chunks_copied;
        self.rewrites_within_the_second += other.rewrites_within_the_second;
    }

    /// Panics unless `n_seeds` seeds met each of them (a feature the histories never reach is
    /// not tested by them).
    pub fn assert_exercised(&self, n_seeds: u64) {
        let n = n_seeds as usize;
        for (what, count, at_least) in [
            ("crashes", self.crashes, n),
            ("lost requests", self.lost_requests, n),
            ("locks taken", self.locks_taken, n / 2),
            ("locks broken", self.locks_broken, n / 20),
            ("ignore rules written", self.ignore_rules_written, n / 2),
            ("large files written", self.large_files_written, n / 4),
            ("journal resets", self.journal_resets, n / 20),
            ("server restarts", self.server_restarts, n / 2),
            ("edits at re-checks", self.edits_at_rechecks, n),
            ("conflicted copies", self.conflicted_copies_made, n / 4),
            ("incremental passes", self.incremental_passes, 10 * n),
            ("watcher events missed", self.events_missed, n),
            ("watcher events told twice", self.events_twice, n),
            ("restores that changed something", self.user_restores, n / 3),
            (
                "garbage collections that deleted chunks",
                self.gc_deletions,
                n / 5,
            ),
            ("files fetched ahead", self.fetched_ahead, n),
            ("in-place writes", self.in_place_writes, n),
            (
                "crashes during in-place writes",
                self.in_place_crashes,
                n / 20,
            ),
            (
                "in-place journals found at start",
                self.journals_found,
                n / 20,
            ),
            ("chunks sent as deltas", self.deltas_sent, n / 40),
            ("chunks fetched as deltas", self.deltas_fetched, n),
            (
                "passes that copied chunks from local files",
                self.chunks_copied,
                n / 2,
            ),
            (
                "rewrites within the second (coarse timestamps)",
                self.rewrites_within_the_second,
                n / 40,
            ),
        ] {
            assert!(
                count >= at_least,
                "too few {what}: {count} in {n_seeds} seeds"
            );
        }
    }
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

/// The whole simulated system: the shared state the seams act on, and the driver's own dice.
struct Driver {
    shared: Shared,
    /// Picks who acts and how, how far the clock moves, how long tasks run.
    sched_rng: StdRng,
    /// Decides when the server's metadata is backed up, restored, lost, or its process restarts.
    server_rng: StdRng,
    /// Decides when disks are mounted and unmounted.
    mount_rng: StdRng,
    /// Decides what users lock and unlock.
    lock_rng: StdRng,
    /// Decides which watcher events are lost or told twice, when queues overflow, and when a
    /// pass is a periodic rescan (a full walk).
    watch_rng: StdRng,
    /// Decides what a device fetches ahead, as its stream follower would (see `fetch_ahead`).
    fetch_rng: StdRng,
    slots: Vec<Slot>,
    stats: Stats,
}

/// Runs one seed.
///
/// # Errors
/// A [`Failure`] naming the broken invariant (a panic inside the engine, the planner or the
/// op rules counts as one), with the seed and the history.
pub fn run(seed: u64, config: &Config) -> Result<Stats, Failure> {
    let devices = (0..config.devices)
        .map(|idx| {
            let name = format!("d{idx}");
            DeviceState {
                name: DeviceName::new(&name).expect("valid"),
                // A quarter of the folders are on a USB stick's filesystem.
                disk: fs::SimFs::new(actor_rng(seed, &format!("disk of {name}")).gen_bool(0.25)),
                user_rng: actor_rng(seed, &format!("device {name}")),
                crashed: false,
                committed: MemBaseCommitted::default(),
            }
        })
        .collect();
    let shared = Shared(Arc::new(Mutex::new(Sim {
        server: Server::default(),
        devices,
        ledger: Ledger::default(),
        trace: Vec::new(),
        net_rng: actor_rng(seed, "network"),
        disk_rng: actor_rng(seed, "disks"),
        now_ms: 1_000_000,
        step: 0,
        faults: config.faults,
        concurrent_edits: config.faults,
    })));
    let mut driver = Driver {
        shared: shared.clone(),
        sched_rng: actor_rng(seed, "scheduler"),
        server_rng: actor_rng(seed, "server"),
        mount_rng: actor_rng(seed, "mounts"),
        lock_rng: actor_rng(seed, "locks"),
        watch_rng: actor_rng(seed, "watcher"),
        fetch_rng: actor_rng(seed, "fetch-ahead"),
        slots: (0..config.devices).map(|_| Slot::Down).collect(),
        stats: Stats::default(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(driver.simulate(config))
    }));
    drop(runtime);
    let message = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(message)) => Some(message),
        Err(panic) => Some(format!("panic: {}", panic_text(&*panic))),
    };
    let mut sim = shared.lock();
    let trace = std::mem::take(&mut sim.trace);
    match message {
        None => {
            let mut stats = driver.stats;
            stats.server_changes = sim.server.cursor().0;
            stats.edits = sim.ledger.edits;
            stats.crashes = trace.iter().filter(|line| line.contains(" CRASH ")).count();
            stats.refused = trace
                .iter()
                .filter(|line| line.contains("-> [") && line.contains("409"))
                .count();
            stats.features = Features::of(&trace);
            stats.trace = trace;
            Ok(stats)
        }
        Some(message) => Err(Failure {
            seed,
            message,
            trace,
        }),
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

impl Driver {
    fn log(&self, text: String) {
        self.shared.lock().log(text);
    }

    fn name(&self, idx: usize) -> DeviceName {
        self.shared.lock().devices[idx].name.clone()
    }

    async fn simulate(&mut self, config: &Config) -> Result<(), String> {
        for step in 0..config.steps {
            let n = self.slots.len();
            {
                let mut sim = self.shared.lock();
                sim.step = step;
                sim.now_ms += self.sched_rng.gen_range(1..2000);
            }
            if config.faults {
                self.server_fault();
                self.mount_fault();
            }
            let idx = self.sched_rng.gen_range(0..n);
            match self.sched_rng.gen_range(0..100) {
                0..=27 => self.shared.lock().user_edit(idx, ""),
                28..=31 => self.lock_action(idx),
                32..=89 => self.start_pass(idx),
                90..=93 if config.faults => self.kill(idx),
                _ => {}
            }
            // The passes under way run for a while.
            for _ in 0..self.sched_rng.gen_range(0..16) {
                tokio::task::yield_now().await;
            }
            self.collect_finished().await?;
        }
        {
            let mut sim = self.shared.lock();
            sim.faults = false;
            sim.concurrent_edits = false;
            sim.step = config.steps;
        }
        // Passes under way end (nothing fails any more).
        for idx in 0..self.slots.len() {
            if let Slot::Running(handle) = std::mem::replace(&mut self.slots[idx], Slot::Down) {
                let outcome = handle.await;
                self.slots[idx] = self.finished(idx, outcome)?;
            }
        }
        self.end_faults();
        self.quiesce().await?;
        self.check_invariants().await
    }

    /// Unmounts every disk, ends every lock and restarts every dead device.
    fn end_faults(&mut self) {
        let mut sim = self.shared.lock();
        for device in &mut sim.devices {
            // The reverse of mounting: the disk over the whole folder was mounted last.
            device.disk.unmount_root();
            device.disk.unmount_dirs();
        }
        let now_ms = sim.now_ms;
        let breaker = sim.devices[0].name.clone();
        for lock in sim.server.locks(now_ms) {
            sim.server.unlock(&breaker, &lock.path, true, now_ms);
        }
        // A collection run between its steps finishes, and so do runs a restart left behind
        // (their doomed chunks refuse commits).
        if let Some(deleted) = sim.server.gc_end() {
            sim.log(format!("GC ENDS: {deleted} chunks deleted"));
        }
        let deleted = sim.server.finish_dead_runs();
        sim.log(format!(
            "GC finishes the runs a restart left: {deleted} chunks deleted"
        ));
        sim.log(
            "--- edits and faults stop; disks unmounted; locks ended; every device syncs until \
             quiescent ---"
                .to_owned(),
        );
    }

    /// Starts device `idx`'s process from its disk and committed base.
    fn restart(&mut self, idx: usize) -> Option<Box<SimEngine>> {
        let committed = {
            let mut sim = self.shared.lock();
            let device = &mut sim.devices[idx];
            // A daemon cannot start on a folder with a disk mounted over it (its state is not
            // there): it waits.
            if device.disk.root_mounted() {
                return None;
            }
            device.crashed = false;
            device.committed.thaw();
            device.committed.clone()
        };
        let engine = SyncEngine::new(
            SimDisk::new(self.shared.clone(), idx),
            SimServer::new(self.shared.clone(), idx),
            SimClock::new(self.shared.clone()),
            MemBase::open(&committed),
            false,
        );
        match engine {
            Ok(mut engine) => {
                self.log(format!("{} starts", self.name(idx)));
                engine.check_focus_plans(true);
                // No simulated user ever allows a held mass delete, so a hold would never end
                // (the folders are small, but conflicted copies can take them past the default
                // minimum of 100 files). The planner's property tests cover the interlock.
                engine.set_mass_delete_limit(None);
                Some(Box::new(engine))
            }
            Err(err) => {
                self.log(format!("{} cannot start: {err}", self.name(idx)));
                None
            }
        }
    }

    /// Device `idx` starts a pass (its process first, if it is down).
    fn start_pass(&mut self, idx: usize) {
        let engine = match std::mem::replace(&mut self.slots[idx], Slot::Down) {
            Slot::Idle(engine) => engine,
            Slot::Running(handle) => {
                self.slots[idx] = Slot::Running(handle);
                return;
            }
            Slot::Down => match self.restart(idx) {
                Some(engine) => engine,
                None => return,
            },
        };
        let mut engine = engine;
        self.fetch_ahead(idx, &mut engine);
        let walk_all = self.deliver_events(idx, &mut engine, true);
        self.log(format!(
            "{} pass starts ({})",
            self.name(idx),
            if walk_all {
                "full walk"
            } else {
                "what changed"
            }
        ));
        self.slots[idx] = Slot::Running(tokio::spawn(async move {
            let outcome = if walk_all {
                engine.sync_pass().await
            } else {
                engine.sync_changes().await
            };
            (engine, outcome)
        }));
    }

    /// Now and then, puts in the engine's prefetched files what a stream follower would have
    /// fetched of a file on the server: the first chunks of its current version, or of a list
    /// that is not its version (a stream that another commit overtook, or an upload that will
    /// never commit). The engine must take only a prefix of the version it downloads and
    /// place nothing else; the invariants at the end say whether it did.
    fn fetch_ahead(&mut self, idx: usize, engine: &mut SimEngine) {
        if !self.fetch_rng.gen_bool(0.15) {
            return;
        }
        let picked = {
            let sim = self.shared.lock();
            let (_, tree) = sim.server.tree();
            let files: Vec<_> = tree
                .into_iter()
                .filter(|entry| entry.kind == EntryKind::File && !entry.chunks.is_empty())
                .collect();
            let Some(entry) = files.choose(&mut self.fetch_rng).cloned() else {
                return;
            };
            let mut chunks = entry.chunks.clone();
            let stale = self.fetch_rng.gen_bool(0.3);
            if stale {
                // Another file's chunk in the middle: not this version's list.
                let other = files.choose(&mut self.fetch_rng).expect("one at least");
                let at = self.fetch_rng.gen_range(0..chunks.len());
                if let Some(chunk) = other.chunks.first() {
                    chunks[at] = *chunk;
                }
            }
            let n = self.fetch_rng.gen_range(1..=chunks.len());
            chunks.truncate(n);
            let bytes: Option<Vec<Vec<u8>>> = chunks
                .iter()
                .map(|chunk| sim.server.chunk(&chunk.hash).map(<[u8]>::to_vec))
                .collect();
            bytes.map(|bytes| (entry.path, chunks, bytes, stale))
        };
        let Some((path, chunks, bytes, stale)) = picked else {
            return;
        };
        let Ok(mut temp) = syncstore_client::seams::Disk::create_temp(engine.disk()) else {
            return;
        };
        for piece in &bytes {
            if std::io::Write::write_all(&mut temp, piece).is_err() {
                return;
            }
        }
        self.log(format!(
            "{} FETCHES AHEAD {path}: {} chunks{}",
            self.name(idx),
            chunks.len(),
            if stale {
                " (not its version's list)"
            } else {
                ""
            }
        ));
        engine.prefetched().start(
            &path,
            syncstore_client::prefetch::PrefetchedFile {
                stream: "sim".to_owned(),
                temp,
                announced: chunks.clone(),
                chunks,
                shown: None,
                earlier: None,
            },
        );
    }

    /// Hands device `idx`'s watcher events to its engine as inotify would; with `faults`, some
    /// are lost or told twice and a queue may overflow. Returns whether the pass is a periodic
    /// rescan (a full walk).
    fn deliver_events(&mut self, idx: usize, engine: &mut SimEngine, faults: bool) -> bool {
        let events = std::mem::take(&mut self.shared.lock().devices[idx].disk.events);
        let name = self.name(idx);
        if faults && self.watch_rng.gen_range(0..100) < 3 {
            self.log(format!(
                "{name} WATCHER OVERFLOWS ({} events lost)",
                events.len()
            ));
            engine.local_unknown();
            return false;
        }
        for (path, deep) in events {
            let roll = if faults {
                self.watch_rng.gen_range(0..100)
            } else {
                99
            };
            if roll < 4 {
                self.log(format!("{name} WATCHER MISSES {path}"));
                continue;
            }
            if roll < 8 {
                self.log(format!("{name} WATCHER REPEATS {path}"));
                engine.local_changed(path.clone(), deep);
            }
            engine.local_changed(path, deep);
        }
        faults && self.watch_rng.gen_range(0..100) < 10
    }

    /// Fails the run when a plan of a focus differed from the plan of the whole folder.
    fn check_focus(&self, idx: usize, engine: &mut SimEngine) -> Result<(), String> {
        match engine.take_focus_mismatches().into_iter().next() {
            Some(difference) => Err(format!("{}: {difference}", self.name(idx))),
            None => Ok(()),
        }
    }

    /// Kills device `idx`'s process wherever its pass is.
    fn kill(&mut self, idx: usize) {
        match std::mem::replace(&mut self.slots[idx], Slot::Down) {
            Slot::Running(handle) => handle.abort(),
            Slot::Idle(_) | Slot::Down => {}
        }
        self.shared.lock().crash(idx, "(killed)");
    }

    /// What a finished pass leaves: the process, unless it crashed meanwhile.
    fn finished(
        &mut self,
        idx: usize,
        outcome: Result<PassOutcome, tokio::task::JoinError>,
    ) -> Result<Slot, String> {
        let (engine, result) = match outcome {
            Ok(outcome) => outcome,
            Err(err) if err.is_panic() => {
                return Err(format!(
                    "panic in {}'s engine: {}",
                    self.name(idx),
                    panic_text(&*err.into_panic())
                ))
            }
            Err(_) => return Ok(Slot::Down),
        };
        let mut engine = engine;
        self.check_focus(idx, &mut engine)?;
        let name = self.name(idx);
        let copied = engine.take_chunks_copied();
        if copied > 0 {
            self.log(format!("{name} COPIED LOCALLY {copied} chunks"));
        }
        match &result {
            Ok(report) => self.log(format!(
                "{name} pass done: {} applied{}",
                report.applied,
                if report.in_sync { ", in sync" } else { "" }
            )),
            Err(err) => self.log(format!("{name} pass failed: {err}")),
        }
        if self.shared.lock().devices[idx].crashed {
            return Ok(Slot::Down);
        }
        Ok(Slot::Idle(engine))
    }

    /// Collects the passes that ended.
    async fn collect_finished(&mut self) -> Result<(), String> {
        for idx in 0..self.slots.len() {
            let done = matches!(&self.slots[idx], Slot::Running(handle) if handle.is_finished());
            if done {
                let Slot::Running(handle) = std::mem::replace(&mut self.slots[idx], Slot::Down)
                else {
                    unreachable!("matched above")
                };
                let outcome = handle.await;
                self.slots[idx] = self.finished(idx, outcome)?;
            }
        }
        Ok(())
    }

    /// The user of device `idx` locks a path, unlocks one of theirs, or breaks another's lock.
    fn lock_action(&mut self, idx: usize) {
        let mut sim = self.shared.lock();
        let now_ms = sim.now_ms;
        let me = sim.devices[idx].name.clone();
        let locks = sim.server.locks(now_ms);
        let (mine, others): (Vec<_>, Vec<_>) = locks.iter().partition(|lock| lock.device == me);
        let roll = self.lock_rng.gen_range(0..100);
        let line = if roll < 35 && !mine.is_empty() {
            let lock = mine.choose(&mut self.lock_rng).expect("not empty");
            let done = sim.server.unlock(&me, &lock.path, false, now_ms);
            format!("{me} user unlocks {} ({})", lock.path, ok_text(done))
        } else if roll < 45 && !others.is_empty() {
            let lock = others.choose(&mut self.lock_rng).expect("not empty");
            let done = sim.server.unlock(&me, &lock.path, true, now_ms);
            format!(
                "{me} user breaks {}'s lock on {} ({})",
                lock.device,
                lock.path,
                ok_text(done)
            )
        } else {
            let (_, entries) = sim.server.tree();
            let Some(entry) = entries.choose(&mut self.lock_rng) else {
                return;
            };
            let path = entry.path.clone();
            let ttl = self
                .lock_rng
                .gen_bool(0.5)
                .then(|| self.lock_rng.gen_range(1..30));
            let done = sim.server.lock(&me, &path, ttl, now_ms);
            format!("{me} user locks {path} for {ttl:?} s ({})", ok_text(done))
        };
        sim.log(line);
    }

    /// Now and then the administrator backs the server's metadata up; rarely restores it from
    /// a backup (everything journalled since is lost), loses it and re-creates the account (a
    /// new namespace, no old chunks), or restarts the server process.
    fn server_fault(&mut self) {
        let roll = self.server_rng.gen_range(0..1000);
        let mut sim = self.shared.lock();
        if roll < 40 {
            sim.server.back_up();
        } else if roll < 48 && sim.server.n_backups() > 0 {
            let idx = self.server_rng.gen_range(0..sim.server.n_backups());
            let cursor = sim.server.restore(idx);
            sim.log(format!("SERVER RESTORED from a backup at cursor {cursor}"));
            self.stats.restores += 1;
            forget_what_only_the_server_held(&mut sim);
        } else if roll < 51 {
            sim.server.reset();
            sim.log("SERVER RESET: metadata lost, account re-created".to_owned());
            self.stats.resets += 1;
            forget_what_only_the_server_held(&mut sim);
        } else if roll < 60 {
            sim.server.restart();
            sim.log("SERVER RESTARTS: uploads no commit named are lost".to_owned());
        } else if roll < 78 {
            drop(sim);
            self.user_restore();
        } else if roll < 92 {
            let keep_ms = [0, 5_000, 60_000, 3_600_000][self.server_rng.gen_range(0..4)];
            let grace_ms = [0, 2_000, 30_000][self.server_rng.gen_range(0..3)];
            let now_ms = sim.now_ms;
            if let Some((rows, doomed)) =
                sim.server
                    .gc_begin(now_ms, syncstore_store::Retention { keep_ms }, grace_ms)
            {
                sim.log(format!(
                    "GC BEGINS (keeping {keep_ms} ms, grace {grace_ms} ms): {rows} journal rows compacted, {doomed} chunks doomed"
                ));
            }
        } else if roll < 115 {
            if let Some(deleted) = sim.server.gc_end() {
                sim.log(format!("GC ENDS: {deleted} chunks deleted"));
                self.stats.gc_runs += 1;
            }
        }
    }

    /// A user restores something on the server (`syncstore restore`), as one of the devices: a
    /// version of a file, the files deleted lately, or the folder (or part of it) as it was a
    /// while ago.
    fn user_restore(&mut self) {
        let mut sim = self.shared.lock();
        let now_ms = sim.now_ms;
        let idx = self.server_rng.gen_range(0..sim.devices.len());
        let device = sim.devices[idx].name.clone();
        let (_, tree) = sim.server.tree();
        let files: Vec<RelPath> = tree
            .iter()
            .filter(|entry| entry.kind == EntryKind::File)
            .map(|entry| entry.path.clone())
            .collect();
        let dirs: Vec<RelPath> = tree
            .iter()
            .filter(|entry| entry.kind == EntryKind::Dir)
            .map(|entry| entry.path.clone())
            .collect();
        let ago = self.server_rng.gen_range(0..40_000);
        let target = match self.server_rng.gen_range(0..3) {
            0 if !files.is_empty() => {
                let path = files[self.server_rng.gen_range(0..files.len())].clone();
                let versions = sim.server.versions(&path);
                let files_only: Vec<_> = versions
                    .iter()
                    .filter(|v| v.kind != syncstore_proto::VersionKind::Deleted)
                    .collect();
                if files_only.is_empty() {
                    return;
                }
                let rev = files_only[self.server_rng.gen_range(0..files_only.len())].rev;
                RestoreTarget::Version {
                    path,
                    rev,
                    to: None,
                }
            }
            1 => RestoreTarget::Deleted {
                prefix: None,
                since_ms: Some(now_ms - ago),
                by: None,
            },
            _ => {
                let path = if dirs.is_empty() || self.server_rng.gen_bool(0.5) {
                    None
                } else {
                    Some(dirs[self.server_rng.gen_range(0..dirs.len())].clone())
                };
                RestoreTarget::Moment {
                    path,
                    at_ms: now_ms - ago,
                    to: None,
                }
            }
        };
        let what = syncstore_store::history::describe(&target);
        match sim.server.restore_history(&device, &target, now_ms) {
            Ok(restored) => {
                let line = format!(
                    "USER RESTORE by {device} of {what}: {} steps applied, {} refused",
                    restored.applied, restored.refused
                );
                sim.log(line.clone());
                self.stats.user_restores += 1;
                // What the restore replaced or trashed the user chose to let go (it stays in
                // history). What it brings back is not put on the ledger: an edit a device made
                // on top of that content before the restore (its base) replaces it again, as
                // three-tree reconciliation says it should (simulation seed 277).
                let edit = user::Edit {
                    text: line.clone(),
                    killed: restored.killed,
                    written: None,
                };
                sim.ledger.record(&line, edit);
            }
            Err(refusal) => sim.log(format!(
                "USER RESTORE by {device} of {what} refused: {refusal}"
            )),
        }
    }

    /// Now and then a disk is mounted over a device's folder or one of its subfolders (an
    /// empty one, which users and applications may then write into), and later unmounted.
    fn mount_fault(&mut self) {
        let roll = self.mount_rng.gen_range(0..1000);
        let mut sim = self.shared.lock();
        let idx = self.mount_rng.gen_range(0..sim.devices.len());
        let now_ns = sim.devices[idx].disk.timestamp(sim.now_ms * 1_000_000);
        let device = &mut sim.devices[idx];
        let name = device.name.clone();
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
        sim.log(format!("{name} MOUNT: {line}"));
    }

    /// One pass of device `idx`, to its end (nothing else runs meanwhile): a full walk, or a
    /// pass over every watcher event since the last.
    async fn pass_now(&mut self, idx: usize, walk_all: bool) -> Result<Option<PassReport>, String> {
        let mut engine = match std::mem::replace(&mut self.slots[idx], Slot::Down) {
            Slot::Idle(engine) => engine,
            Slot::Running(_) => unreachable!("every pass ended before"),
            Slot::Down => match self.restart(idx) {
                Some(engine) => engine,
                None => return Ok(None),
            },
        };
        self.deliver_events(idx, &mut engine, false);
        let result = if walk_all {
            engine.sync_pass().await
        } else {
            engine.sync_changes().await
        };
        self.check_focus(idx, &mut engine)?;
        let name = self.name(idx);
        let report = match result {
            Ok(report) => {
                self.log(format!(
                    "{name} pass done: {} applied{}",
                    report.applied,
                    if report.in_sync { ", in sync" } else { "" }
                ));
                Some(report)
            }
            Err(err) => {
                self.log(format!("{name} pass failed: {err}"));
                None
            }
        };
        self.slots[idx] = Slot::Idle(engine);
        Ok(report)
    }

    /// Every device passes in turn until a whole round changes nothing.
    async fn quiesce(&mut self) -> Result<(), String> {
        const ROUNDS: usize = 12;
        const MAX_PASSES: usize = 8;
        for round in 0..ROUNDS {
            let cursor_before = {
                let mut sim = self.shared.lock();
                sim.step += 1;
                // Past every retry wait (at most a minute).
                sim.now_ms += 61_000;
                sim.server.cursor()
            };
            let mut quiet = true;
            for idx in 0..self.slots.len() {
                for _ in 0..MAX_PASSES {
                    // The first round walks every folder (a periodic rescan finds what the
                    // watchers missed); later ones pass over what the watchers saw.
                    match self.pass_now(idx, round == 0).await? {
                        Some(report) => {
                            if report.applied > 0 {
                                quiet = false;
                            }
                            if !report.retry_soon {
                                break;
                            }
                            quiet = false;
                        }
                        None => quiet = false,
                    }
                }
            }
            if quiet && self.shared.lock().server.cursor() == cursor_before {
                return Ok(());
            }
        }
        let mut message = format!(
            "no quiescence after {ROUNDS} rounds of syncing every device; plans still pending:"
        );
        for idx in 0..self.slots.len() {
            message.push_str(&format!(
                "\n  {}: {}",
                self.name(idx),
                self.pending(idx).await
            ));
        }
        Err(message)
    }

    /// What device `idx` would still do, for a message; empty when nothing.
    async fn pending(&mut self, idx: usize) -> String {
        let Slot::Idle(engine) = &mut self.slots[idx] else {
            return "(not running)".to_owned();
        };
        match engine.preview().await {
            Ok(preview) if preview.plan.ops.is_empty() && preview.plan.blocked.is_empty() => {
                String::new()
            }
            Ok(preview) => format!(
                "{:?} (blocked: {:?})",
                preview.plan.ops, preview.plan.blocked
            ),
            Err(err) => format!("(no preview: {err})"),
        }
    }

    async fn check_invariants(&mut self) -> Result<(), String> {
        let mut problems = Vec::new();
        // 1. Quiescence: a fresh plan is empty everywhere.
        for idx in 0..self.slots.len() {
            let pending = self.pending(idx).await;
            if !pending.is_empty() {
                problems.push(format!("{} still plans: {pending}", self.name(idx)));
            }
        }
        let sim = self.shared.lock();
        // 2. Convergence, outside what each device ignores.
        let server_tree = sim.server.snapshot();
        let server_modes = sim.server.modes();
        let mut ignored_bytes: BTreeSet<&Vec<u8>> = BTreeSet::new();
        for device in &sim.devices {
            let rules = rules_of(&device.disk);
            let synced = |path: &RelPath, kind: EntryKind| !ignored(&rules, path, kind);
            let disk: Snapshot = device
                .disk
                .snapshot()
                .into_iter()
                .filter(|(path, (kind, _))| synced(path, *kind))
                .collect();
            let server: Snapshot = server_tree
                .iter()
                .filter(|(path, (kind, _))| synced(path, *kind))
                .map(|(path, entry)| (path.clone(), entry.clone()))
                .collect();
            for (path, node) in &device.disk.nodes {
                if node.kind == EntryKind::File && !synced(path, node.kind) {
                    ignored_bytes.insert(&node.bytes);
                }
            }
            if disk != server {
                problems.push(format!(
                    "{} differs from the server:\n{}",
                    device.name,
                    tree_diff(&disk, &server)
                ));
                continue;
            }
            let differ: Vec<String> = device
                .disk
                .modes()
                .iter()
                .filter(|(path, _)| synced(path, EntryKind::File))
                .filter(|(path, x)| server_modes.get(*path) != Some(*x))
                .map(|(path, x)| format!("    {path}: executable {x} here"))
                .collect();
            if !differ.is_empty() {
                problems.push(format!(
                    "{}'s executable bits differ from the server's:\n{}",
                    device.name,
                    differ.join("\n")
                ));
            }
        }
        // 3. Nothing retained is lost: every kept version's content is stored.
        for missing in sim.server.retained_but_missing() {
            problems.push(format!(
                "the content of the kept version {missing} was deleted"
            ));
        }
        // 4. No content lost.
        let present: BTreeSet<&Vec<u8>> = server_tree
            .values()
            .filter(|(kind, _)| *kind == EntryKind::File)
            .map(|(_, bytes)| bytes)
            .collect();
        for (bytes, origin) in &sim.ledger.live {
            if !present.contains(bytes) && !ignored_bytes.contains(bytes) {
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
        for device in &sim.devices {
            message.push_str(&format!(
                "{} disk:\n{}",
                device.name,
                show_tree(&device.disk.snapshot())
            ));
        }
        Err(message)
    }
}

fn ok_text(done: bool) -> &'static str {
    if done {
        "done"
    } else {
        "refused"
    }
}

/// The ignore rules of a device's folder, as its engine reads them (the last few built are
/// kept: building them compiles regexes, and users look at them at every edit).
pub(crate) fn rules_of(disk: &fs::SimFs) -> std::rc::Rc<IgnoreRules> {
    thread_local! {
        static BUILT: std::cell::RefCell<Vec<(Option<String>, std::rc::Rc<IgnoreRules>)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    let path = RelPath::new(".syncignore").expect("valid");
    let text = disk
        .get(&path)
        .filter(|node| node.kind == EntryKind::File)
        .and_then(|node| String::from_utf8(node.bytes.clone()).ok());
    BUILT.with(|built| {
        let mut built = built.borrow_mut();
        if let Some((_, rules)) = built.iter().find(|(from, _)| *from == text) {
            return std::rc::Rc::clone(rules);
        }
        let rules = std::rc::Rc::new(IgnoreRules::parse(
            std::path::Path::new("/sim"),
            text.as_deref(),
        ));
        if built.len() >= 8 {
            built.remove(0);
        }
        built.push((text, std::rc::Rc::clone(&rules)));
        rules
    })
}

/// Whether `rules` exclude `path` (or a directory above it).
pub(crate) fn ignored(rules: &IgnoreRules, path: &RelPath, kind: EntryKind) -> bool {
    rules.is_ignored(path, kind)
        || path
            .ancestors()
            .iter()
            .any(|dir| rules.is_ignored(dir, EntryKind::Dir))
}

/// At the moment the server loses history, content that no device holds (on its disk, or
/// hidden by a mount) and the server no longer has is gone with it: the server's failure, not
/// the sync's. What a device deletes after the failure is still counted: the engine checks the
/// server's history before every local delete.
fn forget_what_only_the_server_held(sim: &mut Sim) {
    let on_server = sim.server.snapshot();
    let mut held: BTreeSet<&Vec<u8>> = sim
        .devices
        .iter()
        .flat_map(|device| device.disk.all_file_bytes())
        .collect();
    held.extend(
        on_server
            .values()
            .filter(|(kind, _)| *kind == EntryKind::File)
            .map(|(_, bytes)| bytes),
    );
    let gone: Vec<Vec<u8>> = sim
        .ledger
        .live
        .keys()
        .filter(|bytes| !held.contains(bytes))
        .cloned()
        .collect();
    for bytes in gone {
        sim.ledger.live.remove(&bytes);
        let line = format!(
            "{} was held by the server alone, and is lost with its history",
            show_bytes(&bytes)
        );
        sim.log(line);
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
