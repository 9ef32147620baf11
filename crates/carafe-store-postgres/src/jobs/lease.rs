//! Leases on PostgreSQL: claiming, the fenced reports of the lease holder (heartbeat,
//! progress, complete, fail), and the rescue of jobs whose lease ran out.
//!
//! Claims use `FOR UPDATE SKIP LOCKED`, so any number of servers claim from one queue without
//! waiting on each other or taking a job twice. Every fenced write matches
//! `state = 'running' AND lease_token = …`; failures first lock the row under that test, so a
//! rescued or cancelled job can never be finished by the worker that lost it.

use std::collections::HashMap;
use std::time::Duration;

use carafe_core::jobs::{
    AttemptError, Backoff, Claim, ClaimedJob, Completion, Failure, FailureOutcome, Fenced,
    Heartbeat, HeartbeatAck, JobId, JobState, QueueName, RetryRequest, after_failure,
};
use carafe_core::{StoreError, StoreResult};
use rand::Rng;
use serde_json::{Value, json};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;

use super::rfc3339;
use super::wakeup::Wakeups;
use crate::{PgStore, map_err};

/// Whether job `id` exists, to tell a lost lease (409) from a missing job (404).
async fn lost<T>(conn: &mut PgConnection, id: JobId) -> StoreResult<Fenced<T>> {
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM jobs WHERE id = $1")
        .bind(id.0)
        .fetch_optional(conn)
        .await
        .map_err(map_err)?;
    Ok(if found.is_some() {
        Fenced::LeaseLost
    } else {
        Fenced::NotFound
    })
}

/// A running job, locked, whose attempt failed.
struct Failing {
    id: JobId,
    queue: QueueName,
    attempt: u32,
    max_attempts: u32,
    backoff: Option<Backoff>,
    cancel_requested: bool,
}

/// The columns `failing_from_row` reads.
const FAILING: &str = "id, queue, attempt, max_attempts, backoff, cancel_requested";

fn failing_from_row(row: &PgRow) -> StoreResult<Failing> {
    let queue: String = row.try_get("queue").map_err(map_err)?;
    let backoff: Option<Value> = row.try_get("backoff").map_err(map_err)?;
    Ok(Failing {
        id: JobId(row.try_get("id").map_err(map_err)?),
        queue: QueueName::parse(&queue).map_err(|_| StoreError::corrupt("jobs.queue"))?,
        attempt: row.try_get::<i32, _>("attempt").map_err(map_err)? as u32,
        max_attempts: row.try_get::<i32, _>("max_attempts").map_err(map_err)? as u32,
        backoff: backoff.and_then(|b| serde_json::from_value(b).ok()),
        cancel_requested: row.try_get("cancel_requested").map_err(map_err)?,
    })
}

/// Moves locked running jobs to the state their failed attempt leads to, each with its
/// error appended and a `state` event, in one statement; returns the outcomes in order.
async fn record_failures(
    conn: &mut PgConnection,
    failing: &[Failing],
    message: &str,
    retry: RetryRequest,
    now: OffsetDateTime,
    wake: &mut Wakeups,
) -> StoreResult<Vec<FailureOutcome>> {
    let mut outcomes = Vec::with_capacity(failing.len());
    let (mut states, mut retry_at, mut finalized, mut errors, mut data) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for f in failing {
        let unit: f64 = rand::rng().random();
        let o = after_failure(
            f.attempt,
            f.max_attempts,
            f.backoff.as_ref(),
            retry,
            f.cancel_requested,
            now,
            unit,
        );
        let error = AttemptError {
            at: now,
            attempt: f.attempt,
            message: message.to_owned(),
        };
        let mut event = json!({"state": o.state, "attempt": f.attempt, "error": message});
        if let Some(at) = o.retry_at {
            event["retry_at"] = json!(rfc3339(at));
        }
        states.push(o.state.as_str());
        retry_at.push(o.retry_at);
        finalized.push(o.state.is_final().then_some(now));
        errors.push(serde_json::to_value(error).map_err(StoreError::other)?);
        data.push(event);
        wake.job(f.id);
        if o.state == JobState::Retryable {
            wake.queue(&f.queue);
        }
        outcomes.push(o);
    }
    sqlx::query(
        "WITH f AS (
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::timestamptz[],
                                  $5::jsonb[], $6::jsonb[])
                 AS f(id, state, retry_at, finalized_at, error, data)),
         failed AS (
             UPDATE jobs j SET state = f.state, scheduled_at = COALESCE(f.retry_at, j.scheduled_at),
                 finalized_at = f.finalized_at, errors = j.errors || jsonb_build_array(f.error),
                 lease_token = NULL, lease_expires_at = NULL, event_seq = j.event_seq + 1
             FROM f WHERE j.id = f.id
             RETURNING j.id, j.event_seq, f.data)
         INSERT INTO job_events (job_id, seq, at, kind, data)
         SELECT id, event_seq, $7, 'state', data FROM failed",
    )
    .bind(failing.iter().map(|f| f.id.0).collect::<Vec<_>>())
    .bind(states)
    .bind(retry_at)
    .bind(finalized)
    .bind(errors)
    .bind(data)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    Ok(outcomes)
}

