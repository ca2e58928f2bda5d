//! Version history, the trash and restores, read from the change journal.
//!
//! The journal already holds every version: each `Upsert` row is a node's whole state (path,
//! content, mode) and each `Delete` row its end, and every row records when it was committed
//! (`at_ms`, the server clock). This module turns rows into answers, written once for every
//! backend:
//! - [`versions`]: the history of a path, the rows of every node that was ever at it;
//! - [`trash`]: the files whose newest row is a deletion and whose path holds nothing now;
//! - [`plan_restore`]: what a restore must do, as ordinary conditional [`Op`]s, so that a
//!   restore is journalled like any change (every device gets it, what it replaces stays in
//!   history) and anything that changed since it was planned makes its op fail on its own.
//!
//! What backends provide are the raw reads of [`crate::meta::MetaTxn`]: `path_history`,
//! `state_at`, `deletions_since`, `cursor_at`, `journal_row`.
//!
//! **Invariant:** a restore never deletes anything that is not then in the trash: the only
//! deletions it plans are of files created after the moment (journalled as deletions, so
//! `trash` lists them and `restore --deleted` brings them back) and of the directories that
//! held only those.

use crate::meta::MetaTxn;
use crate::{quoted, StoreError, UserId};
use std::collections::{BTreeMap, HashSet};
use syncstore_proto::{
    Change, Cursor, EntryKind, NodeId, Op, Precondition, RelPath, RemoteEntry, RestoreAction,
    RestoreStep, RestoreTarget, Revision, TrashEntry, TrashQuery, Version, VersionKind,
};

/// One node row of a user's journal (an `Upsert` or a `Delete`), with its commit time.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct JournalRow {
    pub change: Change,
    /// Milliseconds since the Unix epoch, server clock; 0 for rows older than the column.
    pub at_ms: i64,
}

/// A deletion of a file, with the file's last version before it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Deletion {
    /// The `Delete` row.
    pub deleted: JournalRow,
    /// The node's previous row: the version the deletion ended.
    pub last: RemoteEntry,
}

/// What a restore will do: the ops, in order, and one step per op to report.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct RestorePlan {
    pub ops: Vec<Op>,
    /// `steps[i]` describes `ops[i]`.
    pub steps: Vec<RestoreStep>,
    /// Paths already as asked.
    pub unchanged: u64,
}

impl RestorePlan {
    fn push(&mut self, op: Op, action: RestoreAction, rev: Option<Revision>, size: u64) {
        self.steps.push(RestoreStep {
            path: op.path().clone(),
            action,
            rev,
            size,
            error: String::new(),
        });
        self.ops.push(op);
    }
}

/// The history of `path` from `rows`, the journal rows of every node that was ever at `path`
/// (oldest first); `current` is the node at `path` now, if any.
///
/// Directory rows are left out. A file row that kept the content but changed the path (a move,
/// to or from `path`) is a `moved` version, listed with the path it moved to; the node's later
/// rows are listed too, wherever it went.
pub fn versions(rows: &[JournalRow], current: Option<&RemoteEntry>) -> Vec<Version> {
    let mut previous: BTreeMap<NodeId, &RemoteEntry> = BTreeMap::new();
    let mut out = Vec::new();
    for row in rows {
        match &row.change {
            Change::Upsert { cursor, entry } => {
                let before = previous.insert(entry.node_id, entry);
                if entry.kind != EntryKind::File {
                    continue;
                }
                let moved = before
                    .is_some_and(|before| before.path != entry.path && before.hash == entry.hash);
                out.push(Version {
                    rev: Revision(cursor.0),
                    at_ms: row.at_ms,
                    kind: if moved {
                        VersionKind::Moved
                    } else {
                        VersionKind::File
                    },
                    path: entry.path.clone(),
                    size: entry.size,
                    hash: entry.hash,
                    device: entry.device.clone(),
                    executable: entry.executable,
                    current: current.is_some_and(|node| node.rev.0 == cursor.0),
                });
            }
            Change::Delete {
                cursor,
                node_id,
                path,
                device,
            } => {
                let was_file = previous
                    .remove(node_id)
                    .is_some_and(|entry| entry.kind == EntryKind::File);
                if was_file {
                    out.push(Version {
                        rev: Revision(cursor.0),
                        at_ms: row.at_ms,
                        kind: VersionKind::Deleted,
                        path: path.clone(),
                        size: 0,
                        hash: None,
                        device: device.clone(),
                        executable: false,
                        current: false,
                    });
                }
            }
            Change::Lock { .. } | Change::Unlock { .. } => {}
        }
    }
    out
}

