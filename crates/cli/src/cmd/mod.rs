//! One function per subcommand.

mod accounts;
mod address;
mod bar;
mod daemon;
mod demo;
mod docs;
mod gc;
mod history;
mod lock;
mod ls;
mod scrub;
pub mod setup;
mod status;
mod target;
mod tls;
mod when;

use crate::cli::{
    Cli, Command, DeviceCommand, LimitArgs, RemoteArgs, StoreArgs, TokenCommand, UserCommand,
};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use syncstore_client::{ApiClient, Engine, FolderConfig};
use syncstore_proto::{DeviceName, UserName};
use syncstore_server::{ChunkLocation, MetaLocation};
use tokio_util::sync::CancellationToken;

/// Runs the parsed command.
///
/// # Errors
/// Whatever the command fails with; `main` prints it and exits 2.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::User(UserCommand::Add {
            name,
            device,
            quota,
            stores,
        }) => {
            let user = UserName::new(&name)?;
            let device = DeviceName::new(&device)?;
            let meta_store = syncstore_server::open_meta_store(&meta_location(&stores)).await?;
            let token = syncstore_server::add_user_in(&*meta_store, &user, &device).await?;
            if let Some(quota) = quota {
                let quota = crate::cli::parse_quota(&quota).map_err(anyhow::Error::msg)?;
                gc::set_quota(&*meta_store, &user, quota).await?;
            }
            println!("created user {user} with device {device}; its token:");
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::User(UserCommand::Set {
            name,
            quota,
            stores,
        }) => {
            let user = UserName::new(&name)?;
            let meta_store =
                syncstore_server::open_existing_meta_store(&meta_location(&stores)).await?;
            let Some(quota) = quota else {
                anyhow::bail!("nothing to set: give --quota SIZE (or --quota none)");
            };
            let quota = crate::cli::parse_quota(&quota).map_err(anyhow::Error::msg)?;
            gc::set_quota(&*meta_store, &user, quota).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token(TokenCommand::Add {
            name,
            device,
            stores,
        }) => {
            let user = UserName::new(&name)?;
            let device = DeviceName::new(&device)?;
            let meta_store =
                syncstore_server::open_existing_meta_store(&meta_location(&stores)).await?;
            let token = syncstore_server::add_token_in(&*meta_store, &user, &device).await?;
            println!("token for user {user}, device {device}:");
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Tls(command) => tls::run(command),
        Command::User(UserCommand::List { json, stores }) => {
            accounts::list_users(&meta_location(&stores), json).await
        }
        Command::User(UserCommand::Rename { old, new, stores }) => {
            accounts::rename_user(&meta_location(&stores), &old, &new).await
        }
        Command::User(UserCommand::Passwd {
            name,
            clear,
            stores,
        }) => accounts::set_password(&meta_location(&stores), &name, clear).await,
        Command::User(UserCommand::Remove { name, yes, stores }) => {
            let meta = meta_location(&stores);
            // The content is deleted where the servers keep it, not in a local default.
            if matches!(meta, MetaLocation::Postgres(_)) && stores.store.is_none() {
                anyhow::bail!(
                    "give the chunk store the servers use, --store URL (or SYNCSTORE_STORE), \
                     so the account's content is deleted there"
                );
            }
            let chunks = chunk_location(&stores)?;
            accounts::remove_user(&meta, &chunks, &name, yes).await
        }
        Command::Device(DeviceCommand::List { user, json, stores }) => {
            accounts::list_devices(&meta_location(&stores), user.as_deref(), json).await
        }
        Command::Device(DeviceCommand::Revoke {
            user,
            device,
            stores,
        }) => accounts::revoke_device(&meta_location(&stores), &user, &device).await,
        Command::Sync(args) => sync(args).await,
        Command::Daemon(args) => daemon::run(args).await,
        Command::Login(args) => setup::login(args).await,
        Command::Completions(args) => docs::completions(&args),
        Command::Man(args) => docs::man(&args),
        Command::Status(args) => status::run(&args).await,
        Command::Pause(args) => status::pause_or_resume(&args.dir, true).await,
        Command::Resume(args) => status::pause_or_resume(&args.dir, false).await,
        Command::Ls(args) => ls::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Lock(args) => lock::lock(args).await,
        Command::Unlock(args) => lock::unlock(args).await,
        Command::Locks(args) => lock::list(args).await,
        Command::Gc(args) => {
            let meta = meta_location(&args.stores);
            let chunks = chunk_location(&args.stores)?;
            gc::run(&meta, &chunks, &args).await
        }
        Command::Usage(args) => gc::usage(args).await,
        Command::History(args) => history::history(args).await,
        Command::Trash(args) => history::trash(args).await,
        Command::Restore(args) => history::restore(args).await,
        Command::Scrub(args) => {
            let meta = meta_location(&args.stores);
            let chunks = chunk_location(&args.stores)?;
            scrub::run(&meta, &chunks, args.json).await
        }
    }
}

/// Fires on SIGINT or SIGTERM.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let fire = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(err) => {
                    tracing::warn!(cause = %err, "could not listen for SIGTERM");
                    let _ = tokio::signal::ctrl_c().await;
                    fire.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("signal received; shutting down");
        fire.cancel();
    });
    token
}

