//! [`MemTxn`] and [`MemMetaStore`]: the meta store on plain maps, in memory.
//!
//! [`MemTxn`] is a whole meta store database (users, devices and tokens, every user's tree,
//! journal, locks and wanted chunks) that is its own transaction: it implements the op rules'
//! [`Txn`] and [`MetaTxn`], so the rules of [`crate::ops`] and [`crate::locks`] and the
//! [`MetaStore`] of [`crate::meta`] run over it as over SQLite. Savepoints are copies.
//! [`MemMetaStore`] is that database behind a mutex: a [`MetaStore`] that passes the same
//! conformance suite as the SQL backends.
//!
//! What it is for: the simulation (`syncstore-sim`) drives a [`MemTxn`] directly, with no
//! threads, IO or async, so its runs are deterministic; tests get a [`MemMetaStore`] that needs
//! no file. Nothing survives the process, and every write copies the database (to undo it if it
//! fails), so it is not meant for large trees.
//!
//! Journal tags are not random here: the tag of a position is a hash of the database's *epoch*,
//! the user and the cursor. The same epoch gives the same tags, run after run; another epoch (a
//! database restored from a backup, or lost and re-created) gives other tags at the same
//! cursors, as the random tags of a real store would.

use crate::history::{Deletion, JournalRow};
use crate::meta::{Access, MetaTxn, TxnBackend, TxnFn};
use crate::ops::Txn;
use crate::retention::{Floors, RowKind, RowMeta};
use crate::streams::{StoredStreamPart, StreamHead};
use crate::{
    Account, DeadProp, Device, DeviceId, DeviceRecord, NewSession, Principal, RemovedUser, ShareId,
    ShareRecord, StoreError, TokenHash, User, UserId,
};
use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use syncstore_proto::{
    Change, ChunkHash, Cursor, DeviceName, EntryKind, JournalTag, LockInfo, NamespaceId, NodeId,
    RelPath, RemoteEntry, StreamPart, UserName,
};

#[cfg(doc)]
use crate::MetaStore;

/// A meta store database in memory, which is its own transaction (see the module docs).
///
/// `Default` is an empty database of epoch 0.
#[derive(Clone, Default, Debug)]
pub struct MemTxn {
    users: BTreeMap<UserId, MemUser>,
    devices: BTreeMap<DeviceId, MemDevice>,
    /// Which device holds each token.
    tokens: HashMap<TokenHash, DeviceId>,
    /// Removed users: their ids and namespaces are never handed out again.
    removed: BTreeMap<UserId, MemRemoved>,
    /// Part of every journal tag (see [`MemTxn::set_epoch`]).
    epoch: u64,
    /// Web passwords (argon2 PHC strings) by user.
    passwords: BTreeMap<UserId, String>,
    /// Browser sessions by the hash of their cookie.
    sessions: HashMap<TokenHash, NewSession>,
    /// Share links by id.
    shares: BTreeMap<String, ShareRecord>,
    /// The state at [`Txn::begin_op`], restored by `end_op(false)` (a `SAVEPOINT`).
    savepoint: Option<Box<MemTxn>>,
}

/// One user's account, tree, journal, locks and wanted chunks in a [`MemTxn`].
#[derive(Clone, Debug)]
pub struct MemUser {
    name: UserName,
    namespace: NamespaceId,
    /// The cursor of the last journal row; 0 before the first.
    cursor: u64,
    /// The last node id handed out.
    last_node_id: u64,
    by_path: BTreeMap<RelPath, RemoteEntry>,
    path_of: HashMap<NodeId, RelPath>,
    /// One row per cursor, starting at 1; `None` where compaction removed the row.
    journal: Vec<Option<Change>>,
    /// When each journal row was committed, in cursor order.
    times: Vec<i64>,
    /// The tag of each journal position, in cursor order.
    tags: Vec<JournalTag>,
    locks: BTreeMap<RelPath, LockInfo>,
    wanted: BTreeSet<ChunkHash>,
    /// The last upload stream part position handed out, and the parts stored, by position.
    stream_seq: u64,
    stream_parts: BTreeMap<u64, (DeviceId, StreamPart, i64)>,
    /// WebDAV dead properties by node, then by namespace and name.
    dead_props: BTreeMap<NodeId, BTreeMap<(String, String), DeadProp>>,
    floors: Floors,
    gc_epoch: u64,
    /// Doomed chunks, with the runs that doomed them.
    doomed: BTreeSet<(ChunkHash, i64)>,
    /// The bytes of the current files, and the quota.
    used: u64,
    quota: Option<u64>,
}

/// A device in a [`MemTxn`].
#[derive(Clone, Debug)]
struct MemDevice {
    user_id: UserId,
    name: DeviceName,
    created_ms: i64,
    last_seen_ms: Option<i64>,
    last_address: Option<String>,
    revoked_ms: Option<i64>,
}

/// A removed user in a [`MemTxn`].
#[derive(Clone, Debug)]
struct MemRemoved {
    namespace: NamespaceId,
    removed_ms: i64,
    content_gone: bool,
}

impl MemTxn {
    /// An empty database whose journal tags derive from `epoch`.
    pub fn with_epoch(epoch: u64) -> MemTxn {
        MemTxn {
            epoch,
            ..MemTxn::default()
        }
    }

