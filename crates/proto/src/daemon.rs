//! The daemon's local control socket, and the machine-readable output of `syncstore status`.
//!
//! A running `syncstore sync` daemon listens on `.syncstore/daemon.sock` (a Unix socket, mode
//! 0600, in the 0700 `.syncstore/`). The protocol is line-delimited JSON: each request is one
//! line of a [`DaemonRequest`] (at most [`MAX_REQUEST_LINE`] bytes), each answer one line of a
//! [`DaemonReply`]. Besides status, pause and resume, a request can allow the deletions the
//! mass-delete interlock holds ([`DaemonRequest::AllowMassDelete`]). `syncstore status --json`
//! prints a [`FolderStatus`], also when no daemon runs (then `daemon` is
//! [`DaemonState::NotRunning`] and the counts come from a comparison with the server).
//!
//! These types cross a process boundary, like the HTTP API's: they are defined here and
//! nowhere else.

use serde::{Deserialize, Serialize};

/// The socket's file name inside the folder's `.syncstore/`.
pub const DAEMON_SOCKET: &str = "daemon.sock";
/// The longest request line the daemon reads (the newline included); longer ones get an
/// error reply and the connection is closed.
pub const MAX_REQUEST_LINE: usize = 4096;
/// The most paths listed per kind of pending step, and of skipped or blocked paths, in a
/// [`FolderStatus`]; the counts are always complete.
pub const MAX_LISTED_PATHS: usize = 10_000;

/// One request to the daemon.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum DaemonRequest {
    /// The daemon's [`FolderStatus`].
    Status,
    /// Stop syncing: no pass starts, the running one is abandoned at its next await.
    Pause,
    /// Sync again, at once.
    Resume,
    /// Apply the local deletions the mass-delete interlock holds now, once (`syncstore sync
    /// DIR --allow-mass-delete`): the daemon's next plan is made without the interlock.
    AllowMassDelete,
}

/// The daemon's answer to one request.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum DaemonReply {
    /// Boxed: a status is large, the other replies small.
    Status(Box<FolderStatus>),
    /// A pause or resume was taken; the state now.
    Done { state: DaemonState },
    /// The allowance was taken: the daemon's next pass applies the deletions held, if any
    /// (`held`: what its last plan held; `None` when it held nothing).
    MassDeleteAllowed { held: Option<MassDeleteHold> },
    /// The request was not understood (malformed, too long) or could not be served.
    Error { message: String },
}

/// Whether a daemon syncs the folder.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DaemonState {
    Running,
    Paused,
    /// No daemon answers on the folder's socket (`status` compared with the server itself).
    #[default]
    NotRunning,
}

/// What `syncstore status` reports about a folder, from the daemon or from a comparison.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct FolderStatus {
    /// The synced folder.
    pub folder: String,
    pub daemon: DaemonState,
    /// The daemon's process id.
    pub pid: Option<u32>,
    /// A pass is under way right now.
    pub syncing: bool,
    /// The server in use.
    pub server: String,
    /// Nothing is pending or blocked: the last completed pass (or the comparison) found the
    /// folder and the server in sync. Skipped paths do not count against it.
    pub in_sync: bool,
    /// When the last pass completed, milliseconds since the Unix epoch.
    pub last_pass_ms: Option<i64>,
    pub pending: Pending,
    /// Each file whose bytes are moving now.
    pub transfers: Vec<Transfer>,
    /// The transfers of the pass under way, when it has any.
    pub progress: Option<BatchProgress>,
    /// Why the last pass failed, when it did (cleared by a pass that completes).
    pub last_error: Option<String>,
    /// Paths that are not synced (symlinks, names the other side cannot hold, ...).
    pub skipped: Vec<PathReason>,
    /// Paths whose changes wait (another device's lock, a missing folder root, a mass delete
    /// held).
    pub blocked: Vec<PathReason>,
    /// The local deletions the mass-delete interlock holds, when it holds any
    /// (`syncstore sync DIR --allow-mass-delete` applies them).
    #[serde(default)]
    pub mass_delete_held: Option<MassDeleteHold>,
    /// Other things to know (the folder will be re-adopted, was re-adopted).
    pub notes: Vec<String>,
    /// Passes that walked the whole folder.
    pub full_walks: u64,
    /// Passes that looked only at what changed.
    pub incremental_passes: u64,
}

