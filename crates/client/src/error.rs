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

/// `err` and its causes as one line, "what: why: why", each cause once: a cause whose text a
/// message before it already holds (a `thiserror` message that embeds its source, reqwest's
/// "error sending request for url (…)" at two levels) is left out.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(next) = cause {
        let text = next.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = next.source();
    }
    line
}

#[cfg(test)]
mod chain_tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("could not reach the server: {source}")]
    struct Outer {
        #[source]
        source: Middle,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("error sending request")]
    struct Middle {
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn each_cause_is_printed_once() {
        let err = Outer {
            source: Middle {
                source: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
            },
        };
        assert_eq!(
            error_chain(&err),
            "could not reach the server: error sending request: refused"
        );
    }
}
