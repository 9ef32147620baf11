//! How mail, messages and outbox items look to clients.

use carafe_core::mail::{
    Attachment, AttachmentContent, Mail, Message, MessageEvent, MessageStatus, OutboxItem,
};
use carafe_core::templates::TemplateRef;
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::mail::Submission;

/// One recipient's message.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageView {
    pub id: String,
    pub mail_id: String,
    /// The recipient's address.
    pub to: String,
    /// `to`, `cc` or `bcc`.
    pub kind: String,
    /// queued, sending, sent, deferred, failed, suppressed, bounced, complained or cancelled.
    pub status: String,
    pub attempts: u32,
    /// The relay's last reply (or why the last attempt failed).
    pub reply: Option<String>,
    /// The relay's queue id (the outbox item's id when captured).
    pub relay_id: Option<String>,
    pub tags: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub sent_at: Option<OffsetDateTime>,
}

impl From<Message> for MessageView {
    fn from(m: Message) -> Self {
        MessageView {
            id: m.id.to_string(),
            mail_id: m.mail.to_string(),
            to: m.recipient,
            kind: m.kind.as_str().into(),
            status: m.status.as_str().into(),
            attempts: m.attempts,
            reply: m.reply,
            relay_id: m.relay_id,
            tags: m.tags,
            created_at: m.created_at,
            updated_at: m.updated_at,
            sent_at: m.sent_at,
        }
    }
}

/// One entry of a message's timeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub seq: u32,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    pub kind: String,
    #[schema(value_type = Object)]
    pub data: Value,
}

impl From<MessageEvent> for EventView {
    fn from(e: MessageEvent) -> Self {
        EventView {
            seq: e.seq,
            at: e.at,
            kind: e.kind,
            data: e.data,
        }
    }
}

/// A message with its timeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageDetail {
    #[serde(flatten)]
    pub message: MessageView,
    pub events: Vec<EventView>,
}

/// A submission and its recipients' messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct MailView {
    pub id: String,
    /// All messages' status when they agree; otherwise `in_progress` while any is still
    /// queued, sending or deferred, and `mixed` once all have ended.
    pub status: String,
    /// The `Message-ID` header every copy carries (without the angle brackets).
    pub message_id: String,
    pub from: String,
    pub reply_to: Option<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    #[schema(value_type = Vec<Vec<String>>)]
    pub headers: Vec<(String, String)>,
    pub tags: Vec<String>,
    /// The template version and locale the content was rendered from, if any.
    pub template: Option<TemplateRefView>,
    /// Attachments and inline parts (without their bytes).
    pub attachments: Vec<AttachmentView>,
    /// Whether each copy carries one-click unsubscribe headers.
    pub unsubscribe: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub send_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    pub messages: Vec<MessageView>,
}

/// An attachment or inline part.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttachmentView {
    pub filename: String,
    #[serde(rename = "type")]
    pub content_type: String,
    pub size: u64,
    /// The Content-ID of an inline part.
    pub cid: Option<String>,
    /// The Carafe file it is read from, when it is one.
    pub file_id: Option<String>,
}

impl From<Attachment> for AttachmentView {
    fn from(a: Attachment) -> Self {
        AttachmentView {
            filename: a.filename,
            content_type: a.content_type,
            size: a.size,
            cid: a.cid,
            file_id: match a.content {
                AttachmentContent::File(id) => Some(id.to_string()),
                AttachmentContent::Bytes(_) => None,
            },
        }
    }
}

/// What a message was rendered from.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateRefView {
    pub name: String,
    pub version: u32,
    pub locale: String,
}

impl From<TemplateRef> for TemplateRefView {
    fn from(t: TemplateRef) -> Self {
        TemplateRefView {
            name: t.name,
            version: t.version,
            locale: t.locale,
        }
    }
}

/// The summary status of a mail's messages.
pub fn summary(messages: &[Message]) -> String {
    let first = messages.first().map(|m| m.status);
    if let Some(s) = first
        && messages.iter().all(|m| m.status == s)
    {
        return s.as_str().into();
    }
    let open = messages.iter().any(|m| {
        matches!(
            m.status,
            MessageStatus::Queued | MessageStatus::Sending | MessageStatus::Deferred
        )
    });
    if open { "in_progress" } else { "mixed" }.into()
}

impl From<Submission> for MailView {
    fn from(s: Submission) -> Self {
        let Mail {
            id,
            message_id,
            from,
            reply_to,
            to,
            cc,
            bcc,
            subject,
            text,
            html,
            headers,
            tags,
            template,
            attachments,
            unsubscribe,
            send_at,
            created_at,
            ..
        } = s.mail;
        MailView {
            id: id.to_string(),
            status: summary(&s.messages),
            message_id,
            from,
            reply_to,
            to,
            cc,
            bcc,
            subject,
            text,
            html,
            headers,
            tags,
            template: template.map(Into::into),
            attachments: attachments.into_iter().map(Into::into).collect(),
            unsubscribe,
            send_at,
            created_at,
            messages: s.messages.into_iter().map(MessageView::from).collect(),
        }
    }
}

/// A captured message, as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutboxItemView {
    pub id: String,
    pub mail_id: String,
    /// The recipient's message (see `GET /api/v1/mail/messages/{id}`).
    pub message: String,
    /// The envelope sender.
    pub from: String,
    /// The envelope recipient.
    pub to: String,
    pub subject: String,
    pub message_id: String,
    pub tags: Vec<String>,
    /// Size of the raw message in bytes.
    pub size: u64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

impl From<OutboxItem> for OutboxItemView {
    fn from(i: OutboxItem) -> Self {
        OutboxItemView {
            id: i.id.to_string(),
            mail_id: i.mail.to_string(),
            message: i.message.to_string(),
            from: i.envelope_from,
            to: i.recipient,
            subject: i.subject,
            message_id: i.message_id,
            tags: i.tags,
            size: i.size,
            created_at: i.created_at,
        }
    }
}

/// A captured message with its headers and bodies, as a mail client would show it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutboxDetail {
    #[serde(flatten)]
    pub item: OutboxItemView,
    /// Every header, in order, decoded (`[name, value]`).
    #[schema(value_type = Vec<Vec<String>>)]
    pub headers: Vec<(String, String)>,
    pub text: Option<String>,
    pub html: Option<String>,
    /// Attachments and inline parts, as parsed from the message.
    pub attachments: Vec<OutboxPartView>,
}

/// An attachment or inline part of a captured message.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutboxPartView {
    pub filename: Option<String>,
    #[serde(rename = "type")]
    pub content_type: String,
    pub size: u64,
    pub cid: Option<String>,
}
