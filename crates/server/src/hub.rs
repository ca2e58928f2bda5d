//! [`ChangeHub`]: tells waiting long polls that a user's journal grew.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use syncstore_proto::Cursor;
use syncstore_store::UserId;
use tokio::sync::watch;

/// One `watch` channel per user with waiting long polls, carrying the user's latest cursor.
///
/// The ops and lock handlers call [`ChangeHub::notify`] after each committed change, and `serve`
/// calls it for every notice of the store's change feed (PostgreSQL LISTEN/NOTIFY: commits
/// through other server processes), and, when the feed may have missed notices (it reconnected,
/// or lagged), with the current cursor of each of the [`ChangeHub::waiting_users`].
/// Waiters must [`subscribe`](ChangeHub::subscribe) *before* reading the journal, so a commit
/// between the read and the wait still wakes them.
#[derive(Clone, Default)]
pub struct ChangeHub {
    /// Only users with a waiter have an entry; `notify` drops entries nobody listens to.
    senders: Arc<Mutex<HashMap<UserId, watch::Sender<Cursor>>>>,
}

impl ChangeHub {
    /// A receiver that sees every [`ChangeHub::notify`] for `user_id` from now on.
    pub fn subscribe(&self, user_id: UserId) -> watch::Receiver<Cursor> {
        let mut senders = self
            .senders
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        senders
            .entry(user_id)
            .or_insert_with(|| watch::channel(Cursor(0)).0)
            .subscribe()
    }

    /// Whether anyone waits on `user_id` right now (for metrics and tests).
    pub fn has_waiters(&self, user_id: UserId) -> bool {
        let senders = self
            .senders
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        senders
            .get(&user_id)
            .is_some_and(|sender| sender.receiver_count() > 0)
    }

    /// The users someone waits on right now.
    pub fn waiting_users(&self) -> Vec<UserId> {
        let senders = self
            .senders
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        senders
            .iter()
            .filter(|(_, sender)| sender.receiver_count() > 0)
            .map(|(user_id, _)| *user_id)
            .collect()
    }

    /// Wakes every waiter of `user_id`: the journal now reaches `cursor`.
    pub fn notify(&self, user_id: UserId, cursor: Cursor) {
        let mut senders = self
            .senders
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(sender) = senders.get(&user_id) else {
            return;
        };
        if sender.receiver_count() == 0 {
            senders.remove(&user_id);
            return;
        }
        sender.send_if_modified(|latest| {
            let grew = cursor > *latest;
            if grew {
                *latest = cursor;
            }
            grew
        });
    }
}

impl ChangeHub {
    /// Wakes every waiter of `user_id` without a new change (the wanted chunks changed).
    pub fn wake(&self, user_id: UserId) {
        let senders = self
            .senders
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(sender) = senders.get(&user_id) {
            sender.send_modify(|_| {});
        }
    }
}

impl std::fmt::Debug for ChangeHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeHub").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notify_wakes_subscribers_of_that_user_only() {
        let hub = ChangeHub::default();
        let mut alice = hub.subscribe(UserId(1));
        let bob = hub.subscribe(UserId(2));
        hub.notify(UserId(1), Cursor(3));
        alice.changed().await.unwrap();
        assert_eq!(*alice.borrow_and_update(), Cursor(3));
        assert!(!bob.has_changed().unwrap());
        // An older cursor (a late duplicate) wakes nobody.
        hub.notify(UserId(1), Cursor(2));
        assert!(!alice.has_changed().unwrap());
        assert_eq!(hub.waiting_users().len(), 2);
        drop(bob);
        assert_eq!(hub.waiting_users(), vec![UserId(1)]);
        hub.notify(UserId(2), Cursor(1));
        assert_eq!(hub.senders.lock().unwrap().len(), 1);
    }
}
