//! The `[mail.webhooks]` settings: what each provider's reports are checked with. A provider
//! with nothing configured has its endpoint refuse every report — a forged bounce would stop
//! mail to a real user, so nothing is taken on trust.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::values::{HumanDuration, Secret};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Amazon SES through SNS: the ARNs of the topics whose notifications are taken (any AWS
    /// account can sign a notification of its own topic, so the topic is what proves it is
    /// yours). Empty: `/webhooks/mail/ses` refuses everything.
    pub ses_topics: Vec<String>,
    /// Hosts SNS signing certificates (and subscription confirmations) are fetched from, over
    /// https; `*` stands for one DNS label.
    pub sns_cert_hosts: Vec<String>,
    /// SendGrid: the Signed Event Webhook's public key (base64 DER, as SendGrid shows it).
    pub sendgrid_public_key: Option<String>,
    /// Postmark: the `user:password` the webhook URL carries as basic auth.
    pub postmark_auth: Option<Secret>,
    /// Mailgun: the HTTP webhook signing key.
    pub mailgun_signing_key: Option<Secret>,
    /// How old a signed timestamp (SendGrid, Mailgun) may be; older reports are refused, so
    /// a captured request cannot be replayed later.
    pub max_age: HumanDuration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            ses_topics: Vec::new(),
            sns_cert_hosts: vec![
                "sns.*.amazonaws.com".into(),
                "sns.*.amazonaws.com.cn".into(),
            ],
            sendgrid_public_key: None,
            postmark_auth: None,
            mailgun_signing_key: None,
            max_age: HumanDuration(Duration::from_secs(3600)),
        }
    }
}

impl WebhookSettings {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(key) = &self.sendgrid_public_key {
            super::sendgrid::public_key(key)
                .map_err(|e| format!("mail.webhooks.sendgrid_public_key: {e}"))?;
        }
        if let Some(auth) = &self.postmark_auth
            && !auth.expose().contains(':')
        {
            return Err("mail.webhooks.postmark_auth is written user:password".into());
        }
        if self
            .mailgun_signing_key
            .as_ref()
            .is_some_and(|k| k.expose().is_empty())
        {
            return Err("mail.webhooks.mailgun_signing_key is empty".into());
        }
        if let Some(t) = self.ses_topics.iter().find(|t| !t.starts_with("arn:")) {
            return Err(format!("mail.webhooks.ses_topics: {t:?} is not an ARN"));
        }
        if self.max_age.0 < Duration::from_secs(60) {
            return Err("mail.webhooks.max_age must be at least 1m".into());
        }
        Ok(())
    }
}
