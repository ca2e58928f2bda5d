//! Offline administration of accounts and devices, on any [`MetaStore`] (and, to remove an
//! account, its [`ChunkStore`]): what `syncstore user list|rename|remove` and `syncstore device
//! list|revoke` call. Servers may be running on the same stores meanwhile: every change here is
//! one transaction serialised on the user, and authentication reads the database on every
//! request, so a revocation or a removal holds on every server from its commit on.

use crate::Stores;
use anyhow::Context;
use syncstore_proto::{DeviceName, UserName};
use syncstore_store::{DeviceRecord, MetaStore, Revocation, User};

/// The account of that name.
///
/// # Errors
/// When there is none, or the store fails.
pub async fn user_in(meta_store: &dyn MetaStore, name: &UserName) -> anyhow::Result<User> {
    meta_store
        .user_by_name(name)
        .await
        .with_context(|| format!("could not look up user {name}"))?
        .with_context(|| format!("there is no user {name} (see `syncstore user list`)"))
}

/// Every device of the user, revoked ones too, by name.
///
/// # Errors
/// When there is no such user, or the store fails.
pub async fn devices_in(
    meta_store: &dyn MetaStore,
    user: &UserName,
) -> anyhow::Result<Vec<DeviceRecord>> {
    let found = user_in(meta_store, user).await?;
    meta_store
        .devices(found.id)
        .await
        .with_context(|| format!("could not list the devices of user {user}"))
}

/// Revokes the user's device at `now_ms` (see [`MetaStore::revoke_device`]).
///
/// # Errors
/// When there is no such user or device, or the store fails.
pub async fn revoke_device_in(
    meta_store: &dyn MetaStore,
    user: &UserName,
    device: &DeviceName,
    now_ms: i64,
) -> anyhow::Result<Revocation> {
    let found = user_in(meta_store, user).await?;
    let revocation = meta_store
        .revoke_device(found.id, device, now_ms)
        .await
        .with_context(|| format!("could not revoke device {device} of user {user}"))?;
    if revocation == Revocation::NoSuchDevice {
        anyhow::bail!("user {user} has no device {device} (see `syncstore device list {user}`)");
    }
    Ok(revocation)
}

/// Sets the user's password for the web interface at `now_ms` (hashed here with argon2id, on a
/// blocking thread), or with `None` turns web sign-in off; either way the user's web sessions
/// end (see [`MetaStore::set_password`]).
///
/// # Errors
/// When there is no such user, the password is too short or too long
/// ([`crate::password::check_new_password`]), or the store fails.
pub async fn set_password_in(
    meta_store: &dyn MetaStore,
    user: &UserName,
    password: Option<&str>,
    now_ms: i64,
) -> anyhow::Result<()> {
    let found = user_in(meta_store, user).await?;
    let phc = match password {
        None => None,
        Some(password) => {
            crate::password::check_new_password(password)?;
            let password = password.to_owned();
            let phc =
                tokio::task::spawn_blocking(move || crate::password::hash_password(&password))
                    .await
                    .context("the password hasher stopped")??;
            Some(phc)
        }
    };
    meta_store
        .set_password(found.id, phc.as_deref(), now_ms)
        .await
        .with_context(|| format!("could not set the password of user {user}"))
}

/// Renames a user; its namespace, devices and tokens stay.
///
/// # Errors
/// When there is no user `old`, `new` is taken, or the store fails.
pub async fn rename_user_in(
    meta_store: &dyn MetaStore,
    old: &UserName,
    new: &UserName,
) -> anyhow::Result<()> {
    let found = user_in(meta_store, old).await?;
    meta_store
        .rename_user(found.id, new)
        .await
        .with_context(|| format!("could not rename user {old} to {new}"))
}

/// What [`remove_user_in`] removed.
#[derive(Clone, Debug)]
pub struct Removal {
    /// Its devices whose tokens worked.
    pub devices: u64,
    /// Its current files and their bytes.
    pub files: u64,
    pub bytes: u64,
    /// The content deleted from the chunk store: chunks and bytes, or why it could not be
    /// deleted now (garbage collection deletes what is left).
    pub deleted: Result<(u64, u64), String>,
}

/// Removes an account at `now_ms`: its devices, files, history and trash from the meta store
/// in one transaction (its tokens are refused from that commit on, on every server), then its
/// content from the chunk store. Content that a request under way on a server stores after
/// that is deleted by garbage collection (see `syncstore_store::gc::collect`).
///
/// # Errors
/// When there is no such user, or the meta store fails; a failure of the chunk store, after
/// the account is gone, is reported in [`Removal::deleted`].
pub async fn remove_user_in(
    stores: &Stores,
    user: &UserName,
    now_ms: i64,
) -> anyhow::Result<Removal> {
    let found = user_in(&*stores.meta, user).await?;
    let usage = stores
        .meta
        .usage(found.id)
        .await
        .with_context(|| format!("could not read the usage of user {user}"))?;
    let devices = stores
        .meta
        .devices(found.id)
        .await
        .with_context(|| format!("could not list the devices of user {user}"))?;
    stores
        .meta
        .remove_user(found.id, now_ms)
        .await
        .with_context(|| format!("could not remove user {user}"))?;
    let deleted = stores
        .chunks
        .delete_all(found.namespace)
        .await
        .map_err(|err| err.to_string());
    Ok(Removal {
        devices: devices
            .iter()
            .filter(|device| device.revoked_ms.is_none())
            .count() as u64,
        files: usage.current_files,
        bytes: usage.current_bytes,
        deleted,
    })
}
