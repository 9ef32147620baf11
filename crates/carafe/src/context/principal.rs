//! Who asks: a server API key with its scopes, or an end user (an application's user, with the
//! scopes of the token the application minted). Capabilities ask a `Principal` what it may do;
//! a refusal is `Denied`, which the web layer answers with 403.

use std::sync::Arc;

use carafe_core::keys::{ApiKey, Scope, Scopes};
use time::OffsetDateTime;

use super::Actor;

/// A verified end user.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: String,
    pub scopes: Scopes,
    pub expires_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub enum Principal {
    Key(Arc<ApiKey>),
    User(User),
}

/// Why a principal may not do something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// It lacks this scope (and `admin`).
    #[error("this needs the `{0}` scope")]
    Scope(Scope),
    /// Only a server API key may do it, never an end user.
    #[error("this needs a server API key; end-user tokens cannot do it")]
    KeyRequired,
}

impl Principal {
    pub fn scopes(&self) -> Scopes {
        match self {
            Principal::Key(k) => k.scopes,
            Principal::User(u) => u.scopes,
        }
    }

    /// Refused unless the caller holds `scope` (or `admin`).
    pub fn require(&self, scope: Scope) -> Result<(), Denied> {
        if self.scopes().allows(scope) {
            Ok(())
        } else {
            Err(Denied::Scope(scope))
        }
    }

    /// Refused unless the caller is an API key holding `scope`: for actions an application's
    /// backend takes, never its end users.
    pub fn require_key(&self, scope: Scope) -> Result<(), Denied> {
        self.require(scope)?;
        match self {
            Principal::Key(_) => Ok(()),
            Principal::User(_) => Err(Denied::KeyRequired),
        }
    }

    /// Whether the caller may see a resource owned by `owner`: any key with `scope`, or the
    /// owning user with `scope`.
    pub fn may_see(&self, scope: Scope, owner: Option<&str>) -> bool {
        match self {
            Principal::Key(k) => k.scopes.allows(scope),
            Principal::User(u) => u.scopes.allows(scope) && owner == Some(u.id.as_str()),
        }
    }

    /// The audit actor id: `key:<id>` or `user:<id>`.
    pub fn actor_id(&self) -> String {
        match self {
            Principal::Key(k) => format!("key:{}", k.id),
            Principal::User(u) => format!("user:{}", u.id),
        }
    }

    /// The audit actor for this caller, acting within the request `request_id`.
    pub fn actor(&self, request_id: Option<&str>) -> Actor {
        Actor {
            id: self.actor_id(),
            request_id: request_id.map(str::to_owned),
        }
    }
}
