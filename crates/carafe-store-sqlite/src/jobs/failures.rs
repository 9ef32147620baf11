//! `FailureStore` on SQLite: a worker's report of a failed attempt, and the rescue of running
//! jobs whose lease ran out. Both are fenced by the lease token (`record_failure`), and a
//! failure that ends a job advances its workflow in the same transaction.

use async_trait::async_trait;
use carafe_core::jobs::{
    Advanced, Backoff, Failure, FailureOutcome, Fenced, JobId, QueueName, RetryRequest,
    after_failure,
};
use carafe_core::store::FailureStore;
use carafe_core::{StoreError, StoreResult};
use rand::Rng;
use serde_json::json;
use sqlx::{Row, SqliteConnection};
use time::OffsetDateTime;

use super::rows::{NewEvent, add_events, lost, rfc3339};
use super::workflows::advance_all;
use crate::{SqliteStore, map_err, ms};

/// Moves a running job to the state a failed attempt leads to, fenced by `token`, and
/// advances the job's workflow when that state is final (its started steps go to `started`).
/// Returns the outcome, or `None` when the token no longer holds the job.
pub(crate) async fn record_failure(
    conn: &mut SqliteConnection,
    id: JobId,
    token: &str,
    message: &str,
    retry: RetryRequest,
    now: OffsetDateTime,
    started: &mut Vec<(JobId, QueueName)>,
) -> StoreResult<Option<FailureOutcome>> {
    let row = sqlx::query(
        "SELECT attempt, max_attempts, backoff, cancel_requested, workflow_id FROM jobs
         WHERE id = ? AND state = 'running' AND lease_token = ?",
    )
    .bind(id.0)
    .bind(token)
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_err)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let attempt = row.try_get::<i64, _>("attempt").map_err(map_err)? as u32;
    let max_attempts = row.try_get::<i64, _>("max_attempts").map_err(map_err)? as u32;
    let backoff: Option<String> = row.try_get("backoff").map_err(map_err)?;
    let backoff: Option<Backoff> = backoff.and_then(|b| serde_json::from_str(&b).ok());
    let cancel = row.try_get::<i64, _>("cancel_requested").map_err(map_err)? != 0;
    let workflow: Option<i64> = row.try_get("workflow_id").map_err(map_err)?;
    let unit: f64 = rand::rng().random();
    let outcome = after_failure(
        attempt,
        max_attempts,
        backoff.as_ref(),
        retry,
        cancel,
        now,
        unit,
    );
    let error = json!({"at": rfc3339(now), "attempt": attempt, "message": message});
    let finalized = outcome.state.is_final().then(|| ms(now));
    let seq: i64 = sqlx::query_scalar(
        "UPDATE jobs SET state = ?, scheduled_at = COALESCE(?, scheduled_at), finalized_at = ?,
             errors = json_insert(errors, '$[#]', json(?)), lease_token = NULL,
             lease_expires_at = NULL, event_seq = event_seq + 1
         WHERE id = ? RETURNING event_seq",
    )
    .bind(outcome.state.as_str())
    .bind(outcome.retry_at.map(ms))
    .bind(finalized)
    .bind(error.to_string())
    .bind(id.0)
    .fetch_one(&mut *conn)
    .await
    .map_err(map_err)?;
    let mut data = json!({"state": outcome.state, "attempt": attempt, "error": message});
    if let Some(retry_at) = outcome.retry_at {
        data["retry_at"] = json!(rfc3339(retry_at));
    }
    add_events(
        &mut *conn,
        now,
        &[NewEvent {
            job: id.0,
            seq,
            kind: "state",
            data,
        }],
    )
    .await?;
    if outcome.state.is_final() {
        started.extend(advance_all(conn, workflow, now).await?);
    }
    Ok(Some(outcome))
}

#[async_trait]
impl FailureStore for SqliteStore {
    async fn fail_jobs(
        &self,
        failures: &[Failure],
    ) -> StoreResult<Advanced<Vec<Fenced<FailureOutcome>>>> {
        let mut tx = self.begin_write().await?;
        let mut started = Vec::new();
        let mut answers = Vec::with_capacity(failures.len());
        for f in failures {
            let outcome = record_failure(
                &mut tx,
                f.id,
                f.lease_token.as_str(),
                &f.message,
                f.retry,
                f.now,
                &mut started,
            )
            .await?;
            answers.push(match outcome {
                Some(o) => Fenced::Done(o),
                None => lost(&mut tx, f.id).await?,
            });
        }
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
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(
            "SELECT id, lease_token FROM jobs
             WHERE state = 'running' AND lease_expires_at <= ? ORDER BY lease_expires_at LIMIT ?",
        )
        .bind(ms(now))
        .bind(i64::from(batch))
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
        let mut rescued = Vec::with_capacity(rows.len());
        let mut started = Vec::new();
        for row in rows {
            let id = JobId(row.try_get("id").map_err(map_err)?);
            let token: Option<String> = row.try_get("lease_token").map_err(map_err)?;
            let message = "the worker's lease expired before it finished (worker lost or too slow)";
            let token = token.ok_or_else(|| StoreError::corrupt("running job without a lease"))?;
            let retry = RetryRequest::Default;
            if record_failure(&mut tx, id, &token, message, retry, now, &mut started)
                .await?
                .is_some()
            {
                rescued.push(id);
            }
        }
        tx.commit().await.map_err(map_err)?;
        Ok(Advanced {
            outcome: rescued,
            started,
        })
    }
}
