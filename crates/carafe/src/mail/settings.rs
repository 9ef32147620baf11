//! The mail capability's settings (the `[mail]` section of the configuration): the relay
//! messages go out through (none: the outbox), the default sender, the domain of Message-IDs,
//! retries, and how long a submission may be scheduled ahead.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::values::{HumanDuration, Secret};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The SMTP relay: `smtp://user:pass@host:587` (STARTTLS required), `smtps://…:465`, or
    /// `smtp://…?tls=none` to a loopback address. Unset: every message is captured in the
    /// outbox instead.
    pub smtp_url: Option<Secret>,
    /// A PEM certificate (a private CA) the relay's certificate may chain to, besides the
    /// bundled web roots.
    pub smtp_ca_file: Option<PathBuf>,
    /// Sends in flight to the relay at once (from this process).
    pub smtp_concurrency: usize,
    /// How long one SMTP command may take.
    pub smtp_timeout: HumanDuration,
    /// Messages per second to the relay, from every instance together (unset: no limit).
    /// Throttling replies (`454`) slow it down for a while.
    pub smtp_rate: Option<f64>,
    /// Messages at once after a quiet spell (default: one second's worth of `smtp_rate`).
    pub smtp_burst: Option<u32>,
    /// At most this many messages per calendar hour (UTC); needs `smtp_rate`.
    pub smtp_hourly_limit: Option<u64>,
    /// At most this many messages per calendar day (UTC); needs `smtp_rate`.
    pub smtp_daily_limit: Option<u64>,
    /// More relays, by name (`[mail.relays.bulk]`); a mail or campaign picks one with `relay`.
    pub relays: std::collections::BTreeMap<String, super::relays::RelaySettings>,
    /// The first wait before a deferred message is tried again; it doubles with each attempt
    /// (up to an hour), for 20 attempts (about 17 hours), then the message fails.
    pub retry_base: HumanDuration,
    /// DKIM: the RSA private key (PKCS#1 PEM) that signs every message; unset: no signature.
    pub dkim_key_file: Option<PathBuf>,
    /// DKIM: the selector the public key is published under (`<selector>._domainkey.<domain>`).
    pub dkim_selector: String,
    /// DKIM: the signing domain (`d=`); required with a key.
    pub dkim_domain: Option<String>,
    /// Whether transactional mail to a suppressed address is skipped (marked `suppressed`).
    pub suppress_transactional: bool,
    /// The sender of messages that name none (`Name <address>` or an address).
    pub from: String,
    /// The domain of the `Message-ID` of every message (`<uuid@domain>`); unset: the domain
    /// of the message's sender.
    pub message_id_domain: Option<String>,
    /// How far ahead `send_at` may be.
    pub max_schedule: HumanDuration,
    /// The locale of a template put without one, and the last step of every locale fallback
    /// (`ko-KR → ko → default_locale`).
    pub default_locale: String,
    /// The most bytes a mail's attachments and inline parts may hold together.
    pub max_attachment_bytes: u64,
    /// Listen for SMTP submission here (`127.0.0.1:2525`); unset: no SMTP listener.
    pub smtp_listen: Option<std::net::SocketAddr>,
    /// The certificate chain (PEM) the SMTP listener offers with STARTTLS; required off loopback.
    pub smtp_listen_cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub smtp_listen_key_file: Option<PathBuf>,
    /// The largest message the SMTP listener accepts (announced as `SIZE`).
    pub smtp_listen_max_bytes: usize,
    /// How providers' bounce and complaint webhooks are checked (`[mail.webhooks]`).
    pub webhooks: super::feedback::WebhookSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            smtp_url: None,
            smtp_ca_file: None,
            smtp_concurrency: 4,
            smtp_timeout: HumanDuration(Duration::from_secs(30)),
            smtp_rate: None,
            smtp_burst: None,
            smtp_hourly_limit: None,
            smtp_daily_limit: None,
            relays: Default::default(),
            retry_base: HumanDuration(Duration::from_secs(60)),
            suppress_transactional: true,
            dkim_key_file: None,
            dkim_selector: "carafe".into(),
            dkim_domain: None,
            from: "Carafe <carafe@localhost>".into(),
            message_id_domain: None,
            max_schedule: HumanDuration(Duration::from_secs(30 * 24 * 3600)),
            default_locale: "en".into(),
            max_attachment_bytes: 10 * 1024 * 1024,
            smtp_listen: None,
            smtp_listen_cert_file: None,
            smtp_listen_key_file: None,
            smtp_listen_max_bytes: 25 * 1024 * 1024,
            webhooks: Default::default(),
        }
    }
}

