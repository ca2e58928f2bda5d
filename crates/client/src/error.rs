//! The client library's error: what went wrong, typed, so the daemon and the CLI can tell a
//! server's refusal from a stopped folder or a disk error without downcasting.

use crate::folder::{AlreadySyncing, FolderStopped};
use crate::http::ApiError;
use crate::state::StateCorrupt;

/// Why an engine call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server refused, or could not be reached.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The folder at the path is not the one being synced (nothing was planned).
    #[error(transparent)]
    FolderStopped(#[from] FolderStopped),
    /// Another process syncs this folder.
    #[error(transparent)]
    AlreadySyncing(#[from] AlreadySyncing),
    /// The state database is corrupt.
    #[error(transparent)]
    StateCorrupt(#[from] StateCorrupt),
    /// A disk operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The state could not be read or saved.
    #[error("{context}: {cause}")]
    State { context: String, cause: String },
    /// A server answer broke the API's promises.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// The engine was opened read-only (for `status`).
    #[error("the folder's state was opened read-only (for status)")]
    ReadOnly,
    /// The folder is not set up, or cannot be opened.
    #[error("{0}")]
    Setup(String),
    /// The user paused syncing; the pass stopped between two chunks.
    #[error("syncing is paused")]
    Paused,
}

impl Error {
    /// An IO error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A state error with what was being done.
    pub fn state(context: impl Into<String>, cause: impl std::fmt::Display) -> Error {
        Error::State {
            context: context.into(),
            cause: cause.to_string(),
        }
    }

    /// The HTTP status of a server refusal, if that is what this is.
    pub fn api_status(&self) -> Option<u16> {
        match self {
            Error::Api(ApiError::Status { status, .. }) => Some(*status),
            _ => None,
        }
    }
}

/// A state database error without more context (reading a row, say).
impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Error {
        Error::state("the state database failed", err)
    }
}
