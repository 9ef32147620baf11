//! `LeaseStore` on SQLite: claiming (within the queue's limits and its rate group's), and the
//! fenced reports of the lease holder (heartbeat, progress, complete). Every fenced statement
//! matches `state = 'running' AND lease_token = ?`, so a rescued or cancelled job can never be
//! finished by the worker that lost it. A job that ends advances its workflow, if it has one,
//! in the same transaction.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use carafe_core::jobs::{
    Advanced, Allowance, Claim, ClaimedJob, Completion, Fenced, Heartbeat, HeartbeatAck, Job,
    JobId, JobState, LeaseToken, QueueLimits, QueueName, RateGroupState, allowance,
};
use carafe_core::store::LeaseStore;
use carafe_core::{StoreError, StoreResult};
use serde_json::{Value, json};
use sqlx::{Row, SqliteConnection};
use time::OffsetDateTime;

use super::rate_groups::{charge_group, group_allowance};
use super::rows::{JOB_COLUMNS, NewEvent, add_events, job_from_row, lost};
use super::workflows::advance_all;
use crate::{SqliteStore, at, map_err, ms};

/// The SQL test for "waiting and due": what claiming takes and what reads as `available`.
const WAITING: &str = "state IN ('available', 'scheduled', 'retryable')";

/// What a claim charges once it knows how many jobs it took: the queue's rate bucket, if it
/// has a rate, and its rate group, if it is in one that exists.
struct Charges {
    bucket: Option<Allowance>,
    group: Option<RateGroupState>,
}

/// How many jobs a claim of `max` may take from `queue` now (`None`: it is paused), within
/// both its own limits and its rate group's, and what to charge afterwards (`Charges`).
async fn allowance_in(
    conn: &mut SqliteConnection,
    queue: &QueueName,
    max: u32,
    now: OffsetDateTime,
) -> StoreResult<Option<(u32, Charges)>> {
    let mut charges = Charges {
        bucket: None,
        group: None,
    };
    let row = sqlx::query(
        "SELECT paused, concurrency_limit, rate_per_second, tokens, tokens_at, rate_group
         FROM queues WHERE name = ?",
    )
    .bind(queue.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_err)?;
    let Some(row) = row else {
        return Ok(Some((max, charges)));
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
    let mut max = max;
    if limits.limits_claims() {
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
        max = a.max;
        charges.bucket = limits.rate_per_second.map(|_| a);
    }
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
    conn: &mut SqliteConnection,
    queue: &QueueName,
    charges: Charges,
    claimed: usize,
) -> StoreResult<()> {
    if let Some(bucket) = charges.bucket {
        sqlx::query("UPDATE queues SET tokens = ?, tokens_at = ? WHERE name = ?")
            .bind(bucket.tokens - claimed as f64)
            .bind(ms(bucket.tokens_at))
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
        let Some((max, charges)) = allowance_in(&mut tx, c.queue, c.max, c.now).await? else {
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
        spend_tokens(&mut tx, c.queue, charges, claimed.len()).await?;
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
        // One UPDATE completes every item that holds its job's lease (returning the jobs as
        // they now are), one INSERT appends their events; the single writer keeps leases from
        // changing in between. Items it did not complete are told why from one read of their
        // leases. Only when a job is named twice in the batch are the leases read first, to
        // decide which item (the first that holds the lease) completes it. Then the
        // workflows of completed steps (if any) advance.
        let mut out: Vec<Option<Fenced<Job>>> = vec![None; items.len()];
        let mut seen = HashSet::new();
        let candidates: Vec<usize> = if items.iter().all(|i| seen.insert(i.id.0)) {
            (0..items.len()).collect()
        } else {
            let current = leases(&mut tx, items.iter().map(|i| i.id.0)).await?;
            let mut taken = HashSet::new();
            let mut winners = Vec::new();
            for (n, item) in items.iter().enumerate() {
                match judge(current.get(&item.id.0), item)? {
                    None if taken.insert(item.id.0) => winners.push(n),
                    None => out[n] = Some(Fenced::LeaseLost),
                    answer => out[n] = answer,
                }
            }
            winners
        };
        let sent: Vec<Value> = candidates
            .iter()
            .map(|&n| {
                let item = &items[n];
                json!({"id": item.id.0, "t": item.lease_token.as_str(), "o": item.outside, "r": item.result})
            })
            .collect();
        let rows = if sent.is_empty() {
            Vec::new()
        } else {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE jobs SET state = 'completed', result = c.value -> '$.r', finalized_at = ?,
                     lease_token = NULL, lease_expires_at = NULL, event_seq = event_seq + 1
                 FROM json_each(?) AS c
                 WHERE jobs.id = c.value ->> '$.id' AND jobs.state = 'running'
                     AND jobs.lease_token = c.value ->> '$.t'
                     AND NOT (c.value ->> '$.o' AND substr(jobs.queue, 1, ?) = ?)
                 RETURNING {JOB_COLUMNS}, event_seq"
            )))
            .bind(ms(now))
            .bind(Value::Array(sent).to_string())
            .bind(QueueName::RESERVED_PREFIX.len() as i64)
            .bind(QueueName::RESERVED_PREFIX)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?
        };
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
                data: json!({"state": JobState::Completed, "attempt": job.attempt, "result": job.result}),
            });
            completed.insert(job.id.0, job);
        }
        add_events(&mut tx, now, &events).await?;
        let started = advance_all(&mut tx, workflows, now).await?;
        let unanswered: Vec<usize> = (0..items.len())
            .filter(|&n| out[n].is_none() && !completed.contains_key(&items[n].id.0))
            .collect();
        if !unanswered.is_empty() {
            let current = leases(&mut tx, unanswered.iter().map(|&n| items[n].id.0)).await?;
            for n in unanswered {
                // Not completed by the UPDATE, so it does not hold the lease.
                out[n] = Some(
                    judge(current.get(&items[n].id.0), &items[n])?.unwrap_or(Fenced::LeaseLost),
                );
            }
        }
        tx.commit().await.map_err(map_err)?;
        for &n in &candidates {
            if let Some(job) = completed.remove(&items[n].id.0) {
                out[n] = Some(Fenced::Done(job));
            }
        }
        let outcome = out
            .into_iter()
            .map(|o| o.ok_or_else(|| StoreError::corrupt("a completion got no answer")))
            .collect::<StoreResult<_>>()?;
        Ok(Advanced { outcome, started })
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

/// The leases of these jobs, by id.
async fn leases(
    conn: &mut SqliteConnection,
    ids: impl Iterator<Item = i64>,
) -> StoreResult<HashMap<i64, Lease>> {
    let ids: Vec<i64> = ids.collect();
    sqlx::query(
        "SELECT id, state, lease_token, queue FROM jobs
         WHERE id IN (SELECT value FROM json_each(?))",
    )
    .bind(serde_json::to_string(&ids).expect("serializes"))
    .fetch_all(&mut *conn)
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
    .map_err(map_err)
}

/// What a completion gets from the job's lease: `None` when it holds it (and may complete
/// the job), else the answer.
fn judge(lease: Option<&Lease>, item: &Completion) -> StoreResult<Option<Fenced<Job>>> {
    Ok(match lease {
        None => Some(Fenced::NotFound),
        Some(lease) if item.outside && lease.reserved() => Some(Fenced::Reserved(
            QueueName::parse(&lease.queue).map_err(|_| StoreError::corrupt("jobs.queue"))?,
        )),
        Some(lease)
            if lease.running && lease.token.as_deref() == Some(item.lease_token.as_str()) =>
        {
            None
        }
        Some(_) => Some(Fenced::LeaseLost),
    })
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
