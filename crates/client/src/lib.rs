//! The syncstore client: keeps one local folder and the server in sync, both ways.
//!
//! Layout: [`engine`] is one sync pass (refresh remote, scan, plan with `syncstore-plan`, apply),
//! over the [`seams`] of a [`seams::World`] (production: the real disk, the HTTP client, the
//! system clock and the SQLite state; the simulation: its own); [`daemon`] runs passes when the
//! watcher, the long poll, the rescan timer or a retry says so; [`scan`] walks the folder
//! (handing the chunks of large files to [`early_upload`] as it cuts them); [`state`] persists
//! the base tree in `.syncstore/`; [`remote`] keeps the server's tree; [`http`] talks to the API
//! with failover, trusting `https://` servers as [`tls`] says; [`config`] is the saved
//! settings; [`progress`] is what the engine is doing, as shared memory, which the daemon
//! serves on its [`control`] socket.
//!
//! Architecture Invariant: the client never decides what to do itself; it asks the pure
//! planner, applies the ops with their re-checks, and records base after each step.

pub mod base_chunks;
pub mod case_fold;
pub mod config;
pub mod control;
pub mod daemon;
pub mod daemon_config;
pub mod early_upload;
pub mod engine;
mod error;
pub mod folder;
pub mod fsutil;
pub mod http;
pub mod prefetch;
mod production;
pub mod progress;
pub mod rate_limit;
pub mod remote;
pub mod scan;
pub mod seams;
pub mod state;
pub mod stream_follower;
pub mod tls;

pub use config::FolderConfig;
pub use engine::{Engine, Notice, PassReport, Preview, SyncEngine};
pub use error::{error_chain, Error};
pub use http::{ApiClient, ApiError};
pub use progress::Progress;
pub use tls::Trust;