    /// From now on, new journal positions get the tags of `epoch`: what a database restored
    /// from a backup does, so that the positions it journals anew differ from the lost ones.
    pub fn set_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
    }

    /// A user's account, tree and journal, to read.
    pub fn user(&self, user_id: UserId) -> Option<&MemUser> {
        self.users.get(&user_id)
    }

    fn user_mut(&mut self, user_id: UserId) -> Result<&mut MemUser, StoreError> {
        self.users.get_mut(&user_id).ok_or_else(crate::unknown_user)
    }

    fn existing_user(&self, user_id: UserId) -> Result<&MemUser, StoreError> {
        self.users.get(&user_id).ok_or_else(crate::unknown_user)
    }

    /// The tag of position `cursor` of the user's journal in this epoch.
    fn tag_for(&self, user_id: UserId, cursor: u64) -> JournalTag {
        let mut key = [0u8; 24];
        key[..8].copy_from_slice(&self.epoch.to_le_bytes());
        key[8..16].copy_from_slice(&user_id.0.to_le_bytes());
        key[16..].copy_from_slice(&cursor.to_le_bytes());
        let digest = blake3::hash(&key);
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&digest.as_bytes()[..16]);
        JournalTag(tag)
    }
}

impl MemDevice {
    fn record(&self, id: DeviceId) -> DeviceRecord {
        DeviceRecord {
            id,
            name: self.name.clone(),
            created_ms: Some(self.created_ms),
            last_seen_ms: self.last_seen_ms,
            last_address: self.last_address.clone(),
            revoked_ms: self.revoked_ms,
        }
    }
}

impl MemUser {
    /// The name of the account.
    pub fn name(&self) -> &UserName {
        &self.name
    }

    /// The namespace the account's chunks are keyed by.
    pub fn namespace(&self) -> NamespaceId {
        self.namespace
    }

    /// The cursor of the last journal row (0 before the first).
    pub fn cursor(&self) -> Cursor {
        Cursor(self.cursor)
    }

    /// The tag of journal position `cursor` (all zero for cursor 0), or `None` when the
    /// journal does not reach it.
    pub fn tag_at(&self, cursor: Cursor) -> Option<JournalTag> {
        match cursor.0 {
            0 => Some(JournalTag::default()),
            at => self.tags.get(usize::try_from(at - 1).ok()?).copied(),
        }
    }

    /// Every live node, by path (so a directory comes before everything in it).
    pub fn nodes(&self) -> &BTreeMap<RelPath, RemoteEntry> {
        &self.by_path
    }

    /// The node rows of the journal as (node, path, index), oldest first.
    fn node_rows(&self) -> impl Iterator<Item = (NodeId, &RelPath, usize)> + '_ {
        self.kept().filter_map(|(idx, change)| match change {
            Change::Upsert { entry, .. } => Some((entry.node_id, &entry.path, idx)),
            Change::Delete { node_id, path, .. } => Some((*node_id, path, idx)),
            Change::Lock { .. } | Change::Unlock { .. } => None,
        })
    }

    /// The journal row at `idx` (which compaction kept), with its time.
    fn row(&self, idx: usize) -> JournalRow {
        JournalRow {
            change: self.journal[idx].clone().expect("a kept row"),
            at_ms: self.times[idx],
        }
    }

    /// The kept journal rows with their indexes (cursor − 1), oldest first.
    fn kept(&self) -> impl Iterator<Item = (usize, &Change)> + '_ {
        self.journal
            .iter()
            .enumerate()
            .filter_map(|(idx, change)| Some((idx, change.as_ref()?)))
    }

    /// The whole journal, oldest first: the row of cursor `n` at index `n - 1`, `None` where
    /// compaction removed it.
    pub fn journal(&self) -> &[Option<Change>] {
        &self.journal
    }
}

impl Txn for MemTxn {
    fn begin_op(&mut self) -> Result<(), StoreError> {
        let mut copy = self.clone();
        copy.savepoint = None;
        self.savepoint = Some(Box::new(copy));
        Ok(())
    }

    fn end_op(&mut self, keep: bool) -> Result<(), StoreError> {
        let saved = self
            .savepoint
            .take()
            .ok_or_else(|| StoreError::Corrupt("end_op without begin_op".into()))?;
        if !keep {
            *self = *saved;
        }
        Ok(())
    }

    fn node_at(
        &mut self,
        user_id: UserId,
        path: &RelPath,
    ) -> Result<Option<RemoteEntry>, StoreError> {
        Ok(self
            .user(user_id)
            .and_then(|user| user.by_path.get(path).cloned()))
    }

    fn descendants(
        &mut self,
        user_id: UserId,
        dir: &RelPath,
    ) -> Result<Vec<RemoteEntry>, StoreError> {
        let Some(user) = self.user(user_id) else {
            return Ok(Vec::new());
        };
        Ok(user
            .by_path
            .values()
            .filter(|entry| entry.path.is_inside(dir))
            .cloned()
            .collect())
    }

    fn has_children(&mut self, user_id: UserId, dir: &RelPath) -> Result<bool, StoreError> {
        Ok(self
            .user(user_id)
            .is_some_and(|user| user.by_path.keys().any(|path| path.is_inside(dir))))
    }

