//! `WorkflowStore` on PostgreSQL, and the advance every write that ends a step runs in its own
//! transaction. Advancing locks the workflow's row (`FOR UPDATE`), so two steps completing at
//! once on different servers are seen one after the other: the next step (or a chord's
//! callback) is started exactly once.
//!
//! Lock order: a write that may end steps locks their running workflows (`lock_workflows_of`,
//! in id order) *before* it locks the steps' rows. An advance may cancel other steps of its
//! workflow, which locks their rows; were the order ever reversed, a step finishing while its
//! workflow fails could deadlock with the failing one.

use std::collections::BTreeSet;

use async_trait::async_trait;
use carafe_core::jobs::{
    Job, JobId, JobState, NewJob, QueueName, Step, SweepPage, Workflow, WorkflowId, WorkflowKind,
    WorkflowState, plan,
};
use carafe_core::store::WorkflowStore;
use carafe_core::{StoreError, StoreResult};
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;

use super::cancel::cancel_in;
use super::insert::insert_rows;
use super::rows::{JOB_COLUMNS, job_from_row};
use super::wakeup::Wakeups;
use crate::{PgStore, map_err};

async fn steps_of(conn: &mut PgConnection, id: WorkflowId) -> StoreResult<Vec<Job>> {
    let sql =
        format!("SELECT {JOB_COLUMNS} FROM jobs WHERE workflow_id = $1 ORDER BY workflow_step");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.0)
        .fetch_all(conn)
        .await
        .map_err(map_err)?;
    rows.iter().map(job_from_row).collect()
}

/// The workflow and its steps; with `lock`, its row stays locked until the transaction ends.
async fn workflow_in(
    conn: &mut PgConnection,
    id: WorkflowId,
    lock: bool,
) -> StoreResult<Option<Workflow>> {
    let sql = format!(
        "SELECT kind, state, created_at, finalized_at FROM workflows WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.0)
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_err)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let kind: String = row.try_get("kind").map_err(map_err)?;
    let state: String = row.try_get("state").map_err(map_err)?;
    Ok(Some(Workflow {
        id,
        kind: kind.parse().map_err(StoreError::corrupt)?,
        state: state.parse().map_err(StoreError::corrupt)?,
        created_at: row.try_get("created_at").map_err(map_err)?,
        finalized_at: row.try_get("finalized_at").map_err(map_err)?,
        steps: steps_of(conn, id).await?,
    }))
}

/// Applies `plan` to one running workflow; returns the steps it started.
async fn advance_in(
    conn: &mut PgConnection,
    id: WorkflowId,
    now: OffsetDateTime,
    wake: &mut Wakeups,
) -> StoreResult<Vec<(JobId, QueueName)>> {
    let Some(wf) = workflow_in(&mut *conn, id, true).await? else {
        return Ok(Vec::new());
    };
    if wf.state != WorkflowState::Running {
        return Ok(Vec::new());
    }
    let steps: Vec<Step> = wf
        .steps
        .iter()
        .map(|j| Step {
            job: j.id,
            state: j.state,
            result: j.result.clone(),
        })
        .collect();
    let next = plan(wf.kind, &steps);
    let mut started = Vec::new();
    for (job, key, value) in next.activate {
        let row = sqlx::query(
            "WITH a AS (
                 UPDATE jobs SET state = 'available', scheduled_at = $1, event_seq = event_seq + 1,
                     args = args || jsonb_build_object($2::text, $3::jsonb)
                 WHERE id = $4 AND state = 'pending' RETURNING id, queue, attempt, event_seq),
             ev AS (
                 INSERT INTO job_events (job_id, seq, at, kind, data)
                 SELECT id, event_seq, $1, 'state',
                     jsonb_build_object('state', 'available', 'attempt', attempt)
                 FROM a)
             SELECT queue FROM a",
        )
        .bind(now)
        .bind(key)
        .bind(Json(&value))
        .bind(job.0)
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_err)?;
        if let Some(row) = row {
            let queue: String = row.try_get("queue").map_err(map_err)?;
            let queue = QueueName::parse(&queue).map_err(|_| StoreError::corrupt("jobs.queue"))?;
            wake.job(job);
            wake.queue(&queue);
            started.push((job, queue));
        }
    }
    for job in next.cancel {
        cancel_in(&mut *conn, job, now, wake).await?;
    }
    if let Some(state) = next.finish {
        sqlx::query("UPDATE workflows SET state = $1, finalized_at = $2 WHERE id = $3")
            .bind(state.as_str())
            .bind(now)
            .bind(id.0)
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
    }
    Ok(started)
}

/// Locks the running workflows these jobs are steps of, in id order, and returns their ids:
/// one statement, whatever the number of jobs (none for jobs outside workflows). Call it
/// before locking the jobs themselves.
pub(crate) async fn lock_workflows_of(
    conn: &mut PgConnection,
    jobs: &[i64],
) -> StoreResult<BTreeSet<i64>> {
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM workflows
         WHERE id IN (SELECT workflow_id FROM jobs WHERE id = ANY($1)) AND state = 'running'
         ORDER BY id FOR UPDATE",
    )
    .bind(jobs)
    .fetch_all(conn)
    .await
    .map_err(map_err)?;
    Ok(ids.into_iter().collect())
}

