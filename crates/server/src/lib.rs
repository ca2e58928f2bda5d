//! The syncstore HTTP server: authentication, the change journal, long poll and chunk transfer,
//! over a [`MetaStore`] and a [`ChunkStore`].
//!
//! Entry points: [`run`] serves the embedded backends (SQLite + local disk) under a data
//! directory on a bound listener until a shutdown future resolves; [`serve`] does the same over
//! any [`Stores`], which [`open_stores`] opens from a [`MetaLocation`] and a [`ChunkLocation`]
//! (the backend is picked by URL scheme, here, once). [`add_user`], [`add_token`] and
//! [`ensure_first_user`] (and their `_in` forms on any meta store), and those of `accounts`
//! ([`user_in`], [`devices_in`], [`revoke_device_in`], [`rename_user_in`], [`remove_user_in`]),
//! are the offline admin helpers the CLI calls; the ones that need an existing account open the
//! store with [`open_existing_meta_store`], which refuses a database that is not there.
//!
//! # Layout
//!
//! - `routes`: the router and one handler per row of the API table in `syncstore_proto::api`.
//! - `error`: [`ErrorBody`](syncstore_proto::ErrorBody) answers and the JSON/query extractors
//!   that turn malformed input into 400s.
//! - `auth`: the bearer-token extractor, the rate limit on refused tokens per address, and
//!   the at-most-once-a-minute record of when and from where each device was seen.
//! - `devices`: the endpoints of `syncstore_proto::devices` (list the user's devices, revoke
//!   one).
//! - `conn`: the accept loop (TLS handshake with a timeout, header read timeout, connection
//!   cap, backoff on EMFILE).
//! - [`tls`]: the certificate and key ([`ServerTls`], reloadable), and the self-signed
//!   certificate of `serve --tls-self-signed`.
//! - `limits`: transfer slots per user and in total, the JSON body budget, ops batch limits.
//! - `wire`: the HTTP status and message of every store outcome ([`op_result`] for ops, the
//!   423 text naming a lock in the way); the store itself speaks no HTTP.
//! - [`ChangeHub`]: wakes long polls when a batch or a lock change commits, through this server
//!   or (fed by [`Stores::change_feed`], PostgreSQL LISTEN/NOTIFY) through any other server on
//!   the same database.
//!
//! The server's clock is read in one place, `routes::now_ms`, and passed to the store, which
//! decides with it which locks are in force.
//!
//! **Architecture Invariant:** the server never looks at which backend it runs on; op and lock
//! semantics live in `syncstore_store::ops` and `syncstore_store::locks`, not here.

mod access_log;
mod accounts;
mod auth;
mod conn;
mod content;
mod dav;
mod deltas;
mod devices;
mod error;
mod history;
mod hub;
mod limits;
pub mod password;
mod routes;
mod served;
mod streams;
pub mod tls;
mod web;
mod wire;

pub use accounts::{
    devices_in, remove_user_in, rename_user_in, revoke_device_in, set_password_in, user_in, Removal,
};
pub use hub::ChangeHub;
pub use tls::ServerTls;
pub use wire::op_result;

