//! `LeaseStore` on PostgreSQL: claiming (within the queue's limits and its rate group's), and
//! the fenced reports of the lease holder (heartbeat, progress, complete); failed attempts and
//! rescues are `FailureStore`, in `failures.rs`.
//!
//! Claims use `FOR UPDATE SKIP LOCKED`, so any number of servers claim from one queue without
//! waiting on each other or taking a job twice. Every fenced write matches
//! `state = 'running' AND lease_token = …`, so a rescued or cancelled job can never be finished
//! by the worker that lost it. A completed job advances its workflow in the same transaction;
//! the running workflows of the jobs completed are locked first (see `workflows.rs` for why
//! that order).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use carafe_core::jobs::{
    Advanced, Allowance, Claim, ClaimedJob, Completion, Fenced, Heartbeat, HeartbeatAck, Job,
    JobId, LeaseToken, QueueLimits, QueueName, RateGroupState, allowance,
};
use carafe_core::store::LeaseStore;
use carafe_core::{StoreError, StoreResult};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;

use super::rate_groups::{charge_group, group_allowance};
use super::rows::{J_COLUMNS, job_from_row, lost};
use super::wakeup::Wakeups;
use super::workflows::{advance_all, lock_workflows_of};
use crate::{PgStore, map_err};

/// What a claim charges once it knows how many jobs it took: the queue's rate bucket, if it
/// has a rate, and its rate group, if it is in one that exists.
#[derive(Default)]
struct Charges {
    bucket: Option<Allowance>,
    group: Option<RateGroupState>,
}

/// How many jobs a claim of `max` may take from `queue` now (`None`: it is paused), within
/// both its own limits and its rate group's, and what to charge afterwards (`Charges`). A
/// limited queue's row (and its group's) stays locked until the claiming transaction ends,
/// so instances claiming at once count each other's claims; queues without limits or a group
/// are not locked.
async fn allowance_in(
    conn: &mut PgConnection,
    queue: &QueueName,
    max: u32,
    now: OffsetDateTime,
) -> StoreResult<Option<(u32, Charges)>> {
    let limited: Option<(bool, bool)> = sqlx::query_as(
        "SELECT paused, concurrency_limit IS NOT NULL OR rate_per_second IS NOT NULL
             OR rate_group IS NOT NULL
         FROM queues WHERE name = $1",
    )
    .bind(queue.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_err)?;
    match limited {
        None | Some((false, false)) => return Ok(Some((max, Charges::default()))),
        Some((true, _)) => return Ok(None),
        Some((false, true)) => {}
    }
    let row = sqlx::query(
        "SELECT paused, concurrency_limit, rate_per_second, tokens, tokens_at, rate_group
         FROM queues WHERE name = $1 FOR UPDATE",
    )
    .bind(queue.as_str())
    .fetch_one(&mut *conn)
    .await
    .map_err(map_err)?;
    if row.try_get::<bool, _>("paused").map_err(map_err)? {
        return Ok(None);
    }
    let limits = QueueLimits {
        concurrency: row
            .try_get::<Option<i32>, _>("concurrency_limit")
            .map_err(map_err)?
            .map(|n| n as u32),
        rate_per_second: row.try_get("rate_per_second").map_err(map_err)?,
        lease: None,
    };
    let running: i64 = if limits.concurrency.is_some() {
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE queue = $1 AND state = 'running'")
            .bind(queue.as_str())
            .fetch_one(&mut *conn)
            .await
            .map_err(map_err)?
    } else {
        0
    };
    let tokens: f64 = row.try_get("tokens").map_err(map_err)?;
    let tokens_at: OffsetDateTime = row.try_get("tokens_at").map_err(map_err)?;
    let a = allowance(&limits, running as u64, tokens, tokens_at, max, now);
    let mut charges = Charges {
        bucket: limits.rate_per_second.map(|_| a),
        group: None,
    };
    let mut max = a.max;
    let group: Option<String> = row.try_get("rate_group").map_err(map_err)?;
    if let Some(group) = group
        && let Some((allowed, state)) = group_allowance(conn, &group, max, now).await?
    {
        max = allowed;
        charges.group = Some(state);
    }
    Ok(Some((max, charges)))
}

