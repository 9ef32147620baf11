//! `JobStore` on SQLite: inserting (with unique keys), reading and listing jobs, and reading
//! the per-job event log every change appends to.
//!
//! The rest of the job queue is one file per store trait: `leases.rs` (`LeaseStore`),
//! `failures.rs` (`FailureStore`), `admin.rs` (`QueueAdminStore`), `rate_groups.rs`
//! (`RateGroupStore`), `workflows.rs` (`WorkflowStore`). What several of them share sits
//! below them: `rows.rs` (the job row and its events), `insert.rs` (inserting rows) and
//! `cancel.rs` (cancelling one job).

mod admin;
mod cancel;
mod failures;
pub(crate) mod insert;
mod leases;
mod rate_groups;
mod rows;
mod workflows;

use async_trait::async_trait;
use carafe_core::jobs::{Inserted, Job, JobEvent, JobFilter, JobId, JobState, NewJob, QueueName};
use carafe_core::page::{Page, PageRequest};
use carafe_core::store::JobStore;
use carafe_core::{StoreError, StoreResult};
use sqlx::sqlite::Sqlite;
use sqlx::{QueryBuilder, Row, SqliteConnection};
use time::OffsetDateTime;

use crate::{SqliteStore, at, map_err, ms};
use insert::insert_plain;
use rows::{JOB_COLUMNS, get_in, job_from_row};

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

#[async_trait]
impl JobStore for SqliteStore {
    async fn insert_jobs(&self, jobs: Vec<NewJob>) -> StoreResult<Vec<Inserted>> {
        let mut tx = self.begin_write().await?;
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

    async fn get_job(&self, id: JobId) -> StoreResult<Option<Job>> {
        let mut conn = self.reader.acquire().await.map_err(map_err)?;
        get_in(&mut conn, id.0).await
    }

    async fn job_queues(&self, ids: &[JobId]) -> StoreResult<Vec<(JobId, QueueName)>> {
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

    async fn list_jobs(
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

    async fn job_events(&self, id: JobId, after: i64, limit: u32) -> StoreResult<Vec<JobEvent>> {
        let rows = sqlx::query(
            "SELECT seq, at, kind, data FROM job_events WHERE job_id = ? AND seq > ?
             ORDER BY seq LIMIT ?",
        )
        .bind(id.0)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|row| {
                let data: String = row.try_get("data").map_err(map_err)?;
                Ok(JobEvent {
                    job_id: id,
                    seq: row.try_get("seq").map_err(map_err)?,
                    at: at(row.try_get("at").map_err(map_err)?),
                    kind: row.try_get("kind").map_err(map_err)?,
                    data: serde_json::from_str(&data)
                        .map_err(|_| StoreError::corrupt("job_events.data"))?,
                })
            })
            .collect()
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
