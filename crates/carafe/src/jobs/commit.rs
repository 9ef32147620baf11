//! The job engine's small writes, committed in groups (see `group_commit`): single enqueues and
//! enqueue batches; completions — one per request as ordinary workers send them, a batch
//! from `POST /jobs/complete`, or the in-process runner's; heartbeats and progress reports;
//! and failed attempts. Concurrent writes share one transaction; the wake-ups and metrics
//! that follow a write are published once per batch.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use carafe_core::jobs::{
    Completion, Failure, FailureOutcome, Fenced, Heartbeat, HeartbeatAck, Inserted, Job, JobState,
    NewJob, QueueName,
};
use carafe_core::time::now;
use carafe_core::{Store, StoreResult};

use super::{job_topic, queue_topic};
use crate::group_commit::{BatchWrite, GroupCommit};
use crate::realtime::bus::Bus;

/// Most items one transaction takes (whole submissions are never split).
const MAX_ITEMS: usize = 1000;

pub(super) type Inserts = GroupCommit<NewJob, Inserted>;
pub(super) type Completions = GroupCommit<Completion, Fenced<Job>>;
pub(super) type Heartbeats = GroupCommit<Heartbeat, Fenced<HeartbeatAck>>;
/// A failed attempt, with the job's queue when the caller knows it (a retry wakes it).
pub(super) type Failures = GroupCommit<(Failure, Option<QueueName>), Fenced<FailureOutcome>>;

pub(super) fn inserts(store: Arc<dyn Store>, bus: Bus) -> Inserts {
    GroupCommit::spawn("jobs.insert", MAX_ITEMS, Insert { store, bus })
}

pub(super) fn completions(store: Arc<dyn Store>, bus: Bus) -> Completions {
    GroupCommit::spawn("jobs.complete", MAX_ITEMS, Complete { store, bus })
}

pub(super) fn heartbeats(store: Arc<dyn Store>, bus: Bus) -> Heartbeats {
    GroupCommit::spawn("jobs.heartbeat", MAX_ITEMS, Beat { store, bus })
}

pub(super) fn failures(store: Arc<dyn Store>, bus: Bus) -> Failures {
    GroupCommit::spawn("jobs.fail", MAX_ITEMS, Fail { store, bus })
}

struct Insert {
    store: Arc<dyn Store>,
    bus: Bus,
}

#[async_trait]
impl BatchWrite<NewJob, Inserted> for Insert {
    async fn write(&self, items: &[NewJob]) -> StoreResult<Vec<Inserted>> {
        let inserted = self.store.insert_jobs(items.to_vec()).await?;
        // Jobs created per queue: one counter update and one wake-up each.
        let mut queues: BTreeMap<&str, u64> = BTreeMap::new();
        for item in &inserted {
            if let Inserted::Created(job) = item {
                *queues.entry(job.queue.as_str()).or_default() += 1;
            }
        }
        for (q, n) in &queues {
            metrics::counter!("carafe_jobs_enqueued_total", "queue" => q.to_string()).increment(*n);
        }
        for q in queues.keys() {
            self.bus.publish(&queue_topic(q));
        }
        Ok(inserted)
    }
}

struct Complete {
    store: Arc<dyn Store>,
    bus: Bus,
}

#[async_trait]
impl BatchWrite<Completion, Fenced<Job>> for Complete {
    async fn write(&self, items: &[Completion]) -> StoreResult<Vec<Fenced<Job>>> {
        let done = self.store.complete_jobs(items, now()).await?;
        let mut n = 0;
        for (item, outcome) in items.iter().zip(&done.outcome) {
            if outcome.is_done() {
                self.bus.publish(&job_topic(item.id));
                n += 1;
            }
        }
        metrics::counter!("carafe_jobs_completed_total").increment(n);
        super::wake_started(&self.bus, &done.started);
        Ok(done.outcome)
    }
}

struct Beat {
    store: Arc<dyn Store>,
    bus: Bus,
}

#[async_trait]
impl BatchWrite<Heartbeat, Fenced<HeartbeatAck>> for Beat {
    async fn write(&self, items: &[Heartbeat]) -> StoreResult<Vec<Fenced<HeartbeatAck>>> {
        let acks = self.store.heartbeat_jobs(items).await?;
        // Progress goes to the job's watchers.
        for (hb, ack) in items.iter().zip(&acks) {
            if hb.progress.is_some() && ack.is_done() {
                self.bus.publish(&job_topic(hb.id));
            }
        }
        Ok(acks)
    }
}

struct Fail {
    store: Arc<dyn Store>,
    bus: Bus,
}

#[async_trait]
impl BatchWrite<(Failure, Option<QueueName>), Fenced<FailureOutcome>> for Fail {
    async fn write(
        &self,
        items: &[(Failure, Option<QueueName>)],
    ) -> StoreResult<Vec<Fenced<FailureOutcome>>> {
        let failures: Vec<Failure> = items.iter().map(|(f, _)| f.clone()).collect();
        let done = self.store.fail_jobs(&failures).await?;
        for ((f, queue), outcome) in items.iter().zip(&done.outcome) {
            if let Fenced::Done(o) = outcome {
                self.bus.publish(&job_topic(f.id));
                if let Some(q) = queue.as_ref().filter(|_| o.state == JobState::Retryable) {
                    self.bus.publish(&queue_topic(q.as_str()));
                }
                metrics::counter!("carafe_jobs_failed_total", "outcome" => o.state.as_str())
                    .increment(1);
            }
        }
        super::wake_started(&self.bus, &done.started);
        Ok(done.outcome)
    }
}
