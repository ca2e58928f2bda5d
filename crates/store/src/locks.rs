//! The lock rules, written once against the synchronous [`Txn`] trait, like the op rules in
//! [`crate::ops`].
//!
//! A lock is held by one device of a user on one path. It covers that path and, for a directory,
//! everything beneath it. While it is in force, no other device may take a lock that covers a
//! covered path or lies beneath one, and every op by another device that would change a covered
//! path is refused as [`crate::OpOutcome::Locked`] (see [`crate::ops::apply_batch`]).
//!
//! Time comes in as `now_ms` from the caller; nothing here reads a clock. A lock with
//! `expires_ms <= now_ms` counts as absent: its row is deleted by the next write that looks at
//! the user's locks, and its end is not journalled (every party compares `expires_ms` with its
//! own clock).
//!
//! Taking, renewing, releasing and breaking a lock each append one journal row
//! ([`Change::Lock`], [`Change::Unlock`]) at a fresh cursor, so devices learn of locks through the
//! same change feed as of file changes.
//!
//! # Races
//!
//! "Devices racing to lock the same file: exactly one wins, every time, on every backend."
//! Every entry point that writes first calls [`Txn::serialize_writes`], which makes the
//! transaction the only writer of the user's namespace until it ends; the rules then read the
//! locks and write in that one transaction. As a backstop, [`Txn::insert_lock`] must fail when
//! a row for the same user and path exists (a primary key), so a backend that serialised wrongly
//! fails loudly instead of handing out two locks.

use crate::ops::Txn;
use crate::{quoted, LockOutcome, StoreError, UserId};
use syncstore_proto::{Change, DeviceName, LockInfo, RelPath, MAX_LOCK_TTL_SECS};

/// Takes a lock on `path` for `device`, or renews the lock `device` already holds on `path`.
///
/// - A TTL of 0 or over [`MAX_LOCK_TTL_SECS`]: [`LockOutcome::Invalid`].
/// - Nothing at `path`: [`LockOutcome::NotFound`].
/// - Another device's lock in force covers `path` or lies beneath it: [`LockOutcome::Locked`]
///   with that lock.
/// - `device` already holds a lock on `path`: renewed with the new TTL; it keeps its `since_ms`.
///
/// On success the lock is journalled as [`Change::Lock`].
///
/// # Errors
/// Backend failures; the caller must then roll the transaction back.
pub fn take_lock<T: Txn + ?Sized>(
    txn: &mut T,
    user_id: UserId,
    device: &DeviceName,
    path: &RelPath,
    ttl_secs: Option<u64>,
    now_ms: i64,
) -> Result<LockOutcome, StoreError> {
    let expires_ms = match ttl_secs {
        None => None,
        Some(ttl) if ttl == 0 || ttl > MAX_LOCK_TTL_SECS => {
            return Ok(LockOutcome::Invalid(format!(
                "invalid lock TTL of {ttl} s: it must be from 1 s to {MAX_LOCK_TTL_SECS} s (366 days)"
            )));
        }
        // At most a year of milliseconds, so only an absurd clock could overflow.
        Some(ttl) => Some(now_ms.saturating_add(ttl as i64 * 1000)),
    };
    txn.serialize_writes(user_id)?;
    if txn.node_at(user_id, path)?.is_none() {
        return Ok(LockOutcome::NotFound(format!(
            "nothing at {} to lock",
            quoted(path)
        )));
    }
    let live = expire_and_list_locks(txn, user_id, now_ms)?;
    let in_the_way = live
        .iter()
        .find(|lock| lock.device != *device && (lock.covers(path) || lock.path.is_inside(path)));
    if let Some(lock) = in_the_way {
        return Ok(LockOutcome::Locked(lock.clone()));
    }
    let since_ms = match live.iter().find(|lock| lock.path == *path) {
        // The same device renews: a new TTL, the same start.
        Some(own) => {
            txn.remove_lock(user_id, path)?;
            own.since_ms
        }
        None => now_ms,
    };
    let lock = LockInfo {
        path: path.clone(),
        device: device.clone(),
        since_ms,
        expires_ms,
    };
    txn.insert_lock(user_id, &lock)?;
    let cursor = txn.next_cursor(user_id)?;
    txn.append_change(
        user_id,
        &Change::Lock {
            cursor,
            lock: lock.clone(),
        },
        now_ms,
    )?;
    Ok(LockOutcome::Done { lock, cursor })
}

/// Releases the lock on exactly `path`, or with `force` breaks another device's lock there.
///
/// - No lock in force on `path`: [`LockOutcome::NotFound`] "no lock on PATH".
/// - Another device holds it and `force` is false: [`LockOutcome::Locked`] with its lock.
///
/// Any device of the user may break a lock with `force`: the namespace owns its locks, and a lost
/// laptop must not hold a file for ever. On success the end is journalled as [`Change::Unlock`],
/// with `broken_by` set when another device than the holder ended it. The outcome carries the
/// lock as it was.
///
/// # Errors
/// Backend failures; the caller must then roll the transaction back.
pub fn release_lock<T: Txn + ?Sized>(
    txn: &mut T,
    user_id: UserId,
    device: &DeviceName,
    path: &RelPath,
    force: bool,
    now_ms: i64,
) -> Result<LockOutcome, StoreError> {
    txn.serialize_writes(user_id)?;
    let live = expire_and_list_locks(txn, user_id, now_ms)?;
    let Some(lock) = live.into_iter().find(|lock| lock.path == *path) else {
        return Ok(LockOutcome::NotFound(format!(
            "no lock on {}",
            quoted(path)
        )));
    };
    let broken_by = if lock.device == *device {
        None
    } else if force {
        Some(device.clone())
    } else {
        return Ok(LockOutcome::Locked(lock));
    };
    txn.remove_lock(user_id, path)?;
    let cursor = txn.next_cursor(user_id)?;
    txn.append_change(
        user_id,
        &Change::Unlock {
            cursor,
            path: lock.path.clone(),
            device: lock.device.clone(),
            broken_by,
        },
        now_ms,
    )?;
    Ok(LockOutcome::Done { lock, cursor })
}

/// Every lock of the user in force at `now_ms`, sorted by path. Reads only.
///
/// # Errors
/// Backend failures.
pub fn locks_in_force<T: Txn + ?Sized>(
    txn: &mut T,
    user_id: UserId,
    now_ms: i64,
) -> Result<Vec<LockInfo>, StoreError> {
    let mut locks = txn.lock_rows(user_id)?;
    locks.retain(|lock| lock.in_force(now_ms));
    locks.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(locks)
}

/// Deletes the user's expired lock rows and returns the locks in force, sorted by path: the
/// writing form of [`locks_in_force`].
pub(crate) fn expire_and_list_locks<T: Txn + ?Sized>(
    txn: &mut T,
    user_id: UserId,
    now_ms: i64,
) -> Result<Vec<LockInfo>, StoreError> {
    let mut live = Vec::new();
    for lock in txn.lock_rows(user_id)? {
        if lock.in_force(now_ms) {
            live.push(lock);
        } else {
            txn.remove_lock(user_id, &lock.path)?;
        }
    }
    live.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(live)
}