/// Whether `path` is `prefix` or beneath it (everything is beneath `None`).
pub fn under(path: &RelPath, prefix: Option<&RelPath>) -> bool {
    prefix.is_none_or(|prefix| path == prefix || path.is_inside(prefix))
}

/// The trash from `deletions` (oldest first): per path its newest deletion, unless the path
/// holds something now (`live`), filtered by `query`; newest deletion first, each with the
/// version a restore brings back.
pub fn trash(
    deletions: Vec<Deletion>,
    live: &dyn Fn(&RelPath) -> bool,
    query: &TrashQuery,
) -> Vec<(TrashEntry, RemoteEntry)> {
    let mut newest: BTreeMap<RelPath, (TrashEntry, RemoteEntry)> = BTreeMap::new();
    for Deletion { deleted, last } in deletions {
        let Change::Delete {
            cursor,
            path,
            device,
            ..
        } = deleted.change
        else {
            continue;
        };
        let Some(hash) = last.hash else { continue };
        if last.kind != EntryKind::File {
            continue;
        }
        let entry = TrashEntry {
            path: path.clone(),
            deleted_rev: Revision(cursor.0),
            deleted_at_ms: deleted.at_ms,
            deleted_by: device,
            rev: last.rev,
            size: last.size,
            hash,
        };
        newest.insert(path, (entry, last));
    }
    let mut entries: Vec<(TrashEntry, RemoteEntry)> = newest
        .into_values()
        .filter(|(entry, _)| {
            !live(&entry.path)
                && under(&entry.path, query.prefix.as_ref())
                && query
                    .since_ms
                    .is_none_or(|since| entry.deleted_at_ms >= since)
                && query.by.as_ref().is_none_or(|by| entry.deleted_by == *by)
        })
        .collect();
    entries.sort_by(|(a, _), (b, _)| b.deleted_rev.cmp(&a.deleted_rev).then(a.path.cmp(&b.path)));
    entries
}

/// The trash that matches `query`, read inside `txn`: [`trash`] over the deletions kept since
/// `kept_since_ms` (or since the query's time, if later) and the paths live now.
///
/// # Errors
/// Backend failures.
pub fn trash_in(
    txn: &mut dyn MetaTxn,
    user_id: UserId,
    query: &TrashQuery,
    kept_since_ms: i64,
) -> Result<Vec<(TrashEntry, RemoteEntry)>, StoreError> {
    let since = query.since_ms.unwrap_or(kept_since_ms).max(kept_since_ms);
    let deletions = txn.deletions_since(user_id, since)?;
    let live: HashSet<RelPath> = txn
        .nodes(user_id)?
        .into_iter()
        .map(|entry| entry.path)
        .collect();
    Ok(trash(deletions, &|path| live.contains(path), query))
}

/// A `PutFile` that gives `path` the content of `version`, expecting `base` there.
fn put_version(path: &RelPath, base: Precondition, version: &RemoteEntry) -> Op {
    Op::PutFile {
        path: path.clone(),
        base,
        size: version.size,
        mtime_ms: version.mtime_ms,
        hash: version.hash.expect("a file version has a hash"),
        chunks: version.chunks.clone(),
        executable: version.executable,
    }
}

/// Whether the file `current` already has `version`'s content and mode.
fn same_file(current: &RemoteEntry, version: &RemoteEntry) -> bool {
    current.kind == EntryKind::File
        && current.hash == version.hash
        && current.executable == version.executable
}

/// The precondition for writing over whatever is at a path now.
fn over(current: Option<&RemoteEntry>) -> Precondition {
    current.map_or(Precondition::MustNotExist, |node| {
        Precondition::Rev(node.rev)
    })
}

