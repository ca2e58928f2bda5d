//! Locks: which are in force for other devices (a planner input), and what the user is told
//! about this device's own, as typed [`Notice`]s.
//!
//! Invariant: a notice about a lock is given once per loss: a lock broken by another device
//! (from the journal) or missing from a fresh listing (released, broken or expired while this
//! device was away) is reported, and not again while it stays gone.

use super::SyncEngine;
use crate::seams::{Clock, World};
use std::collections::BTreeMap;
use syncstore_proto::{DeviceName, RelPath};

/// Something the user should be told about (the CLI prints them, the daemon logs them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Another device broke this device's lock.
    LockBroken { path: RelPath, by: DeviceName },
    /// This device's lock is gone (released, broken or expired while away).
    LockGone { path: RelPath },
    /// The folder was re-adopted as on a first sync.
    Readopted { why: String },
    /// A file waits for room on the server.
    UploadWaits { path: RelPath, size: u64 },
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::LockBroken { path, by } => write!(f, "your lock on {path} was broken by {by}"),
            Notice::LockGone { path } => write!(f, "your lock on {path} is no longer held"),
            Notice::Readopted { why } => write!(
                f,
                "{why}; the folder was re-adopted as on a first sync (nothing deleted)"
            ),
            Notice::UploadWaits { path, size } => write!(
                f,
                "{path} ({size} bytes) waits: the server's storage is full"
            ),
        }
    }
}

impl Notice {
    /// The path of a lock this notice is about.
    fn lock_path(&self) -> Option<&RelPath> {
        match self {
            Notice::LockBroken { path, .. } | Notice::LockGone { path } => Some(path),
            _ => None,
        }
    }
}

impl<W: World> SyncEngine<W> {
    /// Locks in force now that another device holds.
    pub fn locked_by_others(&self) -> BTreeMap<RelPath, DeviceName> {
        let now_ms = self.clock.now_ms();
        let Some(remote) = self.remote.as_ref() else {
            return BTreeMap::new();
        };
        remote
            .locks
            .values()
            .filter(|lock| lock.in_force(now_ms) && Some(&lock.device) != self.device.as_ref())
            .map(|lock| (lock.path.clone(), lock.device.clone()))
            .collect()
    }

    /// When the next lock in force ends by itself (a pass is due then), in ms since the epoch.
    pub fn next_lock_expiry_ms(&self) -> Option<i64> {
        let now_ms = self.clock.now_ms();
        self.remote
            .as_ref()?
            .locks
            .values()
            .filter_map(|lock| lock.expires_ms)
            .filter(|end| *end > now_ms)
            .min()
    }

    /// Reports locks of this device that are gone: broken by another device (from the journal)
    /// or missing from a fresh listing (released, broken or expired while we were away).
    pub(super) fn check_my_locks(&mut self) {
        let (Some(remote), Some(me)) = (self.remote.as_mut(), self.device.as_ref()) else {
            return;
        };
        for (path, by) in remote.broken_locks.drain(..) {
            tracing::warn!(%path, by = %by, "your lock on {path} was broken by {by}");
            self.notices.push(Notice::LockBroken { path, by });
        }
        let now_ms = self.clock.now_ms();
        let held: BTreeMap<RelPath, i64> = remote
            .locks
            .values()
            .filter(|lock| &lock.device == me && lock.in_force(now_ms))
            .map(|lock| (lock.path.clone(), lock.since_ms))
            .collect();
        let mut remembered = crate::state::my_locks(&self.state).unwrap_or_default();
        for path in remote.released_locks.drain(..) {
            remembered.remove(&path);
        }
        for path in remembered.keys() {
            let told = self.notices.iter().any(|n| n.lock_path() == Some(path));
            if !held.contains_key(path) && !told {
                tracing::warn!(%path, "your lock on {path} is no longer held (released, broken or expired)");
                self.notices.push(Notice::LockGone { path: path.clone() });
            }
        }
        if held != remembered && !self.read_only {
            if let Err(err) = crate::state::set_my_locks(&mut self.state, &held) {
                tracing::warn!(cause = %err, "could not save lock state");
            }
        }
    }
}