/// Advances each of these workflows (locked by the caller, see `lock_workflows_of`) in the
/// caller's transaction, in id order; returns the steps started.
pub(crate) async fn advance_all(
    conn: &mut PgConnection,
    workflows: &BTreeSet<i64>,
    now: OffsetDateTime,
    wake: &mut Wakeups,
) -> StoreResult<Vec<(JobId, QueueName)>> {
    let mut started = Vec::new();
    for &id in workflows {
        started.extend(advance_in(&mut *conn, WorkflowId(id), now, wake).await?);
    }
    Ok(started)
}

#[async_trait]
impl WorkflowStore for PgStore {
    async fn create_workflow(
        &self,
        kind: WorkflowKind,
        steps: Vec<NewJob>,
        now: OffsetDateTime,
    ) -> StoreResult<Workflow> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO workflows (kind, state, created_at) VALUES ($1, 'running', $2)
             RETURNING id",
        )
        .bind(kind.as_str())
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(map_err)?;
        let pending: Vec<bool> = (0..steps.len())
            .map(|i| kind.waits(i, steps.len()))
            .collect();
        let refs: Vec<&NewJob> = steps.iter().collect();
        let jobs = insert_rows(&mut tx, &refs, Some((WorkflowId(id), &pending))).await?;
        let mut wake = Wakeups::default();
        for job in jobs.iter().filter(|j| j.state != JobState::Pending) {
            wake.queue(&job.queue);
        }
        wake.send(&mut tx).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(Workflow {
            id: WorkflowId(id),
            kind,
            state: WorkflowState::Running,
            created_at: now,
            finalized_at: None,
            steps: jobs,
        })
    }

    async fn get_workflow(&self, id: WorkflowId) -> StoreResult<Option<Workflow>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        workflow_in(&mut conn, id, false).await
    }

    /// Reads the page without locking anything: most running workflows have nothing to do.
    async fn stalled_workflows(
        &self,
        after: Option<WorkflowId>,
        batch: u32,
    ) -> StoreResult<SweepPage> {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, kind FROM workflows WHERE state = 'running' AND id > $1
             ORDER BY id LIMIT $2",
        )
        .bind(after.map_or(i64::MIN, |a| a.0))
        .bind(i64::from(batch))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let steps: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT workflow_id, id, state FROM jobs WHERE workflow_id = ANY($1)
             ORDER BY workflow_id, workflow_step",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        SweepPage::from_rows(&rows, &steps, batch).map_err(StoreError::corrupt)
    }

    async fn advance_workflow(
        &self,
        id: WorkflowId,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<(JobId, QueueName)>> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let mut wake = Wakeups::default();
        let started = advance_in(&mut tx, id, now, &mut wake).await?;
        wake.send(&mut tx).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(started)
    }

    async fn prune_workflows(
        &self,
        finished_before: OffsetDateTime,
        discarded_before: OffsetDateTime,
        batch: u32,
    ) -> StoreResult<u64> {
        // One statement: a bounded batch of workflows past their retention whose steps are all
        // finished before that cut-off (skipping workflows another transaction holds), then
        // their steps' events, the steps, and the workflows. A step retried meanwhile (no
        // longer finalized) is left out, to be pruned later as a job of no workflow.
        let pruned: i64 = sqlx::query_scalar(
            "WITH flows AS MATERIALIZED (
                 SELECT id FROM workflows w
                 WHERE finalized_at < GREATEST($1, $2)
                   AND ((state IN ('completed', 'cancelled') AND finalized_at < $1)
                        OR (state = 'failed' AND finalized_at < $2))
                   AND NOT EXISTS (
                     SELECT 1 FROM jobs j WHERE j.workflow_id = w.id
                       AND (j.finalized_at IS NULL
                            OR j.finalized_at >= CASE w.state WHEN 'failed' THEN $2 ELSE $1 END))
                 LIMIT $3
                 FOR UPDATE SKIP LOCKED),
             steps AS MATERIALIZED (
                 SELECT id FROM jobs
                 WHERE workflow_id IN (SELECT id FROM flows) AND finalized_at IS NOT NULL
                 FOR UPDATE),
             events AS (DELETE FROM job_events WHERE job_id IN (SELECT id FROM steps)),
             gone_steps AS (DELETE FROM jobs WHERE id IN (SELECT id FROM steps)),
             gone AS (DELETE FROM workflows WHERE id IN (SELECT id FROM flows) RETURNING id)
             SELECT count(*) FROM gone",
        )
        .bind(finished_before)
        .bind(discarded_before)
        .bind(i64::from(batch))
        .fetch_one(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(pruned as u64)
    }
}
