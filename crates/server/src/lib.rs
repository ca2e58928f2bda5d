//! The syncstore HTTP server: authentication, the change journal, long poll and chunk transfer,
//! over a [`MetaStore`] and a [`ChunkStore`].
//!
//! Entry points: [`run`] serves the embedded backends (SQLite + local disk) under a data
//! directory on a bound listener until a shutdown future resolves; [`serve`] does the same over
//! any [`Stores`], which [`open_stores`] opens from a [`MetaLocation`] and a [`ChunkLocation`]
//! (the backend is picked by URL scheme, here, once). [`add_user`], [`add_token`] and
//! [`ensure_first_user`] (and their `_in` forms on any meta store) are the offline admin helpers
//! the CLI calls.
//!
//! # Layout
//!
//! - `routes`: the router and one handler per row of the API table in `syncstore_proto::api`.
//! - `error`: [`ErrorBody`](syncstore_proto::ErrorBody) answers and the JSON/query extractors
//!   that turn malformed input into 400s.
//! - `auth`: the bearer-token extractor.
//! - [`ChangeHub`]: wakes long polls when a batch or a lock change commits, through this server
//!   or (fed by [`Stores::change_feed`], PostgreSQL LISTEN/NOTIFY) through any other server on
//!   the same database.
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
use axum::serve::ListenerExt;
use rand::RngCore;
use std::future::{Future, IntoFuture};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use syncstore_proto::{DeviceName, UserName};
use syncstore_store::s3::{S3Endpoint, S3Location};
use syncstore_store::{
    ChangeFeed, ChunkStore, FsChunkStore, MetaStore, PgMetaStore, S3ChunkStore, SqliteMetaStore,
    StoreError, TokenHash,
};
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
    /// How many chunk uploads and downloads run at once; more wait. An upload holds up to one
    /// 8 MiB batch of chunks plus one chunk ([`syncstore_proto::MAX_CHUNK_LEN`]) in memory, a
    /// download up to four chunks read ahead.
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
    /// The batches other server processes commit to a shared meta store; [`serve`] feeds them
    /// to its [`ChangeHub`]. `None` for a store only this process writes (SQLite).
    pub change_feed: Option<ChangeFeed>,
}

/// Where the meta store lives: a SQLite file, or a `postgres://` (`postgresql://`) URL.
#[derive(Clone, PartialEq, Eq)]
pub enum MetaLocation {
    Sqlite(PathBuf),
    Postgres(String),
}

impl MetaLocation {
    /// Picks the backend by scheme: a `postgres://` or `postgresql://` URL, else a SQLite path.
    pub fn parse(text: &str) -> MetaLocation {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            MetaLocation::Postgres(text.to_owned())
        } else {
            MetaLocation::Sqlite(PathBuf::from(text))
        }
    }

    /// The embedded default under a data directory: `DATA/meta.sqlite`.
    pub fn embedded(data_dir: &Path) -> MetaLocation {
        MetaLocation::Sqlite(data_dir.join("meta.sqlite"))
    }
}

impl std::fmt::Display for MetaLocation {
    // The password never reaches a log line or an error message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetaLocation::Sqlite(path) => write!(f, "{}", path.display()),
            MetaLocation::Postgres(url) => f.write_str(&syncstore_store::postgres::redact_url(url)),
        }
    }
}

impl std::fmt::Debug for MetaLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetaLocation::Sqlite(_) => write!(f, "Sqlite({self})"),
            MetaLocation::Postgres(_) => write!(f, "Postgres({self})"),
        }
    }
}

/// Where chunks live: a directory, or an S3 bucket (`s3://BUCKET[/PREFIX]`) whose endpoint,
/// region and credentials come from the standard AWS environment variables.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ChunkLocation {
    Dir(PathBuf),
    S3(S3Location),
}

impl ChunkLocation {
    /// Picks the backend by scheme: `s3://BUCKET[/PREFIX]`, else a directory.
    ///
    /// # Errors
    /// For an `s3://` URL without a bucket.
    pub fn parse(text: &str) -> anyhow::Result<ChunkLocation> {
        if text.starts_with("s3://") {
            let location = S3Location::parse(text)
                .with_context(|| format!("{text:?} is not s3://BUCKET[/PREFIX]"))?;
            return Ok(ChunkLocation::S3(location));
        }
        Ok(ChunkLocation::Dir(PathBuf::from(text)))
    }

    /// The embedded default under a data directory: `DATA/chunks`.
    pub fn embedded(data_dir: &Path) -> ChunkLocation {
        ChunkLocation::Dir(data_dir.join("chunks"))
    }
}

