//! Queue maintenance, done by one instance at a time (the holder of the `maintenance` leader
//! lease): rescuing jobs whose lease expired, firing due schedules, and deleting finished jobs
//! past their retention and expired idempotency records, in bounded batches. Each step is safe if two instances
//! briefly overlap: rescues are fenced by lease token, deletes are idempotent.

use std::sync::Arc;
use std::time::Duration;

use carafe_core::time::now;
use tokio_util::sync::CancellationToken;

use super::{Jobs, job_topic};

const LEADER: &str = "maintenance";
/// How long a leader's lease lasts; it is renewed every tick.
const LEADER_TTL: Duration = Duration::from_secs(15);
const TICK: Duration = Duration::from_secs(1);
const PRUNE_EVERY: Duration = Duration::from_secs(60);
const BATCH: u32 = 1000;

pub async fn run(jobs: Arc<Jobs>, instance: String, stop: CancellationToken) {
    let store = jobs.store().clone();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let at = now();
        match store.try_lead(LEADER, &instance, at + LEADER_TTL, at).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "leader election failed");
                continue;
            }
        }
        if let Err(e) = rescue(&jobs).await {
            tracing::warn!(error = %e, "rescuing expired jobs failed");
        }
        if let Err(e) = crate::schedules::fire_due(&jobs, now()).await {
            tracing::warn!(error = %e, "firing schedules failed");
        }
        if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            last_prune = Some(tokio::time::Instant::now());
            if let Err(e) = prune(&jobs).await {
                tracing::warn!(error = %e, "pruning failed");
            }
        }
    }
    if let Err(e) = store.resign(LEADER, &instance).await {
        tracing::debug!(error = %e, "could not resign the maintenance lease");
    }
}

/// Rescues every job whose lease has expired, in batches.
pub async fn rescue(jobs: &Jobs) -> carafe_core::StoreResult<usize> {
    let mut total = 0;
    loop {
        let ids = jobs.store().rescue_expired_jobs(now(), BATCH).await?;
        for id in &ids {
            jobs.bus().publish(&job_topic(*id));
        }
        jobs.advance_workflows(&ids).await?;
        total += ids.len();
        if !ids.is_empty() {
            tracing::info!(jobs = ids.len(), "rescued jobs whose lease expired");
            metrics::counter!("carafe_jobs_rescued_total").increment(ids.len() as u64);
        }
        if ids.len() < BATCH as usize {
            return Ok(total);
        }
    }
}

/// Deletes finished jobs past their retention, then expired idempotency records; first,
/// finishes any workflow advance a crash interrupted.
pub async fn prune(jobs: &Jobs) -> carafe_core::StoreResult<u64> {
    for (job, queue) in jobs.store().advance_running_workflows(now(), BATCH).await? {
        jobs.bus().publish(&job_topic(job));
        jobs.bus().publish(&super::queue_topic(queue.as_str()));
    }
    let settings = jobs.settings();
    let mut total = 0;
    loop {
        let at = now();
        let n = jobs
            .store()
            .prune_jobs(
                at - settings.retention_completed.0,
                at - settings.retention_discarded.0,
                BATCH,
            )
            .await?;
        total += n;
        if n < u64::from(BATCH) {
            break;
        }
    }
    if total > 0 {
        tracing::info!(jobs = total, "pruned finished jobs past their retention");
    }
    loop {
        let n = jobs.store().prune_idempotency(now(), BATCH).await?;
        if n < u64::from(BATCH) {
            break;
        }
    }
    Ok(total)
}
