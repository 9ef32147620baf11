//! Who may call and for how long (the `[auth]` section of the configuration): end-user token
//! lifetimes and how long an API key lookup is cached.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::values::HumanDuration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Lifetime of an end-user token when the request names none.
    pub token_default_ttl: HumanDuration,
    /// Longest lifetime an end-user token may be given.
    pub token_max_ttl: HumanDuration,
    /// How long an API key lookup is cached; a key revoked on another instance stops working
    /// within this time (at once on the instance that revoked it).
    pub key_cache_ttl: HumanDuration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            token_default_ttl: HumanDuration(Duration::from_secs(3600)),
            token_max_ttl: HumanDuration(Duration::from_secs(24 * 3600)),
            key_cache_ttl: HumanDuration(Duration::from_secs(10)),
        }
    }
}

impl Settings {
    pub fn validate(&self) -> Result<(), String> {
        let (default_ttl, max_ttl) = (self.token_default_ttl.0, self.token_max_ttl.0);
        if max_ttl.is_zero() || default_ttl.is_zero() || default_ttl > max_ttl {
            return Err("auth: token ttls must be positive and default ≤ max".into());
        }
        Ok(())
    }
}
