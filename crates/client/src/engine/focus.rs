//! The focus of a pass: which paths it looks at again and plans, when it does not walk and plan
//! the whole folder.
//!
//! The assumption a focus plan rests on: every path outside the focus is at a fixed point (the
//! last plan that covered it was empty for it, and nothing about it changed since that anyone
//! told the engine: watcher events, the server's journal, the engine's own ops). The engine
//! keeps it by these rules, each checked by the simulation, which compares every focus plan
//! with the whole folder's: the focus holds what changed, what the last pass left, locks and
//! read-only files, closed as `syncstore_plan`'s crate docs ("Planning a focus") require; it
//! only grows until a plan comes out empty; an entry that becomes syncable again widens a round
//! to the whole folder. Where the assumption still fails (a missed watcher event, a decision a
//! plan deferred), the next full walk, which plans the whole folder, catches it; and what a
//! stale local entry could cause meanwhile is caught by the re-checks every local step makes
//! before it destroys anything.

use std::collections::{BTreeMap, BTreeSet};
use syncstore_plan::PlanOp;
use syncstore_proto::{map_beneath, set_beneath, RelPath};

/// What the next round looks at.
#[derive(Debug)]
pub(crate) struct Focus {
    /// Walk the whole folder (start-up, rescan, a watcher that cannot be trusted).
    pub walk_all: bool,
    /// Plan the whole folder (after a full walk, a reloaded remote tree, new ignore rules, a
    /// re-adoption), until a plan comes out empty.
    pub plan_all: bool,
    /// Local paths to look at again, each with whether a directory's entries are listed again.
    pub rescan: BTreeMap<RelPath, bool>,
    /// Paths to plan: those looked at again, those the remote tree says changed, those ops
    /// changed, and what the last pass left. It only grows until a plan comes out empty (a
    /// plan may leave decisions to the next round: the paths a rename claimed, the children
    /// of a directory to be created), then [`Focus::settle`] starts it again.
    pub plan: BTreeSet<RelPath>,
}

impl Default for Focus {
    /// A new engine knows nothing of the folder yet.
    fn default() -> Focus {
        Focus {
            walk_all: true,
            plan_all: true,
            rescan: BTreeMap::new(),
            plan: BTreeSet::new(),
        }
    }
}

impl Focus {
    /// A local path changed; `deep`: it may be a directory with new entries (created, renamed).
    pub fn local_changed(&mut self, path: RelPath, deep: bool) {
        let slot = self.rescan.entry(path).or_insert(deep);
        *slot |= deep;
    }

    /// Records what an applied (or tried) op changes, for the next round.
    pub fn after_op(&mut self, op: &PlanOp) {
        let (local, deep): (Vec<&RelPath>, bool) = match op {
            PlanOp::Download { path, .. }
            | PlanOp::Upload { path, .. }
            | PlanOp::SetModeLocal { path, .. }
            | PlanOp::DeleteLocal { path, .. }
            | PlanOp::RemoveDirLocal { path }
            | PlanOp::ProtectLocal { path } => (vec![path], false),
            PlanOp::UnprotectLocal { path, file } => {
                (std::iter::once(path).chain(file).collect(), false)
            }
            PlanOp::MakeDirLocal { path, .. } => (vec![path], true),
            PlanOp::MoveLocal { from, to } => (vec![from, to], true),
            PlanOp::ConflictCopy { path, copy } => (vec![path, copy], true),
            PlanOp::MoveRemote { from, to, .. } => {
                self.plan.insert(from.clone());
                self.plan.insert(to.clone());
                (Vec::new(), false)
            }
            PlanOp::SetModeRemote { path, .. }
            | PlanOp::DeleteRemote { path, .. }
            | PlanOp::MakeDirRemote { path }
            | PlanOp::RecordBase { path, .. }
            | PlanOp::ForgetBase { path } => {
                self.plan.insert(path.clone());
                (Vec::new(), false)
            }
        };
        for path in local {
            self.local_changed(path.clone(), deep);
        }
    }

    /// Starts the next pass from nothing but `pending`.
    pub fn settle(&mut self, pending: impl IntoIterator<Item = RelPath>) {
        self.walk_all = false;
        self.plan_all = false;
        self.rescan.clear();
        self.plan = pending.into_iter().collect();
    }
}

/// The trees a focus is closed over: whatever is known on each side.
pub(crate) struct Known<'a, B, L, R> {
    pub base: &'a BTreeMap<RelPath, B>,
    pub local: &'a BTreeMap<RelPath, L>,
    pub remote: &'a BTreeMap<RelPath, R>,
    pub local_untouchable: &'a BTreeSet<RelPath>,
}