    fn next_cursor(&mut self, user_id: UserId) -> Result<Cursor, StoreError> {
        let cursor = self.existing_user(user_id)?.cursor + 1;
        let tag = self.tag_for(user_id, cursor);
        let user = self.user_mut(user_id)?;
        user.cursor = cursor;
        user.tags.truncate(user.journal.len());
        user.tags.push(tag);
        Ok(Cursor(cursor))
    }

    fn current_cursor(&mut self, user_id: UserId) -> Result<Cursor, StoreError> {
        Ok(self.existing_user(user_id)?.cursor())
    }

    fn head_tag(&mut self, user_id: UserId) -> Result<JournalTag, StoreError> {
        let user = self.existing_user(user_id)?;
        Ok(user.tag_at(user.cursor()).unwrap_or_default())
    }

    fn next_node_id(&mut self, user_id: UserId) -> Result<NodeId, StoreError> {
        let user = self.user_mut(user_id)?;
        user.last_node_id += 1;
        Ok(NodeId(user.last_node_id))
    }

    fn put_node(&mut self, user_id: UserId, entry: &RemoteEntry) -> Result<(), StoreError> {
        let user = self.user_mut(user_id)?;
        if let Some(occupant) = user.by_path.get(&entry.path) {
            if occupant.node_id != entry.node_id {
                return Err(StoreError::Corrupt(format!(
                    "{} is taken by another node",
                    entry.path
                )));
            }
        }
        if let Some(old_path) = user.path_of.insert(entry.node_id, entry.path.clone()) {
            user.by_path.remove(&old_path);
        }
        user.by_path.insert(entry.path.clone(), entry.clone());
        Ok(())
    }

    fn remove_node(&mut self, user_id: UserId, node_id: NodeId) -> Result<(), StoreError> {
        let user = self.user_mut(user_id)?;
        if let Some(path) = user.path_of.remove(&node_id) {
            user.by_path.remove(&path);
        }
        Ok(())
    }

    fn append_change(
        &mut self,
        user_id: UserId,
        change: &Change,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let user = self.user_mut(user_id)?;
        if change.cursor().0 != user.journal.len() as u64 + 1 || change.cursor().0 != user.cursor {
            return Err(StoreError::Corrupt(format!(
                "a journal row at cursor {} after {} rows, at cursor {}",
                change.cursor(),
                user.journal.len(),
                user.cursor
            )));
        }
        user.journal.push(Some(change.clone()));
        user.times.push(at_ms);
        Ok(())
    }

    fn doomed_among(
        &mut self,
        user_id: UserId,
        hashes: &[ChunkHash],
    ) -> Result<HashSet<ChunkHash>, StoreError> {
        let user = self.existing_user(user_id)?;
        Ok(hashes
            .iter()
            .filter(|hash| {
                user.doomed
                    .range((**hash, i64::MIN)..=(**hash, i64::MAX))
                    .next()
                    .is_some()
            })
            .copied()
            .collect())
    }

    fn usage(&mut self, user_id: UserId) -> Result<(u64, Option<u64>), StoreError> {
        let user = self.existing_user(user_id)?;
        Ok((user.used, user.quota))
    }

    fn add_used(&mut self, user_id: UserId, delta: i64) -> Result<(), StoreError> {
        let user = self.user_mut(user_id)?;
        user.used = user.used.saturating_add_signed(delta);
        Ok(())
    }

    fn serialize_writes(&mut self, user_id: UserId) -> Result<(), StoreError> {
        // A `MemTxn` has one writer by construction (`&mut`); what is left is the contract's
        // check for an unknown user.
        self.existing_user(user_id).map(|_| ())
    }

    fn lock_rows(&mut self, user_id: UserId) -> Result<Vec<LockInfo>, StoreError> {
        Ok(self
            .user(user_id)
            .map(|user| user.locks.values().cloned().collect())
            .unwrap_or_default())
    }

    fn insert_lock(&mut self, user_id: UserId, lock: &LockInfo) -> Result<(), StoreError> {
        let user = self.user_mut(user_id)?;
        if user.locks.contains_key(&lock.path) {
            return Err(StoreError::Corrupt(format!(
                "{} is locked twice",
                lock.path
            )));
        }
        user.locks.insert(lock.path.clone(), lock.clone());
        Ok(())
    }

    fn remove_lock(&mut self, user_id: UserId, path: &RelPath) -> Result<(), StoreError> {
        self.user_mut(user_id)?.locks.remove(path);
        Ok(())
    }
}

impl MetaTxn for MemTxn {
    fn insert_user(&mut self, name: &UserName, namespace: NamespaceId) -> Result<User, StoreError> {
        if self.users.values().any(|user| user.name == *name) {
            return Err(StoreError::AlreadyExists(format!("user {name}")));
        }
        let last_id = self
            .users
            .keys()
            .chain(self.removed.keys())
            .max()
            .map_or(0, |last| last.0);
        let id = UserId(last_id + 1);
        self.users.insert(
            id,
            MemUser {
                name: name.clone(),
                namespace,
                cursor: 0,
                last_node_id: 0,
                by_path: BTreeMap::new(),
                path_of: HashMap::new(),
                journal: Vec::new(),
                times: Vec::new(),
                tags: Vec::new(),
                locks: BTreeMap::new(),
                wanted: BTreeSet::new(),
                stream_seq: 0,
                stream_parts: BTreeMap::new(),
                dead_props: BTreeMap::new(),
                floors: Floors::default(),
                gc_epoch: 0,
                doomed: BTreeSet::new(),
                used: 0,
                quota: None,
            },
        );
        Ok(User {
            id,
            name: name.clone(),
            namespace,
        })
    }