/// The meta store the flags name: `--db`, else `DATA/meta.sqlite`.
fn meta_location(args: &StoreArgs) -> MetaLocation {
    match &args.db {
        Some(db) => MetaLocation::parse(db),
        None => MetaLocation::embedded(&args.data.data),
    }
}

/// The chunk store the flags name: `--store`, else `DATA/chunks`.
fn chunk_location(args: &StoreArgs) -> anyhow::Result<ChunkLocation> {
    match &args.store {
        Some(store) => ChunkLocation::parse(store),
        None => Ok(ChunkLocation::embedded(&args.data.data)),
    }
}

async fn serve(args: crate::cli::ServeArgs) -> anyhow::Result<ExitCode> {
    // The backends are picked here, once, by scheme.
    let meta = meta_location(&args.stores);
    let chunks = chunk_location(&args.stores)?;
    let data = args.stores.data.data.clone();
    if meta == MetaLocation::embedded(&data) || chunks == ChunkLocation::embedded(&data) {
        syncstore_server::prepare_data_dir(&data)?;
    }
    let server_tls = tls::server_tls(&args.tls, &data, args.listen)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("could not listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let stores = syncstore_server::open_stores(&meta, &chunks).await?;
    if !args.new_database {
        syncstore_server::refuse_orphaned_content(&stores, &meta, &chunks).await?;
    }
    if let Some((user, device, token)) =
        syncstore_server::ensure_first_user_in(&*stores.meta).await?
    {
        let db_flag = match &meta {
            MetaLocation::Sqlite(_) if args.stores.db.is_none() => {
                format!("--data {}", data.display())
            }
            MetaLocation::Sqlite(path) => format!("--db {}", path.display()),
            MetaLocation::Postgres(_) => "--db \"$SYNCSTORE_DB\"".to_owned(),
        };
        let (scheme, pin_flag) = match &server_tls {
            None => ("http", String::new()),
            Some(server_tls) if args.tls.tls_self_signed => {
                ("https", format!(" --pin {}", server_tls.fingerprint()))
            }
            Some(_) => ("https", String::new()),
        };
        let (host, note) = address::reachable(addr);
        println!("First start: created user {user} with device {device}, whose token is:");
        println!("  {token}");
        println!("Connect a folder with (paste the token when asked):");
        println!(
            "  syncstore login ~/Sync --server {scheme}://{host}{pin_flag} && syncstore sync ~/Sync"
        );
        if let Some(note) = note {
            println!("  ({note})");
        }
        println!("Tokens for more devices: syncstore token add {user} --device NAME {db_flag}");
    }
    tracing::info!(%addr, db = %meta, store = %chunks, "syncstore server listening");
    let shutdown = shutdown_on_signals();
    let mut config = server_config(data, &args.limits);
    config.retention = gc::retention(&args.retention);
    config.gc_grace = args.retention.gc_grace;
    config.gc_interval = (!args.gc_interval.is_zero()).then_some(args.gc_interval);
    if let Some(server_tls) = server_tls {
        tls::reload_on_sighup(server_tls.clone())?;
        config.tls = Some(server_tls);
    }
    syncstore_server::serve(
        listener,
        stores,
        syncstore_server::ChangeHub::default(),
        config,
        async move { shutdown.cancelled().await },
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// The server's config: the defaults, changed by the limit flags, with the connection cap
/// lowered to fit the file limit.
fn server_config(data: PathBuf, limits: &LimitArgs) -> syncstore_server::ServerConfig {
    let mut config = syncstore_server::ServerConfig::new(data);
    let LimitArgs {
        max_connections,
        header_read_timeout,
        body_idle_timeout,
        max_transfers,
        max_transfers_per_user,
        max_json_body,
        max_json_in_flight,
        max_batch_ops,
        max_batch_dirs,
        auth_fail_limit,
        auth_fail_window,
        auth_block,
    } = *limits;
    config.max_connections = max_connections.unwrap_or(config.max_connections);
    config.header_read_timeout = header_read_timeout.unwrap_or(config.header_read_timeout);
    config.body_idle_timeout = body_idle_timeout.unwrap_or(config.body_idle_timeout);
    config.max_parallel_transfers = max_transfers.unwrap_or(config.max_parallel_transfers);
    config.max_transfers_per_user = max_transfers_per_user.unwrap_or(config.max_transfers_per_user);
    config.json_body_limit = max_json_body.unwrap_or(config.json_body_limit);
    config.json_bytes_in_flight = max_json_in_flight.unwrap_or(config.json_bytes_in_flight);
    config.max_batch_ops = max_batch_ops.unwrap_or(config.max_batch_ops);
    config.max_batch_dirs = max_batch_dirs.unwrap_or(config.max_batch_dirs);
    config.auth_fail_limit = auth_fail_limit.unwrap_or(config.auth_fail_limit);
    config.auth_fail_window = auth_fail_window.unwrap_or(config.auth_fail_window);
    config.auth_block = auth_block.unwrap_or(config.auth_block);
    let file_limit = raise_file_limit();
    // Files the process needs besides connections: databases, chunk files being read or
    // written, the listener, the runtime.
    const OTHER_FILES: libc::rlim_t = 512;
    if let Some(file_limit) = file_limit {
        let fits =
            usize::try_from(file_limit.saturating_sub(OTHER_FILES).max(1)).unwrap_or(usize::MAX);
        if config.max_connections > fits {
            tracing::warn!(
                file_limit,
                max_connections = fits,
                asked = config.max_connections,
                "the file limit (ulimit -n) is too low for the connection cap; lowering the cap"
            );
            config.max_connections = fits;
        }
    }
    config
}

/// Raises the soft limit on open files to the hard one, so the connection cap, not the file
/// limit, is what stops new connections; returns the soft limit now in force.
fn raise_file_limit() -> Option<libc::rlim_t> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(limit.rlim_cur)
}

/// Resolves the folder's config: flags first, then the saved config.
fn folder_config(dir: &Path, remote: &RemoteArgs) -> anyhow::Result<FolderConfig> {
    let Some(config) = merge_remote(remote, FolderConfig::load(dir)?)? else {
        anyhow::bail!(
            "{} is not set up yet: run `syncstore login {} --server URL` (or give --server URL \
             with SYNCSTORE_TOKEN or --token-file once)",
            dir.display(),
            dir.display()
        );
    };
    check_urls(&config.servers)?;
    Ok(config)
}

/// Refuses a server URL that is not http:// or https://.
fn check_urls(servers: &[String]) -> anyhow::Result<()> {
    for server in servers {
        anyhow::ensure!(
            server.starts_with("http://") || server.starts_with("https://"),
            "server URL {server:?} must start with http:// or https://"
        );
    }
    Ok(())
}

fn canonical_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("sync folder {} is missing or unreadable", dir.display()))?;
    anyhow::ensure!(meta.is_dir(), "{} is not a directory", dir.display());
    dir.canonicalize()
        .with_context(|| format!("could not resolve {}", dir.display()))
}

