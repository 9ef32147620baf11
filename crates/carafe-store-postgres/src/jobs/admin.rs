//! Operator actions and maintenance on PostgreSQL: cancel, retry, pruning, queue figures and
//! pausing, and leader leases. Cancel and retry lock the job (`FOR UPDATE`) before deciding,
//! so they cannot race a worker's report or a rescue into an inconsistent state.

use carafe_core::jobs::{
    Advanced, Allowance, Job, JobId, JobState, QueueCount, QueueLimits, QueueName, QueueStats,
    allowance,
};
use carafe_core::{StoreError, StoreResult};
use serde_json::{Value, json};
use sqlx::types::Json;
use std::time::Duration;

use sqlx::{PgConnection, Row};
use time::OffsetDateTime;

use super::wakeup::Wakeups;
use super::workflows::{advance_all, lock_workflows_of};
use super::{JOB_COLUMNS, get_in, job_from_row};
use crate::{PgStore, map_err};

/// A `queues` row: name, paused, concurrency limit, rate per second, lease in ms.
type SettingsRow = (String, bool, Option<i32>, Option<f64>, Option<i64>);

/// How many jobs a claim of `max` may take from `queue` now (`None`: it is paused), and the
/// rate bucket to charge afterwards, if the queue has a rate. A limited queue's row stays
/// locked until the claiming transaction ends, so instances claiming at once count each
/// other's claims; queues without limits are not locked.
pub(crate) async fn allowance_in(
    conn: &mut PgConnection,
    queue: &QueueName,
    max: u32,
    now: OffsetDateTime,
) -> StoreResult<Option<(u32, Option<Allowance>)>> {
    let limited: Option<(bool, bool)> = sqlx::query_as(
        "SELECT paused, concurrency_limit IS NOT NULL OR rate_per_second IS NOT NULL
         FROM queues WHERE name = $1",
    )
    .bind(queue.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_err)?;
    match limited {
        None | Some((false, false)) => return Ok(Some((max, None))),
        Some((true, _)) => return Ok(None),
        Some((false, true)) => {}
    }
    let row = sqlx::query(
        "SELECT paused, concurrency_limit, rate_per_second, tokens, tokens_at
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
    Ok(Some((a.max, limits.rate_per_second.map(|_| a))))
}

/// Takes `claimed` tokens out of the queue's rate bucket.
pub(crate) async fn spend_tokens(
    conn: &mut PgConnection,
    queue: &QueueName,
    bucket: Allowance,
    claimed: usize,
) -> StoreResult<()> {
    sqlx::query("UPDATE queues SET tokens = $1, tokens_at = $2 WHERE name = $3")
        .bind(bucket.tokens - claimed as f64)
        .bind(bucket.tokens_at)
        .bind(queue.as_str())
        .execute(conn)
        .await
        .map_err(map_err)?;
    Ok(())
}

/// Runs `set` (an `UPDATE jobs SET … WHERE id = $1`, which may use `$2` for `now`) with its
/// `state` event, and returns the changed job.
async fn change(
    conn: &mut PgConnection,
    id: JobId,
    now: OffsetDateTime,
    set: &str,
    data: Value,
) -> StoreResult<Job> {
    let sql = format!(
        "WITH c AS ({set}, event_seq = event_seq + 1 WHERE id = $1
                   RETURNING {JOB_COLUMNS}, event_seq),
         ev AS (
             INSERT INTO job_events (job_id, seq, at, kind, data)
             SELECT id, event_seq, $2, 'state', $3 FROM c)
         SELECT * FROM c"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.0)
        .bind(now)
        .bind(Json(data))
        .fetch_one(&mut *conn)
        .await
        .map_err(map_err)?;
    job_from_row(&row)
}

/// Cancels a waiting (or pending) job at once, or asks a running one to stop; final jobs are
/// left alone. Returns the job as it is now (locked until the transaction ends).
pub(crate) async fn cancel_in(
    conn: &mut PgConnection,
    id: JobId,
    now: OffsetDateTime,
    wake: &mut Wakeups,
) -> StoreResult<Option<Job>> {
    let Some(job) = get_in(&mut *conn, id, true).await? else {
        return Ok(None);
    };
    let (set, data) = match job.state {
        JobState::Pending | JobState::Scheduled | JobState::Available | JobState::Retryable => (
            "UPDATE jobs SET state = 'cancelled', finalized_at = $2",
            json!({"state": JobState::Cancelled, "attempt": job.attempt}),
        ),
        JobState::Running if !job.cancel_requested => (
            "UPDATE jobs SET cancel_requested = true",
            json!({
                "state": JobState::Running,
                "attempt": job.attempt,
                "cancel_requested": true,
            }),
        ),
        // Final, or already asked to stop: nothing changes.
        _ => return Ok(Some(job)),
    };
    let job = change(conn, id, now, set, data).await?;
    wake.job(id);
    wake.queue(&job.queue);
    Ok(Some(job))
}

impl PgStore {
    pub(crate) async fn cancel_job_impl(
        &self,
        id: JobId,
        now: OffsetDateTime,
    ) -> StoreResult<Advanced<Option<Job>>> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        // The job's running workflow is locked before the job (see `workflows.rs`); a step
        // cancelled here moves it on.
        let mut locked = lock_workflows_of(&mut tx, &[id.0]).await?;
        let mut wake = Wakeups::default();
        let job = cancel_in(&mut tx, id, now, &mut wake).await?;
        if !job.as_ref().is_some_and(|j| j.state.is_final()) {
            locked.clear();
        }
        let started = advance_all(&mut tx, &locked, now, &mut wake).await?;
        wake.send(&mut tx).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(Advanced {
            outcome: job,
            started,
        })
    }

    pub(crate) async fn retry_job_impl(
        &self,
        id: JobId,
        now: OffsetDateTime,
    ) -> StoreResult<Option<Job>> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let Some(job) = get_in(&mut tx, id, true).await? else {
            return Ok(None);
        };
        // A running job is left alone; so is a workflow step waiting its turn.
        if matches!(job.state, JobState::Running | JobState::Pending) {
            return Ok(Some(job));
        }
        let set = "UPDATE jobs SET state = 'available', scheduled_at = $2, finalized_at = NULL,
                       cancel_requested = false,
                       max_attempts = GREATEST(max_attempts, attempt + 1)";
        let data = json!({"state": JobState::Available, "attempt": job.attempt, "retried": true});
        let job = change(&mut tx, id, now, set, data).await?;
        let mut wake = Wakeups::default();
        wake.job(id);
        wake.queue(&job.queue);
        wake.send(&mut tx).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(Some(job))
    }

    pub(crate) async fn prune_jobs_impl(
        &self,
        finished_before: OffsetDateTime,
        discarded_before: OffsetDateTime,
        batch: u32,
    ) -> StoreResult<u64> {
        // One statement: pick a bounded batch (skipping rows an operator is retrying right
        // now), then delete their events and the jobs. The extra bound on `finalized_at` lets
        // `jobs_finalized` narrow the scan before the per-state test. Workflow steps go with
        // their workflow (`prune_workflows_impl`); only a step whose workflow is gone already
        // is pruned here, like any other job.
        let pruned: i64 = sqlx::query_scalar(
            "WITH doomed AS MATERIALIZED (
                 SELECT id FROM jobs
                 WHERE finalized_at < GREATEST($1, $2)
                   AND ((state IN ('completed', 'cancelled') AND finalized_at < $1)
                        OR (state = 'discarded' AND finalized_at < $2))
                   AND (workflow_id IS NULL OR NOT EXISTS (
                     SELECT 1 FROM workflows w WHERE w.id = jobs.workflow_id))
                 LIMIT $3
                 FOR UPDATE SKIP LOCKED),
             events AS (DELETE FROM job_events WHERE job_id IN (SELECT id FROM doomed)),
             gone AS (DELETE FROM jobs WHERE id IN (SELECT id FROM doomed) RETURNING id)
             SELECT count(*) FROM gone",
        )
        .bind(finished_before)
        .bind(discarded_before)
        .bind(i64::from(batch))
        .fetch_one(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(pruned as u64)
    }

    pub(crate) async fn queue_stats_impl(
        &self,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<QueueStats>> {
        // Counts per queue and *effective* state; queues that only have settings (a paused
        // queue with no jobs) come from the second query.
        let rows = sqlx::query(
            "SELECT queue,
                 CASE WHEN state IN ('scheduled', 'retryable') AND scheduled_at <= $1
                      THEN 'available' ELSE state END AS effective,
                 count(*) AS n,
                 min(scheduled_at) FILTER (
                     WHERE state IN ('available', 'scheduled', 'retryable') AND scheduled_at <= $1)
                     AS oldest,
                 count(*) FILTER (WHERE state = 'completed' AND finalized_at >= $2) AS recent
             FROM jobs GROUP BY 1, 2",
        )
        .bind(now)
        .bind(now - std::time::Duration::from_secs(60))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        let settings: Vec<SettingsRow> = sqlx::query_as(
            "SELECT name, paused, concurrency_limit, rate_per_second, lease_ms FROM queues",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        let counts = rows
            .iter()
            .map(|row| {
                let state: String = row.try_get("effective").map_err(map_err)?;
                Ok(QueueCount {
                    queue: row.try_get("queue").map_err(map_err)?,
                    state: state.parse().map_err(StoreError::corrupt)?,
                    jobs: row.try_get::<i64, _>("n").map_err(map_err)? as u64,
                    oldest_available_at: row.try_get("oldest").map_err(map_err)?,
                    completed_last_minute: row.try_get::<i64, _>("recent").map_err(map_err)? as u64,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let settings = settings
            .into_iter()
            .map(|(name, paused, concurrency, rate, lease)| {
                let limits = QueueLimits {
                    concurrency: concurrency.map(|n| n as u32),
                    rate_per_second: rate,
                    lease: lease.map(|ms| Duration::from_millis(ms as u64)),
                };
                (name, paused, limits)
            })
            .collect();
        Ok(QueueStats::collect(counts, settings))
    }

    pub(crate) async fn set_queue_paused_impl(
        &self,
        queue: &QueueName,
        paused: bool,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO queues (name, paused, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE
                 SET paused = excluded.paused, updated_at = excluded.updated_at",
        )
        .bind(queue.as_str())
        .bind(paused)
        .bind(carafe_core::time::now())
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    pub(crate) async fn set_queue_limits_impl(
        &self,
        queue: &QueueName,
        limits: QueueLimits,
    ) -> StoreResult<()> {
        // A new rate starts with a full bucket.
        let now = carafe_core::time::now();
        sqlx::query(
            "INSERT INTO queues (name, paused, updated_at, concurrency_limit, rate_per_second,
                 tokens, tokens_at, lease_ms)
             VALUES ($1, false, $2, $3, $4, $5, $2, $6)
             ON CONFLICT (name) DO UPDATE SET updated_at = excluded.updated_at,
                 concurrency_limit = excluded.concurrency_limit,
                 rate_per_second = excluded.rate_per_second,
                 tokens = excluded.tokens, tokens_at = excluded.tokens_at,
                 lease_ms = excluded.lease_ms",
        )
        .bind(queue.as_str())
        .bind(now)
        .bind(limits.concurrency.map(|n| n as i32))
        .bind(limits.rate_per_second)
        .bind(limits.rate_per_second.map_or(0.0, |r| r.max(1.0)))
        .bind(limits.lease.map(|l| l.as_millis() as i64))
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    pub(crate) async fn try_lead_impl(
        &self,
        name: &str,
        holder: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        // Takes a free or expired lease, or renews our own; otherwise the upsert changes
        // nothing. ON CONFLICT makes this atomic between servers racing for the same name.
        let done = sqlx::query(
            "INSERT INTO leaders (name, holder, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE
                 SET holder = excluded.holder, expires_at = excluded.expires_at
             WHERE leaders.holder = excluded.holder OR leaders.expires_at <= $4",
        )
        .bind(name)
        .bind(holder)
        .bind(until)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn resign_impl(&self, name: &str, holder: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM leaders WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}
