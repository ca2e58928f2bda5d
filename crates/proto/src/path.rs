//! [`RelPath`]: a path inside a user's namespace, valid by construction.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a path was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("path {0:?} is absolute; paths are relative to the synced folder")]
    Absolute(String),
    #[error("path {0:?} has an empty component, a trailing slash or '//'")]
    EmptyComponent(String),
    #[error("path {0:?} has a '.' or '..' component")]
    DotComponent(String),
    #[error("path contains a NUL or control character")]
    ControlCharacter,
    #[error("path {0:?} contains a backslash")]
    Backslash(String),
    #[error("path is longer than {max} bytes", max = RelPath::MAX_LEN)]
    TooLong,
    #[error("a component of path {0:?} is longer than {max} bytes", max = RelPath::MAX_COMPONENT_LEN)]
    ComponentTooLong(String),
    #[error("path {0:?} has more than {max} components", max = RelPath::MAX_DEPTH)]
    TooDeep(String),
    #[error("path {0:?} is inside the reserved directory .syncstore")]
    Reserved(String),
}

/// A relative, '/'-separated path inside a synced namespace.
///
/// Invariants, checked once in [`RelPath::new`]: not empty, not absolute, no empty, `.` or `..`
/// component, no NUL or other control character, no backslash, at most [`RelPath::MAX_LEN`] bytes
/// with components of at most [`RelPath::MAX_COMPONENT_LEN`] bytes, at most [`RelPath::MAX_DEPTH`]
/// components, and not inside [`crate::META_DIR`].
/// So a `RelPath` joined to a folder never escapes it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelPath(String);

impl RelPath {
    /// Longest path accepted, in bytes (Linux PATH_MAX).
    pub const MAX_LEN: usize = 4096;
    /// Longest component accepted, in bytes (Linux NAME_MAX).
    pub const MAX_COMPONENT_LEN: usize = 255;
    /// Most components accepted: `a/b` has 2.
    ///
    /// Every op creates the missing parents of its path and lists them in its result, so the
    /// depth bounds the work and the answer of one op. Real trees stay far below it (deeply
    /// nested `node_modules` reach a few dozen levels); [`RelPath::MAX_LEN`] alone would allow
    /// 2,048 one-byte components.
    pub const MAX_DEPTH: usize = 128;

    /// Validates `text` as a path.
    ///
    /// # Errors
    /// [`PathError`] naming the first rule the text breaks.
    pub fn new(text: &str) -> Result<RelPath, PathError> {
        if text.is_empty() {
            return Err(PathError::Empty);
        }
        if text.len() > Self::MAX_LEN {
            return Err(PathError::TooLong);
        }
        if text.chars().any(|c| c.is_control()) {
            return Err(PathError::ControlCharacter);
        }
        if text.starts_with('/') {
            return Err(PathError::Absolute(text.to_owned()));
        }
        if text.contains('\\') {
            return Err(PathError::Backslash(text.to_owned()));
        }
        for (idx, component) in text.split('/').enumerate() {
            if idx == Self::MAX_DEPTH {
                return Err(PathError::TooDeep(text.to_owned()));
            }
            if component.is_empty() {
                return Err(PathError::EmptyComponent(text.to_owned()));
            }
            if component == "." || component == ".." {
                return Err(PathError::DotComponent(text.to_owned()));
            }
            if component.len() > Self::MAX_COMPONENT_LEN {
                return Err(PathError::ComponentTooLong(text.to_owned()));
            }
        }
        if text.split('/').next() == Some(crate::META_DIR) {
            return Err(PathError::Reserved(text.to_owned()));
        }
        Ok(RelPath(text.to_owned()))
    }

    /// The path as text, '/'-separated.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The components, first to last.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// Number of components: `a` is 1, `a/b` is 2.
    pub fn depth(&self) -> usize {
        self.0.split('/').count()
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        match self.0.rfind('/') {
            Some(idx) => &self.0[idx + 1..],
            None => &self.0,
        }
    }

    /// The parent directory, or `None` for a top-level path.
    pub fn parent(&self) -> Option<RelPath> {
        self.0
            .rfind('/')
            .map(|idx| RelPath(self.0[..idx].to_owned()))
    }

    /// Every ancestor, outermost first: `a/b/c` gives `a`, `a/b`.
    pub fn ancestors(&self) -> Vec<RelPath> {
        let mut out = Vec::new();
        for (idx, ch) in self.0.char_indices() {
            if ch == '/' {
                out.push(RelPath(self.0[..idx].to_owned()));
            }
        }
        out
    }

    /// `self/name`.
    ///
    /// # Errors
    /// [`PathError`] when `name` is not a single valid component or the result is too long.
    pub fn join(&self, name: &str) -> Result<RelPath, PathError> {
        if name.contains('/') {
            return Err(PathError::EmptyComponent(name.to_owned()));
        }
        RelPath::new(&format!("{}/{}", self.0, name))
    }

    /// Whether `self` lies strictly below `dir`.
    pub fn is_inside(&self, dir: &RelPath) -> bool {
        self.0.len() > dir.0.len()
            && self.0.starts_with(&dir.0)
            && self.0.as_bytes()[dir.0.len()] == b'/'
    }

