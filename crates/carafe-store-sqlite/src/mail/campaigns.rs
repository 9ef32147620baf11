//! A campaign's messages on SQLite, for `CampaignStore` (`crate::campaigns`): storing a batch
//! of its mail in the caller's transaction, counting its messages, cancelling the waiting ones
//! and sending failed ones again. Every change is a set-based `UPDATE` guarded by the state it
//! may change from, with a timeline entry per message changed, as in `sending.rs`; messages are
//! found by their `campaign_id` (indexed), copied from the mail when it was stored.

use std::collections::HashSet;

use carafe_core::campaigns::{CampaignCounts, CampaignId};
use carafe_core::jobs::NewJob;
use carafe_core::mail::{MessageId, MessageStatus, NewMail};
use carafe_core::{StoreError, StoreResult};
use serde_json::json;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use time::OffsetDateTime;

use super::sending::{NewEvent, add_events};
use super::{WAITING, insert};
use crate::jobs::insert::insert_plain;
use crate::{map_err, ms};

/// Fails (before anything is written) unless every mail has one job per message.
pub(crate) fn check(mails: &[NewMail]) -> StoreResult<()> {
    insert::check(mails)
}

/// Stores `mails` (checked with [`check`]) exactly as `MailStore::insert_mails` does, in the
/// caller's transaction.
pub(crate) async fn insert(conn: &mut SqliteConnection, mails: Vec<NewMail>) -> StoreResult<()> {
    if !mails.is_empty() {
        insert::mails(conn, mails).await?;
    }
    Ok(())
}

/// The campaign's messages by status, and the unsubscribes made through their links. Both
/// counts are read in one transaction, so they describe the same moment.
pub(crate) async fn counts(
    conn: &mut SqliteConnection,
    id: CampaignId,
) -> StoreResult<CampaignCounts> {
    let id = id.to_string();
    let rows = sqlx::query(
        "SELECT status, count(*) AS n FROM mail_messages WHERE campaign_id = ? \
         GROUP BY status ORDER BY status",
    )
    .bind(&id)
    .fetch_all(&mut *conn)
    .await
    .map_err(map_err)?;
    let by_status = rows
        .iter()
        .map(|row| {
            let status: String = row.try_get("status").map_err(map_err)?;
            let status = MessageStatus::parse(&status)
                .ok_or_else(|| StoreError::corrupt("mail_messages.status"))?;
            let n: i64 = row.try_get("n").map_err(map_err)?;
            Ok((status, n as u64))
        })
        .collect::<StoreResult<Vec<_>>>()?;
    // Walks the campaign's messages (an index of ids) and looks each link's suppression up by
    // its source (a partial index of the unsubscribes).
    let unsubscribed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mail_messages m WHERE m.campaign_id = ? AND EXISTS \
         (SELECT 1 FROM mail_suppressions s \
          WHERE s.reason = 'unsubscribe' AND s.source = 'message:' || m.id)",
    )
    .bind(&id)
    .fetch_one(&mut *conn)
    .await
    .map_err(map_err)?;
    Ok(CampaignCounts {
        by_status,
        unsubscribed: unsubscribed as u64,
    })
}