/// Restores the file version `version` (a file row) at `target`, where `current` is now.
pub fn plan_version(
    target: &RelPath,
    version: &RemoteEntry,
    current: Option<&RemoteEntry>,
    beside: bool,
) -> RestorePlan {
    let mut plan = RestorePlan::default();
    if current.is_some_and(|node| same_file(node, version)) {
        plan.unchanged = 1;
        return plan;
    }
    let base = if beside {
        Precondition::MustNotExist
    } else {
        over(current)
    };
    let action = if current.is_some() {
        RestoreAction::Reverted
    } else {
        RestoreAction::Undeleted
    };
    plan.push(
        put_version(target, base, version),
        action,
        Some(version.rev),
        version.size,
    );
    plan
}

/// Brings the trash entries back, each at its path (which holds nothing now), from the
/// versions `last[i]` of `entries[i]`.
pub fn plan_undelete(entries: &[(TrashEntry, RemoteEntry)]) -> RestorePlan {
    let mut plan = RestorePlan::default();
    for (entry, version) in entries {
        plan.push(
            put_version(&entry.path, Precondition::MustNotExist, version),
            RestoreAction::Undeleted,
            Some(version.rev),
            version.size,
        );
    }
    plan
}

/// Puts the subtree `prefix` (everything when `None`) back as `old` says it was (the state at
/// the moment: every node's row then, `rev` being that row's cursor), where `current` is the
/// tree now; both may hold more than the subtree. With `to`, the old subtree goes to `to`
/// instead and nothing current is touched.
pub fn plan_moment(
    prefix: Option<&RelPath>,
    old: &[RemoteEntry],
    current: &[RemoteEntry],
    to: Option<&RelPath>,
) -> RestorePlan {
    let old: BTreeMap<&RelPath, &RemoteEntry> = old
        .iter()
        .filter(|entry| under(&entry.path, prefix))
        .map(|entry| (&entry.path, entry))
        .collect();
    let mut plan = RestorePlan::default();
    if let Some(to) = to {
        for entry in old.values() {
            let Some(path) = relocate(&entry.path, prefix, to) else {
                continue;
            };
            match entry.kind {
                EntryKind::Dir => plan.push(
                    Op::MakeDir {
                        path,
                        mtime_ms: entry.mtime_ms,
                    },
                    RestoreAction::MadeDir,
                    None,
                    0,
                ),
                EntryKind::File => plan.push(
                    put_version(&path, Precondition::MustNotExist, entry),
                    RestoreAction::Undeleted,
                    Some(entry.rev),
                    entry.size,
                ),
            }
        }
        return plan;
    }
    let current: BTreeMap<&RelPath, &RemoteEntry> = current
        .iter()
        .filter(|entry| under(&entry.path, prefix))
        .map(|entry| (&entry.path, entry))
        .collect();
    // What goes: every current entry the old state has not, or has as the other kind.
    let mut doomed: Vec<&RemoteEntry> = current
        .values()
        .filter(|now| old.get(&now.path).is_none_or(|then| then.kind != now.kind))
        .copied()
        .collect();
    // Files first, then directories, each deepest first: a directory is empty by its turn.
    doomed.sort_by(|a, b| {
        let key = |entry: &RemoteEntry| {
            (
                entry.kind == EntryKind::Dir,
                std::cmp::Reverse(entry.path.depth()),
            )
        };
        key(a).cmp(&key(b)).then_with(|| b.path.cmp(&a.path))
    });
    let gone: HashSet<&RelPath> = doomed.iter().map(|entry| &entry.path).collect();
    for entry in &doomed {
        plan.push(
            Op::Delete {
                path: entry.path.clone(),
                base: entry.rev,
            },
            RestoreAction::Trashed,
            None,
            entry.size,
        );
    }
    // Then the old state, shallowest first (a `BTreeMap` of paths puts parents first).
    for entry in old.values() {
        let now = current
            .get(&entry.path)
            .filter(|now| !gone.contains(&now.path));
        match entry.kind {
            EntryKind::Dir if now.is_some() => plan.unchanged += 1,
            EntryKind::Dir => plan.push(
                Op::MakeDir {
                    path: entry.path.clone(),
                    mtime_ms: entry.mtime_ms,
                },
                RestoreAction::MadeDir,
                None,
                0,
            ),
            EntryKind::File => match now {
                Some(now) if same_file(now, entry) => plan.unchanged += 1,
                Some(now) => plan.push(
                    put_version(&entry.path, Precondition::Rev(now.rev), entry),
                    RestoreAction::Reverted,
                    Some(entry.rev),
                    entry.size,
                ),
                None => plan.push(
                    put_version(&entry.path, Precondition::MustNotExist, entry),
                    RestoreAction::Undeleted,
                    Some(entry.rev),
                    entry.size,
                ),
            },
        }
    }
    plan
}

