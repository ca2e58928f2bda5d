//! Setting a folder up: where its token comes from, checking it with the server before it is
//! saved, `syncstore login`, and keeping tokens out of a running daemon's command line.

use crate::cli::{LoginArgs, RemoteArgs};
use anyhow::Context;
use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;
use syncstore_client::{ApiError, FolderConfig};
use tokio_util::sync::CancellationToken;

/// The environment variable a token moves to when the process drops it from its arguments.
const TOKEN_ENV: &str = "SYNCSTORE_TOKEN";

/// When the command line holds `--token VALUE` (or `--token=VALUE`), runs this program again
/// at once with the same arguments but that one, and the token in `SYNCSTORE_TOKEN`, so no
/// other user ever sees it in `ps` or `/proc/PID/cmdline` (a process's environment is readable
/// by its own user only). Returns only when there is nothing to drop.
///
/// Must run before any other thread starts.
///
/// # Errors
/// When the program cannot be run again.
pub fn reexec_without_token_in_argv() -> anyhow::Result<()> {
    let Some((kept, token)) = without_token(std::env::args_os().collect()) else {
        return Ok(());
    };
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new("/proc/self/exe");
    if let Some((first, rest)) = kept.split_first() {
        command.arg0(first).args(rest);
    }
    let err = command.env(TOKEN_ENV, token).exec();
    Err(err).context("could not restart without the token on the command line")
}

/// The arguments without the `--token` option, and its value; `None` when there is none.
fn without_token(args: Vec<OsString>) -> Option<(Vec<OsString>, OsString)> {
    let mut kept = Vec::with_capacity(args.len());
    let mut token = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            kept.push(arg);
            kept.extend(args);
            break;
        }
        if arg == "--token" {
            token = args.next();
            continue;
        }
        if let Some(value) = arg.to_str().and_then(|text| text.strip_prefix("--token=")) {
            token = Some(OsString::from(value));
            continue;
        }
        kept.push(arg);
    }
    Some((kept, token?))
}