    fn user_by_name(&mut self, name: &UserName) -> Result<Option<User>, StoreError> {
        Ok(self
            .users
            .iter()
            .find(|(_, user)| user.name == *name)
            .map(|(id, user)| User {
                id: *id,
                name: user.name.clone(),
                namespace: user.namespace,
            }))
    }

    fn users(&mut self) -> Result<Vec<User>, StoreError> {
        let mut users: Vec<User> = self
            .users
            .iter()
            .map(|(id, user)| User {
                id: *id,
                name: user.name.clone(),
                namespace: user.namespace,
            })
            .collect();
        users.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        Ok(users)
    }

    fn count_users(&mut self) -> Result<u64, StoreError> {
        Ok(self.users.len() as u64)
    }

    fn user_by_id(&mut self, user_id: UserId) -> Result<Option<User>, StoreError> {
        Ok(self.user(user_id).map(|user| User {
            id: user_id,
            name: user.name.clone(),
            namespace: user.namespace,
        }))
    }

    fn insert_device(
        &mut self,
        user_id: UserId,
        name: &DeviceName,
        token_hash: &TokenHash,
        now_ms: i64,
    ) -> Result<Device, StoreError> {
        self.existing_user(user_id)?;
        let taken = self
            .devices
            .values()
            .any(|device| device.user_id == user_id && device.name == *name);
        if taken || self.tokens.contains_key(token_hash) {
            return Err(StoreError::AlreadyExists(format!(
                "device {name} or its token"
            )));
        }
        let id = DeviceId(self.devices.keys().next_back().map_or(1, |last| last.0 + 1));
        self.devices.insert(
            id,
            MemDevice {
                user_id,
                name: name.clone(),
                created_ms: now_ms,
                last_seen_ms: None,
                last_address: None,
                revoked_ms: None,
            },
        );
        self.tokens.insert(*token_hash, id);
        Ok(Device {
            id,
            user_id,
            name: name.clone(),
        })
    }

    fn principal(&mut self, token_hash: &TokenHash) -> Result<Option<Principal>, StoreError> {
        let Some(device_id) = self.tokens.get(token_hash) else {
            return Ok(None);
        };
        let device = self
            .devices
            .get(device_id)
            .ok_or_else(|| StoreError::Corrupt(format!("token of a lost device {device_id:?}")))?;
        if device.revoked_ms.is_some() {
            return Ok(None);
        }
        let user = self.existing_user(device.user_id)?;
        Ok(Some(Principal {
            user_id: device.user_id,
            user_name: user.name.clone(),
            namespace: user.namespace,
            device_id: *device_id,
            device_name: device.name.clone(),
        }))
    }

    fn device_by_name(
        &mut self,
        user_id: UserId,
        name: &DeviceName,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        Ok(self
            .devices
            .iter()
            .find(|(_, device)| device.user_id == user_id && device.name == *name)
            .map(|(id, device)| device.record(*id)))
    }

    fn devices(&mut self, user_id: UserId) -> Result<Vec<DeviceRecord>, StoreError> {
        let mut devices: Vec<DeviceRecord> = self
            .devices
            .iter()
            .filter(|(_, device)| device.user_id == user_id)
            .map(|(id, device)| device.record(*id))
            .collect();
        devices.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(devices)
    }

    fn touch_device(
        &mut self,
        device_id: DeviceId,
        now_ms: i64,
        address: &str,
    ) -> Result<(), StoreError> {
        if let Some(device) = self.devices.get_mut(&device_id) {
            if device.revoked_ms.is_none() && device.last_seen_ms.is_none_or(|seen| seen < now_ms) {
                device.last_seen_ms = Some(now_ms);
                device.last_address = Some(address.to_owned());
            }
        }
        Ok(())
    }

    fn revoke_device_row(
        &mut self,
        device_id: DeviceId,
        now_ms: i64,
        dead_hash: &TokenHash,
    ) -> Result<(), StoreError> {
        if let Some(device) = self.devices.get_mut(&device_id) {
            device.revoked_ms = Some(now_ms);
        }
        self.tokens.retain(|_, holder| *holder != device_id);
        self.tokens.insert(*dead_hash, device_id);
        Ok(())
    }

    fn accounts(&mut self) -> Result<Vec<Account>, StoreError> {
        let mut accounts: Vec<Account> = self
            .users
            .iter()
            .map(|(id, user)| {
                let devices = || self.devices.values().filter(|d| d.user_id == *id);
                Account {
                    user: User {
                        id: *id,
                        name: user.name.clone(),
                        namespace: user.namespace,
                    },
                    created_ms: devices().map(|device| device.created_ms).min(),
                    devices: devices().filter(|d| d.revoked_ms.is_none()).count() as u64,
                    used_bytes: user.used,
                    quota_bytes: user.quota,
                }
            })
            .collect();
        accounts.sort_by(|a, b| a.user.name.as_str().cmp(b.user.name.as_str()));
        Ok(accounts)
    }