/// What restoring `target` takes, read inside `txn` (one snapshot); `Err(message)` when the
/// request cannot be met.
///
/// # Errors
/// Backend failures.
pub fn plan_restore(
    txn: &mut dyn MetaTxn,
    user_id: UserId,
    target: &RestoreTarget,
    kept_since_ms: i64,
) -> Result<Result<RestorePlan, String>, StoreError> {
    match target {
        RestoreTarget::Version { path, rev, to } => {
            let kept = i64::try_from(rev.0).is_ok();
            let row = if kept {
                txn.journal_row(user_id, Cursor(rev.0))?
            } else {
                None // Beyond any cursor a store can hold.
            };
            let Some(row) = row else {
                return Ok(Err(format!(
                    "revision {rev} is not kept (history before it may have been thinned)"
                )));
            };
            let Change::Upsert { entry, .. } = row.change else {
                return Ok(Err(format!("revision {rev} is a deletion, not a version")));
            };
            let ever_here = txn
                .path_history(user_id, path)?
                .iter()
                .any(|row| row.change.cursor().0 == rev.0);
            if entry.kind != EntryKind::File || !ever_here {
                return Ok(Err(format!(
                    "revision {rev} is not a version of {}",
                    quoted(path)
                )));
            }
            let target = to.as_ref().unwrap_or(path);
            let current = txn.node_at(user_id, target)?;
            Ok(Ok(plan_version(
                target,
                &entry,
                current.as_ref(),
                to.is_some(),
            )))
        }
        RestoreTarget::Moment { path, at_ms, to } => {
            if *at_ms < 0 {
                return Ok(Err(format!(
                    "{at_ms} ms is before 1970: no history is that old"
                )));
            }
            if *at_ms < kept_since_ms {
                return Ok(Err(format!(
                    "history before {} is no longer kept (asked for {})",
                    ms_text(kept_since_ms),
                    ms_text(*at_ms)
                )));
            }
            let cursor = txn.cursor_at(user_id, *at_ms)?;
            let old = txn.state_at(user_id, cursor)?;
            let current = txn.nodes(user_id)?;
            if let Some(prefix) = path {
                let anywhere = |entries: &[RemoteEntry]| {
                    entries.iter().any(|entry| under(&entry.path, Some(prefix)))
                };
                if !anywhere(&old) && !anywhere(&current) {
                    return Ok(Err(format!(
                        "nothing was at {} then, and nothing is now",
                        quoted(prefix)
                    )));
                }
            }
            Ok(Ok(plan_moment(path.as_ref(), &old, &current, to.as_ref())))
        }
        RestoreTarget::Deleted {
            prefix,
            since_ms,
            by,
        } => {
            let query = TrashQuery {
                prefix: prefix.clone(),
                since_ms: *since_ms,
                by: by.clone(),
            };
            let entries = trash_in(txn, user_id, &query, kept_since_ms)?;
            Ok(Ok(plan_undelete(&entries)))
        }
    }
}

/// A time for messages: RFC 3339 in UTC.
pub fn ms_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || format!("{ms} ms"),
        |at| at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

/// `path` (under `prefix`) moved to be under `to` instead.
fn relocate(path: &RelPath, prefix: Option<&RelPath>, to: &RelPath) -> Option<RelPath> {
    match prefix {
        Some(prefix) => path.rebase(prefix, to),
        None => RelPath::new(&format!("{}/{}", to.as_str(), path.as_str())).ok(),
    }
}

/// Describes a [`RestoreTarget`] for logs.
pub fn describe(target: &RestoreTarget) -> String {
    match target {
        RestoreTarget::Version { path, rev, .. } => format!("{path} at revision {rev}"),
        RestoreTarget::Moment { path, at_ms, .. } => format!(
            "{} as of {at_ms}",
            path.as_ref().map_or("everything", RelPath::as_str)
        ),
        RestoreTarget::Deleted { prefix, .. } => format!(
            "deleted files under {}",
            prefix.as_ref().map_or("/", RelPath::as_str)
        ),
    }
}
