//! `WorkflowStore` on SQLite, and `advance_in`, which every write that ends a step calls in
//! its own transaction. The single writer serializes every advance, so a workflow's next step
//! (or a chord's callback) is started exactly once.

use std::collections::BTreeSet;

use async_trait::async_trait;
use carafe_core::jobs::{
    Job, JobId, JobState, NewJob, QueueName, Step, SweepPage, Workflow, WorkflowId, WorkflowKind,
    WorkflowState, plan,
};
use carafe_core::store::WorkflowStore;
use carafe_core::{StoreError, StoreResult};
use serde_json::json;
use sqlx::{Row, SqliteConnection};
use time::OffsetDateTime;

use super::cancel::cancel_in;
use super::insert::insert_plain;
use super::rows::{JOB_COLUMNS, NewEvent, add_events, job_from_row};
use crate::{SqliteStore, at, map_err, ms};

async fn steps_of(conn: &mut SqliteConnection, id: WorkflowId) -> StoreResult<Vec<Job>> {
    let sql =
        format!("SELECT {JOB_COLUMNS} FROM jobs WHERE workflow_id = ? ORDER BY workflow_step");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.0)
        .fetch_all(conn)
        .await
        .map_err(map_err)?;
    rows.iter().map(job_from_row).collect()
}

async fn workflow_in(conn: &mut SqliteConnection, id: WorkflowId) -> StoreResult<Option<Workflow>> {
    let row =
        sqlx::query("SELECT kind, state, created_at, finalized_at FROM workflows WHERE id = ?")
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
        created_at: at(row.try_get("created_at").map_err(map_err)?),
        finalized_at: row
            .try_get::<Option<i64>, _>("finalized_at")
            .map_err(map_err)?
            .map(at),
        steps: steps_of(conn, id).await?,
    }))
}

/// Applies `plan` to one running workflow; returns the steps it started.
pub(crate) async fn advance_in(
    conn: &mut SqliteConnection,
    id: WorkflowId,
    now: OffsetDateTime,
) -> StoreResult<Vec<(JobId, QueueName)>> {
    let Some(wf) = workflow_in(&mut *conn, id).await? else {
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
            "UPDATE jobs SET state = 'available', scheduled_at = ?, event_seq = event_seq + 1,
                 args = json_set(args, '$.' || ?, json(?))
             WHERE id = ? AND state = 'pending' RETURNING queue, attempt, event_seq",
        )
        .bind(ms(now))
        .bind(key)
        .bind(value.to_string())
        .bind(job.0)
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_err)?;
        if let Some(row) = row {
            let queue: String = row.try_get("queue").map_err(map_err)?;
            let attempt: i64 = row.try_get("attempt").map_err(map_err)?;
            let event = NewEvent {
                job: job.0,
                seq: row.try_get("event_seq").map_err(map_err)?,
                kind: "state",
                data: json!({"state": JobState::Available, "attempt": attempt}),
            };
            add_events(&mut *conn, now, &[event]).await?;
            started.push((
                job,
                QueueName::parse(&queue).map_err(|_| StoreError::corrupt("jobs.queue"))?,
            ));
        }
    }
    for job in next.cancel {
        cancel_in(&mut *conn, job, now).await?;
    }
    if let Some(state) = next.finish {
        sqlx::query("UPDATE workflows SET state = ?, finalized_at = ? WHERE id = ?")
            .bind(state.as_str())
            .bind(ms(now))
            .bind(id.0)
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
    }
    Ok(started)
}

/// Advances each of these workflows (ids, repeats allowed) in the caller's transaction;
/// returns the steps started.
pub(crate) async fn advance_all(
    conn: &mut SqliteConnection,
    workflows: impl IntoIterator<Item = i64>,
    now: OffsetDateTime,
) -> StoreResult<Vec<(JobId, QueueName)>> {
    let mut started = Vec::new();
    for id in workflows.into_iter().collect::<BTreeSet<_>>() {
        started.extend(advance_in(&mut *conn, WorkflowId(id), now).await?);
    }
    Ok(started)
}

#[async_trait]
impl WorkflowStore for SqliteStore {
    async fn create_workflow(
        &self,
        kind: WorkflowKind,
        steps: Vec<NewJob>,
        now: OffsetDateTime,
    ) -> StoreResult<Workflow> {
        let mut tx = self.begin_write().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO workflows (kind, state, created_at) VALUES (?, 'running', ?) RETURNING id",
        )
        .bind(kind.as_str())
        .bind(ms(now))
        .fetch_one(&mut *tx)
        .await
        .map_err(map_err)?;
        let pending: Vec<bool> = (0..steps.len())
            .map(|i| kind.waits(i, steps.len()))
            .collect();
        let jobs = insert_plain(&mut tx, steps, Some((WorkflowId(id), &pending))).await?;
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
        let mut conn = self.reader.acquire().await.map_err(map_err)?;
        workflow_in(&mut conn, id).await
    }

    /// Reads the page on a read connection: most running workflows have nothing to do, and
    /// finding that out takes no write lock.
    async fn stalled_workflows(
        &self,
        after: Option<WorkflowId>,
        batch: u32,
    ) -> StoreResult<SweepPage> {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, kind FROM workflows WHERE state = 'running' AND id > ? ORDER BY id LIMIT ?",
        )
        .bind(after.map_or(i64::MIN, |a| a.0))
        .bind(i64::from(batch))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let steps: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT workflow_id, id, state FROM jobs
             WHERE workflow_id IN (SELECT value FROM json_each(?))
             ORDER BY workflow_id, workflow_step",
        )
        .bind(serde_json::to_string(&ids).expect("serializes"))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        SweepPage::from_rows(&rows, &steps, batch).map_err(StoreError::corrupt)
    }

    async fn advance_workflow(
        &self,
        id: WorkflowId,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<(JobId, QueueName)>> {
        let mut tx = self.begin_write().await?;
        let started = advance_in(&mut tx, id, now).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(started)
    }

    async fn prune_workflows(
        &self,
        finished_before: OffsetDateTime,
        discarded_before: OffsetDateTime,
        batch: u32,
    ) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        // A workflow past its retention goes with every step, once none of them is unfinished
        // (a retried step) or finalized after the workflow's cut-off.
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT w.id FROM workflows w
             WHERE w.finalized_at < MAX(?1, ?2)
               AND ((w.state IN ('completed', 'cancelled') AND w.finalized_at < ?1)
                    OR (w.state = 'failed' AND w.finalized_at < ?2))
               AND NOT EXISTS (
                 SELECT 1 FROM jobs j WHERE j.workflow_id = w.id
                   AND (j.finalized_at IS NULL
                        OR j.finalized_at >= CASE w.state WHEN 'failed' THEN ?2 ELSE ?1 END))
             LIMIT ?3",
        )
        .bind(ms(finished_before))
        .bind(ms(discarded_before))
        .bind(i64::from(batch))
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
        let list = serde_json::to_string(&ids).expect("serializes");
        for sql in [
            "DELETE FROM job_events WHERE job_id IN (
                 SELECT id FROM jobs WHERE workflow_id IN (SELECT value FROM json_each(?)))",
            "DELETE FROM jobs WHERE workflow_id IN (SELECT value FROM json_each(?))",
            "DELETE FROM workflows WHERE id IN (SELECT value FROM json_each(?))",
        ] {
            sqlx::query(sql)
                .bind(&list)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(ids.len() as u64)
    }
}
