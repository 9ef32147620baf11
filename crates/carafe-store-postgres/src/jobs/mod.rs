//! `JobStore` and `LeaderStore` on PostgreSQL: what SQLite does one row at a time (see
//! `carafe-store-sqlite/src/jobs`), done here with set-based statements, because several
//! servers share one database and every round trip holds locks a little longer.
//!
//! This module holds the row mapping and the reads; `insert.rs` inserts (with unique keys),
//! `lease.rs` claims and the lease holder's reports, `failures.rs` failed attempts and
//! rescues, `admin.rs` operator actions, maintenance and leader leases, `workflows.rs`
//! workflows and their advance, `wakeup.rs` the `NOTIFY` hints other servers listen for.
//!
//! Most writes are one statement of the shape
//! `WITH changed AS (UPDATE jobs … RETURNING …), ev AS (INSERT INTO job_events … FROM changed)
//! SELECT … FROM changed`: the job rows and their events (numbered by the incremented
//! `jobs.event_seq`) change together, whatever the batch size, in one round trip. A
//! data-modifying CTE always runs, even when the final `SELECT` does not read it.

mod admin;
mod failures;
pub(crate) mod insert;
mod lease;
pub(crate) mod wakeup;
mod workflows;

use std::time::Duration;

use carafe_core::StoreError;
use carafe_core::StoreResult;
use carafe_core::jobs::{
    AttemptError, Job, JobEvent, JobFilter, JobId, JobState, Progress, QueueName, WorkflowId,
};
use carafe_core::page::{Page, PageRequest};
use serde_json::Value;
use sqlx::postgres::{PgRow, Postgres};
use sqlx::{PgConnection, QueryBuilder, Row};
use time::OffsetDateTime;

use crate::{PgStore, map_err};

/// Every column `job_from_row` reads, in table order.
pub(crate) const JOB_COLUMNS: &str = "id, queue, state, args, priority, attempt, max_attempts, \
    backoff, timeout_ms, scheduled_at, created_at, attempted_at, finalized_at, attempted_by, \
    lease_expires_at, unique_key, owner, target, progress, checkpoint, result, errors, \
    cancel_requested, workflow_id, workflow_step";

/// The same columns qualified by `j.`, for statements that join `jobs j` with their input.
pub(crate) const J_COLUMNS: &str = "j.id, j.queue, j.state, j.args, j.priority, j.attempt, \
    j.max_attempts, j.backoff, j.timeout_ms, j.scheduled_at, j.created_at, j.attempted_at, \
    j.finalized_at, j.attempted_by, j.lease_expires_at, j.unique_key, j.owner, j.target, \
    j.progress, j.checkpoint, j.result, j.errors, j.cancel_requested, j.workflow_id, \
    j.workflow_step";

/// A `jsonb` column decoded into `T`; a value that does not fit is a corrupt row.
fn typed<T: serde::de::DeserializeOwned>(row: &PgRow, col: &str) -> StoreResult<Option<T>> {
    row.try_get::<Option<Value>, _>(col)
        .map_err(map_err)?
        .map(|v| serde_json::from_value(v).map_err(|_| StoreError::corrupt(format!("jobs.{col}"))))
        .transpose()
}

pub(crate) fn job_from_row(row: &PgRow) -> StoreResult<Job> {
    let queue: String = row.try_get("queue").map_err(map_err)?;
    let state: String = row.try_get("state").map_err(map_err)?;
    let timeout_ms: i64 = row.try_get("timeout_ms").map_err(map_err)?;
    Ok(Job {
        id: JobId(row.try_get("id").map_err(map_err)?),
        queue: QueueName::parse(&queue).map_err(|_| StoreError::corrupt("jobs.queue"))?,
        state: state.parse().map_err(StoreError::corrupt)?,
        args: row.try_get("args").map_err(map_err)?,
        priority: row.try_get("priority").map_err(map_err)?,
        attempt: row.try_get::<i32, _>("attempt").map_err(map_err)? as u32,
        max_attempts: row.try_get::<i32, _>("max_attempts").map_err(map_err)? as u32,
        backoff: typed(row, "backoff")?,
        timeout: Duration::from_millis(timeout_ms as u64),
        scheduled_at: row.try_get("scheduled_at").map_err(map_err)?,
        created_at: row.try_get("created_at").map_err(map_err)?,
        attempted_at: row.try_get("attempted_at").map_err(map_err)?,
        finalized_at: row.try_get("finalized_at").map_err(map_err)?,
        attempted_by: row.try_get("attempted_by").map_err(map_err)?,
        lease_expires_at: row.try_get("lease_expires_at").map_err(map_err)?,
        unique_key: row.try_get("unique_key").map_err(map_err)?,
        owner: row.try_get("owner").map_err(map_err)?,
        target: row.try_get("target").map_err(map_err)?,
        workflow: match row
            .try_get::<Option<i64>, _>("workflow_id")
            .map_err(map_err)?
        {
            Some(w) => Some((
                WorkflowId(w),
                row.try_get::<i32, _>("workflow_step").map_err(map_err)? as u32,
            )),
            None => None,
        },
        progress: typed::<Progress>(row, "progress")?,
        checkpoint: row.try_get("checkpoint").map_err(map_err)?,
        result: row.try_get("result").map_err(map_err)?,
        errors: typed::<Vec<AttemptError>>(row, "errors")?.unwrap_or_default(),
        cancel_requested: row.try_get("cancel_requested").map_err(map_err)?,
    })
}