impl std::fmt::Display for ChunkLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChunkLocation::Dir(path) => write!(f, "{}", path.display()),
            ChunkLocation::S3(location) => write!(f, "{location}"),
        }
    }
}

/// Opens (creating if needed, migrating) the meta store at `location`.
///
/// # Errors
/// When the store cannot be reached or opened, or holds a newer schema.
pub async fn open_meta_store(location: &MetaLocation) -> anyhow::Result<Arc<dyn MetaStore>> {
    match location {
        MetaLocation::Sqlite(path) => {
            if let Some(parent) = path
                .parent()
                .filter(|parent| !parent.as_os_str().is_empty())
            {
                tokio::fs::create_dir_all(parent)
                    .await
                    .with_context(|| format!("could not create {}", parent.display()))?;
            }
            let meta_store = SqliteMetaStore::open(path)
                .await
                .with_context(|| format!("could not open {}", path.display()))?;
            Ok(Arc::new(meta_store))
        }
        MetaLocation::Postgres(url) => {
            let meta_store = PgMetaStore::open(url)
                .await
                .with_context(|| format!("could not open the PostgreSQL database {location}"))?;
            Ok(Arc::new(meta_store))
        }
    }
}

/// Opens both stores, and for PostgreSQL the change feed (LISTEN/NOTIFY) that tells this
/// server about commits through others.
///
/// # Errors
/// When a store cannot be reached or opened.
pub async fn open_stores(meta: &MetaLocation, chunks: &ChunkLocation) -> anyhow::Result<Stores> {
    let (meta_store, change_feed): (Arc<dyn MetaStore>, Option<ChangeFeed>) = match meta {
        MetaLocation::Sqlite(_) => (open_meta_store(meta).await?, None),
        MetaLocation::Postgres(url) => {
            let meta_store = PgMetaStore::open(url)
                .await
                .with_context(|| format!("could not open the PostgreSQL database {meta}"))?;
            let change_feed = meta_store
                .change_feed()
                .await
                .with_context(|| format!("could not listen for changes on {meta}"))?;
            (Arc::new(meta_store), Some(change_feed))
        }
    };
    let chunk_store: Arc<dyn ChunkStore> = match chunks {
        ChunkLocation::Dir(dir) => Arc::new(
            FsChunkStore::open(dir)
                .await
                .with_context(|| format!("could not open the chunk store {}", dir.display()))?,
        ),
        ChunkLocation::S3(location) => Arc::new(
            S3ChunkStore::open(location, &S3Endpoint::from_env())
                .await
                .with_context(|| format!("could not open the chunk store {location}"))?,
        ),
    };
    Ok(Stores {
        meta: meta_store,
        chunks: chunk_store,
        change_feed,
    })
}