/// The steps the last plan left to do, by kind.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Pending {
    pub uploads: PendingKind,
    pub downloads: PendingKind,
    pub local_deletes: PendingKind,
    pub remote_deletes: PendingKind,
    /// Renames, new directories, mode changes, conflicted copies.
    pub other: PendingKind,
}

impl Pending {
    /// Steps of every kind.
    pub fn total_files(&self) -> u64 {
        [
            &self.uploads,
            &self.downloads,
            &self.local_deletes,
            &self.remote_deletes,
            &self.other,
        ]
        .iter()
        .map(|kind| kind.files)
        .sum()
    }
}

/// Pending steps of one kind.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct PendingKind {
    pub files: u64,
    /// The sizes of the files concerned.
    pub bytes: u64,
    /// The paths, at most [`MAX_LISTED_PATHS`].
    pub paths: Vec<String>,
}

/// Which way a transfer goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Upload,
    Download,
}

/// One file whose bytes are moving.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Transfer {
    pub path: String,
    pub direction: Direction,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// Transfers since the pass under way started.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct BatchProgress {
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub elapsed_ms: u64,
    /// Bytes per second since the pass started.
    pub bytes_per_sec: u64,
    /// Seconds left at that rate; `None` before any byte moved.
    pub eta_secs: Option<u64>,
}

/// What the mass-delete interlock holds: `files` of the folder's `folder_files` files were
/// deleted on the server, and are not deleted locally until the user allows it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct MassDeleteHold {
    pub files: u64,
    pub folder_files: u64,
}

/// A path and why it is not synced.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct PathReason {
    pub path: String,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_tagged_object_and_unknown_ones_are_refused() {
        let line = serde_json::to_string(&DaemonRequest::Pause).unwrap();
        assert_eq!(line, r#"{"request":"pause"}"#);
        assert_eq!(
            serde_json::from_str::<DaemonRequest>(r#"{"request":"status"}"#).unwrap(),
            DaemonRequest::Status
        );
        assert!(serde_json::from_str::<DaemonRequest>(r#"{"request":"rm -rf"}"#).is_err());
        assert!(serde_json::from_str::<DaemonRequest>("status").is_err());
        assert_eq!(
            serde_json::to_string(&DaemonRequest::AllowMassDelete).unwrap(),
            r#"{"request":"allow_mass_delete"}"#
        );
    }

    #[test]
    fn a_held_mass_delete_is_one_object_and_an_older_status_reads_as_none() {
        let status = FolderStatus {
            mass_delete_held: Some(MassDeleteHold {
                files: 250,
                folder_files: 300,
            }),
            ..FolderStatus::default()
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(
            json["mass_delete_held"],
            serde_json::json!({"files": 250, "folder_files": 300})
        );
        let mut older = serde_json::to_value(FolderStatus::default()).unwrap();
        older.as_object_mut().unwrap().remove("mass_delete_held");
        let read: FolderStatus = serde_json::from_value(older).unwrap();
        assert_eq!(read.mass_delete_held, None);
        let reply = DaemonReply::MassDeleteAllowed {
            held: status.mass_delete_held,
        };
        let line = serde_json::to_string(&reply).unwrap();
        assert_eq!(
            line,
            r#"{"reply":"mass_delete_allowed","held":{"files":250,"folder_files":300}}"#
        );
    }

    #[test]
    fn a_status_reply_round_trips() {
        let status = FolderStatus {
            folder: "/home/me/Sync".into(),
            daemon: DaemonState::Paused,
            pid: Some(42),
            transfers: vec![Transfer {
                path: "big.iso".into(),
                direction: Direction::Download,
                bytes_done: 10,
                bytes_total: 100,
            }],
            ..FolderStatus::default()
        };
        let line = serde_json::to_string(&DaemonReply::Status(Box::new(status.clone()))).unwrap();
        assert!(line.starts_with(r#"{"reply":"status","folder":"#), "{line}");
        assert_eq!(
            serde_json::from_str::<DaemonReply>(&line).unwrap(),
            DaemonReply::Status(Box::new(status))
        );
    }
}