    fn set_user_name(&mut self, user_id: UserId, name: &UserName) -> Result<(), StoreError> {
        if self
            .users
            .iter()
            .any(|(id, user)| *id != user_id && user.name == *name)
        {
            return Err(StoreError::AlreadyExists(format!("user {name}")));
        }
        self.user_mut(user_id)?.name = name.clone();
        Ok(())
    }

    fn set_password_hash(&mut self, user_id: UserId, phc: Option<&str>) -> Result<(), StoreError> {
        match phc {
            Some(phc) => self.passwords.insert(user_id, phc.to_owned()),
            None => self.passwords.remove(&user_id),
        };
        Ok(())
    }

    fn password_hash(&mut self, user_id: UserId) -> Result<Option<String>, StoreError> {
        Ok(self.passwords.get(&user_id).cloned())
    }

    fn unrevoke_device(&mut self, device_id: DeviceId) -> Result<(), StoreError> {
        if let Some(device) = self.devices.get_mut(&device_id) {
            device.revoked_ms = None;
        }
        Ok(())
    }

    fn insert_session(&mut self, session: &NewSession) -> Result<(), StoreError> {
        if self.sessions.contains_key(&session.id_hash) {
            return Err(StoreError::AlreadyExists(
                "a session with that id".to_owned(),
            ));
        }
        self.sessions.insert(session.id_hash, session.clone());
        Ok(())
    }

    fn session_row(&mut self, id_hash: &TokenHash) -> Result<Option<NewSession>, StoreError> {
        Ok(self.sessions.get(id_hash).cloned())
    }

    fn delete_session(&mut self, id_hash: &TokenHash) -> Result<(), StoreError> {
        self.sessions.remove(id_hash);
        Ok(())
    }

    fn delete_sessions(
        &mut self,
        user_id: UserId,
        before_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        self.sessions.retain(|_, session| {
            session.user_id != user_id
                || before_ms.is_some_and(|before| session.expires_ms >= before)
        });
        Ok(())
    }

    fn insert_share(&mut self, share: &ShareRecord) -> Result<(), StoreError> {
        if self.shares.contains_key(share.id.as_str()) {
            return Err(StoreError::AlreadyExists(
                "a share link with that id".to_owned(),
            ));
        }
        self.shares
            .insert(share.id.as_str().to_owned(), share.clone());
        Ok(())
    }

    fn share_rows(&mut self, user_id: UserId) -> Result<Vec<ShareRecord>, StoreError> {
        let mut shares: Vec<ShareRecord> = self
            .shares
            .values()
            .filter(|share| share.user_id == user_id)
            .cloned()
            .collect();
        shares.sort_by(|a, b| {
            b.created_ms
                .cmp(&a.created_ms)
                .then_with(|| a.id.as_str().cmp(b.id.as_str()))
        });
        Ok(shares)
    }

    fn share_row(&mut self, id: &ShareId) -> Result<Option<ShareRecord>, StoreError> {
        Ok(self.shares.get(id.as_str()).cloned())
    }