/// `seeds` closed under ancestors and everything beneath (see `syncstore_plan`'s crate docs,
/// "Planning a focus"); both ends of renames and lock paths are seeds already.
pub(crate) fn close<B, L, R>(
    seeds: &BTreeSet<RelPath>,
    known: &Known<'_, B, L, R>,
) -> BTreeSet<RelPath> {
    let mut out: BTreeSet<RelPath> = BTreeSet::new();
    let mut expanded: Option<&RelPath> = None;
    for seed in seeds {
        out.insert(seed.clone());
        out.extend(seed.ancestors());
        // Everything beneath a seed inside the last one expanded is in already.
        if expanded.is_some_and(|dir| seed.is_inside(dir)) {
            continue;
        }
        expanded = Some(seed);
        out.extend(map_beneath(known.base, seed).map(|(p, _)| p.clone()));
        out.extend(map_beneath(known.local, seed).map(|(p, _)| p.clone()));
        out.extend(map_beneath(known.remote, seed).map(|(p, _)| p.clone()));
        out.extend(set_beneath(known.local_untouchable, seed).cloned());
    }
    out
}

/// The entries of `map` at the paths of `focus`.
pub(crate) fn cut<V: Clone>(
    map: &BTreeMap<RelPath, V>,
    focus: &BTreeSet<RelPath>,
) -> BTreeMap<RelPath, V> {
    focus
        .iter()
        .filter_map(|path| Some((path.clone(), map.get(path)?.clone())))
        .collect()
}

/// The paths of `set` in `focus`.
pub(crate) fn cut_set(set: &BTreeSet<RelPath>, focus: &BTreeSet<RelPath>) -> BTreeSet<RelPath> {
    if set.len() < focus.len() {
        set.iter().filter(|p| focus.contains(*p)).cloned().collect()
    } else {
        focus.iter().filter(|p| set.contains(*p)).cloned().collect()
    }
}

/// How the plan of a focus differs from the plan of the whole folder, if it does (ops in any
/// order; the blocked paths).
pub(crate) fn differs(
    focus: &syncstore_plan::Plan,
    whole: &syncstore_plan::Plan,
) -> Option<String> {
    let ops = |plan: &syncstore_plan::Plan| {
        let mut ops: Vec<String> = plan.ops.iter().map(|op| format!("{op:?}")).collect();
        ops.sort();
        ops
    };
    let (focus_ops, whole_ops) = (ops(focus), ops(whole));
    if focus_ops == whole_ops && focus.blocked == whole.blocked {
        return None;
    }
    let only = |a: &[String], b: &[String]| -> Vec<String> {
        a.iter().filter(|op| !b.contains(op)).cloned().collect()
    };
    Some(format!(
        "the plan of the focus differs from the plan of the whole folder: only in the focus's: \
         {:?}; only in the whole's: {:?}; blocked {:?} vs {:?}",
        only(&focus_ops, &whole_ops),
        only(&whole_ops, &focus_ops),
        focus.blocked,
        whole.blocked
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> RelPath {
        RelPath::new(text).unwrap()
    }

    fn map(paths: &[&str]) -> BTreeMap<RelPath, ()> {
        paths.iter().map(|p| (path(p), ())).collect()
    }

    #[test]
    fn a_focus_holds_ancestors_and_everything_beneath_on_every_side() {
        let base = map(&["a", "a/b", "a/b/old", "c", "c/d"]);
        let local = map(&["a", "a/b", "a/b/new", "c", "c/d", "c/e"]);
        let remote = map(&["a", "a/b", "a/b/old", "a/b/far/x", "c", "c/d"]);
        let untouchable: BTreeSet<RelPath> = [path("a/b/link")].into();
        let known = Known {
            base: &base,
            local: &local,
            remote: &remote,
            local_untouchable: &untouchable,
        };
        let seeds: BTreeSet<RelPath> = [path("a/b"), path("c/e")].into();
        let got: Vec<String> = close(&seeds, &known)
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect();
        assert_eq!(
            got,
            [
                "a",
                "a/b",
                "a/b/far/x",
                "a/b/link",
                "a/b/new",
                "a/b/old",
                "c",
                "c/e"
            ]
        );
    }

    #[test]
    fn ops_name_what_the_next_round_looks_at() {
        let mut focus = Focus::default();
        focus.settle([path("pending")]);
        focus.after_op(&PlanOp::MoveLocal {
            from: path("x"),
            to: path("y"),
        });
        focus.after_op(&PlanOp::ForgetBase { path: path("z") });
        assert_eq!(focus.rescan.get(&path("x")), Some(&true));
        assert_eq!(focus.rescan.get(&path("y")), Some(&true));
        assert!(focus.plan.contains(&path("z")) && focus.plan.contains(&path("pending")));
        assert!(!focus.walk_all && !focus.plan_all);
    }
}
