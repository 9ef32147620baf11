//! The job row on PostgreSQL, as every job file reads and writes it: its columns and their
//! mapping, one job read (and locked) inside a transaction, one job changed with its event,
//! and the answer to a fenced write that matched nothing.

use std::time::Duration;

use carafe_core::jobs::{AttemptError, Fenced, Job, JobId, Progress, QueueName, WorkflowId};
use carafe_core::{StoreError, StoreResult};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;

use crate::map_err;

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

/// Runs `set` (an `UPDATE jobs SET … WHERE id = $1`, which may use `$2` for `now`) with its
/// `state` event, and returns the changed job.
pub(crate) async fn change(
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

/// Whether job `id` exists, to tell a lost lease (409) from a missing job (404).
pub(crate) async fn lost<T>(conn: &mut PgConnection, id: JobId) -> StoreResult<Fenced<T>> {
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM jobs WHERE id = $1")
        .bind(id.0)
        .fetch_optional(conn)
        .await
        .map_err(map_err)?;
    Ok(if found.is_some() {
        Fenced::LeaseLost
    } else {
        Fenced::NotFound
    })
}