/// Extends the lease and records progress (with its event) for the lease holder.
async fn heartbeat_in(
    conn: &mut PgConnection,
    hb: &Heartbeat<'_>,
) -> StoreResult<Fenced<HeartbeatAck>> {
    let row = sqlx::query(
        "WITH hb AS (
             UPDATE jobs SET lease_expires_at = CASE WHEN $7 THEN $6 + COALESCE($1,
                     (SELECT lease_ms FROM queues WHERE name = jobs.queue), $8)
                     * interval '1 millisecond' ELSE lease_expires_at END,
                 progress = COALESCE($2, progress), checkpoint = COALESCE($3, checkpoint),
                 event_seq = event_seq + CASE WHEN $2 IS NULL THEN 0 ELSE 1 END
             WHERE id = $4 AND state = 'running' AND lease_token = $5
             RETURNING id, cancel_requested, lease_expires_at, event_seq),
         ev AS (
             INSERT INTO job_events (job_id, seq, at, kind, data)
             SELECT id, event_seq, $6, 'progress', jsonb_build_object('progress', $2::jsonb)
             FROM hb WHERE $2 IS NOT NULL)
         SELECT cancel_requested, lease_expires_at FROM hb",
    )
    .bind(hb.renew.and_then(|r| r.asked_ms()))
    .bind(hb.progress.as_ref().map(Json))
    .bind(hb.checkpoint.as_ref().map(Json))
    .bind(hb.id.0)
    .bind(hb.lease_token)
    .bind(hb.now)
    .bind(hb.renew.is_some())
    .bind(hb.renew.map(|r| r.default_ms()))
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_err)?;
    let Some(row) = row else {
        return lost(conn, hb.id).await;
    };
    Ok(Fenced::Done(HeartbeatAck {
        cancel_requested: row.try_get("cancel_requested").map_err(map_err)?,
        lease_expires_at: row.try_get("lease_expires_at").map_err(map_err)?,
    }))
}

fn claimed_from_row(
    row: &PgRow,
    queue: &QueueName,
    now: OffsetDateTime,
) -> StoreResult<ClaimedJob> {
    let timeout_ms: i64 = row.try_get("timeout_ms").map_err(map_err)?;
    let lease_expires_at: OffsetDateTime = row.try_get("lease_expires_at").map_err(map_err)?;
    Ok(ClaimedJob {
        id: JobId(row.try_get("id").map_err(map_err)?),
        queue: queue.clone(),
        args: row.try_get("args").map_err(map_err)?,
        attempt: row.try_get::<i32, _>("attempt").map_err(map_err)? as u32,
        max_attempts: row.try_get::<i32, _>("max_attempts").map_err(map_err)? as u32,
        lease_token: row.try_get("lease_token").map_err(map_err)?,
        lease_expires_at,
        lease: (lease_expires_at - now).unsigned_abs(),
        checkpoint: row.try_get("checkpoint").map_err(map_err)?,
        timeout: Duration::from_millis(timeout_ms as u64),
        owner: row.try_get("owner").map_err(map_err)?,
        target: row.try_get("target").map_err(map_err)?,
        scheduled_at: row.try_get("scheduled_at").map_err(map_err)?,
    })
}

