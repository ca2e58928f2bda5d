//! The shipped wiring: an [`Engine`] over the real folder, the HTTP client, the system clock
//! and the SQLite state in `.syncstore/`.

use crate::engine::{Engine, SyncEngine};
use crate::folder::{FolderId, FolderLock};
use crate::http::ApiClient;
use crate::seams::{OsDisk, SystemClock};
use crate::state::StateDb;
use crate::Error;
use std::path::Path;
use std::sync::Arc;

impl SyncEngine<crate::seams::Production> {
    /// Opens the folder at `root` for syncing: takes its lock (one process per folder), clears
    /// the temp files of an interrupted run and opens its state. Talks to no server yet.
    ///
    /// # Errors
    /// When another process syncs the folder, `.syncstore/` cannot be created, or its state
    /// cannot be read.
    pub fn open(root: &Path, api: Arc<ApiClient>) -> Result<Engine, Error> {
        let meta_dir = crate::config::meta_dir(root);
        crate::config::create_private_dir(&meta_dir)?;
        // Before anything in `.syncstore/` is touched: `tmp/` below may hold a running
        // daemon's downloads.
        let lock = FolderLock::acquire(root, &meta_dir)?;
        let tmp_dir = meta_dir.join("tmp");
        crate::config::create_private_dir(&tmp_dir)?;
        // Temp files of an interrupted run are garbage: their content was never placed.
        if let Ok(entries) = std::fs::read_dir(&tmp_dir) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let state = StateDb::open(&meta_dir)?;
        let marker = meta_dir.join("state.sqlite");
        let folder = FolderId::open(root, &marker)
            .map_err(|err| Error::io(format!("could not look at {}", root.display()), err))?;
        let disk = OsDisk::new(root, tmp_dir, folder)
            .map_err(|err| Error::io("could not start a writeback thread", err))?;
        let mut engine = SyncEngine::new(disk, api, SystemClock::default(), state, false)?;
        engine.hold(Box::new(lock));
        Ok(engine)
    }

    /// Opens the folder's state for [`SyncEngine::preview`] only (`status`): nothing in
    /// `.syncstore/` is created, written or removed (the state database is opened read-only,
    /// `tmp/`, where a running daemon writes its downloads, is left alone), and
    /// [`SyncEngine::sync_pass`] refuses to run.
    ///
    /// # Errors
    /// When the folder has no `.syncstore/` or its state cannot be read.
    pub fn open_read_only(root: &Path, api: Arc<ApiClient>) -> Result<Engine, Error> {
        let meta_dir = crate::config::meta_dir(root);
        if !meta_dir.is_dir() {
            return Err(Error::Setup(format!(
                "{} is not set up yet: run `syncstore sync` on it first",
                root.display()
            )));
        }
        let state = StateDb::open_read_only(&meta_dir)?;
        let marker = meta_dir.join("state.sqlite");
        // A read-only look at a folder whose state was moved aside has no marker to check.
        let folder = if marker.exists() {
            FolderId::open(root, &marker)
        } else {
            FolderId::open_without_marker(root)
        }
        .map_err(|err| Error::io(format!("could not look at {}", root.display()), err))?;
        let disk = OsDisk::new(root, meta_dir.join("tmp"), folder)
            .map_err(|err| Error::io("could not start a writeback thread", err))?;
        SyncEngine::new(disk, api, SystemClock::default(), state, true)
    }

    /// The API client in use.
    pub fn api(&self) -> &Arc<ApiClient> {
        self.server()
    }

    /// Follows the user's other devices' upload streams into this engine's prefetched files,
    /// until `shutdown` (see [`crate::stream_follower`]).
    pub fn follow_streams(
        &self,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        crate::stream_follower::run(
            Arc::clone(self.api()),
            self.disk().clone(),
            self.prefetched(),
            self.progress(),
            shutdown,
        )
    }
}
