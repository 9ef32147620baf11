//! The jobs on Carafe's `carafe.mail` queue: each sends one recipient's message. The message's
//! state guards the work — a cancelled or finished message is never sent — and an attempt
//! that died mid-send (its job rescued after the lease lapsed) is recorded as interrupted and
//! tried again, so a message is sent at least once. With no relay configured, "sending" means
//! capturing the exact bytes in the outbox.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use carafe_core::mail::{
    Mail, Message, MessageId, MessageStatus, OutboxEntry, OutboxId, OutboxItem, SendOutcome,
};
use carafe_core::time::now;
use lettre::message::dkim::DkimConfig;
use serde_json::{Value, json};

use super::Mailer;
use super::address::parse_mailbox;
use super::attach::FilePart;
use super::build::{self, Draft};
use super::relay::Answer;
use super::relays::RelayEntry;
use super::unsubscribe::Links;
use crate::jobs::runner::{JobContext, JobError, JobHandler};

/// Runs the jobs of the mail queue.
pub struct MailJobs {
    mailer: Arc<Mailer>,
}

impl MailJobs {
    pub fn new(mailer: Arc<Mailer>) -> Self {
        MailJobs { mailer }
    }
}

fn retry(what: &str, e: impl std::fmt::Display) -> JobError {
    JobError::retry(format!("{what}: {e}"))
}

#[async_trait]
impl JobHandler for MailJobs {
    async fn run(&self, ctx: JobContext) -> Result<Value, JobError> {
        let id = ctx
            .args()
            .get("message")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<MessageId>().ok())
            .ok_or_else(|| JobError::abort("not a mail job"))?;
        let relay_name = ctx
            .args()
            .get("relay")
            .and_then(Value::as_str)
            .unwrap_or(super::relays::DEFAULT);
        let Some(relay) = self.mailer.relays().get(relay_name) else {
            // Configured when the mail was accepted, gone since: wait for the operator.
            tracing::error!(
                relay = relay_name,
                "a message names a relay that is not configured"
            );
            return Err(retry("relay", format!("{relay_name:?} is not configured")));
        };
        let store = self.mailer.store();
        let mut started = self
            .mailer
            .start_sending(id)
            .await
            .map_err(|e| retry("start", e))?;
        if started.is_none() {
            let Some(message) = store.get_message(id).await.map_err(|e| retry("read", e))? else {
                return Ok(json!({"skipped": "no such message"}));
            };
            if message.status != MessageStatus::Sending {
                return Ok(json!({"skipped": message.status.as_str()}));
            }
            // Only this message's job sends it, and this job holds its lease: a message still
            // `sending` was left by an attempt that died. Record that, then try again.
            let interrupted = ended(
                MessageStatus::Deferred,
                "the previous attempt was interrupted".into(),
                json!({"interrupted": true}),
            );
            self.mailer
                .finish_sending(id, interrupted, None)
                .await
                .map_err(|e| retry("record", e))?;
            started = self
                .mailer
                .start_sending(id)
                .await
                .map_err(|e| retry("start", e))?;
        }
        let Some((mail, message)) = started else {
            return Ok(json!({"skipped": "not sendable"}));
        };
        let spared = self
            .mailer
            .spares(&mail, &message.recipient)
            .await
            .map_err(|e| retry("suppressions", e))?;
        if let Some(s) = spared {
            let outcome = ended(
                MessageStatus::Suppressed,
                format!("not sent: the address is suppressed ({})", s.reason),
                json!({"reason": s.reason, "suppressed_at": s.created_at.unix_timestamp()}),
            );
            self.mailer
                .finish_sending(id, outcome, None)
                .await
                .map_err(|e| retry("record", e))?;
            if let Some(c) = mail.campaign {
                self.mailer.campaign_progressed(c);
            }
            return Ok(json!({"status": "suppressed"}));
        }
        let parts = match self.mailer.parts(&mail).await {
            Ok(parts) => Ok(parts),
            // A file gone or quarantined since the mail was accepted: it cannot be sent.
            Err(Ok(reason)) => Err(reason),
            Err(Err(e)) => return Err(retry("attachments", e)),
        };
        let links = self.mailer.links();
        let raw = parts.and_then(|parts| render(&mail, &message, parts, links, self.mailer.dkim()));
        let (outcome, outbox, retry_in) = match raw {
            Ok(raw) => match &relay.relay {
                None => {
                    let (outcome, entry) = capture(&mail, &message, raw);
                    (outcome, Some(entry), None)
                }
                Some(smtp) => {
                    let answer = smtp
                        .send(&envelope_from(&mail), &message.recipient, &raw)
                        .await;
                    let slowed = self.slow_down_on(&answer, relay_name, relay).await;
                    let (mut outcome, retry_in) = judge(answer, &ctx);
                    outcome.data["relay"] = relay_name.into();
                    if let Some(rate) = slowed {
                        outcome.data["relay_rate_now"] = rate.into();
                    }
                    (outcome, None, retry_in)
                }
            },
            // Checked when the mail was accepted, so only a changed rule or an attachment
            // gone since gets here: failing the message says so; retrying could not help.
            Err(reason) => {
                let data = json!({"reason": reason});
                (ended(MessageStatus::Failed, reason, data), None, None)
            }
        };
        let status = outcome.status;
        let captured = outbox.is_some();
        let finished = self
            .mailer
            .finish_sending(id, outcome, outbox)
            .await
            .map_err(|e| retry("record", e))?;
        if captured && finished.is_some() {
            self.mailer.captured();
        }
        if let Some(c) = mail.campaign {
            self.mailer.campaign_progressed(c);
        }
        if status == MessageStatus::Deferred {
            return Err(JobError::Retry {
                message: "the relay asked to try again later".into(),
                after: retry_in,
            });
        }
        Ok(json!({"status": status.as_str()}))
    }
}

