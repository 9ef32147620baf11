//! Writing mail: `insert_mails` records a batch of submissions — each mail with its
//! attachments, its recipients' messages (each `queued`, with its `queued` event) and the jobs
//! that send them — in one transaction. However many mails the batch holds, it takes the same
//! few statements, each over arrays (`unnest`) that cover every mail of the batch: the mail
//! rows, the jobs, the attachments, and the messages with their events. The messages are then
//! handed back to their mails by id. A campaign's batch is written the same way, inside the
//! transaction that moves its cursor (`insert_in`).

use std::collections::HashMap;

use carafe_core::jobs::{Job, NewJob};
use carafe_core::mail::{Message, NewMail};
use carafe_core::{StoreError, StoreResult};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{MAIL_COLUMNS, MESSAGE_COLUMNS, attachments, message_from_row};
use crate::jobs::insert::insert_rows;
use crate::jobs::wakeup::Wakeups;
use crate::map_err;

/// Records `mails` in one transaction: all of them or, on any error, none. Returns each mail's
/// messages as stored, in the order given.
pub(super) async fn insert_mails(
    pool: &PgPool,
    mails: Vec<NewMail>,
) -> StoreResult<Vec<Vec<Message>>> {
    if mails.is_empty() {
        return Ok(Vec::new());
    }
    check(&mails)?;
    let mut tx = pool.begin().await.map_err(map_err)?;
    let stored = insert_in(&mut tx, &mails).await?;
    tx.commit().await.map_err(map_err)?;
    Ok(stored)
}

/// Fails unless every mail has one job per message; checked before anything is written.
pub(crate) fn check(mails: &[NewMail]) -> StoreResult<()> {
    if mails.iter().any(|m| m.messages.len() != m.jobs.len()) {
        return Err(StoreError::corrupt("insert_mails: one job per message"));
    }
    Ok(())
}

/// Records `mails` (already `check`ed) inside the caller's transaction, which commits it: the
/// mail rows, jobs, attachments and messages, and the queues' wake-up, sent on commit. Call it
/// as the transaction's last step, as the wake-up asks. Returns each mail's messages as stored.
pub(crate) async fn insert_in(
    tx: &mut PgConnection,
    mails: &[NewMail],
) -> StoreResult<Vec<Vec<Message>>> {
    if mails.is_empty() {
        return Ok(Vec::new());
    }
    // The mail rows go first: a mail id already stored fails the batch before anything else.
    insert_mail_rows(&mut *tx, mails).await?;
    let new_jobs: Vec<&NewJob> = mails.iter().flat_map(|m| &m.jobs).collect();
    let jobs = insert_rows(&mut *tx, &new_jobs, None).await?;
    if jobs.len() != new_jobs.len() {
        return Err(StoreError::corrupt("job insert returned too few rows"));
    }
    attachments::insert(&mut *tx, mails.iter().map(|m| &m.mail)).await?;
    let stored = insert_messages(&mut *tx, mails, &jobs).await?;
    let mut wake = Wakeups::default();
    for job in &jobs {
        wake.queue(&job.queue);
    }
    wake.send(&mut *tx).await?;
    Ok(stored)
}

/// Writes the `mail` rows of `mails` in one statement.
async fn insert_mail_rows(conn: &mut PgConnection, mails: &[NewMail]) -> StoreResult<()> {
    let sql = format!(
        "INSERT INTO mail ({MAIL_COLUMNS})
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::jsonb[],
                              $6::jsonb[], $7::jsonb[], $8::text[], $9::text[], $10::text[],
                              $11::jsonb[], $12::jsonb[], $13::jsonb[], $14::boolean[],
                              $15::text[], $16::timestamptz[], $17::timestamptz[],
                              $18::uuid[])"
    );
    let m = || mails.iter().map(|m| &m.mail);
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(m().map(|m| m.id.0).collect::<Vec<_>>())
        .bind(m().map(|m| m.message_id.as_str()).collect::<Vec<_>>())
        .bind(m().map(|m| m.from.as_str()).collect::<Vec<_>>())
        .bind(m().map(|m| m.reply_to.as_deref()).collect::<Vec<_>>())
        .bind(m().map(|m| Json(&m.to)).collect::<Vec<_>>())
        .bind(m().map(|m| Json(&m.cc)).collect::<Vec<_>>())
        .bind(m().map(|m| Json(&m.bcc)).collect::<Vec<_>>())
        .bind(m().map(|m| m.subject.as_str()).collect::<Vec<_>>())
        .bind(m().map(|m| m.text.as_deref()).collect::<Vec<_>>())
        .bind(m().map(|m| m.html.as_deref()).collect::<Vec<_>>())
        .bind(m().map(|m| Json(&m.headers)).collect::<Vec<_>>())
        .bind(m().map(|m| Json(&m.tags)).collect::<Vec<_>>())
        .bind(
            m().map(|m| m.template.as_ref().map(Json))
                .collect::<Vec<_>>(),
        )
        .bind(m().map(|m| m.unsubscribe).collect::<Vec<_>>())
        .bind(m().map(|m| m.actor.as_str()).collect::<Vec<_>>())
        .bind(m().map(|m| m.send_at).collect::<Vec<_>>())
        .bind(m().map(|m| m.created_at).collect::<Vec<_>>())
        .bind(m().map(|m| m.campaign.map(|c| c.0)).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    Ok(())
}

