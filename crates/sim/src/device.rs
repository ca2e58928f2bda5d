//! A simulated device: its disk, its persisted base, its in-memory remote tree and current plan,
//! and an executor that applies [`PlanOp`]s with the semantics of `crates/client/src/engine.rs`.
//!
//! The executor mirrors `Engine::execute` step for step: ops are grouped into runs of one kind
//! (remote ops, uploads, downloads, local ops), each server-bound run is one request, every op
//! re-checks what it relies on, and base is updated for that path right after each applied op.
//! What the real engine treats as an error of the whole pass (a `?` in `execute`) aborts the
//! simulated pass too; what it logs and retries is a skipped op here.

use crate::fs::{FsError, FsNode, SimFs};
use crate::server::Server;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use syncstore_client::remote::RemoteTree;
use syncstore_client::state::ServerIdentity;
use syncstore_plan::{BaseNode, LocalNode, Plan, PlanInput, PlanOp};
use syncstore_proto::{
    ChunkHash, ChunkRef, ContentHash, Cursor, DeviceName, EntryKind, JournalTag, NamespaceId, Op,
    OpResult, RelPath, RemoteEntry, Revision,
};

/// Shared state a device acts on: the server, the network's fault injector, the clock, the trace.
pub struct Env<'a> {
    pub server: &'a mut Server,
    /// Decides the fate of each request; `None` once faults are switched off.
    pub faults: Option<&'a mut StdRng>,
    pub now_ms: i64,
    pub trace: &'a mut Vec<String>,
    pub step: usize,
    /// What users wrote and destroyed.
    pub ledger: &'a mut Ledger,
    /// Whether users edit while a device is in the middle of a run (off once edits stop).
    pub concurrent_edits: bool,
}

/// The content ledger: which contents must survive, and where each came from.
#[derive(Default)]
pub struct Ledger {
    /// Live content → the trace line that wrote it.
    pub live: BTreeMap<Vec<u8>, String>,
    /// Numbers every written content, so each is unique.
    pub counter: u64,
    /// Edits made so far.
    pub edits: usize,
}

impl Ledger {
    /// Records an edit described by `line`.
    pub fn record(&mut self, line: &str, edit: Edit) {
        for bytes in &edit.killed {
            self.live.remove(bytes);
        }
        if let Some(bytes) = edit.written {
            self.live.insert(bytes, line.to_owned());
        }
        self.edits += 1;
    }
}

impl Env<'_> {
    fn now_ns(&self) -> i64 {
        self.now_ms * 1_000_000
    }

    fn log(&mut self, device: &DeviceName, text: String) {
        self.trace.push(format!("#{} {device} {text}", self.step));
    }

    /// What happens to the next request.
    fn fate(&mut self) -> Fate {
        let Some(rng) = self.faults.as_mut() else {
            return Fate::Delivered;
        };
        let roll: f64 = rng.gen();
        if roll < 0.04 {
            Fate::LostBefore
        } else if roll < 0.08 {
            Fate::LostAfter
        } else {
            Fate::Delivered
        }
    }

    /// Whether the device crashes right after a local step, before recording base.
    fn torn(&mut self) -> bool {
        self.faults.as_mut().is_some_and(|rng| rng.gen_bool(0.02))
    }

    /// Whether the device also crashes after losing a request.
    fn crash_after_loss(&mut self) -> bool {
        self.faults.as_mut().is_some_and(|rng| rng.gen_bool(0.3))
    }
}

/// The fate of one request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fate {
    Delivered,
    /// Never reached the server; the client sees an error.
    LostBefore,
    /// The server applied it; the answer was lost, so the client sees an error.
    LostAfter,
}

/// Why the rest of the current pass was abandoned.
#[derive(Debug)]
enum Abort {
    /// A request failed: the pass ends with an error, the daemon retries later.
    Request,
    /// The device crashed: memory is lost.
    Crash,
    /// A `?` in the real engine (for example `safe_join` finding a file where a directory was).
    Error(String),
}

/// How fresh the remote tree is when a pass plans.
#[derive(Clone, Copy, Debug)]
pub enum Refresh {
    /// Every change up to the server's cursor.
    Full,
    /// Only the first `n` unseen changes (a page, or changes that arrived after the poll).
    Prefix(usize),
    /// Not refreshed since the last pass.
    Stale,
}

/// A simulated device.
pub struct Device {
    pub name: DeviceName,
    pub rng: StdRng,
    /// Durable.
    pub disk: SimFs,
    /// Durable: `.syncstore/state.sqlite`.
    pub base: BTreeMap<RelPath, BaseNode>,
    /// Base as last committed to disk. The engine commits base once per applied plan (and when
    /// a local run clears paths before deleting them), so a crash rolls `base` back to this.
    committed_base: BTreeMap<RelPath, BaseNode>,
    /// The server identity base was made against, as learned (saved with base, as the engine
    /// saves it), and as committed.
    identity: ServerIdentity,
    committed_identity: ServerIdentity,
    /// How many times this device re-adopted its folder.
    readopts: usize,
    /// In memory: lost on crash, reloaded from `GET /tree`.
    pub remote: Option<RemoteTree>,
    /// In memory: the rest of the plan being applied.
    pub pending: VecDeque<PlanOp>,
}

/// What a user edit did, for the content ledger.
pub struct Edit {
    pub text: String,
    /// Contents the user deliberately destroyed (they were on this device's disk at the paths the
    /// user overwrote or deleted).
    pub killed: Vec<Vec<u8>>,
    /// Content the user wrote.
    pub written: Option<Vec<u8>>,
}

/// The content hash of `bytes`.
pub fn hash_of(bytes: &[u8]) -> ContentHash {
    ContentHash(*blake3::hash(bytes).as_bytes())
}

/// The chunks of `bytes`: one chunk, as the real chunker cuts any file below `CHUNK_MIN`.
fn chunks_of(bytes: &[u8]) -> Vec<ChunkRef> {
    if bytes.is_empty() {
        return Vec::new();
    }
    vec![ChunkRef {
        hash: ChunkHash(*blake3::hash(bytes).as_bytes()),
        len: bytes.len() as u32,
    }]
}

fn stamp_eq(base: &BaseNode, node: &FsNode) -> bool {
    base.size == node.bytes.len() as u64
        && base.mtime_ns == node.mtime_ns
        && base.inode == node.inode
        && base.ctime_ns == node.ctime_ns
}

/// The stamp the engine compares (`Stamp`): size, mtime, inode and ctime.
type SimStamp = (u64, i64, u64, i64);

/// The [`SimStamp`] of a node.
fn stamp_of(node: &FsNode) -> SimStamp {
    (
        node.bytes.len() as u64,
        node.mtime_ns,
        node.inode,
        node.ctime_ns,
    )
}