use anyhow::Context;
use rand::RngCore;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use syncstore_proto::{DeviceName, UserName};
use syncstore_store::gc::GcPolicy;
#[cfg(feature = "s3")]
use syncstore_store::s3::S3Endpoint;
use syncstore_store::s3::S3Location;
#[cfg(feature = "postgres")]
use syncstore_store::PgMetaStore;
#[cfg(feature = "s3")]
use syncstore_store::S3ChunkStore;
use syncstore_store::{
    ChangeFeed, ChunkStore, FsChunkStore, MetaStore, Retention, SqliteMetaStore, StoreError,
    TokenHash,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Runs garbage collection every `interval` until `stopping`; a failed run is logged and the
/// next one tries again. Several servers on one store may all run it (see
/// `syncstore_store::gc`).
async fn collect_garbage_every(
    interval: Duration,
    stores: Stores,
    policy: GcPolicy,
    stopping: CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stopping.cancelled() => return,
        }
        let started = std::time::Instant::now();
        let run = syncstore_store::gc::collect(
            &*stores.meta,
            &*stores.chunks,
            routes::now_ms(),
            policy,
            false,
        );
        tokio::select! {
            result = run => match result {
                Ok(report) => tracing::info!(
                    users = report.users,
                    rows_removed = report.rows_removed,
                    chunks_deleted = report.chunks_deleted,
                    bytes_freed = report.bytes_freed,
                    bytes_kept = report.bytes_kept,
                    ms = started.elapsed().as_millis() as u64,
                    "garbage collection done"
                ),
                Err(err) => tracing::warn!(error = %err, "garbage collection failed; trying again next time"),
            },
            () = stopping.cancelled() => return,
        }
    }
}

/// How the server runs. Build it with [`ServerConfig::new`] and adjust fields as needed.
///
/// Every request is bounded in time, body size and concurrency, per user and in total; the
/// defaults are far above what a client does in normal use (see each field).
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Holds `meta.sqlite` and `chunks/`.
    pub data_dir: PathBuf,
    /// The longest a `GET /api/v1/changes` waits for a change, whatever the client asks.
    pub long_poll_max: Duration,
    /// The most changes one `GET /api/v1/changes` answer holds (more are flagged with `more`).
    pub changes_page_size: usize,
    /// The largest JSON request body accepted; more is a 413. The largest a client sends are
    /// ops batches, whose `PutFile`s list their chunks at about 90 bytes each: 32 MiB holds
    /// the chunk list of a 350 GiB file, while 1,000 ops of ordinary files take well under
    /// 1 MiB.
    pub json_body_limit: usize,
    /// The most bytes of JSON request bodies held at once, over all requests; more wait (up to
    /// [`ServerConfig::request_timeout`]). A body without a Content-Length counts as
    /// [`ServerConfig::json_body_limit`] bytes.
    pub json_bytes_in_flight: usize,
    /// How long any request but a chunk upload may take before it is answered with 503.
    /// Must exceed [`ServerConfig::long_poll_max`].
    pub request_timeout: Duration,
    /// How many chunk uploads and downloads run at once; more wait, up to
    /// [`ServerConfig::request_timeout`], then get a 503. An upload holds up to one 8 MiB
    /// batch of chunks plus one chunk ([`syncstore_proto::MAX_CHUNK_LEN`]) in memory, a
    /// download up to four chunks read ahead.
    pub max_parallel_transfers: usize,
    /// How many of [`ServerConfig::max_parallel_transfers`] one user may hold at once, so one
    /// user's stalled transfers never block another's. A client runs two uploads at a time.
    pub max_transfers_per_user: usize,
    /// How long a request body may send no byte before the request is answered 408 and cut
    /// off (its transfer slot freed).
    pub body_idle_timeout: Duration,
    /// How long a connection may take to send a whole request head, and how long an idle
    /// keep-alive connection is kept; then it is closed.
    pub header_read_timeout: Duration,
    /// The most connections open at once; one more is answered 503 and closed at once. Keep it
    /// below the process's file limit (`ulimit -n`); `syncstore serve` lowers it to fit.
    pub max_connections: usize,
    /// The most ops one `POST /api/v1/ops` may hold (the client sends at most 1,000); more is
    /// a 413.
    pub max_batch_ops: usize,
    /// The most distinct directories the paths of one ops batch may lie in; more is a 413.
    /// Every op creates its missing parents and lists them in its result, so this bounds the
    /// work and the answer of a batch.
    pub max_batch_dirs: usize,
    /// After shutdown is asked for, how long in-flight requests may finish before `run` returns.
    pub shutdown_grace: Duration,
    /// How long history (old versions, the trash) is kept; see `syncstore_store::retention`.
    pub retention: Retention,
    /// How often garbage collection runs (compaction, then unreferenced chunks); `None`: never
    /// in the background (`syncstore gc` still does). The first run starts one interval after
    /// the server.
    pub gc_interval: Option<Duration>,
    /// A chunk stored less than this long ago is never collected, so uploads in progress
    /// (chunks not yet named by a commit) are safe.
    pub gc_grace: Duration,
    /// `Some`: serve HTTPS with this certificate (every connection starts with a TLS
    /// handshake, which must finish within [`ServerConfig::header_read_timeout`]); `None`
    /// (the default): plain HTTP.
    pub tls: Option<ServerTls>,
    /// How many requests with a refused token one address (an IPv6 address: its /64) may send
    /// within [`ServerConfig::auth_fail_window`]; past that, every request with a refused token
    /// from it is answered 429 (with `Retry-After`) instead of 401 for
    /// [`ServerConfig::auth_block`]. Good tokens from it are still served. 0: no limit.
    pub auth_fail_limit: u32,
    /// See [`ServerConfig::auth_fail_limit`].
    pub auth_fail_window: Duration,
    /// See [`ServerConfig::auth_fail_limit`].
    pub auth_block: Duration,
}

