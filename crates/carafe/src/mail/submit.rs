//! Turning a send request into what is stored: every address parsed strictly, the content
//! checked by building the message once, recipients de-duplicated into one message per
//! recipient, and one job per message on Carafe's mail queue. Every refusal names its field.

use std::collections::HashSet;
use std::time::Duration;

use carafe_core::jobs::{Backoff, NewJob, QueueName};
use carafe_core::mail::{
    Attachment, CampaignId, Mail, MailId, MessageId, NewMessage, RecipientKind,
};
use carafe_core::templates::TemplateRef;
use carafe_core::time::now;
use lettre::message::Mailbox;
use serde_json::json;
use time::OffsetDateTime;

use super::address::parse_mailbox;
use super::attach::AttachmentSpec;
use super::build::{self, BuildError, Draft, MAX_RECIPIENTS};
use super::templates::TemplateUse;
use super::{CAMPAIGN_QUEUE_PREFIX, Error, Settings};
use crate::context::{Actor, FieldError};

/// Most tags on one submission, and their longest length.
pub const MAX_TAGS: usize = 10;
pub const MAX_TAG_LEN: usize = 64;
/// Send attempts of one message before it fails for good.
pub const SEND_ATTEMPTS: u32 = 20;

/// What a client asks to send: raw content, or a template to render.
#[derive(Debug, Clone, Default)]
pub struct SendRequest {
    pub from: Option<String>,
    pub reply_to: Option<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    /// Rendered into `subject`, `text` and `html` before the rest is checked.
    pub template: Option<TemplateUse>,
    pub attachments: Vec<AttachmentSpec>,
    /// Parts the HTML shows by `cid:`.
    pub inline: Vec<AttachmentSpec>,
    pub headers: Vec<(String, String)>,
    pub tags: Vec<String>,
    pub send_at: Option<OffsetDateTime>,
    /// One-click unsubscribe headers in each recipient's copy (RFC 8058).
    pub unsubscribe: bool,
    /// A campaign's copy for one recipient: the campaign, and the mail's and message's ids
    /// (derived from the campaign and the recipient's row, so a batch made twice collides).
    /// Set only by the campaign capability; the ways in leave it `None`.
    pub campaign: Option<(CampaignId, MailId, MessageId)>,
    /// The relay (`mail.relays`) to send through; `None`: `default`.
    pub relay: Option<String>,
}

/// A checked submission, ready for the store.
pub struct Checked {
    pub mail: Mail,
    pub messages: Vec<NewMessage>,
}

/// The request field a build refusal is about (a JSON pointer).
fn field_of(e: &BuildError) -> String {
    match e {
        BuildError::NoBody => "/text".into(),
        BuildError::TooManyRecipients(_) => "/to".into(),
        BuildError::HeaderNotAllowed { name, .. } | BuildError::HeaderInvalid { name, .. } => {
            format!("/headers/{}", name.replace('~', "~0").replace('/', "~1"))
        }
        BuildError::TooManyHeaders => "/headers".into(),
        BuildError::TooLarge { what, .. } if what.contains("header") => "/headers".into(),
        BuildError::TooLarge { what, .. } if what.starts_with("HTML") => "/html".into(),
        BuildError::TooLarge { what, .. } if what.starts_with("text") => "/text".into(),
        BuildError::TooLarge { .. } | BuildError::InvalidSubject(_) => "/subject".into(),
        BuildError::InvalidAddress { field, .. } => format!("/{field}"),
        BuildError::InvalidMessageId(_) | BuildError::InvalidDate | BuildError::Build(_) => {
            "/".into()
        }
    }
}

