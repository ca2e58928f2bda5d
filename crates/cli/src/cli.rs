//! Command-line flags (clap). Every flag that takes a value can also come from an env var.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use syncstore_proto::CertFingerprint;

/// syncstore: keep folders on several machines in sync through your own server.
#[derive(Parser, Debug)]
#[command(name = "syncstore", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a server (embedded default: SQLite + local disk under --data; or --db postgres://…
    /// --store s3://… for several servers over one database and bucket).
    Serve(ServeArgs),
    /// Manage accounts (offline, against the server's database).
    #[command(subcommand)]
    User(UserCommand),
    /// Manage device tokens (offline, against the server's database).
    #[command(subcommand)]
    Token(TokenCommand),
    /// The server's TLS certificate.
    #[command(subcommand)]
    Tls(TlsCommand),
    /// List and revoke devices (offline, against the server's database).
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Keep DIR and the server in sync, both ways, until stopped (or once with --once).
    Sync(SyncArgs),
    /// Keep every folder of the config file in sync, in one process (see `--config`).
    Daemon(DaemonRunArgs),
    /// Set (or replace) the server and token of a folder: the token is checked with the
    /// server, then saved in DIR/.syncstore/ (mode 0600). Asks for the token on a terminal.
    Login(LoginArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions(CompletionsArgs),
    /// Write the man pages (syncstore.1 and one per command) into a directory.
    Man(ManArgs),
    /// Show what DIR's daemon is doing (pending counts, transfers, rate, errors), or, when no
    /// daemon runs, compare DIR with the server; changes nothing. Exit 0 in sync, 1 not.
    Status(StatusArgs),
    /// Pause DIR's running daemon: no pass starts, the running one stops at its next step.
    Pause(DaemonArgs),
    /// Resume DIR's paused daemon: it syncs again at once.
    Resume(DaemonArgs),
    /// List the files on the server.
    Ls(LsArgs),
    /// Start a server and two synced folders under ./syncstore-demo to try things out.
    Demo(DemoArgs),
    /// Lock a file or directory so that no other device can change it until unlocked.
    Lock(LockArgs),
    /// Release a lock (--force: break another device's lock).
    Unlock(UnlockArgs),
    /// List the locks in force.
    Locks(LocksArgs),
    /// Verify every stored chunk (offline, against the server's stores); bad ones are moved
    /// aside and asked of the devices that have them. Exit 1 when any was bad.
    Scrub(ScrubArgs),
    /// Run garbage collection now (offline, against the server's stores): compact the journals
    /// past retention, delete content no kept version names. Reports what it freed.
    Gc(GcArgs),
    /// Show the account's usage: current files, history, trash, and the quota.
    Usage(UsageArgs),
    /// List every kept version of a file: revision, time, size, device, content hash.
    History(HistoryArgs),
    /// List deleted files that can still be restored (newest deletion first).
    Trash(TrashArgs),
    /// Bring back a version of a file, deleted files, or a whole folder as it was at a moment.
    /// Every restore is a new change: all devices get it, and what it replaces stays in history.
    #[command(after_help = TIME_HELP)]
    Restore(RestoreArgs),
}

/// How a TIME is written, for `--help`.
pub const TIME_HELP: &str = "TIME is RFC 3339 (2026-12-01T10:00:00Z), a local time \
(\"2026-12-01 10:00\" or \"2026-12-01 10:00:30\"), or a span ago (90m, 2h, 3d).

Examples:
  syncstore restore notes.txt --rev 42          the version journalled at revision 42
  syncstore restore notes.txt --at 2h --to notes-old.txt
  syncstore restore --deleted --since 2h        undo every delete of the last two hours
  syncstore restore ~/Sync --at \"2026-12-01 09:00\" --dry-run
                                                the whole folder as it was at 9:00";

