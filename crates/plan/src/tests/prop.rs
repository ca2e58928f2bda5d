//! Property tests (Dropbox's CanopyCheck, in small): from random base, local and remote trees,
//! plan, apply the plan faithfully ([`World::apply`]), and repeat. Then:
//!
//! 1. planning converges (an empty plan: planning again at the fixed point yields nothing)
//!    within [`MAX_ROUNDS`] rounds, and every op applied;
//! 2. local and remote hold the same paths, kinds and hashes, and base agrees with both;
//! 3. no content that a side created or changed since base was lost: it is still somewhere
//!    (content base held for that path or node may go: that is what deleting, or overwriting,
//!    an unchanged file is);
//! 4. at each fixed point, the local files a lock covers are exactly the read-only ones, both
//!    in the client's set and on disk, whatever the set held at the start; so once the locks
//!    lift, no file stays read-only. Untouchable paths are left out, and so are the files that
//!    started beneath one: a protected file the user moved there was out of the planner's
//!    sight, and stays read-only (see the crate docs).
//!
//! 5. with the mass-delete interlock on, no plan deletes locally, for remote deletes, more
//!    files than the limit allows, nor any while a hold is in force; a plan that holds is the
//!    plan without the interlock less exactly those deletions (and the read-only upkeep that
//!    follows from them); one that does not hold is the plan without it. (Properties 1 to 4
//!    run with the interlock off: a hold never lifted by the user never converges.)
//!
//! The first plan may also lose an answer: the client applies its ops up to one that writes to
//! the server, the server applies that one too, but its answer never comes back, so base misses
//! that op's update (or, after a crash, every update of the plan) and the pass ends there. The
//! properties must hold for every such base.

