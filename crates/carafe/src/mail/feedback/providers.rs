//! Postmark and Mailgun webhooks. Postmark authenticates with basic auth written into the
//! webhook URL (`mail.webhooks.postmark_auth`) and posts one record per call; Mailgun signs
//! each call with an HMAC-SHA256 of its timestamp and token under the webhook signing key
//! (`mail.webhooks.mailgun_signing_key`).
//!
//! Formats: <https://postmarkapp.com/developer/webhooks/webhooks-overview>,
//! <https://documentation.mailgun.com/docs/mailgun/user-manual/tracking-messages/>.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::settings::WebhookSettings;
use super::{Event, Parsed, Report, bare_message_id, fresh, invalid, recipient, refused, text};
use crate::mail::Error;

/// A Postmark record, after its basic auth is checked.
pub(super) fn postmark(
    settings: &WebhookSettings,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Parsed, Error> {
    let Some(expected) = &settings.postmark_auth else {
        return Err(refused(
            "webhook_not_configured",
            "Postmark webhooks are not taken: set mail.webhooks.postmark_auth",
        ));
    };
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .unwrap_or_default();
    if !bool::from(given.ct_eq(expected.expose().as_bytes())) {
        return Err(refused(
            "webhook_credentials",
            "the basic auth of the webhook URL does not match mail.webhooks.postmark_auth",
        ));
    }
    let r: Value = serde_json::from_slice(body)
        .map_err(|e| invalid("", format!("not a Postmark record: {e}")))?;
    let mut parsed = Parsed::default();
    let record = text(&r, "RecordType").unwrap_or_default();
    let kind = text(&r, "Type").unwrap_or_default();
    let event = match (record.as_str(), kind.as_str()) {
        ("Bounce", "HardBounce" | "BadEmailAddress") => Event::Bounced,
        ("Bounce", "SpamComplaint") | ("SpamComplaint", _) => Event::Complained,
        ("Bounce", _) => Event::SoftBounced,
        ("Delivery", _) => Event::Delivered,
        ("SubscriptionChange", _) if r["SuppressSending"] == Value::Bool(true) => {
            match r.get("SuppressionReason").and_then(Value::as_str) {
                Some("HardBounce") => Event::Bounced,
                Some("SpamComplaint") => Event::Complained,
                _ => Event::Unsubscribed,
            }
        }
        _ => {
            parsed.ignored = 1;
            return Ok(parsed);
        }
    };
    let Some(email) = text(&r, "Email").or_else(|| text(&r, "Recipient")) else {
        return Err(invalid("/Email", "missing"));
    };
    let relay_id = text(&r, "MessageID");
    let at = ["BouncedAt", "DeliveredAt", "ChangedAt"]
        .iter()
        .find_map(|k| text(&r, k))
        .and_then(|t| OffsetDateTime::parse(&t, &Rfc3339).ok())
        .unwrap_or_else(carafe_core::time::now);
    // Bounces carry their own id; other records are named by what they are about.
    let event_id = match r.get("ID") {
        Some(Value::Number(n)) => format!("{record}:{n}"),
        _ => format!(
            "{record}:{}:{email}:{}",
            relay_id.as_deref().unwrap_or_default(),
            at.unix_timestamp()
        ),
    };
    parsed.reports.push(Report {
        event,
        recipient: recipient(&email),
        relay_id,
        message_id: None,
        message: None,
        event_id,
        at,
        reason: text(&r, "Details")
            .filter(|d| !d.is_empty())
            .or_else(|| text(&r, "Description"))
            .or(Some(kind).filter(|k| !k.is_empty())),
    });
    Ok(parsed)
}

/// A Mailgun event, after its signature is checked.
pub(super) fn mailgun(settings: &WebhookSettings, body: &[u8]) -> Result<Parsed, Error> {
    let Some(key) = &settings.mailgun_signing_key else {
        return Err(refused(
            "webhook_not_configured",
            "Mailgun webhooks are not taken: set mail.webhooks.mailgun_signing_key",
        ));
    };
    let call: Value = serde_json::from_slice(body)
        .map_err(|e| invalid("", format!("not a Mailgun webhook: {e}")))?;
    let sig = &call["signature"];
    let (Some(timestamp), Some(token), Some(signature)) = (
        text(sig, "timestamp"),
        text(sig, "token"),
        text(sig, "signature"),
    ) else {
        return Err(refused(
            "webhook_signature",
            "signature.timestamp, .token and .signature are required",
        ));
    };
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key.expose().as_bytes()).expect("any key");
    mac.update(timestamp.as_bytes());
    mac.update(token.as_bytes());
    let given = hex::decode(signature.trim()).unwrap_or_default();
    mac.verify_slice(&given)
        .map_err(|_| refused("webhook_signature", "the Mailgun signature does not match"))?;
    fresh(&timestamp, settings)?;

    let e = &call["event-data"];
    let mut parsed = Parsed::default();
    let permanent = e.get("severity").and_then(Value::as_str) == Some("permanent");
    let event = match e.get("event").and_then(Value::as_str).unwrap_or_default() {
        "delivered" => Event::Delivered,
        "failed" if permanent => Event::Bounced,
        "failed" => Event::SoftBounced,
        "complained" => Event::Complained,
        "unsubscribed" => Event::Unsubscribed,
        _ => {
            parsed.ignored = 1;
            return Ok(parsed);
        }
    };
    let Some(email) = text(e, "recipient") else {
        return Err(invalid("/event-data/recipient", "missing"));
    };
    let status = &e["delivery-status"];
    let reason = text(status, "message")
        .filter(|m| !m.is_empty())
        .or_else(|| text(status, "description"))
        .or_else(|| text(e, "reason"));
    let at = e
        .get("timestamp")
        .and_then(Value::as_f64)
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t as i64).ok())
        .unwrap_or_else(carafe_core::time::now);
    parsed.reports.push(Report {
        event,
        recipient: recipient(&email),
        relay_id: None,
        // Mailgun keeps the copy's Message-ID and reports it.
        message_id: text(&e["message"]["headers"], "message-id").and_then(|i| bare_message_id(&i)),
        message: None,
        event_id: text(e, "id").unwrap_or(token),
        at,
        reason,
    });
    Ok(parsed)
}
