//! The [`MetaStore`] written once, over the transactions of any backend.
//!
//! A backend implements two traits and gets [`MetaStore`] from the blanket impl here:
//! - [`MetaTxn`] on its transaction type: the queries (users, devices, the tree, the journal,
//!   the wanted list), on top of the op rules' [`Txn`];
//! - [`TxnBackend`] on its store type: how it runs a closure in a transaction of the
//!   [`Access`] asked for (which connection, which isolation level, when it commits, when it
//!   may run the closure again).
//!
//! What each call means is decided here, once: which reads must agree with each other
//! ([`Access::Snapshot`]), which calls write and so first serialise on the user
//! ([`Txn::serialize_writes`]), how a journal page is cut, and when a commit is announced to
//! the other servers ([`MetaTxn::announce`]). A backend file holds only its SQL (or its maps),
//! its connections, its migrations and its transaction plumbing.
//!
//! **Architecture Invariant:** every writing call runs in one [`Access::Write`] transaction,
//! which the backend commits only when the closure returns `Ok` (refusals included: they may
//! have deleted expired lock rows) and rolls back otherwise.

use crate::gc::{self, GcPolicy, StoredChunk};
use crate::history::{self, Deletion, JournalRow, RestorePlan};
use crate::ops::{self, Txn};
use crate::retention::{self, Compaction, Floors, Retention, RowMeta};
use crate::streams::{self, PartRefused, StoredStreamPart, StreamHead, StreamsPage};
use crate::{
    locks, new_namespace_id, unknown_user, web_device, Account, BatchOutcome, ChangesPage,
    ChunkLens, DeadProp, Device, DeviceId, DeviceRecord, History, LockOutcome, MetaStore,
    NewSession, Principal, RemovedUser, Revocation, Session, ShareId, ShareRecord, StoreError,
    TokenHash, Trash, Tree, User, UserId, WEB_DEVICE,
};
use async_trait::async_trait;
use std::collections::HashSet;
use syncstore_proto::{
    Change, ChunkHash, Cursor, DeviceName, EntryKind, JournalTag, LockInfo, NamespaceId, NodeId,
    Op, RelPath, RemoteEntry, RestoreTarget, StreamPart, TrashQuery, UsageResponse, UserName,
};

/// How a call uses its transaction, for [`TxnBackend::run`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    /// One read statement, which needs no transaction around it.
    Read,
    /// Reads that must agree with each other (a cursor and what it reflects): one snapshot.
    /// SQLite: a deferred transaction; PostgreSQL: `REPEATABLE READ, READ ONLY`.
    Snapshot,
    /// A write: one transaction, committed when the closure returns `Ok` and rolled back when
    /// it fails. The closure calls [`Txn::serialize_writes`] before it reads anything it decides
    /// on. SQLite: `IMMEDIATE`; PostgreSQL: `READ COMMITTED`, so that after waiting for another
    /// server's transaction the closure sees what it committed.
    Write,
}

/// What a call does inside one transaction, for [`TxnBackend::run`]; `Fn`, as the backend
/// may run it more than once.
pub type TxnFn<T> = Box<dyn Fn(&mut dyn MetaTxn) -> Result<T, StoreError> + Send>;

/// A meta store backend: runs closures in its transactions. With [`MetaTxn`] on its
/// transactions, this makes it a [`MetaStore`].
#[async_trait]
pub trait TxnBackend: Send + Sync {
    /// Runs `f` in a transaction of the kind `access` asks for and returns what `f` returned.
    ///
    /// The backend may run `f` again on a new connection when the first one turns out dead,
    /// but only when no earlier run can have committed.
    ///
    /// # Errors
    /// What `f` returns, and the backend's failures to begin or commit.
    async fn run<T: Send + 'static>(&self, access: Access, f: TxnFn<T>) -> Result<T, StoreError>;

    /// As [`MetaStore::ping`].
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be reached.
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// One open transaction of a meta store backend, seen by the [`MetaStore`] written here: the
/// queries beyond the op rules' [`Txn`].
///
/// Every method works inside the transaction. Errors are backend failures, except where a
/// method says otherwise.
pub trait MetaTxn: Txn {
    /// Stores a new user with an empty tree at cursor 0, whose tag is all zero.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] when the name is taken; backend failures.
    fn insert_user(&mut self, name: &UserName, namespace: NamespaceId) -> Result<User, StoreError>;

    /// The user of that name, if any.
    ///
    /// # Errors
    /// Backend failures.
    fn user_by_name(&mut self, name: &UserName) -> Result<Option<User>, StoreError>;

    /// Every user, sorted by name.
    ///
    /// # Errors
    /// Backend failures.
    fn users(&mut self) -> Result<Vec<User>, StoreError>;

    /// How many users exist.
    ///
    /// # Errors
    /// Backend failures.
    fn count_users(&mut self) -> Result<u64, StoreError>;

    /// The account with this id, unless it was removed.
    ///
    /// # Errors
    /// Backend failures.
    fn user_by_id(&mut self, user_id: UserId) -> Result<Option<User>, StoreError>;

    /// Stores a device of an existing user with its token hash, created at `now_ms`.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] when the user has a device of that name or the token hash
    /// is in use; backend failures.
    fn insert_device(
        &mut self,
        user_id: UserId,
        name: &DeviceName,
        token_hash: &TokenHash,
        now_ms: i64,
    ) -> Result<Device, StoreError>;

    /// The device holding the token with this hash, with its user, if any; a revoked device
    /// or a removed user holds none.
    ///
    /// # Errors
    /// Backend failures.
    fn principal(&mut self, token_hash: &TokenHash) -> Result<Option<Principal>, StoreError>;

