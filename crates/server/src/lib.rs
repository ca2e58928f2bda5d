//! The syncstore HTTP server: authentication, the change journal, long poll and chunk transfer,
//! over a [`MetaStore`] and a [`ChunkStore`].
//!
//! Entry points: [`run`] serves the embedded backends (SQLite + local disk) under a data
//! directory on a bound listener until a shutdown future resolves; [`serve`] does the same over
//! any [`Stores`]. [`add_user`], [`add_token`] and [`ensure_first_user`] are the offline admin
//! helpers the CLI calls.
//!
//! # Layout
//!
//! - `routes`: the router and one handler per row of the API table in `syncstore_proto::api`.
//! - `error`: [`ErrorBody`](syncstore_proto::ErrorBody) answers and the JSON/query extractors
//!   that turn malformed input into 400s.
//! - `auth`: the bearer-token extractor.
//! - [`ChangeHub`]: wakes long polls when a batch or a lock change commits.
//!
//! The server's clock is read in one place, `routes::now_ms`, and passed to the store, which
//! decides with it which locks are in force.
//!
//! **Architecture Invariant:** the server never looks at which backend it runs on; op and lock
//! semantics live in `syncstore_store::ops` and `syncstore_store::locks`, not here.

mod auth;
mod error;
mod hub;
mod routes;

pub use hub::ChangeHub;

use anyhow::Context;
use rand::RngCore;
use std::future::{Future, IntoFuture};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use syncstore_proto::{DeviceName, UserName};
use syncstore_store::{ChunkStore, FsChunkStore, MetaStore, SqliteMetaStore, TokenHash};
use tokio_util::sync::CancellationToken;

/// How the server runs. Build it with [`ServerConfig::new`] and adjust fields as needed.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Holds `meta.sqlite` and `chunks/`.
    pub data_dir: PathBuf,
    /// The longest a `GET /api/v1/changes` waits for a change, whatever the client asks.
    pub long_poll_max: Duration,
    /// The most changes one `GET /api/v1/changes` answer holds (more are flagged with `more`).
    pub changes_page_size: usize,
    /// The largest JSON request body accepted.
    pub json_body_limit: usize,
    /// How long any request but a chunk upload may take before it is answered with 503.
    /// Must exceed [`ServerConfig::long_poll_max`].
    pub request_timeout: Duration,
    /// How many chunk uploads and downloads run at once; more wait. Each holds up to one chunk
    /// ([`syncstore_proto::MAX_CHUNK_LEN`]) plus read-ahead in memory.
    pub max_parallel_transfers: usize,
    /// After shutdown is asked for, how long in-flight requests may finish before `run` returns.
    pub shutdown_grace: Duration,
}

impl ServerConfig {
    /// The defaults for a data directory.
    pub fn new(data_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            data_dir,
            long_poll_max: Duration::from_secs(60),
            changes_page_size: 1000,
            json_body_limit: 64 * 1024 * 1024,
            request_timeout: Duration::from_secs(120),
            max_parallel_transfers: 16,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// The two stores the server runs on.
#[derive(Clone)]
pub struct Stores {
    pub meta: Arc<dyn MetaStore>,
    pub chunks: Arc<dyn ChunkStore>,
}

/// Opens the embedded stores under `data_dir` (`meta.sqlite`, `chunks/`), creating them if needed.
///
/// # Errors
/// When the directory cannot be created or a store cannot be opened (e.g. a newer schema).
pub async fn open_embedded_stores(data_dir: &Path) -> anyhow::Result<Stores> {
    let meta = open_meta_store(data_dir).await?;
    let chunks_dir = data_dir.join("chunks");
    let chunks = FsChunkStore::open(&chunks_dir)
        .await
        .with_context(|| format!("could not open the chunk store {}", chunks_dir.display()))?;
    Ok(Stores {
        meta: Arc::new(meta),
        chunks: Arc::new(chunks),
    })
}

/// Serves the API on `listener` over the embedded stores in `config.data_dir` until `shutdown`
/// resolves, then drains in-flight requests for at most `config.shutdown_grace`.
///
/// # Errors
/// When the stores cannot be opened, the listener fails, or a request handler panicked (the
/// server then stops instead of running on in an unknown state).
pub async fn run(
    listener: tokio::net::TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let stores = open_embedded_stores(&config.data_dir).await?;
    serve(listener, stores, ChangeHub::default(), config, shutdown).await
}

/// Serves the API on `listener` over `stores` until `shutdown` resolves; see [`run`].
///
/// `hub` is notified after every committed batch; a backend with its own change feed (PostgreSQL
/// LISTEN/NOTIFY, for several server processes) can feed it too.
///
/// # Errors
/// When the listener fails or a request handler panicked.
pub async fn serve(
    listener: tokio::net::TcpListener,
    stores: Stores,
    hub: ChangeHub,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // One token for everything that must stop: the accept loop, and long polls, which would
    // otherwise hold graceful shutdown up for up to `long_poll_max`.
    let stopping = CancellationToken::new();
    let panicked = Arc::new(AtomicBool::new(false));
    let state = routes::AppState {
        stores,
        hub,
        config: Arc::new(config.clone()),
        stopping: stopping.clone(),
        panicked: Arc::clone(&panicked),
        transfers: Arc::new(tokio::sync::Semaphore::new(
            config.max_parallel_transfers.max(1),
        )),
    };
    let app = routes::router(state);
    let addr = listener
        .local_addr()
        .context("could not read the listening address")?;
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "serving");

    let signal_token = stopping.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown => tracing::info!("shutting down"),
            () = signal_token.cancelled() => {}
        }
        signal_token.cancel();
    });

    let server = axum::serve(listener, app)
        .with_graceful_shutdown(stopping.clone().cancelled_owned())
        .into_future();
    tokio::pin!(server);
    let deadline = async {
        stopping.cancelled().await;
        tokio::time::sleep(config.shutdown_grace).await;
    };
    tokio::select! {
        result = &mut server => result.context("the HTTP server failed")?,
        () = deadline => tracing::warn!(grace = ?config.shutdown_grace, "requests still running at the shutdown deadline; abandoning them"),
    }
    if panicked.load(Ordering::SeqCst) {
        anyhow::bail!("a request handler panicked; the server stopped (see the log)");
    }
    Ok(())
}

