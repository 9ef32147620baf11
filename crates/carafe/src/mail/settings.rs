//! The mail capability's settings (the `[mail]` section of the configuration): the default
//! sender, the domain of Message-IDs, and how long a submission may be scheduled ahead.

use serde::{Deserialize, Serialize};

use crate::values::HumanDuration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The sender of messages that name none (`Name <address>` or an address).
    pub from: String,
    /// The domain of the `Message-ID` of every message (`<uuid@domain>`); unset: the domain
    /// of the message's sender.
    pub message_id_domain: Option<String>,
    /// How far ahead `send_at` may be.
    pub max_schedule: HumanDuration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            from: "Carafe <carafe@localhost>".into(),
            message_id_domain: None,
            max_schedule: HumanDuration(std::time::Duration::from_secs(30 * 24 * 3600)),
        }
    }
}

impl Settings {
    pub fn validate(&self) -> Result<(), String> {
        super::address::parse_mailbox(&self.from).map_err(|e| format!("mail.from: {e}"))?;
        if let Some(domain) = &self.message_id_domain
            && !super::submit::is_domain(domain)
        {
            return Err(format!(
                "mail.message_id_domain: {domain:?} is not a domain name"
            ));
        }
        Ok(())
    }
}
