//! The durable job queue, as four traits along the lines its SQL falls into: putting jobs in
//! and reading them back (`JobStore`), a worker's lease on a job (`LeaseStore`), the end of a
//! failed attempt (`FailureStore`), and what operators and maintenance do to queues and jobs
//! (`QueueAdminStore`). Each backend implements each of them in one file.
//!
//! Every change to a job also appends a `JobEvent` (numbered per job, in the same
//! transaction), so watchers can resume exactly where they left off.
//!
//! Every method that can end a workflow step (complete, fail, cancel, rescue) advances the
//! step's workflow in the same transaction (see `WorkflowStore`) and answers with the steps
//! that advance started (`Advanced::started`), for the caller's wake-ups.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreResult;
use crate::jobs::{
    Advanced, Claim, ClaimedJob, Completion, Failure, FailureOutcome, Fenced, Heartbeat,
    HeartbeatAck, Inserted, Job, JobEvent, JobFilter, JobId, NewJob, QueueLimits, QueueName,
    QueueStats,
};
use crate::page::{Page, PageRequest};

/// Inserting jobs and reading them (and their events) back.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Inserts jobs in one transaction. A job whose unique key matches an existing job (in
    /// the key's states and period) is not inserted; that job is returned instead.
    async fn insert_jobs(&self, jobs: Vec<NewJob>) -> StoreResult<Vec<Inserted>>;
    async fn get_job(&self, id: JobId) -> StoreResult<Option<Job>>;
    /// The queues of those of these jobs that exist (in no particular order).
    async fn job_queues(&self, ids: &[JobId]) -> StoreResult<Vec<(JobId, QueueName)>>;
    /// Newest first; `after` is a job id, the page holds older jobs.
    async fn list_jobs(
        &self,
        filter: &JobFilter,
        page: &PageRequest,
        now: OffsetDateTime,
    ) -> StoreResult<Page<Job>>;
    /// A job's events with `seq > after`, oldest first.
    async fn job_events(&self, id: JobId, after: i64, limit: u32) -> StoreResult<Vec<JobEvent>>;
}

/// Claiming jobs and the lease holder's fenced reports: a worker (or the push dispatcher)
/// takes jobs under a lease token, and only that token can renew the lease or complete them.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Leases up to `max` claimable jobs of a queue (none while it is paused), by priority,
    /// then time, then id. Each gets a fresh lease token; its attempt is counted.
    async fn claim_jobs(&self, claim: Claim<'_>) -> StoreResult<Vec<ClaimedJob>>;
    /// Queues holding push jobs that are due now.
    async fn push_queues(&self, now: OffsetDateTime) -> StoreResult<Vec<QueueName>>;
    /// Heartbeats (see `heartbeat_job`) in one transaction, applied in order; each answer is
    /// in the order of `hbs`.
    async fn heartbeat_jobs(&self, hbs: &[Heartbeat]) -> StoreResult<Vec<Fenced<HeartbeatAck>>>;
    /// Extends the lease and/or records progress and a checkpoint, for the lease holder only.
    async fn heartbeat_job(&self, hb: Heartbeat) -> StoreResult<Fenced<HeartbeatAck>> {
        let mut answers = self.heartbeat_jobs(std::slice::from_ref(&hb)).await?;
        answers
            .pop()
            .ok_or_else(|| crate::StoreError::corrupt("a heartbeat got no answer"))
    }
    /// Completes jobs (one transaction, which also advances their workflows); each answer is
    /// in the order of `items`, a completed one with the job as it now is.
    async fn complete_jobs(
        &self,
        items: &[Completion],
        now: OffsetDateTime,
    ) -> StoreResult<Advanced<Vec<Fenced<Job>>>>;
}

/// Failed attempts, whether the lease holder reports one or its lease runs out: the job is
/// retried with backoff, discarded, or cancelled.
#[async_trait]
pub trait FailureStore: Send + Sync {
    /// Failed attempts (see `fail_job`) in one transaction, applied in order; each answer is
    /// in the order of `failures`.
    async fn fail_jobs(
        &self,
        failures: &[Failure],
    ) -> StoreResult<Advanced<Vec<Fenced<FailureOutcome>>>>;
    /// Records a failed attempt: retryable with backoff, discarded, or cancelled (the last two
    /// advance the job's workflow).
    async fn fail_job(&self, failure: Failure) -> StoreResult<Advanced<Fenced<FailureOutcome>>> {
        let mut done = self.fail_jobs(std::slice::from_ref(&failure)).await?;
        let outcome = (done.outcome.pop())
            .ok_or_else(|| crate::StoreError::corrupt("a failure got no answer"))?;
        Ok(Advanced {
            outcome,
            started: done.started,
        })
    }
    /// Treats up to `batch` running jobs whose lease expired as failed attempts (advancing the
    /// workflows of those this discards); returns the rescued jobs.
    async fn rescue_expired_jobs(
        &self,
        now: OffsetDateTime,
        batch: u32,
    ) -> StoreResult<Advanced<Vec<JobId>>>;
}

/// What operators and maintenance do to jobs and queues: cancel, retry, prune, and read or
/// change a queue's figures and settings (which claims then honour).
#[async_trait]
pub trait QueueAdminStore: Send + Sync {
    /// Cancels a waiting job at once (advancing its workflow); marks a running one
    /// `cancel_requested`. Final jobs are returned unchanged. `None` when there is no such job.
    async fn cancel_job(
        &self,
        id: JobId,
        now: OffsetDateTime,
    ) -> StoreResult<Advanced<Option<Job>>>;
    /// Makes a finished or waiting job available now (raising `max_attempts` if it was spent).
    /// Running jobs are returned unchanged.
    async fn retry_job(&self, id: JobId, now: OffsetDateTime) -> StoreResult<Option<Job>>;
    /// Deletes up to `batch` completed or cancelled jobs finalized before `finished_before`
    /// and discarded jobs finalized before `discarded_before`, with their events. Workflow
    /// steps are left alone: they go with their workflow (`WorkflowStore::prune_workflows`).
    async fn prune_jobs(
        &self,
        finished_before: OffsetDateTime,
        discarded_before: OffsetDateTime,
        batch: u32,
    ) -> StoreResult<u64>;
    /// Figures for every queue that has jobs or settings.
    async fn queue_stats(&self, now: OffsetDateTime) -> StoreResult<Vec<QueueStats>>;
    async fn set_queue_paused(&self, queue: &QueueName, paused: bool) -> StoreResult<()>;
    /// Sets (or with `None`s, clears) a queue's claim limits; claims then honour them.
    async fn set_queue_limits(&self, queue: &QueueName, limits: QueueLimits) -> StoreResult<()>;
}