impl PgStore {
    pub(crate) async fn claim_jobs_impl(&self, c: Claim<'_>) -> StoreResult<Vec<ClaimedJob>> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let Some((max, bucket)) =
            super::admin::allowance_in(&mut tx, c.queue, c.max, c.now).await?
        else {
            return Ok(Vec::new());
        };
        if max == 0 {
            return Ok(Vec::new());
        }
        // `picked` is materialized so the locked set is chosen exactly once, and handed to the
        // UPDATE as an array so the planner looks the rows up by primary key (a join with the
        // CTE, whose size it cannot estimate, gets a hash join over the whole table). The lease
        // token is 32 lowercase hex digits (a v4 UUID without dashes); the lease runs from the
        // caller's `now` for the requested length, else the queue's, else the default.
        // Pull and push claims get separate statements so each matches its partial index.
        let delivery = if c.push {
            "target IS NOT NULL"
        } else {
            "target IS NULL"
        };
        let sql = format!(
            "WITH picked AS MATERIALIZED (
                 SELECT id FROM jobs
                 WHERE queue = $4 AND state IN ('available', 'scheduled', 'retryable')
                   AND {delivery} AND scheduled_at <= $1
                 ORDER BY priority, scheduled_at, id
                 LIMIT $5
                 FOR UPDATE SKIP LOCKED),
             claimed AS (
                 UPDATE jobs j SET state = 'running', attempt = j.attempt + 1, attempted_at = $1,
                     attempted_by = $2, lease_token = replace(gen_random_uuid()::text, '-', ''),
                     lease_expires_at = $1 + COALESCE($3,
                         (SELECT lease_ms FROM queues WHERE name = $4), $6)
                         * interval '1 millisecond',
                     event_seq = j.event_seq + 1
                 WHERE j.id = ANY (ARRAY(SELECT id FROM picked))
                 RETURNING j.id, j.args, j.attempt, j.max_attempts, j.lease_token,
                     j.lease_expires_at, j.checkpoint, j.timeout_ms, j.owner, j.target, j.scheduled_at,
                     j.event_seq),
             ev AS (
                 INSERT INTO job_events (job_id, seq, at, kind, data)
                 SELECT id, event_seq, $1, 'state',
                     jsonb_build_object('state', 'running', 'attempt', attempt, 'worker', $2::text)
                 FROM claimed)
             SELECT * FROM claimed ORDER BY id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(c.now)
            .bind(c.worker)
            .bind(c.lease.asked_ms())
            .bind(c.queue.as_str())
            .bind(i64::from(max))
            .bind(c.lease.default_ms())
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
        let claimed = rows
            .iter()
            .map(|row| claimed_from_row(row, c.queue, c.now))
            .collect::<StoreResult<Vec<_>>>()?;
        if let Some(bucket) = bucket {
            super::admin::spend_tokens(&mut tx, c.queue, bucket, claimed.len()).await?;
        }
        let mut wake = Wakeups::default();
        claimed.iter().for_each(|j| wake.job(j.id));
        wake.send(&mut tx).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(claimed)
    }