impl ServerConfig {
    /// The defaults for a data directory.
    pub fn new(data_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            data_dir,
            long_poll_max: Duration::from_secs(60),
            changes_page_size: 1000,
            json_body_limit: 32 * 1024 * 1024,
            json_bytes_in_flight: 128 * 1024 * 1024,
            request_timeout: Duration::from_secs(120),
            max_parallel_transfers: 16,
            max_transfers_per_user: 4,
            body_idle_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_batch_ops: 10_000,
            max_batch_dirs: 20_000,
            shutdown_grace: Duration::from_secs(10),
            retention: Retention::DEFAULT,
            gc_interval: Some(Duration::from_secs(3600)),
            gc_grace: Duration::from_secs(24 * 3600),
            tls: None,
            auth_fail_limit: 10,
            auth_fail_window: Duration::from_secs(60),
            auth_block: Duration::from_secs(300),
        }
    }

    /// What garbage collection runs with.
    pub fn gc_policy(&self) -> GcPolicy {
        GcPolicy {
            retention: self.retention,
            grace_ms: i64::try_from(self.gc_grace.as_millis()).unwrap_or(i64::MAX),
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
/// When the store cannot be reached or opened, or holds a newer schema; for a `postgres://`
/// URL in a build without the cargo feature `postgres`.
pub async fn open_meta_store(location: &MetaLocation) -> anyhow::Result<Arc<dyn MetaStore>> {
    match location {
        MetaLocation::Sqlite(path) => {
            if let Some(parent) = path
                .parent()
                .filter(|parent| !parent.as_os_str().is_empty())
            {
                // Only what is created here is made private: the directory of a `--db` path
                // may be shared with other programs.
                create_dirs_private(parent)
                    .with_context(|| format!("could not create {}", parent.display()))?;
            }
            let meta_store = SqliteMetaStore::open(path)
                .await
                .with_context(|| format!("could not open {}", path.display()))?;
            Ok(Arc::new(meta_store))
        }
        #[cfg(feature = "postgres")]
        MetaLocation::Postgres(url) => Ok(Arc::new(open_postgres(url, location).await?)),
        #[cfg(not(feature = "postgres"))]
        MetaLocation::Postgres(_) => Err(not_built_in(location, "PostgreSQL", "postgres")),
    }
}

/// Opens the meta store at `location` only if it exists already, for the admin commands that
/// need an existing account (`token add`, `user list`, `device revoke`, ...): a mistyped
/// `--data` or `--db` is then refused, and nothing is created, instead of a new empty database
/// that has no such user. `user add` and `serve` use [`open_meta_store`], which creates it.
///
/// # Errors
/// When there is no SQLite file at the path, or no syncstore schema in the PostgreSQL
/// database; otherwise as [`open_meta_store`].
pub async fn open_existing_meta_store(
    location: &MetaLocation,
) -> anyhow::Result<Arc<dyn MetaStore>> {
    let missing = |location: &MetaLocation| {
        anyhow::anyhow!(
            "there is no syncstore database at {location}: give the server's --data DIR (or \
             its --db), as `serve` was given; `syncstore serve` or `syncstore user add` \
             creates a new one"
        )
    };
    match location {
        MetaLocation::Sqlite(path) => {
            // Not `exists()`: a path that cannot be looked at is an error of its own.
            match std::fs::metadata(path) {
                Ok(_) => open_meta_store(location).await,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(missing(location)),
                Err(err) => {
                    Err(anyhow::Error::new(err).context(format!("could not look at {location}")))
                }
            }
        }
        #[cfg(feature = "postgres")]
        MetaLocation::Postgres(url) => match PgMetaStore::open_existing(url)
            .await
            .with_context(|| format!("could not open the PostgreSQL database {location}"))?
        {
            Some(meta_store) => Ok(Arc::new(meta_store)),
            None => Err(missing(location)),
        },
        #[cfg(not(feature = "postgres"))]
        MetaLocation::Postgres(_) => Err(not_built_in(location, "PostgreSQL", "postgres")),
    }
}

/// Opens both stores, as [`open_stores`], when the meta store exists already (see
/// [`open_existing_meta_store`]).
///
/// # Errors
/// As [`open_existing_meta_store`] and [`open_stores`].
pub async fn open_existing_stores(
    meta: &MetaLocation,
    chunks: &ChunkLocation,
) -> anyhow::Result<Stores> {
    check_backends_built_in(meta, chunks)?;
    // Checked first, so nothing is created for a database that is not there.
    drop(open_existing_meta_store(meta).await?);
    open_stores(meta, chunks).await
}

/// Opens the PostgreSQL meta store at `url` (`location` names it without its password).
#[cfg(feature = "postgres")]
async fn open_postgres(url: &str, location: &MetaLocation) -> anyhow::Result<PgMetaStore> {
    PgMetaStore::open(url)
        .await
        .with_context(|| format!("could not open the PostgreSQL database {location}"))
}

/// Refuses, before anything is opened, a location whose backend this build does not have.
///
/// # Errors
/// For a `postgres://` URL without the `postgres` feature, an `s3://` URL without `s3`.
fn check_backends_built_in(meta: &MetaLocation, chunks: &ChunkLocation) -> anyhow::Result<()> {
    if matches!(meta, MetaLocation::Postgres(_)) && !cfg!(feature = "postgres") {
        return Err(not_built_in(meta, "PostgreSQL", "postgres"));
    }
    if matches!(chunks, ChunkLocation::S3(_)) && !cfg!(feature = "s3") {
        return Err(not_built_in(chunks, "S3", "s3"));
    }
    Ok(())
}

/// The error for a store at `location` of a `backend` this build lacks (cargo `feature`).
fn not_built_in(location: &dyn std::fmt::Display, backend: &str, feature: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "could not open {location}: this build of syncstore has no {backend} support \
         (it was built without the cargo feature `{feature}`)"
    )
}

/// Opens both stores, and for PostgreSQL the change feed (LISTEN/NOTIFY) that tells this
/// server about commits through others.
///
/// # Errors
/// When a store cannot be reached or opened, or is of a backend this build does not have (a
/// `postgres://` or `s3://` URL without the cargo feature `postgres` or `s3`); then nothing is
/// opened.
pub async fn open_stores(meta: &MetaLocation, chunks: &ChunkLocation) -> anyhow::Result<Stores> {
    check_backends_built_in(meta, chunks)?;
    let (meta_store, change_feed) = open_meta_store_and_feed(meta).await?;
    let chunk_store: Arc<dyn ChunkStore> = match chunks {
        ChunkLocation::Dir(dir) => {
            let chunk_store = FsChunkStore::open(dir)
                .await
                .with_context(|| format!("could not open the chunk store {}", dir.display()))?;
            // Chunks stored before namespace ids were keyed by the user's integer id.
            for user in meta_store.users().await.context("could not list users")? {
                chunk_store
                    .adopt_legacy_dir(user.id, user.namespace)
                    .await
                    .with_context(|| format!("could not move the chunks of user {}", user.name))?;
            }
            Arc::new(chunk_store)
        }
        #[cfg(feature = "s3")]
        ChunkLocation::S3(location) => Arc::new(
            S3ChunkStore::open(location, &S3Endpoint::from_env())
                .await
                .with_context(|| format!("could not open the chunk store {location}"))?,
        ),
        #[cfg(not(feature = "s3"))]
        ChunkLocation::S3(_) => return Err(not_built_in(chunks, "S3", "s3")),
    };
    Ok(Stores {
        meta: meta_store,
        chunks: chunk_store,
        change_feed,
    })
}

/// Opens the meta store, and for PostgreSQL its change feed.
async fn open_meta_store_and_feed(
    meta: &MetaLocation,
) -> anyhow::Result<(Arc<dyn MetaStore>, Option<ChangeFeed>)> {
    #[cfg(feature = "postgres")]
    if let MetaLocation::Postgres(url) = meta {
        let meta_store = open_postgres(url, meta).await?;
        let change_feed = meta_store
            .change_feed()
            .await
            .with_context(|| format!("could not listen for changes on {meta}"))?;
        return Ok((Arc::new(meta_store), Some(change_feed)));
    }
    Ok((open_meta_store(meta).await?, None))
}

/// Refuses a metadata store without users beside a chunk store that holds content: the
/// database was lost, or is the wrong one, and starting as a first install would hand out an
/// empty namespace to the devices (which keep their files, but re-upload everything) while the
/// content sits unreadable beside it.
///
/// # Errors
/// With a message saying what was found and how to proceed, or when a store fails.
pub async fn refuse_orphaned_content(
    stores: &Stores,
    meta: &MetaLocation,
    chunks: &ChunkLocation,
) -> anyhow::Result<()> {
    if stores
        .meta
        .count_users()
        .await
        .context("could not count users")?
        > 0
    {
        return Ok(());
    }
    if stores
        .chunks
        .holds_content()
        .await
        .with_context(|| format!("could not look into the chunk store {chunks}"))?
    {
        anyhow::bail!(
            "the metadata database {meta} has no accounts, but the chunk store {chunks} holds \
             content: the database was lost or is not the one these chunks belong to. Restore \
             the database from a backup (see docs/design.md, \"Recovery\"), or start over on \
             purpose with --new-database (the old content stays where it is, unreadable by new \
             accounts; devices keep their files and upload them again)"
        );
    }
    Ok(())
}

/// Opens the embedded stores under `data_dir` (`meta.sqlite`, `chunks/`), creating them if needed.
///
/// # Errors
/// When the directory cannot be created or a store cannot be opened (e.g. a newer schema).
pub async fn open_embedded_stores(data_dir: &Path) -> anyhow::Result<Stores> {
    prepare_data_dir(data_dir)?;
    open_stores(
        &MetaLocation::embedded(data_dir),
        &ChunkLocation::embedded(data_dir),
    )
    .await
}

/// Creates the data directory with mode 0700, or narrows an existing one to 0700: it holds the
/// metadata database (token hashes) and every user's content.
///
/// # Errors
/// When the directory cannot be created or its mode changed.
pub fn prepare_data_dir(data_dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    create_dirs_private(data_dir)
        .with_context(|| format!("could not create {}", data_dir.display()))?;
    let metadata = std::fs::metadata(data_dir)
        .with_context(|| format!("could not read {}", data_dir.display()))?;
    if metadata.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700)).with_context(
            || format!("could not make {} private (mode 0700)", data_dir.display()),
        )?;
    }
    Ok(())
}

