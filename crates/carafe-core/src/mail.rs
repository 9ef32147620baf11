//! Mail as the stores keep it: a submission (`Mail`: what was asked to be sent, once) and one
//! `Message` per recipient, each with its own state, attempts and append-only event timeline,
//! and the outbox where messages land when no relay is configured. The mail capability checks
//! addresses and content before anything reaches these types; the stores only keep them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::files::FileId;
use crate::jobs::{JobId, NewJob};
use crate::templates::TemplateRef;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            pub fn new() -> Self {
                $name(uuid::Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                uuid::Uuid::parse_str(s).map($name)
            }
        }
    };
}

uuid_id!(
    /// A submission's id (a UUIDv7: ids sort by creation and cannot be guessed).
    MailId
);
uuid_id!(
    /// One recipient's message.
    MessageId
);
uuid_id!(
    /// A message captured in the outbox.
    OutboxId
);
uuid_id!(
    /// A bulk send: one template, many recipients (see `crate::campaigns`).
    CampaignId
);

/// Where a recipient's address came from in the submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientKind {
    To,
    Cc,
    Bcc,
}

impl RecipientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientKind::To => "to",
            RecipientKind::Cc => "cc",
            RecipientKind::Bcc => "bcc",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "to" => RecipientKind::To,
            "cc" => RecipientKind::Cc,
            "bcc" => RecipientKind::Bcc,
            _ => return None,
        })
    }
}

/// A recipient message's state. `queued → sending → sent`; `sending → deferred → sending …`
/// on temporary failures; `failed` on permanent ones; `cancelled` before sending; the rest are
/// set by later events (`bounced`, `complained`) or at send time (`suppressed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    Queued,
    Sending,
    Sent,
    Deferred,
    Failed,
    Suppressed,
    Bounced,
    Complained,
    Cancelled,
}

impl MessageStatus {
    pub const ALL: [MessageStatus; 9] = [
        MessageStatus::Queued,
        MessageStatus::Sending,
        MessageStatus::Sent,
        MessageStatus::Deferred,
        MessageStatus::Failed,
        MessageStatus::Suppressed,
        MessageStatus::Bounced,
        MessageStatus::Complained,
        MessageStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Queued => "queued",
            MessageStatus::Sending => "sending",
            MessageStatus::Sent => "sent",
            MessageStatus::Deferred => "deferred",
            MessageStatus::Failed => "failed",
            MessageStatus::Suppressed => "suppressed",
            MessageStatus::Bounced => "bounced",
            MessageStatus::Complained => "complained",
            MessageStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// Whether a send attempt may start from this state.
    pub fn may_send(self) -> bool {
        matches!(self, MessageStatus::Queued | MessageStatus::Deferred)
    }

    /// Whether the message may still be cancelled (nothing is being sent for it).
    pub fn may_cancel(self) -> bool {
        self.may_send()
    }
}

/// What was asked to be sent, once for all its recipients. Addresses are kept formatted
/// (`"Name <a@b>"`), already checked by the mail capability.
#[derive(Debug, Clone, PartialEq)]
pub struct Mail {
    pub id: MailId,
    /// The `Message-ID` every recipient's copy carries (`uuid@domain`, without brackets).
    pub message_id: String,
    pub from: String,
    pub reply_to: Option<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    /// Extra headers, allow-listed: `[[name, value], …]`.
    pub headers: Vec<(String, String)>,
    pub tags: Vec<String>,
    /// The template version the content was rendered from, if any.
    pub template: Option<TemplateRef>,
    /// Attachments and inline parts, in the order given.
    pub attachments: Vec<Attachment>,
    /// Whether each copy carries one-click unsubscribe headers (RFC 8058).
    pub unsubscribe: bool,
    /// The campaign this mail is one recipient's copy of, if any (its messages carry it too).
    pub campaign: Option<CampaignId>,
    /// Who submitted it (`key:…`), for the audit trail and listing.
    pub actor: String,
    pub send_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
}

/// A file sent with a mail: attached, or inline (with a `cid` the HTML refers to as
/// `cid:…`).
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub filename: String,
    pub content_type: String,
    /// The Content-ID of an inline part (without angle brackets); `None` for an attachment.
    pub cid: Option<String>,
    /// The content's size in bytes.
    pub size: u64,
    pub content: AttachmentContent,
}

/// Where an attachment's bytes are.
#[derive(Debug, Clone, PartialEq)]
pub enum AttachmentContent {
    /// A Carafe file, read when the message is sent.
    File(FileId),
    /// Bytes given with the mail, kept with it.
    Bytes(Vec<u8>),
}