/// Opens the engine of a synced folder for syncing, and the config the flags and the saved
/// config give (saved by [`save_config`] once the server took the token).
fn open_engine(
    dir: &Path,
    remote: &RemoteArgs,
    limit_upload_kib: u64,
) -> anyhow::Result<(Engine, FolderConfig)> {
    let dir = canonical_dir(dir)?;
    let config = folder_config(&dir, remote)?;
    let api = Arc::new(api_client(&config)?.with_upload_limit(upload_limit(limit_upload_kib)));
    let engine = Engine::open(&dir, api)?;
    Ok((engine, config))
}

/// Opens the engine of a synced folder to preview it (`status`): nothing in `.syncstore/` is
/// written, the saved config included.
pub fn open_engine_read_only(dir: &Path) -> anyhow::Result<Engine> {
    let dir = canonical_dir(dir)?;
    let no_flags = RemoteArgs {
        servers: Vec::new(),
        token: None,
        token_file: None,
        ca: None,
        pin: None,
    };
    let config = folder_config(&dir, &no_flags)?;
    let api = Arc::new(api_client(&config)?);
    Ok(Engine::open_read_only(&dir, api)?)
}

async fn sync(args: crate::cli::SyncArgs) -> anyhow::Result<ExitCode> {
    if args.allow_mass_delete {
        if let Some(code) = status::allow_mass_delete(&args.dir).await? {
            return Ok(code);
        }
    }
    let (mut engine, config) = open_engine(&args.dir, &args.remote, args.limit_upload)?;
    // `--once` keeps the default signal handling: Ctrl-C stops it at once.
    let shutdown = (!args.once).then(shutdown_on_signals);
    let unreachable = match &shutdown {
        Some(shutdown) => setup::WhenUnreachable::Wait(shutdown),
        None => setup::WhenUnreachable::Fail,
    };
    if !setup::check_and_save(engine.root(), &config, unreachable).await? {
        return Ok(ExitCode::SUCCESS);
    }
    engine.set_mass_delete_limit(Some(syncstore_plan::MassDeleteLimit {
        percent: args.mass_delete_percent,
        min_files: args.mass_delete_min,
    }));
    if args.allow_mass_delete {
        engine.allow_mass_delete();
    }
    if args.once {
        let bar = bar::show(engine.progress());
        let report = syncstore_client::daemon::run_once(&mut engine).await;
        drop(bar);
        let report = report?;
        for skipped in &report.skipped {
            eprintln!("skipped {}: {}", skipped.path, skipped.reason);
        }
        for notice in engine.take_notices() {
            eprintln!("note: {notice}");
        }
        if report.in_sync {
            if !report.skipped.is_empty() {
                eprintln!(
                    "warning: in sync, but {} path(s) were skipped (listed above)",
                    report.skipped.len()
                );
            }
            println!("in sync ({} steps applied)", report.applied);
            return Ok(ExitCode::SUCCESS);
        }
        for blocked in &report.blocked {
            match blocked.reason {
                syncstore_plan::BlockReason::MassDeleteHeld {
                    files,
                    folder_files,
                } => eprintln!(
                    "held: {files} of the folder's {folder_files} files were deleted on the \
                     server and are not deleted here; `syncstore sync {} --allow-mass-delete` \
                     deletes them here too (or restore them on the server)",
                    args.dir.display()
                ),
                _ => eprintln!("blocked: {blocked:?}"),
            }
        }
        eprintln!(
            "not in sync after one pass ({} steps applied); run `syncstore status {}` for details",
            report.applied,
            args.dir.display()
        );
        return Ok(ExitCode::from(1));
    }
    let options = syncstore_client::daemon::DaemonOptions {
        scan_interval: Duration::from_secs(args.scan_interval.max(1)),
    };
    let _bar = bar::show(engine.progress());
    let shutdown = shutdown.unwrap_or_else(shutdown_on_signals);
    let dir = engine.root().to_path_buf();
    syncstore_client::daemon::run(engine, options, shutdown)
        .await
        .map_err(|err| setup::with_login_hint(err, &dir))?;
    Ok(ExitCode::SUCCESS)
}