/// `create_dir_all`, with mode 0700 for every directory it creates, whatever the umask.
fn create_dirs_private(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Serves the API on `listener` over the embedded stores in `config.data_dir` until `shutdown`
/// resolves, then drains in-flight requests for at most `config.shutdown_grace`.
///
/// # Errors
/// When the stores cannot be opened, the listener's address cannot be read, or a request
/// handler panicked (the server then stops instead of running on in an unknown state). Failed
/// accepts (such as EMFILE) are retried with a backoff, not returned.
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
/// When the listener's address cannot be read or a request handler panicked.
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
        streams: ChangeHub::default(),
        config: Arc::new(config.clone()),
        stopping: stopping.clone(),
        panicked: Arc::clone(&panicked),
        transfers: Arc::new(limits::TransferSlots::new(
            config.max_parallel_transfers,
            config.max_transfers_per_user,
        )),
        json_budget: Arc::new(limits::JsonBudget::new(config.json_bytes_in_flight)),
        auth_failures: Arc::new(auth::AuthFailures::new(&config)),
        last_seen: Arc::new(auth::LastSeen::default()),
        served: Arc::new(served::ServedChunks::default()),
    };
    if let Some(interval) = config.gc_interval {
        tokio::spawn(collect_garbage_every(
            interval,
            state.stores.clone(),
            config.gc_policy(),
            stopping.clone(),
        ));
    }
    let app = routes::router(state);
    let addr = listener
        .local_addr()
        .context("could not read the listening address")?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(%addr, scheme, data_dir = %config.data_dir.display(), "serving");

    let signal_token = stopping.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown => tracing::info!("shutting down"),
            () = signal_token.cancelled() => {}
        }
        signal_token.cancel();
    });

    let connections = TaskTracker::new();
    conn::accept_loop(listener, app, &config, stopping.clone(), &connections).await;
    // The loop returns once stopping is cancelled; each connection finishes its request.
    connections.close();
    tokio::select! {
        () = connections.wait() => {}
        () = tokio::time::sleep(config.shutdown_grace) => tracing::warn!(grace = ?config.shutdown_grace, "requests still running at the shutdown deadline; abandoning them"),
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
        .add_device(
            user.id,
            device,
            &TokenHash::of_token(&token),
            routes::now_ms(),
        )
        .await
        .context("could not add a device")?;
    Ok(token)
}

