//! Leases on SQLite: claiming, and the fenced reports of the lease holder (heartbeat, progress,
//! complete, fail), plus the rescue of jobs whose lease ran out. Every fenced statement
//! matches `state = 'running' AND lease_token = ?`, so a rescued or cancelled job can never be
//! finished by the worker that lost it. A job that ends advances its workflow, if it has one,
//! in the same transaction.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use carafe_core::jobs::{
    Advanced, Backoff, Claim, ClaimedJob, Completion, Failure, FailureOutcome, Fenced, Heartbeat,
    HeartbeatAck, JobId, JobState, QueueName, RetryRequest, after_failure,
};
use carafe_core::{StoreError, StoreResult};
use rand::Rng;
use serde_json::{Value, json};
use sqlx::{Row, SqliteConnection};
use time::OffsetDateTime;

use super::workflows::advance_all;
use super::{NewEvent, WAITING, add_events, rfc3339};
use crate::{SqliteStore, at, map_err, ms};

/// Whether job `id` exists, to tell a lost lease (409) from a missing job (404).
async fn exists(conn: &mut SqliteConnection, id: JobId) -> StoreResult<bool> {
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM jobs WHERE id = ?")
        .bind(id.0)
        .fetch_optional(conn)
        .await
        .map_err(map_err)?;
    Ok(found.is_some())
}

async fn lost<T>(conn: &mut SqliteConnection, id: JobId) -> StoreResult<Fenced<T>> {
    Ok(if exists(conn, id).await? {
        Fenced::LeaseLost
    } else {
        Fenced::NotFound
    })
}

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

impl SqliteStore {
    pub(crate) async fn claim_jobs_impl(&self, c: Claim<'_>) -> StoreResult<Vec<ClaimedJob>> {
        // Idle polling should not queue for the write lock: look first on a read connection.
        let delivery = if c.push {
            "target IS NOT NULL"
        } else {
            "target IS NULL"
        };
        let sql = format!(
            "SELECT 1 FROM jobs WHERE queue = ? AND {WAITING} AND {delivery} AND scheduled_at <= ? LIMIT 1"
        );
        let any: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(c.queue.as_str())
            .bind(ms(c.now))
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?;
        if any.is_none() {
            return Ok(Vec::new());
        }
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        let Some((max, bucket)) =
            super::admin::allowance_in(&mut tx, c.queue, c.max, c.now).await?
        else {
            return Ok(Vec::new());
        };
        let sql = format!(
            "UPDATE jobs SET state = 'running', attempt = attempt + 1, attempted_at = ?1,
                 attempted_by = ?2, lease_token = lower(hex(randomblob(16))),
                 lease_expires_at = ?1 + COALESCE(?3, (SELECT lease_ms FROM queues WHERE name = ?4), ?6),
                 event_seq = event_seq + 1
             WHERE id IN (
                 SELECT id FROM jobs
                 WHERE queue = ?4 AND {WAITING} AND {delivery} AND scheduled_at <= ?1
                 ORDER BY priority, scheduled_at, id LIMIT ?5)
             RETURNING id, args, attempt, max_attempts, lease_token, lease_expires_at,
                 checkpoint, timeout_ms, owner, target, scheduled_at, event_seq"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ms(c.now))
            .bind(c.worker)
            .bind(c.lease.asked_ms())
            .bind(c.queue.as_str())
            .bind(i64::from(max))
            .bind(c.lease.default_ms())
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
        let mut claimed = Vec::with_capacity(rows.len());
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            let job = claimed_from_row(row, c.queue, c.now)?;
            events.push(NewEvent {
                job: job.id.0,
                seq: row.try_get("event_seq").map_err(map_err)?,
                kind: "state",
                data: json!({"state": JobState::Running, "attempt": job.attempt, "worker": c.worker}),
            });
            claimed.push(job);
        }
        add_events(&mut tx, c.now, &events).await?;
        if let Some(bucket) = bucket {
            super::admin::spend_tokens(&mut tx, c.queue, bucket, claimed.len()).await?;
        }
        tx.commit().await.map_err(map_err)?;
        claimed.sort_by_key(|c| c.id);
        Ok(claimed)
    }