/// Writes the messages of `mails` (`jobs` holds their jobs, in the same order) with their
/// `queued` events in one statement. Positions follow each mail's order; a message takes its
/// mail's tags and creation time.
async fn insert_messages(
    conn: &mut PgConnection,
    mails: &[NewMail],
    jobs: &[Job],
) -> StoreResult<Vec<Vec<Message>>> {
    if jobs.is_empty() {
        return Ok(mails.iter().map(|_| Vec::new()).collect());
    }
    let n = jobs.len();
    let mut ids = Vec::with_capacity(n);
    let mut mail_ids = Vec::with_capacity(n);
    let mut positions = Vec::with_capacity(n);
    let mut recipients = Vec::with_capacity(n);
    let mut kinds = Vec::with_capacity(n);
    let mut tags = Vec::with_capacity(n);
    let mut created = Vec::with_capacity(n);
    let mut campaigns = Vec::with_capacity(n);
    for m in mails {
        for (position, message) in m.messages.iter().enumerate() {
            ids.push(message.id.0);
            mail_ids.push(m.mail.id.0);
            positions.push(
                i32::try_from(position)
                    .map_err(|_| StoreError::corrupt("insert_mails: too many messages"))?,
            );
            recipients.push(message.recipient.as_str());
            kinds.push(message.kind.as_str());
            tags.push(Json(&m.mail.tags));
            created.push(m.mail.created_at);
            campaigns.push(m.mail.campaign.map(|c| c.0));
        }
    }
    let sql = format!(
        "WITH ins AS (
             INSERT INTO mail_messages (id, mail_id, position, recipient, kind, status,
                                        attempts, tags, job_id, created_at, updated_at,
                                        event_seq, campaign_id)
             SELECT id, mail_id, position, recipient, kind, 'queued', 0, tags, job_id,
                    created_at, created_at, 1, campaign_id
             FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::text[], $5::text[],
                         $6::bigint[], $7::jsonb[], $8::timestamptz[], $9::uuid[])
                  AS n(id, mail_id, position, recipient, kind, job_id, tags, created_at,
                       campaign_id)
             RETURNING {MESSAGE_COLUMNS}),
         ev AS (
             INSERT INTO mail_events (message_id, seq, at, kind, data)
             SELECT id, 1, created_at, 'queued', jsonb_build_object() FROM ins)
         SELECT {MESSAGE_COLUMNS} FROM ins"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(ids)
        .bind(mail_ids)
        .bind(positions)
        .bind(recipients)
        .bind(kinds)
        .bind(jobs.iter().map(|j| j.id.0).collect::<Vec<_>>())
        .bind(tags)
        .bind(created)
        .bind(campaigns)
        .fetch_all(&mut *conn)
        .await
        .map_err(map_err)?;
    let mut stored = rows
        .iter()
        .map(|row| message_from_row(row).map(|m| (m.id.0, m)))
        .collect::<StoreResult<HashMap<Uuid, Message>>>()?;
    mails
        .iter()
        .map(|m| {
            m.messages
                .iter()
                .map(|new| {
                    stored
                        .remove(&new.id.0)
                        .ok_or_else(|| StoreError::corrupt("message insert returned too few rows"))
                })
                .collect()
        })
        .collect()
}