use super::fixture::{hash, hash_name, render};
use super::sim::{rebase, Limits, World};
use crate::{
    BaseNode, BlockReason, ContentHash, DeviceName, EntryKind, LocalNode, MassDeleteLimit,
    MassDeleteRule, Plan, PlanOp, RelPath, RemoteNode,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// Three top-level names, each with two possible children: small enough to collide often.
const SLOTS: [&str; 9] = ["a", "a/x", "a/y", "b", "b/x", "b/y", "c", "c/x", "c/y"];
const MAX_ROUNDS: usize = 8;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Slot {
    Absent,
    /// A file holding one of four contents, so equal content turns up on different paths.
    File(u8),
    Dir,
}

fn slot() -> impl Strategy<Value = Slot> {
    prop_oneof![2 => Just(Slot::Absent), 4 => (1u8..=4).prop_map(Slot::File), 2 => Just(Slot::Dir)]
}

#[derive(Clone, Debug)]
struct Case {
    base: Vec<Slot>,
    /// Per slot: keep base's state (`true`), or take the given one.
    local: Vec<(bool, Slot)>,
    remote: Vec<(bool, Slot)>,
    /// A rename applied after the edits: (from slot, to slot).
    local_rename: Option<(usize, usize)>,
    remote_rename: Option<(usize, usize)>,
    /// A renamed file also gets this content.
    rename_edit: Option<u8>,
    /// This remote slot, if it is unchanged, is replaced by a new node with the same content.
    remote_replace: Option<usize>,
    /// The first phase: a slot locked by another device, an ignored slot, a partial listing.
    locked: Option<usize>,
    ignored: Option<usize>,
    remote_complete: bool,
    /// The first plan loses the answer to its op at this index, if that op writes to the
    /// server; with `true`, a crash also rolls base back to before the plan.
    lost_answer: Option<(usize, bool)>,
    /// Executable bits of files: bit `3 * slot` for base, `+ 1` local, `+ 2` remote.
    modes: u32,
    /// Bit `slot`: the slot's path starts in the set of paths made read-only for locks,
    /// whatever it holds (so the set may be stale, and name directories or nothing).
    read_only: u16,
}

fn case() -> impl Strategy<Value = Case> {
    let side = || prop::collection::vec((prop::bool::weighted(0.6), slot()), SLOTS.len());
    let rename = || prop::option::weighted(0.4, (0..SLOTS.len(), 0..SLOTS.len()));
    let some_slot = |p| prop::option::weighted(p, 0..SLOTS.len());
    let trees = (
        prop::collection::vec(slot(), SLOTS.len()),
        side(),
        side(),
        rename(),
        rename(),
    );
    let extras = (
        prop::option::weighted(0.3, 1u8..=4),
        some_slot(0.2),
        some_slot(0.3),
        some_slot(0.2),
        prop::bool::weighted(0.7),
        prop::option::weighted(0.3, (0..6usize, prop::bool::ANY)),
        prop::num::u32::ANY,
        prop::num::u16::ANY,
    );
    (trees, extras).prop_map(
        |(
            (base, local, remote, local_rename, remote_rename),
            (
                rename_edit,
                remote_replace,
                locked,
                ignored,
                remote_complete,
                lost_answer,
                modes,
                read_only,
            ),
        )| Case {
            base,
            local,
            remote,
            local_rename,
            remote_rename,
            rename_edit,
            remote_replace,
            locked,
            ignored,
            remote_complete,
            lost_answer,
            modes,
            read_only,
        },
    )
}

/// Drops children whose top-level slot is not a directory.
fn normalize(slots: &[Slot]) -> Vec<Slot> {
    let mut out = slots.to_vec();
    for top in [0, 3, 6] {
        if out[top] != Slot::Dir {
            out[top + 1] = Slot::Absent;
            out[top + 2] = Slot::Absent;
        }
    }
    out
}

fn slot_path(idx: usize) -> RelPath {
    RelPath::new(SLOTS[idx]).unwrap()
}

fn content(n: u8) -> ContentHash {
    hash(&format!("h{n}"))
}

/// Kind, hash and size of the entry in `slot`, if any.
fn slot_entry(slot: Slot) -> Option<(EntryKind, Option<ContentHash>, u64)> {
    match slot {
        Slot::Absent => None,
        Slot::File(n) => Some((EntryKind::File, Some(content(n)), u64::from(n))),
        Slot::Dir => Some((EntryKind::Dir, None, 0)),
    }
}

fn build(case: &Case) -> World {
    let mut world = World {
        next_inode: 1000,
        ..World::default()
    };
    let base = normalize(&case.base);
    for (idx, slot) in base.iter().enumerate() {
        let Some((kind, hash, size)) = slot_entry(*slot) else {
            continue;
        };
        let node = BaseNode {
            kind,
            hash,
            node_id: world.fresh_id(),
            rev: world.fresh_rev(),
            size,
            mtime_ns: 0,
            inode: world.fresh_inode(),
            ctime_ns: 0,
            executable: kind == EntryKind::File && case.modes & (1 << (3 * idx)) != 0,
        };
        world.base.insert(slot_path(idx), node);
    }
    let pick = |side: &[(bool, Slot)]| {
        normalize(
            &side
                .iter()
                .zip(&base)
                .map(|(&(keep, own), &b)| if keep { b } else { own })
                .collect::<Vec<_>>(),
        )
    };

    for (idx, slot) in pick(&case.local).into_iter().enumerate() {
        let Some((kind, hash, size)) = slot_entry(slot) else {
            continue;
        };
        let path = slot_path(idx);
        // Edited in place keeps the inode; a new entry gets a new one.
        let inode = match world.base.get(&path) {
            Some(b) if b.kind == kind => b.inode,
            _ => world.fresh_inode(),
        };
        world.local.insert(
            path,
            LocalNode {
                kind,
                hash,
                size,
                mtime_ns: 0,
                inode,
                ctime_ns: 0,
                executable: kind == EntryKind::File && case.modes & (1 << (3 * idx + 1)) != 0,
            },
        );
    }

    for (idx, slot) in pick(&case.remote).into_iter().enumerate() {
        let Some((kind, hash, size)) = slot_entry(slot) else {
            continue;
        };
        let path = slot_path(idx);
        let executable = kind == EntryKind::File && case.modes & (1 << (3 * idx + 2)) != 0;
        let (node_id, rev) = match world
            .base
            .get(&path)
            .map(|b| (b.kind, b.hash, b.node_id, b.rev, b.executable))
        {
            Some((k, h, id, rev, x)) if k == kind && h == hash && x == executable => (id, rev),
            Some((k, _, id, _, _)) if k == kind => (id, world.fresh_rev()),
            _ => (world.fresh_id(), world.fresh_rev()),
        };
        world.remote.insert(
            path,
            RemoteNode {
                node_id,
                kind,
                rev,
                hash,
                size,
                mtime_ms: 0,
                executable,
                device: DeviceName::new("phone").unwrap(),
            },
        );
    }

    // The client made these read-only once, before the renames below (which take the mode
    // along); a file there is read-only on disk. An entry without a file names an inode gone.
    for idx in (0..SLOTS.len()).filter(|idx| case.read_only & (1 << idx) != 0) {
        let path = slot_path(idx);
        let inode = match world.local.get(&path) {
            Some(local) if local.kind == EntryKind::File => local.inode,
            _ => world.fresh_inode(),
        };
        world.protected.insert(inode);
        world.read_only.insert(path, inode);
    }

    let can_move = |tree: &BTreeMap<RelPath, EntryKind>, from: &RelPath, to: &RelPath| {
        tree.contains_key(from)
            && !tree.contains_key(to)
            && from != to
            && !to.is_inside(from)
            && to
                .parent()
                .is_none_or(|p| tree.get(&p) == Some(&EntryKind::Dir))
    };
    if let Some((from, to)) = case.local_rename.map(|(f, t)| (slot_path(f), slot_path(t))) {
        let kinds = world
            .local
            .iter()
            .map(|(p, n)| (p.clone(), n.kind))
            .collect();
        if can_move(&kinds, &from, &to) {
            rebase(&mut world.local, &from, &to);
            match (world.local.get_mut(&to), case.rename_edit) {
                (Some(moved), Some(n)) if moved.kind == EntryKind::File => {
                    moved.hash = Some(content(n))
                }
                _ => {}
            }
        }
    }
    if let Some((from, to)) = case
        .remote_rename
        .map(|(f, t)| (slot_path(f), slot_path(t)))
    {
        let kinds = world
            .remote
            .iter()
            .map(|(p, n)| (p.clone(), n.kind))
            .collect();
        if can_move(&kinds, &from, &to) {
            rebase(&mut world.remote, &from, &to);
            let rev = world.fresh_rev();
            if let Some(moved) = world.remote.get_mut(&to) {
                moved.rev = rev;
            }
        }
    }
    if let Some(path) = case.remote_replace.map(slot_path) {
        let unchanged = world
            .remote
            .get(&path)
            .zip(world.base.get(&path))
            .is_some_and(|(r, b)| r.node_id == b.node_id);
        if unchanged {
            let (node_id, rev) = (world.fresh_id(), world.fresh_rev());
            let replaced = world.remote.get_mut(&path).unwrap();
            replaced.node_id = node_id;
            replaced.rev = rev;
        }
    }
    // A file no side touches, so the local root never looks unmounted (row 29).
    let anchor = RelPath::new("z").unwrap();
    let (node_id, rev, inode) = (world.fresh_id(), world.fresh_rev(), world.fresh_inode());
    let hash = Some(content(9));
    world.base.insert(
        anchor.clone(),
        BaseNode {
            kind: EntryKind::File,
            hash,
            node_id,
            rev,
            size: 9,
            mtime_ns: 0,
            inode,
            ctime_ns: 0,
            executable: false,
        },
    );
    world.local.insert(
        anchor.clone(),
        LocalNode {
            kind: EntryKind::File,
            hash,
            size: 9,
            mtime_ns: 0,
            inode,
            ctime_ns: 0,
            executable: false,
        },
    );
    world.remote.insert(
        anchor,
        RemoteNode {
            node_id,
            kind: EntryKind::File,
            rev,
            hash,
            size: 9,
            mtime_ms: 0,
            executable: false,
            device: DeviceName::new("phone").unwrap(),
        },
    );
    world
}

/// The trees in the fixture's text form, for failure messages.
fn describe(world: &World) -> String {
    let x = |executable: bool| if executable { " x" } else { "" };
    let line =
        |path: &RelPath, kind: EntryKind, hash: Option<ContentHash>, extra: String| match kind {
            EntryKind::File => format!(
                "  {path} file {} {extra}\n",
                hash.as_ref().map_or("-".to_owned(), hash_name)
            ),
            EntryKind::Dir => format!("  {path} dir {extra}\n"),
        };
    let mut out = String::from("base:\n");
    for (p, n) in &world.base {
        out += &line(
            p,
            n.kind,
            n.hash,
            format!(
                "id={} rev={} ino={}{}",
                n.node_id,
                n.rev,
                n.inode,
                x(n.executable)
            ),
        );
    }
    out += "local:\n";
    for (p, n) in &world.local {
        out += &line(
            p,
            n.kind,
            n.hash,
            format!("ino={}{}", n.inode, x(n.executable)),
        );
    }
    if !world.read_only.is_empty() {
        out += "read-only for locks:\n";
        for (path, inode) in &world.read_only {
            out += &format!("  {path} ino={inode}\n");
        }
    }
    if !world.protected.is_empty() {
        out += &format!("read-only inodes: {:?}\n", world.protected);
    }
    out += "remote:\n";
    for (p, n) in &world.remote {
        let extra = format!("id={} rev={}{}", n.node_id, n.rev, x(n.executable));
        out += &line(p, n.kind, n.hash, extra);
    }
    out
}

type View = BTreeMap<RelPath, (EntryKind, Option<ContentHash>, bool)>;

/// Plans and applies until the plan has no ops; checks every op against `limits`.
fn settle(
    world: &mut World,
    limits: &Limits,
    phase: &str,
    log: &mut String,
    mut lost_answer: Option<(usize, bool)>,
    unseen: &BTreeSet<u64>,
) -> Result<(), TestCaseError> {
    for round in 0..MAX_ROUNDS {
        let base_before_plan = world.base.clone();
        let plan = world.plan_with(limits);
        let _ = write!(log, "{phase} round {round}:\n{}", render(&plan));
        if limits.locked_by_others.is_empty() {
            prop_assert!(
                plan.blocked.is_empty(),
                "nothing is locked, yet blocked\n{}",
                log
            );
        }
        if plan.ops.is_empty() {
            return check_read_only(world, limits, log, unseen);
        }
        for (op_idx, op) in plan.ops.iter().enumerate() {
            check_limits(op, limits)
                .map_err(|err| TestCaseError::fail(format!("{op:?}: {err}\n{log}")))?;
            let base_before_op = world.base.clone();
            world.apply(op).map_err(|err| {
                TestCaseError::fail(format!(
                    "{op:?} failed: {err}\n{log}trees now:\n{}",
                    describe(world)
                ))
            })?;
            let writes_remotely = matches!(
                op,
                PlanOp::Upload { .. }
                    | PlanOp::SetModeRemote { .. }
                    | PlanOp::DeleteRemote { .. }
                    | PlanOp::MakeDirRemote { .. }
                    | PlanOp::MoveRemote { .. }
            );
            match lost_answer {
                Some((lost_idx, crash)) if lost_idx == op_idx && writes_remotely => {
                    world.base = if crash {
                        base_before_plan
                    } else {
                        base_before_op
                    };
                    let _ = writeln!(log, "  answer lost at op {op_idx} (crash: {crash})");
                    break;
                }
                _ => {}
            }
        }
        lost_answer = None;
    }
    Err(TestCaseError::fail(format!(
        "no fixed point after {MAX_ROUNDS} rounds\n{log}trees now:\n{}",
        describe(world)
    )))
}

/// Property 4 at a fixed point. `unseen`: the inodes of the files that started beneath an
/// untouchable path.
fn check_read_only(
    world: &World,
    limits: &Limits,
    log: &str,
    unseen: &BTreeSet<u64>,
) -> Result<(), TestCaseError> {
    let ignored = |path: &RelPath| under(limits.ignored.iter(), path);
    // The local files a lock covers, by path and inode.
    let locked: BTreeMap<&RelPath, u64> = world
        .local
        .iter()
        .filter(|(path, node)| {
            node.kind == EntryKind::File
                && under(limits.locked_by_others.keys(), path)
                && !ignored(path)
        })
        .map(|(path, node)| (path, node.inode))
        .collect();
    let in_set: BTreeMap<&RelPath, u64> = world
        .read_only
        .iter()
        .filter(|(path, _)| !ignored(path))
        .map(|(path, &inode)| (path, inode))
        .collect();
    prop_assert_eq!(
        &in_set,
        &locked,
        "the read-only set is not the locked local files at the fixed point\n{}",
        log
    );
    let read_only_on_disk: BTreeSet<&RelPath> = world
        .local
        .iter()
        .filter(|(path, node)| {
            world.protected.contains(&node.inode) && !ignored(path) && !unseen.contains(&node.inode)
        })
        .map(|(path, _)| path)
        .collect();
    let locked: BTreeSet<&RelPath> = locked
        .iter()
        .filter(|(_, inode)| !unseen.contains(inode))
        .map(|(&path, _)| path)
        .collect();
    prop_assert_eq!(
        &read_only_on_disk,
        &locked,
        "the read-only files are not the locked local files at the fixed point\n{}",
        log
    );
    Ok(())
}

/// Whether `path` is one of `tops` or lies beneath one.
fn under<'p>(mut tops: impl Iterator<Item = &'p RelPath>, path: &RelPath) -> bool {
    tops.any(|top| path == top || path.is_inside(top))
}