/// Compact text of an op for the trace.
pub fn show_op(op: &PlanOp) -> String {
    match op {
        PlanOp::Upload {
            path,
            base,
            executable,
            ..
        } => format!("Upload {path} {base:?} x={executable}"),
        PlanOp::SetModeRemote {
            path,
            rev,
            executable,
            ..
        } => format!("SetModeRemote {path}@{rev} x={executable}"),
        PlanOp::SetModeLocal {
            path, executable, ..
        } => format!("SetModeLocal {path} x={executable}"),
        PlanOp::Download {
            path,
            remote,
            expect_local,
            ..
        } => {
            format!(
                "Download {path} n{}@{} expect={}",
                remote.node_id,
                remote.rev,
                expect_local.map_or("none".into(), |h| h.to_hex()[..6].to_owned())
            )
        }
        PlanOp::DeleteLocal { path, .. } => format!("DeleteLocal {path}"),
        PlanOp::DeleteRemote { path, rev } => format!("DeleteRemote {path}@{rev}"),
        PlanOp::MakeDirLocal { path, .. } => format!("MakeDirLocal {path}"),
        PlanOp::MakeDirRemote { path } => format!("MakeDirRemote {path}"),
        PlanOp::RemoveDirLocal { path } => format!("RemoveDirLocal {path}"),
        PlanOp::MoveRemote { from, to, rev } => format!("MoveRemote {from}@{rev} -> {to}"),
        PlanOp::MoveLocal { from, to } => format!("MoveLocal {from} -> {to}"),
        PlanOp::ConflictCopy { path, copy } => format!("ConflictCopy {path} -> {copy}"),
        PlanOp::RecordBase { path, node } => {
            format!("RecordBase {path} n{}@{}", node.node_id, node.rev)
        }
        PlanOp::ForgetBase { path } => format!("ForgetBase {path}"),
        PlanOp::ProtectLocal { path } => format!("ProtectLocal {path}"),
        PlanOp::UnprotectLocal { path, file } => format!("UnprotectLocal {path} file={file:?}"),
    }
}