#[cfg(all(test, not(all(feature = "postgres", feature = "s3"))))]
mod tests {
    use super::*;

    /// The error of opening `meta` and `chunks`, as the CLI prints it.
    async fn open_error(meta: &MetaLocation, chunks: &ChunkLocation) -> String {
        match open_stores(meta, chunks).await {
            Ok(_) => panic!("{meta} and {chunks} opened"),
            Err(err) => format!("{err:#}"),
        }
    }

    /// A build without a shared backend refuses its URLs with an error that names the missing
    /// feature (and no password), before it opens or creates anything.
    #[tokio::test]
    async fn urls_of_backends_not_built_in_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let postgres = MetaLocation::parse("postgres://me:secret@127.0.0.1:1/db");
        let bucket = ChunkLocation::parse("s3://bucket/prefix").unwrap();
        let sqlite = MetaLocation::embedded(dir.path());
        let disk = ChunkLocation::embedded(dir.path());
        if !cfg!(feature = "postgres") {
            let text = open_error(&postgres, &disk).await;
            assert!(text.contains("cargo feature `postgres`"), "{text}");
            assert!(!text.contains("secret"), "{text}");
            let Err(err) = open_meta_store(&postgres).await else {
                panic!("{postgres} opened");
            };
            assert!(format!("{err:#}").contains("`postgres`"), "{err:#}");
        }
        if !cfg!(feature = "s3") {
            let text = open_error(&sqlite, &bucket).await;
            assert!(text.contains("cargo feature `s3`"), "{text}");
            assert!(text.contains("s3://bucket/prefix"), "{text}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