#[derive(Args, Debug)]
pub struct GcArgs {
    #[command(flatten)]
    pub stores: StoreArgs,
    /// How long old versions and deleted files are kept: give the server's `--keep-history`
    /// (there is no default here, so a run never keeps less history than the server does by
    /// accident); 0 keeps only current versions.
    #[arg(long, env = "SYNCSTORE_KEEP_HISTORY", value_parser = parse_span)]
    pub keep_history: Duration,
    /// Content uploaded less than this long ago is never collected.
    #[arg(long, env = "SYNCSTORE_GC_GRACE", default_value = "24h", value_parser = parse_span)]
    pub gc_grace: Duration,
    /// Say what would be freed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct UsageArgs {
    /// Print the usage as JSON (the server's answer).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// A file inside a synced folder, or a path in the server's namespace.
    pub path: String,
    /// Print the versions as JSON (the server's answer: path, versions, kept_since_ms).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Args, Debug)]
#[command(after_help = TIME_HELP)]
pub struct TrashArgs {
    /// Only files under this directory (local inside a synced folder, or in the namespace).
    pub dir: Option<String>,
    /// Only files deleted since TIME.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only files deleted by this device.
    #[arg(long, value_name = "DEVICE")]
    pub by: Option<String>,
    /// Print the entries as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The file, or with --at the directory (a synced folder's root: all of it), to restore;
    /// with --deleted, only deleted files under it.
    pub path: Option<String>,
    /// The version to bring back, as `history` lists it.
    #[arg(long, value_name = "R", conflicts_with_all = ["at", "deleted"])]
    pub rev: Option<u64>,
    /// Restore PATH (a file or everything beneath a directory) as it was at TIME: changed files
    /// get their old content, deleted ones come back, files created since go to the trash.
    #[arg(long, value_name = "TIME", conflicts_with = "deleted")]
    pub at: Option<String>,
    /// Bring deleted files back from the trash: PATH alone, or with --since/--by in bulk.
    #[arg(long)]
    pub deleted: bool,
    /// With --deleted: files deleted since TIME.
    #[arg(long, value_name = "TIME", requires = "deleted")]
    pub since: Option<String>,
    /// With --deleted: files deleted by this device.
    #[arg(long, value_name = "DEVICE", requires = "deleted")]
    pub by: Option<String>,
    /// Put the old content at NEWPATH instead (beside the current one, which is not changed);
    /// NEWPATH must not exist.
    #[arg(long, value_name = "NEWPATH", conflicts_with = "deleted")]
    pub to: Option<String>,
    /// Print what would be done, with counts; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the server's answer as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Args, Debug)]
pub struct LockArgs {
    /// A path inside a synced folder (absolute or relative to the current directory), or a path
    /// in the server's namespace.
    pub path: String,
    /// The lock ends by itself after this long (e.g. 30m, 2h); default: until unlocked.
    #[arg(long)]
    pub ttl: Option<String>,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Args, Debug)]
pub struct UnlockArgs {
    /// The locked path (local, inside a synced folder, or in the server's namespace).
    pub path: String,
    /// Break a lock held by another device (it is told on its next sync).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Args, Debug)]
pub struct LocksArgs {
    /// Print the locks as JSON (an array of {path, device, since_ms, expires_ms}).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Args, Debug)]
pub struct DataArgs {
    /// The server's data directory.
    #[arg(long, env = "SYNCSTORE_DATA", default_value = "./syncstore-data")]
    pub data: PathBuf,
}

/// Where the server's stores live; the backend is picked by each value's scheme.
#[derive(Args)]
pub struct StoreArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Metadata database: a SQLite file (default DATA/meta.sqlite) or a postgres:// URL.
    #[arg(long, env = "SYNCSTORE_DB", hide_env_values = true)]
    pub db: Option<String>,
    /// Chunk store: a directory (default DATA/chunks) or s3://BUCKET[/PREFIX], with the endpoint,
    /// region and credentials from AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY.
    #[arg(long, env = "SYNCSTORE_STORE")]
    pub store: Option<String>,
}

impl std::fmt::Debug for StoreArgs {
    // `--db` may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreArgs")
            .field("data", &self.data)
            .field(
                "db",
                &self
                    .db
                    .as_deref()
                    .map(syncstore_server::MetaLocation::parse),
            )
            .field("store", &self.store)
            .finish()
    }
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub stores: StoreArgs,
    /// Address to listen on.
    #[arg(long, env = "SYNCSTORE_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Start on a metadata database without users even though the chunk store holds content
    /// (a lost database started over on purpose; the old content stays, unreadable by the new
    /// accounts). Without it, serve refuses: restore the database instead.
    #[arg(long, env = "SYNCSTORE_NEW_DATABASE")]
    pub new_database: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// How often garbage collection runs in the background (journal compaction, then the
    /// content no kept version names); 0 turns it off (`syncstore gc` still runs it).
    #[arg(long, env = "SYNCSTORE_GC_INTERVAL", default_value = "1h", value_parser = parse_span)]
    pub gc_interval: Duration,
}

/// HTTPS for `serve`; without these flags it serves plain HTTP.
#[derive(Args, Debug)]
pub struct TlsArgs {
    /// Serve HTTPS with this PEM certificate chain (the server's certificate first), with
    /// --tls-key. Both files are read again on SIGHUP: new connections get the new
    /// certificate, and a reload that fails keeps the old one.
    #[arg(
        long,
        env = "SYNCSTORE_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with = "tls_self_signed"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(
        long,
        env = "SYNCSTORE_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Serve HTTPS with a self-signed certificate, made on the first start and kept in
    /// DATA/tls/; prints its fingerprint, which clients pin with --pin.
    #[arg(long, env = "SYNCSTORE_TLS_SELF_SIGNED")]
    pub tls_self_signed: bool,
}

/// How long history is kept, and how long uploads may take; for `serve` and `gc`.
#[derive(Args, Debug, Clone, Copy)]
pub struct RetentionArgs {
    /// How long old versions and deleted files are kept (thinned as they age: all for an
    /// hour, one per hour for a day, one per day after that); 0 keeps only current versions.
    #[arg(long, env = "SYNCSTORE_KEEP_HISTORY", default_value = "30d", value_parser = parse_span)]
    pub keep_history: Duration,
    /// Content uploaded less than this long ago is never collected, so an upload may take
    /// this long before the file is committed.
    #[arg(long, env = "SYNCSTORE_GC_GRACE", default_value = "24h", value_parser = parse_span)]
    pub gc_grace: Duration,
}

/// A span like `30d`, `90m` or `1h30m`, or `0`.
pub fn parse_span(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text).map_err(|err| format!("{err} (use e.g. 30d, 12h, 90m, or 0)"))
}

