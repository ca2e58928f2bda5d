//! Where a command's PATH argument points: a path inside a synced folder names that folder's
//! server and the path in it; anything else is a path in the namespace of the server given by
//! flags, or of the synced folder around the current directory.

use crate::cli::RemoteArgs;
use anyhow::Context;
use std::path::{Path, PathBuf};
use syncstore_client::{ApiClient, ApiError, FolderConfig};
use syncstore_proto::RelPath;

/// Where a command's PATH argument points: the API to ask and the path in the namespace.
pub struct Target {
    pub api: ApiClient,
    pub path: RelPath,
}

/// A local path inside a synced folder names that folder's server; anything else is a path in the
/// namespace of the server given by flags, or of the synced folder around the current directory.
pub fn resolve(path_arg: &str, remote: &RemoteArgs) -> anyhow::Result<Target> {
    let local = Path::new(path_arg);
    let absolute = if local.is_absolute() {
        local.to_path_buf()
    } else {
        std::env::current_dir()?.join(local)
    };
    if let Some((folder, rel)) = inside_synced_folder(&absolute) {
        let saved = FolderConfig::load(&folder)?.context("synced folder has no config")?;
        let config =
            super::merge_remote(remote, Some(saved))?.context("synced folder has no server")?;
        return Ok(Target {
            api: super::api_client(&config)?,
            path: rel,
        });
    }
    anyhow::ensure!(
        !local.is_absolute(),
        "{path_arg} is not inside a synced folder"
    );
    let path = RelPath::new(path_arg.trim_start_matches("./").trim_end_matches('/'))
        .with_context(|| format!("invalid path {path_arg:?}"))?;
    Ok(Target {
        api: super::api_from(remote)?,
        path,
    })
}

/// The synced folder containing `absolute` (which need not exist) and the path inside it.
fn inside_synced_folder(absolute: &Path) -> Option<(PathBuf, RelPath)> {
    // Resolve what exists (symlinks in the folder's own path, `..`), keep the rest as written.
    let mut existing = absolute.to_path_buf();
    let mut rest = Vec::new();
    while !existing.exists() {
        rest.push(existing.file_name()?.to_owned());
        existing = existing.parent()?.to_path_buf();
    }
    let mut resolved = existing.canonicalize().ok()?;
    for part in rest.into_iter().rev() {
        resolved.push(part);
    }
    let folder = resolved.ancestors().find(|dir| {
        dir.join(syncstore_proto::META_DIR)
            .join("config.json")
            .is_file()
    })?;
    let rel = resolved.strip_prefix(folder).ok()?;
    let rel = RelPath::new(rel.to_str()?).ok()?;
    Some((folder.to_path_buf(), rel))
}

/// As [`resolve`], but the path may be a synced folder's root or absent (the folder around the
/// current directory, or the server of the flags): then it is the whole namespace (`None`).
///
/// # Errors
/// When no server is known, or the path is not valid in the namespace.
pub fn resolve_prefix(
    path_arg: Option<&str>,
    remote: &RemoteArgs,
) -> anyhow::Result<(ApiClient, Option<RelPath>)> {
    let Some(path_arg) = path_arg else {
        return Ok((super::api_from(remote)?, None));
    };
    let local = Path::new(path_arg);
    let absolute = if local.is_absolute() {
        local.to_path_buf()
    } else {
        std::env::current_dir()?.join(local)
    };
    if let Ok(resolved) = absolute.canonicalize() {
        if resolved
            .join(syncstore_proto::META_DIR)
            .join("config.json")
            .is_file()
        {
            let saved = FolderConfig::load(&resolved)?.context("synced folder has no config")?;
            let config =
                super::merge_remote(remote, Some(saved))?.context("synced folder has no server")?;
            return Ok((super::api_client(&config)?, None));
        }
    }
    let target = resolve(path_arg, remote)?;
    Ok((target.api, Some(target.path)))
}

/// A path in the namespace for an argument like NEWPATH: inside a synced folder, its path
/// there; otherwise the text as a namespace path.
///
/// # Errors
/// When it is neither.
pub fn namespace_path(path_arg: &str) -> anyhow::Result<RelPath> {
    let local = Path::new(path_arg);
    let absolute = if local.is_absolute() {
        local.to_path_buf()
    } else {
        std::env::current_dir()?.join(local)
    };
    if let Some((_, rel)) = inside_synced_folder(&absolute) {
        return Ok(rel);
    }
    anyhow::ensure!(
        !local.is_absolute(),
        "{path_arg} is not inside a synced folder"
    );
    RelPath::new(path_arg.trim_start_matches("./").trim_end_matches('/'))
        .with_context(|| format!("invalid path {path_arg:?}"))
}

/// An API error as the message the server gave, when it gave one.
pub fn api_message(err: ApiError) -> anyhow::Error {
    match err {
        ApiError::Status { message, .. } => anyhow::anyhow!(message),
        other => other.into(),
    }
}
