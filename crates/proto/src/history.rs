//! Wire types of version history, the trash and restores.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /api/v1/history?path=P` | | [`HistoryResponse`]: every kept version of the file at `P` (and of the files that were at `P` before), oldest first |
//! | `GET /api/v1/trash[?prefix=P&since_ms=T&by=DEVICE]` | | [`TrashResponse`]: the deleted files still kept, newest deletion first |
//! | `POST /api/v1/restore` | [`RestoreRequest`] | [`RestoreResponse`] |
//! | `GET /api/v1/usage` | | [`UsageResponse`] |
//!
//! Times are milliseconds since the Unix epoch, server clock. A restore is made of ordinary
//! conditional ops that the server applies on the asking device's behalf: each is journalled,
//! so every device gets it like any change, and what it replaces stays in history.

use crate::{ContentHash, Cursor, DeviceName, RelPath, Revision};
use serde::{Deserialize, Serialize};

/// What one journal row did to a file.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionKind {
    /// Content (or mode) written: created, replaced, restored.
    File,
    /// The same content moved here from another path.
    Moved,
    /// Deleted.
    Deleted,
}

/// One version of a file.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Version {
    /// The journal position that made this version: what `restore --rev` names.
    pub rev: Revision,
    /// When the server committed it.
    pub at_ms: i64,
    pub kind: VersionKind,
    /// The path the file had in this version.
    pub path: RelPath,
    /// Bytes (0 for a deletion).
    pub size: u64,
    /// The content hash; `None` for a deletion.
    pub hash: Option<ContentHash>,
    /// The device that made it.
    pub device: DeviceName,
    #[serde(default)]
    pub executable: bool,
    /// This version is the file's current state.
    #[serde(default)]
    pub current: bool,
}

/// `GET /api/v1/history` answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HistoryResponse {
    pub path: RelPath,
    /// Oldest first.
    pub versions: Vec<Version>,
    /// History older than this is no longer kept (0: all of it is).
    pub kept_since_ms: i64,
}

/// `GET /api/v1/trash` query.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrashQuery {
    /// Only files under this directory (or this path itself).
    #[serde(default)]
    pub prefix: Option<RelPath>,
    /// Only files deleted at or after this time.
    #[serde(default)]
    pub since_ms: Option<i64>,
    /// Only files deleted by this device.
    #[serde(default)]
    pub by: Option<DeviceName>,
}

/// A deleted file that can be restored.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct TrashEntry {
    pub path: RelPath,
    /// The journal position of the deletion.
    pub deleted_rev: Revision,
    pub deleted_at_ms: i64,
    pub deleted_by: DeviceName,
    /// The last version before the deletion: what a restore brings back.
    pub rev: Revision,
    pub size: u64,
    pub hash: ContentHash,
}

/// `GET /api/v1/trash` answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrashResponse {
    /// Newest deletion first.
    pub entries: Vec<TrashEntry>,
    pub kept_since_ms: i64,
}

/// `POST /api/v1/restore`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RestoreRequest {
    pub target: RestoreTarget,
    /// Say what would be done, do nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What to restore.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RestoreTarget {
    /// The file version journalled at `rev` becomes the current content of `path` (or of `to`,
    /// beside it, which must not exist yet).
    Version {
        path: RelPath,
        rev: Revision,
        #[serde(default)]
        to: Option<RelPath>,
    },
    /// Everything at and under `path` (the whole namespace when `None`) as it was at `at_ms`:
    /// files changed since get their old content, files deleted since come back, files created
    /// since are deleted (so they are in the trash). With `to`, the old state is put at `to`
    /// (which must not exist yet) instead, and nothing current is changed.
    Moment {
        #[serde(default)]
        path: Option<RelPath>,
        at_ms: i64,
        #[serde(default)]
        to: Option<RelPath>,
    },
    /// The files in the trash that match (as [`TrashQuery`]) come back at their paths.
    Deleted {
        #[serde(default)]
        prefix: Option<RelPath>,
        #[serde(default)]
        since_ms: Option<i64>,
        #[serde(default)]
        by: Option<DeviceName>,
    },
}

/// What a restore did (or, in a dry run, would do) to one path.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreAction {
    /// Given its old content back.
    Reverted,
    /// Brought back from the trash (or recreated).
    Undeleted,
    /// Created since the moment: deleted, so it is in the trash.
    Trashed,
    /// An old directory made again.
    MadeDir,
}

/// One step of a restore.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RestoreStep {
    pub path: RelPath,
    pub action: RestoreAction,
    /// The version brought back (`None` for `trashed` and `made_dir`).
    #[serde(default)]
    pub rev: Option<Revision>,
    #[serde(default)]
    pub size: u64,
    /// Empty when it was applied (or in a dry run); why not otherwise (it changed meanwhile,
    /// a lock, content no longer kept).
    #[serde(default)]
    pub error: String,
}

/// `POST /api/v1/restore` answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RestoreResponse {
    /// Every step, in the order applied.
    pub steps: Vec<RestoreStep>,
    /// Paths already as asked: nothing to do.
    pub unchanged: u64,
    pub dry_run: bool,
    /// The journal position after the restore.
    pub cursor: Cursor,
}

impl RestoreResponse {
    /// How many steps failed.
    pub fn failed(&self) -> usize {
        self.steps
            .iter()
            .filter(|step| !step.error.is_empty())
            .count()
    }

    /// How many steps of `action` went (or would go) through.
    pub fn count(&self, action: RestoreAction) -> usize {
        self.steps
            .iter()
            .filter(|step| step.action == action && step.error.is_empty())
            .count()
    }
}

/// `GET /api/v1/history` query.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HistoryQuery {
    pub path: RelPath,
}

/// `GET /api/v1/usage` answer: logical sizes (a file's bytes, however many chunks it shares
/// with others).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UsageResponse {
    /// The user's current files.
    pub current_bytes: u64,
    pub current_files: u64,
    /// Older versions kept (not counting the trash).
    pub history_bytes: u64,
    /// Deleted files kept.
    pub trash_bytes: u64,
    pub trash_files: u64,
    /// The most `current_bytes` may reach; `None`: no quota.
    #[serde(default)]
    pub quota_bytes: Option<u64>,
    /// History older than this is no longer kept (0: all of it is).
    pub kept_since_ms: i64,
}