/// Cancels the campaign's waiting messages, each with a `cancelled` event; answers how many.
pub(crate) async fn cancel(
    conn: &mut SqliteConnection,
    id: CampaignId,
    now: OffsetDateTime,
) -> StoreResult<u64> {
    let sql = format!(
        "UPDATE mail_messages SET status = 'cancelled', updated_at = ?, \
         event_seq = event_seq + 1 WHERE campaign_id = ? AND {WAITING} \
         RETURNING id, event_seq"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(ms(now))
        .bind(id.to_string())
        .fetch_all(&mut *conn)
        .await
        .map_err(map_err)?;
    let events = rows
        .iter()
        .map(|row| {
            Ok(NewEvent {
                message: message_id(row.try_get("id").map_err(map_err)?)?,
                seq: row.try_get("event_seq").map_err(map_err)?,
                at: now,
                kind: "cancelled",
                data: json!({}),
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    add_events(conn, &events).await?;
    Ok(events.len() as u64)
}

/// How many messages one round of [`requeue`] handles: two parameters each in the statement
/// that moves them, far below SQLite's 32,766 limit.
const REQUEUE_CHUNK: usize = 500;

/// Puts the `failed` ones of `messages` back to `queued`, each with its new job
/// (`jobs[i]` sends `messages[i]`) and a `requeued` event; answers how many. The jobs of the
/// other messages are not stored.
pub(crate) async fn requeue(
    conn: &mut SqliteConnection,
    messages: Vec<MessageId>,
    jobs: Vec<NewJob>,
    now: OffsetDateTime,
) -> StoreResult<u64> {
    if messages.len() != jobs.len() {
        return Err(StoreError::corrupt(
            "requeue_messages needs one job per message",
        ));
    }
    let mut pairs = messages.into_iter().zip(jobs).peekable();
    let mut requeued = 0;
    while pairs.peek().is_some() {
        let chunk: Vec<(MessageId, NewJob)> = pairs.by_ref().take(REQUEUE_CHUNK).collect();
        requeued += requeue_chunk(conn, chunk, now).await?;
    }
    Ok(requeued)
}

async fn requeue_chunk(
    conn: &mut SqliteConnection,
    chunk: Vec<(MessageId, NewJob)>,
    now: OffsetDateTime,
) -> StoreResult<u64> {
    // Which are failed: read first so only their jobs are stored. Nothing changes them before
    // the update below, the caller's write transaction holding SQLite's write lock.
    let mut q = QueryBuilder::<Sqlite>::new(
        "SELECT id FROM mail_messages WHERE status = 'failed' AND id IN (",
    );
    let mut ids = q.separated(", ");
    for (id, _) in &chunk {
        ids.push_bind(id.to_string());
    }
    q.push(")");
    let mut failed: HashSet<String> = q
        .build_query_scalar::<String>()
        .fetch_all(&mut *conn)
        .await
        .map_err(map_err)?
        .into_iter()
        .collect();
    // A message named twice is requeued once, with the first of its jobs.
    let (messages, jobs): (Vec<String>, Vec<NewJob>) = chunk
        .into_iter()
        .map(|(id, job)| (id.to_string(), job))
        .filter(|(id, _)| failed.remove(id))
        .unzip();
    if messages.is_empty() {
        return Ok(0);
    }
    let jobs = insert_plain(conn, jobs, None).await?;
    let pairs: Vec<(String, i64)> = messages
        .into_iter()
        .zip(jobs.iter().map(|j| j.id.0))
        .collect();
    let mut q = QueryBuilder::<Sqlite>::new("WITH v (id, job) AS (");
    q.push_values(&pairs, |mut b, (id, job)| {
        b.push_bind(id.as_str()).push_bind(*job);
    });
    q.push(") UPDATE mail_messages SET status = 'queued', job_id = v.job, updated_at = ")
        .push_bind(ms(now))
        .push(
            ", event_seq = event_seq + 1 FROM v \
             WHERE mail_messages.id = v.id AND mail_messages.status = 'failed' \
             RETURNING id, event_seq, job_id",
        );
    let rows = q.build().fetch_all(&mut *conn).await.map_err(map_err)?;
    if rows.len() != pairs.len() {
        return Err(StoreError::corrupt(
            "requeue changed another set of messages",
        ));
    }
    let events = rows
        .iter()
        .map(|row| {
            let job: i64 = row.try_get("job_id").map_err(map_err)?;
            Ok(NewEvent {
                message: message_id(row.try_get("id").map_err(map_err)?)?,
                seq: row.try_get("event_seq").map_err(map_err)?,
                at: now,
                kind: "requeued",
                data: json!({"job": job}),
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    add_events(conn, &events).await?;
    Ok(events.len() as u64)
}

fn message_id(text: String) -> StoreResult<MessageId> {
    text.parse()
        .map_err(|_| StoreError::corrupt("mail_messages.id"))
}