/// An API client from `--server`/`--token`, or else the synced folder around the current directory.
///
/// # Errors
/// When neither gives a server and a token.
pub fn api_from(remote: &RemoteArgs) -> anyhow::Result<ApiClient> {
    let saved = enclosing_folder()
        .map(|dir| FolderConfig::load(&dir))
        .transpose()?
        .flatten();
    match merge_remote(remote, saved)? {
        Some(config) => api_client(&config),
        None => anyhow::bail!("give --server URL and --token TOKEN, or run inside a synced folder"),
    }
}

/// `--limit-upload` in bytes per second (`None` for 0: no limit).
pub fn upload_limit(kib_per_s: u64) -> Option<u64> {
    (kib_per_s > 0).then(|| kib_per_s.saturating_mul(1024))
}

/// The API client of a folder's config: its servers, token and trust (`--ca`, `--pin`).
pub fn api_client(config: &FolderConfig) -> anyhow::Result<ApiClient> {
    Ok(ApiClient::with_trust(
        config.servers.clone(),
        config.token.clone(),
        &config.trust(),
    )?)
}

/// Servers, token, CA and pin from the flags, each falling back to a saved config; `None`
/// when servers or token are still missing.
///
/// # Errors
/// When `--token-file` cannot be read.
pub fn merge_remote(
    remote: &RemoteArgs,
    saved: Option<FolderConfig>,
) -> anyhow::Result<Option<FolderConfig>> {
    let (saved_servers, saved_token, saved_ca, saved_pin) = match saved {
        Some(config) => (config.servers, Some(config.token), config.ca, config.pin),
        None => (Vec::new(), None, None, None),
    };
    let servers = if remote.servers.is_empty() {
        saved_servers
    } else {
        remote.servers.clone()
    };
    let Some(token) = setup::flag_token(remote)?.or(saved_token) else {
        return Ok(None);
    };
    Ok((!servers.is_empty()).then_some(FolderConfig {
        servers,
        token,
        ca: remote.ca.clone().or(saved_ca),
        pin: remote.pin.or(saved_pin),
    }))
}

/// The synced folder containing the current directory, if any.
pub fn enclosing_folder() -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors()
        .find(|dir| {
            dir.join(syncstore_proto::META_DIR)
                .join("config.json")
                .is_file()
        })
        .map(Path::to_path_buf)
}
