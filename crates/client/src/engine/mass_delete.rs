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

use super::SyncEngine;
use crate::seams::{BaseStore, Disk, World};
use crate::Error;
use std::collections::BTreeMap;
use syncstore_plan::{BaseNode, BlockReason, MassDeleteLimit, MassDeleteRule, Plan};
use syncstore_proto::{EntryKind, RelPath};

/// The state's key for a hold in force; its value says what was held when it began.
pub(super) const HELD_KEY: &str = "mass_delete_held";

impl<W: World> SyncEngine<W> {
    /// Sets the interlock's limit; `None` turns it off (the simulation does: it never allows a
    /// hold). The default is [`MassDeleteLimit::default`].
    pub fn set_mass_delete_limit(&mut self, limit: Option<MassDeleteLimit>) {
        self.mass_delete_limit = limit;
    }

    /// The user allowed the local deletions held now: the next plan (of the whole folder) is
    /// made without the interlock, and its deletions go. One plan only, not for ever.
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
            recently_deleted: 0,
        })
    }

    /// After a pass made `plan`: an allowance is used up, and the hold is kept in force (and
    /// saved) from a plan that reports one to a plan that does not.
    ///
    /// # Errors
    /// When the state cannot be saved.
    pub(super) fn mass_delete_planned(&mut self, plan: &Plan) -> Result<(), Error> {
        let allowed = std::mem::take(&mut self.allow_mass_delete);
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
