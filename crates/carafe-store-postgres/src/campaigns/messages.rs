//! A campaign's messages as a whole: counted by status (with the unsubscribes its links
//! made), cancelled while still waiting, and failed ones put back in the queue with new jobs.
//! Apart from `campaigns.rs` because these act on `mail_messages` (through the campaign id
//! each message carries), not on the campaign's own rows.

use std::collections::HashSet;

use carafe_core::campaigns::{CampaignCounts, CampaignId};
use carafe_core::jobs::NewJob;
use carafe_core::mail::{MessageId, MessageStatus};
use carafe_core::{StoreError, StoreResult};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::jobs::insert::insert_rows;
use crate::jobs::wakeup::Wakeups;
use crate::mail::transition_count;
use crate::map_err;

/// The campaign's messages by status (in `MessageStatus::ALL` order, statuses with none left
/// out), and the unsubscribes whose source names one of them.
pub(super) async fn counts(pool: &PgPool, id: CampaignId) -> StoreResult<CampaignCounts> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM mail_messages WHERE campaign_id = $1 GROUP BY status",
    )
    .bind(id.0)
    .fetch_all(pool)
    .await
    .map_err(map_err)?;
    let mut by_status = rows
        .into_iter()
        .map(|(status, n)| {
            let status = MessageStatus::parse(&status)
                .ok_or_else(|| StoreError::corrupt("mail_messages.status"))?;
            Ok((status, n as u64))
        })
        .collect::<StoreResult<Vec<_>>>()?;
    by_status.sort_by_key(|(s, _)| MessageStatus::ALL.iter().position(|a| a == s));
    // Each suppression names at most one message, so this counts suppressions, once each.
    let unsubscribed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mail_suppressions
         WHERE reason = 'unsubscribe'
           AND source IN (SELECT 'message:' || id::text FROM mail_messages
                          WHERE campaign_id = $1)",
    )
    .bind(id.0)
    .fetch_one(pool)
    .await
    .map_err(map_err)?;
    Ok(CampaignCounts {
        by_status,
        unsubscribed: unsubscribed as u64,
    })
}

/// Cancels the campaign's `queued` and `deferred` messages, a `cancelled` event each, in one
/// statement (as `cancel_mail` does a mail's); their jobs find them cancelled and do nothing.
pub(super) async fn cancel(pool: &PgPool, id: CampaignId, now: OffsetDateTime) -> StoreResult<u64> {
    let sql = transition_count(
        "campaign_id = $1 AND status IN ('queued', 'deferred')",
        "status = 'cancelled', updated_at = $2",
        "$2",
        "'cancelled'",
        "jsonb_build_object()",
    );
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(id.0)
        .bind(now)
        .fetch_one(pool)
        .await
        .map_err(map_err)?;
    Ok(n as u64)
}

/// Puts the `failed` ones of `messages` back to `queued` with a `requeued` event each and a
/// new job (`jobs[i]` for `messages[i]`), in one transaction. The failed messages are locked
/// first (in id order, so two requeues cannot deadlock), which also keeps a message named
/// twice, or requeued by two callers at once, from getting two jobs: only those still failed
/// once the lock is held get one.
pub(super) async fn requeue(
    pool: &PgPool,
    messages: Vec<MessageId>,
    jobs: Vec<NewJob>,
    now: OffsetDateTime,
) -> StoreResult<u64> {
    if messages.len() != jobs.len() {
        return Err(StoreError::corrupt("requeue_messages: one job per message"));
    }
    if messages.is_empty() {
        return Ok(0);
    }
    let mut tx = pool.begin().await.map_err(map_err)?;
    let failed: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM mail_messages WHERE id = ANY($1) AND status = 'failed'
         ORDER BY id FOR UPDATE",
    )
    .bind(messages.iter().map(|m| m.0).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await
    .map_err(map_err)?;
    if failed.is_empty() {
        return Ok(0);
    }
    // Each failed message with its first job, in the order given.
    let mut pending: HashSet<Uuid> = failed.into_iter().collect();
    let (ids, new_jobs): (Vec<Uuid>, Vec<&NewJob>) = messages
        .iter()
        .zip(&jobs)
        .filter(|(m, _)| pending.remove(&m.0))
        .map(|(m, j)| (m.0, j))
        .unzip();
    let stored = insert_rows(&mut tx, &new_jobs, None).await?;
    if stored.len() != new_jobs.len() {
        return Err(StoreError::corrupt("job insert returned too few rows"));
    }
    let n: i64 = sqlx::query_scalar(
        "WITH changed AS (
             UPDATE mail_messages m
             SET status = 'queued', job_id = n.job_id, updated_at = $3,
                 event_seq = m.event_seq + 1
             FROM unnest($1::uuid[], $2::bigint[]) AS n(id, job_id)
             WHERE m.id = n.id AND m.status = 'failed'
             RETURNING m.id, m.event_seq),
         ev AS (
             INSERT INTO mail_events (message_id, seq, at, kind, data)
             SELECT id, event_seq, $3, 'requeued', jsonb_build_object() FROM changed)
         SELECT count(*) FROM changed",
    )
    .bind(ids)
    .bind(stored.iter().map(|j| j.id.0).collect::<Vec<_>>())
    .bind(now)
    .fetch_one(&mut *tx)
    .await
    .map_err(map_err)?;
    let mut wake = Wakeups::default();
    for job in &stored {
        wake.queue(&job.queue);
    }
    wake.send(&mut tx).await?;
    tx.commit().await.map_err(map_err)?;
    Ok(n as u64)
}
