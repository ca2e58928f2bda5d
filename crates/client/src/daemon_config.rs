//! The config file of `syncstore daemon`: which folders one process keeps in sync, and with
//! which server and token. TOML, at `$XDG_CONFIG_HOME/syncstore/config.toml` by default:
//!
//! ```toml
//! scan_interval = 60                   # seconds; optional
//! limit_upload = 10240                 # KiB per second on average, per folder; optional
//!
//! [account]                            # optional: what folders without their own use
//! servers = ["https://sync.example.net:7070"]
//! token_file = "~/.config/syncstore/token"
//! pin = "sha256:3A:…:C4"                # or ca = "~/home-ca.pem", as `sync --pin`/`--ca`
//!
//! [[folder]]
//! path = "~/Sync"
//!
//! [[folder]]
//! path = "~/Work"
//! servers = ["https://work.example.net:7070"]
//! token_file = "~/.config/syncstore/work-token"
//! ```
//!
//! A folder set up before (`syncstore login` or `sync --server … --token …`) needs only its
//! `path`: its saved config is used. A `token` may also be written inline, but then the file
//! must be readable by its owner only.

use crate::Error;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use syncstore_proto::CertFingerprint;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Seconds between full rescans of each folder.
    pub scan_interval: Option<u64>,
    /// Each folder's upload limit, KiB per second on average (0: none).
    pub limit_upload: Option<u64>,
    /// The server and token of folders that name none.
    #[serde(default)]
    pub account: Remote,
    /// The folders, in the order given.
    #[serde(default, rename = "folder")]
    pub folders: Vec<FolderEntry>,
}

/// Where a folder syncs to; every field optional.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remote {
    /// Server URLs, tried in order.
    #[serde(default)]
    pub servers: Vec<String>,
    /// The device token, inline (the file must then be private).
    pub token: Option<String>,
    /// A file holding the device token.
    pub token_file: Option<PathBuf>,
    /// A PEM file of CA certificates to trust (`--ca`).
    pub ca: Option<PathBuf>,
    /// The one server certificate to accept (`--pin`).
    pub pin: Option<CertFingerprint>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("servers", &self.servers)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("ca", &self.ca)
            .field("pin", &self.pin)
            .finish()
    }
}

/// One `[[folder]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderEntry {
    /// The folder (`~` is the home directory).
    pub path: PathBuf,
    /// The folder's own server URLs (else the account's, else its saved config's).
    #[serde(default)]
    pub servers: Vec<String>,
    /// The folder's own token, inline.
    pub token: Option<String>,
    /// The folder's own token file.
    pub token_file: Option<PathBuf>,
    /// The folder's own CA file.
    pub ca: Option<PathBuf>,
    /// The folder's own pinned certificate.
    pub pin: Option<CertFingerprint>,
}

impl FolderEntry {
    /// The folder's remote: its own fields, each falling back to the account's.
    pub fn remote(&self, account: &Remote) -> Remote {
        let own_token = self.token.is_some() || self.token_file.is_some();
        Remote {
            servers: if self.servers.is_empty() {
                account.servers.clone()
            } else {
                self.servers.clone()
            },
            token: if own_token {
                self.token.clone()
            } else {
                account.token.clone()
            },
            token_file: if own_token {
                self.token_file.clone()
            } else {
                account.token_file.clone()
            },
            ca: self.ca.clone().or_else(|| account.ca.clone()),
            pin: self.pin.or(account.pin),
        }
    }
}

/// `$XDG_CONFIG_HOME/syncstore/config.toml`, else `~/.config/syncstore/config.toml`.
pub fn default_path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".config"),
    };
    Some(base.join("syncstore").join("config.toml"))
}

/// `~` or `~/…` against `$HOME`; other paths as they are.
pub fn expand_home(path: &Path) -> PathBuf {
    let Ok(rest) = path.strip_prefix("~") else {
        return path.to_path_buf();
    };
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(rest),
        None => path.to_path_buf(),
    }
}

