//! `LeaseStore` on SQLite: claiming (within the queue's limits), and the fenced reports of the
//! lease holder (heartbeat, progress, complete). Every fenced statement matches
//! `state = 'running' AND lease_token = ?`, so a rescued or cancelled job can never be
//! finished by the worker that lost it. A job that ends advances its workflow, if it has one,
//! in the same transaction.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use carafe_core::jobs::{
    Advanced, Allowance, Claim, ClaimedJob, Completion, Fenced, Heartbeat, HeartbeatAck, Job,
    JobId, JobState, LeaseToken, QueueLimits, QueueName, allowance,
};
use carafe_core::store::LeaseStore;
use carafe_core::{StoreError, StoreResult};
use serde_json::{Value, json};
use sqlx::{Row, SqliteConnection};
use time::OffsetDateTime;

use super::rows::{JOB_COLUMNS, NewEvent, add_events, job_from_row, lost};
use super::workflows::advance_all;
use crate::{SqliteStore, at, map_err, ms};

/// The SQL test for "waiting and due": what claiming takes and what reads as `available`.
const WAITING: &str = "state IN ('available', 'scheduled', 'retryable')";

/// How many jobs a claim of `max` may take from `queue` now (`None`: it is paused), and the
/// rate bucket to charge afterwards, if the queue has a rate.
async fn allowance_in(
    conn: &mut SqliteConnection,
    queue: &QueueName,
    max: u32,
    now: OffsetDateTime,
) -> StoreResult<Option<(u32, Option<Allowance>)>> {
    let row = sqlx::query(
        "SELECT paused, concurrency_limit, rate_per_second, tokens, tokens_at
         FROM queues WHERE name = ?",
    )
    .bind(queue.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_err)?;
    let Some(row) = row else {
        return Ok(Some((max, None)));
    };
    if row.try_get::<i64, _>("paused").map_err(map_err)? != 0 {
        return Ok(None);
    }
    let limits = QueueLimits {
        concurrency: row
            .try_get::<Option<i64>, _>("concurrency_limit")
            .map_err(map_err)?
            .map(|n| n as u32),
        rate_per_second: row.try_get("rate_per_second").map_err(map_err)?,
        lease: None,
    };
    if !limits.limits_claims() {
        return Ok(Some((max, None)));
    }
    let running: i64 = if limits.concurrency.is_some() {
        sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE queue = ? AND state = 'running'")
            .bind(queue.as_str())
            .fetch_one(&mut *conn)
            .await
            .map_err(map_err)?
    } else {
        0
    };
    let tokens: f64 = row.try_get("tokens").map_err(map_err)?;
    let tokens_at = at(row.try_get("tokens_at").map_err(map_err)?);
    let a = allowance(&limits, running as u64, tokens, tokens_at, max, now);
    Ok(Some((a.max, limits.rate_per_second.map(|_| a))))
}

/// Takes `claimed` tokens out of the queue's rate bucket.
async fn spend_tokens(
    conn: &mut SqliteConnection,
    queue: &QueueName,
    bucket: Allowance,
    claimed: usize,
) -> StoreResult<()> {
    sqlx::query("UPDATE queues SET tokens = ?, tokens_at = ? WHERE name = ?")
        .bind(bucket.tokens - claimed as f64)
        .bind(ms(bucket.tokens_at))
        .bind(queue.as_str())
        .execute(conn)
        .await
        .map_err(map_err)?;
    Ok(())
}

#[async_trait]
impl LeaseStore for SqliteStore {
    async fn claim_jobs(&self, c: Claim<'_>) -> StoreResult<Vec<ClaimedJob>> {
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
        let mut tx = self.begin_write().await?;
        let Some((max, bucket)) = allowance_in(&mut tx, c.queue, c.max, c.now).await? else {
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
            spend_tokens(&mut tx, c.queue, bucket, claimed.len()).await?;
        }
        tx.commit().await.map_err(map_err)?;
        claimed.sort_by_key(|c| c.id);
        Ok(claimed)
    }

    async fn push_queues(&self, now: OffsetDateTime) -> StoreResult<Vec<QueueName>> {
        let sql = format!(
            "SELECT DISTINCT queue FROM jobs WHERE {WAITING} AND target IS NOT NULL AND scheduled_at <= ?"
        );
        let names: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(ms(now))
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        names
            .iter()
            .map(|n| QueueName::parse(n).map_err(|_| StoreError::corrupt("jobs.queue")))
            .collect()
    }

    async fn heartbeat_jobs(&self, hbs: &[Heartbeat]) -> StoreResult<Vec<Fenced<HeartbeatAck>>> {
        let mut tx = self.begin_write().await?;
        let mut answers = Vec::with_capacity(hbs.len());
        for hb in hbs {
            answers.push(heartbeat_in(&mut tx, hb).await?);
        }
        tx.commit().await.map_err(map_err)?;
        Ok(answers)
    }