    /// The user's device of that name (revoked or not), if any.
    ///
    /// # Errors
    /// Backend failures.
    fn device_by_name(
        &mut self,
        user_id: UserId,
        name: &DeviceName,
    ) -> Result<Option<DeviceRecord>, StoreError>;

    /// Every device of the user, revoked ones too, sorted by name.
    ///
    /// # Errors
    /// Backend failures.
    fn devices(&mut self, user_id: UserId) -> Result<Vec<DeviceRecord>, StoreError>;

    /// Records the device as seen at `now_ms` from `address`, unless it is revoked or was
    /// seen later already.
    ///
    /// # Errors
    /// Backend failures.
    fn touch_device(
        &mut self,
        device_id: DeviceId,
        now_ms: i64,
        address: &str,
    ) -> Result<(), StoreError>;

    /// Marks the device revoked at `now_ms` and replaces its token hash with `dead_hash`.
    ///
    /// # Errors
    /// Backend failures.
    fn revoke_device_row(
        &mut self,
        device_id: DeviceId,
        now_ms: i64,
        dead_hash: &TokenHash,
    ) -> Result<(), StoreError>;

    /// Every account that was not removed, with its device count, creation time and usage,
    /// sorted by name.
    ///
    /// # Errors
    /// Backend failures.
    fn accounts(&mut self) -> Result<Vec<Account>, StoreError>;

    /// Gives the user another name.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] when the name is taken; [`StoreError::NotFound`] for an
    /// unknown user; backend failures.
    fn set_user_name(&mut self, user_id: UserId, name: &UserName) -> Result<(), StoreError>;

    /// Deletes every row of the user but its own, which stays, marked removed at `now_ms`
    /// under a name no account can have, so no id or namespace is ever handed out twice.
    ///
    /// # Errors
    /// Backend failures.
    fn remove_user_rows(&mut self, user_id: UserId, now_ms: i64) -> Result<(), StoreError>;

    /// The removed users whose content is not yet known to be gone, by id.
    ///
    /// # Errors
    /// Backend failures.
    fn removed_users(&mut self) -> Result<Vec<RemovedUser>, StoreError>;

    /// Records that the removed user's content is all gone.
    ///
    /// # Errors
    /// Backend failures.
    fn set_content_gone(&mut self, user_id: UserId, now_ms: i64) -> Result<(), StoreError>;

    /// Every node of the user, sorted by path.
    ///
    /// # Errors
    /// Backend failures.
    fn nodes(&mut self, user_id: UserId) -> Result<Vec<RemoteEntry>, StoreError>;