/// Checks `req` and shapes it into a mail and its recipients' messages; `template` is what
/// its content was rendered from, `attachments` its files, already checked.
pub fn check(
    req: SendRequest,
    template: Option<TemplateRef>,
    attachments: Vec<Attachment>,
    settings: &Settings,
    actor: &Actor,
) -> Result<Checked, Error> {
    let mut errors = Vec::new();
    let mut one = |field: &str, value: &str| -> Option<Mailbox> {
        parse_mailbox(value)
            .map_err(|e| errors.push(FieldError::new(field, e.to_string())))
            .ok()
    };
    let from = match &req.from {
        Some(f) => one("/from", f),
        None => parse_mailbox(&settings.from).ok(),
    };
    let reply_to = req.reply_to.as_deref().and_then(|r| one("/reply_to", r));
    let mut lists: Vec<(RecipientKind, Vec<Mailbox>)> = Vec::new();
    for (kind, given) in [
        (RecipientKind::To, &req.to),
        (RecipientKind::Cc, &req.cc),
        (RecipientKind::Bcc, &req.bcc),
    ] {
        let parsed = given
            .iter()
            .enumerate()
            .filter_map(|(i, a)| one(&format!("/{}/{i}", kind.as_str()), a))
            .collect();
        lists.push((kind, parsed));
    }
    if req.unsubscribe {
        for (name, _) in &req.headers {
            if name.eq_ignore_ascii_case("List-Unsubscribe")
                || name.eq_ignore_ascii_case("List-Unsubscribe-Post")
            {
                errors.push(FieldError::new(
                    format!("/headers/{name}"),
                    "written by Carafe for mail sent with unsubscribe",
                ));
            }
        }
    }
    let total: usize = req.to.len() + req.cc.len() + req.bcc.len();
    if total == 0 {
        errors.push(FieldError::new("/to", "give at least one recipient"));
    } else if total > MAX_RECIPIENTS {
        errors.push(FieldError::new(
            "/to",
            format!("at most {MAX_RECIPIENTS} recipients (to, cc and bcc together)"),
        ));
    }
    let subject = req.subject.clone().unwrap_or_default();
    if subject.trim().is_empty() {
        errors.push(FieldError::new("/subject", "give a subject"));
    }
    if req.tags.len() > MAX_TAGS {
        errors.push(FieldError::new("/tags", format!("at most {MAX_TAGS} tags")));
    }
    for (i, tag) in req.tags.iter().enumerate() {
        let ok = !tag.is_empty()
            && tag.len() <= MAX_TAG_LEN
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
        if !ok {
            errors.push(FieldError::new(
                format!("/tags/{i}"),
                format!("1-{MAX_TAG_LEN} of a-z A-Z 0-9 . _ : -"),
            ));
        }
    }
    let created_at = now();
    if let Some(at) = req.send_at
        && at > created_at + settings.max_schedule.0
    {
        errors.push(FieldError::new(
            "/send_at",
            format!("at most {:?} ahead", settings.max_schedule),
        ));
    }
    let Some(from) = from else {
        return Err(Error::Invalid(errors));
    };
    let id = req.campaign.map_or_else(MailId::new, |(_, id, _)| id);
    let domain = settings
        .message_id_domain
        .clone()
        .unwrap_or_else(|| from.email.domain().to_owned());
    let message_id = format!("{id}@{domain}");
    // Recipients in order, each address once (to before cc before bcc).
    let mut seen = HashSet::new();
    let mut messages = Vec::new();
    for (kind, list) in &lists {
        for mailbox in list {
            if seen.insert(mailbox.email.to_string().to_ascii_lowercase()) {
                messages.push(NewMessage {
                    id: match (req.campaign, messages.is_empty()) {
                        (Some((_, _, id)), true) => id,
                        _ => MessageId::new(),
                    },
                    recipient: mailbox.email.to_string(),
                    kind: *kind,
                });
            }
        }
    }
    let draft = Draft {
        from: from.clone(),
        reply_to: reply_to.clone(),
        to: lists[0].1.clone(),
        cc: lists[1].1.clone(),
        subject: subject.clone(),
        text: req.text.clone(),
        html: req.html.clone(),
        headers: req.headers.clone(),
        parts: Vec::new(),
    };
    // Building once checks the content and headers as sending will (a campaign's copy, made
    // from a template whose parts were checked, is checked without assembling it).
    let built = match req.campaign {
        Some(_) => build::check_draft(&draft, &message_id, created_at),
        None => build::build(&draft, &message_id, created_at).map(drop),
    };
    if errors.is_empty()
        && let Err(e) = built
    {
        errors.push(FieldError::new(field_of(&e), e.to_string()));
    }
    if !errors.is_empty() {
        return Err(Error::Invalid(errors));
    }
    let text = |v: &[Mailbox]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    Ok(Checked {
        mail: Mail {
            id,
            message_id,
            from: from.to_string(),
            reply_to: reply_to.map(|r| r.to_string()),
            to: text(&lists[0].1),
            cc: text(&lists[1].1),
            bcc: text(&lists[2].1),
            subject,
            text: req.text,
            html: req.html,
            headers: req.headers,
            tags: req.tags,
            template,
            attachments,
            unsubscribe: req.unsubscribe,
            campaign: req.campaign.map(|(c, _, _)| c),
            actor: actor.id.clone(),
            send_at: req.send_at,
            created_at,
        },
        messages,
    })
}

/// The queue a mail's messages are sent from: its relay's (`carafe.mail` for `default`), or
/// its campaign's own queue (so a campaign is paused and rate-limited as a queue, the same on
/// every instance; that queue joins the relay's rate group when the campaign starts).
pub fn queue_of(mail: &Mail, relay: &str) -> QueueName {
    match mail.campaign {
        Some(c) => campaign_queue_name(c),
        None => super::relays::queue_of(relay),
    }
}

/// The queue of campaign `id`'s messages.
pub fn campaign_queue(id: CampaignId) -> String {
    format!("{CAMPAIGN_QUEUE_PREFIX}{}", id.0.simple())
}

/// `campaign_queue`, as a queue name.
pub fn campaign_queue_name(id: CampaignId) -> QueueName {
    QueueName::parse(&campaign_queue(id)).expect("a campaign's queue name is valid")
}

/// The job that sends `message`: many attempts with backoff from `retry_base` up to an hour
/// (a relay may refuse for a while), scheduled for the mail's `send_at`.
pub fn send_job(message: MessageId, mail: &Mail, relay: &str, settings: &Settings) -> NewJob {
    let at = mail.send_at.unwrap_or(mail.created_at).max(mail.created_at);
    let queue = queue_of(mail, relay);
    send_job_at(message, queue, relay, at, mail.created_at, settings)
}

/// The job that sends `message` from `queue` through `relay`, no earlier than `at`.
pub fn send_job_at(
    message: MessageId,
    queue: QueueName,
    relay: &str,
    at: OffsetDateTime,
    created_at: OffsetDateTime,
    settings: &Settings,
) -> NewJob {
    let mut args = json!({"message": message});
    if relay != super::relays::DEFAULT {
        args["relay"] = relay.into();
    }
    NewJob {
        queue,
        args,
        priority: 3,
        max_attempts: SEND_ATTEMPTS,
        backoff: Some(Backoff::Exponential {
            base_ms: settings.retry_base.0.as_millis() as u64,
            max_ms: (settings.retry_base.0.as_millis() as u64).max(3_600_000),
            jitter: 0.2,
        }),
        timeout: Duration::from_secs(300),
        scheduled_at: at,
        unique: None,
        owner: None,
        target: None,
        created_at,
    }
}
