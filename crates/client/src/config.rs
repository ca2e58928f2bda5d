//! The folder's saved settings: `.syncstore/config.json`, readable by the owner only.

use crate::tls::Trust;
use crate::Error;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use syncstore_proto::{CertFingerprint, META_DIR};

/// What `sync DIR --server URL --token TOKEN` saves so that later commands on DIR need no flags.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderConfig {
    /// Server base URLs, tried in order; the client fails over to the next when one stops answering.
    pub servers: Vec<String>,
    /// The device token. Never logged.
    pub token: String,
    /// A PEM file of CA certificates trusted for `https://` servers besides the system's
    /// (`--ca`, saved as an absolute path). Absent in configs saved before TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// The one server certificate accepted (`--pin`), see [`Trust::pin`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<CertFingerprint>,
}

impl std::fmt::Debug for FolderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FolderConfig")
            .field("servers", &self.servers)
            .field("token", &"<redacted>")
            .field("ca", &self.ca)
            .field("pin", &self.pin)
            .finish()
    }
}

/// `DIR/.syncstore`.
pub fn meta_dir(root: &Path) -> PathBuf {
    root.join(META_DIR)
}

fn config_path(root: &Path) -> PathBuf {
    meta_dir(root).join("config.json")
}

impl FolderConfig {
    /// A config of `servers` and `token` that trusts the system's CAs only.
    pub fn new(servers: Vec<String>, token: String) -> FolderConfig {
        FolderConfig {
            servers,
            token,
            ca: None,
            pin: None,
        }
    }

    /// Whom the folder's client trusts for `https://` servers.
    pub fn trust(&self) -> Trust {
        Trust {
            ca: self.ca.clone(),
            pin: self.pin,
        }
    }

    /// Reads the saved config of the folder at `root`, if any.
    ///
    /// # Errors
    /// When the file exists but cannot be read or parsed.
    pub fn load(root: &Path) -> Result<Option<FolderConfig>, Error> {
        let path = config_path(root);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(Error::io(format!("could not read {}", path.display()), err)),
        };
        let config = serde_json::from_str(&text)
            .map_err(|err| Error::Setup(format!("could not parse {}: {err}", path.display())))?;
        Ok(Some(config))
    }

    /// Writes the config atomically with mode 0600, creating `.syncstore/` (mode 0700).
    ///
    /// # Errors
    /// On any IO error.
    pub fn save(&self, root: &Path) -> Result<(), Error> {
        let dir = meta_dir(root);
        create_private_dir(&dir)?;
        let text = serde_json::to_vec_pretty(self)
            .map_err(|err| Error::Setup(format!("could not encode config: {err}")))?;
        crate::fsutil::write_atomic(&config_path(root), &text, 0o600)
    }
}

/// Creates `dir` (mode 0700, whatever the umask) if it does not exist, and narrows it to 0700
/// if others can read it (an older version left it 0755).
///
/// # Errors
/// On any IO error.
pub fn create_private_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => {
            return Err(Error::io(
                format!("could not create {}", dir.display()),
                err,
            ))
        }
    }
    let mode = std::fs::metadata(dir)
        .map_err(|err| Error::io(format!("could not read {}", dir.display()), err))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|err| {
            Error::io(
                format!("could not make {} private (mode 0700)", dir.display()),
                err,
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_saved_before_tls_still_load() {
        let dir = tempfile::tempdir().unwrap();
        create_private_dir(&meta_dir(dir.path())).unwrap();
        let old = r#"{"servers": ["http://127.0.0.1:7070"], "token": "sst_x"}"#;
        std::fs::write(config_path(dir.path()), old).unwrap();
        let loaded = FolderConfig::load(dir.path()).unwrap().unwrap();
        assert_eq!(
            loaded,
            FolderConfig::new(vec!["http://127.0.0.1:7070".to_owned()], "sst_x".to_owned())
        );
        let mut pinned = loaded.clone();
        pinned.ca = Some(PathBuf::from("/etc/syncstore/ca.pem"));
        pinned.pin = Some(CertFingerprint([7; 32]));
        pinned.save(dir.path()).unwrap();
        let text = std::fs::read_to_string(config_path(dir.path())).unwrap();
        assert!(text.contains("sha256:07:07"), "{text}");
        assert_eq!(FolderConfig::load(dir.path()).unwrap(), Some(pinned));
        // Without TLS settings the file looks as it did.
        loaded.save(dir.path()).unwrap();
        let text = std::fs::read_to_string(config_path(dir.path())).unwrap();
        assert!(
            !text.contains("\"pin\"") && !text.contains("\"ca\""),
            "{text}"
        );
    }
}
