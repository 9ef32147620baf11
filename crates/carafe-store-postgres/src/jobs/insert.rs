//! Inserting job rows (no unique checks) and their first events in one statement: for new
//! jobs, for a new workflow's steps, and for the jobs that process and purge files.

use carafe_core::StoreResult;
use carafe_core::jobs::{Job, JobState, NewJob, WorkflowId};
use sqlx::PgConnection;
use sqlx::types::Json;

use super::rows::{JOB_COLUMNS, int4, job_from_row};
use crate::map_err;

/// Inserts `jobs` and their first events in one statement; returns them in the given order.
/// With `workflow`, the jobs are that workflow's steps in order, and `pending[i]` says whether
/// step `i` waits for the others.
pub(crate) async fn insert_rows(
    conn: &mut PgConnection,
    jobs: &[&NewJob],
    workflow: Option<(WorkflowId, &[bool])>,
) -> StoreResult<Vec<Job>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    // The rows go in `ord` order, and identity values are drawn as rows are inserted, so ids
    // follow the request's order and `ORDER BY id` gives it back.
    let sql = format!(
        "WITH ins AS (
             INSERT INTO jobs (queue, state, args, priority, max_attempts, backoff, timeout_ms,
                               scheduled_at, created_at, unique_key, owner, target, workflow_id,
                               workflow_step, event_seq)
             SELECT queue, state, args, priority, max_attempts, backoff, timeout_ms,
                    scheduled_at, created_at, unique_key, owner, target, $13,
                    CASE WHEN $13 IS NULL THEN NULL ELSE ord - 1 END, 1
             FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::smallint[], $5::int[],
                         $6::jsonb[], $7::bigint[], $8::timestamptz[], $9::timestamptz[],
                         $10::text[], $11::text[], $12::text[])
                  WITH ORDINALITY AS n(queue, state, args, priority, max_attempts, backoff,
                                       timeout_ms, scheduled_at, created_at, unique_key, owner,
                                       target, ord)
             ORDER BY ord
             RETURNING {JOB_COLUMNS}),
         ev AS (
             INSERT INTO job_events (job_id, seq, at, kind, data)
             SELECT id, 1, created_at, 'state', jsonb_build_object('state', state, 'attempt', 0)
             FROM ins)
         SELECT * FROM ins ORDER BY id"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(jobs.iter().map(|j| j.queue.as_str()).collect::<Vec<_>>())
        .bind(
            jobs.iter()
                .enumerate()
                .map(|(i, j)| match workflow {
                    Some((_, pending)) if pending.get(i).copied().unwrap_or(false) => {
                        JobState::Pending.as_str()
                    }
                    _ => j.initial_state().as_str(),
                })
                .collect::<Vec<_>>(),
        )
        .bind(jobs.iter().map(|j| Json(&j.args)).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.priority).collect::<Vec<_>>())
        .bind(
            jobs.iter()
                .map(|j| int4(j.max_attempts))
                .collect::<Vec<_>>(),
        )
        .bind(jobs.iter().map(|j| j.backoff.map(Json)).collect::<Vec<_>>())
        .bind(
            jobs.iter()
                .map(|j| j.timeout.as_millis() as i64)
                .collect::<Vec<_>>(),
        )
        .bind(jobs.iter().map(|j| j.scheduled_at).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.created_at).collect::<Vec<_>>())
        .bind(
            jobs.iter()
                .map(|j| j.unique.as_ref().map(|u| u.key.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(jobs.iter().map(|j| j.owner.as_deref()).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.target.as_deref()).collect::<Vec<_>>())
        .bind(workflow.map(|(w, _)| w.0))
        .fetch_all(&mut *conn)
        .await
        .map_err(map_err)?;
    rows.iter().map(job_from_row).collect()
}