    /// The first `limit` journal rows of the user after `since` (node and lock changes alike),
    /// oldest first.
    ///
    /// # Errors
    /// Backend failures.
    fn journal_after(
        &mut self,
        user_id: UserId,
        since: Cursor,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError>;

    /// Every node row (upserts and deletes) of the nodes that were ever at `path`, oldest
    /// first, with their commit times.
    ///
    /// # Errors
    /// Backend failures.
    fn path_history(
        &mut self,
        user_id: UserId,
        path: &RelPath,
    ) -> Result<Vec<JournalRow>, StoreError>;

    /// The node row at `cursor`, if the journal holds one there (a lock row is not one).
    ///
    /// # Errors
    /// Backend failures.
    fn journal_row(
        &mut self,
        user_id: UserId,
        cursor: Cursor,
    ) -> Result<Option<JournalRow>, StoreError>;

    /// The tree as it was at `cursor`: for every node, its newest row at or before `cursor`
    /// unless that row is a deletion, as an entry whose `rev` is that row's cursor; in any
    /// order.
    ///
    /// # Errors
    /// Backend failures.
    fn state_at(&mut self, user_id: UserId, cursor: Cursor)
        -> Result<Vec<RemoteEntry>, StoreError>;

    /// The deletions of files committed at or after `since_ms`, oldest first, each with the
    /// file's version before it.
    ///
    /// # Errors
    /// Backend failures.
    fn deletions_since(
        &mut self,
        user_id: UserId,
        since_ms: i64,
    ) -> Result<Vec<Deletion>, StoreError>;

    /// The cursor of the newest node row committed at or before `at_ms` (0 when none was).
    ///
    /// # Errors
    /// Backend failures.
    fn cursor_at(&mut self, user_id: UserId, at_ms: i64) -> Result<Cursor, StoreError>;

    /// What retention needs of every node row of the user, ascending by cursor.
    ///
    /// # Errors
    /// Backend failures.
    fn row_metas(&mut self, user_id: UserId) -> Result<Vec<RowMeta>, StoreError>;

    /// Removes the node rows at `cursors`, keeping their tags (compaction).
    ///
    /// # Errors
    /// Backend failures.
    fn remove_rows(&mut self, user_id: UserId, cursors: &[Cursor]) -> Result<(), StoreError>;

    /// Removes the lock rows at or before `upto`, keeping their tags; returns how many.
    ///
    /// # Errors
    /// Backend failures.
    fn remove_lock_rows(&mut self, user_id: UserId, upto: Cursor) -> Result<u64, StoreError>;

    /// Where the user's kept history begins.
    ///
    /// # Errors
    /// Backend failures.
    fn floors(&mut self, user_id: UserId) -> Result<Floors, StoreError>;

    /// Records where the user's kept history begins.
    ///
    /// # Errors
    /// Backend failures.
    fn set_floors(&mut self, user_id: UserId, floors: Floors) -> Result<(), StoreError>;

    /// Every chunk a kept journal row (except those at `excluding`) or a current node of the
    /// user names.
    ///
    /// # Errors
    /// Backend failures.
    fn referenced_chunks(
        &mut self,
        user_id: UserId,
        excluding: &HashSet<Cursor>,
    ) -> Result<HashSet<ChunkHash>, StoreError>;

    /// Records chunks as being deleted by the garbage collection run `run`.
    ///
    /// # Errors
    /// Backend failures.
    fn doom_chunks(
        &mut self,
        user_id: UserId,
        hashes: &[ChunkHash],
        run: i64,
    ) -> Result<(), StoreError>;

    /// Ends the garbage collection run `run`: forgets the chunks it doomed, bumps the user's
    /// `gc_epoch`.
    ///
    /// # Errors
    /// Backend failures.
    fn end_gc(&mut self, user_id: UserId, run: i64) -> Result<(), StoreError>;

    /// The garbage collection runs with doomed rows, each with the chunks it doomed.
    ///
    /// # Errors
    /// Backend failures.
    fn doomed_runs(&mut self, user_id: UserId) -> Result<Vec<(i64, Vec<ChunkHash>)>, StoreError>;

    /// The sizes of every kept file row of the user's journal, added up.
    ///
    /// # Errors
    /// Backend failures.
    fn kept_file_bytes(&mut self, user_id: UserId) -> Result<u64, StoreError>;

    /// The user's `gc_epoch` (see [`crate::gc`]).
    ///
    /// # Errors
    /// Backend failures.
    fn gc_epoch(&mut self, user_id: UserId) -> Result<u64, StoreError>;

    /// Sets (or with `None` lifts) the user's quota in bytes.
    ///
    /// # Errors
    /// Backend failures.
    fn set_quota(&mut self, user_id: UserId, quota: Option<u64>) -> Result<(), StoreError>;

    /// The tag of the user's journal row at `cursor` (1 or more), if the journal holds one.
    ///
    /// # Errors
    /// Backend failures.
    fn row_tag(
        &mut self,
        user_id: UserId,
        cursor: Cursor,
    ) -> Result<Option<JournalTag>, StoreError>;

    /// At most `limit` chunks of the user's wanted list, sorted by hash.
    ///
    /// # Errors
    /// Backend failures.
    fn wanted_chunks(
        &mut self,
        user_id: UserId,
        limit: usize,
    ) -> Result<Vec<ChunkHash>, StoreError>;

    /// Adds chunks to the wanted list; returns how many were not on it yet.
    ///
    /// # Errors
    /// Backend failures.
    fn want_chunks(&mut self, user_id: UserId, hashes: &[ChunkHash]) -> Result<usize, StoreError>;

    /// Drops chunks from the wanted list.
    ///
    /// # Errors
    /// Backend failures.
    fn unwant_chunks(&mut self, user_id: UserId, hashes: &[ChunkHash]) -> Result<(), StoreError>;

    /// Hands out the user's next upload stream part position (never one handed out before).
    ///
    /// # Errors
    /// Backend failures; [`StoreError::NotFound`] for an unknown user.
    fn next_stream_seq(&mut self, user_id: UserId) -> Result<u64, StoreError>;

    /// Stores a part of an upload stream at position `seq`.
    ///
    /// # Errors
    /// Backend failures.
    fn insert_stream_part(
        &mut self,
        user_id: UserId,
        seq: u64,
        device_id: DeviceId,
        part: &StreamPart,
        at_ms: i64,
    ) -> Result<(), StoreError>;

    /// The device, path and end offset of the last part of `stream`.
    ///
    /// # Errors
    /// Backend failures.
    fn stream_tail(
        &mut self,
        user_id: UserId,
        stream: &str,
    ) -> Result<Option<(DeviceId, RelPath, u64)>, StoreError>;

    /// Every stream of the user, with its device and the time of its latest part.
    ///
    /// # Errors
    /// Backend failures.
    fn stream_heads(&mut self, user_id: UserId) -> Result<Vec<StreamHead>, StoreError>;

    /// At most `limit` parts after position `after`, of every device, oldest first.
    ///
    /// # Errors
    /// Backend failures.
    fn stream_parts_after(
        &mut self,
        user_id: UserId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredStreamPart>, StoreError>;

    /// Deletes every part of `stream`.
    ///
    /// # Errors
    /// Backend failures.
    fn delete_stream(&mut self, user_id: UserId, stream: &str) -> Result<(), StoreError>;

    /// Deletes every part of the streams of `path` by `device_id`.
    ///
    /// # Errors
    /// Backend failures.
    fn delete_streams_of(
        &mut self,
        user_id: UserId,
        device_id: DeviceId,
        path: &RelPath,
    ) -> Result<(), StoreError>;

    /// Sets (or clears) the user's password hash.
    ///
    /// # Errors
    /// Backend failures.
    fn set_password_hash(&mut self, user_id: UserId, phc: Option<&str>) -> Result<(), StoreError>;

    /// The user's password hash, if any.
    ///
    /// # Errors
    /// Backend failures.
    fn password_hash(&mut self, user_id: UserId) -> Result<Option<String>, StoreError>;

    /// Clears a device's revocation (only the web interface's device, which has no token).
    ///
    /// # Errors
    /// Backend failures.
    fn unrevoke_device(&mut self, device_id: DeviceId) -> Result<(), StoreError>;

    /// Inserts a session row.
    ///
    /// # Errors
    /// Backend failures.
    fn insert_session(&mut self, session: &NewSession) -> Result<(), StoreError>;

    /// The session row of `id_hash`, expired or not.
    ///
    /// # Errors
    /// Backend failures.
    fn session_row(&mut self, id_hash: &TokenHash) -> Result<Option<NewSession>, StoreError>;

    /// Deletes a session row.
    ///
    /// # Errors
    /// Backend failures.
    fn delete_session(&mut self, id_hash: &TokenHash) -> Result<(), StoreError>;

    /// Deletes the user's sessions that expire before `before_ms` (all of them for `None`).
    ///
    /// # Errors
    /// Backend failures.
    fn delete_sessions(
        &mut self,
        user_id: UserId,
        before_ms: Option<i64>,
    ) -> Result<(), StoreError>;

    /// Inserts a share link row.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] when the id is taken; backend failures.
    fn insert_share(&mut self, share: &ShareRecord) -> Result<(), StoreError>;

    /// The user's share links, newest first.
    ///
    /// # Errors
    /// Backend failures.
    fn share_rows(&mut self, user_id: UserId) -> Result<Vec<ShareRecord>, StoreError>;

    /// The share link `id`.
    ///
    /// # Errors
    /// Backend failures.
    fn share_row(&mut self, id: &ShareId) -> Result<Option<ShareRecord>, StoreError>;

    /// Sets the revocation time of the user's link `id` if it has none; whether the user has
    /// such a link.
    ///
    /// # Errors
    /// Backend failures.
    fn set_share_revoked(
        &mut self,
        user_id: UserId,
        id: &ShareId,
        now_ms: i64,
    ) -> Result<bool, StoreError>;

    /// The current node with that id.
    ///
    /// # Errors
    /// Backend failures.
    fn node_by_id(
        &mut self,
        user_id: UserId,
        node_id: NodeId,
    ) -> Result<Option<RemoteEntry>, StoreError>;
    /// A node's dead properties, sorted by namespace and name.
    ///
    /// # Errors
    /// Backend failures.
    fn dead_props(&mut self, user_id: UserId, node_id: NodeId)
        -> Result<Vec<DeadProp>, StoreError>;

    /// Sets (`true`) or removes (`false`) dead properties of a node.
    ///
    /// # Errors
    /// Backend failures.
    fn patch_dead_props(
        &mut self,
        user_id: UserId,
        node_id: NodeId,
        patch: &[(bool, DeadProp)],
    ) -> Result<(), StoreError>;

    /// Removes every dead property of a node.
    ///
    /// # Errors
    /// Backend failures.
    fn remove_dead_props(&mut self, user_id: UserId, node_id: NodeId) -> Result<(), StoreError>;

    /// Tells the other servers on this store, once the transaction commits and only if it
    /// does, that the user's journal reaches `cursor` (PostgreSQL: `pg_notify`). A store that
    /// only this process uses does nothing.
    ///
    /// # Errors
    /// Backend failures.
    fn announce(&mut self, user_id: UserId, cursor: Cursor) -> Result<(), StoreError> {
        let _ = (user_id, cursor);
        Ok(())
    }
}

#[async_trait]
impl<B: TxnBackend> MetaStore for B {
    #[tracing::instrument(skip(self))]
    async fn create_user(&self, name: &UserName) -> Result<User, StoreError> {
        let name = name.clone();
        // Drawn once, so a run again inserts the same user.
        let namespace = new_namespace_id();
        transact(self, Access::Write, move |txn| {
            txn.insert_user(&name, namespace)
        })
        .await
    }

    async fn user_by_name(&self, name: &UserName) -> Result<Option<User>, StoreError> {
        let name = name.clone();
        transact(self, Access::Read, move |txn| txn.user_by_name(&name)).await
    }

    #[tracing::instrument(skip(self, token_hash))]
    async fn add_device(
        &self,
        user_id: UserId,
        name: &DeviceName,
        token_hash: &TokenHash,
        now_ms: i64,
    ) -> Result<Device, StoreError> {
        if name.as_str() == WEB_DEVICE {
            return Err(StoreError::ReservedDeviceName);
        }
        let name = name.clone();
        let token_hash = *token_hash;
        transact(self, Access::Write, move |txn| {
            txn.serialize_writes(user_id)?;
            let user = txn.user_by_id(user_id)?.ok_or_else(unknown_user)?;
            // Checked first, so the refusal can name the user and say whether the name is
            // retired (a unique violation would end a PostgreSQL transaction).
            if let Some(device) = txn.device_by_name(user_id, &name)? {
                return Err(match device.revoked_ms {
                    Some(_) => StoreError::DeviceNameRetired {
                        user: user.name,
                        device: name.clone(),
                    },
                    None => {
                        StoreError::AlreadyExists(format!("device {name} of user {}", user.name))
                    }
                });
            }
            txn.insert_device(user_id, &name, &token_hash, now_ms)
        })
        .await
    }

    async fn devices(&self, user_id: UserId) -> Result<Vec<DeviceRecord>, StoreError> {
        transact(self, Access::Read, move |txn| txn.devices(user_id)).await
    }

    async fn seen_device(
        &self,
        device_id: DeviceId,
        now_ms: i64,
        address: &str,
    ) -> Result<(), StoreError> {
        let address = address.to_owned();
        // One statement on one row that decides nothing else: no user to serialise on.
        transact(self, Access::Write, move |txn| {
            txn.touch_device(device_id, now_ms, &address)
        })
        .await
    }

    #[tracing::instrument(skip(self))]
    async fn revoke_device(
        &self,
        user_id: UserId,
        name: &DeviceName,
        now_ms: i64,
    ) -> Result<Revocation, StoreError> {
        let name = name.clone();
        transact(self, Access::Write, move |txn| {
            txn.serialize_writes(user_id)?;
            let Some(device) = txn.device_by_name(user_id, &name)? else {
                return Ok(Revocation::NoSuchDevice);
            };
            if let Some(revoked_ms) = device.revoked_ms {
                return Ok(Revocation::AlreadyRevoked { revoked_ms });
            }
            txn.revoke_device_row(device.id, now_ms, &TokenHash(rand::random()))?;
            // A lost laptop must not hold files for ever: its locks end with it, journalled
            // as released by their holder, so every device learns of it.
            let mut released = Vec::new();
            let mut cursor = None;
            for lock in locks::locks_in_force(txn, user_id, now_ms)? {
                if lock.device != name {
                    continue;
                }
                if let LockOutcome::Done { lock, cursor: at } =
                    locks::release_lock(txn, user_id, &name, &lock.path, false, now_ms)?
                {
                    released.push(lock);
                    cursor = Some(at);
                }
            }
            if let Some(cursor) = cursor {
                txn.announce(user_id, cursor)?;
            }
            Ok(Revocation::Revoked {
                revoked_ms: now_ms,
                released,
                cursor,
            })
        })
        .await
    }

    async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        transact(self, Access::Read, |txn| txn.accounts()).await
    }

    #[tracing::instrument(skip(self))]
    async fn rename_user(&self, user_id: UserId, name: &UserName) -> Result<(), StoreError> {
        let name = name.clone();
        transact(self, Access::Write, move |txn| {
            txn.serialize_writes(user_id)?;
            if txn.user_by_name(&name)?.is_some() {
                return Err(StoreError::AlreadyExists(format!("user {name}")));
            }
            txn.set_user_name(user_id, &name)
        })
        .await
    }

    #[tracing::instrument(skip(self))]
    async fn remove_user(&self, user_id: UserId, now_ms: i64) -> Result<(), StoreError> {
        transact(self, Access::Write, move |txn| {
            // Waits for the user's writes under way on any server; those after it find no
            // user (`serialize_writes` fails for a removed one).
            txn.serialize_writes(user_id)?;
            txn.remove_user_rows(user_id, now_ms)
        })
        .await
    }

    async fn removed_users(&self) -> Result<Vec<RemovedUser>, StoreError> {
        transact(self, Access::Read, |txn| txn.removed_users()).await
    }

    async fn content_gone(&self, user_id: UserId, now_ms: i64) -> Result<(), StoreError> {
        transact(self, Access::Write, move |txn| {
            txn.set_content_gone(user_id, now_ms)
        })
        .await
    }

    async fn authenticate(&self, token_hash: &TokenHash) -> Result<Option<Principal>, StoreError> {
        let token_hash = *token_hash;
        transact(self, Access::Read, move |txn| txn.principal(&token_hash)).await
    }

    async fn count_users(&self) -> Result<u64, StoreError> {
        transact(self, Access::Read, |txn| txn.count_users()).await
    }

    async fn users(&self) -> Result<Vec<User>, StoreError> {
        transact(self, Access::Read, |txn| txn.users()).await
    }

    async fn journal_tag(
        &self,
        user_id: UserId,
        cursor: Cursor,
    ) -> Result<Option<JournalTag>, StoreError> {
        transact(self, Access::Snapshot, move |txn| {
            if cursor > txn.current_cursor(user_id)? {
                return Ok(None);
            }
            tag_at(txn, user_id, cursor)
        })
        .await
    }

    async fn wanted_chunks(
        &self,
        user_id: UserId,
        limit: usize,
    ) -> Result<Vec<ChunkHash>, StoreError> {
        transact(self, Access::Read, move |txn| {
            txn.wanted_chunks(user_id, limit)
        })
        .await
    }

    async fn want_chunks(
        &self,
        user_id: UserId,
        hashes: &[ChunkHash],
    ) -> Result<usize, StoreError> {
        let hashes = hashes.to_vec();
        transact(self, Access::Write, move |txn| {
            txn.want_chunks(user_id, &hashes)
        })
        .await
    }

    async fn unwant_chunks(&self, user_id: UserId, hashes: &[ChunkHash]) -> Result<(), StoreError> {
        let hashes = hashes.to_vec();
        transact(self, Access::Write, move |txn| {
            txn.unwant_chunks(user_id, &hashes)
        })
        .await
    }

    async fn add_stream_part(
        &self,
        user_id: UserId,
        device_id: DeviceId,
        part: StreamPart,
        now_ms: i64,
    ) -> Result<Result<u64, PartRefused>, StoreError> {
        transact(self, Access::Write, move |txn| {
            streams::add_part(txn, user_id, device_id, &part, now_ms)
        })
        .await
    }

    async fn stream_parts(
        &self,
        user_id: UserId,
        device_id: DeviceId,
        after: u64,
        limit: usize,
        now_ms: i64,
    ) -> Result<StreamsPage, StoreError> {
        transact(self, Access::Snapshot, move |txn| {
            streams::parts_for(txn, user_id, device_id, after, limit, now_ms)
        })
        .await
    }

    async fn end_streams(
        &self,
        user_id: UserId,
        device_id: DeviceId,
        paths: Vec<RelPath>,
    ) -> Result<(), StoreError> {
        transact(self, Access::Write, move |txn| {
            for path in &paths {
                txn.delete_streams_of(user_id, device_id, path)?;
            }
            Ok(())
        })
        .await
    }

    async fn dead_props(
        &self,
        user_id: UserId,
        node_id: NodeId,
    ) -> Result<Vec<DeadProp>, StoreError> {
        transact(self, Access::Read, move |txn| {
            txn.dead_props(user_id, node_id)
        })
        .await
    }

    async fn patch_dead_props(
        &self,
        user_id: UserId,
        node_id: NodeId,
        patch: Vec<(bool, DeadProp)>,
    ) -> Result<(), StoreError> {
        transact(self, Access::Write, move |txn| {
            txn.patch_dead_props(user_id, node_id, &patch)
        })
        .await
    }

    async fn remove_dead_props(&self, user_id: UserId, node_id: NodeId) -> Result<(), StoreError> {
        transact(self, Access::Write, move |txn| {
            txn.remove_dead_props(user_id, node_id)
        })
        .await
    }

    async fn tree(&self, user_id: UserId, now_ms: i64) -> Result<Tree, StoreError> {
        // One snapshot, so the cursor, the entries and the locks agree.
        transact(self, Access::Snapshot, move |txn| {
            let cursor = txn.current_cursor(user_id)?;
            let entries = txn.nodes(user_id)?;
            let locks = locks::locks_in_force(txn, user_id, now_ms)?;
            let cursor_tag = txn.head_tag(user_id)?;
            Ok(Tree {
                cursor,
                cursor_tag,
                entries,
                locks,
            })
        })
        .await
    }

    async fn changes_since(
        &self,
        user_id: UserId,
        since: Cursor,
        limit: usize,
    ) -> Result<ChangesPage, StoreError> {
        transact(self, Access::Snapshot, move |txn| {
            changes_page(txn, user_id, since, limit)
        })
        .await
    }

    async fn current_cursor(&self, user_id: UserId) -> Result<Cursor, StoreError> {
        transact(self, Access::Read, move |txn| txn.current_cursor(user_id)).await
    }

    #[tracing::instrument(skip(self, ops, chunk_lens), fields(n_ops = ops.len()))]
    async fn apply_ops(
        &self,
        user_id: UserId,
        device: &DeviceName,
        ops: Vec<Op>,
        chunk_lens: ChunkLens,
        now_ms: i64,
        gc_epoch: Option<u64>,
    ) -> Result<BatchOutcome, StoreError> {
        let device = device.clone();
        transact(self, Access::Write, move |txn| {
            let batch = ops::apply_batch(txn, user_id, &device, &ops, &chunk_lens, now_ms)?;
            // Read under the user's lock, which `apply_batch` took first; a failure rolls the
            // whole batch back.
            if let Some(epoch) = gc_epoch {
                if txn.gc_epoch(user_id)? != epoch {
                    return Err(StoreError::GcRaced);
                }
            }
            if batch.changed_anything() {
                txn.announce(user_id, batch.cursor)?;
            }
            Ok(batch)
        })
        .await
    }

    #[tracing::instrument(skip(self))]
    async fn take_lock(
        &self,
        user_id: UserId,
        device: &DeviceName,
        path: &RelPath,
        ttl_secs: Option<u64>,
        now_ms: i64,
    ) -> Result<LockOutcome, StoreError> {
        let (device, path) = (device.clone(), path.clone());
        change_lock(self, user_id, move |txn| {
            locks::take_lock(txn, user_id, &device, &path, ttl_secs, now_ms)
        })
        .await
    }

    #[tracing::instrument(skip(self))]
    async fn release_lock(
        &self,
        user_id: UserId,
        device: &DeviceName,
        path: &RelPath,
        force: bool,
        now_ms: i64,
    ) -> Result<LockOutcome, StoreError> {
        let (device, path) = (device.clone(), path.clone());
        change_lock(self, user_id, move |txn| {
            locks::release_lock(txn, user_id, &device, &path, force, now_ms)
        })
        .await
    }

    async fn locks(&self, user_id: UserId, now_ms: i64) -> Result<Vec<LockInfo>, StoreError> {
        transact(self, Access::Read, move |txn| {
            locks::locks_in_force(txn, user_id, now_ms)
        })
        .await
    }

    async fn history(&self, user_id: UserId, path: &RelPath) -> Result<History, StoreError> {
        let path = path.clone();
        transact(self, Access::Snapshot, move |txn| {
            let rows = txn.path_history(user_id, &path)?;
            let current = txn.node_at(user_id, &path)?;
            Ok(History {
                versions: history::versions(&rows, current.as_ref()),
                kept_since_ms: kept_since(txn, user_id)?,
            })
        })
        .await
    }

    async fn trash(&self, user_id: UserId, query: &TrashQuery) -> Result<Trash, StoreError> {
        let query = query.clone();
        transact(self, Access::Snapshot, move |txn| {
            let kept_since_ms = kept_since(txn, user_id)?;
            let entries = history::trash_in(txn, user_id, &query, kept_since_ms)?;
            Ok(Trash {
                entries: entries.into_iter().map(|(entry, _)| entry).collect(),
                kept_since_ms,
            })
        })
        .await
    }

    async fn plan_restore(
        &self,
        user_id: UserId,
        target: &RestoreTarget,
    ) -> Result<Result<RestorePlan, String>, StoreError> {
        let target = target.clone();
        transact(self, Access::Snapshot, move |txn| {
            let kept_since_ms = kept_since(txn, user_id)?;
            history::plan_restore(txn, user_id, &target, kept_since_ms)
        })
        .await
    }

    async fn compact(
        &self,
        user_id: UserId,
        now_ms: i64,
        retention: Retention,
        dry_run: bool,
    ) -> Result<Compaction, StoreError> {
        if dry_run {
            return transact(self, Access::Snapshot, move |txn| {
                let rows = txn.row_metas(user_id)?;
                let removal = retention::rows_to_remove(&rows, now_ms, retention);
                Ok(Compaction {
                    rows: removal.rows.len() as u64,
                    lock_rows: 0,
                })
            })
            .await;
        }
        transact(self, Access::Write, move |txn| {
            txn.serialize_writes(user_id)?;
            retention::compact(txn, user_id, now_ms, retention)
        })
        .await
    }

    async fn gc_doom(
        &self,
        user_id: UserId,
        listed: &[StoredChunk],
        now_ms: i64,
        grace_ms: i64,
        run: i64,
    ) -> Result<Vec<StoredChunk>, StoreError> {
        let listed = listed.to_vec();
        transact(self, Access::Write, move |txn| {
            txn.serialize_writes(user_id)?;
            gc::doom(txn, user_id, &listed, now_ms, grace_ms, run)
        })
        .await
    }

    async fn gc_unreferenced(
        &self,
        user_id: UserId,
        listed: &[StoredChunk],
        now_ms: i64,
        policy: GcPolicy,
    ) -> Result<Vec<StoredChunk>, StoreError> {
        let listed = listed.to_vec();
        transact(self, Access::Snapshot, move |txn| {
            // As if the journal were compacted first, as a run does.
            let rows = txn.row_metas(user_id)?;
            let removal = retention::rows_to_remove(&rows, now_ms, policy.retention);
            let excluding: HashSet<Cursor> = removal.rows.into_iter().collect();
            gc::unreferenced(txn, user_id, &listed, now_ms, policy.grace_ms, &excluding)
        })
        .await
    }

    async fn gc_finish(&self, user_id: UserId, run: i64) -> Result<(), StoreError> {
        transact(self, Access::Write, move |txn| {
            txn.serialize_writes(user_id)?;
            gc::finish(txn, user_id, run)
        })
        .await
    }

    async fn gc_runs(&self, user_id: UserId) -> Result<Vec<(i64, Vec<ChunkHash>)>, StoreError> {
        transact(self, Access::Read, move |txn| txn.doomed_runs(user_id)).await
    }

    async fn gc_epoch(&self, user_id: UserId) -> Result<u64, StoreError> {
        transact(self, Access::Read, move |txn| txn.gc_epoch(user_id)).await
    }

    async fn usage(&self, user_id: UserId) -> Result<UsageResponse, StoreError> {
        transact(self, Access::Snapshot, move |txn| {
            let (current_bytes, quota_bytes) = txn.usage(user_id)?;
            let floors = txn.floors(user_id)?;
            let trash =
                history::trash_in(txn, user_id, &TrashQuery::default(), floors.kept_since_ms)?;
            let current_files = txn
                .nodes(user_id)?
                .iter()
                .filter(|e| e.kind == EntryKind::File)
                .count() as u64;
            let trash_bytes: u64 = trash.iter().map(|(entry, _)| entry.size).sum();
            let kept = txn.kept_file_bytes(user_id)?;
            Ok(UsageResponse {
                current_bytes,
                current_files,
                history_bytes: kept
                    .saturating_sub(current_bytes)
                    .saturating_sub(trash_bytes),
                trash_bytes,
                trash_files: trash.len() as u64,
                quota_bytes,
                kept_since_ms: floors.kept_since_ms,
            })
        })
        .await
    }

    async fn set_quota(&self, user_id: UserId, quota: Option<u64>) -> Result<(), StoreError> {
        transact(self, Access::Write, move |txn| {
            txn.serialize_writes(user_id)?;
            txn.set_quota(user_id, quota)
        })
        .await
    }

    #[tracing::instrument(skip(self, phc))]
    async fn set_password(
        &self,
        user_id: UserId,
        phc: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let phc = phc.map(str::to_owned);
        // Drawn once, so a run again inserts the same row; no token hashes to random bytes.
        let web_token = TokenHash(rand::random());
        transact(self, Access::Write, move |txn| {
            txn.serialize_writes(user_id)?;
            txn.user_by_id(user_id)?.ok_or_else(unknown_user)?;
            txn.set_password_hash(user_id, phc.as_deref())?;
            match txn.device_by_name(user_id, &web_device())? {
                None => {
                    txn.insert_device(user_id, &web_device(), &web_token, now_ms)?;
                }
                Some(device) if device.revoked_ms.is_some() => txn.unrevoke_device(device.id)?,
                Some(_) => {}
            }
            txn.delete_sessions(user_id, None)
        })
        .await
    }

    async fn login_record(
        &self,
        name: &UserName,
    ) -> Result<Option<(User, Option<String>)>, StoreError> {
        let name = name.clone();
        transact(self, Access::Snapshot, move |txn| {
            let Some(user) = txn.user_by_name(&name)? else {
                return Ok(None);
            };
            let phc = txn.password_hash(user.id)?;
            Ok(Some((user, phc)))
        })
        .await
    }

    async fn user_by_id(&self, user_id: UserId) -> Result<Option<User>, StoreError> {
        transact(self, Access::Read, move |txn| txn.user_by_id(user_id)).await
    }

    async fn create_session(&self, session: &NewSession) -> Result<(), StoreError> {
        let session = session.clone();
        transact(self, Access::Write, move |txn| {
            txn.serialize_writes(session.user_id)?;
            txn.user_by_id(session.user_id)?.ok_or_else(unknown_user)?;
            txn.delete_sessions(session.user_id, Some(session.created_ms))?;
            txn.insert_session(&session)
        })
        .await
    }

    async fn session(
        &self,
        id_hash: &TokenHash,
        now_ms: i64,
    ) -> Result<Option<Session>, StoreError> {
        let id_hash = *id_hash;
        transact(self, Access::Snapshot, move |txn| {
            let Some(row) = txn.session_row(&id_hash)? else {
                return Ok(None);
            };
            if row.expires_ms <= now_ms {
                return Ok(None);
            }
            let Some(user) = txn.user_by_id(row.user_id)? else {
                return Ok(None);
            };
            let principal = match row.share_id {
                Some(_) => None,
                None => {
                    let Some(device) = txn.device_by_name(user.id, &web_device())? else {
                        return Ok(None);
                    };
                    if device.revoked_ms.is_some() {
                        return Ok(None);
                    }
                    Some(Principal {
                        user_id: user.id,
                        user_name: user.name,
                        namespace: user.namespace,
                        device_id: device.id,
                        device_name: device.name,
                    })
                }
            };
            Ok(Some(Session {
                user_id: row.user_id,
                principal,
                share_id: row.share_id,
                csrf: row.csrf,
                expires_ms: row.expires_ms,
            }))
        })
        .await
    }

    async fn end_session(&self, id_hash: &TokenHash) -> Result<(), StoreError> {
        let id_hash = *id_hash;
        // One statement on one row that decides nothing else.
        transact(self, Access::Write, move |txn| txn.delete_session(&id_hash)).await
    }

    async fn create_share(&self, share: &ShareRecord) -> Result<(), StoreError> {
        let share = share.clone();
        transact(self, Access::Write, move |txn| {
            txn.serialize_writes(share.user_id)?;
            txn.user_by_id(share.user_id)?.ok_or_else(unknown_user)?;
            txn.insert_share(&share)
        })
        .await
    }

    async fn shares(&self, user_id: UserId) -> Result<Vec<ShareRecord>, StoreError> {
        transact(self, Access::Read, move |txn| txn.share_rows(user_id)).await
    }

    async fn share(&self, id: &ShareId) -> Result<Option<ShareRecord>, StoreError> {
        let id = id.clone();
        transact(self, Access::Read, move |txn| txn.share_row(&id)).await
    }

    async fn revoke_share(
        &self,
        user_id: UserId,
        id: &ShareId,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let id = id.clone();
        transact(self, Access::Write, move |txn| {
            txn.serialize_writes(user_id)?;
            txn.set_share_revoked(user_id, &id, now_ms)
        })
        .await
    }

    async fn node(
        &self,
        user_id: UserId,
        node_id: NodeId,
    ) -> Result<Option<RemoteEntry>, StoreError> {
        transact(self, Access::Read, move |txn| {
            txn.node_by_id(user_id, node_id)
        })
        .await
    }

    async fn entry(
        &self,
        user_id: UserId,
        path: &RelPath,
    ) -> Result<Option<RemoteEntry>, StoreError> {
        let path = path.clone();
        transact(self, Access::Read, move |txn| txn.node_at(user_id, &path)).await
    }

    async fn entries_under(
        &self,
        user_id: UserId,
        dir: Option<&RelPath>,
    ) -> Result<Vec<RemoteEntry>, StoreError> {
        let dir = dir.cloned();
        transact(self, Access::Read, move |txn| {
            let mut entries = match &dir {
                Some(dir) => txn.descendants(user_id, dir)?,
                None => txn.nodes(user_id)?,
            };
            entries.sort_by(|a, b| a.path.as_str().cmp(b.path.as_str()));
            Ok(entries)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        TxnBackend::ping(self).await
    }
}

/// Runs `f` through [`TxnBackend::run`], boxed.
async fn transact<B, T, F>(backend: &B, access: Access, f: F) -> Result<T, StoreError>
where
    B: TxnBackend + ?Sized,
    T: Send + 'static,
    F: Fn(&mut dyn MetaTxn) -> Result<T, StoreError> + Send + 'static,
{
    backend.run(access, Box::new(f)).await
}

/// Up to `limit` changes after `since`, oldest first, read inside `txn` (one snapshot): what
/// [`MetaStore::changes_since`] answers, and what the simulation's server answers too.
///
/// # Errors
/// Backend failures.
pub fn changes_page(
    txn: &mut dyn MetaTxn,
    user_id: UserId,
    since: Cursor,
    limit: usize,
) -> Result<ChangesPage, StoreError> {
    let current = txn.current_cursor(user_id)?;
    // Ahead of the journal, or behind rows compaction removed: reload the tree.
    if since > current || since < txn.floors(user_id)?.journal_floor {
        return Ok(ChangesPage {
            cursor: current,
            cursor_tag: txn.head_tag(user_id)?,
            changes: Vec::new(),
            more: false,
            reset: true,
        });
    }
    // One more than the page holds says whether more follow.
    let mut changes = txn.journal_after(user_id, since, limit.saturating_add(1))?;
    let more = changes.len() > limit;
    changes.truncate(limit);
    let cursor = changes.last().map_or(since, Change::cursor);
    let cursor_tag = tag_at(txn, user_id, cursor)?
        .ok_or_else(|| StoreError::Corrupt(format!("no journal row at cursor {cursor}")))?;
    Ok(ChangesPage {
        cursor,
        cursor_tag,
        changes,
        more,
        reset: false,
    })
}

/// The time before which the user's history is no longer kept (0: all of it is).
fn kept_since(txn: &mut dyn MetaTxn, user_id: UserId) -> Result<i64, StoreError> {
    Ok(txn.floors(user_id)?.kept_since_ms)
}

/// The tag of the user's journal position `cursor`: all zero for cursor 0.
fn tag_at(
    txn: &mut dyn MetaTxn,
    user_id: UserId,
    cursor: Cursor,
) -> Result<Option<JournalTag>, StoreError> {
    if cursor.0 == 0 {
        return Ok(Some(JournalTag::default()));
    }
    txn.row_tag(user_id, cursor)
}

/// Runs a lock rule in one write transaction, and announces the change it made (a refusal
/// changed no journal).
async fn change_lock<B, F>(backend: &B, user_id: UserId, rule: F) -> Result<LockOutcome, StoreError>
where
    B: TxnBackend + ?Sized,
    F: Fn(&mut dyn MetaTxn) -> Result<LockOutcome, StoreError> + Send + 'static,
{
    transact(backend, Access::Write, move |txn| {
        let outcome = rule(txn)?;
        if let LockOutcome::Done { cursor, .. } = &outcome {
            txn.announce(user_id, *cursor)?;
        }
        Ok(outcome)
    })
    .await
}
