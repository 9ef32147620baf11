//! The append-only audit log: who did what to which resource, when, and under which request.
//! Rows are written in the same transaction as the change they describe and never updated.

use serde::Serialize;
use serde_json::value::RawValue;
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
    pub details: Details,
}

/// An event's details: a small JSON object, serialized once when the event is made. Events
/// wait in memory for the batch that writes them, and a serialized object is one allocation
/// to hold, write and free instead of one per key and value.
#[derive(Debug, Clone)]
pub struct Details(Box<RawValue>);

impl Details {
    /// Serializes `value` (a struct or map with a few fields).
    pub fn new(value: &impl Serialize) -> Details {
        match serde_json::value::to_raw_value(value) {
            Ok(raw) => Details(raw),
            // Only a map with non-string keys fails; keep the event, without its details.
            Err(_) => Details::from(serde_json::Value::Object(Default::default())),
        }
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(self.0.get()).unwrap_or(serde_json::Value::Null)
    }
}

impl From<serde_json::Value> for Details {
    fn from(value: serde_json::Value) -> Details {
        let text = value.to_string();
        Details(RawValue::from_string(text).expect("a Value serializes to valid JSON"))
    }
}

impl PartialEq for Details {
    fn eq(&self, other: &Details) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Serialize for Details {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
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

    #[test]
    fn details_are_the_serialized_object() {
        #[derive(Serialize)]
        struct Download<'a> {
            via: &'a str,
            range: Option<&'a str>,
            status: u16,
        }
        let details = Details::new(&Download {
            via: "link",
            range: None,
            status: 206,
        });
        assert_eq!(
            details.as_str(),
            r#"{"via":"link","range":null,"status":206}"#
        );
        assert_eq!(
            details.to_value(),
            serde_json::json!({"via": "link", "range": null, "status": 206})
        );
        // From a Value, and serialized as the object itself (not as a string).
        let from_value = Details::from(serde_json::json!({"n": 1}));
        assert_eq!(serde_json::to_string(&from_value).unwrap(), r#"{"n":1}"#);
        assert_eq!(from_value, Details::from(serde_json::json!({"n": 1})));
        assert_ne!(from_value, Details::from(serde_json::json!({"n": 2})));
    }
}
