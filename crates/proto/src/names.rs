//! [`UserName`] and [`DeviceName`]: short identifiers safe in file names and log lines.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a user or device name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid name {0:?}: use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.' or '-'")]
pub struct NameError(pub String);

fn validate(text: &str) -> Result<(), NameError> {
    let ok = !text.is_empty()
        && text.len() <= 64
        && !text.starts_with('.')
        && !text.starts_with('-')
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(NameError(text.chars().take(80).collect()))
    }
}

macro_rules! name_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates a name.
            ///
            /// # Errors
            /// [`NameError`] when the text is empty, too long or has other characters.
            pub fn new(text: &str) -> Result<Self, NameError> {
                validate(text)?;
                Ok(Self(text.to_owned()))
            }
            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(text: String) -> Result<Self, NameError> {
                Self::new(&text)
            }
        }
        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }
        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(text: &str) -> Result<Self, NameError> {
                Self::new(text)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
    };
}

name_newtype!(
    /// The name of an account; each account has its own namespace.
    UserName
);
name_newtype!(
    /// The name of one device (one token) of a user; conflicted copies and locks are named after it.
    DeviceName
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(DeviceName::new("laptop-1.home_x").is_ok());
        for bad in ["", "-x", ".x", "a b", "a/b", "ä", &"a".repeat(65)] {
            assert!(DeviceName::new(bad).is_err(), "{bad:?}");
        }
    }
}