/// A size like `10G`, `500M`, `1.5T` (powers of 1024) or bytes, or `none`.
pub fn parse_quota(text: &str) -> Result<Option<u64>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?}: use e.g. 10G, 500M, or none"))?;
    let scale: u64 = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(format!("invalid size unit in {text:?}: use K, M, G or T")),
    };
    Ok(Some((number * scale as f64) as u64))
}

/// What one client may take of the server; every default is far above normal use.
#[derive(Args, Debug)]
pub struct LimitArgs {
    /// Most connections open at once; more get a 503. Default 10000, lowered to fit the
    /// file limit (`serve` raises its soft limit to the hard one).
    #[arg(long, env = "SYNCSTORE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// How long a connection may take to send a request head (and an idle one stays open).
    /// Default 30s.
    #[arg(long, env = "SYNCSTORE_HEADER_READ_TIMEOUT", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Option<Duration>,
    /// How long a request body may send nothing before the request gets a 408 and is cut off.
    /// Default 30s.
    #[arg(long, env = "SYNCSTORE_BODY_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    pub body_idle_timeout: Option<Duration>,
    /// Chunk uploads and downloads running at once, over all users. Default 16.
    #[arg(long, env = "SYNCSTORE_MAX_TRANSFERS")]
    pub max_transfers: Option<usize>,
    /// Chunk uploads and downloads one user may run at once. Default 4.
    #[arg(long, env = "SYNCSTORE_MAX_TRANSFERS_PER_USER")]
    pub max_transfers_per_user: Option<usize>,
    /// Largest JSON request body, in bytes (suffixes KiB, MiB, GiB); more gets a 413.
    /// Default 32MiB.
    #[arg(long, env = "SYNCSTORE_MAX_JSON_BODY", value_parser = parse_size)]
    pub max_json_body: Option<usize>,
    /// Bytes of JSON request bodies held at once over all requests; more wait. Default 128MiB.
    #[arg(long, env = "SYNCSTORE_MAX_JSON_IN_FLIGHT", value_parser = parse_size)]
    pub max_json_in_flight: Option<usize>,
    /// Most ops in one ops request; more gets a 413. Default 10000 (clients send 1000).
    #[arg(long, env = "SYNCSTORE_MAX_BATCH_OPS")]
    pub max_batch_ops: Option<usize>,
    /// Most distinct directories the paths of one ops request may lie in; more gets a 413.
    /// Default 20000.
    #[arg(long, env = "SYNCSTORE_MAX_BATCH_DIRS")]
    pub max_batch_dirs: Option<usize>,
    /// Requests with a refused token one address may send within --auth-fail-window; past
    /// that, its refused tokens get 429 instead of 401 for --auth-block (good tokens from it
    /// are still served). 0: no limit. Default 10.
    #[arg(long, env = "SYNCSTORE_AUTH_FAIL_LIMIT")]
    pub auth_fail_limit: Option<u32>,
    /// See --auth-fail-limit. Default 1m.
    #[arg(long, env = "SYNCSTORE_AUTH_FAIL_WINDOW", value_parser = humantime::parse_duration)]
    pub auth_fail_window: Option<Duration>,
    /// See --auth-fail-limit. Default 5m.
    #[arg(long, env = "SYNCSTORE_AUTH_BLOCK", value_parser = humantime::parse_duration)]
    pub auth_block: Option<Duration>,
}

