//! Who acts: every change is attributed to an actor (an API key, an end user, the CLI) and
//! recorded in the append-only audit log with the request that caused it.

pub mod csv;
pub mod http;
pub mod query;
pub mod writer;

use carafe_core::audit::{Details, NewAuditEvent};
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Actor {
    /// `key:<id>`, `user:<id>` or `cli`.
    pub id: String,
    pub request_id: Option<String>,
}

impl Actor {
    pub fn cli() -> Self {
        Actor {
            id: "cli".into(),
            request_id: None,
        }
    }

    pub fn event(&self, action: &str, target: Option<String>, details: Value) -> NewAuditEvent {
        self.clone().into_event(action, target, details.into())
    }

    /// The event, taking the actor's strings instead of copying them.
    pub fn into_event(
        self,
        action: &str,
        target: Option<String>,
        details: Details,
    ) -> NewAuditEvent {
        NewAuditEvent {
            at: carafe_core::time::now(),
            actor: self.id,
            action: action.into(),
            target,
            request_id: self.request_id,
            details,
        }
    }
}
