//! Queue maintenance, done by one instance at a time (the holder of the `maintenance` leader
//! lease): rescuing jobs whose lease expired and firing due schedules every second, and every
//! minute the upkeep — a sweep over every running workflow, then the deletion of finished jobs
//! and workflows past their retention and of expired idempotency records, in bounded batches.
//! The parts are independent: one that fails is logged, and the others still run. Each is safe
//! if two instances briefly overlap: rescues are fenced by lease token, advances lock the
//! workflow, deletes are idempotent.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use carafe_core::StoreResult;
use carafe_core::jobs::WorkflowId;
use carafe_core::time::now;
use tokio_util::sync::CancellationToken;

use super::{Jobs, job_topic};

const LEADER: &str = "maintenance";
/// How long a leader's lease lasts; it is renewed every tick.
const LEADER_TTL: Duration = Duration::from_secs(15);
const TICK: Duration = Duration::from_secs(1);
const UPKEEP_EVERY: Duration = Duration::from_secs(60);
const BATCH: u32 = 1000;
/// Workflows per pruning batch: each goes with all its steps (up to `workflows::MAX_STEPS`).
const WORKFLOW_BATCH: u32 = 100;
/// Running workflows per page of the sweep.
const SWEEP_PAGE: u32 = 500;

pub async fn run(jobs: Arc<Jobs>, instance: String, stop: CancellationToken) {
    let store = jobs.store().clone();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_upkeep: Option<tokio::time::Instant> = None;
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
        if let Err(e) = crate::jobs::schedules::fire_due(&jobs, now()).await {
            tracing::warn!(error = %e, "firing schedules failed");
        }
        if last_upkeep.is_none_or(|t| t.elapsed() >= UPKEEP_EVERY) {
            last_upkeep = Some(tokio::time::Instant::now());
            upkeep(&jobs).await;
        }
    }
    if let Err(e) = store.resign(LEADER, &instance).await {
        tracing::debug!(error = %e, "could not resign the maintenance lease");
    }
}

/// Rescues every job whose lease has expired, in batches.
pub async fn rescue(jobs: &Jobs) -> StoreResult<usize> {
    let mut total = 0;
    loop {
        let rescued = jobs.store().rescue_expired_jobs(now(), BATCH).await?;
        let ids = rescued.outcome;
        for id in &ids {
            jobs.bus().publish(&job_topic(*id));
        }
        jobs.wake_started(&rescued.started);
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

/// What one round of upkeep did: each part ran whatever became of the other.
#[derive(Debug)]
pub struct Upkeep {
    pub swept: StoreResult<Swept>,
    pub pruned: StoreResult<Pruned>,
}

/// Sweeps the running workflows, then prunes; a failure of either is logged, and does not
/// keep the other from running.
pub async fn upkeep(jobs: &Jobs) -> Upkeep {
    let swept = sweep_workflows(jobs, SWEEP_PAGE).await;
    if let Err(e) = &swept {
        tracing::warn!(error = %e, "sweeping running workflows failed");
    }
    let pruned = prune(jobs).await;
    if let Err(e) = &pruned {
        tracing::warn!(error = %e, "pruning failed");
    }
    Upkeep { swept, pruned }
}

/// What a sweep of the running workflows did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Workflow steps it started.
    pub started: usize,
    /// Workflows it could not advance (each logged); the sweep went on past them.
    pub failed: usize,
}

/// Visits every running workflow, `page` at a time in id order, and advances those with a move
/// to make: finishes any advance that an older version of Carafe (which advanced a workflow in
/// a second transaction, after its step's) left undone. A workflow that cannot be advanced is
/// logged and passed over; only a page that cannot be read ends the sweep early.
pub async fn sweep_workflows(jobs: &Jobs, page: u32) -> StoreResult<Swept> {
    let store = jobs.store();
    let mut after: Option<WorkflowId> = None;
    let mut swept = Swept::default();
    loop {
        let stalled = store.stalled_workflows(after, page).await?;
        for id in stalled.stalled {
            match store.advance_workflow(id, now()).await {
                Ok(started) => {
                    jobs.wake_started(&started);
                    swept.started += started.len();
                }
                Err(e) => {
                    tracing::warn!(error = %e, workflow = id.0, "could not advance a workflow");
                    swept.failed += 1;
                }
            }
        }
        match stalled.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    if swept.started > 0 {
        tracing::info!(
            steps = swept.started,
            "started workflow steps an interrupted advance left waiting"
        );
    }
    Ok(swept)
}

/// What pruning deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Jobs outside workflows.
    pub jobs: u64,
    /// Workflows, each with its steps.
    pub workflows: u64,
}

/// Deletes finished jobs and workflows past their retention, then expired idempotency records.
/// Every part runs; the first error (if any) is returned.
pub async fn prune(jobs: &Jobs) -> StoreResult<Pruned> {
    let store = jobs.store();
    let settings = jobs.settings();
    let cutoffs = || {
        let at = now();
        (
            at - settings.retention_completed.0,
            at - settings.retention_discarded.0,
        )
    };
    let pruned_jobs = drain(BATCH, |n| {
        let (finished, discarded) = cutoffs();
        store.prune_jobs(finished, discarded, n)
    })
    .await;
    let pruned_workflows = drain(WORKFLOW_BATCH, |n| {
        let (finished, discarded) = cutoffs();
        store.prune_workflows(finished, discarded, n)
    })
    .await;
    let idempotency = drain(BATCH, |n| store.prune_idempotency(now(), n)).await;
    let pruned = Pruned {
        jobs: pruned_jobs?,
        workflows: pruned_workflows?,
    };
    idempotency?;
    if pruned.jobs > 0 || pruned.workflows > 0 {
        tracing::info!(
            jobs = pruned.jobs,
            workflows = pruned.workflows,
            "pruned finished jobs and workflows past their retention"
        );
    }
    Ok(pruned)
}

/// Calls `delete` with `batch` until a call deletes fewer; returns the total.
async fn drain<F, Fut>(batch: u32, mut delete: F) -> StoreResult<u64>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = StoreResult<u64>>,
{
    let mut total = 0;
    loop {
        let n = delete(batch).await?;
        total += n;
        if n < u64::from(batch) {
            return Ok(total);
        }
    }
}