impl MailJobs {
    /// Slows `relay` down when `answer` says it is throttling and the relay has a rate: the
    /// rate it goes at now.
    async fn slow_down_on(&self, answer: &Answer, name: &str, relay: &RelayEntry) -> Option<f64> {
        let Answer::Later {
            reply,
            throttled: true,
            ..
        } = answer
        else {
            return None;
        };
        let group = relay.group.as_ref()?;
        match self.mailer.jobs().slow_rate_group(&group.name).await {
            Ok(rate) => {
                tracing::warn!(relay = name, %reply, rate_now = ?rate, "the relay is throttling: slowing down");
                rate
            }
            Err(e) => {
                tracing::warn!(relay = name, error = %e, "slowing the relay down failed");
                None
            }
        }
    }
}

/// The message's bytes, as any of its recipients receives them.
fn render(
    mail: &Mail,
    message: &Message,
    parts: Vec<FilePart>,
    links: Option<&Links>,
    dkim: Option<&DkimConfig>,
) -> Result<Vec<u8>, String> {
    let one = |s: &str| parse_mailbox(s).map_err(|e| format!("stored address {s:?}: {e}"));
    let many = |v: &[String]| v.iter().map(|s| one(s)).collect::<Result<Vec<_>, _>>();
    let mut draft = Draft {
        from: one(&mail.from)?,
        reply_to: mail.reply_to.as_deref().map(one).transpose()?,
        to: many(&mail.to)?,
        cc: many(&mail.cc)?,
        subject: mail.subject.clone(),
        text: mail.text.clone(),
        html: mail.html.clone(),
        headers: mail.headers.clone(),
        parts,
    };
    if mail.unsubscribe {
        let links = links.ok_or("unsubscribe links are not available")?;
        draft.headers.extend(links.headers(message.id));
    }
    build::build_signed(&draft, &mail.message_id, now(), dkim).map_err(|e| e.to_string())
}

/// The envelope sender: the bare address of the mail's sender.
fn envelope_from(mail: &Mail) -> String {
    parse_mailbox(&mail.from)
        .map(|m| m.email.to_string())
        .unwrap_or_else(|_| mail.from.clone())
}

/// A message's attempt ended now with `status`: its reply, kept on the message and (with
/// `data`) in its timeline.
fn ended(status: MessageStatus, reply: String, mut data: Value) -> SendOutcome {
    data["reply"] = Value::String(reply.clone());
    SendOutcome {
        status,
        reply: Some(reply),
        relay_id: None,
        at: now(),
        data,
    }
}

/// What a relay's answer means for the message, and when to try again if it is deferred. A
/// temporary refusal defers it (the job tries again), unless this was the job's last attempt:
/// then the message has failed.
fn judge(answer: Answer, ctx: &JobContext) -> (SendOutcome, Option<Duration>) {
    let later = |reply: String, after: Option<Duration>| {
        if ctx.is_last_attempt() {
            let data = json!({"gave_up_after_attempts": ctx.attempt()});
            (ended(MessageStatus::Failed, reply, data), None)
        } else {
            let ms = after.map(|d| d.as_millis() as u64);
            let data = json!({"retry_in_ms": ms});
            (ended(MessageStatus::Deferred, reply, data), after)
        }
    };
    match answer {
        Answer::Accepted { reply, relay_id } => {
            let outcome = ended(MessageStatus::Sent, reply, json!({"transport": "smtp"}));
            (
                SendOutcome {
                    relay_id,
                    ..outcome
                },
                None,
            )
        }
        Answer::Refused { reply } => {
            let data = json!({"permanent": true});
            (ended(MessageStatus::Failed, reply, data), None)
        }
        Answer::Later { reply, after, .. } => later(reply, after),
        Answer::Misconfigured { reply } => {
            tracing::error!(%reply, "the SMTP relay refused Carafe's login: check mail.smtp_url");
            later(reply, None)
        }
    }
}

/// "Sends" into the outbox: the bytes a relay would have been given, kept with what is
/// searched.
fn capture(mail: &Mail, message: &Message, raw: Vec<u8>) -> (SendOutcome, OutboxEntry) {
    let at = now();
    let envelope_from = envelope_from(mail);
    let item = OutboxItem {
        id: OutboxId::new(),
        message: message.id,
        mail: mail.id,
        envelope_from,
        recipient: message.recipient.clone(),
        subject: mail.subject.clone(),
        message_id: mail.message_id.clone(),
        tags: mail.tags.clone(),
        size: raw.len() as u64,
        created_at: at,
    };
    let data = json!({"transport": "outbox", "outbox_id": item.id});
    let outcome = SendOutcome {
        relay_id: Some(item.id.to_string()),
        ..ended(
            MessageStatus::Sent,
            "250 captured in the outbox".into(),
            data,
        )
    };
    (outcome, OutboxEntry { item, raw })
}
