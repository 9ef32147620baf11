//! The job engine's rules above the store: publishing wake-ups after every change, long-poll
//! claiming that returns as soon as work arrives, and the metrics of the queue. The web layer's
//! handlers (`api/jobs/`), in-process handlers (`runner.rs`), push delivery (`push.rs`) and
//! maintenance (`maintenance.rs`) all go through this one service.

pub mod access;
mod commit;
mod error;
pub mod events;
pub mod maintenance;
pub mod push;
pub mod request;
pub mod runner;
pub mod schedules;
mod settings;
pub mod targets;
pub mod workflows;

pub use error::Error;
pub use settings::{PushSettings, Settings};

use std::sync::Arc;
use std::time::Duration;

use carafe_core::jobs::{
    Claim, ClaimedJob, Completion, Failure, FailureOutcome, Fenced, Heartbeat, HeartbeatAck,
    Inserted, Job, JobFilter, JobId, LeaseLength, NewJob, QueueLimits, QueueName, QueueStats,
    RateGroup, RateGroupState,
};
use carafe_core::page::{Page, PageRequest};
use carafe_core::time::now;
use carafe_core::{Store, StoreResult};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use self::access::{Caller, QueueAction, ReservedQueue};
use crate::realtime::bus::Bus;
use targets::TargetPolicy;

pub fn queue_topic(queue: &str) -> String {
    format!("queue:{queue}")
}

pub fn job_topic(id: JobId) -> String {
    format!("job:{id}")
}

/// Wakes the watchers and queues of workflow steps a store write started.
/// The one answer to a one-item write.
fn one<T>(mut answers: Vec<T>) -> StoreResult<T> {
    answers
        .pop()
        .ok_or_else(|| carafe_core::StoreError::corrupt("a write got no answer"))
}

fn wake_started(bus: &Bus, started: &[(JobId, QueueName)]) {
    for (job, queue) in started {
        bus.publish(&job_topic(*job));
        bus.publish(&queue_topic(queue.as_str()));
    }
}

pub struct Jobs {
    store: Arc<dyn Store>,
    bus: Bus,
    settings: crate::jobs::Settings,
    push_enabled: bool,
    targets: Arc<TargetPolicy>,
    inserts: commit::Inserts,
    completions: commit::Completions,
    heartbeats: commit::Heartbeats,
    failures: commit::Failures,
}

impl Jobs {
    pub fn new(
        store: Arc<dyn Store>,
        bus: Bus,
        settings: crate::jobs::Settings,
        push: &crate::jobs::PushSettings,
    ) -> Self {
        Jobs {
            inserts: commit::inserts(store.clone(), bus.clone()),
            completions: commit::completions(store.clone(), bus.clone()),
            heartbeats: commit::heartbeats(store.clone(), bus.clone()),
            failures: commit::failures(store.clone(), bus.clone()),
            store,
            bus,
            settings,
            push_enabled: push.secret.is_some(),
            targets: Arc::new(TargetPolicy::new(
                &push.allow_hosts,
                push.allow_private_networks,
            )),
        }
    }

    /// Whether push delivery is configured (jobs may have a `target`).
    pub fn push_enabled(&self) -> bool {
        self.push_enabled
    }

    /// What push targets may reach (checked at enqueue and again at delivery).
    pub fn targets(&self) -> &Arc<TargetPolicy> {
        &self.targets
    }

