//! `serve`'s TLS (the flags, the self-signed certificate's names, reloading on SIGHUP) and
//! `syncstore tls fingerprint`.

use crate::cli::{TlsArgs, TlsCommand};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use syncstore_server::tls::{self, ServerTls};

/// The TLS the flags ask for: `--tls-cert`/`--tls-key`, the self-signed certificate in
/// DATA/tls/ (made on the first start), or none (plain HTTP). Prints the self-signed
/// certificate's fingerprint.
///
/// # Errors
/// When a file cannot be read or written, or the key is not the certificate's.
pub fn server_tls(
    args: &TlsArgs,
    data: &Path,
    listen: SocketAddr,
) -> anyhow::Result<Option<ServerTls>> {
    if args.tls_self_signed {
        let names = self_signed_names(listen);
        let made = tls::ensure_self_signed(&tls::self_signed_dir(data), &names)
            .context("could not set up the self-signed TLS certificate (--tls-self-signed)")?;
        if made.created {
            tracing::info!(?names, cert = %made.cert_file.display(), "made a self-signed TLS certificate");
        }
        let server_tls = ServerTls::load(&made.cert_file, &made.key_file)
            .context("could not load the self-signed TLS certificate (--tls-self-signed)")?;
        println!(
            "TLS: self-signed certificate {}; clients pin it with --pin {}",
            made.cert_file.display(),
            server_tls.fingerprint()
        );
        tracing::info!(fingerprint = %server_tls.fingerprint(), "serving the self-signed TLS certificate");
        return Ok(Some(server_tls));
    }
    // clap asks for both or neither.
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let server_tls = ServerTls::load(cert, key)
        .context("could not load the TLS certificate (--tls-cert, --tls-key)")?;
    tracing::info!(
        cert = %cert.display(),
        fingerprint = %server_tls.fingerprint(),
        "serving the TLS certificate"
    );
    Ok(Some(server_tls))
}

/// The names a self-signed certificate is made for: this machine's loopback names, its host
/// name, and the listening address when it is a specific one. (Clients that pin it do not
/// check names; these serve tools that do.)
fn self_signed_names(listen: SocketAddr) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    names.extend(host_name());
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|name| seen.insert(name.clone()));
    names
}

/// The machine's host name, when it has a usable one.
fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let len = buf.iter().position(|&b| b == 0)?;
    let name = std::str::from_utf8(&buf[..len]).ok()?;
    let usable = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    usable.then(|| name.to_owned())
}

/// Reads the certificate files again on every SIGHUP; a reload that fails is logged and keeps
/// the certificate in use.
///
/// # Errors
/// When the signal handler cannot be installed.
pub fn reload_on_sighup(server_tls: ServerTls) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup()).context("could not listen for SIGHUP")?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let reloading = server_tls.clone();
            match tokio::task::spawn_blocking(move || reloading.reload()).await {
                Ok(Ok(fingerprint)) => tracing::info!(
                    cert = %server_tls.cert_file().display(),
                    %fingerprint,
                    "SIGHUP: reloaded the TLS certificate; new connections get it"
                ),
                Ok(Err(err)) => tracing::warn!(
                    cause = format!("{err:#}"),
                    fingerprint = %server_tls.fingerprint(),
                    "SIGHUP: could not reload the TLS certificate; keeping the one in use"
                ),
                // The panic hook has aborted the process already.
                Err(_) => return,
            }
        }
    });
    Ok(())
}

/// `syncstore tls …`.
///
/// # Errors
/// When the certificate cannot be read.
pub fn run(command: TlsCommand) -> anyhow::Result<ExitCode> {
    match command {
        TlsCommand::Fingerprint { data, cert } => {
            let cert = match cert {
                Some(cert) => cert,
                None => {
                    let cert = tls::self_signed_dir(&data.data).join(tls::CERT_FILE);
                    anyhow::ensure!(
                        cert.exists(),
                        "there is no self-signed certificate at {}: the first `syncstore serve \
                         --tls-self-signed --data {}` makes it; for another certificate give \
                         --cert FILE",
                        cert.display(),
                        data.data.display()
                    );
                    cert
                }
            };
            println!("{}", tls::fingerprint_of_file(&cert)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_names_cover_loopback_and_a_specific_address() {
        let any: SocketAddr = "0.0.0.0:7070".parse().unwrap();
        let names = self_signed_names(any);
        assert_eq!(names[..3], ["localhost", "127.0.0.1", "::1"]);
        assert!(!names.contains(&"0.0.0.0".to_owned()), "{names:?}");
        let specific: SocketAddr = "192.0.2.7:7070".parse().unwrap();
        assert!(self_signed_names(specific).contains(&"192.0.2.7".to_owned()));
        let loopback: SocketAddr = "127.0.0.1:7070".parse().unwrap();
        let names = self_signed_names(loopback);
        assert_eq!(names.iter().filter(|name| *name == "127.0.0.1").count(), 1);
    }
}
