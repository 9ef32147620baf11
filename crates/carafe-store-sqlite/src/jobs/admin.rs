//! `QueueAdminStore` on SQLite: operator actions and maintenance — cancel, retry, pruning,
//! queue figures, pausing and limits.

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
use super::rows::{NewEvent, add_events, get_in};
use super::workflows::advance_all;
use crate::{SqliteStore, at, map_err, ms};

/// A `queues` row: name, paused, concurrency limit, rate per second, lease in ms.
type SettingsRow = (String, i64, Option<i64>, Option<f64>, Option<i64>);

#[async_trait]
impl QueueAdminStore for SqliteStore {
    async fn cancel_job(
        &self,
        id: JobId,
        now: OffsetDateTime,
    ) -> StoreResult<Advanced<Option<Job>>> {
        let mut tx = self.begin_write().await?;
        let job = cancel_in(&mut tx, id, now).await?;
        // A cancelled step moves its workflow on (advancing a finished one changes nothing).
        let workflow = job
            .as_ref()
            .filter(|j| j.state.is_final())
            .and_then(|j| j.workflow)
            .map(|(w, _)| w.0);
        let started = advance_all(&mut tx, workflow, now).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(Advanced {
            outcome: job,
            started,
        })
    }

    async fn retry_job(&self, id: JobId, now: OffsetDateTime) -> StoreResult<Option<Job>> {
        let mut tx = self.begin_write().await?;
        let Some(job) = get_in(&mut tx, id.0).await? else {
            return Ok(None);
        };
        // A running job is left alone; so is a workflow step waiting its turn.
        if matches!(job.state, JobState::Running | JobState::Pending) {
            return Ok(Some(job));
        }
        let seq: i64 = sqlx::query_scalar(
            "UPDATE jobs SET state = 'available', scheduled_at = ?, finalized_at = NULL,
                 cancel_requested = 0, max_attempts = MAX(max_attempts, attempt + 1),
                 event_seq = event_seq + 1
             WHERE id = ? RETURNING event_seq",
        )
        .bind(ms(now))
        .bind(id.0)
        .fetch_one(&mut *tx)
        .await
        .map_err(map_err)?;
        let data = json!({"state": JobState::Available, "attempt": job.attempt, "retried": true});
        add_events(
            &mut tx,
            now,
            &[NewEvent {
                job: id.0,
                seq,
                kind: "state",
                data,
            }],
        )
        .await?;
        let job = get_in(&mut tx, id.0).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(job)
    }

    async fn prune_jobs(
        &self,
        finished_before: OffsetDateTime,
        discarded_before: OffsetDateTime,
        batch: u32,
    ) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        // Workflow steps go with their workflow (`prune_workflows`); only a step whose
        // workflow is gone already is pruned here, like any other job.
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE finalized_at IS NOT NULL AND (
                 (state IN ('completed', 'cancelled') AND finalized_at < ?)
                 OR (state = 'discarded' AND finalized_at < ?))
               AND (workflow_id IS NULL OR NOT EXISTS (
                 SELECT 1 FROM workflows WHERE workflows.id = jobs.workflow_id))
             LIMIT ?",
        )
        .bind(ms(finished_before))
        .bind(ms(discarded_before))
        .bind(i64::from(batch))
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
        let list = serde_json::to_string(&ids).expect("serializes");
        for table in ["job_events WHERE job_id", "jobs WHERE id"] {
            let sql = format!("DELETE FROM {table} IN (SELECT value FROM json_each(?))");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&list)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(ids.len() as u64)
    }

    async fn queue_stats(&self, now: OffsetDateTime) -> StoreResult<Vec<QueueStats>> {
        let rows = sqlx::query(
            "SELECT queue,
                 CASE WHEN state IN ('scheduled', 'retryable') AND scheduled_at <= ?1
                      THEN 'available' ELSE state END AS effective,
                 COUNT(*) AS n,
                 MIN(CASE WHEN state IN ('available', 'scheduled', 'retryable') AND scheduled_at <= ?1
                          THEN scheduled_at END) AS oldest,
                 SUM(CASE WHEN state = 'completed' AND finalized_at >= ?2 THEN 1 ELSE 0 END) AS recent
             FROM jobs GROUP BY queue, effective",
        )
        .bind(ms(now))
        .bind(ms(now - std::time::Duration::from_secs(60)))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        let paused: Vec<SettingsRow> = sqlx::query_as(
            "SELECT name, paused, concurrency_limit, rate_per_second, lease_ms FROM queues",
        )
        .fetch_all(&self.reader)
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
                    oldest_available_at: row
                        .try_get::<Option<i64>, _>("oldest")
                        .map_err(map_err)?
                        .map(at),
                    completed_last_minute: row.try_get::<i64, _>("recent").map_err(map_err)? as u64,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let settings = paused
            .into_iter()
            .map(|(name, is_paused, concurrency, rate, lease)| {
                let limits = QueueLimits {
                    concurrency: concurrency.map(|n| n as u32),
                    rate_per_second: rate,
                    lease: lease.map(|ms| Duration::from_millis(ms as u64)),
                };
                (name, is_paused != 0, limits)
            })
            .collect();
        Ok(QueueStats::collect(counts, settings))
    }

    async fn set_queue_paused(&self, queue: &QueueName, paused: bool) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO queues (name, paused, updated_at) VALUES (?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at",
        )
        .bind(queue.as_str())
        .bind(i64::from(paused))
        .bind(ms(carafe_core::time::now()))
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn set_queue_limits(&self, queue: &QueueName, limits: QueueLimits) -> StoreResult<()> {
        // A new rate starts with a full bucket.
        let now = carafe_core::time::now();
        sqlx::query(
            "INSERT INTO queues (name, paused, updated_at, concurrency_limit, rate_per_second, tokens, tokens_at, lease_ms)
             VALUES (?1, 0, ?2, ?3, ?4, ?5, ?2, ?6)
             ON CONFLICT (name) DO UPDATE SET updated_at = excluded.updated_at,
                 concurrency_limit = excluded.concurrency_limit,
                 rate_per_second = excluded.rate_per_second,
                 tokens = excluded.tokens, tokens_at = excluded.tokens_at,
                 lease_ms = excluded.lease_ms",
        )
        .bind(queue.as_str())
        .bind(ms(now))
        .bind(limits.concurrency.map(i64::from))
        .bind(limits.rate_per_second)
        .bind(limits.rate_per_second.map_or(0.0, |r| r.max(1.0)))
        .bind(limits.lease.map(|l| l.as_millis() as i64))
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }
}
