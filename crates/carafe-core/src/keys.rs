//! API keys and scopes. A key is shown once at creation; stores keep only its SHA-256 hash, a
//! short display prefix, its name and its scopes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// What a caller may do. `admin` implies every other scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Admin,
    Files,
    Mail,
    Notify,
    Jobs,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::Admin,
        Scope::Files,
        Scope::Mail,
        Scope::Notify,
        Scope::Jobs,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Files => "files",
            Scope::Mail => "mail",
            Scope::Notify => "notify",
            Scope::Jobs => "jobs",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope `{0}` (known: admin, files, mail, notify, jobs)")]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| UnknownScope(s.chars().take(40).collect()))
    }
}

/// A set of scopes, stored as a small bit set and written as `"admin files"` (space separated,
/// as in OAuth's `scope` claim) wherever it is text.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scopes(u8);

impl Scopes {
    pub const fn empty() -> Self {
        Scopes(0)
    }

    pub fn with(mut self, scope: Scope) -> Self {
        self.0 |= scope.bit();
        self
    }

    pub fn contains_exactly(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Whether a caller holding these scopes may act in `scope` (`admin` grants everything).
    pub fn allows(self, scope: Scope) -> bool {
        self.contains_exactly(Scope::Admin) || self.contains_exactly(scope)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL
            .into_iter()
            .filter(move |s| self.contains_exactly(*s))
    }

    pub fn to_vec(self) -> Vec<Scope> {
        self.iter().collect()
    }

    /// Parses a list separated by commas and/or spaces; an empty item is ignored.
    pub fn parse_list(text: &str) -> Result<Self, UnknownScope> {
        text.split([',', ' '])
            .filter(|s| !s.is_empty())
            .try_fold(Scopes::empty(), |acc, s| Ok(acc.with(s.parse()?)))
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        iter.into_iter().fold(Scopes::empty(), Scopes::with)
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for s in self.iter() {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(s.as_str())?;
            first = false;
        }
        Ok(())
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scopes({self})")
    }
}

impl Serialize for Scopes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<Scope>::deserialize(d)?.into_iter().collect())
    }
}

/// A key's id: a UUIDv7, so ids sort by creation time and pagination can use them directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(pub Uuid);

impl KeyId {
    pub fn new() -> Self {
        KeyId(Uuid::now_v7())
    }
}

impl Default for KeyId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for KeyId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(KeyId)
    }
}

/// A human name for a key: 1–100 characters, no control characters, trimmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct KeyName(String);

impl KeyName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let name = raw.trim();
        if name.is_empty() {
            return Err("must not be empty");
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err("must be at most 100 characters");
        }
        if name.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        Ok(KeyName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// SHA-256 of the full key text. Keys carry 240 bits of randomness, so a fast hash is enough:
/// there is nothing to brute-force that a slow hash would protect.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHash(..)")
    }
}

/// A stored key as everyone but its holder sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: KeyId,
    pub name: KeyName,
    /// The first characters of the key (`ck_` + 8), enough to recognise it in a list.
    pub prefix: String,
    pub scopes: Scopes,
    pub created_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
}

impl ApiKey {
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }
}

/// What a store needs to insert a key.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: KeyId,
    pub name: KeyName,
    pub prefix: String,
    pub hash: KeyHash,
    pub scopes: Scopes,
    pub created_at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_print_and_admin_implies_all() {
        let s = Scopes::parse_list("files, jobs").unwrap();
        assert_eq!(s.to_string(), "files jobs");
        assert!(s.allows(Scope::Files) && !s.allows(Scope::Mail));
        let admin = Scopes::parse_list("admin").unwrap();
        assert!(Scope::ALL.iter().all(|x| admin.allows(*x)));
        assert_eq!(
            Scopes::parse_list("files,root"),
            Err(UnknownScope("root".into()))
        );
    }

    #[test]
    fn key_names_are_validated() {
        assert_eq!(
            KeyName::parse("  ci deploy ").unwrap().as_str(),
            "ci deploy"
        );
        assert!(KeyName::parse("   ").is_err());
        assert!(KeyName::parse("a\nb").is_err());
        assert!(KeyName::parse(&"x".repeat(101)).is_err());
        assert!(KeyName::parse("배포 키").is_ok());
    }
}