/// Takes `claimed` tokens out of the queue's rate bucket, and charges its rate group.
async fn spend_tokens(
    conn: &mut PgConnection,
    queue: &QueueName,
    charges: Charges,
    claimed: usize,
) -> StoreResult<()> {
    if let Some(bucket) = charges.bucket {
        sqlx::query("UPDATE queues SET tokens = $1, tokens_at = $2 WHERE name = $3")
            .bind(bucket.tokens - claimed as f64)
            .bind(bucket.tokens_at)
            .bind(queue.as_str())
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
    }
    if let Some(group) = charges.group {
        charge_group(conn, group, claimed).await?;
    }
    Ok(())
}

/// Extends the lease and records progress (with its event) for the lease holder.
async fn heartbeat_in(
    conn: &mut PgConnection,
    hb: &Heartbeat,
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
    .bind(hb.lease_token.as_str())
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
        lease_token: LeaseToken::from(row.try_get::<String, _>("lease_token").map_err(map_err)?),
        lease_expires_at,
        lease: (lease_expires_at - now).unsigned_abs(),
        checkpoint: row.try_get("checkpoint").map_err(map_err)?,
        timeout: Duration::from_millis(timeout_ms as u64),
        owner: row.try_get("owner").map_err(map_err)?,
        target: row.try_get("target").map_err(map_err)?,
        scheduled_at: row.try_get("scheduled_at").map_err(map_err)?,
    })
}

#[async_trait]
impl LeaseStore for PgStore {
    async fn claim_jobs(&self, c: Claim<'_>) -> StoreResult<Vec<ClaimedJob>> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let Some((max, charges)) = allowance_in(&mut tx, c.queue, c.max, c.now).await? else {
            return Ok(Vec::new());
        };
        if max == 0 {
            // Nothing to claim and nothing to charge: the buckets refill from what is stored.
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
        spend_tokens(&mut tx, c.queue, charges, claimed.len()).await?;
        let mut wake = Wakeups::default();
        claimed.iter().for_each(|j| wake.job(j.id));
        wake.send(&mut tx).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(claimed)
    }

