//! Whom the client trusts for `https://` servers, and how a refusal is told apart.
//!
//! By default a server's certificate must chain to the system's roots (or the webpki roots)
//! and name the host. [`Trust::ca`] adds a private CA to those. [`Trust::pin`] accepts exactly
//! one certificate instead, by the SHA-256 fingerprint of its DER bytes (a self-signed server:
//! `serve --tls-self-signed` prints it): the host name is not checked, but the handshake's
//! signatures still are, with the provider's algorithms, so only the holder of that
//! certificate's key gets through.
//!
//! A certificate the client does not trust is not a network failure: [`untrusted`] finds it in
//! reqwest's error chain, and the client reports it as
//! [`ApiError::Untrusted`](crate::ApiError::Untrusted), which no retry hides.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::path::PathBuf;
use std::sync::Arc;
use syncstore_proto::CertFingerprint;

/// Which server certificates the client accepts besides those of the system's CAs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trust {
    /// A PEM file of CA certificates trusted in addition to the system's.
    pub ca: Option<PathBuf>,
    /// Accept exactly the certificate with this fingerprint (and no other, whoever signed
    /// it); overrides `ca`.
    pub pin: Option<CertFingerprint>,
}

/// The server presented another certificate than the pinned one.
#[derive(Debug, thiserror::Error)]
#[error("the server presented the certificate {seen}, not the pinned {expected}")]
pub struct PinMismatch {
    pub expected: CertFingerprint,
    pub seen: CertFingerprint,
}

/// Why the client refused a server's certificate, found in a failed request's error chain.
#[derive(Debug)]
pub enum Untrusted {
    /// Not the pinned certificate.
    Pin(PinMismatch),
    /// The certificate did not verify against the trusted roots (unknown issuer, expired,
    /// another host's name, ...); rustls's words.
    Certificate(String),
}

/// The rustls client config of a pinned certificate, for
/// `reqwest::ClientBuilder::use_preconfigured_tls`.
///
/// # Errors
/// When the provider offers no safe protocol version (never for `ring`'s defaults).
pub(crate) fn pinned_config(pin: CertFingerprint) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = PinnedVerifier {
        pin,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts the one certificate whose fingerprint is `pin`.
#[derive(Debug)]
struct PinnedVerifier {
    pin: CertFingerprint,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        // Not checked: the pin names the certificate itself.
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = CertFingerprint::of_der(end_entity.as_ref());
        if seen == self.pin {
            return Ok(ServerCertVerified::assertion());
        }
        let mismatch = PinMismatch {
            expected: self.pin,
            seen,
        };
        Err(rustls::Error::Other(rustls::OtherError(Arc::new(mismatch))))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The certificate refusal somewhere in `err`'s chain, if that is why it failed.
///
/// The chain hides the rustls error inside an `io::Error` (whose `source` skips it), so each
/// `io::Error` is looked into as well.
pub fn untrusted(err: &(dyn std::error::Error + 'static)) -> Option<Untrusted> {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(found) = untrusted_here(err) {
            return Some(found);
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            if let Some(found) = untrusted(inner) {
                return Some(found);
            }
        }
        next = err.source();
    }
    None
}

fn untrusted_here(err: &(dyn std::error::Error + 'static)) -> Option<Untrusted> {
    if let Some(mismatch) = err.downcast_ref::<PinMismatch>() {
        return Some(Untrusted::Pin(PinMismatch {
            expected: mismatch.expected,
            seen: mismatch.seen,
        }));
    }
    match err.downcast_ref::<rustls::Error>()? {
        rustls::Error::Other(other) => untrusted(&*other.0),
        err @ (rustls::Error::InvalidCertificate(_)
        | rustls::Error::NoCertificatesPresented
        | rustls::Error::UnsupportedNameType) => Some(Untrusted::Certificate(err.to_string())),
        _ => None,
    }
}

/// Whether `url` is plain `http://` to a host other than this machine, so the token and the
/// files would cross a network unencrypted (`localhost`, `127.0.0.0/8` and `::1` are this
/// machine).
pub fn is_plaintext_remote(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    if url.scheme() != "http" {
        return false;
    }
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => !ip.is_loopback(),
        Err(_) => {
            let name = host.trim_end_matches('.').to_ascii_lowercase();
            name != "localhost" && !name.ends_with(".localhost")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_warns_only_off_this_machine() {
        let cases = [
            ("http://127.0.0.1:7070", false),
            ("http://127.1.2.3:7070/", false),
            ("http://localhost:7070", false),
            ("http://LOCALHOST.:7070", false),
            ("http://[::1]:7070", false),
            ("https://example.org", false),
            ("https://192.168.1.5:7070", false),
            ("http://192.168.1.5:7070", true),
            ("http://[fe80::1]:7070", true),
            ("http://nas.home.arpa:7070", true),
            ("http://0.0.0.0:7070", true),
            ("not a url", false),
        ];
        for (url, warns) in cases {
            assert_eq!(is_plaintext_remote(url), warns, "{url}");
        }
    }

    #[test]
    fn a_pin_mismatch_is_found_through_io_errors() {
        let mismatch = PinMismatch {
            expected: CertFingerprint([1; 32]),
            seen: CertFingerprint([2; 32]),
        };
        let rustls_err = rustls::Error::Other(rustls::OtherError(Arc::new(mismatch)));
        let io_err = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls_err);
        let wrapped = std::io::Error::other(io_err);
        match untrusted(&wrapped) {
            Some(Untrusted::Pin(found)) => {
                assert_eq!(found.expected, CertFingerprint([1; 32]));
                assert_eq!(found.seen, CertFingerprint([2; 32]));
            }
            other => panic!("{other:?}"),
        }
        let unknown = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io_err = std::io::Error::new(std::io::ErrorKind::InvalidData, unknown);
        assert!(matches!(
            untrusted(&io_err),
            Some(Untrusted::Certificate(_))
        ));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(untrusted(&refused).is_none());
    }
}