/// Shows file bytes (always short ASCII in the simulation).
pub fn show_bytes(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

#[derive(PartialEq, Clone, Copy)]
enum Kind {
    Remote,
    Upload,
    Download,
    Local,
}

fn kind_of(op: &PlanOp) -> Kind {
    match op {
        PlanOp::DeleteRemote { .. }
        | PlanOp::MakeDirRemote { .. }
        | PlanOp::MoveRemote { .. }
        | PlanOp::SetModeRemote { .. } => Kind::Remote,
        PlanOp::Upload { .. } => Kind::Upload,
        PlanOp::Download { .. } => Kind::Download,
        _ => Kind::Local,
    }
}

impl Device {
    /// A device with an empty disk and base.
    pub fn new(name: DeviceName, rng: StdRng) -> Device {
        Device {
            name,
            rng,
            disk: SimFs::default(),
            base: BTreeMap::new(),
            committed_base: BTreeMap::new(),
            identity: ServerIdentity::default(),
            committed_identity: ServerIdentity::default(),
            readopts: 0,
            remote: None,
            pending: VecDeque::new(),
        }
    }

    /// Loses everything held in memory; disk and base survive.
    pub fn crash(&mut self, env: &mut Env<'_>) {
        env.log(
            &self.name,
            format!("CRASH ({} ops of the plan not applied)", self.pending.len()),
        );
        self.remote = None;
        self.pending.clear();
        self.base = self.committed_base.clone();
        self.identity = self.committed_identity;
    }

    /// The engine commits base when a plan has been applied or a pass ends early, with the
    /// server identity it learned.
    fn commit_base(&mut self) {
        self.committed_base = self.base.clone();
        self.committed_identity = self.identity;
    }

    /// As `Engine::note_known`: a journal position the server answered with.
    fn note_known(&mut self, cursor: Cursor, tag: JournalTag) {
        if self.identity.known.is_none_or(|(known, _)| cursor >= known) {
            self.identity.known = Some((cursor, tag));
        }
    }

    /// As `Engine::readopt`: base cannot be trusted (the server lost history, or is another
    /// account), so it is dropped, durably, and the folder is planned as on a first sync.
    fn readopt(&mut self, env: &mut Env<'_>, namespace: NamespaceId, why: &str) {
        env.log(&self.name, format!("RE-ADOPT: {why}"));
        self.readopts += 1;
        self.base.clear();
        self.identity = ServerIdentity {
            namespace: Some(namespace),
            known: None,
        };
        self.remote = None;
        self.pending.clear();
        self.commit_base();
    }

    /// As `Engine::connect` and `Engine::refresh_remote`: compares the server's namespace and
    /// journal with what base was made against.
    fn check_identity(&mut self, env: &mut Env<'_>) {
        let namespace = env.server.namespace();
        let why = match self.identity.namespace {
            Some(saved) if saved != namespace => Some("the server's namespace changed"),
            None if !self.base.is_empty() => Some("no saved namespace"),
            _ => None,
        }
        .or_else(|| {
            self.identity
                .known
                .is_some_and(|(cursor, tag)| env.server.tag_at(cursor) != Some(tag))
                .then_some("the journal lost what this device saw")
        });
        if let Some(why) = why {
            self.readopt(env, namespace, why);
        }
        self.identity.namespace = Some(namespace);
    }

    /// The pass ends early (an error, the round limit): the rest of the plan is dropped.
    pub fn interrupt(&mut self, env: &mut Env<'_>) {
        if !self.pending.is_empty() {
            env.log(
                &self.name,
                format!("pass interrupted ({} ops dropped)", self.pending.len()),
            );
            self.pending.clear();
        }
        self.commit_base();
    }

    /// The local tree, as the scanner reports it.
    pub fn scan(&self) -> BTreeMap<RelPath, LocalNode> {
        // As `scan::walk`: a directory on another filesystem is not descended into.
        self.disk
            .nodes
            .iter()
            .filter(|(path, _)| !self.disk.on_other_fs(path))
            .map(|(path, node)| {
                let hash = (node.kind == EntryKind::File).then(|| hash_of(&node.bytes));
                let size = if node.kind == EntryKind::File {
                    node.bytes.len() as u64
                } else {
                    0
                };
                (
                    path.clone(),
                    LocalNode {
                        kind: node.kind,
                        hash,
                        size,
                        mtime_ns: node.mtime_ns,
                        inode: node.inode,
                        ctime_ns: node.ctime_ns,
                        executable: node.kind == EntryKind::File && node.executable,
                    },
                )
            })
            .collect()
    }

    fn refresh(&mut self, env: &mut Env<'_>, refresh: Refresh) {
        self.check_identity(env);
        if self.remote.is_none() {
            let (cursor, entries) = env.server.tree();
            self.remote = Some(RemoteTree::from_listing(cursor, entries, Vec::new()));
            // The engine's first journal read right after the listing verifies its position.
            if let Some(tag) = env.server.tag_at(cursor) {
                self.note_known(cursor, tag);
            }
            return;
        }
        let remote = self.remote.as_mut().expect("loaded above");
        let changes = env.server.changes_since(remote.cursor);
        let take = match refresh {
            Refresh::Full => changes.len(),
            Refresh::Prefix(n) => n.min(changes.len()),
            Refresh::Stale => 0,
        };
        for change in &changes[..take] {
            remote.apply(change, Some(&self.name));
        }
        let reached = remote.cursor;
        if let Some(tag) = env.server.tag_at(reached) {
            self.note_known(reached, tag);
        }
        if take < changes.len() {
            env.log(
                &self.name,
                format!(
                    "remote view lags: saw {take} of {} new changes",
                    changes.len()
                ),
            );
        }
    }

    /// Refreshes the remote tree, scans and plans.
    pub fn make_plan(&mut self, env: &mut Env<'_>, refresh: Refresh) -> Plan {
        if self.disk.root_mounted() {
            // `Engine::check_folder`: the folder is stopped; nothing is scanned or planned.
            env.log(
                &self.name,
                "folder stopped: a disk is mounted over it".to_owned(),
            );
            return Plan::default();
        }
        self.refresh(env, refresh);
        let local = self.scan();
        // Mount points are reported as skipped and left untouchable (row 35).
        let unavailable: BTreeSet<RelPath> = self.disk.mount_points().cloned().collect();
        let remote = self.remote.as_ref().expect("refreshed").plan_view();
        let secs = env.now_ms / 1000;
        let now_stamp = format!(
            "2024-01-{:02} {:02}{:02}{:02}",
            1 + secs / 86_400,
            secs / 3600 % 24,
            secs / 60 % 60,
            secs % 60
        );
        syncstore_plan::plan(&PlanInput {
            base: &self.base,
            local: &local,
            remote: &remote,
            device: &self.name,
            now_stamp: &now_stamp,
            locked_by_others: &BTreeMap::new(),
            read_only_for_locks: &BTreeMap::new(), // TODO(issue 12): wire
            ignored: &unavailable,
            local_root_ok: true,
            remote_complete: true,
        })
    }

    /// One scheduler step: plan when nothing is pending, else apply the next run of the plan.
    pub fn sync_step(&mut self, env: &mut Env<'_>) {
        if self.pending.is_empty() {
            let refresh = match self.rng.gen_range(0..20) {
                0..=13 => Refresh::Full,
                14..=16 => Refresh::Prefix(self.rng.gen_range(0..4)),
                _ => Refresh::Stale,
            };
            let plan = self.make_plan(env, refresh);
            let mut ops = plan.ops;
            if ops.is_empty() {
                return;
            }
            let shown: Vec<String> = ops.iter().map(show_op).collect();
            env.log(&self.name, format!("plan: {}", shown.join("; ")));
            if ops.len() > 1 && self.rng.gen_bool(0.1) {
                let keep = self.rng.gen_range(1..ops.len());
                env.log(&self.name, format!("pass will stop after {keep} ops"));
                ops.truncate(keep);
            }
            self.pending = ops.into();
            return;
        }
        self.run_next(env);
    }

    /// Applies the next run of pending ops; on an abort, the rest of the plan is dropped.
    fn run_next(&mut self, env: &mut Env<'_>) -> usize {
        if self.disk.root_mounted() && !self.pending.is_empty() {
            // `Engine::execute` checks the folder before applying a plan.
            env.log(
                &self.name,
                "folder stopped before the plan was applied".to_owned(),
            );
            self.interrupt(env);
            return 0;
        }
        let Some(first) = self.pending.pop_front() else {
            return 0;
        };
        let kind = kind_of(&first);
        let mut run = vec![first];
        while self.pending.front().is_some_and(|op| kind_of(op) == kind) {
            run.push(self.pending.pop_front().expect("checked"));
        }
        let n_ops = run.len();
        let result = match kind {
            Kind::Remote => self.execute_remote_ops(env, run),
            Kind::Upload => self.execute_uploads(env, run),
            Kind::Download => self.execute_downloads(env, run),
            Kind::Local => {
                // `Engine::history_unchanged`, before a run with local deletes.
                if run
                    .iter()
                    .any(|op| matches!(op, PlanOp::DeleteLocal { .. }))
                {
                    let readopts_before = self.readopts;
                    self.check_identity(env);
                    if self.readopts != readopts_before {
                        return 0;
                    }
                }
                self.execute_locals(env, run)
            }
        };
        match result {
            Ok(applied) => {
                // As `Engine::execute_runs`: a run with a step that did not apply ends the plan.
                if matches!(kind, Kind::Remote | Kind::Upload)
                    && applied < n_ops
                    && !self.pending.is_empty()
                {
                    self.interrupt(env);
                }
                if self.pending.is_empty() {
                    self.commit_base();
                }
                applied
            }
            Err(Abort::Request) => {
                if env.crash_after_loss() {
                    self.crash(env);
                } else {
                    self.interrupt(env);
                }
                0
            }
            Err(Abort::Crash) => {
                self.crash(env);
                0
            }
            Err(Abort::Error(message)) => {
                env.log(&self.name, format!("pass failed: {message}"));
                self.interrupt(env);
                0
            }
        }
    }

    /// Plans and applies until the plan is empty (at most `max_rounds` plans), with a full
    /// refresh each time: a daemon pass with nothing else going on. Returns whether it ended with
    /// an empty plan, and how many ops were applied.
    pub fn sync_until_idle(&mut self, env: &mut Env<'_>, max_rounds: usize) -> (bool, usize) {
        let mut applied = 0;
        self.pending.clear();
        for _ in 0..max_rounds {
            let plan = self.make_plan(env, Refresh::Full);
            if plan.ops.is_empty() {
                return (plan.blocked.is_empty(), applied);
            }
            let shown: Vec<String> = plan.ops.iter().map(show_op).collect();
            env.log(&self.name, format!("plan: {}", shown.join("; ")));
            self.pending = plan.ops.into();
            while !self.pending.is_empty() {
                applied += self.run_next(env);
            }
        }
        (false, applied)
    }

    /// Sends one `/ops` request, as `ApiClient::ops` plus the fault injector.
    fn send(&mut self, env: &mut Env<'_>, ops: &[Op]) -> Result<(Vec<OpResult>, Revision), Abort> {
        let fate = env.fate();
        let shown: Vec<String> = ops.iter().map(show_wire_op).collect();
        if fate == Fate::LostBefore {
            env.log(
                &self.name,
                format!("ops [{}] LOST before the server", shown.join("; ")),
            );
            return Err(Abort::Request);
        }
        let response = env.server.apply_ops(&self.name, ops, self.identity.known);
        let statuses: Vec<String> = response
            .results
            .iter()
            .map(|r| {
                if r.status == 200 {
                    "200".to_owned()
                } else {
                    format!("{} ({})", r.status, r.message)
                }
            })
            .collect();
        if fate == Fate::LostAfter {
            env.log(
                &self.name,
                format!(
                    "ops [{}] -> [{}] answer LOST",
                    shown.join("; "),
                    statuses.join(", ")
                ),
            );
            return Err(Abort::Request);
        }
        env.log(
            &self.name,
            format!("ops [{}] -> [{}]", shown.join("; "), statuses.join(", ")),
        );
        assert_eq!(response.results.len(), ops.len(), "one result per op");
        if !response.diverged {
            self.note_known(response.cursor, response.cursor_tag);
        }
        Ok((response.results, Revision(response.cursor.0)))
    }

    /// `Engine::send_ops`: every applied op's entries go into the remote tree, then `on_result`.
    fn send_ops(
        &mut self,
        env: &mut Env<'_>,
        ops: &[Op],
        mut on_result: impl FnMut(&mut Device, usize, &OpResult, Revision) -> Result<(), Abort>,
    ) -> Result<usize, Abort> {
        if ops.is_empty() {
            return Ok(0);
        }
        let (results, cursor) = self.send(env, ops)?;
        let mut applied = 0;
        for (idx, result) in results.iter().enumerate() {
            if result.status == 200 {
                if let Some(remote) = self.remote.as_mut() {
                    for entry in &result.entries {
                        remote.upsert(entry.clone());
                    }
                }
                on_result(self, idx, result, cursor)?;
                applied += 1;
            }
        }
        Ok(applied)
    }

    fn check_ancestors(&self, path: &RelPath) -> Result<(), Abort> {
        self.disk
            .check_ancestors(path)
            .map_err(|_| Abort::Error(format!("an ancestor of {path} is not a directory")))
    }

    fn execute_remote_ops(&mut self, env: &mut Env<'_>, run: Vec<PlanOp>) -> Result<usize, Abort> {
        let mut ops = Vec::new();
        for op in &run {
            ops.push(match op {
                PlanOp::DeleteRemote { path, rev } => Op::Delete {
                    path: path.clone(),
                    base: *rev,
                },
                PlanOp::MoveRemote { from, to, rev } => Op::Move {
                    from: from.clone(),
                    to: to.clone(),
                    base: *rev,
                },
                PlanOp::SetModeRemote {
                    path,
                    rev,
                    executable,
                    ..
                } => Op::SetMode {
                    path: path.clone(),
                    base: *rev,
                    executable: *executable,
                },
                PlanOp::MakeDirRemote { path } => {
                    self.check_ancestors(path)?;
                    let mtime_ms = self.disk.get(path).map_or(0, |n| n.mtime_ns / 1_000_000);
                    Op::MakeDir {
                        path: path.clone(),
                        mtime_ms,
                    }
                }
                _ => unreachable!("only remote ops are batched here"),
            });
        }
        self.send_ops(env, &ops, |device, idx, result, cursor| {
            match &run[idx] {
                PlanOp::DeleteRemote { path, .. } => {
                    if let Some(remote) = device.remote.as_mut() {
                        if let Some(node_id) = remote.by_path.get(path).map(|e| e.node_id) {
                            remote.delete(node_id, cursor);
                        }
                    }
                    device.base.remove(path);
                }
                PlanOp::MoveRemote { from, to, .. } => {
                    device.base_rebase(from, to);
                    device.refresh_base_revs(&result.entries);
                }
                PlanOp::SetModeRemote { path, node, .. } => {
                    if let Some(entry) = result.entries.iter().find(|e| &e.path == path) {
                        let node = BaseNode {
                            node_id: entry.node_id,
                            rev: entry.rev,
                            executable: entry.executable,
                            ..node.clone()
                        };
                        device.base.insert(path.clone(), node);
                    }
                }
                PlanOp::MakeDirRemote { path } => {
                    let (mtime_ns, inode, ctime_ns) = device
                        .disk
                        .get(path)
                        .map_or((0, 0, 0), |n| (n.mtime_ns, n.inode, n.ctime_ns));
                    if let Some(entry) = result.entries.iter().find(|e| &e.path == path) {
                        let node = BaseNode {
                            kind: EntryKind::Dir,
                            hash: None,
                            node_id: entry.node_id,
                            rev: entry.rev,
                            size: 0,
                            mtime_ns,
                            inode,
                            ctime_ns,
                            executable: false,
                        };
                        device.base.insert(path.clone(), node);
                    }
                }
                _ => {}
            }
            Ok(())
        })
    }

    /// `StateDb::rebase`: base entries at and below `from` move to `to`.
    fn base_rebase(&mut self, from: &RelPath, to: &RelPath) {
        let moved: Vec<(RelPath, RelPath)> = self
            .base
            .keys()
            .filter_map(|p| p.rebase(from, to).map(|new| (p.clone(), new)))
            .collect();
        for (old, new) in moved {
            if let Some(node) = self.base.remove(&old) {
                self.base.insert(new, node);
            }
        }
    }

    /// `Engine::refresh_base_revs`.
    fn refresh_base_revs(&mut self, entries: &[RemoteEntry]) {
        for entry in entries {
            if let Some(node) = self.base.get_mut(&entry.path) {
                if node.node_id == entry.node_id && node.rev != entry.rev {
                    node.rev = entry.rev;
                }
            }
        }
    }

    fn execute_uploads(&mut self, env: &mut Env<'_>, run: Vec<PlanOp>) -> Result<usize, Abort> {
        struct Prepared {
            path: RelPath,
            base: syncstore_proto::Precondition,
            bytes: Vec<u8>,
            hash: ContentHash,
            node: FsNode,
        }
        let mut prepared = Vec::new();
        for op in run {
            let PlanOp::Upload {
                path,
                base,
                hash,
                executable,
            } = op
            else {
                unreachable!("only uploads are batched here")
            };
            self.check_ancestors(&path)?;
            // `Engine::execute_uploads`: the file gets the planned bit before it is read.
            if let Some(node) = self.disk.nodes.get_mut(&path) {
                if node.kind == EntryKind::File {
                    node.executable = executable;
                }
            }
            match self.disk.get(&path) {
                Some(node) if node.kind == EntryKind::File => {
                    if hash_of(&node.bytes) != hash {
                        env.log(
                            &self.name,
                            format!("upload of {path} skipped: the file changed since the scan"),
                        );
                        continue;
                    }
                    prepared.push(Prepared {
                        path,
                        base,
                        bytes: node.bytes.clone(),
                        hash,
                        node: node.clone(),
                    });
                }
                _ => env.log(
                    &self.name,
                    format!("upload of {path} skipped: could not read the file"),
                ),
            }
        }
        if prepared.is_empty() {
            return Ok(0);
        }
        // The chunk pack: one request for all missing chunks.
        let fate = env.fate();
        if fate == Fate::LostBefore {
            env.log(&self.name, "chunk upload LOST".to_owned());
            return Err(Abort::Request);
        }
        for item in &prepared {
            for chunk in chunks_of(&item.bytes) {
                env.server.put_chunk(chunk.hash, item.bytes.clone());
            }
        }
        if fate == Fate::LostAfter {
            env.log(&self.name, "chunk upload stored, answer LOST".to_owned());
            return Err(Abort::Request);
        }
        // The user may write to a file between its read and its commit.
        self.concurrent_edit(env);
        let ops: Vec<Op> = prepared
            .iter()
            .map(|p| Op::PutFile {
                path: p.path.clone(),
                base: p.base,
                size: p.bytes.len() as u64,
                mtime_ms: p.node.mtime_ns / 1_000_000,
                hash: p.hash,
                chunks: chunks_of(&p.bytes),
                executable: p.node.executable,
            })
            .collect();
        self.send_ops(env, &ops, |device, idx, result, _| {
            let item = &prepared[idx];
            let Some(entry) = result.entries.iter().find(|e| e.path == item.path) else {
                return Err(Abort::Error(format!(
                    "server did not return the uploaded file {}",
                    item.path
                )));
            };
            let node = BaseNode {
                kind: EntryKind::File,
                hash: Some(item.hash),
                node_id: entry.node_id,
                rev: entry.rev,
                size: item.node.bytes.len() as u64,
                mtime_ns: item.node.mtime_ns,
                inode: item.node.inode,
                ctime_ns: item.node.ctime_ns,
                executable: entry.executable,
            };
            device.base.insert(item.path.clone(), node);
            Ok(())
        })
    }

    fn execute_downloads(&mut self, env: &mut Env<'_>, run: Vec<PlanOp>) -> Result<usize, Abort> {
        let mut jobs = Vec::new();
        for op in run {
            let PlanOp::Download {
                path,
                remote,
                expect_local,
                executable,
            } = op
            else {
                unreachable!("only downloads are batched here")
            };
            let Some(entry) = self
                .remote
                .as_ref()
                .and_then(|r| r.by_path.get(&path))
                .cloned()
            else {
                continue;
            };
            if entry.node_id != remote.node_id || entry.rev != remote.rev || entry.hash.is_none() {
                env.log(
                    &self.name,
                    format!("download of {path} skipped: the remote node changed since the plan"),
                );
                continue;
            }
            if self.disk.check_ancestors(&path).is_err() {
                env.log(
                    &self.name,
                    format!("download of {path} skipped: an ancestor is not a directory"),
                );
                continue;
            }
            jobs.push((path, entry, expect_local, executable));
        }
        if jobs.iter().any(|(_, entry, _, _)| !entry.chunks.is_empty()) {
            let fate = env.fate();
            if fate != Fate::Delivered {
                env.log(&self.name, "chunk download LOST".to_owned());
                return Err(Abort::Request);
            }
        }
        let mut applied = 0;
        for (path, entry, expect_local, executable) in jobs {
            self.concurrent_edit(env);
            match self.place_download(env, &path, &entry, expect_local, executable)? {
                Ok(true) => {
                    env.log(
                        &self.name,
                        format!(
                            "downloaded {path} = {}",
                            show_bytes(&env.server.file_bytes(&entry).unwrap_or_default())
                        ),
                    );
                    applied += 1;
                }
                Ok(false) => env.log(
                    &self.name,
                    format!("download of {path} not placed: the local path changed"),
                ),
                Err(message) => env.log(
                    &self.name,
                    format!("download of {path} not placed: {message}"),
                ),
            }
        }
        Ok(applied)
    }

    /// `Engine::place_download`. The outer `Err` is a crash injected between the rename and the
    /// base update; the inner one is an error the engine logs and retries.
    fn place_download(
        &mut self,
        env: &mut Env<'_>,
        path: &RelPath,
        entry: &RemoteEntry,
        expect_local: Option<ContentHash>,
        executable: bool,
    ) -> Result<Result<bool, String>, Abort> {
        let now = env.now_ns();
        if self.disk.check_ancestors(path).is_err() {
            return Ok(Err("an ancestor is not a directory".into()));
        }
        // `FolderId::on_root_fs`: a disk mounted there since the plan was made.
        if path
            .parent()
            .is_some_and(|parent| self.disk.on_other_fs(&parent))
        {
            return Ok(Ok(false));
        }
        if let Some(parent) = path.parent() {
            let reuse = self.rng.gen_bool(0.5);
            if let Err(err) = self.disk.create_dir_all(&parent, now, reuse) {
                return Ok(Err(format!("could not create {parent}: {err:?}")));
            }
        }
        // A 404: the engine's pass fails on it, and the next one finds the server changed.
        let Some(bytes) = env.server.file_bytes(entry) else {
            return Err(Abort::Error(format!("the server has no chunks for {path}")));
        };
        let hash = entry.hash.expect("downloads are files");
        assert_eq!(
            hash_of(&bytes),
            hash,
            "server chunks reassemble to the entry's hash"
        );
        // The temp file gets its inode before the old file's is freed.
        let reuse = self.rng.gen_bool(0.5);
        let inode = self.disk.alloc_inode(reuse);
        let temp = FsNode {
            kind: EntryKind::File,
            bytes,
            inode,
            mtime_ns: entry.mtime_ms.max(0) * 1_000_000,
            ctime_ns: now,
            executable,
        };
        match expect_local {
            None => match self.disk.place(path, temp, true, now) {
                Ok(()) => {}
                Err(FsError::AlreadyExists) => return Ok(Ok(false)),
                Err(err) => {
                    return Ok(Err(format!(
                        "could not move the download into place: {err:?}"
                    )))
                }
            },
            Some(expected) => {
                match self.local_file_has(path, expected) {
                    Ok(true) => {}
                    Ok(false) => return Ok(Ok(false)),
                    Err(message) => return Ok(Err(message)),
                }
                if let Err(err) = self.disk.place(path, temp, false, now) {
                    return Ok(Err(format!(
                        "could not move the download into place: {err:?}"
                    )));
                }
            }
        }
        if env.torn() {
            env.log(
                &self.name,
                format!("placed {path}, crashing before base is saved"),
            );
            return Err(Abort::Crash);
        }
        let placed = self.disk.get(path).expect("just placed");
        let node = BaseNode {
            kind: EntryKind::File,
            hash: Some(hash),
            node_id: entry.node_id,
            rev: entry.rev,
            size: placed.bytes.len() as u64,
            mtime_ns: placed.mtime_ns,
            inode: placed.inode,
            ctime_ns: placed.ctime_ns,
            executable: entry.executable,
        };
        self.base.insert(path.clone(), node);
        Ok(Ok(true))
    }

    /// `Engine::local_file_has`: whether the file at `path` holds `expected` (trusting base's
    /// stamp as the real engine does). `Err` when it cannot be read (a directory).
    fn local_file_has(&self, path: &RelPath, expected: ContentHash) -> Result<bool, String> {
        let Some(node) = self.disk.get(path) else {
            return Ok(false);
        };
        if let Some(base) = self.base.get(path) {
            if base.hash == Some(expected) && stamp_eq(base, node) {
                return Ok(true);
            }
        }
        if node.kind == EntryKind::Dir {
            return Err(format!("could not read {path}: is a directory"));
        }
        Ok(hash_of(&node.bytes) == expected)
    }

    fn execute_locals(&mut self, env: &mut Env<'_>, run: Vec<PlanOp>) -> Result<usize, Abort> {
        let mut cleared = self.clear_base_before_deletes(env, &run)?;
        let mut applied = 0;
        for op in run {
            if let PlanOp::DeleteLocal { path, .. } = &op {
                self.concurrent_edit(env);
                if self.delete_checked(env, path, cleared.remove(path)) {
                    env.log(&self.name, format!("did {}", show_op(&op)));
                    applied += 1;
                } else {
                    env.log(
                        &self.name,
                        format!("{} not applied (re-check failed)", show_op(&op)),
                    );
                }
                continue;
            }
            self.concurrent_edit(env);
            match self.execute_local(env, &op)? {
                Ok(true) => {
                    if !matches!(op, PlanOp::RecordBase { .. } | PlanOp::ForgetBase { .. }) {
                        env.log(&self.name, format!("did {}", show_op(&op)));
                    }
                    applied += 1;
                }
                Ok(false) => env.log(
                    &self.name,
                    format!("{} not applied (re-check failed)", show_op(&op)),
                ),
                Err(message) => env.log(&self.name, format!("{} failed: {message}", show_op(&op))),
            }
        }
        Ok(applied)
    }

    /// `Engine::clear_base_before_deletes`: for every `DeleteLocal` of the run whose file still
    /// holds what the plan expected, base forgets the path, and that is committed before any file
    /// of the run is deleted. Returns what each cleared file looked like when checked. The outer
    /// `Err` is an injected crash right after the commit.
    fn clear_base_before_deletes(
        &mut self,
        env: &mut Env<'_>,
        run: &[PlanOp],
    ) -> Result<BTreeMap<RelPath, SimStamp>, Abort> {
        let mut cleared = BTreeMap::new();
        for op in run {
            let PlanOp::DeleteLocal { path, expect_hash } = op else {
                continue;
            };
            if self.disk.check_ancestors(path).is_err() {
                continue;
            }
            let Some(node) = self.disk.get(path) else {
                self.base.remove(path);
                continue;
            };
            let stamp = stamp_of(node);
            if node.kind == EntryKind::File && self.local_file_has(path, *expect_hash) == Ok(true) {
                self.base.remove(path);
                cleared.insert(path.clone(), stamp);
            }
        }
        if !cleared.is_empty() {
            self.commit_base();
            if env.torn() {
                env.log(
                    &self.name,
                    "cleared base for local deletes, crashing before deleting".to_owned(),
                );
                return Err(Abort::Crash);
            }
        }
        Ok(cleared)
    }

    /// `Engine::execute_local` for `DeleteLocal`: deletes the file only if base was cleared for it
    /// and it still looks as it did when checked.
    fn delete_checked(
        &mut self,
        env: &mut Env<'_>,
        path: &RelPath,
        checked: Option<SimStamp>,
    ) -> bool {
        let Some(checked) = checked else { return false };
        match self.disk.get(path) {
            None => true,
            Some(node) if node.kind == EntryKind::File && stamp_of(node) == checked => {
                self.disk.remove_file(path, env.now_ns()).is_ok()
            }
            Some(_) => false,
        }
    }

    /// `Engine::execute_local`. The outer `Err` is an injected crash between the disk change and
    /// the base update.
    fn execute_local(
        &mut self,
        env: &mut Env<'_>,
        op: &PlanOp,
    ) -> Result<Result<bool, String>, Abort> {
        let now = env.now_ns();
        let ancestors_ok = |device: &Device, path: &RelPath| {
            device
                .disk
                .check_ancestors(path)
                .map_err(|_| format!("an ancestor of {path} is not a directory"))
        };
        match op {
            PlanOp::DeleteLocal { .. } => unreachable!("deletes are applied by execute_locals"),
            PlanOp::MakeDirLocal { path, remote } => {
                if let Err(message) = ancestors_ok(self, path) {
                    return Ok(Err(message));
                }
                if path
                    .parent()
                    .is_some_and(|parent| self.disk.on_other_fs(&parent))
                {
                    return Ok(Ok(false));
                }
                let reuse = self.rng.gen_bool(0.5);
                if let Err(err) = self.disk.create_dir_all(path, now, reuse) {
                    return Ok(Err(format!("could not create: {err:?}")));
                }
                if env.torn() {
                    env.log(
                        &self.name,
                        format!("created {path}, crashing before base is saved"),
                    );
                    return Err(Abort::Crash);
                }
                let dir = self.disk.get(path).expect("just created");
                let node = BaseNode {
                    kind: EntryKind::Dir,
                    hash: None,
                    node_id: remote.node_id,
                    rev: remote.rev,
                    size: 0,
                    mtime_ns: dir.mtime_ns,
                    inode: dir.inode,
                    ctime_ns: dir.ctime_ns,
                    executable: false,
                };
                self.base.insert(path.clone(), node);
                Ok(Ok(true))
            }
            PlanOp::RemoveDirLocal { path } => {
                if let Err(message) = ancestors_ok(self, path) {
                    return Ok(Err(message));
                }
                match self.disk.remove_dir(path, now) {
                    Ok(()) | Err(FsError::NotFound) => {}
                    Err(_) => return Ok(Ok(false)),
                }
                if env.torn() {
                    env.log(
                        &self.name,
                        format!("removed {path}, crashing before base is saved"),
                    );
                    return Err(Abort::Crash);
                }
                self.base.remove(path);
                Ok(Ok(true))
            }
            PlanOp::MoveLocal { from, to } => {
                if let Err(message) = ancestors_ok(self, from).and_then(|()| ancestors_ok(self, to))
                {
                    return Ok(Err(message));
                }
                if let Some(parent) = to.parent() {
                    let reuse = self.rng.gen_bool(0.5);
                    if let Err(err) = self.disk.create_dir_all(&parent, now, reuse) {
                        return Ok(Err(format!("could not create {parent}: {err:?}")));
                    }
                }
                match self.disk.rename(from, to, true, now) {
                    Ok(()) => {}
                    Err(FsError::AlreadyExists | FsError::NotFound) => return Ok(Ok(false)),
                    Err(err) => return Ok(Err(format!("could not move: {err:?}"))),
                }
                if env.torn() {
                    env.log(
                        &self.name,
                        format!("moved {from} -> {to}, crashing before base is saved"),
                    );
                    return Err(Abort::Crash);
                }
                self.base_rebase(from, to);
                let entries: Vec<RemoteEntry> = self
                    .remote
                    .as_ref()
                    .map(|r| {
                        r.by_path
                            .values()
                            .filter(|e| e.path == *to || e.path.is_inside(to))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                self.refresh_base_revs(&entries);
                Ok(Ok(true))
            }
            PlanOp::ConflictCopy { path, copy } => {
                if let Err(message) =
                    ancestors_ok(self, path).and_then(|()| ancestors_ok(self, copy))
                {
                    return Ok(Err(message));
                }
                match self.disk.rename(path, copy, true, now) {
                    Ok(()) => Ok(Ok(true)),
                    Err(FsError::AlreadyExists | FsError::NotFound) => Ok(Ok(false)),
                    Err(err) => Ok(Err(format!("could not rename: {err:?}"))),
                }
            }
            PlanOp::SetModeLocal {
                path,
                expect_hash,
                executable,
                node,
            } => {
                match self.local_file_has(path, *expect_hash) {
                    Ok(true) => {}
                    Ok(false) => return Ok(Ok(false)),
                    Err(message) => return Ok(Err(message)),
                }
                if let Some(file) = self.disk.nodes.get_mut(path) {
                    file.executable = *executable;
                }
                if env.torn() {
                    env.log(
                        &self.name,
                        format!("set the mode of {path}, crashing before base is saved"),
                    );
                    return Err(Abort::Crash);
                }
                self.base.insert(path.clone(), node.clone());
                Ok(Ok(true))
            }
            PlanOp::RecordBase { path, node } => {
                self.base.insert(path.clone(), node.clone());
                Ok(Ok(true))
            }
            PlanOp::ForgetBase { path } => {
                self.base.remove(path);
                Ok(Ok(true))
            }
            other => unreachable!("not a local op: {other:?}"),
        }
    }

    /// Sometimes, a user edit in the middle of a run (the daemon works while the user does).
    fn concurrent_edit(&mut self, env: &mut Env<'_>) {
        if !env.concurrent_edits || !self.rng.gen_bool(0.08) {
            return;
        }
        // A millisecond passes, so no two writes share an mtime.
        env.now_ms += 1;
        if let Some(edit) = self.user_edit(env.now_ms, &mut env.ledger.counter) {
            let line = format!("#{} {} {} (during the run)", env.step, self.name, edit.text);
            env.ledger.record(&line, edit);
            env.trace.push(line);
        }
    }

    /// A random user edit, or `None` when the chosen edit does not apply to this disk.
    ///
    /// Users never empty the whole folder: an empty root while base holds files looks like an
    /// unmounted disk, so the planner deletes nothing on its account (row 29) and the deletions
    /// would stay blocked for ever.
    pub fn user_edit(&mut self, now_ms: i64, counter: &mut u64) -> Option<Edit> {
        let now = now_ms * 1_000_000;
        if self.disk.root_mounted() {
            // A disk mounted over the folder: an application may drop a file into it. Its
            // bytes go with that disk, so the ledger does not count them.
            *counter += 1;
            let path = RelPath::new(&format!("stray-{counter}")).expect("valid");
            let bytes = format!("{}#{counter} on the mounted disk", self.name).into_bytes();
            let _ = self.disk.write(&path, bytes, now, false);
            return Some(Edit {
                text: format!("user drops {path} onto the disk mounted over the folder"),
                killed: Vec::new(),
                written: None,
            });
        }
        // The user works around filesystems mounted over subfolders, never in or over them.
        let free =
            |disk: &SimFs, path: &RelPath| !disk.on_other_fs(path) && !disk.holds_mount(path);
        let files: Vec<RelPath> = self
            .disk
            .nodes
            .iter()
            .filter(|(p, n)| n.kind == EntryKind::File && free(&self.disk, p))
            .map(|(p, _)| p.clone())
            .collect();
        let dirs: Vec<RelPath> = self
            .disk
            .nodes
            .iter()
            .filter(|(p, n)| n.kind == EntryKind::Dir && free(&self.disk, p))
            .map(|(p, _)| p.clone())
            .collect();
        let mut content = |name: &DeviceName| {
            *counter += 1;
            format!("{name}#{counter}").into_bytes()
        };
        match self.rng.gen_range(0..11) {
            // Write a file: modify an existing one or create one (with its parents).
            0..=3 => {
                let path = if !files.is_empty() && self.rng.gen_bool(0.5) {
                    files.choose(&mut self.rng).expect("not empty").clone()
                } else {
                    random_path(&mut self.rng)
                };
                if !free(&self.disk, &path)
                    || self.disk.check_ancestors(&path).is_err()
                    || self
                        .disk
                        .get(&path)
                        .is_some_and(|n| n.kind == EntryKind::Dir)
                {
                    return None;
                }
                let bytes = content(&self.name);
                let reuse = self.rng.gen_bool(0.5);
                let killed: Vec<Vec<u8>> = self
                    .disk
                    .get(&path)
                    .map(|n| n.bytes.clone())
                    .into_iter()
                    .collect();
                let how = if killed.is_empty() {
                    if let Some(parent) = path.parent() {
                        self.disk
                            .create_dir_all(&parent, now, reuse)
                            .expect("ancestors checked");
                    }
                    self.disk
                        .write(&path, bytes.clone(), now, reuse)
                        .expect("parent exists");
                    "create"
                } else if self.rng.gen_bool(0.3) {
                    // An editor's atomic save: a temp file renamed over the old one (new inode).
                    let inode = self.disk.alloc_inode(reuse);
                    // Editors give the new file the old one's mode.
                    let executable = self.disk.get(&path).is_some_and(|n| n.executable);
                    let node = FsNode {
                        kind: EntryKind::File,
                        bytes: bytes.clone(),
                        inode,
                        mtime_ns: now,
                        ctime_ns: now,
                        executable,
                    };
                    self.disk
                        .place(&path, node, false, now)
                        .expect("a file replaces a file");
                    "save-as"
                } else if self.rng.gen_bool(0.25) {
                    // `rsync --inplace -t`, a database or a VM image: the bytes change in place,
                    // the size stays where it can, and the mtime is put back (THREE-TREE row
                    // 38). Only the ctime tells.
                    let old_len = killed[0].len();
                    let mut same_size = bytes.clone();
                    if same_size.len() < old_len {
                        same_size.resize(old_len, b'_');
                    }
                    self.disk
                        .write_keeping_mtime(&path, same_size.clone(), now)
                        .expect("a file is rewritten");
                    return Some(Edit {
                        text: format!(
                            "user write-in-place-keeping-mtime {path} = {} (was {})",
                            show_bytes(&same_size),
                            show_bytes(&killed[0])
                        ),
                        killed,
                        written: Some(same_size),
                    });
                } else {
                    self.disk
                        .write(&path, bytes.clone(), now, reuse)
                        .expect("a file is rewritten");
                    "write"
                };
                let killed_text = killed
                    .iter()
                    .map(|b| show_bytes(b))
                    .collect::<Vec<_>>()
                    .join("");
                let text = format!(
                    "user {how} {path} = {}{}",
                    show_bytes(&bytes),
                    if killed.is_empty() {
                        String::new()
                    } else {
                        format!(" (was {killed_text})")
                    }
                );
                Some(Edit {
                    text,
                    killed,
                    written: Some(bytes),
                })
            }
            // Delete a file.
            4 => {
                let path = files.choose(&mut self.rng)?.clone();
                if self.disk.nodes.len() == 1 {
                    return None;
                }
                let node = self.disk.get(&path).expect("listed").clone();
                self.disk.remove_file(&path, now).expect("a file");
                Some(Edit {
                    text: format!("user rm {path} (was {})", show_bytes(&node.bytes)),
                    killed: vec![node.bytes],
                    written: None,
                })
            }
            // Make a directory (with its parents).
            5 => {
                let path = random_path(&mut self.rng);
                if !free(&self.disk, &path)
                    || self.disk.get(&path).is_some()
                    || self.disk.check_ancestors(&path).is_err()
                {
                    return None;
                }
                let reuse = self.rng.gen_bool(0.5);
                self.disk
                    .create_dir_all(&path, now, reuse)
                    .expect("ancestors checked");
                Some(Edit {
                    text: format!("user mkdir -p {path}"),
                    killed: Vec::new(),
                    written: None,
                })
            }
            // Remove a directory and everything beneath.
            6 => {
                let path = dirs.choose(&mut self.rng)?.clone();
                if self
                    .disk
                    .nodes
                    .keys()
                    .all(|p| *p == path || p.is_inside(&path))
                {
                    return None;
                }
                let files = self.disk.remove_all(&path, now);
                let killed: Vec<Vec<u8>> = files.into_iter().map(|n| n.bytes).collect();
                let shown: Vec<String> = killed.iter().map(|b| show_bytes(b)).collect();
                Some(Edit {
                    text: format!("user rm -r {path} (held {})", shown.join(" ")),
                    killed,
                    written: None,
                })
            }
            // chmod +x or -x of a file: a mode-only change (size, mtime and inode stay).
            10 => {
                let path = files.choose(&mut self.rng)?.clone();
                let node = self.disk.nodes.get_mut(&path).expect("listed");
                node.executable = !node.executable;
                let sign = if node.executable { '+' } else { '-' };
                Some(Edit {
                    text: format!("user chmod {sign}x {path}"),
                    killed: Vec::new(),
                    written: None,
                })
            }
            // Rename a file or a directory, possibly over a file.
            _ => {
                let all: Vec<RelPath> = self
                    .disk
                    .nodes
                    .keys()
                    .filter(|p| free(&self.disk, p))
                    .cloned()
                    .collect();
                let from = all.choose(&mut self.rng)?.clone();
                let to = if self.rng.gen_bool(0.3) {
                    // A sibling name: a rename in place.
                    let name = NAMES.choose(&mut self.rng).expect("not empty");
                    match from.parent() {
                        Some(parent) => parent.join(name).expect("valid"),
                        None => RelPath::new(name).expect("valid"),
                    }
                } else {
                    random_path(&mut self.rng)
                };
                if to == from
                    || to.is_inside(&from)
                    || !free(&self.disk, &to)
                    || self.disk.check_ancestors(&to).is_err()
                {
                    return None;
                }
                let from_kind = self.disk.get(&from).expect("listed").kind;
                let killed: Vec<Vec<u8>> = match self.disk.get(&to) {
                    None => Vec::new(),
                    Some(target)
                        if target.kind == EntryKind::File && from_kind == EntryKind::File =>
                    {
                        vec![target.bytes.clone()]
                    }
                    Some(_) => return None,
                };
                if let Some(parent) = to.parent() {
                    if from == parent || parent.is_inside(&from) {
                        return None;
                    }
                    let reuse = self.rng.gen_bool(0.5);
                    self.disk
                        .create_dir_all(&parent, now, reuse)
                        .expect("ancestors checked");
                }
                self.disk
                    .rename(&from, &to, false, now)
                    .expect("checked above");
                let over = if killed.is_empty() {
                    String::new()
                } else {
                    format!(" (over {})", show_bytes(&killed[0]))
                };
                Some(Edit {
                    text: format!("user mv {from} {to}{over}"),
                    killed,
                    written: None,
                })
            }
        }
    }
}

/// Names paths are made of: few, so devices collide on them, and shared by files and directories,
/// so a file and a directory contend for one name.
const NAMES: &[&str] = &["a", "b", "c.txt"];

fn random_path(rng: &mut StdRng) -> RelPath {
    let depth = match rng.gen_range(0..10) {
        0..=3 => 1,
        4..=7 => 2,
        _ => 3,
    };
    let parts: Vec<&str> = (0..depth)
        .map(|_| *NAMES.choose(rng).expect("not empty"))
        .collect();
    RelPath::new(&parts.join("/")).expect("valid")
}

fn show_wire_op(op: &Op) -> String {
    match op {
        Op::PutFile { path, base, .. } => format!("PutFile {path} {base:?}"),
        Op::SetMode {
            path,
            base,
            executable,
        } => format!("SetMode {path}@{base} x={executable}"),
        Op::MakeDir { path, .. } => format!("MakeDir {path}"),
        Op::Delete { path, base } => format!("Delete {path}@{base}"),
        Op::Move { from, to, base } => format!("Move {from}@{base} -> {to}"),
    }
}