/// A byte count: digits, optionally followed by KiB, MiB or GiB (or K, M, G).
fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let number: usize = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 1048576, 512KiB or 32MiB"))?;
    let factor: usize = match unit.trim() {
        "" => 1,
        "K" | "KiB" => 1024,
        "M" | "MiB" => 1024 * 1024,
        "G" | "GiB" => 1024 * 1024 * 1024,
        other => return Err(format!("unknown size unit {other:?}: use KiB, MiB or GiB")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[derive(Args, Debug)]
pub struct ScrubArgs {
    #[command(flatten)]
    pub stores: StoreArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user and print a device token for it (alone on the last line).
    Add {
        /// The user's name.
        name: String,
        /// Name of the first device.
        #[arg(long, default_value = "first-device")]
        device: String,
        /// Most bytes the user's current files may take (e.g. 10G); more is refused with 507.
        #[arg(long, value_name = "SIZE")]
        quota: Option<String>,
        #[command(flatten)]
        stores: StoreArgs,
    },
    /// List the accounts: name, devices, created, current size, quota.
    List {
        /// Print the accounts as JSON (an array of {name, devices, created_ms, used_bytes,
        /// quota_bytes}).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        stores: StoreArgs,
    },
    /// Rename an account; its files, devices and tokens stay as they are.
    Rename {
        /// The user's name now.
        old: String,
        /// The new name.
        new: String,
        #[command(flatten)]
        stores: StoreArgs,
    },
    /// Remove an account with its devices, files, history and trash (asks first).
    ///
    /// Its devices' tokens are refused at once, on every server of the database, and its
    /// files, history and trash are deleted from the database and the chunk store: it cannot
    /// be undone. The devices keep their local copies; their daemons stop at their next
    /// request, refused. Safe with servers running: content that an upload under way stores
    /// afterwards goes at the next garbage collection. On a terminal it asks you to type the
    /// name; otherwise give --yes.
    Remove {
        /// The user's name.
        name: String,
        /// Remove without asking.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        stores: StoreArgs,
    },
    /// Set the user's password for the web interface (at /), or with --clear turn web
    /// sign-in off. On a terminal it asks twice without echo; otherwise it reads one line from
    /// standard input. Ends the user's web sessions.
    Passwd {
        /// The user's name.
        name: String,
        /// Remove the password: nobody can sign in to the web interface as this user.
        #[arg(long)]
        clear: bool,
        #[command(flatten)]
        stores: StoreArgs,
    },
    /// Change a user's settings.
    Set {
        /// The user's name.
        name: String,
        /// Most bytes the user's current files may take (e.g. 10G), or `none`.
        #[arg(long, value_name = "SIZE")]
        quota: Option<String>,
        #[command(flatten)]
        stores: StoreArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Print a new device token for an existing user (alone on the last line).
    Add {
        /// The user's name.
        name: String,
        /// The device's name (conflicted copies and locks are named after it).
        #[arg(long)]
        device: String,
        #[command(flatten)]
        stores: StoreArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum TlsCommand {
    /// Print the SHA-256 fingerprint of the server's certificate, which clients give to
    /// --pin: the self-signed one in DATA/tls/, or the one in --cert FILE.
    Fingerprint {
        #[command(flatten)]
        data: DataArgs,
        /// A PEM certificate file (its first certificate), such as serve's --tls-cert.
        #[arg(long, env = "SYNCSTORE_TLS_CERT", value_name = "FILE")]
        cert: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum DeviceCommand {
    /// List devices: created, last seen and from which address, revoked.
    ///
    /// Last seen and the address are recorded by each server when it takes the device's token,
    /// at most once a minute per device.
    List {
        /// The user's name; default: every user.
        user: Option<String>,
        /// Print the devices as JSON (an array of {user, name, created_ms, last_seen_ms,
        /// last_address, revoked_ms}).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        stores: StoreArgs,
    },
    /// Revoke a device (a lost laptop): its token is refused from now on.
    ///
    /// It holds on every server of the database from the moment the command returns, and the
    /// device's locks are released. Its name stays, as the history (versions, trash) names it,
    /// so a new device needs another name.
    Revoke {
        /// The user's name.
        user: String,
        /// The device's name.
        device: String,
        #[command(flatten)]
        stores: StoreArgs,
    },
}

#[derive(Args, Debug)]
pub struct RemoteArgs {
    /// Server URL; repeat for failover (tried in order). Saved in DIR/.syncstore/.
    #[arg(long = "server", env = "SYNCSTORE_SERVER", value_delimiter = ',')]
    pub servers: Vec<String>,
    /// Device token. Saved in DIR/.syncstore/ (mode 0600) once the server accepted it. A
    /// running `sync` moves it out of its command line at once (into its environment, which
    /// only its user can read); prefer SYNCSTORE_TOKEN, --token-file or `syncstore login`.
    #[arg(long, env = "SYNCSTORE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read the device token from FILE (its first line).
    #[arg(
        long,
        env = "SYNCSTORE_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "token"
    )]
    pub token_file: Option<PathBuf>,
    /// Trust the CA certificates in this PEM file for https:// servers, besides the system's
    /// (a private CA). Saved in DIR/.syncstore/.
    #[arg(long, env = "SYNCSTORE_CA", value_name = "FILE", value_parser = parse_absolute_path)]
    pub ca: Option<PathBuf>,
    /// Accept exactly the https:// server certificate with this SHA-256 fingerprint, as
    /// `serve --tls-self-signed` and `syncstore tls fingerprint` print it (a self-signed
    /// server; the host name is not checked). Saved in DIR/.syncstore/.
    #[arg(long, env = "SYNCSTORE_PIN", value_name = "SHA256")]
    pub pin: Option<CertFingerprint>,
}

/// A path made absolute against the current directory, so a saved one still names the same
/// file from anywhere.
fn parse_absolute_path(text: &str) -> Result<PathBuf, String> {
    std::path::absolute(text).map_err(|err| format!("{text:?} is not a usable path: {err}"))
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// The synced folder (created if missing).
    pub dir: PathBuf,
    /// Server URL; repeat for failover. Default: the folder's saved servers.
    #[arg(long = "server", env = "SYNCSTORE_SERVER", value_delimiter = ',')]
    pub servers: Vec<String>,
    /// Read the token from FILE instead of asking (or SYNCSTORE_TOKEN); without a terminal,
    /// the token is read from stdin.
    #[arg(long, env = "SYNCSTORE_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Trust the CA certificates in this PEM file (see `sync --ca`). Default: the saved one.
    #[arg(long, env = "SYNCSTORE_CA", value_name = "FILE", value_parser = parse_absolute_path)]
    pub ca: Option<PathBuf>,
    /// Accept exactly the server certificate with this SHA-256 fingerprint (see `sync --pin`).
    /// Default: the saved one.
    #[arg(long, env = "SYNCSTORE_PIN", value_name = "SHA256")]
    pub pin: Option<CertFingerprint>,
}

#[derive(Args, Debug)]
pub struct DaemonRunArgs {
    /// The config file (TOML): `[[folder]]` tables with `path` and, unless the folder is set
    /// up already, `servers` and `token_file` (or an `[account]` table they share).
    /// Default: $XDG_CONFIG_HOME/syncstore/config.toml (~/.config/syncstore/config.toml).
    #[arg(long, env = "SYNCSTORE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Seconds between full rescans of each folder (the config's `scan_interval` wins).
    #[arg(long, env = "SYNCSTORE_SCAN_INTERVAL", default_value_t = 60)]
    pub scan_interval: u64,
    /// Limit each folder's uploads to this many KiB per second on average; 0: no limit (the
    /// config's `limit_upload` wins).
    #[arg(
        long,
        env = "SYNCSTORE_LIMIT_UPLOAD",
        value_name = "KIB_PER_S",
        default_value_t = 0
    )]
    pub limit_upload: u64,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Where to write the pages (created if missing).
    #[arg(long, default_value = "man")]
    pub dir: PathBuf,
}

/// The mass-delete interlock's defaults (`sync` and `daemon`).
pub const MASS_DELETE_PERCENT: u8 = 50;
/// See [`MASS_DELETE_PERCENT`].
pub const MASS_DELETE_MIN: usize = 100;

#[derive(Args, Debug)]
pub struct SyncArgs {
    /// The folder to keep in sync.
    pub dir: PathBuf,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Seconds between full rescans (the watcher reports changes in between).
    #[arg(long, env = "SYNCSTORE_SCAN_INTERVAL", default_value_t = 60)]
    pub scan_interval: u64,
    /// Limit uploads to this many KiB per second on average; 0: no limit.
    #[arg(
        long,
        env = "SYNCSTORE_LIMIT_UPLOAD",
        value_name = "KIB_PER_S",
        default_value_t = 0
    )]
    pub limit_upload: u64,
    /// Do one full two-way pass and exit: 0 when in sync, 1 when not.
    #[arg(long)]
    pub once: bool,
    /// Apply the local deletions the mass-delete interlock holds, once: tells DIR's running
    /// daemon and exits, or, when none runs, syncs with them allowed.
    #[arg(long)]
    pub allow_mass_delete: bool,
    /// The mass-delete interlock: when one pass would delete locally, because they were
    /// deleted on the server, more than this percent of the folder's files (and more than
    /// --mass-delete-min), it deletes none of them and waits for --allow-mass-delete (or for
    /// the files to be restored on the server). 100 turns it off.
    #[arg(
        long,
        env = "SYNCSTORE_MASS_DELETE_PERCENT",
        default_value_t = MASS_DELETE_PERCENT,
        value_name = "PERCENT",
        value_parser = clap::value_parser!(u8).range(0..=100)
    )]
    pub mass_delete_percent: u8,
    /// See --mass-delete-percent: a pass deleting this many files or fewer is never held.
    #[arg(
        long,
        env = "SYNCSTORE_MASS_DELETE_MIN",
        default_value_t = MASS_DELETE_MIN,
        value_name = "FILES"
    )]
    pub mass_delete_min: usize,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The synced folder.
    pub dir: PathBuf,
    /// List the paths too (pending, blocked and skipped), not only their counts.
    #[arg(short, long)]
    pub verbose: bool,
    /// Print the status as JSON (see README, "Status").
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// The synced folder whose daemon to ask.
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Directory on the server to list (default: the top).
    pub path: Option<String>,
    /// List everything below, not only direct children.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Print the listing as JSON (an array of {path, kind, size, mtime_ms, device, executable,
    /// locked_by}).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where to put the demo's server data and folders.
    #[arg(long, default_value = "./syncstore-demo")]
    pub dir: PathBuf,
    /// Address for the demo server (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("32MiB"), Ok(32 * 1024 * 1024));
        assert_eq!(parse_size("1G"), Ok(1024 * 1024 * 1024));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }
}
