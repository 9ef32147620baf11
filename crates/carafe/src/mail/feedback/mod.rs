//! What happens to mail after a relay took it, as the provider behind the relay reports it:
//! bounces, complaints, deliveries, unsubscribes. Each provider's webhook is checked the way
//! that provider signs it — SES through SNS (`sns.rs`: RSA signature with Amazon's
//! certificate, and a topic of yours), SendGrid (`sendgrid.rs`: ECDSA), Postmark (basic auth)
//! and Mailgun (HMAC) in `providers.rs` — and the app's own reports come in one `generic`
//! format (`generic.rs`, with an API key). All are read into one vocabulary (`Report`) and
//! applied the same way: the message's timeline gains the report (once per event id, however
//! often a provider retries), a hard bounce or a complaint moves a sent message and suppresses
//! the address, an unsubscribe suppresses it.

mod generic;
mod providers;
mod sendgrid;
pub mod settings;
mod sns;

use carafe_core::mail::{Feedback, MessageId, MessageRef, MessageStatus, Suppression};
use carafe_core::time::now;
use http::HeaderMap;
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::suppressions::normalise;
use super::{Error, Mailer};
use crate::context::FieldError;

pub use settings::WebhookSettings;
pub(super) use sns::Certificates;

/// Who sends the reports an endpoint takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Ses,
    Sendgrid,
    Postmark,
    Mailgun,
    /// The app's own reports (with an API key).
    Generic,
}

impl Provider {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ses" => Provider::Ses,
            "sendgrid" => Provider::Sendgrid,
            "postmark" => Provider::Postmark,
            "mailgun" => Provider::Mailgun,
            "generic" => Provider::Generic,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Ses => "ses",
            Provider::Sendgrid => "sendgrid",
            Provider::Postmark => "postmark",
            Provider::Mailgun => "mailgun",
            Provider::Generic => "generic",
        }
    }
}

/// What a report says happened to one recipient's copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The receiving server took it.
    Delivered,
    /// Delivery is delayed; the provider keeps trying.
    Delayed,
    /// A temporary bounce (mailbox full, blocked for now): nothing changes but the timeline.
    SoftBounced,
    /// A permanent bounce: the address does not take mail.
    Bounced,
    /// The recipient marked it as spam.
    Complained,
    /// The recipient unsubscribed through the provider.
    Unsubscribed,
    /// The provider did not send it (its own suppression list, for example).
    Dropped,
}

impl Event {
    pub const ALL: [Event; 7] = [
        Event::Delivered,
        Event::Delayed,
        Event::SoftBounced,
        Event::Bounced,
        Event::Complained,
        Event::Unsubscribed,
        Event::Dropped,
    ];

    /// The timeline entry's kind.
    pub fn kind(self) -> &'static str {
        match self {
            Event::Delivered => "delivered",
            Event::Delayed => "delayed",
            Event::SoftBounced => "soft_bounced",
            Event::Bounced => "bounced",
            Event::Complained => "complained",
            Event::Unsubscribed => "unsubscribed",
            Event::Dropped => "dropped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.kind() == s)
    }

    /// The state a sent message moves to.
    fn status(self) -> Option<MessageStatus> {
        match self {
            Event::Bounced => Some(MessageStatus::Bounced),
            Event::Complained => Some(MessageStatus::Complained),
            _ => None,
        }
    }

    /// Why the address is suppressed after this, if it is.
    fn suppression(self) -> Option<&'static str> {
        match self {
            Event::Bounced => Some("bounce"),
            Event::Complained => Some("complaint"),
            Event::Unsubscribed => Some("unsubscribe"),
            _ => None,
        }
    }
}

/// One report about one recipient's copy, in Carafe's vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub event: Event,
    /// The recipient's bare address, lowercased.
    pub recipient: String,
    /// The relay's queue id for the copy (SES, SendGrid and Postmark ids).
    pub relay_id: Option<String>,
    /// The copy's `Message-ID`, without brackets.
    pub message_id: Option<String>,
    /// Carafe's own message id (generic reports may name it).
    pub message: Option<MessageId>,
    /// The provider's id of the report: the same report delivered twice counts once.
    pub event_id: String,
    pub at: OffsetDateTime,
    /// The provider's words (an SMTP reply, a bounce type).
    pub reason: Option<String>,
}

/// What a webhook call did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Summary {
    /// Reports read from the body.
    pub received: usize,
    /// Reports added to a message's timeline.
    pub recorded: usize,
    /// Reports a message had already been given (a provider's retry).
    pub duplicates: usize,
    /// Reports about no message Carafe sent (suppressions still apply).
    pub unmatched: usize,
    /// Addresses suppressed now.
    pub suppressed: usize,
    /// Events Carafe does not track (opens, clicks, …).
    pub ignored: usize,
    /// An SNS subscription confirmed by this call.
    pub subscription_confirmed: bool,
}

/// Reports read from a body, and the events skipped.
#[derive(Debug, Default)]
pub(super) struct Parsed {
    pub reports: Vec<Report>,
    pub ignored: usize,
    pub subscription_confirmed: bool,
}