    fn set_share_revoked(
        &mut self,
        user_id: UserId,
        id: &ShareId,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        match self.shares.get_mut(id.as_str()) {
            Some(share) if share.user_id == user_id => {
                share.revoked_ms.get_or_insert(now_ms);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn node_by_id(
        &mut self,
        user_id: UserId,
        node_id: NodeId,
    ) -> Result<Option<RemoteEntry>, StoreError> {
        let Some(user) = self.user(user_id) else {
            return Ok(None);
        };
        Ok(user
            .path_of
            .get(&node_id)
            .and_then(|path| user.by_path.get(path))
            .cloned())
    }

    fn remove_user_rows(&mut self, user_id: UserId, now_ms: i64) -> Result<(), StoreError> {
        let user = self
            .users
            .remove(&user_id)
            .ok_or_else(crate::unknown_user)?;
        let gone: HashSet<DeviceId> = self
            .devices
            .iter()
            .filter(|(_, device)| device.user_id == user_id)
            .map(|(id, _)| *id)
            .collect();
        self.devices.retain(|id, _| !gone.contains(id));
        self.tokens.retain(|_, holder| !gone.contains(holder));
        self.passwords.remove(&user_id);
        self.sessions
            .retain(|_, session| session.user_id != user_id);
        self.shares.retain(|_, share| share.user_id != user_id);
        self.removed.insert(
            user_id,
            MemRemoved {
                namespace: user.namespace,
                removed_ms: now_ms,
                content_gone: false,
            },
        );
        Ok(())
    }

    fn removed_users(&mut self) -> Result<Vec<RemovedUser>, StoreError> {
        Ok(self
            .removed
            .iter()
            .filter(|(_, removed)| !removed.content_gone)
            .map(|(id, removed)| RemovedUser {
                user_id: *id,
                namespace: removed.namespace,
                removed_ms: removed.removed_ms,
            })
            .collect())
    }

    fn set_content_gone(&mut self, user_id: UserId, _now_ms: i64) -> Result<(), StoreError> {
        if let Some(removed) = self.removed.get_mut(&user_id) {
            removed.content_gone = true;
        }
        Ok(())
    }

    fn nodes(&mut self, user_id: UserId) -> Result<Vec<RemoteEntry>, StoreError> {
        Ok(self
            .user(user_id)
            .map(|user| user.by_path.values().cloned().collect())
            .unwrap_or_default())
    }

    fn journal_after(
        &mut self,
        user_id: UserId,
        since: Cursor,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        let Some(user) = self.user(user_id) else {
            return Ok(Vec::new());
        };
        let start = usize::try_from(since.0)
            .unwrap_or(usize::MAX)
            .min(user.journal.len());
        Ok(user.journal[start..]
            .iter()
            .flatten()
            .take(limit)
            .cloned()
            .collect())
    }

    fn path_history(
        &mut self,
        user_id: UserId,
        path: &RelPath,
    ) -> Result<Vec<JournalRow>, StoreError> {
        let Some(user) = self.user(user_id) else {
            return Ok(Vec::new());
        };
        let nodes: BTreeSet<NodeId> = user
            .node_rows()
            .filter(|(_, row_path, _)| *row_path == path)
            .map(|(node_id, _, _)| node_id)
            .collect();
        Ok(user
            .node_rows()
            .filter(|(node_id, _, _)| nodes.contains(node_id))
            .map(|(_, _, idx)| user.row(idx))
            .collect())
    }

    fn journal_row(
        &mut self,
        user_id: UserId,
        cursor: Cursor,
    ) -> Result<Option<JournalRow>, StoreError> {
        Ok(self.user(user_id).and_then(|user| {
            let idx = usize::try_from(cursor.0.checked_sub(1)?).ok()?;
            match user.journal.get(idx)?.as_ref()? {
                Change::Upsert { .. } | Change::Delete { .. } => Some(user.row(idx)),
                Change::Lock { .. } | Change::Unlock { .. } => None,
            }
        }))
    }

    fn state_at(
        &mut self,
        user_id: UserId,
        cursor: Cursor,
    ) -> Result<Vec<RemoteEntry>, StoreError> {
        let Some(user) = self.user(user_id) else {
            return Ok(Vec::new());
        };
        let end = usize::try_from(cursor.0)
            .unwrap_or(usize::MAX)
            .min(user.journal.len());
        let mut newest: BTreeMap<NodeId, Option<&RemoteEntry>> = BTreeMap::new();
        for change in user.journal[..end].iter().flatten() {
            match change {
                Change::Upsert { entry, .. } => {
                    newest.insert(entry.node_id, Some(entry));
                }
                Change::Delete { node_id, .. } => {
                    newest.insert(*node_id, None);
                }
                Change::Lock { .. } | Change::Unlock { .. } => {}
            }
        }
        Ok(newest.into_values().flatten().cloned().collect())
    }

    fn deletions_since(
        &mut self,
        user_id: UserId,
        since_ms: i64,
    ) -> Result<Vec<Deletion>, StoreError> {
        let Some(user) = self.user(user_id) else {
            return Ok(Vec::new());
        };
        let mut last: HashMap<NodeId, &RemoteEntry> = HashMap::new();
        let mut out = Vec::new();
        for (idx, change) in user.kept() {
            match change {
                Change::Upsert { entry, .. } => {
                    last.insert(entry.node_id, entry);
                }
                Change::Delete { node_id, .. } => {
                    if let Some(version) = last.remove(node_id) {
                        if user.times[idx] >= since_ms {
                            out.push(Deletion {
                                deleted: user.row(idx),
                                last: version.clone(),
                            });
                        }
                    }
                }
                Change::Lock { .. } | Change::Unlock { .. } => {}
            }
        }
        Ok(out)
    }

    fn cursor_at(&mut self, user_id: UserId, at_ms: i64) -> Result<Cursor, StoreError> {
        let Some(user) = self.user(user_id) else {
            return Ok(Cursor(0));
        };
        Ok(user
            .node_rows()
            .filter(|(_, _, idx)| user.times[*idx] <= at_ms)
            .map(|(_, _, idx)| Cursor(idx as u64 + 1))
            .last()
            .unwrap_or(Cursor(0)))
    }

    fn row_metas(&mut self, user_id: UserId) -> Result<Vec<RowMeta>, StoreError> {
        let user = self.existing_user(user_id)?;
        Ok(user
            .kept()
            .filter_map(|(idx, change)| {
                let (node_id, path, kind) = match change {
                    Change::Upsert { entry, .. } => (
                        entry.node_id,
                        &entry.path,
                        match entry.kind {
                            EntryKind::File => RowKind::File,
                            EntryKind::Dir => RowKind::Dir,
                        },
                    ),
                    Change::Delete { node_id, path, .. } => (*node_id, path, RowKind::Deleted),
                    Change::Lock { .. } | Change::Unlock { .. } => return None,
                };
                Some(RowMeta {
                    cursor: Cursor(idx as u64 + 1),
                    node_id,
                    path: path.clone(),
                    at_ms: user.times[idx],
                    kind,
                })
            })
            .collect())
    }

    fn remove_rows(&mut self, user_id: UserId, cursors: &[Cursor]) -> Result<(), StoreError> {
        let user = self.user_mut(user_id)?;
        for cursor in cursors {
            let idx = usize::try_from(cursor.0.saturating_sub(1)).unwrap_or(usize::MAX);
            if let Some(row) = user.journal.get_mut(idx) {
                if matches!(row, Some(Change::Upsert { .. } | Change::Delete { .. })) {
                    *row = None;
                }
            }
        }
        Ok(())
    }

    fn remove_lock_rows(&mut self, user_id: UserId, upto: Cursor) -> Result<u64, StoreError> {
        let user = self.user_mut(user_id)?;
        let end = usize::try_from(upto.0)
            .unwrap_or(usize::MAX)
            .min(user.journal.len());
        let mut removed = 0;
        for row in &mut user.journal[..end] {
            if matches!(row, Some(Change::Lock { .. } | Change::Unlock { .. })) {
                *row = None;
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn floors(&mut self, user_id: UserId) -> Result<Floors, StoreError> {
        Ok(self.existing_user(user_id)?.floors)
    }

    fn set_floors(&mut self, user_id: UserId, floors: Floors) -> Result<(), StoreError> {
        self.user_mut(user_id)?.floors = floors;
        Ok(())
    }

    fn referenced_chunks(
        &mut self,
        user_id: UserId,
        excluding: &HashSet<Cursor>,
    ) -> Result<HashSet<ChunkHash>, StoreError> {
        let user = self.existing_user(user_id)?;
        let mut referenced: HashSet<ChunkHash> = user
            .by_path
            .values()
            .flat_map(|entry| entry.chunks.iter().map(|chunk| chunk.hash))
            .collect();
        for (idx, change) in user.kept() {
            if let Change::Upsert { entry, .. } = change {
                if !excluding.contains(&Cursor(idx as u64 + 1)) {
                    referenced.extend(entry.chunks.iter().map(|chunk| chunk.hash));
                }
            }
        }
        Ok(referenced)
    }

    fn doom_chunks(
        &mut self,
        user_id: UserId,
        hashes: &[ChunkHash],
        run: i64,
    ) -> Result<(), StoreError> {
        let user = self.user_mut(user_id)?;
        user.doomed.extend(hashes.iter().map(|hash| (*hash, run)));
        Ok(())
    }

    fn end_gc(&mut self, user_id: UserId, run: i64) -> Result<(), StoreError> {
        let user = self.user_mut(user_id)?;
        user.doomed.retain(|(_, doomed_by)| *doomed_by != run);
        user.gc_epoch += 1;
        Ok(())
    }

    fn doomed_runs(&mut self, user_id: UserId) -> Result<Vec<(i64, Vec<ChunkHash>)>, StoreError> {
        let mut runs: BTreeMap<i64, Vec<ChunkHash>> = BTreeMap::new();
        for (hash, run) in &self.existing_user(user_id)?.doomed {
            runs.entry(*run).or_default().push(*hash);
        }
        Ok(runs.into_iter().collect())
    }

    fn kept_file_bytes(&mut self, user_id: UserId) -> Result<u64, StoreError> {
        Ok(self
            .existing_user(user_id)?
            .kept()
            .filter_map(|(_, change)| match change {
                Change::Upsert { entry, .. } if entry.kind == EntryKind::File => Some(entry.size),
                _ => None,
            })
            .sum())
    }

    fn gc_epoch(&mut self, user_id: UserId) -> Result<u64, StoreError> {
        Ok(self.existing_user(user_id)?.gc_epoch)
    }

    fn set_quota(&mut self, user_id: UserId, quota: Option<u64>) -> Result<(), StoreError> {
        self.user_mut(user_id)?.quota = quota;
        Ok(())
    }

    fn row_tag(
        &mut self,
        user_id: UserId,
        cursor: Cursor,
    ) -> Result<Option<JournalTag>, StoreError> {
        Ok(self.user(user_id).and_then(|user| {
            let idx = usize::try_from(cursor.0.checked_sub(1)?).ok()?;
            user.journal.get(idx)?;
            user.tags.get(idx).copied()
        }))
    }

    fn wanted_chunks(
        &mut self,
        user_id: UserId,
        limit: usize,
    ) -> Result<Vec<ChunkHash>, StoreError> {
        Ok(self
            .user(user_id)
            .map(|user| user.wanted.iter().take(limit).copied().collect())
            .unwrap_or_default())
    }

    fn want_chunks(&mut self, user_id: UserId, hashes: &[ChunkHash]) -> Result<usize, StoreError> {
        let user = self.user_mut(user_id)?;
        Ok(hashes
            .iter()
            .filter(|hash| user.wanted.insert(**hash))
            .count())
    }

    fn next_stream_seq(&mut self, user_id: UserId) -> Result<u64, StoreError> {
        let user = self.user_mut(user_id)?;
        user.stream_seq += 1;
        Ok(user.stream_seq)
    }

    fn insert_stream_part(
        &mut self,
        user_id: UserId,
        seq: u64,
        device_id: DeviceId,
        part: &StreamPart,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        self.user_mut(user_id)?
            .stream_parts
            .insert(seq, (device_id, part.clone(), at_ms));
        Ok(())
    }

    fn stream_tail(
        &mut self,
        user_id: UserId,
        stream: &str,
    ) -> Result<Option<(DeviceId, RelPath, u64)>, StoreError> {
        Ok(self.user(user_id).and_then(|user| {
            user.stream_parts
                .values()
                .rev()
                .find(|(_, part, _)| part.stream == stream)
                .map(|(device_id, part, _)| {
                    (
                        *device_id,
                        part.path.clone(),
                        crate::streams::part_end(part.offset, &part.chunks),
                    )
                })
        }))
    }

    fn stream_heads(&mut self, user_id: UserId) -> Result<Vec<StreamHead>, StoreError> {
        let mut heads: BTreeMap<(String, DeviceId), i64> = BTreeMap::new();
        if let Some(user) = self.user(user_id) {
            for (device_id, part, at_ms) in user.stream_parts.values() {
                let last = heads
                    .entry((part.stream.clone(), *device_id))
                    .or_insert(*at_ms);
                *last = (*last).max(*at_ms);
            }
        }
        Ok(heads
            .into_iter()
            .map(|((stream, device_id), last_ms)| StreamHead {
                stream,
                device_id,
                last_ms,
            })
            .collect())
    }

    fn stream_parts_after(
        &mut self,
        user_id: UserId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredStreamPart>, StoreError> {
        let Some(user) = self.user(user_id) else {
            return Ok(Vec::new());
        };
        user.stream_parts
            .range(after.saturating_add(1)..)
            .take(limit)
            .map(|(seq, (device_id, part, at_ms))| {
                let device_name = self
                    .devices
                    .get(device_id)
                    .map(|device| device.name.clone())
                    .ok_or_else(|| StoreError::Corrupt("a stream part of no device".into()))?;
                Ok(StoredStreamPart {
                    seq: *seq,
                    device_id: *device_id,
                    device_name,
                    part: part.clone(),
                    at_ms: *at_ms,
                })
            })
            .collect()
    }

    fn delete_stream(&mut self, user_id: UserId, stream: &str) -> Result<(), StoreError> {
        self.user_mut(user_id)?
            .stream_parts
            .retain(|_, (_, part, _)| part.stream != stream);
        Ok(())
    }

    fn delete_streams_of(
        &mut self,
        user_id: UserId,
        device_id: DeviceId,
        path: &RelPath,
    ) -> Result<(), StoreError> {
        self.user_mut(user_id)?
            .stream_parts
            .retain(|_, (owner, part, _)| *owner != device_id || part.path != *path);
        Ok(())
    }

    fn dead_props(
        &mut self,
        user_id: UserId,
        node_id: NodeId,
    ) -> Result<Vec<DeadProp>, StoreError> {
        Ok(self
            .user(user_id)
            .and_then(|user| user.dead_props.get(&node_id))
            .map(|props| props.values().cloned().collect())
            .unwrap_or_default())
    }

    fn patch_dead_props(
        &mut self,
        user_id: UserId,
        node_id: NodeId,
        patch: &[(bool, DeadProp)],
    ) -> Result<(), StoreError> {
        let user = self.user_mut(user_id)?;
        let props = user.dead_props.entry(node_id).or_default();
        for (set, prop) in patch {
            let key = (prop.namespace.clone(), prop.name.clone());
            if *set {
                props.insert(key, prop.clone());
            } else {
                props.remove(&key);
            }
        }
        if props.is_empty() {
            user.dead_props.remove(&node_id);
        }
        Ok(())
    }

    fn remove_dead_props(&mut self, user_id: UserId, node_id: NodeId) -> Result<(), StoreError> {
        self.user_mut(user_id)?.dead_props.remove(&node_id);
        Ok(())
    }

    fn unwant_chunks(&mut self, user_id: UserId, hashes: &[ChunkHash]) -> Result<(), StoreError> {
        let user = self.user_mut(user_id)?;
        for hash in hashes {
            user.wanted.remove(hash);
        }
        Ok(())
    }
}

/// A [`MetaStore`] in memory: a [`MemTxn`] behind a mutex (see the module docs).
///
/// Clones share one database. `Default` is an empty one of a random epoch, so two stores never
/// hand out the same journal tags.
#[derive(Clone, Debug)]
pub struct MemMetaStore {
    /// Calls take turns: one holds the database for the whole of its transaction.
    db: Arc<Mutex<MemTxn>>,
}

impl Default for MemMetaStore {
    fn default() -> MemMetaStore {
        MemMetaStore::from(MemTxn::with_epoch(rand::random()))
    }
}

impl From<MemTxn> for MemMetaStore {
    fn from(db: MemTxn) -> MemMetaStore {
        MemMetaStore {
            db: Arc::new(Mutex::new(db)),
        }
    }
}

#[async_trait]
impl TxnBackend for MemMetaStore {
    async fn run<T: Send + 'static>(&self, access: Access, f: TxnFn<T>) -> Result<T, StoreError> {
        // Maps in memory: a call is short and never waits, so it runs on the caller's thread.
        let mut db = self.db.lock().map_err(|_| {
            // A panic in the middle of a write may have left half of it behind.
            StoreError::Worker("a call on the in-memory store panicked".into())
        })?;
        match access {
            Access::Read | Access::Snapshot => f(&mut *db),
            Access::Write => {
                let before = db.clone();
                let outcome = f(&mut *db);
                if outcome.is_err() {
                    *db = before;
                }
                outcome
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_the_epoch() {
        let db = MemTxn::with_epoch(1);
        let again = MemTxn::with_epoch(1);
        let other = MemTxn::with_epoch(2);
        assert_eq!(db.tag_for(UserId(1), 1), again.tag_for(UserId(1), 1));
        assert_ne!(db.tag_for(UserId(1), 1), other.tag_for(UserId(1), 1));
        assert_ne!(db.tag_for(UserId(1), 1), db.tag_for(UserId(1), 2));
        assert_ne!(db.tag_for(UserId(1), 1), db.tag_for(UserId(2), 1));
    }
}
