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