/// A field of the body is not what the provider sends.
pub(super) fn invalid(pointer: &str, why: impl Into<String>) -> Error {
    Error::Invalid(vec![FieldError::new(pointer, why)])
}

/// A report not signed as configured.
pub(super) fn refused(code: &'static str, message: impl Into<String>) -> Error {
    Error::Refused {
        code,
        message: message.into(),
    }
}

/// The form suppressions keep a reported address in (providers send it bare, some in
/// brackets); an address that does not parse is kept as given, lowercased.
pub(super) fn recipient(address: &str) -> String {
    let trimmed = address.trim();
    normalise(trimmed).unwrap_or_else(|_| trimmed.trim_matches(['<', '>']).to_lowercase())
}

/// A string field of a provider's JSON.
pub(super) fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// A signed timestamp (Unix seconds) within `mail.webhooks.max_age` of now.
pub(super) fn fresh(timestamp: &str, settings: &WebhookSettings) -> Result<(), Error> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| refused("webhook_stale", "the signed timestamp is not a number"))?;
    let age = carafe_core::time::now().unix_timestamp() - ts;
    if age.unsigned_abs() > settings.max_age.0.as_secs() {
        return Err(refused(
            "webhook_stale",
            "the signed timestamp is older than mail.webhooks.max_age (or in the future)",
        ));
    }
    Ok(())
}

/// A `Message-ID` without its brackets.
pub(super) fn bare_message_id(id: &str) -> Option<String> {
    let id = id.trim().trim_start_matches('<').trim_end_matches('>');
    (!id.is_empty()).then(|| id.to_owned())
}

impl Mailer {
    /// Takes a webhook call from `provider`: checks it is signed as configured, reads its
    /// reports and applies them. The caller has checked the API key of `generic` calls.
    pub async fn take_webhook(
        &self,
        provider: Provider,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Summary, Error> {
        let settings = &self.settings().webhooks;
        let parsed = match provider {
            Provider::Ses => self.certificates().take(settings, body).await?,
            Provider::Sendgrid => sendgrid::reports(settings, headers, body)?,
            Provider::Postmark => providers::postmark(settings, headers, body)?,
            Provider::Mailgun => providers::mailgun(settings, body)?,
            Provider::Generic => generic::reports(body)?,
        };
        let mut summary = Summary {
            received: parsed.reports.len(),
            ignored: parsed.ignored,
            subscription_confirmed: parsed.subscription_confirmed,
            ..Summary::default()
        };
        for report in parsed.reports {
            self.apply(provider, report, &mut summary).await?;
        }
        if summary.received + summary.ignored > 0 {
            tracing::info!(provider = provider.as_str(), ?summary, "mail webhook taken");
        }
        Ok(summary)
    }

    async fn apply(
        &self,
        provider: Provider,
        report: Report,
        summary: &mut Summary,
    ) -> Result<(), Error> {
        let store = self.store();
        let message = match report.message {
            Some(id) => store
                .get_message(id)
                .await?
                .filter(|m| m.recipient.to_lowercase() == report.recipient),
            None => {
                let key = MessageRef {
                    recipient: report.recipient.clone(),
                    relay_id: report.relay_id.clone(),
                    message_id: report.message_id.clone(),
                };
                store.find_message(&key).await?
            }
        };
        match message {
            None => summary.unmatched += 1,
            Some(before) => {
                let feedback = Feedback {
                    kind: report.event.kind().to_owned(),
                    status: report.event.status(),
                    event_id: report.event_id.clone(),
                    at: report.at,
                    data: json!({"provider": provider.as_str(), "reason": report.reason}),
                };
                match store.record_feedback(before.id, feedback).await? {
                    // Seen before; the suppression below is made sure of all the same (the
                    // first call may have ended before it).
                    None => summary.duplicates += 1,
                    Some(after) => {
                        summary.recorded += 1;
                        if after.status != before.status
                            && let Some(c) =
                                store.get_mail(after.mail).await?.and_then(|m| m.campaign)
                        {
                            self.campaign_progressed(c);
                        }
                    }
                }
            }
        }
        if let Some(reason) = report.event.suppression() {
            let entry = Suppression {
                address: report.recipient,
                reason: reason.to_owned(),
                source: format!("webhook:{}", provider.as_str()),
                created_at: now(),
            };
            if store.put_suppression(entry).await?.1 {
                summary.suppressed += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_addresses_and_ids_are_read_bare() {
        assert_eq!(recipient(" Ann@Example.COM "), "ann@example.com");
        assert_eq!(recipient("Ann <Ann@Example.com>"), "ann@example.com");
        assert_eq!(recipient("<ann@example.com>"), "ann@example.com");
        assert_eq!(
            bare_message_id("<abc@mail.example>").as_deref(),
            Some("abc@mail.example")
        );
        assert_eq!(bare_message_id("<>"), None);
        for e in Event::ALL {
            assert_eq!(Event::parse(e.kind()), Some(e));
        }
    }
}
