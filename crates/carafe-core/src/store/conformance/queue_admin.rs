//! Conformance checks for `QueueAdminStore`: cancellation, operator retries, pruning, queue
//! figures, and the queue settings (pause, limits, lease length) that claims must honour.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::fixtures::{DEFAULT_LEASE, claim, events, insert, job, lease, q, state_of};
use crate::jobs::*;
use crate::store::Store;
use crate::time::now;

pub async fn jobs_cancellation(store: Arc<dyn Store>) {
    let t = now();
    let waiting = insert(&store, job("x", t + Duration::from_secs(60))).await;
    let cancelled = store
        .cancel_job(waiting.id, t)
        .await
        .unwrap()
        .outcome
        .unwrap();
    assert_eq!(
        (cancelled.state, cancelled.finalized_at),
        (JobState::Cancelled, Some(t))
    );
    assert!(
        claim(&store, "x", 10, t + Duration::from_secs(120))
            .await
            .is_empty()
    );

    let run = insert(&store, job("y", t)).await;
    let c = claim(&store, "y", 1, t).await.remove(0);
    let marked = store.cancel_job(run.id, t).await.unwrap().outcome.unwrap();
    assert_eq!(
        (marked.state, marked.cancel_requested),
        (JobState::Running, true)
    );
    let hb = Heartbeat {
        id: run.id,
        lease_token: c.lease_token.clone(),
        now: t,
        renew: None,
        progress: None,
        checkpoint: None,
    };
    match store.heartbeat_job(hb).await.unwrap() {
        Fenced::Done(ack) => assert!(ack.cancel_requested, "the worker learns of it"),
        other => panic!("{other:?}"),
    }
    let f = Failure {
        id: run.id,
        lease_token: c.lease_token.clone(),
        message: "stopped".into(),
        retry: RetryRequest::Default,
        now: t,
    };
    let out = store.fail_job(f).await.unwrap().outcome;
    assert_eq!(
        out,
        Fenced::Done(FailureOutcome {
            state: JobState::Cancelled,
            retry_at: None
        })
    );
    assert_eq!(
        state_of(&events(&store, run.id).await.last().unwrap().1),
        "cancelled"
    );

    let done = insert(&store, job("z", t)).await;
    let cz = claim(&store, "z", 1, t).await.remove(0);
    store
        .complete_jobs(
            &[Completion {
                id: done.id,
                lease_token: cz.lease_token,
                result: json!(1),
                outside: false,
            }],
            t,
        )
        .await
        .unwrap();
    let unchanged = store.cancel_job(done.id, t).await.unwrap().outcome.unwrap();
    assert_eq!(unchanged.state, JobState::Completed);
    assert_eq!(
        store
            .cancel_job(JobId(done.id.0 + 999), t)
            .await
            .unwrap()
            .outcome,
        None
    );
}

pub async fn jobs_retry_revives_finished_jobs(store: Arc<dyn Store>) {
    let t = now();
    let mut new = job("r", t);
    new.max_attempts = 1;
    let j = insert(&store, new).await;
    let c = claim(&store, "r", 1, t).await.remove(0);
    let f = Failure {
        id: j.id,
        lease_token: c.lease_token.clone(),
        message: "boom".into(),
        retry: RetryRequest::Default,
        now: t,
    };
    store.fail_job(f).await.unwrap();
    let later = t + Duration::from_secs(5);
    let revived = store.retry_job(j.id, later).await.unwrap().unwrap();
    assert_eq!(revived.state, JobState::Available);
    assert_eq!(revived.scheduled_at, later);
    assert_eq!(revived.finalized_at, None);
    assert!(
        revived.max_attempts > revived.attempt,
        "one more attempt is allowed"
    );
    let c2 = claim(&store, "r", 1, later).await.remove(0);
    assert_eq!(c2.attempt, 2);
    let running = store.retry_job(j.id, later).await.unwrap().unwrap();
    assert_eq!(
        running.state,
        JobState::Running,
        "a running job is left alone"
    );
}