impl Settings {
    pub fn validate(&self) -> Result<(), String> {
        super::address::parse_mailbox(&self.from).map_err(|e| format!("mail.from: {e}"))?;
        if let Some(domain) = &self.message_id_domain
            && !super::address::is_domain(domain)
        {
            return Err(format!(
                "mail.message_id_domain: {domain:?} is not a domain name"
            ));
        }
        if self.retry_base.0.is_zero() {
            return Err("mail.retry_base must be positive".into());
        }
        if super::templates::locale::canonical(&self.default_locale).as_deref()
            != Some(self.default_locale.as_str())
        {
            return Err(format!(
                "mail.default_locale: {:?} is not a language tag written like en or ko-KR",
                self.default_locale
            ));
        }
        if !(1..=50 * 1024 * 1024).contains(&self.max_attachment_bytes) {
            return Err("mail.max_attachment_bytes must be between 1 and 52428800".into());
        }
        if self.smtp_listen_cert_file.is_some() != self.smtp_listen_key_file.is_some() {
            return Err(
                "mail.smtp_listen_cert_file and mail.smtp_listen_key_file go together".into(),
            );
        }
        if let Some(addr) = self.smtp_listen
            && !addr.ip().is_loopback()
            && self.smtp_listen_cert_file.is_none()
        {
            return Err(format!(
                "mail.smtp_listen on {addr} needs mail.smtp_listen_cert_file and \
                 mail.smtp_listen_key_file: passwords are only taken over TLS off loopback"
            ));
        }
        if !(1024..=100 * 1024 * 1024).contains(&self.smtp_listen_max_bytes) {
            return Err("mail.smtp_listen_max_bytes must be between 1024 and 104857600".into());
        }
        self.webhooks.validate()?;
        self.dkim()?;
        super::relays::validate(self)
    }

    /// The DKIM signer, if one is configured.
    pub fn dkim(&self) -> Result<Option<lettre::message::dkim::DkimConfig>, String> {
        let Some(key) = &self.dkim_key_file else {
            return Ok(None);
        };
        let domain = self
            .dkim_domain
            .as_deref()
            .ok_or("mail.dkim_domain is required with mail.dkim_key_file")?;
        if !super::address::is_domain(domain) {
            return Err(format!("mail.dkim_domain: {domain:?} is not a domain name"));
        }
        if !super::address::is_domain(&self.dkim_selector) {
            return Err(format!(
                "mail.dkim_selector: {:?} is not a DNS label",
                self.dkim_selector
            ));
        }
        super::dkim::config(key, &self.dkim_selector, domain).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(change: impl FnOnce(&mut Settings)) -> String {
        let mut s = Settings::default();
        change(&mut s);
        s.validate().unwrap_err()
    }

    #[test]
    fn the_smtp_listener_takes_passwords_off_loopback_only_over_tls() {
        let mut s = Settings {
            smtp_listen: Some("127.0.0.1:2525".parse().unwrap()),
            ..Settings::default()
        };
        assert_eq!(s.validate(), Ok(()));
        s.smtp_listen = Some("0.0.0.0:2525".parse().unwrap());
        assert!(s.validate().unwrap_err().contains("smtp_listen_cert_file"));
        s.smtp_listen_cert_file = Some("/etc/carafe/smtp.crt".into());
        s.smtp_listen_key_file = Some("/etc/carafe/smtp.key".into());
        assert_eq!(s.validate(), Ok(()));
        assert!(refusal(|s| s.smtp_listen_key_file = Some("k.pem".into())).contains("go together"));
    }

    #[test]
    fn limits_and_the_default_locale_are_checked() {
        assert!(refusal(|s| s.smtp_listen_max_bytes = 100).contains("smtp_listen_max_bytes"));
        assert!(refusal(|s| s.max_attachment_bytes = 0).contains("max_attachment_bytes"));
        assert!(
            refusal(|s| s.max_attachment_bytes = 51 * 1024 * 1024).contains("max_attachment_bytes")
        );
        assert!(refusal(|s| s.default_locale = "ko-kr".into()).contains("default_locale"));
        assert!(refusal(|s| s.default_locale = "english".into()).contains("default_locale"));
    }
}
