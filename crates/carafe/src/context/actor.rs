//! As whom a change is recorded: the audit actor (an API key, an end user, the CLI) with the
//! request that caused it, and for uploads and downloads the client's address and agent.

use carafe_core::audit::{Details, NewAuditEvent};
use carafe_core::files::FileId;
use serde::Serialize;
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

/// Who uploads, from where: recorded in the audit log.
#[derive(Debug, Clone)]
pub struct Origin {
    pub actor: Actor,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl Origin {
    pub fn event(&self, action: &str, file: FileId, details: Value) -> NewAuditEvent {
        self.event_on(action, format!("file:{file}"), details)
    }

    /// An event about another kind of resource (`upload:<id>`), with the same origin facts.
    pub fn event_on(&self, action: &str, target: String, details: Value) -> NewAuditEvent {
        self.clone().into_event_with(action, target, &details)
    }

    /// An event whose details are `details` (a struct or JSON object of a few fields) with this
    /// origin's ip and user agent beside them, serialized once.
    pub fn into_event_with(
        self,
        action: &str,
        target: String,
        details: &impl Serialize,
    ) -> NewAuditEvent {
        #[derive(Serialize)]
        struct WithOrigin<'a, T: Serialize> {
            #[serde(flatten)]
            details: &'a T,
            ip: Option<String>,
            user_agent: Option<String>,
        }
        let details = Details::new(&WithOrigin {
            details,
            ip: self.ip,
            user_agent: self.user_agent,
        });
        self.actor.into_event(action, Some(target), details)
    }
}
