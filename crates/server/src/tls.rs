//! TLS for `serve`: a certificate chain and key from PEM files, reloaded on request, and the
//! self-signed certificate `serve --tls-self-signed` keeps in the data directory.
//!
//! [`ServerTls`] is what [`ServerConfig::tls`](crate::ServerConfig::tls) holds: one rustls
//! config for the whole run, whose certificate resolver hands out the key loaded last, so
//! [`ServerTls::reload`] changes the certificate of every new connection while connections
//! already open keep theirs. A reload that fails leaves the loaded one in place.
//!
//! rustls runs on `ring`, the provider reqwest already brings in; nothing here links aws-lc.

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use syncstore_proto::CertFingerprint;

/// The certificate file in a directory of [`ensure_self_signed`].
pub const CERT_FILE: &str = "cert.pem";
/// The private key file in a directory of [`ensure_self_signed`] (mode 0600).
pub const KEY_FILE: &str = "key.pem";

/// Where `serve --tls-self-signed` keeps its certificate and key: `DATA/tls`.
pub fn self_signed_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tls")
}

/// The server's TLS: the files it loads and the rustls config that serves the key loaded last.
/// Cheap to clone (every clone reloads the same state).
#[derive(Clone)]
pub struct ServerTls {
    cert_file: PathBuf,
    key_file: PathBuf,
    resolver: Arc<ReloadingCert>,
    config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for ServerTls {
    // Paths and the fingerprint only: never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

impl ServerTls {
    /// Loads the PEM certificate chain (end-entity certificate first) in `cert_file` and the
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) in `key_file`.
    ///
    /// # Errors
    /// When a file cannot be read, holds no certificate or key, or the key is not the
    /// certificate's.
    pub fn load(cert_file: &Path, key_file: &Path) -> anyhow::Result<ServerTls> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let loaded = load_certified_key(cert_file, key_file, &provider)?;
        let resolver = Arc::new(ReloadingCert {
            current: RwLock::new(loaded),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("could not set up TLS")?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        // The server speaks HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            resolver,
            config: Arc::new(config),
        })
    }

    /// Reads both files again; from now on new connections get the new certificate. Returns
    /// its fingerprint.
    ///
    /// # Errors
    /// As [`ServerTls::load`]; the certificate loaded before stays in use.
    pub fn reload(&self) -> anyhow::Result<CertFingerprint> {
        let loaded = load_certified_key(
            &self.cert_file,
            &self.key_file,
            self.config.crypto_provider(),
        )?;
        let fingerprint = loaded.fingerprint;
        *self
            .resolver
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = loaded;
        Ok(fingerprint)
    }

    /// The fingerprint of the end-entity certificate in use.
    pub fn fingerprint(&self) -> CertFingerprint {
        self.resolver.loaded().fingerprint
    }

    /// The certificate file (reread by [`ServerTls::reload`]).
    pub fn cert_file(&self) -> &Path {
        &self.cert_file
    }

    /// What the accept loop runs each handshake with.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config))
    }
}

/// The certificate and key loaded last, handed to every new handshake.
#[derive(Debug)]
struct ReloadingCert {
    current: RwLock<Loaded>,
}

#[derive(Clone, Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    fingerprint: CertFingerprint,
}

impl ReloadingCert {
    fn loaded(&self) -> Loaded {
        // A writer only swaps the value, so a poisoned lock still holds a whole one.
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.loaded().key)
    }
}

fn load_certified_key(
    cert_file: &Path,
    key_file: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> anyhow::Result<Loaded> {
    let certs = read_certs(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).with_context(|| {
        format!(
            "could not read a PEM private key from {}",
            key_file.display()
        )
    })?;
    let fingerprint = CertFingerprint::of_der(certs[0].as_ref());
    let key = CertifiedKey::from_der(certs, key, provider).with_context(|| {
        format!(
            "the key in {} is not usable with the certificate in {}",
            key_file.display(),
            cert_file.display()
        )
    })?;
    Ok(Loaded {
        key: Arc::new(key),
        fingerprint,
    })
}

/// The certificates of a PEM file, at least one.
fn read_certs(cert_file: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!(
                "could not read PEM certificates from {}",
                cert_file.display()
            )
        })?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{} holds no certificate (expected PEM, \"-----BEGIN CERTIFICATE-----\")",
        cert_file.display()
    );
    Ok(certs)
}

/// The fingerprint of the first certificate in a PEM file (the end-entity certificate of a
/// chain): what clients pin.
///
/// # Errors
/// When the file cannot be read or holds no certificate.
pub fn fingerprint_of_file(cert_file: &Path) -> anyhow::Result<CertFingerprint> {
    let certs = read_certs(cert_file)?;
    Ok(CertFingerprint::of_der(certs[0].as_ref()))
}

