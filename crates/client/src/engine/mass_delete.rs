//! The mass-delete interlock as the engine keeps it (issue 14; the rules are in
//! `syncstore_plan`'s crate docs, "The mass-delete interlock").
//!
//! Invariant: whether a plan's deletions are held is the planner's decision. The engine only
//! gives it the rule: the limit ([`SyncEngine::set_mass_delete_limit`]), the whole folder's
//! file count from base (also when the plan is of a focus), and whether a hold is in force.
//! A hold is in force from a plan that reports one until a plan reports none, and is saved in
//! state (`mass_delete_held`), so a restart does not lift it: files the other device writes
//! meanwhile must not dilute the count below the limit. While it lasts every plan is of the
//! whole folder, as the deletions held lie outside any focus. The user lifts it for one plan,
//! the next, with [`SyncEngine::allow_mass_delete`] (`syncstore sync DIR --allow-mass-delete`),
//! or by restoring the files on the server (then nothing is left to delete). The hold is
//! logged once per hold and process, as a WARN with the counts and the command.
//!
//! A mass delete may reach this device in several journal commits (another device's daemon
//! uploads a big `rm -rf` in batches), each plan's share under the limit. So the engine also
//! counts the local deletions it applied for remote deletes (the plan's
//! [`Plan::counted_deletes`], so the definition stays the planner's) with their time on the
//! [`Clock`]'s monotonic clock, and gives the planner those of the last [`RECENT_WINDOW`]
//! ([`MassDeleteRule::recently_deleted`]). That window is kept in memory only: a restart
//! forgets it (and a mass delete cut in pieces by a restart is judged from there on). An
//! allowance clears it, and the allowed plan's deletions do not count either, so what the user
//! allowed does not count towards the next hold.

use super::SyncEngine;
use crate::seams::{BaseStore, Clock, Disk, World};
use crate::Error;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use syncstore_plan::{BaseNode, BlockReason, MassDeleteLimit, MassDeleteRule, Plan};
use syncstore_proto::{EntryKind, RelPath};

/// The state's key for a hold in force; its value says what was held when it began.
pub(super) const HELD_KEY: &str = "mass_delete_held";

/// How long an applied deletion counts towards the next plans' (see the module docs). Long
/// enough to span a big delete uploaded in batches by another daemon (each batch takes
/// seconds), or by hand in a few `sync --once` runs; short enough that the everyday deletions
/// of a busy folder, spread over hours, do not add up to a hold.
pub(super) const RECENT_WINDOW: Duration = Duration::from_secs(10 * 60);

/// The local deletions caused by remote deletes the engine applied lately: (monotonic time,
/// how many), oldest first.
#[derive(Default, Debug)]
pub(super) struct RecentDeletes {
    runs: VecDeque<(Duration, usize)>,
}

impl RecentDeletes {
    /// `files` deletions were applied at `now`; forgets those out of the window.
    pub(super) fn record(&mut self, now: Duration, files: usize) {
        while self
            .runs
            .front()
            .is_some_and(|(at, _)| now.saturating_sub(*at) >= RECENT_WINDOW)
        {
            self.runs.pop_front();
        }
        self.runs.push_back((now, files));
    }

    /// How many were applied within the window before `now`.
    pub(super) fn count(&self, now: Duration) -> usize {
        self.runs
            .iter()
            .filter(|(at, _)| now.saturating_sub(*at) < RECENT_WINDOW)
            .map(|(_, files)| files)
            .sum()
    }

    pub(super) fn clear(&mut self) {
        self.runs.clear();
    }
}

impl<W: World> SyncEngine<W> {
    /// Sets the interlock's limit; `None` turns it off (the simulation does: it never allows a
    /// hold). The default is [`MassDeleteLimit::default`].
    pub fn set_mass_delete_limit(&mut self, limit: Option<MassDeleteLimit>) {
        self.mass_delete_limit = limit;
    }

    /// The user allowed the local deletions held now: the next plan (of the whole folder) is
    /// made without the interlock, and its deletions go. One plan only, not for ever. The
    /// deletions applied recently, and the allowed ones, then no longer count towards a hold.
    pub fn allow_mass_delete(&mut self) {
        self.allow_mass_delete = true;
    }

