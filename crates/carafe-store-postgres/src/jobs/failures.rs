//! `FailureStore` on PostgreSQL: a worker's report of a failure (`fail`) and the rescue of
//! running jobs whose lease ran out. Both move locked running jobs to the state the attempt
//! leads to, with one statement for any number of jobs; one that ends a job (discarded or
//! cancelled) advances its workflow in the same transaction, the workflow having been locked
//! before the job (see `workflows.rs` for why that order).

use std::collections::BTreeSet;

use async_trait::async_trait;
use carafe_core::jobs::{
    Advanced, AttemptError, Backoff, Failure, FailureOutcome, Fenced, JobId, JobState, QueueName,
    RetryRequest, after_failure,
};
use carafe_core::store::FailureStore;
use carafe_core::{StoreError, StoreResult};
use rand::Rng;
use serde_json::{Value, json};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;

use super::rows::{lost, rfc3339};
use super::wakeup::Wakeups;
use super::workflows::{advance_all, lock_workflows_of};
use crate::{PgStore, map_err};

/// A running job, locked, whose attempt failed.
struct Failing {
    id: JobId,
    queue: QueueName,
    attempt: u32,
    max_attempts: u32,
    backoff: Option<Backoff>,
    cancel_requested: bool,
    workflow: Option<i64>,
}

/// The columns `failing_from_row` reads.
const FAILING: &str = "id, queue, attempt, max_attempts, backoff, cancel_requested, workflow_id";

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
        workflow: row.try_get("workflow_id").map_err(map_err)?,
    })
}

/// The workflows (among `locked`) of the failing jobs whose attempt ended them.
fn ended_workflows(
    failing: &[Failing],
    outcomes: &[FailureOutcome],
    locked: &BTreeSet<i64>,
) -> BTreeSet<i64> {
    failing
        .iter()
        .zip(outcomes)
        .filter(|(_, o)| o.state.is_final())
        .filter_map(|(f, _)| f.workflow)
        .filter(|w| locked.contains(w))
        .collect()
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

#[async_trait]
impl FailureStore for PgStore {
    async fn fail_jobs(
        &self,
        failures: &[Failure],
    ) -> StoreResult<Advanced<Vec<Fenced<FailureOutcome>>>> {
        let Some(at) = failures.last().map(|f| f.now) else {
            return Ok(Advanced::alone(Vec::new()));
        };
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let mut wake = Wakeups::default();
        let mut ended = BTreeSet::new();
        let mut answers = Vec::with_capacity(failures.len());
        let sql = format!(
            "SELECT {FAILING} FROM jobs WHERE id = $1 AND state = 'running' AND lease_token = $2
             FOR UPDATE"
        );
        for f in failures {
            let locked = lock_workflows_of(&mut tx, &[f.id.0]).await?;
            let row = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(f.id.0)
                .bind(f.lease_token.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
            let Some(row) = row else {
                answers.push(lost(&mut tx, f.id).await?);
                continue;
            };
            let failing = [failing_from_row(&row)?];
            let outcome =
                record_failures(&mut tx, &failing, &f.message, f.retry, f.now, &mut wake).await?;
            ended.extend(ended_workflows(&failing, &outcome, &locked));
            answers.push(Fenced::Done(outcome[0]));
        }
        let started = advance_all(&mut tx, &ended, at, &mut wake).await?;
        wake.send(&mut tx).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(Advanced {
            outcome: answers,
            started,
        })
    }

    async fn rescue_expired_jobs(
        &self,
        now: OffsetDateTime,
        batch: u32,
    ) -> StoreResult<Advanced<Vec<JobId>>> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        // The candidates' workflows are locked before the jobs (see `workflows.rs`). Then
        // SKIP LOCKED: a job whose worker is reporting right now is left to that report (and
        // to the next rescue, if the report does not end it); two rescuers split the work.
        let candidates: Vec<(i64, Option<i64>)> = sqlx::query_as(
            "SELECT id, workflow_id FROM jobs WHERE state = 'running' AND lease_expires_at <= $1
             ORDER BY lease_expires_at LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(batch))
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
        if candidates.is_empty() {
            return Ok(Advanced::alone(Vec::new()));
        }
        let ids: Vec<i64> = candidates.iter().map(|c| c.0).collect();
        let locked = if candidates.iter().any(|c| c.1.is_some()) {
            lock_workflows_of(&mut tx, &ids).await?
        } else {
            BTreeSet::new()
        };
        let sql = format!(
            "SELECT {FAILING} FROM jobs
             WHERE id = ANY($1) AND state = 'running' AND lease_expires_at <= $2
             ORDER BY lease_expires_at FOR UPDATE SKIP LOCKED"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&ids)
            .bind(now)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
        let failing = rows
            .iter()
            .map(failing_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        if failing.is_empty() {
            return Ok(Advanced::alone(Vec::new()));
        }
        let message = "the worker's lease expired before it finished (worker lost or too slow)";
        let mut wake = Wakeups::default();
        let outcomes = record_failures(
            &mut tx,
            &failing,
            message,
            RetryRequest::Default,
            now,
            &mut wake,
        )
        .await?;
        let ended = ended_workflows(&failing, &outcomes, &locked);
        let started = advance_all(&mut tx, &ended, now, &mut wake).await?;
        wake.send(&mut tx).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(Advanced {
            outcome: failing.iter().map(|f| f.id).collect(),
            started,
        })
    }
}