pub async fn jobs_pruning(store: Arc<dyn Store>) {
    let t = now();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(insert(&store, job("p", t)).await.id);
    }
    let claimed = claim(&store, "p", 2, t).await;
    let items: Vec<_> = claimed
        .iter()
        .map(|c| Completion {
            id: c.id,
            lease_token: c.lease_token.clone(),
            result: json!(1),
            outside: false,
        })
        .collect();
    store.complete_jobs(&items, t).await.unwrap();
    let cutoff = t + Duration::from_secs(1);
    assert_eq!(
        store.prune_jobs(cutoff, cutoff, 1).await.unwrap(),
        1,
        "batches are bounded"
    );
    assert_eq!(store.prune_jobs(cutoff, cutoff, 100).await.unwrap(), 1);
    assert_eq!(store.prune_jobs(cutoff, cutoff, 100).await.unwrap(), 0);
    for c in &claimed {
        assert_eq!(store.get_job(c.id).await.unwrap(), None);
        assert!(
            store.job_events(c.id, 0, 10).await.unwrap().is_empty(),
            "events go too"
        );
    }
    let kept = ids
        .iter()
        .find(|id| !claimed.iter().any(|c| c.id == **id))
        .unwrap();
    assert!(
        store.get_job(*kept).await.unwrap().is_some(),
        "waiting jobs are never pruned"
    );
    assert_eq!(
        store
            .prune_jobs(t - Duration::from_secs(1), t - Duration::from_secs(1), 100)
            .await
            .unwrap(),
        0
    );
}

pub async fn jobs_queue_stats(store: Arc<dyn Store>) {
    let t = now();
    insert(&store, job("s", t)).await;
    insert(&store, job("s", t - Duration::from_secs(10))).await;
    insert(&store, job("s", t + Duration::from_secs(60))).await;
    let c = claim(&store, "s", 1, t).await.remove(0);
    store
        .complete_jobs(
            &[Completion {
                id: c.id,
                lease_token: c.lease_token,
                result: json!(1),
                outside: false,
            }],
            t,
        )
        .await
        .unwrap();
    let stats = store.queue_stats(t).await.unwrap();
    let s = stats.iter().find(|s| s.queue == "s").unwrap();
    let count = |st| {
        s.counts
            .iter()
            .find(|(x, _)| *x == st)
            .map_or(0, |(_, n)| *n)
    };
    assert_eq!(count(JobState::Available), 1);
    assert_eq!(count(JobState::Scheduled), 1);
    assert_eq!(count(JobState::Completed), 1);
    assert_eq!(s.oldest_available_at, Some(t));
    assert_eq!(s.completed_last_minute, 1);
    assert!(!s.paused);
}

pub async fn jobs_paused_queues_are_not_claimed(store: Arc<dyn Store>) {
    let t = now();
    insert(&store, job("paused", t)).await;
    store.set_queue_paused(&q("paused"), true).await.unwrap();
    assert!(claim(&store, "paused", 10, t).await.is_empty());
    let stats = store.queue_stats(t).await.unwrap();
    assert!(stats.iter().any(|s| s.queue == "paused" && s.paused));
    store.set_queue_paused(&q("paused"), false).await.unwrap();
    assert_eq!(claim(&store, "paused", 10, t).await.len(), 1);
}

