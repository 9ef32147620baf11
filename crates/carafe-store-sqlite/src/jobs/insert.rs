//! Inserting job rows (no unique checks) with their first events: for new jobs, for a new
//! workflow's steps, and for the jobs that process and purge files.

use carafe_core::jobs::{Job, JobId, JobState, NewJob, WorkflowId};
use carafe_core::{StoreError, StoreResult};
use serde_json::json;
use sqlx::sqlite::Sqlite;
use sqlx::{QueryBuilder, SqliteConnection};

use super::rows::{NewEvent, add_events};
use crate::{map_err, ms};

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
