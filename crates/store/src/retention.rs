//! Retention: which journal rows are kept, and journal compaction.
//!
//! History is kept for [`Retention::keep_ms`] (`serve --keep-history`, default 30 days) and
//! thinned as it ages, like Syncthing's staggered versioning. A *superseded* version (a file row
//! followed by another row of the same node at the same path) is kept
//! - all of them for the first hour,
//! - the newest of each hour for the first day,
//! - the newest of each day for the first 30 days,
//! - the newest of each week after that, until `keep_ms`.
//!
//! A node's first row is never thinned, so a restore at any moment inside retention finds the
//! newest version kept at or before it (which, inside a thinned stretch, may be older than the
//! one that was current then).
//!
//! Beyond `keep_ms` (before the *horizon*, now − `keep_ms`), every node keeps only its newest
//! row from before the horizon (its state then) and its rows since; a node deleted before the
//! horizon loses all of its rows, and so do lock rows from before it. A node's newest row is
//! never removed unless it is such a deletion: the current tree is always in the journal.
//!
//! What clients see: a removed superseded row is followed by a row of the same node that holds
//! the node's whole state, so a client that reads past the gap ends in the same state. A removed
//! deletion or lock row is not: the user's *journal floor* moves to the newest such row, and a
//! client whose cursor is behind it gets `reset` and reloads the whole tree (`changes_since`).
//! The tags of removed positions are kept, so a client's `known` position is still checked.
//!
//! **Invariant:** compaction never removes a row that `state_at` needs for a cursor at or after
//! the horizon, nor a deletion inside retention (the trash), nor the version before it.

use crate::meta::MetaTxn;
use crate::{StoreError, UserId};
use std::collections::BTreeMap;
use syncstore_proto::{Cursor, NodeId, RelPath};

/// How long history is kept.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Retention {
    /// Milliseconds; 0 keeps only current versions (and no trash).
    pub keep_ms: i64,
}

impl Retention {
    /// The default: 30 days.
    pub const DEFAULT: Retention = Retention {
        keep_ms: 30 * DAY_MS,
    };
}

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
const WEEK_MS: i64 = 7 * DAY_MS;

/// What one node row is, for retention.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RowMeta {
    pub cursor: Cursor,
    pub node_id: NodeId,
    pub path: RelPath,
    pub at_ms: i64,
    pub kind: RowKind,
}

/// The kind of a node row.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RowKind {
    File,
    Dir,
    Deleted,
}

/// What compaction removes.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Removal {
    /// Node rows to remove, ascending.
    pub rows: Vec<Cursor>,
    /// The newest removed row a client cannot do without (a deletion, or a row of a node
    /// deleted before the horizon): the journal floor moves to it.
    pub floor: Cursor,
}

/// The width of the thinning bucket for a superseded version `age_ms` old; `None` within the
/// first hour (every version kept).
fn bucket_ms(age_ms: i64) -> Option<i64> {
    match age_ms {
        age if age < HOUR_MS => None,
        age if age < DAY_MS => Some(HOUR_MS),
        age if age < 30 * DAY_MS => Some(DAY_MS),
        _ => Some(WEEK_MS),
    }
}