    async fn push_queues(&self, now: OffsetDateTime) -> StoreResult<Vec<QueueName>> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT queue FROM jobs
             WHERE state IN ('available', 'scheduled', 'retryable') AND target IS NOT NULL
               AND scheduled_at <= $1",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        names
            .iter()
            .map(|n| QueueName::parse(n).map_err(|_| StoreError::corrupt("jobs.queue")))
            .collect()
    }

    async fn heartbeat_jobs(&self, hbs: &[Heartbeat]) -> StoreResult<Vec<Fenced<HeartbeatAck>>> {
        // A plain heartbeat alone is one statement; with progress it also appends an event and
        // notifies the job's watchers, and several share a transaction.
        if let [hb] = hbs
            && hb.progress.is_none()
        {
            let mut conn = self.pool.acquire().await.map_err(map_err)?;
            return Ok(vec![heartbeat_in(&mut conn, hb).await?]);
        }
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let mut wake = Wakeups::default();
        let mut answers = Vec::with_capacity(hbs.len());
        for hb in hbs {
            let answer = heartbeat_in(&mut tx, hb).await?;
            if answer.is_done() && hb.progress.is_some() {
                wake.job(hb.id);
            }
            answers.push(answer);
        }
        wake.send(&mut tx).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(answers)
    }

    async fn complete_jobs(
        &self,
        items: &[Completion],
        now: OffsetDateTime,
    ) -> StoreResult<Advanced<Vec<Fenced<Job>>>> {
        // A repeated item is sent once; its repeats are answered below as the one-by-one
        // order would (SQLite's): after a completion, the job no longer runs.
        let mut first: HashMap<(i64, &str, bool), usize> = HashMap::new();
        let mut sent = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            first
                .entry((item.id.0, item.lease_token.as_str(), item.outside))
                .or_insert_with(|| {
                    sent.push(i);
                    i
                });
        }
        if sent.is_empty() {
            return Ok(Advanced::alone(Vec::new()));
        }
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let ids: Vec<i64> = sent.iter().map(|&i| items[i].id.0).collect();
        let locked = lock_workflows_of(&mut tx, &ids).await?;
        // One statement completes every item whose lease holds (a job matches at most one
        // item: the one with its token) and that may reach its queue, returns the jobs as they
        // now are, writes their events, and classifies the others by the job as it was before
        // the UPDATE (its queue never changes): missing, reserved, or a lost lease.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH items AS (
                 SELECT * FROM unnest($1::int[], $2::bigint[], $3::text[], $4::jsonb[], $6::bool[])
                     AS i(n, id, token, result, outside)),
             done AS (
                 UPDATE jobs j SET state = 'completed', result = items.result, finalized_at = $5,
                     lease_token = NULL, lease_expires_at = NULL, event_seq = j.event_seq + 1
                 FROM items
                 WHERE j.id = items.id AND j.state = 'running' AND j.lease_token = items.token
                     AND NOT (items.outside AND starts_with(j.queue, $7))
                 RETURNING items.n, {J_COLUMNS}, j.event_seq, items.result AS r),
             ev AS (
                 INSERT INTO job_events (job_id, seq, at, kind, data)
                 SELECT id, event_seq, $5, 'state',
                     jsonb_build_object('state', 'completed', 'attempt', attempt, 'result', r)
                 FROM done)
             SELECT items.n AS item, o.queue AS found_queue, CASE
                 WHEN done.n IS NOT NULL THEN 'done'
                 WHEN o.queue IS NULL THEN 'missing'
                 WHEN items.outside AND starts_with(o.queue, $7) THEN 'reserved'
                 ELSE 'lost' END AS outcome, done.*
             FROM items LEFT JOIN done ON done.n = items.n
                 LEFT JOIN jobs o ON o.id = items.id AND done.n IS NULL"
        )))
        .bind(sent.iter().map(|&i| i as i32).collect::<Vec<_>>())
        .bind(&ids)
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
        .bind(sent.iter().map(|&i| items[i].outside).collect::<Vec<_>>())
        .bind(QueueName::RESERVED_PREFIX)
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
        let mut answers: Vec<Option<Fenced<Job>>> = vec![None; items.len()];
        let mut wake = Wakeups::default();
        let mut ended = BTreeSet::new();
        for row in &rows {
            let n = row.try_get::<i32, _>("item").map_err(map_err)? as usize;
            let outcome: String = row.try_get("outcome").map_err(map_err)?;
            answers[n] = Some(match outcome.as_str() {
                "done" => {
                    let job = job_from_row(row)?;
                    ended.extend(
                        job.workflow
                            .map(|(w, _)| w.0)
                            .filter(|w| locked.contains(w)),
                    );
                    wake.job(job.id);
                    Fenced::Done(job)
                }
                "reserved" => {
                    let queue: String = row.try_get("found_queue").map_err(map_err)?;
                    Fenced::Reserved(
                        QueueName::parse(&queue).map_err(|_| StoreError::corrupt("jobs.queue"))?,
                    )
                }
                "lost" => Fenced::LeaseLost,
                _ => Fenced::NotFound,
            });
        }
        let started = advance_all(&mut tx, &ended, now, &mut wake).await?;
        wake.send(&mut tx).await?;
        tx.commit().await.map_err(map_err)?;
        let outcome = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let k = first[&(item.id.0, item.lease_token.as_str(), item.outside)];
                match answers[k].clone() {
                    Some(Fenced::Done(_)) if k != i => Ok(Fenced::LeaseLost),
                    Some(answer) => Ok(answer),
                    None => Err(StoreError::corrupt("a completion got no answer")),
                }
            })
            .collect::<StoreResult<_>>()?;
        Ok(Advanced { outcome, started })
    }
}
