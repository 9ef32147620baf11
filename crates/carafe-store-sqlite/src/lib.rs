//! The SQLite backend, Carafe's embedded default. One file in the data dir, in WAL mode, with a
//! single writer connection (SQLite allows one writer at a time; queueing writers in our pool is
//! cheaper than letting them fight over the lock) and a pool of read-only connections.
//! Every commit is synced (`synchronous=FULL`): an answer is never sent for a write a power cut
//! could take back.

mod audit;
mod direct;
mod files;
mod idempotency;
mod jobs;
mod keys;
mod multipart;
mod rewrap;
mod schedules;
mod uploads;

use std::path::Path;
use std::str::FromStr;
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
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use time::OffsetDateTime;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// How long a statement waits for another process (a CLI command, say) to release the lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`. Does not migrate.
    pub async fn open(path: &Path, readers: u32) -> StoreResult<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .pragma("temp_store", "memory");
        Self::connect(options, readers).await
    }

    /// Opens from a `sqlite://` URL (as given in `CARAFE_DATABASE_URL`).
    pub async fn open_url(url: &str, readers: u32) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(map_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        Self::connect(options, readers).await
    }

    async fn connect(options: SqliteConnectOptions, readers: u32) -> StoreResult<Self> {
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .map_err(map_err)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(readers.max(1))
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.read_only(true))
            .await
            .map_err(map_err)?;
        Ok(SqliteStore { writer, reader })
    }
}

#[async_trait]
impl Backend for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR
            .run(&self.writer)
            .await
            .map_err(|e| StoreError::Other(Box::new(e)))
    }

    async fn pending_migrations(&self) -> StoreResult<Vec<String>> {
        let table: Option<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?;
        let applied: Vec<i64> = if table.is_some() {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.reader)
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
            size: self.writer.size() + self.reader.size(),
            idle: (self.writer.num_idle() + self.reader.num_idle()) as u32,
            max: self.writer.options().get_max_connections()
                + self.reader.options().get_max_connections(),
        }
    }

    async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// SQLite has no cross-process notifications; other processes are seen by polling.
    async fn listen(&self, _sink: WakeupSink) -> StoreResult<()> {
        Ok(())
    }
}

#[async_trait]
impl JobStore for SqliteStore {
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
impl WorkflowStore for SqliteStore {
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
impl LeaderStore for SqliteStore {
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

/// Maps SQLite errors into the store's few cases.
pub(crate) fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict("unique constraint")
        }
        sqlx::Error::Database(db) if db.code().as_deref() == Some("5") => {
            StoreError::Unavailable(Box::new(e))
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(Box::new(e))
        }
        _ => StoreError::Other(Box::new(e)),
    }
}

pub(crate) fn ms(t: time::OffsetDateTime) -> i64 {
    carafe_core::time::unix_ms(t)
}

pub(crate) fn at(ms: i64) -> time::OffsetDateTime {
    carafe_core::time::from_unix_ms(ms)
}