pub async fn jobs_queue_limits(store: Arc<dyn Store>) {
    let t = now();
    let batch: Vec<_> = (0..20).map(|_| job("limited", t)).collect();
    store.insert_jobs(batch).await.unwrap();
    let limits = QueueLimits {
        concurrency: Some(3),
        ..QueueLimits::default()
    };
    store.set_queue_limits(&q("limited"), limits).await.unwrap();
    let first = claim(&store, "limited", 10, t).await;
    assert_eq!(
        first.len(),
        3,
        "no more than the concurrency limit run at once"
    );
    assert!(claim(&store, "limited", 10, t).await.is_empty());
    let done = Completion {
        id: first[0].id,
        lease_token: first[0].lease_token.clone(),
        result: json!(1),
        outside: false,
    };
    store.complete_jobs(&[done], t).await.unwrap();
    assert_eq!(
        claim(&store, "limited", 10, t).await.len(),
        1,
        "a finished job frees a slot"
    );
    let stats = store.queue_stats(t).await.unwrap();
    assert_eq!(
        stats.iter().find(|s| s.queue == "limited").unwrap().limits,
        limits
    );

    // A rate of 4 per second: a burst of 4, then refills with time (a new rate starts full,
    // counted from when it was set).
    let rated = QueueLimits {
        rate_per_second: Some(4.0),
        ..QueueLimits::default()
    };
    store.set_queue_limits(&q("limited"), rated).await.unwrap();
    let t = now() + Duration::from_millis(1);
    assert_eq!(claim(&store, "limited", 10, t).await.len(), 4);
    assert!(claim(&store, "limited", 10, t).await.is_empty());
    let half = t + Duration::from_millis(500);
    assert_eq!(
        claim(&store, "limited", 10, half).await.len(),
        2,
        "half a second, two tokens"
    );
    let later = t + Duration::from_secs(60);
    assert_eq!(
        claim(&store, "limited", 10, later).await.len(),
        4,
        "the bucket holds one second"
    );
    store
        .set_queue_limits(&q("limited"), QueueLimits::default())
        .await
        .unwrap();
    assert_eq!(
        claim(&store, "limited", 10, later).await.len(),
        6,
        "no limits: the rest"
    );
}

/// A lease is what the claim asked for, else the queue's `lease`, else the default; a
/// heartbeat that asks for none renews it to the queue's (read at that moment).
pub async fn jobs_queue_leases(store: Arc<dyn Store>) {
    let t = now();
    for _ in 0..3 {
        insert(&store, job("leased", t)).await;
    }
    let queue = q("leased");
    let claim_one = async |asked| {
        let claim = Claim {
            queue: &queue,
            worker: "w",
            max: 1,
            lease: lease(asked),
            now: t,
            push: false,
        };
        store.claim_jobs(claim).await.unwrap().remove(0)
    };
    let plain = claim_one(None).await;
    assert_eq!(plain.lease_expires_at, t + DEFAULT_LEASE);
    let ten = Duration::from_secs(10);
    let set = QueueLimits {
        lease: Some(ten),
        ..QueueLimits::default()
    };
    store.set_queue_limits(&queue, set).await.unwrap();
    let stats = store.queue_stats(t).await.unwrap();
    let leased = stats.iter().find(|s| s.queue == "leased").unwrap();
    assert_eq!(leased.limits.lease, Some(ten));
    let short = claim_one(None).await;
    assert_eq!(short.lease_expires_at, t + ten, "the queue's lease");
    assert_eq!(short.lease, ten);
    let asked = claim_one(Some(Duration::from_secs(99))).await;
    assert_eq!(
        asked.lease_expires_at,
        t + Duration::from_secs(99),
        "what the claim asked for wins"
    );
    // Heartbeats: none asked renews to the queue's lease; `None` keeps the expiry.
    let later = t + Duration::from_secs(5);
    let hb = |renew| Heartbeat {
        id: plain.id,
        lease_token: plain.lease_token.clone(),
        now: later,
        renew,
        progress: None,
        checkpoint: None,
    };
    let ack = store.heartbeat_job(hb(Some(lease(None)))).await.unwrap();
    let Fenced::Done(ack) = ack else {
        panic!("{ack:?}")
    };
    assert_eq!(ack.lease_expires_at, later + ten);
    let kept = store.heartbeat_job(hb(None)).await.unwrap();
    assert_eq!(kept, Fenced::Done(ack), "a progress report keeps the lease");
    let asked = store
        .heartbeat_job(hb(Some(lease(Some(Duration::from_secs(3))))))
        .await
        .unwrap();
    let Fenced::Done(asked) = asked else {
        panic!("{asked:?}")
    };
    assert_eq!(asked.lease_expires_at, later + Duration::from_secs(3));
    // Clearing the setting brings the default back.
    store
        .set_queue_limits(&queue, QueueLimits::default())
        .await
        .unwrap();
    let ack = store.heartbeat_job(hb(Some(lease(None)))).await.unwrap();
    let Fenced::Done(ack) = ack else {
        panic!("{ack:?}")
    };
    assert_eq!(ack.lease_expires_at, later + DEFAULT_LEASE);
}