/// The token in `path`: its first line, trimmed.
///
/// # Errors
/// When the file cannot be read or holds no token.
pub fn read_token_file(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read the token file {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim();
    anyhow::ensure!(
        !token.is_empty(),
        "the token file {} is empty",
        path.display()
    );
    Ok(token.to_owned())
}

/// The token the flags give: `--token` (or `SYNCSTORE_TOKEN`), else `--token-file`.
///
/// # Errors
/// When the token file cannot be read.
pub fn flag_token(remote: &RemoteArgs) -> anyhow::Result<Option<String>> {
    match (&remote.token, &remote.token_file) {
        (Some(token), _) => Ok(Some(token.clone())),
        (None, Some(file)) => read_token_file(file).map(Some),
        (None, None) => Ok(None),
    }
}

/// What to do when the server cannot be reached to check a new token.
pub enum WhenUnreachable<'a> {
    /// Fail: nothing is saved.
    Fail,
    /// Try again now and then until the server answers or `stop` fires.
    Wait(&'a CancellationToken),
}

/// Saves `config` as the folder's at `dir` once the server accepted its token; a config that
/// is saved already is not checked again (only made private, if an older version left it
/// readable by others). Returns false when `stop` fired while waiting.
///
/// # Errors
/// When the server refuses the token (nothing is saved), cannot be reached and `unreachable`
/// is [`WhenUnreachable::Fail`], or the file cannot be written.
pub async fn check_and_save(
    dir: &Path,
    config: &FolderConfig,
    unreachable: WhenUnreachable<'_>,
) -> anyhow::Result<bool> {
    if FolderConfig::load(dir)?.as_ref() == Some(config) {
        make_private(dir)?;
        return Ok(true);
    }
    if !check_token(dir, config, unreachable).await? {
        return Ok(false);
    }
    config.save(dir)?;
    tracing::info!(folder = %dir.display(), "the server accepted the token; saved the folder's config");
    Ok(true)
}

/// Asks the server who the token is; true once it answered.
async fn check_token(
    dir: &Path,
    config: &FolderConfig,
    unreachable: WhenUnreachable<'_>,
) -> anyhow::Result<bool> {
    let api = super::api_client(config)?;
    let mut wait = Duration::from_secs(1);
    loop {
        let err = match api.whoami().await {
            Ok(_) => return Ok(true),
            Err(err) => err,
        };
        if let ApiError::Unauthorized(_) = err {
            return Err(err).with_context(|| {
                format!(
                    "nothing was saved for {}: get a token with `syncstore token add USER \
                     --device NAME` on the server, then `syncstore login {}`",
                    dir.display(),
                    dir.display()
                )
            });
        }
        let stop = match unreachable {
            WhenUnreachable::Wait(stop) if err.is_transient() => stop,
            _ => {
                return Err(err)
                    .context("could not check the token with the server, so nothing was saved");
            }
        };
        tracing::warn!(
            cause = %syncstore_client::error_chain(&err),
            retry_in = ?wait,
            "waiting for the server to check the token before saving it"
        );
        tokio::select! {
            () = stop.cancelled() => return Ok(false),
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

/// A daemon's error, with what to do when it is a refused token (revoked, or the account
/// removed).
pub fn with_login_hint(err: syncstore_client::Error, dir: &Path) -> anyhow::Error {
    let refused = matches!(err, syncstore_client::Error::Api(ApiError::Unauthorized(_)));
    let err = anyhow::Error::new(err);
    if refused {
        err.context(format!(
            "{} stopped: get a new token (`syncstore token add USER --device NAME` on the \
             server) and run `syncstore login {}`",
            dir.display(),
            dir.display()
        ))
    } else {
        err
    }
}

/// Narrows a saved config to mode 0600 if others can read it.
fn make_private(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(syncstore_proto::META_DIR).join("config.json");
    let mode = std::fs::metadata(&path)
        .with_context(|| format!("could not read {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("could not make {} private", path.display()))?;
    }
    Ok(())
}

/// `syncstore login DIR`: checks a token with the server and saves it (and the servers) as the
/// folder's, replacing what was saved.
///
/// # Errors
/// When no server is known, no token is given, the server refuses it or cannot be reached.
pub async fn login(args: LoginArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("could not create {}", args.dir.display()))?;
    let dir = super::canonical_dir(&args.dir)?;
    let saved = FolderConfig::load(&dir)?;
    let (saved_servers, saved_ca, saved_pin) = match saved {
        Some(saved) => (saved.servers, saved.ca, saved.pin),
        None => (Vec::new(), None, None),
    };
    let servers = if args.servers.is_empty() {
        saved_servers
    } else {
        args.servers.clone()
    };
    anyhow::ensure!(
        !servers.is_empty(),
        "{} has no server saved yet: give --server URL",
        dir.display()
    );
    super::check_urls(&servers)?;
    let token = match (std::env::var(TOKEN_ENV), &args.token_file) {
        (_, Some(file)) => read_token_file(file)?,
        (Ok(token), None) if !token.trim().is_empty() => token.trim().to_owned(),
        _ => ask_token()?,
    };
    let config = FolderConfig {
        servers,
        token,
        ca: args.ca.clone().or(saved_ca),
        pin: args.pin.or(saved_pin),
    };
    // Checked against the server before anything is written.
    check_token(&dir, &config, WhenUnreachable::Fail).await?;
    config.save(&dir)?;
    println!(
        "saved the server and token of {}; start it with `syncstore sync {}` (a daemon already \
         running there keeps the old token until restarted)",
        dir.display(),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Asks for the token on the terminal without echoing it, or reads one line of stdin.
fn ask_token() -> anyhow::Result<String> {
    use std::io::IsTerminal;
    let token = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("device token (sst_…): ")
            .context("could not read the token from the terminal")?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("could not read the token from stdin")?;
        line
    };
    let token = token.trim();
    anyhow::ensure!(
        !token.is_empty(),
        "no token given (set SYNCSTORE_TOKEN, give --token-file, or type it when asked)"
    );
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_token_is_dropped_from_the_arguments() {
        let (kept, token) = without_token(args(&[
            "syncstore",
            "sync",
            "d",
            "--token",
            "sst_a",
            "--once",
        ]))
        .unwrap();
        assert_eq!(kept, args(&["syncstore", "sync", "d", "--once"]));
        assert_eq!(token, "sst_a");
        let (kept, token) =
            without_token(args(&["syncstore", "sync", "--token=sst_b", "d"])).unwrap();
        assert_eq!(kept, args(&["syncstore", "sync", "d"]));
        assert_eq!(token, "sst_b");
        assert!(without_token(args(&["syncstore", "sync", "d"])).is_none());
        // After `--`, a "--token" is a folder's name, not the option.
        assert!(without_token(args(&["syncstore", "sync", "--", "--token"])).is_none());
    }
}
