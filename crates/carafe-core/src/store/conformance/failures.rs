//! Conformance checks for `FailureStore`: failed attempts retried with backoff then discarded,
//! and running jobs whose lease expired rescued the same way.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;

use super::fixtures::{claim, insert, job, q};
use crate::jobs::*;
use crate::store::Store;
use crate::time::now;

pub async fn jobs_failures_retry_then_discard(store: Arc<dyn Store>) {
    let t = now();
    let mut new = job("f", t);
    new.max_attempts = 2;
    let j = insert(&store, new).await;
    let c = claim(&store, "f", 1, t).await.remove(0);
    fn failure(id: JobId, token: &LeaseToken, at: OffsetDateTime) -> Failure {
        Failure {
            id,
            lease_token: token.clone(),
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
        lease_token: ck.lease_token.clone(),
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
        lease_token: cm.lease_token.clone(),
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

    // In one batch each failure answers for itself, in order: the second report of the same
    // attempt finds the lease gone.
    let a = insert(&store, job("f4", t)).await;
    let b = insert(&store, job("f4", t)).await;
    let cs = claim(&store, "f4", 2, t).await;
    let token = |id: JobId| cs.iter().find(|c| c.id == id).unwrap().lease_token.clone();
    let fa = Failure {
        id: a.id,
        lease_token: token(a.id),
        message: "a".into(),
        retry: RetryRequest::Never,
        now: t,
    };
    let stale = Failure {
        lease_token: LeaseToken::from("stale"),
        ..fa.clone()
    };
    let fb = Failure {
        id: b.id,
        lease_token: token(b.id),
        message: "b".into(),
        retry: RetryRequest::Default,
        now: t,
    };
    let missing = Failure {
        id: JobId(b.id.0 + 999),
        ..fb.clone()
    };
    let answer = store
        .fail_jobs(&[fa.clone(), stale, fb, missing, fa])
        .await
        .unwrap()
        .outcome;
    assert!(matches!(answer[0], Fenced::Done(o) if o.state == JobState::Discarded));
    assert!(matches!(answer[2], Fenced::Done(o) if o.state == JobState::Retryable));
    assert_eq!(
        [&answer[1], &answer[3], &answer[4]],
        [&Fenced::LeaseLost, &Fenced::NotFound, &Fenced::LeaseLost]
    );
    let saved = store.get_job(a.id).await.unwrap().unwrap();
    assert_eq!(saved.errors.len(), 1, "one attempt, recorded once");
    assert_eq!(
        store.get_job(b.id).await.unwrap().unwrap().errors[0].message,
        "b"
    );
}

pub async fn jobs_expired_leases_are_rescued(store: Arc<dyn Store>) {
    let t = now();
    let mut new = job("rescue", t);
    new.max_attempts = 2;
    let j = insert(&store, new).await;
    let queue = q("rescue");
    let lease = super::fixtures::lease(Some(Duration::from_secs(1)));
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
        outside: false,
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
