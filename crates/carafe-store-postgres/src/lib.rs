//! The PostgreSQL backend, for running several Carafe instances on one database. SQL that
//! differs from SQLite's (upserts, identity columns, types) lives here; behaviour is held equal
//! by the conformance suite in `carafe-core`.

mod audit;
mod direct;
mod files;
mod idempotency;
mod jobs;
mod keys;
mod multipart;
mod rewrap;
mod schedules;
#[cfg(feature = "testing")]
pub mod testing;
mod uploads;

use std::time::Duration;

use async_trait::async_trait;
use carafe_core::jobs::{
    Advanced, Claim, ClaimedJob, Completion, Failure, FailureOutcome, Fenced, Heartbeat,
    HeartbeatAck, Inserted, Job, JobEvent, JobFilter, JobId, NewJob, QueueLimits, QueueName,
    QueueStats, SweepPage, Workflow, WorkflowId, WorkflowKind,
};
use carafe_core::page::{Page, PageRequest};
use carafe_core::store::{Backend, JobStore, LeaderStore, PoolStats, WakeupSink, WorkflowStore};
use carafe_core::{StoreError, StoreResult};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions};
use time::OffsetDateTime;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (a `postgres://` URL). Does not migrate.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(map_err)?;
        Ok(PgStore { pool })
    }
}

#[async_trait]
impl Backend for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Other(Box::new(e)))
    }

    async fn pending_migrations(&self) -> StoreResult<Vec<String>> {
        let table: Option<String> =
            sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
                .fetch_one(&self.pool)
                .await
                .map_err(map_err)?;
        let applied: Vec<i64> = if table.is_some() {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?
        } else {
            Vec::new()
        };
        Ok(MIGRATOR
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .map(|m| format!("{}_{}", m.version, m.description))
            .collect())
    }

    fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size(),
            idle: self.pool.num_idle() as u32,
            max: self.pool.options().get_max_connections(),
        }
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    /// Holds one pooled connection for `LISTEN carafe_wakeup` until the pool is closed.
    async fn listen(&self, sink: WakeupSink) -> StoreResult<()> {
        jobs::wakeup::listen(&self.pool, sink).await
    }
}

#[async_trait]
impl JobStore for PgStore {
    async fn insert_jobs(&self, jobs: Vec<NewJob>) -> StoreResult<Vec<Inserted>> {
        self.insert_jobs_impl(jobs).await
    }
    async fn get_job(&self, id: JobId) -> StoreResult<Option<Job>> {
        self.get_job_impl(id).await
    }
    async fn job_queues(&self, ids: &[JobId]) -> StoreResult<Vec<(JobId, QueueName)>> {
        self.job_queues_impl(ids).await
    }
    async fn list_jobs(
        &self,
        filter: &JobFilter,
        page: &PageRequest,
        now: OffsetDateTime,
    ) -> StoreResult<Page<Job>> {
        self.list_jobs_impl(filter, page, now).await
    }
    async fn claim_jobs(&self, claim: Claim<'_>) -> StoreResult<Vec<ClaimedJob>> {
        self.claim_jobs_impl(claim).await
    }
    async fn push_queues(&self, now: OffsetDateTime) -> StoreResult<Vec<QueueName>> {
        self.push_queues_impl(now).await
    }
    async fn heartbeat_job(&self, hb: Heartbeat<'_>) -> StoreResult<Fenced<HeartbeatAck>> {
        self.heartbeat_job_impl(hb).await
    }
    async fn complete_jobs(
        &self,
        items: &[Completion],
        now: OffsetDateTime,
    ) -> StoreResult<Advanced<Vec<Fenced<()>>>> {
        self.complete_jobs_impl(items, now).await
    }
    async fn fail_job(
        &self,
        failure: Failure<'_>,
    ) -> StoreResult<Advanced<Fenced<FailureOutcome>>> {
        self.fail_job_impl(failure).await
    }
    async fn cancel_job(
        &self,
        id: JobId,
        now: OffsetDateTime,
    ) -> StoreResult<Advanced<Option<Job>>> {
        self.cancel_job_impl(id, now).await
    }
    async fn retry_job(&self, id: JobId, now: OffsetDateTime) -> StoreResult<Option<Job>> {
        self.retry_job_impl(id, now).await
    }
    async fn rescue_expired_jobs(
        &self,
        now: OffsetDateTime,
        batch: u32,
    ) -> StoreResult<Advanced<Vec<JobId>>> {
        self.rescue_expired_jobs_impl(now, batch).await
    }
    async fn prune_jobs(
        &self,
        finished_before: OffsetDateTime,
        discarded_before: OffsetDateTime,
        batch: u32,
    ) -> StoreResult<u64> {
        self.prune_jobs_impl(finished_before, discarded_before, batch)
            .await
    }
    async fn job_events(&self, id: JobId, after: i64, limit: u32) -> StoreResult<Vec<JobEvent>> {
        self.job_events_impl(id, after, limit).await
    }
    async fn queue_stats(&self, now: OffsetDateTime) -> StoreResult<Vec<QueueStats>> {
        self.queue_stats_impl(now).await
    }
    async fn set_queue_paused(&self, queue: &QueueName, paused: bool) -> StoreResult<()> {
        self.set_queue_paused_impl(queue, paused).await
    }
    async fn set_queue_limits(&self, queue: &QueueName, limits: QueueLimits) -> StoreResult<()> {
        self.set_queue_limits_impl(queue, limits).await
    }
}

#[async_trait]
impl WorkflowStore for PgStore {
    async fn create_workflow(
        &self,
        kind: WorkflowKind,
        steps: Vec<NewJob>,
        now: OffsetDateTime,
    ) -> StoreResult<Workflow> {
        self.create_workflow_impl(kind, steps, now).await
    }
    async fn get_workflow(&self, id: WorkflowId) -> StoreResult<Option<Workflow>> {
        self.get_workflow_impl(id).await
    }
    async fn stalled_workflows(
        &self,
        after: Option<WorkflowId>,
        batch: u32,
    ) -> StoreResult<SweepPage> {
        self.stalled_workflows_impl(after, batch).await
    }
    async fn advance_workflow(
        &self,
        id: WorkflowId,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<(JobId, QueueName)>> {
        self.advance_workflow_impl(id, now).await
    }
    async fn prune_workflows(
        &self,
        finished_before: OffsetDateTime,
        discarded_before: OffsetDateTime,
        batch: u32,
    ) -> StoreResult<u64> {
        self.prune_workflows_impl(finished_before, discarded_before, batch)
            .await
    }
}

#[async_trait]
impl LeaderStore for PgStore {
    async fn try_lead(
        &self,
        name: &str,
        holder: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        self.try_lead_impl(name, holder, until, now).await
    }
    async fn resign(&self, name: &str, holder: &str) -> StoreResult<()> {
        self.resign_impl(name, holder).await
    }
}

/// Maps PostgreSQL errors into the store's few cases.
pub(crate) fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict("unique constraint")
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => StoreError::Unavailable(Box::new(e)),
        // Class 08: connection exceptions; 57P0x: the server is shutting down or restarting.
        sqlx::Error::Database(db)
            if db
                .code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57P0")) =>
        {
            StoreError::Unavailable(Box::new(e))
        }
        _ => StoreError::Other(Box::new(e)),
    }
}
