//! The job queue on PostgreSQL: what SQLite does one row at a time (see
//! `carafe-store-sqlite/src/jobs`), done here with set-based statements, because several
//! servers share one database and every round trip holds locks a little longer.
//!
//! This file is `JobStore`: inserting (with unique keys) and reading jobs and their events.
//! The rest is one file per store trait: `leases.rs` (`LeaseStore`), `failures.rs`
//! (`FailureStore`), `admin.rs` (`QueueAdminStore`), `rate_groups.rs` (`RateGroupStore`),
//! `workflows.rs` (`WorkflowStore`). What several of them share sits below them: `rows.rs` (the job row), `insert.rs` (inserting
//! rows), `cancel.rs` (cancelling one job) and `wakeup.rs` (the `NOTIFY` hints other servers
//! listen for).
//!
//! Most writes are one statement of the shape
//! `WITH changed AS (UPDATE jobs … RETURNING …), ev AS (INSERT INTO job_events … FROM changed)
//! SELECT … FROM changed`: the job rows and their events (numbered by the incremented
//! `jobs.event_seq`) change together, whatever the batch size, in one round trip. A
//! data-modifying CTE always runs, even when the final `SELECT` does not read it.
//!
//! Inserting takes a few round trips whatever the batch size: unique keys are locked and
//! looked up for the whole batch at once, the batch's own duplicates are resolved here, and
//! the jobs to create go in with one multi-row `INSERT` that also writes their first events.
//! SQLite gets uniqueness for free from its single writer. Here two servers may insert the
//! same key at the same moment, and neither would see the other's uncommitted row, so each
//! insert first takes a transaction-scoped advisory lock on `hash(queue/key)`: the second
//! waits for the first to commit, and its lookup (a later statement, hence a fresh snapshot
//! under READ COMMITTED) then finds the first's job.

mod admin;
mod cancel;
mod failures;
pub(crate) mod insert;
mod leases;
mod rate_groups;
mod rows;
pub(crate) mod wakeup;
mod workflows;

use std::collections::HashMap;

use async_trait::async_trait;
use carafe_core::jobs::{
    Inserted, Job, JobEvent, JobFilter, JobId, JobState, NewJob, QueueName, Unique,
};
use carafe_core::page::{Page, PageRequest};
use carafe_core::store::JobStore;
use carafe_core::{StoreError, StoreResult};
use sqlx::postgres::Postgres;
use sqlx::{PgConnection, QueryBuilder, Row};
use time::OffsetDateTime;

use crate::{PgStore, map_err};
use insert::insert_rows;
use rows::{J_COLUMNS, JOB_COLUMNS, get_in, job_from_row};
use wakeup::Wakeups;

/// What becomes of each job of a batch.
enum Plan {
    /// The `n`th job of the insert.
    Create(usize),
    /// An earlier job of this batch (the `n`th of the insert) holds the key.
    SameAs(usize),
    /// A job already in the database holds the key.
    Existing(Box<Job>),
}

/// The oldest `created_at` the key's period admits, `None` for any age.
fn since(new: &NewJob, unique: &Unique) -> Option<OffsetDateTime> {
    let period = time::Duration::try_from(unique.period?).ok()?;
    new.created_at.checked_sub(period)
}

/// Whether `earlier`, a job created earlier in the same batch, holds `new`'s key: the same
/// test as the SQL lookup (effective state at `new`'s creation, within the period).
fn holds(earlier: &NewJob, new: &NewJob, unique: &Unique) -> bool {
    let state = earlier
        .initial_state()
        .effective(earlier.scheduled_at, new.created_at);
    unique.states.contains(&state) && since(new, unique).is_none_or(|s| earlier.created_at > s)
}