/// Rows 25, 27 and 30 as properties of single ops, and read-only changes only under locks.
fn check_limits(op: &PlanOp, limits: &Limits) -> Result<(), String> {
    let (paths, sends): (Vec<&RelPath>, bool) = match op {
        PlanOp::Upload { path, .. }
        | PlanOp::SetModeRemote { path, .. }
        | PlanOp::DeleteRemote { path, .. }
        | PlanOp::MakeDirRemote { path } => (vec![path], true),
        PlanOp::MoveRemote { from, to, .. } => (vec![from, to], true),
        PlanOp::ConflictCopy { path, copy } => (vec![path, copy], true),
        PlanOp::MoveLocal { from, to } => (vec![from, to], false),
        PlanOp::Download { path, .. }
        | PlanOp::DeleteLocal { path, .. }
        | PlanOp::MakeDirLocal { path, .. }
        | PlanOp::RemoveDirLocal { path }
        | PlanOp::SetModeLocal { path, .. }
        | PlanOp::RecordBase { path, .. }
        | PlanOp::ForgetBase { path } => (vec![path], false),
        // Only the file given is touched; `path` may name an untouchable entry of the set whose
        // file the user moved out from under it.
        PlanOp::UnprotectLocal { file, .. } => (file.iter().collect(), false),
        PlanOp::ProtectLocal { path } => {
            if !under(limits.locked_by_others.keys(), path) {
                return Err(format!("protects {path}, which no lock covers"));
            }
            (vec![path], false)
        }
    };
    for path in paths {
        if under(limits.ignored.iter(), path) {
            return Err(format!("plans ignored path {path}"));
        }
        if sends && under(limits.locked_by_others.keys(), path) {
            return Err(format!("sends a local change to locked path {path}"));
        }
    }
    let trusts_listing = matches!(
        op,
        PlanOp::DeleteLocal { .. }
            | PlanOp::RemoveDirLocal { .. }
            | PlanOp::MoveLocal { .. }
            | PlanOp::ForgetBase { .. }
    );
    if !limits.remote_complete && trusts_listing {
        return Err("deletes or moves locally on a partial listing".into());
    }
    Ok(())
}