/// The files of [`ensure_self_signed`].
#[derive(Clone, Debug)]
pub struct SelfSigned {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Whether they were made just now.
    pub created: bool,
}

/// Makes a self-signed certificate for `names` (DNS names or IP addresses) and its key in
/// `dir` (created mode 0700), unless it holds them already: a certificate is kept for good, so
/// the fingerprint clients pinned stays valid. Both files are written atomically, the key
/// with mode 0600; the certificate is renamed into place last, so a crash in between leaves no
/// certificate, and the next start makes both again.
///
/// # Errors
/// When `dir` holds a certificate without its key, or a file cannot be written.
pub fn ensure_self_signed(dir: &Path, names: &[String]) -> anyhow::Result<SelfSigned> {
    let cert_file = dir.join(CERT_FILE);
    let key_file = dir.join(KEY_FILE);
    if cert_file.exists() {
        anyhow::ensure!(
            key_file.exists(),
            "{} has no key beside it ({}): restore the key, or move the certificate aside to \
             make a new one (clients then need the new fingerprint: --pin)",
            cert_file.display(),
            key_file.display()
        );
        return Ok(SelfSigned {
            cert_file,
            key_file,
            created: false,
        });
    }
    create_private_dir(dir)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .context("could not make a self-signed certificate")?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "syncstore server");
    let key_pair = rcgen::KeyPair::generate().context("could not make a private key")?;
    let cert = params
        .self_signed(&key_pair)
        .context("could not make a self-signed certificate")?;
    write_atomic(&key_file, key_pair.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&cert_file, cert.pem().as_bytes(), 0o644)?;
    Ok(SelfSigned {
        cert_file,
        key_file,
        created: true,
    })
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("could not create {}", dir.display()))
}

/// Temp file in the same directory, written, fsynced, renamed over `path`, directory fsynced.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let written = (|| {
        // Created with mode 0600, so a key is never readable by others, not even briefly.
        let mut temp = tempfile::NamedTempFile::new_in(dir)?;
        temp.write_all(bytes)?;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
        temp.as_file().sync_all()?;
        temp.persist(path).map_err(|err| err.error)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    written.with_context(|| format!("could not write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_is_made_once_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let tls_dir = self_signed_dir(dir.path());
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let made = ensure_self_signed(&tls_dir, &names).unwrap();
        assert!(made.created);
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&made.key_file), 0o600);
        assert_eq!(mode(&tls_dir), 0o700);
        let tls = ServerTls::load(&made.cert_file, &made.key_file).unwrap();
        let fingerprint = tls.fingerprint();
        assert_eq!(fingerprint_of_file(&made.cert_file).unwrap(), fingerprint);
        // Kept: the second start finds the same certificate.
        let again = ensure_self_signed(&tls_dir, &names).unwrap();
        assert!(!again.created);
        assert_eq!(fingerprint_of_file(&again.cert_file).unwrap(), fingerprint);
        // A reload of a broken file keeps the loaded certificate.
        let cert_pem = std::fs::read(&made.cert_file).unwrap();
        std::fs::write(&made.cert_file, "not a certificate").unwrap();
        let err = tls.reload().unwrap_err();
        assert!(
            format!("{err:#}").contains("holds no certificate"),
            "{err:#}"
        );
        assert_eq!(tls.fingerprint(), fingerprint);
        // A new pair is picked up.
        std::fs::remove_file(&made.cert_file).unwrap();
        let other = ensure_self_signed(&tls_dir, &names).unwrap();
        assert!(other.created);
        let new_fingerprint = tls.reload().unwrap();
        assert_ne!(new_fingerprint, fingerprint);
        assert_eq!(tls.fingerprint(), new_fingerprint);
        // A key that is not the certificate's is refused with both paths named.
        std::fs::write(&made.cert_file, cert_pem).unwrap();
        let err = tls.reload().unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("is not usable with the certificate"),
            "{text}"
        );
        assert_eq!(tls.fingerprint(), new_fingerprint);
    }

    #[test]
    fn a_certificate_without_its_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let made = ensure_self_signed(dir.path(), &["localhost".to_owned()]).unwrap();
        std::fs::remove_file(&made.key_file).unwrap();
        let err = ensure_self_signed(dir.path(), &["localhost".to_owned()]).unwrap_err();
        assert!(
            format!("{err:#}").contains("has no key beside it"),
            "{err:#}"
        );
        let err = ServerTls::load(&made.cert_file, &made.key_file).unwrap_err();
        assert!(
            format!("{err:#}").contains("could not read a PEM private key"),
            "{err:#}"
        );
    }
}
