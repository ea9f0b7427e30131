//! Groups in host certificates: the names a firewall matches peers by.
//!
//! # Encoding
//!
//! Each group is one subjectAltName URI `wow:group:NAME` (RFC 5280
//! §4.2.1.6), next to the node's `brunet:node:` overlay URI. Chosen over
//! the alternatives because:
//! - every tool reads it without help: rcgen writes it, x509-parser reads it
//!   as a [`GeneralName::URI`], and `openssl x509 -text` prints
//!   `URI:wow:group:admin` in the SAN list;
//! - a private extension would need an OID of our own (rcgen takes `u64`
//!   arcs, so a registration-free `2.25.<uuid>` OID cannot be encoded) and
//!   `openssl` shows its contents as a hex dump;
//! - subject OU attributes would do, but rcgen holds one value per
//!   attribute type, so a second group would replace the first.
//!
//! A group name is 1 to [`MAX_GROUP_LEN`] characters of lowercase ASCII
//! letters, digits, `-` and `_`, starting with a letter or digit; a
//! certificate carries at most [`MAX_GROUPS`]. A verifier refuses a
//! certificate with a malformed group or more than that.
//!
//! # Who decides
//!
//! A requester's CSR may ask for groups (the same URIs in its
//! extensionRequest), but only the CA's policy grants them: see
//! [`crate::Policy::groups`] and [`crate::Ca::sign_in_groups`].
//!
//! [`GeneralName::URI`]: x509_parser::extensions::GeneralName::URI

use std::collections::BTreeSet;
use std::fmt;

/// The URI prefix of a group SAN.
pub const GROUP_URI_PREFIX: &str = "wow:group:";

/// Longest group name, in bytes.
pub const MAX_GROUP_LEN: usize = 32;

/// Most groups one certificate carries.
pub const MAX_GROUPS: usize = 16;

/// Why a group name or set is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// The empty string.
    #[error("empty group name")]
    Empty,
    /// Longer than [`MAX_GROUP_LEN`].
    #[error("group name {0:?} is longer than {MAX_GROUP_LEN} characters")]
    TooLong(String),
    /// A character outside `[a-z0-9_-]`, or a leading `-`/`_`.
    #[error(
        "group name {0:?} must be lowercase letters, digits, '-' and '_', starting with a letter or digit"
    )]
    BadCharacter(String),
    /// More than [`MAX_GROUPS`] distinct groups.
    #[error("more than {MAX_GROUPS} groups")]
    TooMany,
}

/// Checks one group name (see the [module docs](self)).
pub fn check_group(name: &str) -> Result<(), GroupError> {
    let bytes = name.as_bytes();
    let Some(&first) = bytes.first() else {
        return Err(GroupError::Empty);
    };
    if bytes.len() > MAX_GROUP_LEN {
        return Err(GroupError::TooLong(name.to_owned()));
    }
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_';
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) || !bytes.iter().all(|&b| allowed(b))
    {
        return Err(GroupError::BadCharacter(name.to_owned()));
    }
    Ok(())
}

/// A valid, bounded, sorted set of group names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Groups(BTreeSet<String>);

impl Groups {
    /// No groups.
    pub fn empty() -> Self {
        Groups::default()
    }