    async fn complete_jobs(
        &self,
        items: &[Completion],
        now: OffsetDateTime,
    ) -> StoreResult<Advanced<Vec<Fenced<Job>>>> {
        let mut tx = self.begin_write().await?;
        // Three statements per batch, whatever its size: read the current leases, complete
        // the items that hold theirs (returning the jobs as they now are), append their
        // events. The single writer keeps the leases from changing in between. Then the
        // workflows of completed steps (if any) advance.
        let ids: Vec<i64> = items.iter().map(|i| i.id.0).collect();
        let current: HashMap<i64, Lease> = sqlx::query(
            "SELECT id, state, lease_token, queue FROM jobs
             WHERE id IN (SELECT value FROM json_each(?))",
        )
        .bind(serde_json::to_string(&ids).expect("serializes"))
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?
        .iter()
        .map(|r| {
            Ok((
                r.try_get("id")?,
                Lease {
                    running: r.try_get::<String, _>("state")? == "running",
                    token: r.try_get("lease_token")?,
                    queue: r.try_get("queue")?,
                },
            ))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(map_err)?;
        let mut taken = HashSet::new();
        let mut winners = Vec::new();
        // `None` stands for "completed": filled in from the rows the UPDATE returns.
        let mut out: Vec<Option<Fenced<Job>>> = items
            .iter()
            .map(|item| match current.get(&item.id.0) {
                None => Ok(Some(Fenced::NotFound)),
                Some(lease) if item.outside && lease.reserved() => {
                    let queue = QueueName::parse(&lease.queue)
                        .map_err(|_| StoreError::corrupt("jobs.queue"))?;
                    Ok(Some(Fenced::Reserved(queue)))
                }
                Some(lease)
                    if lease.running
                        && lease.token.as_deref() == Some(item.lease_token.as_str())
                        && taken.insert(item.id.0) =>
                {
                    winners.push(json!({"id": item.id.0, "r": item.result}));
                    Ok(None)
                }
                Some(_) => Ok(Some(Fenced::LeaseLost)),
            })
            .collect::<StoreResult<_>>()?;
        let rows = if winners.is_empty() {
            Vec::new()
        } else {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE jobs SET state = 'completed', result = c.value -> '$.r', finalized_at = ?,
                     lease_token = NULL, lease_expires_at = NULL, event_seq = event_seq + 1
                 FROM json_each(?) AS c WHERE jobs.id = c.value ->> '$.id'
                 RETURNING {JOB_COLUMNS}, event_seq"
            )))
            .bind(ms(now))
            .bind(Value::Array(winners).to_string())
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?
        };
        let results: HashMap<i64, &Value> = items.iter().map(|i| (i.id.0, &i.result)).collect();
        let mut events = Vec::with_capacity(rows.len());
        let mut workflows = Vec::new();
        let mut completed = HashMap::with_capacity(rows.len());
        for row in &rows {
            let job = job_from_row(row)?;
            workflows.extend(job.workflow.map(|(w, _)| w.0));
            events.push(NewEvent {
                job: job.id.0,
                seq: row.try_get("event_seq").map_err(map_err)?,
                kind: "state",
                data: json!({"state": JobState::Completed, "attempt": job.attempt, "result": results.get(&job.id.0)}),
            });
            completed.insert(job.id.0, job);
        }
        add_events(&mut tx, now, &events).await?;
        let started = advance_all(&mut tx, workflows, now).await?;
        tx.commit().await.map_err(map_err)?;
        for (slot, item) in out.iter_mut().zip(items) {
            if slot.is_none() {
                let job = completed
                    .remove(&item.id.0)
                    .ok_or_else(|| StoreError::corrupt("jobs: a completed job was not returned"))?;
                *slot = Some(Fenced::Done(job));
            }
        }
        Ok(Advanced {
            outcome: out.into_iter().flatten().collect(),
            started,
        })
    }
}

/// One heartbeat inside a write transaction.
async fn heartbeat_in(
    tx: &mut SqliteConnection,
    hb: &Heartbeat,
) -> StoreResult<Fenced<HeartbeatAck>> {
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
    .bind(hb.lease_token.as_str())
    .fetch_optional(&mut *tx)
    .await
    .map_err(map_err)?;
    let Some(row) = row else {
        return lost(&mut *tx, hb.id).await;
    };
    if let Some(p) = &hb.progress {
        let seq = row.try_get("event_seq").map_err(map_err)?;
        let event = NewEvent {
            job: hb.id.0,
            seq,
            kind: "progress",
            data: json!({"progress": p}),
        };
        add_events(&mut *tx, hb.now, &[event]).await?;
    }
    let ack = HeartbeatAck {
        cancel_requested: row.try_get::<i64, _>("cancel_requested").map_err(map_err)? != 0,
        lease_expires_at: at(row.try_get("lease_expires_at").map_err(map_err)?),
    };
    Ok(Fenced::Done(ack))
}

/// A job's lease as completing reads it.
struct Lease {
    running: bool,
    token: Option<String>,
    queue: String,
}

impl Lease {
    fn reserved(&self) -> bool {
        self.queue.starts_with(QueueName::RESERVED_PREFIX)
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
        lease_token: LeaseToken::from(row.try_get::<String, _>("lease_token").map_err(map_err)?),
        lease_expires_at,
        lease: (lease_expires_at - now).unsigned_abs(),
        checkpoint: checkpoint.and_then(|c| serde_json::from_str(&c).ok()),
        timeout: Duration::from_millis(row.try_get::<i64, _>("timeout_ms").map_err(map_err)? as u64),
        owner: row.try_get("owner").map_err(map_err)?,
        target: row.try_get("target").map_err(map_err)?,
        scheduled_at: at(row.try_get("scheduled_at").map_err(map_err)?),
    })
}