    /// For `self` inside `from`, the same path inside `to` (used when a directory moves).
    /// Returns `None` when `self` is not `from` and not inside it.
    pub fn rebase(&self, from: &RelPath, to: &RelPath) -> Option<RelPath> {
        if self == from {
            return Some(to.clone());
        }
        if !self.is_inside(from) {
            return None;
        }
        RelPath::new(&format!("{}{}", to.0, &self.0[from.0.len()..])).ok()
    }
}

/// The bounds of the texts of exactly the paths strictly beneath `dir`: from `"dir/"` up to
/// `"dir0"` (`'0'` is the character after `'/'`).
fn beneath_bounds(dir: &RelPath) -> (String, String) {
    (format!("{}/", dir.0), format!("{}0", dir.0))
}

/// The entries of `map` strictly beneath `dir`, in order, found by one range search.
pub fn map_beneath<'m, V>(
    map: &'m std::collections::BTreeMap<RelPath, V>,
    dir: &RelPath,
) -> impl Iterator<Item = (&'m RelPath, &'m V)> {
    use std::ops::Bound;
    let (low, high) = beneath_bounds(dir);
    map.range::<str, _>((
        Bound::Included(low.as_str()),
        Bound::Excluded(high.as_str()),
    ))
}

/// The paths of `set` strictly beneath `dir`, in order, found by one range search.
pub fn set_beneath<'s>(
    set: &'s std::collections::BTreeSet<RelPath>,
    dir: &RelPath,
) -> impl Iterator<Item = &'s RelPath> {
    use std::ops::Bound;
    let (low, high) = beneath_bounds(dir);
    set.range::<str, _>((
        Bound::Included(low.as_str()),
        Bound::Excluded(high.as_str()),
    ))
}

impl TryFrom<String> for RelPath {
    type Error = PathError;
    fn try_from(text: String) -> Result<Self, PathError> {
        RelPath::new(&text)
    }
}

impl From<RelPath> for String {
    fn from(path: RelPath) -> String {
        path.0
    }
}

/// Ordered and hashed as its text, so maps keyed by paths can be searched by text ranges
/// ([`map_beneath`], [`set_beneath`]).
impl std::borrow::Borrow<str> for RelPath {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beneath_finds_exactly_the_entries_below_a_directory() {
        let paths = ["a", "a b", "a-1", "a.x", "a/b", "a/b/c", "a/z", "a0", "b"];
        let map: std::collections::BTreeMap<RelPath, ()> = paths
            .iter()
            .map(|p| (RelPath::new(p).unwrap(), ()))
            .collect();
        let set: std::collections::BTreeSet<RelPath> = map.keys().cloned().collect();
        let dir = RelPath::new("a").unwrap();
        let below: Vec<&str> = map_beneath(&map, &dir).map(|(p, ())| p.as_str()).collect();
        assert_eq!(below, ["a/b", "a/b/c", "a/z"]);
        let below: Vec<&str> = set_beneath(&set, &dir).map(RelPath::as_str).collect();
        assert_eq!(below, ["a/b", "a/b/c", "a/z"]);
        assert_eq!(map_beneath(&map, &RelPath::new("b").unwrap()).count(), 0);
    }

    fn check(text: &str, ok: bool) {
        assert_eq!(RelPath::new(text).is_ok(), ok, "{text:?}");
    }

    #[test]
    fn validation() {
        check("a", true);
        check("a/b/c.txt", true);
        check("dir with space/ü.txt", true);
        check(".hidden", true);
        check("..a", true);
        check("", false);
        check("/etc/passwd", false);
        check("../x", false);
        check("a/../../x", false);
        check("a/./b", false);
        check("a//b", false);
        check("a/", false);
        check("a\0b", false);
        check("a\nb", false);
        check("a\\b", false);
        check(".syncstore", false);
        check(".syncstore/state", false);
        check("x/.syncstore", true);
        check(&"a".repeat(256), false);
        check(&"a".repeat(255), true);
        let at_max = vec!["d"; RelPath::MAX_DEPTH].join("/");
        check(&at_max, true);
        check(&format!("{at_max}/d"), false);
    }

    #[test]
    fn relations() {
        let p = RelPath::new("a/b/c").unwrap();
        assert_eq!(p.file_name(), "c");
        assert_eq!(p.parent().unwrap().as_str(), "a/b");
        assert_eq!(
            p.ancestors().iter().map(|a| a.as_str()).collect::<Vec<_>>(),
            ["a", "a/b"]
        );
        let a = RelPath::new("a").unwrap();
        let ab = RelPath::new("ab").unwrap();
        assert!(p.is_inside(&a));
        assert!(!ab.is_inside(&a));
        assert!(!a.is_inside(&a));
        let z = RelPath::new("z").unwrap();
        assert_eq!(p.rebase(&a, &z).unwrap().as_str(), "z/b/c");
        assert_eq!(ab.rebase(&a, &z), None);
    }

    #[test]
    fn serde_rejects_bad_paths() {
        assert!(serde_json::from_str::<RelPath>("\"../etc\"").is_err());
        assert_eq!(
            serde_json::from_str::<RelPath>("\"a/b\"").unwrap().as_str(),
            "a/b"
        );
    }
}
