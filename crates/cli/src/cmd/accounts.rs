//! `syncstore user list|rename|remove` and `syncstore device list|revoke`: offline, against the
//! server's database (which must exist: a mistyped `--data` is refused, not created), with or
//! without servers running on it.

use super::bar::bytes_text;
use super::status::time_text;
use anyhow::Context;
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use syncstore_proto::{DeviceName, UserName};
use syncstore_server::{ChunkLocation, MetaLocation};
use syncstore_store::{DeviceRecord, Revocation};

/// `syncstore user list [--json]`.
///
/// # Errors
/// When the database does not exist or fails.
pub async fn list_users(meta: &MetaLocation, json: bool) -> anyhow::Result<ExitCode> {
    let meta_store = syncstore_server::open_existing_meta_store(meta).await?;
    let accounts = meta_store
        .accounts()
        .await
        .context("could not list the accounts")?;
    let mut out = std::io::stdout().lock();
    if json {
        let accounts: Vec<serde_json::Value> = accounts
            .iter()
            .map(|account| {
                serde_json::json!({
                    "name": account.user.name.as_str(),
                    "devices": account.devices,
                    "created_ms": account.created_ms,
                    "used_bytes": account.used_bytes,
                    "quota_bytes": account.quota_bytes,
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&accounts)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 5]> = accounts
        .iter()
        .map(|account| {
            [
                account.user.name.to_string(),
                account.devices.to_string(),
                account.created_ms.map_or_else(|| "-".to_owned(), time_text),
                bytes_text(account.used_bytes),
                account
                    .quota_bytes
                    .map_or_else(|| "none".to_owned(), bytes_text),
            ]
        })
        .collect();
    write_table(
        &mut out,
        &["USER", "DEVICES", "CREATED", "USED", "QUOTA"],
        &rows,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `syncstore user rename OLD NEW`.
///
/// # Errors
/// When the database does not exist, there is no user OLD, NEW is taken, or a store fails.
pub async fn rename_user(meta: &MetaLocation, old: &str, new: &str) -> anyhow::Result<ExitCode> {
    let (old, new) = (UserName::new(old)?, UserName::new(new)?);
    let meta_store = syncstore_server::open_existing_meta_store(meta).await?;
    if old == new {
        syncstore_server::user_in(&*meta_store, &old).await?;
        println!("user {old} already has that name");
        return Ok(ExitCode::SUCCESS);
    }
    syncstore_server::rename_user_in(&*meta_store, &old, &new).await?;
    println!("renamed user {old} to {new}; its files, devices and tokens are as they were");
    Ok(ExitCode::SUCCESS)
}

/// `syncstore user passwd NAME [--clear]`: the password from a terminal (asked twice) or from
/// one line of standard input, never from argv.
///
/// # Errors
/// When the database does not exist, there is no such user, the password is refused or was
/// typed differently twice, or the store fails.
pub async fn set_password(
    meta: &MetaLocation,
    name: &str,
    clear: bool,
) -> anyhow::Result<ExitCode> {
    let name = UserName::new(name)?;
    let meta_store = syncstore_server::open_existing_meta_store(meta).await?;
    // An unknown user is refused before a password is asked for.
    syncstore_server::user_in(&*meta_store, &name).await?;
    let password = if clear {
        None
    } else {
        Some(read_new_password(&name)?)
    };
    let now_ms = chrono::Utc::now().timestamp_millis();
    syncstore_server::set_password_in(&*meta_store, &name, password.as_deref(), now_ms).await?;
    if clear {
        println!("web sign-in is off for user {name}; their web sessions are ended");
    } else {
        println!("password set for user {name}; they can sign in to the web interface at / (their other web sessions are ended)");
    }
    Ok(ExitCode::SUCCESS)
}

/// A new password: typed twice on a terminal, or one line of standard input.
fn read_new_password(name: &UserName) -> anyhow::Result<String> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("new web password for {name}: "))
            .context("could not read the password")?;
        let again = rpassword::prompt_password("again: ").context("could not read the password")?;
        if first != again {
            anyhow::bail!("the two passwords differ; nothing was changed");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("could not read the password from standard input")?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    };
    syncstore_server::password::check_new_password(&password)?;
    Ok(password)
}

/// `syncstore user remove NAME [--yes]`.
///
/// # Errors
/// When the database does not exist, there is no such user, nobody confirmed, or a store fails.
pub async fn remove_user(
    meta: &MetaLocation,
    chunks: &ChunkLocation,
    name: &str,
    yes: bool,
) -> anyhow::Result<ExitCode> {
    let name = UserName::new(name)?;
    let stores = syncstore_server::open_existing_stores(meta, chunks).await?;
    let user = syncstore_server::user_in(&*stores.meta, &name).await?;
    if !yes {
        let usage = stores
            .meta
            .usage(user.id)
            .await
            .with_context(|| format!("could not read the usage of user {name}"))?;
        let devices = active(&stores.meta.devices(user.id).await?);
        let what = format!(
            "user {name}, its {devices} device(s) and its {} file(s) ({}) with their history \
             and trash",
            usage.current_files,
            bytes_text(usage.current_bytes)
        );
        if !std::io::stdin().is_terminal() {
            anyhow::bail!(
                "not removing {what}: give --yes to remove it (stdin is not a terminal, so \
                 nobody can confirm)"
            );
        }
        eprintln!(
            "This removes {what} from the server, for good; the devices keep their local \
             copies."
        );
        eprint!("Type the user's name to confirm: ");
        std::io::stderr().flush()?;
        let mut typed = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut typed)
            .context("could not read the confirmation")?;
        if typed.trim() != name.as_str() {
            anyhow::bail!("not confirmed; user {name} is kept");
        }
    }
    let removal =
        syncstore_server::remove_user_in(&stores, &name, chrono::Utc::now().timestamp_millis())
            .await?;
    println!(
        "removed user {name}: {} device(s) refused from now on, {} file(s) ({})",
        removal.devices,
        removal.files,
        bytes_text(removal.bytes)
    );
    match removal.deleted {
        Ok((n_chunks, bytes)) => println!(
            "deleted its content: {} in {n_chunks} chunks",
            bytes_text(bytes)
        ),
        Err(err) => eprintln!(
            "warning: the account is removed, but its content could not be deleted now ({err}); \
             the next garbage collection deletes it (`syncstore gc`, or the server's own)"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `syncstore device list [USER] [--json]`.
///
/// # Errors
/// When the database does not exist, there is no such user, or a store fails.
pub async fn list_devices(
    meta: &MetaLocation,
    user: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let meta_store = syncstore_server::open_existing_meta_store(meta).await?;
    let users = match user {
        Some(user) => vec![UserName::new(user)?],
        None => meta_store
            .users()
            .await
            .context("could not list the users")?
            .into_iter()
            .map(|user| user.name)
            .collect(),
    };
    let mut listed: Vec<(UserName, DeviceRecord)> = Vec::new();
    for user in users {
        let devices = syncstore_server::devices_in(&*meta_store, &user).await?;
        listed.extend(devices.into_iter().map(|device| (user.clone(), device)));
    }
    let mut out = std::io::stdout().lock();
    if json {
        let devices: Vec<serde_json::Value> = listed
            .iter()
            .map(|(user, device)| {
                serde_json::json!({
                    "user": user.as_str(),
                    "name": device.name.as_str(),
                    "created_ms": device.created_ms,
                    "last_seen_ms": device.last_seen_ms,
                    "last_address": device.last_address,
                    "revoked_ms": device.revoked_ms,
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&devices)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let optional_time = |ms: Option<i64>| ms.map_or_else(|| "-".to_owned(), time_text);
    let rows: Vec<[String; 6]> = listed
        .iter()
        .map(|(user, device)| {
            [
                user.to_string(),
                device.name.to_string(),
                optional_time(device.created_ms),
                optional_time(device.last_seen_ms),
                device
                    .last_address
                    .clone()
                    .unwrap_or_else(|| "-".to_owned()),
                device.revoked_ms.map_or_else(
                    || "active".to_owned(),
                    |at| format!("revoked {}", time_text(at)),
                ),
            ]
        })
        .collect();
    write_table(
        &mut out,
        &["USER", "DEVICE", "CREATED", "LAST SEEN", "ADDRESS", "STATE"],
        &rows,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `syncstore device revoke USER DEVICE`.
///
/// # Errors
/// When the database does not exist, there is no such user or device, or a store fails.
pub async fn revoke_device(
    meta: &MetaLocation,
    user: &str,
    device: &str,
) -> anyhow::Result<ExitCode> {
    let (user, device) = (UserName::new(user)?, DeviceName::new(device)?);
    let meta_store = syncstore_server::open_existing_meta_store(meta).await?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    match syncstore_server::revoke_device_in(&*meta_store, &user, &device, now_ms).await? {
        Revocation::Revoked { released, .. } => {
            println!(
                "revoked device {device} of user {user}: its token is refused from now on, \
                 on every server of this database"
            );
            for lock in &released {
                println!("released its lock on {}", lock.path);
            }
        }
        Revocation::AlreadyRevoked { revoked_ms } => println!(
            "device {device} of user {user} was revoked already, at {}",
            time_text(revoked_ms)
        ),
        // `revoke_device_in` refuses it with a message.
        Revocation::NoSuchDevice => anyhow::bail!("user {user} has no device {device}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// How many of `devices` are not revoked.
fn active(devices: &[DeviceRecord]) -> usize {
    devices
        .iter()
        .filter(|device| device.revoked_ms.is_none())
        .count()
}

/// Writes `rows` under `header` in columns two spaces apart.
fn write_table<const N: usize>(
    out: &mut impl Write,
    header: &[&str; N],
    rows: &[[String; N]],
) -> std::io::Result<()> {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (idx, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if idx + 1 == N {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        text
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}