    /// Whether a hold of the interlock is in force.
    pub fn mass_delete_held(&self) -> bool {
        self.mass_delete_holding
    }

    /// The interlock as the next plan applies it; `None` when it is off or allowed.
    pub(super) fn mass_delete_rule(
        &self,
        whole_base: &BTreeMap<RelPath, BaseNode>,
    ) -> Option<MassDeleteRule> {
        if self.allow_mass_delete {
            return None;
        }
        let limit = self.mass_delete_limit?;
        let folder_files = whole_base
            .values()
            .filter(|node| node.kind == EntryKind::File)
            .count();
        Some(MassDeleteRule {
            limit,
            folder_files,
            holding: self.mass_delete_holding,
            recently_deleted: self.recent_deletes.count(self.clock.monotonic()),
        })
    }

    /// After a pass made `plan`: an allowance is used up, and the hold is kept in force (and
    /// saved) from a plan that reports one to a plan that does not. When the plan was made
    /// without the interlock (allowed, or off), its [`Plan::counted_deletes`] are emptied, so
    /// they do not count as recent, and an allowance forgets the recent ones.
    ///
    /// # Errors
    /// When the state cannot be saved.
    pub(super) fn mass_delete_planned(&mut self, plan: &mut Plan) -> Result<(), Error> {
        let allowed = std::mem::take(&mut self.allow_mass_delete);
        if allowed || self.mass_delete_limit.is_none() {
            plan.counted_deletes.clear();
            self.recent_deletes.clear();
        }
        let held = plan
            .blocked
            .iter()
            .find_map(|blocked| match blocked.reason {
                BlockReason::MassDeleteHeld {
                    files,
                    folder_files,
                } => Some((files, folder_files)),
                _ => None,
            });
        let folder = self.disk.root().display().to_string();
        let Some((files, folder_files)) = held else {
            if self.mass_delete_holding {
                self.state.set_meta(HELD_KEY, None)?;
                self.mass_delete_holding = false;
                if allowed {
                    tracing::info!(%folder, "the held deletions go, as allowed");
                } else {
                    tracing::info!(%folder, "no deletion is held any more");
                }
            }
            self.mass_delete_logged = false;
            return Ok(());
        };
        if !self.mass_delete_holding {
            let what = format!("{files} of {folder_files} files");
            self.state.set_meta(HELD_KEY, Some(&what))?;
            self.mass_delete_holding = true;
        }
        if !self.mass_delete_logged {
            self.mass_delete_logged = true;
            let limit = self.mass_delete_limit.unwrap_or_default();
            tracing::warn!(
                %folder,
                files,
                folder_files,
                "{files} of the folder's {folder_files} files were deleted on the server (more \
                 than {}% and more than {} at once): they are not deleted here, nor is any \
                 other file the server deletes, until you run `syncstore sync {folder} \
                 --allow-mass-delete` (or restore them on the server)",
                limit.percent,
                limit.min_files
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{RecentDeletes, RECENT_WINDOW};
    use std::time::Duration;

    #[test]
    fn recent_deletes_count_within_the_window_only() {
        let minute = Duration::from_secs(60);
        let mut recent = RecentDeletes::default();
        assert_eq!(recent.count(Duration::ZERO), 0);
        recent.record(minute, 60);
        recent.record(3 * minute, 60);
        assert_eq!(recent.count(3 * minute), 120);
        // The first run leaves the window 10 minutes after it, the second 2 minutes later.
        assert_eq!(
            recent.count(minute + RECENT_WINDOW - Duration::from_millis(1)),
            120
        );
        assert_eq!(recent.count(minute + RECENT_WINDOW), 60);
        assert_eq!(recent.count(3 * minute + RECENT_WINDOW), 0);
        // Recording forgets what left the window.
        recent.record(12 * minute, 5);
        assert_eq!(recent.runs.len(), 2);
        assert_eq!(recent.count(12 * minute), 65);
        recent.clear();
        assert_eq!(recent.count(12 * minute), 0);
    }
}
