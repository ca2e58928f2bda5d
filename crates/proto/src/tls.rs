//! [`CertFingerprint`]: the SHA-256 fingerprint of a TLS certificate, as the server prints it
//! and a client pins it.
//!
//! One written form, `sha256:` and 32 colon-separated pairs of uppercase hex digits (the form
//! `openssl x509 -noout -fingerprint -sha256` prints after its `=`), and a liberal reading:
//! case, colons, spaces and the `sha256:` prefix (or OpenSSL's `SHA256 Fingerprint=`) do not
//! matter, so a fingerprint copied from either place is accepted.

use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::fmt;

/// The SHA-256 digest of a certificate's DER bytes (the end-entity certificate a server
/// presents).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CertFingerprint(pub [u8; 32]);

/// Why a fingerprint was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid certificate fingerprint {0:?}: expected a SHA-256 fingerprint, 64 hex digits \
     (colons and a sha256: prefix are allowed), as `syncstore tls fingerprint` prints it"
)]
pub struct FingerprintError(pub String);

impl CertFingerprint {
    /// The fingerprint of a certificate given as DER bytes.
    pub fn of_der(der: &[u8]) -> CertFingerprint {
        CertFingerprint(sha2::Sha256::digest(der).into())
    }

    /// Reads a fingerprint liberally (see the module docs).
    ///
    /// # Errors
    /// [`FingerprintError`] unless 64 hex digits remain once the prefix, colons and spaces
    /// are taken away.
    pub fn parse(text: &str) -> Result<CertFingerprint, FingerprintError> {
        let refused = || FingerprintError(text.chars().take(120).collect());
        let compact: String = text
            .chars()
            .filter(|c| !c.is_whitespace() && *c != ':')
            .collect::<String>()
            .to_ascii_lowercase();
        let digits = ["sha256fingerprint=", "sha256=", "sha256"]
            .iter()
            .find_map(|prefix| compact.strip_prefix(prefix))
            .unwrap_or(&compact);
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(digits, &mut bytes).map_err(|_| refused())?;
        Ok(CertFingerprint(bytes))
    }
}

impl fmt::Display for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for (idx, byte) in self.0.iter().enumerate() {
            if idx > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for CertFingerprint {
    type Err = FingerprintError;
    fn from_str(text: &str) -> Result<CertFingerprint, FingerprintError> {
        CertFingerprint::parse(text)
    }
}

impl TryFrom<String> for CertFingerprint {
    type Error = FingerprintError;
    fn try_from(text: String) -> Result<CertFingerprint, FingerprintError> {
        CertFingerprint::parse(&text)
    }
}

impl From<CertFingerprint> for String {
    fn from(fingerprint: CertFingerprint) -> String {
        fingerprint.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_once_read_liberally() {
        let fingerprint = CertFingerprint::of_der(b"not really a certificate");
        let written = fingerprint.to_string();
        assert!(written.starts_with("sha256:"), "{written}");
        assert_eq!(written.len(), "sha256:".len() + 32 * 3 - 1);
        let plain = hex::encode(fingerprint.0);
        let openssl = format!("SHA256 Fingerprint={}", &written["sha256:".len()..]);
        for form in [
            written.clone(),
            written.to_ascii_lowercase(),
            plain.clone(),
            plain.to_ascii_uppercase(),
            format!("sha256:{plain}"),
            format!("  {written}\n"),
            openssl,
        ] {
            assert_eq!(CertFingerprint::parse(&form), Ok(fingerprint), "{form:?}");
        }
        for bad in ["", "sha256:", &plain[2..], &format!("{plain}00"), "sha1:AB"] {
            assert!(CertFingerprint::parse(bad).is_err(), "{bad:?}");
        }
        let json = serde_json::to_string(&fingerprint).unwrap();
        assert_eq!(json, format!("\"{written}\""));
        assert_eq!(
            serde_json::from_str::<CertFingerprint>(&json).unwrap(),
            fingerprint
        );
    }
}
