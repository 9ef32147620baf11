//! `QueueAdminStore` on PostgreSQL: operator actions and maintenance — cancel, retry, pruning,
//! queue figures, pausing and limits. Cancel and retry lock the job (`FOR UPDATE`) before
//! deciding, so they cannot race a worker's report or a rescue into an inconsistent state.

use std::time::Duration;

use async_trait::async_trait;
use carafe_core::jobs::{
    Advanced, Job, JobId, JobState, QueueCount, QueueLimits, QueueName, QueueStats,
};
use carafe_core::store::QueueAdminStore;
use carafe_core::{StoreError, StoreResult};
use serde_json::json;
use sqlx::Row;
use time::OffsetDateTime;

use super::cancel::cancel_in;
use super::rows::{change, get_in};
use super::wakeup::Wakeups;
use super::workflows::{advance_all, lock_workflows_of};
use crate::{PgStore, map_err};

/// A `queues` row: name, paused, concurrency limit, rate per second, lease in ms.
type SettingsRow = (String, bool, Option<i32>, Option<f64>, Option<i64>);

#[async_trait]
impl QueueAdminStore for PgStore {
    async fn cancel_job(
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

    async fn retry_job(&self, id: JobId, now: OffsetDateTime) -> StoreResult<Option<Job>> {
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

    async fn prune_jobs(
        &self,
        finished_before: OffsetDateTime,
        discarded_before: OffsetDateTime,
        batch: u32,
    ) -> StoreResult<u64> {
        // One statement: pick a bounded batch (skipping rows an operator is retrying right
        // now), then delete their events and the jobs. The extra bound on `finalized_at` lets
        // `jobs_finalized` narrow the scan before the per-state test. Workflow steps go with
        // their workflow (`prune_workflows`); only a step whose workflow is gone already
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

    async fn queue_stats(&self, now: OffsetDateTime) -> StoreResult<Vec<QueueStats>> {
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

    async fn set_queue_paused(&self, queue: &QueueName, paused: bool) -> StoreResult<()> {
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

    async fn set_queue_limits(&self, queue: &QueueName, limits: QueueLimits) -> StoreResult<()> {
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
}