/// Which rows of `rows` (every node row of a user, ascending by cursor) compaction removes at
/// `now_ms` under `retention`. Pure.
pub fn rows_to_remove(rows: &[RowMeta], now_ms: i64, retention: Retention) -> Removal {
    let horizon = now_ms.saturating_sub(retention.keep_ms.max(0));
    let mut by_node: BTreeMap<NodeId, Vec<&RowMeta>> = BTreeMap::new();
    for row in rows {
        by_node.entry(row.node_id).or_default().push(row);
    }
    let mut removal = Removal::default();
    for node_rows in by_node.values() {
        let last = node_rows.last().expect("a node has a row");
        if last.kind == RowKind::Deleted && last.at_ms < horizon {
            // Gone before the horizon: nothing of it is needed any more.
            for row in node_rows {
                removal.rows.push(row.cursor);
                removal.floor = removal.floor.max(row.cursor);
            }
            continue;
        }
        for (idx, row) in node_rows.iter().enumerate() {
            let Some(next) = node_rows.get(idx + 1) else {
                break; // The newest row stays.
            };
            if next.at_ms < horizon {
                // Superseded before the horizon by a row that is itself older: not the state at
                // the horizon, which is the newest row before it.
                removal.rows.push(row.cursor);
                continue;
            }
            // A node's first row is never thinned: a moment between it and the next one would
            // otherwise find no file at all.
            let superseded_in_place = idx > 0
                && row.kind == RowKind::File
                && next.kind == RowKind::File
                && next.path == row.path;
            if !superseded_in_place || row.at_ms < horizon {
                continue;
            }
            if let Some(width) = bucket_ms(now_ms - row.at_ms) {
                // Keep the newest version of each bucket: this one goes when the next one is
                // in the same bucket.
                if row.at_ms.div_euclid(width) == next.at_ms.div_euclid(width) {
                    removal.rows.push(row.cursor);
                }
            }
        }
    }
    removal.rows.sort();
    removal
}

/// What [`compact`] did.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Compaction {
    /// Node rows removed.
    pub rows: u64,
    /// Lock rows removed.
    pub lock_rows: u64,
}

/// Compacts the user's journal at `now_ms`: removes the rows [`rows_to_remove`] names and the
/// lock rows from before the horizon, keeps their tags, and moves the user's floors. Runs inside
/// the caller's write transaction, after [`crate::ops::Txn::serialize_writes`].
///
/// # Errors
/// Backend failures.
pub fn compact(
    txn: &mut dyn MetaTxn,
    user_id: UserId,
    now_ms: i64,
    retention: Retention,
) -> Result<Compaction, StoreError> {
    let horizon = now_ms.saturating_sub(retention.keep_ms.max(0));
    let rows = txn.row_metas(user_id)?;
    let removal = rows_to_remove(&rows, now_ms, retention);
    txn.remove_rows(user_id, &removal.rows)?;
    // Lock rows journalled before the horizon: every lock row at or before the newest node
    // row older than the horizon.
    let lock_floor = txn.cursor_at(user_id, horizon.saturating_sub(1))?;
    let lock_rows = txn.remove_lock_rows(user_id, lock_floor)?;
    let mut floors = txn.floors(user_id)?;
    floors.kept_since_ms = floors.kept_since_ms.max(horizon);
    floors.journal_floor = floors.journal_floor.max(removal.floor);
    if lock_rows > 0 {
        floors.journal_floor = floors.journal_floor.max(lock_floor);
    }
    txn.set_floors(user_id, floors)?;
    Ok(Compaction {
        rows: removal.rows.len() as u64,
        lock_rows,
    })
}

