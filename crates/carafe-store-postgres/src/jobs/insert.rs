//! Inserting jobs in a few round trips whatever the batch size: unique keys are locked and
//! looked up for the whole batch at once, the batch's own duplicates are resolved here, and
//! the jobs to create go in with one multi-row `INSERT` that also writes their first events.
//!
//! SQLite gets uniqueness for free from its single writer. Here two servers may insert the
//! same key at the same moment, and neither would see the other's uncommitted row, so each
//! insert first takes a transaction-scoped advisory lock on `hash(queue/key)`: the second
//! waits for the first to commit, and its lookup (a later statement, hence a fresh snapshot
//! under READ COMMITTED) then finds the first's job.

use std::collections::HashMap;

use carafe_core::StoreResult;
use carafe_core::jobs::{Inserted, Job, JobState, NewJob, Unique, WorkflowId};
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;

use super::wakeup::Wakeups;
use super::{J_COLUMNS, JOB_COLUMNS, int4, job_from_row};
use crate::{PgStore, map_err};

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

impl PgStore {
    pub(crate) async fn insert_jobs_impl(&self, jobs: Vec<NewJob>) -> StoreResult<Vec<Inserted>> {
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
}
