//! The job engine's small writes, committed in groups (see `group_commit`): single enqueues and
//! enqueue batches, and completions — one per request as ordinary workers send them, a batch
//! from `POST /jobs/complete`, or the in-process runner's. Concurrent writes share one
//! transaction; the wake-ups and metrics that follow a write are published once per batch.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use carafe_core::jobs::{Completion, Fenced, Inserted, Job, NewJob};
use carafe_core::time::now;
use carafe_core::{Store, StoreResult};

use super::{job_topic, queue_topic};
use crate::group_commit::{BatchWrite, GroupCommit};
use crate::realtime::bus::Bus;

/// Most items one transaction takes (whole submissions are never split).
const MAX_ITEMS: usize = 1000;

pub(super) type Inserts = GroupCommit<NewJob, Inserted>;
pub(super) type Completions = GroupCommit<Completion, Fenced<Job>>;

pub(super) fn inserts(store: Arc<dyn Store>, bus: Bus) -> Inserts {
    GroupCommit::spawn("jobs.insert", MAX_ITEMS, Insert { store, bus })
}

pub(super) fn completions(store: Arc<dyn Store>, bus: Bus) -> Completions {
    GroupCommit::spawn("jobs.complete", MAX_ITEMS, Complete { store, bus })
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