/// Where a user's kept history begins.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Floors {
    /// History before this time is no longer kept (0: all of it is).
    pub kept_since_ms: i64,
    /// A client whose cursor is behind this may have missed removed rows: it reloads the tree.
    pub journal_floor: Cursor,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cursor: u64, node: u64, path: &str, at_ms: i64, kind: RowKind) -> RowMeta {
        RowMeta {
            cursor: Cursor(cursor),
            node_id: NodeId(node),
            path: RelPath::new(path).unwrap(),
            at_ms,
            kind,
        }
    }

    const NOW: i64 = 100 * DAY_MS;
    const KEEP: Retention = Retention::DEFAULT;

    fn removed(rows: &[RowMeta]) -> Vec<u64> {
        rows_to_remove(rows, NOW, KEEP)
            .rows
            .iter()
            .map(|c| c.0)
            .collect()
    }

    #[test]
    fn every_version_of_the_last_hour_is_kept() {
        let rows: Vec<RowMeta> = (1..=10)
            .map(|i| row(i, 1, "f", NOW - 60_000 * (11 - i as i64), RowKind::File))
            .collect();
        assert!(removed(&rows).is_empty());
    }

    #[test]
    fn one_version_per_hour_is_kept_for_a_day_then_one_per_day() {
        // Versions every 10 minutes, 5 to 6 hours ago: one hour bucket, newest kept.
        let base = (NOW - 6 * HOUR_MS).div_euclid(HOUR_MS) * HOUR_MS;
        let mut rows = vec![row(1, 1, "f", NOW - 50 * DAY_MS, RowKind::File)];
        rows.extend(
            (0..6).map(|i| row(i + 2, 1, "f", base + 1 + i as i64 * 600_000, RowKind::File)),
        );
        rows.push(row(8, 1, "f", NOW - 1, RowKind::File));
        assert_eq!(
            removed(&rows),
            vec![2, 3, 4, 5, 6],
            "the newest of the hour stays"
        );
        // Three days ago, versions an hour apart in one day: one stays.
        let day = (NOW - 3 * DAY_MS).div_euclid(DAY_MS) * DAY_MS;
        let mut rows: Vec<RowMeta> = (0..5)
            .map(|i| row(i + 1, 1, "f", day + i as i64 * HOUR_MS, RowKind::File))
            .collect();
        rows.push(row(6, 1, "f", NOW - 1, RowKind::File));
        assert_eq!(
            removed(&rows),
            vec![2, 3, 4],
            "the first row and the newest of the day stay"
        );
    }

    #[test]
    fn beyond_retention_only_the_state_at_the_horizon_stays() {
        let old = NOW - 40 * DAY_MS;
        let rows = vec![
            row(1, 1, "f", old, RowKind::File),
            row(2, 1, "f", old + DAY_MS, RowKind::File),
            row(3, 1, "f", NOW - 2 * DAY_MS, RowKind::File),
        ];
        let removal = rows_to_remove(&rows, NOW, KEEP);
        assert_eq!(removal.rows, vec![Cursor(1)]);
        assert_eq!(
            removal.floor,
            Cursor(0),
            "a superseded row is no loss to a client"
        );
    }

    #[test]
    fn a_node_deleted_before_the_horizon_goes_and_moves_the_floor() {
        let old = NOW - 40 * DAY_MS;
        let rows = vec![
            row(1, 1, "f", old, RowKind::File),
            row(2, 1, "f", old + 1, RowKind::Deleted),
            row(3, 2, "g", old, RowKind::File),
        ];
        let removal = rows_to_remove(&rows, NOW, KEEP);
        assert_eq!(removal.rows, vec![Cursor(1), Cursor(2)]);
        assert_eq!(removal.floor, Cursor(2));
    }

    #[test]
    fn a_deletion_inside_retention_keeps_the_version_before_it() {
        let rows = vec![
            row(1, 1, "f", NOW - 50 * DAY_MS, RowKind::File),
            row(2, 1, "f", NOW - DAY_MS, RowKind::Deleted),
        ];
        assert!(removed(&rows).is_empty());
    }

    #[test]
    fn a_move_is_never_thinned_away() {
        let at = (NOW - 5 * HOUR_MS).div_euclid(HOUR_MS) * HOUR_MS;
        let rows = vec![
            row(1, 1, "a", at, RowKind::File),
            row(2, 1, "a", at + 1, RowKind::File),
            row(3, 1, "b", at + 2, RowKind::File),
            row(4, 1, "b", at + 3, RowKind::File),
            row(5, 1, "b", at + 4, RowKind::File),
        ];
        assert_eq!(
            removed(&rows),
            vec![3, 4],
            "2 is followed by its move, so it stays"
        );
    }

    #[test]
    fn keep_zero_keeps_only_current_versions() {
        let rows = vec![
            row(1, 1, "f", NOW - 10, RowKind::File),
            row(2, 1, "f", NOW - 5, RowKind::File),
            row(3, 2, "g", NOW - 10, RowKind::File),
            row(4, 2, "g", NOW - 5, RowKind::Deleted),
        ];
        let removal = rows_to_remove(&rows, NOW, Retention { keep_ms: 0 });
        assert_eq!(removal.rows, vec![Cursor(1), Cursor(3), Cursor(4)]);
        assert_eq!(removal.floor, Cursor(4));
    }
}