/// A recipient's message as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: MessageId,
    pub mail: MailId,
    pub recipient: String,
    pub kind: RecipientKind,
    pub status: MessageStatus,
    pub attempts: u32,
    /// The last reply of the relay (or the reason of the last failure).
    pub reply: Option<String>,
    /// The relay's queue id from its `250` reply, when it gave one.
    pub relay_id: Option<String>,
    pub tags: Vec<String>,
    pub job: Option<JobId>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub sent_at: Option<OffsetDateTime>,
}

/// A mail to insert with its recipients' messages and their send jobs (`jobs[i]` sends
/// `messages[i]`).
#[derive(Debug, Clone, PartialEq)]
pub struct NewMail {
    pub mail: Mail,
    pub messages: Vec<NewMessage>,
    pub jobs: Vec<NewJob>,
}

/// A recipient's message to insert with its mail.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    pub id: MessageId,
    pub recipient: String,
    pub kind: RecipientKind,
}

/// One entry of a message's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageEvent {
    pub seq: u32,
    pub at: OffsetDateTime,
    /// `queued`, `sending`, `sent`, `deferred`, `failed`, `cancelled`, …
    pub kind: String,
    pub data: Value,
}

/// How a send attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub struct SendOutcome {
    /// `Sent`, `Deferred` or `Failed`.
    pub status: MessageStatus,
    pub reply: Option<String>,
    pub relay_id: Option<String>,
    pub at: OffsetDateTime,
    /// Extra details for the event (e.g. when a deferred message is tried next).
    pub data: Value,
}

/// A send attempt to end: the message, how it ended, and its outbox capture (no relay).
#[derive(Debug, Clone, PartialEq)]
pub struct FinishSending {
    pub id: MessageId,
    pub outcome: SendOutcome,
    pub outbox: Option<OutboxEntry>,
}

/// Which messages a listing returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MessageFilter {
    pub status: Option<MessageStatus>,
    /// Exact recipient address (compared case-insensitively).
    pub to: Option<String>,
    pub tag: Option<String>,
    pub mail: Option<MailId>,
    pub campaign: Option<CampaignId>,
}

/// A message captured instead of sent (no relay configured): the exact bytes a relay would
/// have received, and what is searched.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxItem {
    pub id: OutboxId,
    pub message: MessageId,
    pub mail: MailId,
    pub envelope_from: String,
    pub recipient: String,
    pub subject: String,
    pub message_id: String,
    pub tags: Vec<String>,
    pub size: u64,
    pub created_at: OffsetDateTime,
}

/// An outbox item with its raw bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    pub item: OutboxItem,
    pub raw: Vec<u8>,
}

/// Which outbox items a listing returns. Text fields match case-insensitively: `to` and
/// `message_id` exactly, `subject` as a substring.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutboxFilter {
    pub to: Option<String>,
    pub subject: Option<String>,
    pub tag: Option<String>,
    pub message_id: Option<String>,
}

/// An address mail is not sent to (a hard bounce, a complaint, an unsubscribe, or an
/// operator's decision). Addresses are kept lowercased.
#[derive(Debug, Clone, PartialEq)]
pub struct Suppression {
    pub address: String,
    /// `bounce`, `complaint`, `unsubscribe` or `manual`.
    pub reason: String,
    /// Who or what added it (`key:…`, a webhook provider, …).
    pub source: String,
    pub created_at: OffsetDateTime,
}

/// What was reported about a message after the relay took it — a bounce, a complaint, a
/// delivery, an unsubscribe — by a provider's webhook or the app. Recorded once per
/// `event_id`: a report delivered twice changes nothing the second time.
#[derive(Debug, Clone, PartialEq)]
pub struct Feedback {
    /// The timeline entry's kind: `delivered`, `bounced`, `soft_bounced`, `complained`,
    /// `unsubscribed`, …
    pub kind: String,
    /// The state a `sent` message moves to (`Bounced`, `Complained`); a message in any other
    /// state only gains the timeline entry.
    pub status: Option<MessageStatus>,
    /// The report's own id (the provider's event id).
    pub event_id: String,
    pub at: OffsetDateTime,
    /// Details for the timeline (the provider, its reason); `event_id` is added to them.
    pub data: Value,
}

/// How a report names the message it is about: always its recipient, and the relay's queue
/// id or the `Message-ID` header (without brackets) the copy carried.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MessageRef {
    /// The recipient's address, lowercased.
    pub recipient: String,
    pub relay_id: Option<String>,
    pub message_id: Option<String>,
}

impl Feedback {
    /// What the timeline entry keeps: `data` with `event_id` added — to the object it is, or
    /// around what is not one (nothing at all for `null`).
    pub fn entry_data(&self) -> Value {
        match &self.data {
            Value::Object(fields) => {
                let mut fields = fields.clone();
                fields.insert("event_id".into(), self.event_id.clone().into());
                Value::Object(fields)
            }
            Value::Null => serde_json::json!({ "event_id": self.event_id }),
            other => serde_json::json!({ "data": other, "event_id": self.event_id }),
        }
    }
}
