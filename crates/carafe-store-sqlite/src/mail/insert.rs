//! Inserting a batch of mails on SQLite, in the caller's transaction: every mail row, every
//! attachment, every send job, every `mail_messages` row and every `queued` event of the batch,
//! each kind written with as few multi-row statements as SQLite's parameter limit allows. A
//! failing statement (a mail or message id already stored) fails the whole batch, and the
//! caller's transaction is rolled back.

use carafe_core::mail::{
    Attachment, CampaignId, Mail, MailId, Message, MessageStatus, NewMail, NewMessage,
};
use carafe_core::{StoreError, StoreResult};
use serde_json::json;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};
use time::OffsetDateTime;

use super::sending::{NewEvent, add_events};
use super::{MAIL_COLUMNS, attachments, fold, json as to_json};
use crate::jobs::insert::insert_plain;
use crate::{at, map_err, ms};

/// Fails (before anything is written) unless every mail has one job per message.
pub(super) fn check(mails: &[NewMail]) -> StoreResult<()> {
    if mails.iter().any(|m| m.jobs.len() != m.messages.len()) {
        return Err(StoreError::corrupt(
            "insert_mails needs one job per message",
        ));
    }
    Ok(())
}

/// Writes `mails` (checked with [`check`]) and returns each mail's messages as stored, in order.
pub(super) async fn mails(
    conn: &mut SqliteConnection,
    mails: Vec<NewMail>,
) -> StoreResult<Vec<Vec<Message>>> {
    let mut batch = Vec::with_capacity(mails.len());
    let mut all_jobs = Vec::new();
    for m in mails {
        all_jobs.extend(m.jobs);
        // Stored to the millisecond: the messages say what a read gives back.
        let created = at(ms(m.mail.created_at));
        batch.push((m.mail, m.messages, created));
    }
    insert_mail_rows(conn, &batch).await?;
    let attached: Vec<(MailId, &[Attachment])> = batch
        .iter()
        .map(|(mail, _, _)| (mail.id, mail.attachments.as_slice()))
        .collect();
    attachments::insert(conn, &attached).await?;
    // All the batch's jobs in one call; they come back in the order given.
    let jobs = insert_plain(conn, all_jobs, None).await?;
    let mut jobs = jobs.into_iter();
    let mut stored = Vec::with_capacity(batch.len());
    for (mail, messages, created) in &batch {
        let kept: Vec<Message> = messages
            .iter()
            .zip(jobs.by_ref())
            .map(|(m, job)| Message {
                id: m.id,
                mail: mail.id,
                recipient: m.recipient.clone(),
                kind: m.kind,
                status: MessageStatus::Queued,
                attempts: 0,
                reply: None,
                relay_id: None,
                tags: mail.tags.clone(),
                job: Some(job.id),
                created_at: *created,
                updated_at: *created,
                sent_at: None,
            })
            .collect();
        if kept.len() != messages.len() {
            return Err(StoreError::corrupt("insert returned too few jobs"));
        }
        stored.push(kept);
    }
    let campaigns: Vec<Option<CampaignId>> =
        batch.iter().map(|(mail, _, _)| mail.campaign).collect();
    insert_message_rows(conn, &stored, &campaigns).await?;
    let events: Vec<NewEvent> = stored
        .iter()
        .flatten()
        .map(|m| NewEvent {
            message: m.id,
            seq: 1,
            at: m.created_at,
            kind: "queued",
            data: json!({}),
        })
        .collect();
    add_events(conn, &events).await?;
    Ok(stored)
}

/// One `mail` row per mail, with the time it was created at (to the millisecond).
async fn insert_mail_rows(
    conn: &mut SqliteConnection,
    batch: &[(Mail, Vec<NewMessage>, OffsetDateTime)],
) -> StoreResult<()> {
    // Eighteen parameters per row keep each statement far below SQLite's 32,766 limit.
    for chunk in batch.chunks(1000) {
        let mut q = QueryBuilder::<Sqlite>::new(format!("INSERT INTO mail ({MAIL_COLUMNS}) "));
        q.push_values(chunk, |mut b, (mail, _, created)| {
            b.push_bind(mail.id.to_string())
                .push_bind(mail.message_id.as_str())
                .push_bind(mail.from.as_str())
                .push_bind(mail.reply_to.as_deref())
                .push_bind(to_json(&mail.to))
                .push_bind(to_json(&mail.cc))
                .push_bind(to_json(&mail.bcc))
                .push_bind(mail.subject.as_str())
                .push_bind(mail.text.as_deref())
                .push_bind(mail.html.as_deref())
                .push_bind(to_json(&mail.headers))
                .push_bind(to_json(&mail.tags))
                .push_bind(mail.template.as_ref().map(to_json))
                .push_bind(i64::from(mail.unsubscribe))
                .push_bind(mail.campaign.map(|c| c.to_string()))
                .push_bind(mail.actor.as_str())
                .push_bind(mail.send_at.map(ms))
                .push_bind(ms(*created));
        });
        q.build().execute(&mut *conn).await.map_err(map_err)?;
    }
    Ok(())
}

/// One `mail_messages` row per message, `position` counting within its mail; `campaigns[i]`
/// is the campaign of the mail whose messages are `stored[i]`.
async fn insert_message_rows(
    conn: &mut SqliteConnection,
    stored: &[Vec<Message>],
    campaigns: &[Option<CampaignId>],
) -> StoreResult<()> {
    let rows: Vec<(usize, &Message, String, Option<String>)> = stored
        .iter()
        .zip(campaigns)
        .flat_map(|(kept, campaign)| {
            let tags = kept.first().map(|m| to_json(&m.tags)).unwrap_or_default();
            let campaign = campaign.map(|c| c.to_string());
            kept.iter()
                .enumerate()
                .map(move |(i, m)| (i, m, tags.clone(), campaign.clone()))
        })
        .collect();
    // Thirteen parameters per row keep each statement far below SQLite's 32,766 limit.
    for chunk in rows.chunks(1000) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO mail_messages (id, mail_id, position, recipient, recipient_lower, \
             kind, status, tags, campaign_id, job_id, created_at, updated_at, event_seq) ",
        );
        q.push_values(chunk, |mut b, (i, m, tags, campaign)| {
            b.push_bind(m.id.to_string())
                .push_bind(m.mail.to_string())
                .push_bind(*i as i64)
                .push_bind(m.recipient.as_str())
                .push_bind(fold(&m.recipient))
                .push_bind(m.kind.as_str())
                .push_bind(m.status.as_str())
                .push_bind(tags.as_str())
                .push_bind(campaign.as_deref())
                .push_bind(m.job.map(|j| j.0))
                .push_bind(ms(m.created_at))
                .push_bind(ms(m.updated_at))
                .push_bind(1i64);
        });
        q.build().execute(&mut *conn).await.map_err(map_err)?;
    }
    Ok(())
}
