//! Whom base was made against: the server's namespace and the newest journal position (with
//! its tag) the folder knew when base was committed; connecting, reading the journal, and
//! re-adopting the folder when the server's history is not that one.
//!
//! Invariant: base made against another history is never planned against. A different
//! namespace, a journal that ends before `known`, or a `diverged` answer makes base untrusted;
//! until the next pass re-adopts the folder ([`SyncEngine::readopt`]: base cleared durably
//! with the new identity, in one commit), plans use an empty base, which deletes nothing
//! (THREE-TREE row 37).

use super::{Notice, SyncEngine};
use crate::http::ApiError;
use crate::remote::RemoteTree;
use crate::seams::{BaseStore, Clock, Server, World};
use crate::state::ServerIdentity;
use crate::Error;
use syncstore_proto::{Cursor, JournalTag, NamespaceId};

impl<W: World> SyncEngine<W> {
    /// Marks base as not to be trusted, for `why`; the next pass re-adopts the folder.
    pub(super) fn distrust(&mut self, why: String) {
        if self.untrusted.is_none() {
            tracing::debug!(why, "base cannot be trusted");
            self.untrusted = Some(why);
        }
        // The journal position is what cannot be trusted: stop checking it.
        self.identity.known = None;
    }

    /// Distrusts base when a server answer says the journal no longer holds the known position
    /// (`diverged`) or names another namespace than base was made against; returns whether
    /// the history is still the known one.
    pub(super) fn check_history(&mut self, diverged: bool, namespace: Option<NamespaceId>) -> bool {
        let mut unchanged = true;
        // The namespace first: a re-adoption saves the one the server has now.
        if let Some(namespace) = namespace {
            if self
                .identity
                .namespace
                .is_some_and(|known| known != namespace)
            {
                self.distrust("the server's account changed while connected".to_owned());
                self.identity.namespace = Some(namespace);
                unchanged = false;
            }
        }
        if diverged {
            self.distrust(
                "the server's journal no longer holds the changes this folder saw: its \
                 database was restored from a backup, or replaced"
                    .to_owned(),
            );
            unchanged = false;
        }
        unchanged
    }

    /// Records a journal position the server answered with, if it is newer than the known one.
    pub(super) fn note_known(&mut self, cursor: Cursor, tag: JournalTag) {
        if self.untrusted.is_some() {
            return;
        }
        if self.identity.known.is_none_or(|(known, _)| cursor >= known) {
            self.identity.known = Some((cursor, tag));
        }
    }

    /// Forgets base and plans as on a first sync: nothing is deleted on either side, local
    /// files the server lacks are uploaded, differing contents become conflicted copies, and
    /// identical files are only recorded (Unison's rule for an archive it cannot trust).
    pub(super) fn readopt(&mut self, why: String) -> Result<(), Error> {
        tracing::warn!(
            folder = %self.disk_root_shown(),
            "{why}; re-adopting the folder as on a first sync: nothing is deleted on either side, \
             files the server lacks are uploaded, and files that differ are kept as conflicted copies"
        );
        let identity = ServerIdentity {
            namespace: self.identity.namespace,
            known: None,
        };
        let stamp = self.clock.local_now().format("%Y-%m-%d %H:%M:%S");
        self.state.readopt(&identity, &format!("{stamp}: {why}"))?;
        self.identity = identity;
        self.saved_identity = identity;
        self.cleared_for_delete.clear();
        self.notices.push(Notice::Readopted { why });
        // The whole tree again, and from now on the journal positions it gives.
        self.remote = None;
        Ok(())
    }

    fn disk_root_shown(&self) -> String {
        use crate::seams::Disk;
        self.disk.root().display().to_string()
    }

    /// Saves the server identity and the root's identity if they changed since they were last
    /// saved (inside a batch, they commit with the batch's base updates).
    pub(super) fn save_identity(&mut self) -> Result<(), Error> {
        if self.untrusted.is_some() {
            return Ok(());
        }
        if self.identity != self.saved_identity {
            crate::state::save_identity(&mut self.state, &self.identity)?;
            self.saved_identity = self.identity;
        }
        if self.saved_root != Some(self.root_id) {
            self.state
                .set_meta("root_id", Some(&self.root_id.to_text()))?;
            self.saved_root = Some(self.root_id);
        }
        Ok(())
    }

    /// Loads who we are and the whole remote tree, once.
    ///
    /// # Errors
    /// When the server cannot be reached or refuses the token.
    pub async fn connect(&mut self) -> Result<(), ApiError> {
        if self.device.is_none() {
            let whoami = self.server.whoami().await?;
            tracing::info!(user = %whoami.user, device = %whoami.device, server = %self.server.describe(), "connected");
            match self.identity.namespace {
                Some(saved) if saved != whoami.namespace => self.distrust(format!(
                    "the server's account {} is not the one this folder was synced with (its \
                     namespace id changed: the account was re-created, or this is another server)",
                    whoami.user
                )),
                None if !self.state.base().is_empty() => self.distrust(
                    "this folder's state does not say which server account it was synced with"
                        .to_owned(),
                ),
                _ => {}
            }
            self.identity.namespace = Some(whoami.namespace);
            self.device = Some(whoami.device);
        }
        if self.remote.is_none() {
            let tree = self.server.tree().await?;
            self.check_history(false, Some(tree.namespace));
            if let Some((known, _)) = self.identity.known {
                if tree.cursor < known {
                    self.distrust(format!(
                        "the server's journal ends at {}, before {known}, which this folder saw: \
                         the server's database was restored from an older backup",
                        tree.cursor
                    ));
                }
            }
            self.remote = Some(RemoteTree::from_listing(
                tree.cursor,
                tree.entries,
                tree.locks,
            ));
            // A new remote tree says nothing about which paths changed.
            self.focus.plan_all = true;
            self.check_my_locks();
        }
        Ok(())
    }

    /// Applies pending remote changes (without waiting for new ones).
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub async fn refresh_remote(&mut self) -> Result<(), ApiError> {
        self.connect().await?;
        loop {
            let cursor = self.remote.as_ref().map(|r| r.cursor).unwrap_or_default();
            let page = self.server.changes(cursor, self.identity.known).await?;
            self.check_history(page.diverged, Some(page.namespace));
            self.wanted = page.wanted.iter().copied().collect();
            if page.reset {
                tracing::warn!(
                    "the server's journal cannot answer from our cursor (it is ahead of the journal, or older than the history kept); reloading the whole tree"
                );
                self.remote = None;
                self.connect().await?;
                continue;
            }
            let remote = self.remote.as_mut().expect("connected");
            for change in &page.changes {
                remote.apply(change, self.device.as_ref());
            }
            remote.cursor = remote.cursor.max(page.cursor);
            self.note_known(page.cursor, page.cursor_tag);
            if !page.more {
                return Ok(());
            }
        }
    }

    /// Whether the server still holds the history this engine knows (its namespace, and the
    /// newest known journal position with its tag); when not, base is distrusted.
    pub(super) async fn history_unchanged(&mut self) -> Result<bool, ApiError> {
        let cursor = self.remote.as_ref().map(|r| r.cursor).unwrap_or_default();
        let page = self.server.changes(cursor, self.identity.known).await?;
        Ok(self.check_history(page.diverged, Some(page.namespace)))
    }
}