    /// The groups `names` (duplicates collapse), each checked.
    pub fn new<I, S>(names: I) -> Result<Self, GroupError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = BTreeSet::new();
        for name in names {
            let name = name.as_ref();
            check_group(name)?;
            set.insert(name.to_owned());
            if set.len() > MAX_GROUPS {
                return Err(GroupError::TooMany);
            }
        }
        Ok(Groups(set))
    }

    /// Parses a comma-separated list (`admin,web`; spaces around names
    /// are ignored; the empty string is no groups).
    pub fn parse_list(text: &str) -> Result<Self, GroupError> {
        if text.trim().is_empty() {
            return Ok(Groups::empty());
        }
        Groups::new(text.split(',').map(str::trim))
    }

    /// Whether `name` is one of the groups.
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The names, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// The groups in both `self` and `other`.
    pub fn intersection(&self, other: &Groups) -> Groups {
        Groups(self.0.intersection(&other.0).cloned().collect())
    }

    /// The SAN URIs encoding these groups (`wow:group:NAME`, sorted).
    pub fn to_uris(&self) -> Vec<String> {
        self.iter()
            .map(|name| format!("{GROUP_URI_PREFIX}{name}"))
            .collect()
    }

    /// The groups among SAN URIs: each URI with [`GROUP_URI_PREFIX`] must
    /// carry a valid name; other URIs are ignored.
    pub fn from_uris<'a>(uris: impl IntoIterator<Item = &'a str>) -> Result<Self, GroupError> {
        Groups::new(
            uris.into_iter()
                .filter_map(|uri| uri.strip_prefix(GROUP_URI_PREFIX)),
        )
    }
}

impl fmt::Display for Groups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod test {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_are_checked() {
        assert_eq!(check_group(""), Err(GroupError::Empty));
        assert!(check_group("admin").is_ok());
        assert!(check_group("web-1_a").is_ok());
        assert!(matches!(
            check_group("Admin"),
            Err(GroupError::BadCharacter(_))
        ));
        assert!(matches!(
            check_group("-x"),
            Err(GroupError::BadCharacter(_))
        ));
        assert!(matches!(
            check_group("a b"),
            Err(GroupError::BadCharacter(_))
        ));
        assert!(matches!(
            check_group("a,b"),
            Err(GroupError::BadCharacter(_))
        ));
        assert!(check_group(&"a".repeat(MAX_GROUP_LEN)).is_ok());
        assert!(matches!(
            check_group(&"a".repeat(MAX_GROUP_LEN + 1)),
            Err(GroupError::TooLong(_))
        ));
    }

    #[test]
    fn count_is_bounded() {
        let names: Vec<String> = (0..MAX_GROUPS).map(|i| format!("g{i}")).collect();
        assert_eq!(Groups::new(&names).unwrap().len(), MAX_GROUPS);
        let mut more = names.clone();
        more.push("one-more".into());
        assert_eq!(Groups::new(&more), Err(GroupError::TooMany));
        // Duplicates do not count twice.
        let mut dup = names;
        dup.push("g0".into());
        assert!(Groups::new(&dup).is_ok());
    }

    #[test]
    fn list_parses() {
        let g = Groups::parse_list(" web , admin,web").unwrap();
        assert_eq!(g.iter().collect::<Vec<_>>(), ["admin", "web"]);
        assert_eq!(g.to_string(), "admin,web");
        assert!(Groups::parse_list("").unwrap().is_empty());
        assert_eq!(Groups::parse_list("a,,b"), Err(GroupError::Empty));
    }

    #[test]
    fn bad_uri_is_refused_and_others_ignored() {
        let g = Groups::from_uris(["brunet:node:abc", "wow:group:ops", "https://x"]).unwrap();
        assert_eq!(g.iter().collect::<Vec<_>>(), ["ops"]);
        assert!(Groups::from_uris(["wow:group:OPS"]).is_err());
        assert!(Groups::from_uris(["wow:group:"]).is_err());
    }

    proptest! {
        #[test]
        fn uri_round_trip(names in proptest::collection::vec("[a-z0-9][a-z0-9_-]{0,31}", 0..=MAX_GROUPS)) {
            let groups = Groups::new(&names).unwrap();
            let uris = groups.to_uris();
            let back = Groups::from_uris(uris.iter().map(String::as_str)).unwrap();
            prop_assert_eq!(back, groups);
        }

        #[test]
        fn check_never_panics_and_accepts_only_the_charset(name in ".{0,40}") {
            if check_group(&name).is_ok() {
                prop_assert!(!name.is_empty() && name.len() <= MAX_GROUP_LEN);
                prop_assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'));
            }
        }
    }
}
