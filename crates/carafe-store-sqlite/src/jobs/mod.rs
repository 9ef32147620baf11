//! `JobStore` on SQLite: inserting (with unique keys), reading and listing jobs, and the
//! per-job event log every change appends to. Leases live in `lease.rs`, operator actions and
//! maintenance in `admin.rs`.

mod admin;
mod lease;
mod workflows;

use std::time::Duration;

use carafe_core::jobs::{
    AttemptError, Inserted, Job, JobFilter, JobId, JobState, NewJob, Progress, QueueName,
    WorkflowId,
};
use carafe_core::page::{Page, PageRequest};
use carafe_core::{StoreError, StoreResult};
use serde_json::{Value, json};
use sqlx::sqlite::{Sqlite, SqliteRow};
use sqlx::{QueryBuilder, Row, SqliteConnection};
use time::OffsetDateTime;

use crate::{SqliteStore, at, map_err, ms};

pub(crate) const JOB_COLUMNS: &str = "id, queue, state, args, priority, attempt, max_attempts, \
    backoff, timeout_ms, scheduled_at, created_at, attempted_at, finalized_at, attempted_by, \
    lease_expires_at, unique_key, owner, target, progress, checkpoint, result, errors, \
    cancel_requested, workflow_id, workflow_step";

/// The SQL test for "waiting and due": what claiming takes and what reads as `available`.
const WAITING: &str = "state IN ('available', 'scheduled', 'retryable')";

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

/// The newest job with the same unique key in the key's states and period, if any.
async fn find_unique(conn: &mut SqliteConnection, new: &NewJob) -> StoreResult<Option<Job>> {
    let Some(unique) = &new.unique else {
        return Ok(None);
    };
    let mut q =
        QueryBuilder::<Sqlite>::new(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE queue = "));
    q.push_bind(new.queue.as_str())
        .push(" AND unique_key = ")
        .push_bind(unique.key.clone())
        .push(" AND ");
    push_states(&mut q, &unique.states, new.created_at);
    if let Some(period) = unique.period {
        q.push(" AND created_at > ")
            .push_bind(ms(new.created_at - period));
    }
    q.push(" ORDER BY id DESC LIMIT 1");
    let row = q.build().fetch_optional(conn).await.map_err(map_err)?;
    row.as_ref().map(job_from_row).transpose()
}

/// `(… OR …)` matching jobs whose *effective* state (at `now`) is one of `states`.
fn push_states(q: &mut QueryBuilder<Sqlite>, states: &[JobState], now: OffsetDateTime) {
    q.push("(0");
    for state in states {
        q.push(" OR ");
        push_state(q, *state, now);
    }
    q.push(")");
}

fn push_state(q: &mut QueryBuilder<Sqlite>, state: JobState, now: OffsetDateTime) {
    match state {
        JobState::Available => {
            q.push(
                "(state = 'available' OR (state IN ('scheduled', 'retryable') AND scheduled_at <= ",
            )
            .push_bind(ms(now))
            .push("))");
        }
        JobState::Scheduled | JobState::Retryable => {
            q.push("(state = ")
                .push_bind(state.as_str())
                .push(" AND scheduled_at > ")
                .push_bind(ms(now))
                .push(")");
        }
        other => {
            q.push("state = ").push_bind(other.as_str());
        }
    }
}

/// Inserts `jobs` (no unique checks) and returns them in order, with their first events.
/// With `workflow`, the jobs are that workflow's steps in order, and `pending[i]` says whether
/// step `i` waits for the others.
pub(crate) async fn insert_plain(
    conn: &mut SqliteConnection,
    jobs: Vec<NewJob>,
    workflow: Option<(WorkflowId, &[bool])>,
) -> StoreResult<Vec<Job>> {
    let mut out = Vec::with_capacity(jobs.len());
    let mut jobs = jobs.into_iter().enumerate().peekable();
    let state_of = |i: usize, j: &NewJob| match workflow {
        Some((_, pending)) if pending.get(i).copied().unwrap_or(false) => JobState::Pending,
        _ => j.initial_state(),
    };
    // 15 parameters per row: 1,000 rows stay below SQLite's parameter limit.
    while jobs.peek().is_some() {
        let chunk: Vec<(usize, NewJob)> = jobs.by_ref().take(1000).collect();
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO jobs (queue, state, args, priority, max_attempts, backoff, timeout_ms, \
             scheduled_at, created_at, unique_key, owner, target, workflow_id, workflow_step, \
             event_seq) ",
        );
        q.push_values(&chunk, |mut b, (i, j)| {
            b.push_bind(j.queue.as_str().to_owned())
                .push_bind(state_of(*i, j).as_str())
                .push_bind(j.args.to_string())
                .push_bind(i64::from(j.priority))
                .push_bind(i64::from(j.max_attempts))
                .push_bind(
                    j.backoff
                        .map(|b| serde_json::to_string(&b).expect("serializes")),
                )
                .push_bind(j.timeout.as_millis() as i64)
                .push_bind(ms(j.scheduled_at))
                .push_bind(ms(j.created_at))
                .push_bind(j.unique.as_ref().map(|u| u.key.clone()))
                .push_bind(j.owner.clone())
                .push_bind(j.target.clone())
                .push_bind(workflow.map(|(w, _)| w.0))
                .push_bind(workflow.map(|_| *i as i64))
                .push_bind(1i64);
        });
        // Only the ids come back: the rest of each row is what was sent. Ids are assigned in
        // insertion order, so sorted ids match the request's order.
        q.push(" RETURNING id");
        let mut ids: Vec<i64> = q
            .build_query_scalar()
            .fetch_all(&mut *conn)
            .await
            .map_err(map_err)?;
        ids.sort_unstable();
        if ids.len() != chunk.len() {
            return Err(StoreError::corrupt(
                "insert returned a different number of ids",
            ));
        }
        let now = chunk
            .first()
            .map_or_else(carafe_core::time::now, |(_, j)| j.created_at);
        let events: Vec<_> = chunk
            .iter()
            .zip(&ids)
            .map(|((i, j), id)| NewEvent {
                job: *id,
                seq: 1,
                kind: "state",
                data: json!({"state": state_of(*i, j), "attempt": 0}),
            })
            .collect();
        add_events(conn, now, &events).await?;
        out.extend(chunk.into_iter().zip(ids).map(|((i, j), id)| {
            let state = state_of(i, &j);
            let mut job = j.into_job(JobId(id));
            job.state = state;
            job.workflow = workflow.map(|(w, _)| (w, i as u32));
            job
        }));
    }
    Ok(out)
}

