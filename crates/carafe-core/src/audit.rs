//! The append-only audit log: who did what to which resource, when, and under which request.
//! Rows are written in the same transaction as the change they describe and never updated.

use serde::Serialize;
use time::OffsetDateTime;

#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEvent {
    pub at: OffsetDateTime,
    /// `key:<id>`, `user:<id>`, `cli` or `system`.
    pub actor: String,
    /// A dotted verb such as `key.create`.
    pub action: String,
    /// The resource acted on, such as `key:<id>`.
    pub target: Option<String>,
    pub request_id: Option<String>,
    /// Small structured facts; never secrets.
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub request_id: Option<String>,
    pub details: serde_json::Value,
}

/// Which events a listing returns: every field that is set must match (they combine with AND).
/// Listings stay newest first (by id) whatever the filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    /// The exact target, such as `file:<id>`.
    pub target: Option<String>,
    pub action: Option<ActionMatch>,
    /// The exact actor, such as `key:<id>`.
    pub actor: Option<String>,
    /// Events at or after this time (compared at the stored millisecond precision).
    pub since: Option<OffsetDateTime>,
    /// Events strictly before this time.
    pub until: Option<OffsetDateTime>,
}

/// An action filter: one action, or every action starting with a prefix (`file.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionMatch {
    Exact(String),
    Prefix(String),
}

/// Longest action (or action prefix) a filter accepts.
pub const MAX_ACTION_LEN: usize = 100;

impl ActionMatch {
    /// Parses `file.download` (exact) or `file.*` (every action starting with `file.`): letters,
    /// digits, `.`, `_` and `-`, with an optional final `*`.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let (name, prefix) = match text.strip_suffix('*') {
            Some(p) => (p, true),
            None => (text, false),
        };
        if name.is_empty() {
            return Err("give an action, or a prefix followed by `*` such as `file.*`");
        }
        if name.len() > MAX_ACTION_LEN {
            return Err("at most 100 characters");
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err("only letters, digits, `.`, `_`, `-` and a final `*`");
        }
        Ok(if prefix {
            ActionMatch::Prefix(name.to_owned())
        } else {
            ActionMatch::Exact(name.to_owned())
        })
    }

    /// For a prefix, the half-open range `[low, high)` of the strings that start with it, so
    /// stores can match with an index range scan instead of `LIKE` (whose index use and case
    /// rules differ between databases). Byte order; parsed prefixes are ASCII below `~`.
    pub fn prefix_range(prefix: &str) -> (String, String) {
        let mut high = prefix.as_bytes().to_vec();
        if let Some(last) = high.last_mut() {
            *last += 1;
        }
        (
            prefix.to_owned(),
            String::from_utf8(high).unwrap_or_default(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse_as_exact_or_prefix() {
        assert_eq!(
            ActionMatch::parse("file.download"),
            Ok(ActionMatch::Exact("file.download".into()))
        );
        assert_eq!(
            ActionMatch::parse("file.*"),
            Ok(ActionMatch::Prefix("file.".into()))
        );
        for bad in ["", "*", "file.**", "fi le", "file;", "é", &"a".repeat(101)] {
            assert!(ActionMatch::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefix_ranges_hold_exactly_the_prefixed_strings() {
        let (low, high) = ActionMatch::prefix_range("file.");
        assert_eq!((low.as_str(), high.as_str()), ("file.", "file/"));
        for inside in ["file.", "file.upload", "file.~"] {
            assert!(low.as_str() <= inside && inside < high.as_str(), "{inside}");
        }
        for outside in ["file", "files.x", "filf", "file-x"] {
            assert!(
                !(low.as_str() <= outside && outside < high.as_str()),
                "{outside}"
            );
        }
    }
}