/// Opens the embedded stores under `data_dir` (`meta.sqlite`, `chunks/`), creating them if needed.
///
/// # Errors
/// When the directory cannot be created or a store cannot be opened (e.g. a newer schema).
pub async fn open_embedded_stores(data_dir: &Path) -> anyhow::Result<Stores> {
    open_stores(
        &MetaLocation::embedded(data_dir),
        &ChunkLocation::embedded(data_dir),
    )
    .await
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
/// `hub` is notified after every committed batch, and with every notice of
/// [`Stores::change_feed`] (batches committed through other server processes).
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
    if let Some(change_feed) = &stores.change_feed {
        // Subscribed before the first request, so no commit after it is missed.
        tokio::spawn(feed_hub(
            change_feed.subscribe(),
            change_feed.resumed(),
            Arc::clone(&stores.meta),
            hub.clone(),
            stopping.clone(),
        ));
    }
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

    // Responses are written in pieces (headers, then body frames): with Nagle's algorithm on,
    // a piece that follows another small one waits for the client's delayed ACK, 40 ms on
    // Linux. That wait was two thirds of a one-file edit's latency (W4: 64 ms, 20 ms when a
    // request happened to dodge it).
    let listener = listener.tap_io(|stream| {
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(cause = %err, "could not set TCP_NODELAY");
        }
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
    let meta_store = open_meta_store(&MetaLocation::embedded(data_dir)).await?;
    add_user_in(&*meta_store, name, device).await
}

/// [`add_user`] on any meta store.
///
/// # Errors
/// When the user exists already or the store fails.
pub async fn add_user_in(
    meta_store: &dyn MetaStore,
    name: &UserName,
    device: &DeviceName,
) -> anyhow::Result<String> {
    let user = meta_store
        .create_user(name)
        .await
        .with_context(|| format!("could not create user {name}"))?;
    issue_token(meta_store, &user, device).await
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
    let meta_store = open_meta_store(&MetaLocation::embedded(data_dir)).await?;
    add_token_in(&*meta_store, user, device).await
}

/// [`add_token`] on any meta store.
///
/// # Errors
/// When there is no such user, the user already has a device of that name, or the store fails.
pub async fn add_token_in(
    meta_store: &dyn MetaStore,
    user: &UserName,
    device: &DeviceName,
) -> anyhow::Result<String> {
    let found = meta_store
        .user_by_name(user)
        .await
        .with_context(|| format!("could not look up user {user}"))?
        .with_context(|| format!("there is no user {user}"))?;
    issue_token(meta_store, &found, device).await
}

/// On a data directory without users, creates user `me` with device `first-device` and returns
/// them with the token; with users already there, returns `None`.
///
/// # Errors
/// When the store cannot be opened or written.
pub async fn ensure_first_user(
    data_dir: &Path,
) -> anyhow::Result<Option<(UserName, DeviceName, String)>> {
    let meta_store = open_meta_store(&MetaLocation::embedded(data_dir)).await?;
    ensure_first_user_in(&*meta_store).await
}

/// [`ensure_first_user`] on any meta store. Servers starting at once on an empty shared
/// database race here; the one that loses sees the user exist and returns `None`.
///
/// # Errors
/// When the store fails.
pub async fn ensure_first_user_in(
    meta_store: &dyn MetaStore,
) -> anyhow::Result<Option<(UserName, DeviceName, String)>> {
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
    let user = match meta_store.create_user(&user_name).await {
        Ok(user) => user,
        Err(StoreError::AlreadyExists(_)) => return Ok(None),
        Err(err) => {
            return Err(
                anyhow::Error::new(err).context(format!("could not create user {user_name}"))
            )
        }
    };
    let token = issue_token(meta_store, &user, &device_name).await?;
    Ok(Some((user_name, device_name, token)))
}

/// A new bearer token: `sst_` and 32 random bytes in hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("sst_{}", hex::encode(bytes))
}

/// Wakes this server's long polls for the batches other servers commit.
///
/// Notices sent while the feed was reconnecting, or dropped because this task fell behind
/// (`Lagged`), are lost; after either, [`catch_up`] reads the cursor of every user with a
/// waiting long poll, so those long polls see the missed commits at once instead of at their
/// timeout.
async fn feed_hub(
    mut notices: tokio::sync::broadcast::Receiver<syncstore_store::ChangeNotice>,
    mut resumed: tokio::sync::watch::Receiver<u64>,
    meta_store: Arc<dyn MetaStore>,
    hub: ChangeHub,
    stopping: CancellationToken,
) {
    use tokio::sync::broadcast::error::RecvError;
    // Only reconnections from now on matter: everything before was heard or is in the journal.
    resumed.borrow_and_update();
    let mut resumed_open = true;
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            changed = resumed.changed(), if resumed_open => match changed {
                Ok(()) => {
                    tracing::info!("the change feed is back; catching up on what it missed");
                    catch_up(&*meta_store, &hub).await;
                }
                // The feed is gone; `notices` reports it as closed.
                Err(_) => resumed_open = false,
            },
            received = notices.recv() => match received {
                Ok(notice) => hub.notify(notice.user_id, notice.cursor),
                Err(RecvError::Lagged(n_missed)) => {
                    tracing::warn!(
                        n_missed,
                        "change notices arrived faster than they were handled; catching up"
                    );
                    catch_up(&*meta_store, &hub).await;
                }
                Err(RecvError::Closed) => return,
            },
        }
    }
}

/// Reads the current cursor of every user with a waiting long poll and wakes those whose
/// journal moved past what the hub knew.
async fn catch_up(meta_store: &dyn MetaStore, hub: &ChangeHub) {
    use futures::StreamExt;
    let users = hub.waiting_users();
    let n_users = users.len();
    // A few at a time: the pool is small and requests need it too.
    let mut cursors = futures::stream::iter(users)
        .map(|user_id| async move { (user_id, meta_store.current_cursor(user_id).await) })
        .buffer_unordered(4);
    let mut n_failed = 0usize;
    while let Some((user_id, cursor)) = cursors.next().await {
        match cursor {
            Ok(cursor) => hub.notify(user_id, cursor),
            Err(err) => {
                // The long poll then answers at its timeout, as before.
                n_failed += 1;
                tracing::warn!(%user_id, cause = %err, "could not read a cursor to catch up");
            }
        }
    }
    tracing::debug!(n_users, n_failed, "caught up on the change feed");
}

async fn issue_token(
    meta_store: &dyn MetaStore,
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