fn run(case: &Case) -> Result<(), TestCaseError> {
    let mut world = build(case);
    let initial = world.clone();
    let mut log = format!("initial trees:\n{}", describe(&initial));

    // Phase 1: with a lock, an ignored path and maybe a partial listing, the plan still settles,
    // and every op respects them. Phase 2: they lift, and everything converges.
    let mut limits = Limits {
        remote_complete: case.remote_complete,
        ..Limits::default()
    };
    if let Some(idx) = case.locked {
        limits
            .locked_by_others
            .insert(slot_path(idx), DeviceName::new("phone").unwrap());
    }
    limits.ignored.extend(case.ignored.map(slot_path));
    let unseen: BTreeSet<u64> = world
        .local
        .iter()
        .filter(|(path, _)| under(limits.ignored.iter(), path))
        .map(|(_, node)| node.inode)
        .collect();
    settle(
        &mut world,
        &limits,
        "limited",
        &mut log,
        case.lost_answer,
        &unseen,
    )?;
    settle(
        &mut world,
        &Limits::default(),
        "free",
        &mut log,
        None,
        &unseen,
    )?;

    let local: View = world
        .local
        .iter()
        .map(|(p, n)| (p.clone(), (n.kind, n.hash, n.executable)))
        .collect();
    let remote: View = world
        .remote
        .iter()
        .map(|(p, n)| (p.clone(), (n.kind, n.hash, n.executable)))
        .collect();
    let base: View = world
        .base
        .iter()
        .map(|(p, n)| (p.clone(), (n.kind, n.hash, n.executable)))
        .collect();
    prop_assert_eq!(
        &local,
        &remote,
        "local and remote differ at the fixed point\n{}",
        log
    );
    prop_assert_eq!(&base, &remote, "base differs at the fixed point\n{}", log);
    for (path, node) in &world.base {
        prop_assert_eq!(
            Some(node.node_id),
            world.remote.get(path).map(|r| r.node_id),
            "base names another node at {}\n{}",
            path,
            log
        );
    }

    // Content is new unless base held it at the same path or for the same node (the same inode
    // locally, the same node id remotely): a renamed file is not new content.
    let kept: BTreeSet<ContentHash> = world.local.values().filter_map(|n| n.hash).collect();
    let in_base = |path: &RelPath, hash: ContentHash, same_node: &dyn Fn(&BaseNode) -> bool| {
        initial.base.get(path).and_then(|b| b.hash) == Some(hash)
            || initial
                .base
                .values()
                .any(|b| same_node(b) && b.hash == Some(hash))
    };
    for (path, node) in &initial.local {
        let Some(hash) = node.hash else { continue };
        if !in_base(path, hash, &|b| b.inode == node.inode) {
            prop_assert!(
                kept.contains(&hash),
                "content {} created or changed at {} was lost\n{}",
                hash_name(&hash),
                path,
                log
            );
        }
    }
    for (path, node) in &initial.remote {
        let Some(hash) = node.hash else { continue };
        if !in_base(path, hash, &|b| b.node_id == node.node_id) {
            prop_assert!(
                kept.contains(&hash),
                "content {} created or changed at {} was lost\n{}",
                hash_name(&hash),
                path,
                log
            );
        }
    }

    // Content both sides held at the start, which neither side removed from a node that held
    // it in base (a delete, an edit), must still be somewhere: the sides disagree at most on
    // where it lives (a rename). Through a stale base (a lost answer) it could otherwise look
    // deleted on each side.
    let killed_locally = |hash: ContentHash| {
        initial.base.values().any(|b| {
            b.hash == Some(hash)
                && !initial
                    .local
                    .values()
                    .any(|l| l.inode == b.inode && l.hash == Some(hash))
        })
    };
    let killed_remotely = |hash: ContentHash| {
        initial.base.values().any(|b| {
            b.hash == Some(hash)
                && !initial
                    .remote
                    .values()
                    .any(|r| r.node_id == b.node_id && r.hash == Some(hash))
        })
    };
    let initial_remote: BTreeSet<ContentHash> =
        initial.remote.values().filter_map(|n| n.hash).collect();
    for hash in initial.local.values().filter_map(|n| n.hash) {
        if initial_remote.contains(&hash) && !killed_locally(hash) && !killed_remotely(hash) {
            prop_assert!(
                kept.contains(&hash),
                "content {} held on both sides was lost\n{}",
                hash_name(&hash),
                log
            );
        }
    }

    Ok(())
}