/// For each job with a unique key, the newest job in the database that holds the key (in the
/// key's states, at the new job's creation, within its period); `None` elsewhere. Locks every
/// key of the batch first, in hash order so two batches sharing keys cannot deadlock.
async fn find_unique(conn: &mut PgConnection, jobs: &[NewJob]) -> StoreResult<Vec<Option<Job>>> {
    let mut found = vec![None; jobs.len()];
    let (mut idx, mut queues, mut keys, mut states, mut nows, mut sinces) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for (i, new) in jobs.iter().enumerate() {
        let Some(unique) = &new.unique else { continue };
        idx.push(i as i32);
        queues.push(new.queue.as_str());
        keys.push(unique.key.as_str());
        states.push(
            unique
                .states
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(","),
        );
        nows.push(new.created_at);
        sinces.push(since(new, unique));
    }
    if idx.is_empty() {
        return Ok(found);
    }
    sqlx::query(
        "SELECT pg_advisory_xact_lock(h) FROM (
             SELECT DISTINCT hashtextextended(q || '/' || k, 0) AS h
             FROM unnest($1::text[], $2::text[]) AS u(q, k) ORDER BY h) AS held",
    )
    .bind(&queues)
    .bind(&keys)
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    // The CASE is `JobState::effective`: a waiting job whose time has come counts as available.
    let sql = format!(
        "SELECT u.i, {J_COLUMNS}
         FROM unnest($1::int[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                     $6::timestamptz[]) AS u(i, queue, key, states, now, since)
         CROSS JOIN LATERAL (
             SELECT {JOB_COLUMNS} FROM jobs
             WHERE jobs.queue = u.queue AND jobs.unique_key = u.key
               AND (u.since IS NULL OR jobs.created_at > u.since)
               AND CASE WHEN jobs.state IN ('scheduled', 'retryable') AND jobs.scheduled_at <= u.now
                        THEN 'available' ELSE jobs.state END = ANY (string_to_array(u.states, ','))
             ORDER BY jobs.id DESC LIMIT 1) AS j"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&idx)
        .bind(&queues)
        .bind(&keys)
        .bind(&states)
        .bind(&nows)
        .bind(&sinces)
        .fetch_all(&mut *conn)
        .await
        .map_err(map_err)?;
    for row in &rows {
        let i: i32 = row.try_get("i").map_err(map_err)?;
        found[i as usize] = Some(job_from_row(row)?);
    }
    Ok(found)
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

#[async_trait]
impl JobStore for PgStore {
    async fn insert_jobs(&self, jobs: Vec<NewJob>) -> StoreResult<Vec<Inserted>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let found = find_unique(&mut tx, &jobs).await?;
        let mut create: Vec<&NewJob> = Vec::with_capacity(jobs.len());
        // Jobs to create that carry a unique key, by (queue, key): later jobs of the batch
        // may match them, and being newer than anything stored, they win over `found`.
        let mut keyed: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
        let mut plans = Vec::with_capacity(jobs.len());
        for (new, found) in jobs.iter().zip(found) {
            if let Some(unique) = &new.unique {
                let key = (new.queue.as_str(), unique.key.as_str());
                let earlier = keyed.get(&key).and_then(|ks| {
                    ks.iter()
                        .rev()
                        .copied()
                        .find(|&k| holds(create[k], new, unique))
                });
                if let Some(k) = earlier {
                    plans.push(Plan::SameAs(k));
                    continue;
                }
                if let Some(job) = found {
                    plans.push(Plan::Existing(Box::new(job)));
                    continue;
                }
                keyed.entry(key).or_default().push(create.len());
            }
            plans.push(Plan::Create(create.len()));
            create.push(new);
        }
        let created = insert_rows(&mut tx, &create, None).await?;
        let mut wake = Wakeups::default();
        // New jobs have no watchers yet (their ids are not known outside this call), so only
        // their queues are told.
        created.iter().for_each(|j| wake.queue(&j.queue));
        wake.send(&mut tx).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(plans
            .into_iter()
            .map(|p| match p {
                Plan::Create(k) => Inserted::Created(created[k].clone()),
                Plan::SameAs(k) => Inserted::Existing(created[k].clone()),
                Plan::Existing(job) => Inserted::Existing(*job),
            })
            .collect())
    }

    async fn get_job(&self, id: JobId) -> StoreResult<Option<Job>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        get_in(&mut conn, id, false).await
    }

    async fn job_queues(&self, ids: &[JobId]) -> StoreResult<Vec<(JobId, QueueName)>> {
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

    async fn job_events(&self, id: JobId, after: i64, limit: u32) -> StoreResult<Vec<JobEvent>> {
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
