//! SendGrid's Signed Event Webhook: a JSON array of events, signed with ECDSA (P-256,
//! SHA-256) over the `X-Twilio-Email-Event-Webhook-Timestamp` header followed by the raw
//! body; the signature (base64 DER) is in `X-Twilio-Email-Event-Webhook-Signature` and the
//! public key (base64 DER SubjectPublicKeyInfo) is shown in SendGrid's settings.
//!
//! Format: <https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event>.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use serde_json::Value;
use time::OffsetDateTime;
use x509_cert::der::Decode;
use x509_cert::spki::SubjectPublicKeyInfoRef;

use super::settings::WebhookSettings;
use super::{Event, Parsed, Report, bare_message_id, fresh, invalid, recipient, refused, text};
use crate::mail::Error;

const SIGNATURE: &str = "x-twilio-email-event-webhook-signature";
const TIMESTAMP: &str = "x-twilio-email-event-webhook-timestamp";

/// The P-256 point of a base64 DER public key.
pub(super) fn public_key(base64: &str) -> Result<Vec<u8>, String> {
    let der = STANDARD
        .decode(base64.trim())
        .map_err(|_| "not base64".to_string())?;
    let spki = SubjectPublicKeyInfoRef::from_der(&der)
        .map_err(|_| "not a DER SubjectPublicKeyInfo".to_string())?;
    // id-ecPublicKey with the prime256v1 curve.
    let ec = "1.2.840.10045.2.1".parse().expect("an OID");
    let p256 = "1.2.840.10045.3.1.7".parse().expect("an OID");
    let curve = spki.algorithm.parameters_oid().ok();
    if spki.algorithm.oid != ec || curve != Some(p256) {
        return Err("not a P-256 (prime256v1) public key".into());
    }
    Ok(spki.subject_public_key.raw_bytes().to_vec())
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Checks the signature and freshness of a call.
fn verify(settings: &WebhookSettings, headers: &HeaderMap, body: &[u8]) -> Result<(), Error> {
    let Some(key) = &settings.sendgrid_public_key else {
        return Err(refused(
            "webhook_not_configured",
            "SendGrid events are not taken: set mail.webhooks.sendgrid_public_key",
        ));
    };
    let key = public_key(key).map_err(|e| refused("webhook_not_configured", e))?;
    let (Some(signature), Some(timestamp)) =
        (header(headers, SIGNATURE), header(headers, TIMESTAMP))
    else {
        return Err(refused(
            "webhook_signature",
            "the X-Twilio-Email-Event-Webhook-Signature and -Timestamp headers are required",
        ));
    };
    let signature = STANDARD
        .decode(signature.trim())
        .map_err(|_| refused("webhook_signature", "the signature is not base64"))?;
    let mut signed = timestamp.as_bytes().to_vec();
    signed.extend_from_slice(body);
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &key)
        .verify(&signed, &signature)
        .map_err(|_| refused("webhook_signature", "the SendGrid signature does not match"))?;
    fresh(timestamp, settings)
}

/// The events of a signed call.
pub(super) fn reports(
    settings: &WebhookSettings,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Parsed, Error> {
    verify(settings, headers, body)?;
    let events: Vec<Value> = serde_json::from_slice(body)
        .map_err(|e| invalid("", format!("not a SendGrid event array: {e}")))?;
    let mut parsed = Parsed::default();
    for (i, e) in events.iter().enumerate() {
        let kind = e.get("event").and_then(Value::as_str).unwrap_or_default();
        let event = match kind {
            "delivered" => Event::Delivered,
            "deferred" => Event::Delayed,
            // `blocked` is a temporary refusal; `bounce` a permanent one.
            "bounce" if e.get("type").and_then(Value::as_str) == Some("blocked") => {
                Event::SoftBounced
            }
            "bounce" => Event::Bounced,
            "dropped" => Event::Dropped,
            "spamreport" => Event::Complained,
            "unsubscribe" | "group_unsubscribe" => Event::Unsubscribed,
            _ => {
                parsed.ignored += 1;
                continue;
            }
        };
        let Some(email) = e.get("email").and_then(Value::as_str) else {
            return Err(invalid(&format!("/{i}/email"), "missing"));
        };
        // `sg_message_id` is the queue id SendGrid's SMTP reply gave, then a filter suffix.
        let relay_id = text(e, "sg_message_id")
            .map(|id| id.split('.').next().unwrap_or_default().to_owned())
            .filter(|id| !id.is_empty());
        let event_id = text(e, "sg_event_id")
            .unwrap_or_else(|| format!("{kind}:{}:{}", e["sg_message_id"], e["timestamp"]));
        let at = e
            .get("timestamp")
            .and_then(Value::as_i64)
            .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
            .unwrap_or_else(carafe_core::time::now);
        parsed.reports.push(Report {
            event,
            recipient: recipient(email),
            relay_id,
            message_id: text(e, "smtp-id").and_then(|id| bare_message_id(&id)),
            message: None,
            event_id,
            at,
            reason: text(e, "reason").or_else(|| text(e, "response")),
        });
    }
    Ok(parsed)
}
