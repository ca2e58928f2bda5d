//! Web passwords: argon2id hashes in PHC strings (the salt and parameters inside), checked in
//! constant time by the `argon2` crate. Hashing is deliberately slow (tens of milliseconds):
//! callers run it on a blocking thread.

use anyhow::{bail, Context};
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use std::sync::OnceLock;

/// The shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// The longest, in bytes (argon2 takes any length; a bound keeps a request's work bounded).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Checks a new password's length.
///
/// # Errors
/// A message saying what is wrong with it.
pub fn check_new_password(password: &str) -> anyhow::Result<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        bail!("the password is too short: use at least {MIN_PASSWORD_CHARS} characters");
    }
    if password.len() > MAX_PASSWORD_BYTES {
        bail!("the password is too long: at most {MAX_PASSWORD_BYTES} bytes");
    }
    Ok(())
}

/// An argon2id PHC string of `password` with a fresh random salt.
///
/// # Errors
/// A password that [`check_new_password`] refuses, or the hasher's failure.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    check_new_password(password)?;
    let salt = SaltString::generate(&mut OsRng);
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|err| anyhow::anyhow!("{err}"))
        .context("could not hash the password")?;
    Ok(hash.to_string())
}

/// Whether `password` is the one `phc` was made from; `false` for a malformed `phc` too.
pub fn verify_password(phc: &str, password: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    match PasswordHash::new(phc) {
        Ok(hash) => Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash of a random password nobody knows: a sign-in for a user that does not exist (or has
/// no password) is checked against it, so it takes as long as one with a wrong password.
pub(crate) fn unknown_user_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let random = hex::encode(rand::random::<[u8; 16]>());
        hash_password(&random).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(verify_password(&phc, "correct horse"));
        assert!(!verify_password(&phc, "correct horsE"));
        assert!(!verify_password("not a hash", "correct horse"));
        // A fresh salt each time.
        assert_ne!(phc, hash_password("correct horse").unwrap());
    }

    #[test]
    fn lengths_are_checked() {
        assert!(hash_password("short").is_err());
        assert!(hash_password(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
        assert!(check_new_password("eightchr").is_ok());
    }
}