    pub fn settings(&self) -> &crate::jobs::Settings {
        &self.settings
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// A lease of `asked` length, or else the queue's, or else `jobs.lease`.
    pub fn lease(&self, asked: Option<Duration>) -> LeaseLength {
        LeaseLength {
            asked,
            default: self.settings.lease.0,
        }
    }

    /// Whether `caller` may do `action` on these jobs, by their queues (see `access`). Jobs
    /// that do not exist pass: the action itself then finds nothing.
    pub async fn check_jobs(
        &self,
        caller: Caller,
        ids: &[JobId],
        action: QueueAction,
    ) -> StoreResult<Result<(), ReservedQueue>> {
        let queues = self.store.job_queues(ids).await?;
        Ok(queues
            .iter()
            .try_for_each(|(_, queue)| access::check(caller, queue, action)))
    }

    pub async fn get(&self, id: JobId) -> StoreResult<Option<Job>> {
        self.store.get_job(id).await
    }

    /// Jobs `filter` matches, newest first.
    pub async fn list(&self, filter: &JobFilter, page: &PageRequest) -> StoreResult<Page<Job>> {
        self.store.list_jobs(filter, page, now()).await
    }

    /// Figures for every queue, as of `at`.
    pub async fn queue_stats(&self, at: OffsetDateTime) -> StoreResult<Vec<QueueStats>> {
        self.store.queue_stats(at).await
    }

    /// Pauses or resumes claiming from `queue` (waiting claims wake on a resume).
    pub async fn set_paused(&self, queue: &QueueName, paused: bool) -> StoreResult<()> {
        self.store.set_queue_paused(queue, paused).await?;
        if !paused {
            self.bus.publish(&queue_topic(queue.as_str()));
        }
        Ok(())
    }

    /// Replaces the queue's limits and lease (waiting claims re-check at once).
    pub async fn set_limits(&self, queue: &QueueName, limits: QueueLimits) -> StoreResult<()> {
        self.store.set_queue_limits(queue, limits).await?;
        self.bus.publish(&queue_topic(queue.as_str()));
        Ok(())
    }

    /// Creates or changes a rate group (shared by the queues put in it).
    pub async fn put_rate_group(&self, group: &RateGroup) -> StoreResult<()> {
        self.store.put_rate_group(group, now()).await
    }

    /// Puts `queue` in rate group `group` (`None`: in none); waiting claims re-check at once.
    pub async fn set_rate_group(&self, queue: &QueueName, group: Option<&str>) -> StoreResult<()> {
        self.store.set_queue_rate_group(queue, group).await?;
        self.bus.publish(&queue_topic(queue.as_str()));
        Ok(())
    }

    /// Where rate group `name` stands.
    pub async fn rate_group(&self, name: &str) -> StoreResult<Option<RateGroupState>> {
        self.store.rate_group(name).await
    }

    /// Slows rate group `name` down (the far end is throttling); the rate it goes at now.
    pub async fn slow_rate_group(&self, name: &str) -> StoreResult<Option<f64>> {
        self.store.slow_rate_group(name, now()).await
    }

    /// Inserts `jobs`, sharing the transaction with enqueues made at the same time, and wakes
    /// their queues once it has committed.
    pub async fn enqueue(&self, jobs: Vec<NewJob>) -> StoreResult<Vec<Inserted>> {
        self.inserts.write(jobs).await
    }

    /// Claims as `claim` says (its `now` is taken afresh at every try), waiting up to `wait`
    /// for jobs to arrive. Wakes at once on an enqueue (a bus wake-up), else re-checks every
    /// `poll_interval` (jobs whose time came, or enqueued by another process). Returns early,
    /// empty, when `stop` is cancelled.
    pub async fn claim(
        &self,
        claim: Claim<'_>,
        wait: Duration,
        stop: &CancellationToken,
    ) -> StoreResult<Vec<ClaimedJob>> {
        let queue = claim.queue;
        let deadline = tokio::time::Instant::now() + wait;
        let topic = queue_topic(queue.as_str());
        let mut wakeups = self.bus.subscribe();
        loop {
            let at = now();
            let claimed = self
                .store
                .claim_jobs(Claim {
                    now: at,
                    ..claim.clone()
                })
                .await?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !claimed.is_empty() || left.is_zero() {
                for job in &claimed {
                    let waited = (at - job.scheduled_at).as_seconds_f64().max(0.0);
                    metrics::histogram!("carafe_jobs_claim_latency_seconds", "queue" => queue.as_str().to_owned())
                        .record(waited);
                    self.bus.publish(&job_topic(job.id));
                }
                return Ok(claimed);
            }
            let nap = left.min(self.settings.poll_interval.0);
            tokio::select! {
                _ = wakeups.wait_for(&topic, nap) => {}
                () = stop.cancelled() => return Ok(Vec::new()),
            }
        }
    }

    /// Extends a lease and/or reports progress, sharing the transaction with heartbeats made
    /// at the same time; answers once it has committed.
    pub async fn heartbeat(&self, hb: Heartbeat) -> StoreResult<Fenced<HeartbeatAck>> {
        one(self.heartbeats.write(vec![hb]).await?)
    }

    /// Completes `items` (each fenced by its lease), sharing the transaction with completions
    /// made at the same time; answers once it has committed, a completed item with its job.
    pub async fn complete(&self, items: Vec<Completion>) -> StoreResult<Vec<Fenced<Job>>> {
        self.completions.write(items).await
    }

    /// Wakes the watchers and queues of workflow steps a store write started.
    pub fn wake_started(&self, started: &[(JobId, QueueName)]) {
        wake_started(&self.bus, started);
    }

    /// Records a failed attempt (`queue`, when known, is woken for a retry), sharing the
    /// transaction with failures reported at the same time; answers once it has committed.
    pub async fn fail(
        &self,
        failure: Failure,
        queue: Option<&QueueName>,
    ) -> StoreResult<Fenced<FailureOutcome>> {
        one(self.failures.write(vec![(failure, queue.cloned())]).await?)
    }

    pub async fn cancel(&self, id: JobId) -> StoreResult<Option<Job>> {
        let job = self.store.cancel_job(id, now()).await?;
        if job.outcome.is_some() {
            self.bus.publish(&job_topic(id));
        }
        self.wake_started(&job.started);
        Ok(job.outcome)
    }

    pub async fn retry(&self, id: JobId) -> StoreResult<Option<Job>> {
        let job = self.store.retry_job(id, now()).await?;
        if let Some(j) = &job {
            self.bus.publish(&job_topic(id));
            self.bus.publish(&queue_topic(j.queue.as_str()));
        }
        Ok(job)
    }
}
