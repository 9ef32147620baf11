//! The job row on SQLite, as every job file reads and writes it: its columns and their mapping,
//! one job read inside a transaction, the events every change appends, and the answer to a
//! fenced write that matched nothing.

use std::time::Duration;

use carafe_core::jobs::{AttemptError, Fenced, Job, JobId, Progress, QueueName, WorkflowId};
use carafe_core::{StoreError, StoreResult};
use serde_json::Value;
use sqlx::sqlite::{Sqlite, SqliteRow};
use sqlx::{QueryBuilder, Row, SqliteConnection};
use time::OffsetDateTime;

use crate::{at, map_err, ms};

pub(crate) const JOB_COLUMNS: &str = "id, queue, state, args, priority, attempt, max_attempts, \
    backoff, timeout_ms, scheduled_at, created_at, attempted_at, finalized_at, attempted_by, \
    lease_expires_at, unique_key, owner, target, progress, checkpoint, result, errors, \
    cancel_requested, workflow_id, workflow_step";

fn json_col(row: &SqliteRow, col: &str) -> StoreResult<Option<Value>> {
    let text: Option<String> = row.try_get(col).map_err(map_err)?;
    text.map(|t| serde_json::from_str(&t).map_err(|_| StoreError::corrupt(format!("jobs.{col}"))))
        .transpose()
}

fn typed<T: serde::de::DeserializeOwned>(row: &SqliteRow, col: &str) -> StoreResult<Option<T>> {
    json_col(row, col)?
        .map(|v| serde_json::from_value(v).map_err(|_| StoreError::corrupt(format!("jobs.{col}"))))
        .transpose()
}

pub(crate) fn job_from_row(row: &SqliteRow) -> StoreResult<Job> {
    let queue: String = row.try_get("queue").map_err(map_err)?;
    let state: String = row.try_get("state").map_err(map_err)?;
    let opt_at = |col: &str| -> StoreResult<Option<OffsetDateTime>> {
        Ok(row.try_get::<Option<i64>, _>(col).map_err(map_err)?.map(at))
    };
    Ok(Job {
        id: JobId(row.try_get("id").map_err(map_err)?),
        queue: QueueName::parse(&queue).map_err(|_| StoreError::corrupt("jobs.queue"))?,
        state: state.parse().map_err(StoreError::corrupt)?,
        args: json_col(row, "args")?.unwrap_or(Value::Null),
        priority: row.try_get::<i64, _>("priority").map_err(map_err)? as i16,
        attempt: row.try_get::<i64, _>("attempt").map_err(map_err)? as u32,
        max_attempts: row.try_get::<i64, _>("max_attempts").map_err(map_err)? as u32,
        backoff: typed(row, "backoff")?,
        timeout: Duration::from_millis(row.try_get::<i64, _>("timeout_ms").map_err(map_err)? as u64),
        scheduled_at: at(row.try_get("scheduled_at").map_err(map_err)?),
        created_at: at(row.try_get("created_at").map_err(map_err)?),
        attempted_at: opt_at("attempted_at")?,
        finalized_at: opt_at("finalized_at")?,
        attempted_by: row.try_get("attempted_by").map_err(map_err)?,
        lease_expires_at: opt_at("lease_expires_at")?,
        unique_key: row.try_get("unique_key").map_err(map_err)?,
        owner: row.try_get("owner").map_err(map_err)?,
        target: row.try_get("target").map_err(map_err)?,
        workflow: match row
            .try_get::<Option<i64>, _>("workflow_id")
            .map_err(map_err)?
        {
            Some(w) => Some((
                WorkflowId(w),
                row.try_get::<i64, _>("workflow_step").map_err(map_err)? as u32,
            )),
            None => None,
        },
        progress: typed::<Progress>(row, "progress")?,
        checkpoint: json_col(row, "checkpoint")?,
        result: json_col(row, "result")?,
        errors: typed::<Vec<AttemptError>>(row, "errors")?.unwrap_or_default(),
        cancel_requested: row.try_get::<i64, _>("cancel_requested").map_err(map_err)? != 0,
    })
}

/// One event to append; `seq` comes from the job row's incremented `event_seq`.
pub(crate) struct NewEvent {
    pub job: i64,
    pub seq: i64,
    pub kind: &'static str,
    pub data: Value,
}

pub(crate) async fn add_events(
    conn: &mut SqliteConnection,
    now: OffsetDateTime,
    events: &[NewEvent],
) -> StoreResult<()> {
    // Five parameters per row keeps each statement far below SQLite's 32,766 limit.
    for chunk in events.chunks(1000) {
        let mut q =
            QueryBuilder::<Sqlite>::new("INSERT INTO job_events (job_id, seq, at, kind, data) ");
        q.push_values(chunk, |mut b, e| {
            b.push_bind(e.job)
                .push_bind(e.seq)
                .push_bind(ms(now))
                .push_bind(e.kind)
                .push_bind(e.data.to_string());
        });
        q.build().execute(&mut *conn).await.map_err(map_err)?;
    }
    Ok(())
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub(crate) async fn get_in(conn: &mut SqliteConnection, id: i64) -> StoreResult<Option<Job>> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(map_err)?;
    row.as_ref().map(job_from_row).transpose()
}

/// Whether job `id` exists, to tell a lost lease (409) from a missing job (404).
async fn exists(conn: &mut SqliteConnection, id: JobId) -> StoreResult<bool> {
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM jobs WHERE id = ?")
        .bind(id.0)
        .fetch_optional(conn)
        .await
        .map_err(map_err)?;
    Ok(found.is_some())
}

pub(crate) async fn lost<T>(conn: &mut SqliteConnection, id: JobId) -> StoreResult<Fenced<T>> {
    Ok(if exists(conn, id).await? {
        Fenced::LeaseLost
    } else {
        Fenced::NotFound
    })
}