impl SqliteStore {
    pub(crate) async fn insert_jobs_impl(&self, jobs: Vec<NewJob>) -> StoreResult<Vec<Inserted>> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        let mut out = Vec::with_capacity(jobs.len());
        let mut plain: Vec<NewJob> = Vec::new();
        for new in jobs {
            if new.unique.is_none() {
                plain.push(new);
                continue;
            }
            // Earlier jobs of the batch go in first: a unique key may match one of them.
            let batch = std::mem::take(&mut plain);
            out.extend(
                insert_plain(&mut tx, batch, None)
                    .await?
                    .into_iter()
                    .map(Inserted::Created),
            );
            match find_unique(&mut tx, &new).await? {
                Some(existing) => out.push(Inserted::Existing(existing)),
                None => out.extend(
                    insert_plain(&mut tx, vec![new], None)
                        .await?
                        .into_iter()
                        .map(Inserted::Created),
                ),
            }
        }
        out.extend(
            insert_plain(&mut tx, plain, None)
                .await?
                .into_iter()
                .map(Inserted::Created),
        );
        tx.commit().await.map_err(map_err)?;
        Ok(out)
    }

    pub(crate) async fn get_job_impl(&self, id: JobId) -> StoreResult<Option<Job>> {
        let mut conn = self.reader.acquire().await.map_err(map_err)?;
        get_in(&mut conn, id.0).await
    }

    pub(crate) async fn job_queues_impl(
        &self,
        ids: &[JobId],
    ) -> StoreResult<Vec<(JobId, QueueName)>> {
        let ids: Vec<i64> = ids.iter().map(|j| j.0).collect();
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, queue FROM jobs WHERE id IN (SELECT value FROM json_each(?))",
        )
        .bind(serde_json::to_string(&ids).expect("serializes"))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        queues_of(rows)
    }

    pub(crate) async fn push_queues_impl(
        &self,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<QueueName>> {
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
            QueryBuilder::<Sqlite>::new(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id < "));
        q.push_bind(before);
        if let Some(queue) = &filter.queue {
            q.push(" AND queue = ").push_bind(queue.as_str().to_owned());
        }
        if let Some(state) = filter.state {
            q.push(" AND ");
            push_state(&mut q, state, now);
        }
        if let Some(owner) = &filter.owner {
            q.push(" AND owner = ").push_bind(owner.clone());
        }
        if filter.exclude_reserved {
            q.push(" AND queue NOT LIKE ")
                .push_bind(format!("{}%", QueueName::RESERVED_PREFIX));
        }
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(page.limit) + 1);
        let rows = q.build().fetch_all(&self.reader).await.map_err(map_err)?;
        let jobs = rows
            .iter()
            .map(job_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(jobs, page.limit, |j| j.id.to_string()))
    }
}

/// `(id, queue)` rows as typed pairs.
fn queues_of(rows: Vec<(i64, String)>) -> StoreResult<Vec<(JobId, QueueName)>> {
    rows.into_iter()
        .map(|(id, queue)| {
            let queue = QueueName::parse(&queue).map_err(|_| StoreError::corrupt("jobs.queue"))?;
            Ok((JobId(id), queue))
        })
        .collect()
}
