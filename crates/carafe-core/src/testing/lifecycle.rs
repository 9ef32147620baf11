//! Conformance checks for the rest of a job's life: failures and retries, cancellation,
//! operator retries, rescue of expired leases, and pruning.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;

use crate::jobs::*;
use crate::store::Store;
use crate::time::now;

use super::jobs::{claim, events, insert, job, q, state_of};

pub async fn jobs_failures_retry_then_discard(store: Arc<dyn Store>) {
    let t = now();
    let mut new = job("f", t);
    new.max_attempts = 2;
    let j = insert(&store, new).await;
    let c = claim(&store, "f", 1, t).await.remove(0);
    fn failure(id: JobId, token: &str, at: OffsetDateTime) -> Failure<'_> {
        Failure {
            id,
            lease_token: token,
            message: "smtp said 451".into(),
            retry: RetryRequest::Default,
            now: at,
        }
    }
    let out = store
        .fail_job(failure(j.id, &c.lease_token, t))
        .await
        .unwrap()
        .outcome;
    let retry_at = t + Duration::from_secs(1);
    assert_eq!(
        out,
        Fenced::Done(FailureOutcome {
            state: JobState::Retryable,
            retry_at: Some(retry_at)
        })
    );
    let saved = store.get_job(j.id).await.unwrap().unwrap();
    assert_eq!(
        (saved.state, saved.scheduled_at),
        (JobState::Retryable, retry_at)
    );
    assert_eq!(saved.errors.len(), 1);
    assert_eq!(
        (saved.errors[0].attempt, saved.errors[0].message.as_str()),
        (1, "smtp said 451")
    );
    assert_eq!(
        store
            .fail_job(failure(j.id, &c.lease_token, t))
            .await
            .unwrap()
            .outcome,
        Fenced::LeaseLost
    );

    assert!(
        claim(&store, "f", 1, t).await.is_empty(),
        "not before its retry time"
    );
    let c2 = claim(&store, "f", 1, retry_at).await.remove(0);
    assert_eq!(c2.attempt, 2);
    let out = store
        .fail_job(failure(j.id, &c2.lease_token, retry_at))
        .await
        .unwrap()
        .outcome;
    assert_eq!(
        out,
        Fenced::Done(FailureOutcome {
            state: JobState::Discarded,
            retry_at: None
        })
    );
    let saved = store.get_job(j.id).await.unwrap().unwrap();
    assert_eq!(saved.errors.len(), 2);
    assert_eq!(saved.finalized_at, Some(retry_at));

    // "Never" discards at once; "after" sets the delay.
    let k = insert(&store, job("f2", t)).await;
    let ck = claim(&store, "f2", 1, t).await.remove(0);
    let never = Failure {
        id: k.id,
        lease_token: &ck.lease_token,
        message: "bad input".into(),
        retry: RetryRequest::Never,
        now: t,
    };
    let out = store.fail_job(never).await.unwrap().outcome;
    assert_eq!(
        out,
        Fenced::Done(FailureOutcome {
            state: JobState::Discarded,
            retry_at: None
        })
    );
    let m = insert(&store, job("f3", t)).await;
    let cm = claim(&store, "f3", 1, t).await.remove(0);
    let after = Failure {
        id: m.id,
        lease_token: &cm.lease_token,
        message: "429".into(),
        retry: RetryRequest::After(Duration::from_secs(42)),
        now: t,
    };
    let out = store.fail_job(after).await.unwrap().outcome;
    assert_eq!(
        out,
        Fenced::Done(FailureOutcome {
            state: JobState::Retryable,
            retry_at: Some(t + Duration::from_secs(42))
        })
    );
}

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
        lease_token: &c.lease_token,
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
        lease_token: &c.lease_token,
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
        lease_token: &c.lease_token,
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

pub async fn jobs_expired_leases_are_rescued(store: Arc<dyn Store>) {
    let t = now();
    let mut new = job("rescue", t);
    new.max_attempts = 2;
    let j = insert(&store, new).await;
    let queue = q("rescue");
    let lease = super::jobs::lease(Some(Duration::from_secs(1)));
    let c = store
        .claim_jobs(Claim {
            queue: &queue,
            worker: "dead",
            max: 1,
            lease,
            now: t,
            push: false,
        })
        .await
        .unwrap()
        .remove(0);
    assert!(
        store
            .rescue_expired_jobs(t, 100)
            .await
            .unwrap()
            .outcome
            .is_empty(),
        "lease still valid"
    );
    let later = t + Duration::from_secs(2);
    assert_eq!(
        store.rescue_expired_jobs(later, 100).await.unwrap().outcome,
        vec![j.id]
    );
    let saved = store.get_job(j.id).await.unwrap().unwrap();
    assert_eq!(saved.state, JobState::Retryable);
    assert_eq!(saved.scheduled_at, later + Duration::from_secs(1));
    assert!(
        saved.errors[0].message.contains("lease"),
        "{:?}",
        saved.errors
    );
    // The zombie can no longer finish it.
    let zombie = Completion {
        id: j.id,
        lease_token: c.lease_token.clone(),
        result: json!(1),
    };
    assert_eq!(
        store.complete_jobs(&[zombie], later).await.unwrap().outcome,
        vec![Fenced::LeaseLost]
    );
    // The second attempt's lease also expires: attempts are spent, so it is discarded.
    let again = later + Duration::from_secs(1);
    let c2 = store
        .claim_jobs(Claim {
            queue: &queue,
            worker: "w",
            max: 1,
            lease,
            now: again,
            push: false,
        })
        .await
        .unwrap()
        .remove(0);
    assert_eq!(c2.attempt, 2);
    store
        .rescue_expired_jobs(again + Duration::from_secs(5), 100)
        .await
        .unwrap();
    assert_eq!(
        store.get_job(j.id).await.unwrap().unwrap().state,
        JobState::Discarded
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