/// Attempt counts are at most 1,000 (the API validates them); `integer` holds them.
pub(crate) fn int4(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub(crate) async fn get_in(
    conn: &mut PgConnection,
    id: JobId,
    lock: bool,
) -> StoreResult<Option<Job>> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.0)
        .fetch_optional(conn)
        .await
        .map_err(map_err)?;
    row.as_ref().map(job_from_row).transpose()
}

/// Matches jobs whose *effective* state at `now` is `state`: a waiting job whose time has come
/// reads as `available`. Written per state (not as a `CASE`) so `jobs_queue_state` serves it.
fn push_state(q: &mut QueryBuilder<Postgres>, state: JobState, now: OffsetDateTime) {
    match state {
        JobState::Available => {
            q.push(
                "(state = 'available' OR (state IN ('scheduled', 'retryable') AND scheduled_at <= ",
            )
            .push_bind(now)
            .push("))");
        }
        JobState::Scheduled | JobState::Retryable => {
            q.push("(state = ")
                .push_bind(state.as_str())
                .push(" AND scheduled_at > ")
                .push_bind(now)
                .push(")");
        }
        other => {
            q.push("state = ").push_bind(other.as_str());
        }
    }
}

impl PgStore {
    pub(crate) async fn push_queues_impl(
        &self,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<QueueName>> {
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

    pub(crate) async fn get_job_impl(&self, id: JobId) -> StoreResult<Option<Job>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        get_in(&mut conn, id, false).await
    }

    pub(crate) async fn job_queues_impl(
        &self,
        ids: &[JobId],
    ) -> StoreResult<Vec<(JobId, QueueName)>> {
        let ids: Vec<i64> = ids.iter().map(|j| j.0).collect();
        let rows: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, queue FROM jobs WHERE id = ANY($1)")
                .bind(ids)
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
        rows.into_iter()
            .map(|(id, queue)| {
                let queue =
                    QueueName::parse(&queue).map_err(|_| StoreError::corrupt("jobs.queue"))?;
                Ok((JobId(id), queue))
            })
            .collect()
    }

    pub(crate) async fn list_jobs_impl(
        &self,
        filter: &JobFilter,
        page: &PageRequest,
        now: OffsetDateTime,
    ) -> StoreResult<Page<Job>> {
        let Some(before) = page.after_or(i64::MAX) else {
            return Ok(Page::empty());
        };
        let mut q =
            QueryBuilder::<Postgres>::new(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id < "));
        q.push_bind(before);
        if let Some(queue) = &filter.queue {
            q.push(" AND queue = ").push_bind(queue.as_str());
        }
        if let Some(state) = filter.state {
            q.push(" AND ");
            push_state(&mut q, state, now);
        }
        if let Some(owner) = &filter.owner {
            q.push(" AND owner = ").push_bind(owner.as_str());
        }
        if filter.exclude_reserved {
            q.push(" AND queue NOT LIKE ")
                .push_bind(format!("{}%", QueueName::RESERVED_PREFIX));
        }
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(page.limit) + 1);
        let rows = q.build().fetch_all(&self.pool).await.map_err(map_err)?;
        let jobs = rows
            .iter()
            .map(job_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(jobs, page.limit, |j| j.id.to_string()))
    }

    pub(crate) async fn job_events_impl(
        &self,
        id: JobId,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<JobEvent>> {
        let rows = sqlx::query(
            "SELECT seq, at, kind, data FROM job_events WHERE job_id = $1 AND seq > $2
             ORDER BY seq LIMIT $3",
        )
        .bind(id.0)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|row| {
                Ok(JobEvent {
                    job_id: id,
                    seq: row.try_get("seq").map_err(map_err)?,
                    at: row.try_get("at").map_err(map_err)?,
                    kind: row.try_get("kind").map_err(map_err)?,
                    data: row.try_get("data").map_err(map_err)?,
                })
            })
            .collect()
    }
}
