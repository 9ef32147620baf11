//! Reports in Carafe's own format, for an app that learns of bounces some other way (its own
//! bounce mailbox, a provider Carafe has no reader for): `{"events": [...]}`, a list, or one
//! event. Each event names its recipient, one of `message` (Carafe's message id),
//! `relay_id` or `message_id`, and a `type` (an `Event`'s kind); `event_id` makes a retried
//! report count once (without it, the event's own content is its id).

use carafe_core::mail::MessageId;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::{Event, Parsed, Report, bare_message_id, invalid, recipient};
use crate::mail::Error;

/// The most events one call may carry.
pub const MAX_EVENTS: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Body {
    Wrapped { events: Vec<serde_json::Value> },
    List(Vec<serde_json::Value>),
    One(serde_json::Value),
}

/// One event, as the generic format writes it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenericEvent {
    /// delivered, delayed, soft_bounced, bounced, complained, unsubscribed or dropped.
    #[serde(rename = "type")]
    pub kind: String,
    /// The recipient's address.
    pub recipient: String,
    /// Carafe's message id (as `GET /api/v1/mail/{id}` lists it).
    pub message: Option<String>,
    /// The relay's queue id for the copy.
    pub relay_id: Option<String>,
    /// The copy's `Message-ID` header (brackets optional).
    pub message_id: Option<String>,
    /// The report's own id; repeated reports with the same id count once.
    pub event_id: Option<String>,
    /// When it happened (RFC 3339); default now.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub at: Option<OffsetDateTime>,
    pub reason: Option<String>,
}

pub(super) fn reports(body: &[u8]) -> Result<Parsed, Error> {
    let body: Body =
        serde_json::from_slice(body).map_err(|e| invalid("", format!("not JSON: {e}")))?;
    // Where each event is, for errors: `/events/3`, `/3`, or the body itself.
    let (prefix, raw, single) = match body {
        Body::Wrapped { events } => ("/events", events, false),
        Body::List(events) => ("", events, false),
        Body::One(event) => ("", vec![event], true),
    };
    if raw.len() > MAX_EVENTS {
        return Err(invalid(
            prefix,
            format!("at most {MAX_EVENTS} events per call"),
        ));
    }
    let mut parsed = Parsed::default();
    for (i, value) in raw.into_iter().enumerate() {
        let at = if single {
            String::new()
        } else {
            format!("{prefix}/{i}")
        };
        let digest = hex::encode(&Sha256::digest(value.to_string().as_bytes())[..16]);
        let e: GenericEvent =
            serde_json::from_value(value).map_err(|err| invalid(&at, err.to_string()))?;
        let event = Event::parse(&e.kind).ok_or_else(|| {
            let names: Vec<&str> = Event::ALL.iter().map(|e| e.kind()).collect();
            invalid(
                &format!("{at}/type"),
                format!("one of {}", names.join(", ")),
            )
        })?;
        let message = e
            .message
            .as_deref()
            .map(|m| m.parse::<MessageId>())
            .transpose()
            .map_err(|_| invalid(&format!("{at}/message"), "not a message id"))?;
        let message_id = e.message_id.as_deref().and_then(bare_message_id);
        if message.is_none() && e.relay_id.is_none() && message_id.is_none() {
            return Err(invalid(
                &at,
                "name the message: message, relay_id or message_id",
            ));
        }
        if !e.recipient.contains('@') {
            return Err(invalid(&format!("{at}/recipient"), "not an address"));
        }
        parsed.reports.push(Report {
            event,
            recipient: recipient(&e.recipient),
            relay_id: e.relay_id,
            message_id,
            message,
            event_id: e.event_id.unwrap_or(digest),
            at: e.at.unwrap_or_else(carafe_core::time::now),
            reason: e.reason,
        });
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(e: Error) -> String {
        match e {
            Error::Invalid(f) => f[0].field.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn events_are_read_in_every_shape_and_refused_with_their_place() {
        let one = br#"{"type":"bounced","recipient":"A@x.example","message_id":"<m@x>"}"#;
        let p = reports(one).unwrap();
        assert_eq!(p.reports[0].recipient, "a@x.example");
        assert_eq!(p.reports[0].message_id.as_deref(), Some("m@x"));
        assert_eq!(p.reports[0].event, Event::Bounced);
        // The same content is the same event id; different content is not.
        let again = reports(one).unwrap();
        assert_eq!(again.reports[0].event_id, p.reports[0].event_id);
        let list = br#"[{"type":"delivered","recipient":"a@x.example","relay_id":"Q1"},
                        {"type":"delivered","recipient":"a@x.example","relay_id":"Q2"}]"#;
        let p = reports(list).unwrap();
        assert_ne!(p.reports[0].event_id, p.reports[1].event_id);

        let bad = br#"{"events":[{"type":"bounced","recipient":"a@x.example","relay_id":"Q"},
                                 {"type":"exploded","recipient":"a@x.example","relay_id":"Q"}]}"#;
        assert_eq!(field(reports(bad).unwrap_err()), "/events/1/type");
        let unnamed = br#"{"events":[{"type":"bounced","recipient":"a@x.example"}]}"#;
        assert_eq!(field(reports(unnamed).unwrap_err()), "/events/0");
        let extra = br#"[{"type":"bounced","recipient":"a@x.example","relay_id":"Q","x":1}]"#;
        assert_eq!(field(reports(extra).unwrap_err()), "/0");
        let id = br#"{"type":"bounced","recipient":"a@x.example","message":"nope"}"#;
        assert_eq!(field(reports(id).unwrap_err()), "/message");
        let many = format!(
            "[{}]",
            vec![r#"{"type":"delivered","recipient":"a@x.example","relay_id":"Q"}"#; 1001]
                .join(",")
        );
        assert_eq!(field(reports(many.as_bytes()).unwrap_err()), "");
    }
}