/// Creates a user with a first device, offline (straight on the data directory).
///
/// Returns the device's new token; only its hash is stored, so it cannot be shown again.
///
/// # Errors
/// When the user exists already, or the store cannot be opened.
pub async fn add_user(
    data_dir: &Path,
    name: &UserName,
    device: &DeviceName,
) -> anyhow::Result<String> {
    let meta_store = open_meta_store(data_dir).await?;
    let user = meta_store
        .create_user(name)
        .await
        .with_context(|| format!("could not create user {name}"))?;
    issue_token(&meta_store, &user, device).await
}

/// Adds a device with a new token to an existing user, offline.
///
/// # Errors
/// When there is no such user, the user already has a device of that name, or the store cannot
/// be opened.
pub async fn add_token(
    data_dir: &Path,
    user: &UserName,
    device: &DeviceName,
) -> anyhow::Result<String> {
    let meta_store = open_meta_store(data_dir).await?;
    let found = meta_store
        .user_by_name(user)
        .await
        .with_context(|| format!("could not look up user {user}"))?
        .with_context(|| format!("there is no user {user}"))?;
    issue_token(&meta_store, &found, device).await
}

/// On a data directory without users, creates user `me` with device `first-device` and returns
/// them with the token; with users already there, returns `None`.
///
/// # Errors
/// When the store cannot be opened or written.
pub async fn ensure_first_user(
    data_dir: &Path,
) -> anyhow::Result<Option<(UserName, DeviceName, String)>> {
    let meta_store = open_meta_store(data_dir).await?;
    if meta_store
        .count_users()
        .await
        .context("could not count users")?
        > 0
    {
        return Ok(None);
    }
    // Constant names that pass validation.
    let user_name = UserName::new("me").context("invalid built-in user name")?;
    let device_name = DeviceName::new("first-device").context("invalid built-in device name")?;
    let user = meta_store
        .create_user(&user_name)
        .await
        .with_context(|| format!("could not create user {user_name}"))?;
    let token = issue_token(&meta_store, &user, &device_name).await?;
    Ok(Some((user_name, device_name, token)))
}

/// A new bearer token: `sst_` and 32 random bytes in hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("sst_{}", hex::encode(bytes))
}

async fn issue_token(
    meta_store: &SqliteMetaStore,
    user: &syncstore_store::User,
    device: &DeviceName,
) -> anyhow::Result<String> {
    let token = new_token();
    meta_store
        .add_device(user.id, device, &TokenHash::of_token(&token))
        .await
        .with_context(|| format!("could not add device {device} to user {}", user.name))?;
    Ok(token)
}

async fn open_meta_store(data_dir: &Path) -> anyhow::Result<SqliteMetaStore> {
    tokio::fs::create_dir_all(data_dir)
        .await
        .with_context(|| format!("could not create the data directory {}", data_dir.display()))?;
    let db_path = data_dir.join("meta.sqlite");
    SqliteMetaStore::open(&db_path)
        .await
        .with_context(|| format!("could not open {}", db_path.display()))
}