    pub(crate) async fn heartbeat_job_impl(
        &self,
        hb: Heartbeat<'_>,
    ) -> StoreResult<Fenced<HeartbeatAck>> {
        // A plain heartbeat is one statement; one with progress also appends an event and
        // notifies the job's watchers, which needs a transaction around the two.
        if hb.progress.is_none() {
            let mut conn = self.pool.acquire().await.map_err(map_err)?;
            return heartbeat_in(&mut conn, &hb).await;
        }
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let answer = heartbeat_in(&mut tx, &hb).await?;
        if let Fenced::Done(_) = answer {
            let mut wake = Wakeups::default();
            wake.job(hb.id);
            wake.send(&mut tx).await?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(answer)
    }

    pub(crate) async fn complete_jobs_impl(
        &self,
        items: &[Completion],
        now: OffsetDateTime,
    ) -> StoreResult<Vec<Fenced<()>>> {
        // A repeated (id, token) pair is sent once; its repeats are answered below as the
        // one-by-one order would (SQLite's): after a completion, the job no longer runs.
        let mut first: HashMap<(i64, &str), usize> = HashMap::new();
        let mut sent = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            first
                .entry((item.id.0, item.lease_token.as_str()))
                .or_insert_with(|| {
                    sent.push(i);
                    i
                });
        }
        if sent.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        // One statement completes every item whose lease holds (a job matches at most one
        // item: the one with its token), writes their events, and classifies the others. The
        // final SELECT sees `jobs` as it was before the UPDATE, which is enough to tell a lost
        // lease (the job exists) from a missing job.
        let rows = sqlx::query(
            "WITH items AS (
                 SELECT * FROM unnest($1::int[], $2::bigint[], $3::text[], $4::jsonb[])
                     AS i(n, id, token, result)),
             done AS (
                 UPDATE jobs j SET state = 'completed', result = items.result, finalized_at = $5,
                     lease_token = NULL, lease_expires_at = NULL, event_seq = j.event_seq + 1
                 FROM items
                 WHERE j.id = items.id AND j.state = 'running' AND j.lease_token = items.token
                 RETURNING items.n, j.id, j.attempt, j.event_seq, items.result),
             ev AS (
                 INSERT INTO job_events (job_id, seq, at, kind, data)
                 SELECT id, event_seq, $5, 'state',
                     jsonb_build_object('state', 'completed', 'attempt', attempt, 'result', result)
                 FROM done)
             SELECT items.n, CASE
                 WHEN done.n IS NOT NULL THEN 'done'
                 WHEN EXISTS (SELECT 1 FROM jobs WHERE jobs.id = items.id) THEN 'lost'
                 ELSE 'missing' END AS outcome
             FROM items LEFT JOIN done ON done.n = items.n",
        )
        .bind(sent.iter().map(|&i| i as i32).collect::<Vec<_>>())
        .bind(sent.iter().map(|&i| items[i].id.0).collect::<Vec<_>>())
        .bind(
            sent.iter()
                .map(|&i| items[i].lease_token.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            sent.iter()
                .map(|&i| Json(&items[i].result))
                .collect::<Vec<_>>(),
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
        let mut answers: Vec<Option<Fenced<()>>> = vec![None; items.len()];
        let mut wake = Wakeups::default();
        for row in &rows {
            let n: i32 = row.try_get("n").map_err(map_err)?;
            let outcome: String = row.try_get("outcome").map_err(map_err)?;
            let n = n as usize;
            answers[n] = Some(match outcome.as_str() {
                "done" => {
                    wake.job(items[n].id);
                    Fenced::Done(())
                }
                "lost" => Fenced::LeaseLost,
                _ => Fenced::NotFound,
            });
        }
        wake.send(&mut tx).await?;
        tx.commit().await.map_err(map_err)?;
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let k = first[&(item.id.0, item.lease_token.as_str())];
                match answers[k].clone() {
                    Some(Fenced::Done(())) if k != i => Ok(Fenced::LeaseLost),
                    Some(answer) => Ok(answer),
                    None => Err(StoreError::corrupt("a completion got no answer")),
                }
            })
            .collect()
    }

    pub(crate) async fn fail_job_impl(
        &self,
        f: Failure<'_>,
    ) -> StoreResult<Fenced<FailureOutcome>> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let sql = format!(
            "SELECT {FAILING} FROM jobs WHERE id = $1 AND state = 'running' AND lease_token = $2
             FOR UPDATE"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(f.id.0)
            .bind(f.lease_token)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        let Some(row) = row else {
            return lost(&mut tx, f.id).await;
        };
        let failing = [failing_from_row(&row)?];
        let mut wake = Wakeups::default();
        let outcome =
            record_failures(&mut tx, &failing, &f.message, f.retry, f.now, &mut wake).await?;
        wake.send(&mut tx).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(Fenced::Done(outcome[0]))
    }

    pub(crate) async fn rescue_expired_jobs_impl(
        &self,
        now: OffsetDateTime,
        batch: u32,
    ) -> StoreResult<Vec<JobId>> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        // SKIP LOCKED: a job whose worker is reporting right now is left to that report (and
        // to the next rescue, if the report does not end it); two rescuers split the work.
        let sql = format!(
            "SELECT {FAILING} FROM jobs WHERE state = 'running' AND lease_expires_at <= $1
             ORDER BY lease_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(i64::from(batch))
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
        let failing = rows
            .iter()
            .map(failing_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        if failing.is_empty() {
            return Ok(Vec::new());
        }
        let message = "the worker's lease expired before it finished (worker lost or too slow)";
        let mut wake = Wakeups::default();
        record_failures(
            &mut tx,
            &failing,
            message,
            RetryRequest::Default,
            now,
            &mut wake,
        )
        .await?;
        wake.send(&mut tx).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(failing.iter().map(|f| f.id).collect())
    }
}