    pub(crate) async fn heartbeat_job_impl(
        &self,
        hb: Heartbeat<'_>,
    ) -> StoreResult<Fenced<HeartbeatAck>> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        let progress = hb
            .progress
            .as_ref()
            .map(|p| serde_json::to_string(p).expect("serializes"));
        let row = sqlx::query(
            "UPDATE jobs SET lease_expires_at = CASE WHEN ?1 THEN ?2 + COALESCE(?3,
                     (SELECT lease_ms FROM queues WHERE name = jobs.queue), ?4)
                     ELSE lease_expires_at END,
                 progress = COALESCE(?5, progress), checkpoint = COALESCE(?6, checkpoint),
                 event_seq = event_seq + ?7
             WHERE id = ?8 AND state = 'running' AND lease_token = ?9
             RETURNING cancel_requested, lease_expires_at, event_seq",
        )
        .bind(hb.renew.is_some())
        .bind(ms(hb.now))
        .bind(hb.renew.and_then(|r| r.asked_ms()))
        .bind(hb.renew.map(|r| r.default_ms()))
        .bind(progress)
        .bind(hb.checkpoint.as_ref().map(|c| c.to_string()))
        .bind(i64::from(hb.progress.is_some()))
        .bind(hb.id.0)
        .bind(hb.lease_token)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
        let Some(row) = row else {
            return lost(&mut tx, hb.id).await;
        };
        if let Some(p) = &hb.progress {
            let seq = row.try_get("event_seq").map_err(map_err)?;
            let event = NewEvent {
                job: hb.id.0,
                seq,
                kind: "progress",
                data: json!({"progress": p}),
            };
            add_events(&mut tx, hb.now, &[event]).await?;
        }
        let ack = HeartbeatAck {
            cancel_requested: row.try_get::<i64, _>("cancel_requested").map_err(map_err)? != 0,
            lease_expires_at: at(row.try_get("lease_expires_at").map_err(map_err)?),
        };
        tx.commit().await.map_err(map_err)?;
        Ok(Fenced::Done(ack))
    }

    pub(crate) async fn complete_jobs_impl(
        &self,
        items: &[Completion],
        now: OffsetDateTime,
    ) -> StoreResult<Advanced<Vec<Fenced<()>>>> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        // Three statements per batch, whatever its size: read the current leases, complete
        // the items that hold theirs, append their events. The single writer keeps the
        // leases from changing in between. Then the workflows of completed steps (if any)
        // advance.
        let ids: Vec<i64> = items.iter().map(|i| i.id.0).collect();
        let current: HashMap<i64, (String, Option<String>)> = sqlx::query(
            "SELECT id, state, lease_token FROM jobs WHERE id IN (SELECT value FROM json_each(?))",
        )
        .bind(serde_json::to_string(&ids).expect("serializes"))
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?
        .iter()
        .map(|r| {
            Ok((
                r.try_get("id")?,
                (r.try_get("state")?, r.try_get("lease_token")?),
            ))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(map_err)?;
        let mut taken = HashSet::new();
        let mut winners = Vec::new();
        let out: Vec<Fenced<()>> = items
            .iter()
            .map(|item| match current.get(&item.id.0) {
                None => Fenced::NotFound,
                Some((state, token))
                    if state == "running"
                        && token.as_deref() == Some(item.lease_token.as_str())
                        && taken.insert(item.id.0) =>
                {
                    winners.push(json!({"id": item.id.0, "r": item.result}));
                    Fenced::Done(())
                }
                Some(_) => Fenced::LeaseLost,
            })
            .collect();
        let rows = sqlx::query(
            "UPDATE jobs SET state = 'completed', result = c.value -> '$.r', finalized_at = ?,
                 lease_token = NULL, lease_expires_at = NULL, event_seq = event_seq + 1
             FROM json_each(?) AS c WHERE jobs.id = c.value ->> '$.id'
             RETURNING id, attempt, event_seq, workflow_id",
        )
        .bind(ms(now))
        .bind(Value::Array(winners).to_string())
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
        let results: HashMap<i64, &Value> = items.iter().map(|i| (i.id.0, &i.result)).collect();
        let mut events = Vec::with_capacity(rows.len());
        let mut workflows = Vec::new();
        for row in &rows {
            let id: i64 = row.try_get("id").map_err(map_err)?;
            workflows.extend(
                row.try_get::<Option<i64>, _>("workflow_id")
                    .map_err(map_err)?,
            );
            let attempt: i64 = row.try_get("attempt").map_err(map_err)?;
            events.push(NewEvent {
                job: id,
                seq: row.try_get("event_seq").map_err(map_err)?,
                kind: "state",
                data: json!({"state": JobState::Completed, "attempt": attempt, "result": results.get(&id)}),
            });
        }
        add_events(&mut tx, now, &events).await?;
        let started = advance_all(&mut tx, workflows, now).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(Advanced {
            outcome: out,
            started,
        })
    }

    pub(crate) async fn fail_job_impl(
        &self,
        f: Failure<'_>,
    ) -> StoreResult<Advanced<Fenced<FailureOutcome>>> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        let mut started = Vec::new();
        let (id, token, now) = (f.id, f.lease_token, f.now);
        let outcome =
            record_failure(&mut tx, id, token, &f.message, f.retry, now, &mut started).await?;
        let answer = match outcome {
            Some(o) => Fenced::Done(o),
            None => lost(&mut tx, f.id).await?,
        };
        tx.commit().await.map_err(map_err)?;
        Ok(Advanced {
            outcome: answer,
            started,
        })
    }

    pub(crate) async fn rescue_expired_jobs_impl(
        &self,
        now: OffsetDateTime,
        batch: u32,
    ) -> StoreResult<Advanced<Vec<JobId>>> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
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

fn claimed_from_row(
    row: &sqlx::sqlite::SqliteRow,
    queue: &QueueName,
    now: OffsetDateTime,
) -> StoreResult<ClaimedJob> {
    let args: String = row.try_get("args").map_err(map_err)?;
    let checkpoint: Option<String> = row.try_get("checkpoint").map_err(map_err)?;
    let lease_expires_at = at(row.try_get("lease_expires_at").map_err(map_err)?);
    Ok(ClaimedJob {
        id: JobId(row.try_get("id").map_err(map_err)?),
        queue: queue.clone(),
        args: serde_json::from_str(&args).map_err(|_| StoreError::corrupt("jobs.args"))?,
        attempt: row.try_get::<i64, _>("attempt").map_err(map_err)? as u32,
        max_attempts: row.try_get::<i64, _>("max_attempts").map_err(map_err)? as u32,
        lease_token: row.try_get("lease_token").map_err(map_err)?,
        lease_expires_at,
        lease: (lease_expires_at - now).unsigned_abs(),
        checkpoint: checkpoint.and_then(|c| serde_json::from_str(&c).ok()),
        timeout: Duration::from_millis(row.try_get::<i64, _>("timeout_ms").map_err(map_err)? as u64),
        owner: row.try_get("owner").map_err(map_err)?,
        target: row.try_get("target").map_err(map_err)?,
        scheduled_at: at(row.try_get("scheduled_at").map_err(map_err)?),
    })
}