impl DaemonConfig {
    /// Parses the text of a config file.
    ///
    /// # Errors
    /// [`Error::Setup`] naming the file and what is wrong.
    pub fn parse(text: &str, file: &Path) -> Result<DaemonConfig, Error> {
        let mut config: DaemonConfig = toml::from_str(text)
            .map_err(|err| Error::Setup(format!("{}: {err}", file.display())))?;
        if config.folders.is_empty() {
            return Err(Error::Setup(format!(
                "{} names no folder: add a [[folder]] table with a path",
                file.display()
            )));
        }
        for folder in &mut config.folders {
            folder.path = expand_home(&folder.path);
            folder.token_file = folder.token_file.as_deref().map(expand_home);
            folder.ca = folder.ca.as_deref().map(expand_home);
            if !folder.path.is_absolute() {
                return Err(Error::Setup(format!(
                    "{}: folder path {} must be absolute (or start with ~/)",
                    file.display(),
                    folder.path.display()
                )));
            }
        }
        config.account.token_file = config.account.token_file.as_deref().map(expand_home);
        config.account.ca = config.account.ca.as_deref().map(expand_home);
        let mut seen = std::collections::BTreeSet::new();
        for folder in &config.folders {
            if !seen.insert(&folder.path) {
                return Err(Error::Setup(format!(
                    "{}: folder {} is listed twice",
                    file.display(),
                    folder.path.display()
                )));
            }
        }
        Ok(config)
    }

    /// Reads and parses `file`; one holding an inline token must be private (mode 0600).
    ///
    /// # Errors
    /// When the file cannot be read, does not parse, or holds a token others can read.
    pub fn load(file: &Path) -> Result<DaemonConfig, Error> {
        use std::os::unix::fs::PermissionsExt;
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Setup(format!(
                    "there is no config file {}: write one with a [[folder]] table per folder \
                     (see the README, \"One daemon for all your folders\"), or give --config FILE",
                    file.display()
                )))
            }
            Err(err) => {
                return Err(Error::io(format!("could not read {}", file.display()), err));
            }
        };
        let config = DaemonConfig::parse(&text, file)?;
        let inline_token = config.account.token.is_some()
            || config.folders.iter().any(|folder| folder.token.is_some());
        if inline_token {
            let mode = std::fs::metadata(file)
                .map_err(|err| Error::io(format!("could not read {}", file.display()), err))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(Error::Setup(format!(
                    "{} holds a token and others can read it: chmod 600 it (or use token_file)",
                    file.display()
                )));
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_fall_back_to_the_account() {
        let text = r#"
            scan_interval = 30
            limit_upload = 512
            [account]
            servers = ["https://a:7070", "https://b:7070"]
            token_file = "/etc/syncstore/token"

            [[folder]]
            path = "/home/me/Sync"

            [[folder]]
            path = "/home/me/Work"
            servers = ["https://work:7070"]
            token = "sst_work"
        "#;
        let config = DaemonConfig::parse(text, Path::new("c.toml")).unwrap();
        assert_eq!(config.scan_interval, Some(30));
        assert_eq!(config.limit_upload, Some(512));
        let sync = config.folders[0].remote(&config.account);
        assert_eq!(sync.servers, ["https://a:7070", "https://b:7070"]);
        assert_eq!(
            sync.token_file.as_deref(),
            Some(Path::new("/etc/syncstore/token"))
        );
        let work = config.folders[1].remote(&config.account);
        assert_eq!(work.servers, ["https://work:7070"]);
        assert_eq!(work.token.as_deref(), Some("sst_work"));
        // Its own token: the account's token file is not used.
        assert_eq!(work.token_file, None);
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let err = |text: &str| {
            DaemonConfig::parse(text, Path::new("c.toml"))
                .unwrap_err()
                .to_string()
        };
        assert!(err("").contains("names no folder"));
        assert!(err("[[folder]]\npath = \"rel/dir\"").contains("must be absolute"));
        assert!(err("[[folder]]\npath = \"/a\"\n[[folder]]\npath = \"/a\"").contains("twice"));
        assert!(err("[[folder]]\npath = \"/a\"\nsever = []").contains("unknown field"));
        let redacted = format!(
            "{:?}",
            DaemonConfig::parse(
                "[[folder]]\npath = \"/a\"\ntoken = \"sst_secret\"",
                Path::new("c")
            )
            .unwrap()
            .folders[0]
                .remote(&Remote::default())
        );
        assert!(!redacted.contains("sst_secret"), "{redacted}");
    }

    #[test]
    fn home_is_expanded() {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        if let Some(home) = home {
            assert_eq!(expand_home(Path::new("~/Sync")), home.join("Sync"));
        }
        assert_eq!(expand_home(Path::new("/abs")), Path::new("/abs"));
        assert_eq!(expand_home(Path::new("~user/x")), Path::new("~user/x"));
    }
}