/// Property 5: plans and applies to a fixed point with the interlock on (`limit`; a hold in
/// force from the start with `holding`; `recently_deleted` deletions applied before the
/// first plan), keeping the hold in force as the client does (from a plan that reports it to
/// one that does not) and counting the counted deletions it applies as recent (the client's
/// window never ends here), and checks every plan against the plan of the same trees without
/// the interlock.
fn run_interlocked(
    case: &Case,
    limit: MassDeleteLimit,
    mut holding: bool,
    mut recently_deleted: usize,
) -> Result<(), TestCaseError> {
    let mut world = build(case);
    let mut log = format!(
        "initial trees:\n{}limit: {limit:?}, holding: {holding}, recently deleted: \
         {recently_deleted}\n",
        describe(&world)
    );
    for round in 0..MAX_ROUNDS {
        let folder_files = world
            .base
            .values()
            .filter(|node| node.kind == EntryKind::File)
            .count();
        let rule = MassDeleteRule {
            limit,
            folder_files,
            holding,
            recently_deleted,
        };
        let plan = world.plan_with(&Limits {
            mass_delete: Some(rule),
            ..Limits::default()
        });
        let free = world.plan_with(&Limits::default());
        let _ = write!(log, "round {round}:\n{}", render(&plan));
        // Deletes locally what the remote no longer has, and not beneath a remote file (that
        // is a type change, row 19).
        let remote = &world.remote;
        let for_remote = |op: &PlanOp| match op {
            PlanOp::DeleteLocal { path, .. } | PlanOp::RemoveDirLocal { path } => {
                !remote.contains_key(path)
                    && !path
                        .ancestors()
                        .iter()
                        .any(|a| remote.get(a).is_some_and(|n| n.kind == EntryKind::File))
            }
            _ => false,
        };
        let upkeep = |op: &PlanOp| {
            matches!(
                op,
                PlanOp::ProtectLocal { .. } | PlanOp::UnprotectLocal { .. }
            )
        };
        let files = free
            .ops
            .iter()
            .filter(|op| for_remote(op) && matches!(op, PlanOp::DeleteLocal { .. }))
            .count();
        let counted: BTreeSet<RelPath> = free
            .ops
            .iter()
            .filter_map(|op| match op {
                PlanOp::DeleteLocal { path, .. } if for_remote(op) => Some(path.clone()),
                _ => None,
            })
            .collect();
        prop_assert_eq!(&free.counted_deletes, &counted, "counted wrong\n{}", log);
        let held = held_counts(&plan);
        let counts = (files + recently_deleted, folder_files + recently_deleted);
        if files > 0 && (holding || limit.exceeded(counts.0, counts.1)) {
            prop_assert!(
                plan.counted_deletes.is_empty(),
                "counted when held\n{}",
                log
            );
            prop_assert_eq!(held, Some(counts), "not held as it should be\n{}", log);
            for op in &plan.ops {
                prop_assert!(!for_remote(op), "{:?} was held\n{}", op, log);
                prop_assert!(
                    free.ops.contains(op) || upkeep(op),
                    "{:?} is not in the plan without the interlock\n{}",
                    op,
                    log
                );
            }
            for op in &free.ops {
                prop_assert!(
                    plan.ops.contains(op) || for_remote(op) || upkeep(op),
                    "{:?} was left out, but deletes nothing the remote deleted\n{}",
                    op,
                    log
                );
            }
        } else {
            prop_assert_eq!(&plan, &free, "held, or changed, for nothing\n{}", log);
        }
        holding = held.is_some();
        recently_deleted += plan.counted_deletes.len();
        if plan.ops.is_empty() {
            return Ok(());
        }
        for op in &plan.ops {
            world.apply(op).map_err(|err| {
                TestCaseError::fail(format!(
                    "{op:?} failed: {err}\n{log}trees now:\n{}",
                    describe(&world)
                ))
            })?;
        }
    }
    Err(TestCaseError::fail(format!(
        "no fixed point after {MAX_ROUNDS} rounds\n{log}trees now:\n{}",
        describe(&world)
    )))
}

/// The counts of the plan's mass-delete hold, if it holds.
fn held_counts(plan: &Plan) -> Option<(usize, usize)> {
    plan.blocked
        .iter()
        .find_map(|blocked| match blocked.reason {
            BlockReason::MassDeleteHeld {
                files,
                folder_files,
            } => Some((files, folder_files)),
            _ => None,
        })
}

fn mass_delete_limit() -> impl Strategy<Value = MassDeleteLimit> {
    (0u8..=100, 0usize..4).prop_map(|(percent, min_files)| MassDeleteLimit { percent, min_files })
}

proptest! {
    // 1000 cases by default; PROPTEST_CASES=100000 for a longer hunt (about a millisecond each).
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(1000),
        ..ProptestConfig::default()
    })]

    #[test]
    fn repeated_planning_converges_and_keeps_every_change(case in case()) {
        run(&case)?;
    }

    #[test]
    fn the_mass_delete_interlock_never_deletes_locally_beyond_its_limit(
        case in case(),
        limit in mass_delete_limit(),
        holding in prop::bool::weighted(0.2),
        recently_deleted in prop_oneof![Just(0usize), 0usize..8],
    ) {
        run_interlocked(&case, limit, holding, recently_deleted)?;
    }
}
