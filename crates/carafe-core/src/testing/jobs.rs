//! Conformance checks for `JobStore` and `LeaderStore`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::jobs::*;
use crate::page::PageRequest;
use crate::store::Store;
use crate::time::now;

fn q(name: &str) -> QueueName {
    QueueName::parse(name).unwrap()
}

fn job(queue: &str, at: OffsetDateTime) -> NewJob {
    NewJob {
        queue: q(queue),
        args: json!({"n": 1}),
        priority: 5,
        max_attempts: 3,
        backoff: Some(Backoff::Fixed { delay_ms: 1000 }),
        timeout: Duration::from_secs(30),
        scheduled_at: at,
        unique: None,
        owner: None,
        target: None,
        // Jobs for the future are created now; jobs for the past were created then.
        created_at: at.min(now()),
    }
}

async fn insert(store: &Arc<dyn Store>, new: NewJob) -> Job {
    match store.insert_jobs(vec![new]).await.unwrap().remove(0) {
        Inserted::Created(j) => j,
        other => panic!("expected a new job, got {other:?}"),
    }
}

async fn claim(
    store: &Arc<dyn Store>,
    queue: &str,
    max: u32,
    at: OffsetDateTime,
) -> Vec<ClaimedJob> {
    let queue = q(queue);
    store
        .claim_jobs(Claim {
            queue: &queue,
            worker: "w1",
            max,
            lease: None,
            now: at,
            push: false,
        })
        .await
        .unwrap()
}

async fn events(store: &Arc<dyn Store>, id: JobId) -> Vec<(String, Value)> {
    store
        .job_events(id, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.data))
        .collect()
}

fn state_of(data: &Value) -> &str {
    data["state"].as_str().unwrap_or("")
}

pub async fn jobs_insert_get_and_first_event(store: Arc<dyn Store>) {
    let t = now();
    let mut new = job("mail", t);
    new.owner = Some("user-1".into());
    new.args = json!({"to": "a@example.com", "deep": {"list": [1, 2, 3]}});
    let created = insert(&store, new.clone()).await;
    assert!(created.id.0 > 0);
    assert_eq!(created.queue, new.queue);
    assert_eq!(created.state, JobState::Available);
    assert_eq!(created.args, new.args);
    assert_eq!(
        (created.priority, created.attempt, created.max_attempts),
        (5, 0, 3)
    );
    assert_eq!(created.backoff, new.backoff);
    assert_eq!(created.timeout, Duration::from_secs(30));
    assert_eq!((created.scheduled_at, created.created_at), (t, t));
    assert_eq!(created.owner.as_deref(), Some("user-1"));
    assert!(created.errors.is_empty() && !created.cancel_requested);
    assert_eq!(
        store.get_job(created.id).await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(
        store.get_job(JobId(created.id.0 + 1000)).await.unwrap(),
        None
    );

    let later = insert(&store, job("mail", t + Duration::from_secs(60))).await;
    assert_eq!(later.state, JobState::Scheduled);
    assert!(later.id > created.id, "ids grow");

    let evs = store.job_events(created.id, 0, 10).await.unwrap();
    assert_eq!(evs.len(), 1);
    assert_eq!((evs[0].seq, evs[0].kind.as_str()), (1, "state"));
    assert_eq!(state_of(&evs[0].data), "available");
}

pub async fn jobs_unique_keys(store: Arc<dyn Store>) {
    let t = now();
    let unique = |key: &str, states: &[JobState], period: Option<Duration>| Unique {
        key: key.into(),
        states: states.to_vec(),
        period,
    };
    let mut a = job("reports", t);
    a.unique = Some(unique("daily", &JobState::LIVE, None));
    let first = insert(&store, a.clone()).await;
    let again = store.insert_jobs(vec![a.clone()]).await.unwrap();
    assert_eq!(again, vec![Inserted::Existing(first.clone())]);
    // Another queue has its own keys.
    let mut other = a.clone();
    other.queue = q("other");
    insert(&store, other).await;
    // Twice in one batch: the second is the first.
    let mut b = job("reports", t);
    b.unique = Some(unique("batch", &JobState::LIVE, None));
    let both = store.insert_jobs(vec![b.clone(), b.clone()]).await.unwrap();
    assert!(matches!(both[0], Inserted::Created(_)));
    assert_eq!(both[1], Inserted::Existing(both[0].job().clone()));

    // Once the job completes it no longer blocks the default (live) scope...
    let claimed = claim(&store, "reports", 10, t).await;
    let done: Vec<_> = claimed
        .iter()
        .map(|c| Completion {
            id: c.id,
            lease_token: c.lease_token.clone(),
            result: json!(null),
        })
        .collect();
    store.complete_jobs(&done, t).await.unwrap();
    assert!(matches!(
        store.insert_jobs(vec![a.clone()]).await.unwrap()[0],
        Inserted::Created(_)
    ));
    // ...but does block a scope that includes completed jobs,
    let mut c = a.clone();
    c.unique = Some(unique("daily", &[JobState::Completed], None));
    assert!(matches!(
        store.insert_jobs(vec![c]).await.unwrap()[0],
        Inserted::Existing(_)
    ));
    // unless it is older than the period.
    let mut d = job("reports", t + Duration::from_secs(7200));
    d.created_at = d.scheduled_at;
    d.unique = Some(unique(
        "daily",
        &[JobState::Completed],
        Some(Duration::from_secs(3600)),
    ));
    assert!(matches!(
        store.insert_jobs(vec![d]).await.unwrap()[0],
        Inserted::Created(_)
    ));
}

pub async fn jobs_claim_order_and_leases(store: Arc<dyn Store>) {
    let t = now();
    let mut low = job("work", t);
    low.priority = 9;
    let low = insert(&store, low).await;
    let mut high = job("work", t + Duration::from_millis(5));
    high.priority = 0;
    high.scheduled_at = t;
    let high = insert(&store, high).await;
    let normal = insert(&store, job("work", t)).await;
    let future = insert(&store, job("work", t + Duration::from_secs(60))).await;
    insert(&store, job("elsewhere", t)).await;

    let got = claim(&store, "work", 2, t).await;
    let ids: Vec<_> = got.iter().map(|c| c.id).collect();
    assert_eq!(
        ids,
        [high.id, normal.id],
        "priority first, then time and id"
    );
    assert_ne!(got[0].lease_token, got[1].lease_token);
    assert!(got[0].lease_token.len() >= 32);
    assert_eq!(got[0].attempt, 1);
    assert_eq!(
        got[0].lease_expires_at,
        t + Duration::from_secs(30),
        "the job's timeout"
    );
    let running = store.get_job(high.id).await.unwrap().unwrap();
    assert_eq!(running.state, JobState::Running);
    assert_eq!(running.attempted_by.as_deref(), Some("w1"));
    assert_eq!(running.attempted_at, Some(t));
    let evs = events(&store, high.id).await;
    assert_eq!(evs.len(), 2);
    assert_eq!(state_of(&evs[1].1), "running");

    // An explicit lease overrides the timeout.
    let queue = q("work");
    let got = store
        .claim_jobs(Claim {
            queue: &queue,
            worker: "w2",
            max: 10,
            lease: Some(Duration::from_secs(5)),
            now: t,
            push: false,
        })
        .await
        .unwrap();
    assert_eq!(got.iter().map(|c| c.id).collect::<Vec<_>>(), [low.id]);
    assert_eq!(got[0].lease_expires_at, t + Duration::from_secs(5));
    assert!(
        claim(&store, "work", 10, t).await.is_empty(),
        "the future job waits"
    );
    let got = claim(&store, "work", 10, t + Duration::from_secs(60)).await;
    assert_eq!(got.iter().map(|c| c.id).collect::<Vec<_>>(), [future.id]);
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

pub async fn jobs_heartbeats_are_fenced(store: Arc<dyn Store>) {
    let t = now();
    let j = insert(&store, job("hb", t)).await;
    let c = claim(&store, "hb", 1, t).await.remove(0);
    let until = t + Duration::from_secs(120);
    let progress = Progress {
        current: 3,
        total: Some(10),
        stage: Some("resize".into()),
        message: None,
    };
    let ack = store
        .heartbeat_job(Heartbeat {
            id: j.id,
            lease_token: &c.lease_token,
            now: t,
            extend_to: Some(until),
            progress: Some(progress.clone()),
            checkpoint: Some(json!({"page": 3})),
        })
        .await
        .unwrap();
    assert_eq!(
        ack,
        Fenced::Done(HeartbeatAck {
            cancel_requested: false,
            lease_expires_at: until
        })
    );
    let saved = store.get_job(j.id).await.unwrap().unwrap();
    assert_eq!(saved.progress, Some(progress.clone()));
    assert_eq!(saved.checkpoint, Some(json!({"page": 3})));
    assert_eq!(saved.lease_expires_at, Some(until));
    let evs = events(&store, j.id).await;
    assert_eq!(evs.last().unwrap().0, "progress");
    assert_eq!(evs.last().unwrap().1["progress"]["current"], 3);

    // Without progress, a heartbeat writes no event.
    let plain = Heartbeat {
        id: j.id,
        lease_token: &c.lease_token,
        now: t,
        extend_to: Some(until),
        progress: None,
        checkpoint: None,
    };
    store.heartbeat_job(plain.clone()).await.unwrap();
    assert_eq!(events(&store, j.id).await.len(), evs.len());

    let wrong = Heartbeat {
        lease_token: "not-the-token",
        ..plain.clone()
    };
    assert_eq!(store.heartbeat_job(wrong).await.unwrap(), Fenced::LeaseLost);
    let missing = Heartbeat {
        id: JobId(j.id.0 + 999),
        ..plain
    };
    assert_eq!(
        store.heartbeat_job(missing).await.unwrap(),
        Fenced::NotFound
    );
}

pub async fn jobs_completion_is_fenced(store: Arc<dyn Store>) {
    let t = now();
    let a = insert(&store, job("c", t)).await;
    let b = insert(&store, job("c", t)).await;
    let claimed = claim(&store, "c", 2, t).await;
    let token = |id: JobId| {
        claimed
            .iter()
            .find(|c| c.id == id)
            .unwrap()
            .lease_token
            .clone()
    };
    let items = vec![
        Completion {
            id: a.id,
            lease_token: token(a.id),
            result: json!({"ok": true}),
        },
        Completion {
            id: b.id,
            lease_token: "stale".into(),
            result: json!(1),
        },
        Completion {
            id: JobId(b.id.0 + 999),
            lease_token: "x".into(),
            result: json!(1),
        },
    ];
    let done = store
        .complete_jobs(&items, t + Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(
        done,
        vec![Fenced::Done(()), Fenced::LeaseLost, Fenced::NotFound]
    );
    let a2 = store.get_job(a.id).await.unwrap().unwrap();
    assert_eq!(a2.state, JobState::Completed);
    assert_eq!(a2.result, Some(json!({"ok": true})));
    assert_eq!(a2.finalized_at, Some(t + Duration::from_secs(1)));
    assert_eq!(a2.lease_expires_at, None);
    assert_eq!(
        state_of(&events(&store, a.id).await.last().unwrap().1),
        "completed"
    );
    assert_eq!(
        store.get_job(b.id).await.unwrap().unwrap().state,
        JobState::Running
    );
    // A second completion of the same job is refused: it is no longer running.
    let again = store.complete_jobs(&items[..1], t).await.unwrap();
    assert_eq!(again, vec![Fenced::LeaseLost]);
}

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
        .unwrap();
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
            .unwrap(),
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
        .unwrap();
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
    let out = store.fail_job(never).await.unwrap();
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
    let out = store.fail_job(after).await.unwrap();
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
    let cancelled = store.cancel_job(waiting.id, t).await.unwrap().unwrap();
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
    let marked = store.cancel_job(run.id, t).await.unwrap().unwrap();
    assert_eq!(
        (marked.state, marked.cancel_requested),
        (JobState::Running, true)
    );
    let hb = Heartbeat {
        id: run.id,
        lease_token: &c.lease_token,
        now: t,
        extend_to: None,
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
    let out = store.fail_job(f).await.unwrap();
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
    let unchanged = store.cancel_job(done.id, t).await.unwrap().unwrap();
    assert_eq!(unchanged.state, JobState::Completed);
    assert_eq!(
        store.cancel_job(JobId(done.id.0 + 999), t).await.unwrap(),
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
    let lease = Some(Duration::from_secs(1));
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
        store.rescue_expired_jobs(t, 100).await.unwrap().is_empty(),
        "lease still valid"
    );
    let later = t + Duration::from_secs(2);
    assert_eq!(
        store.rescue_expired_jobs(later, 100).await.unwrap(),
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
        store.complete_jobs(&[zombie], later).await.unwrap(),
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

pub async fn jobs_listing_filters_and_pages(store: Arc<dyn Store>) {
    let t = now();
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut n = job(if i % 2 == 0 { "even" } else { "odd" }, t);
        n.owner = Some(format!("u{}", i % 2));
        ids.push(insert(&store, n).await.id);
    }
    insert(&store, job("even", t + Duration::from_secs(300))).await;
    let all = store
        .list_jobs(&JobFilter::default(), &PageRequest::first(100), t)
        .await
        .unwrap();
    assert_eq!(all.items.len(), 6);
    assert!(
        all.items.windows(2).all(|w| w[0].id > w[1].id),
        "newest first"
    );

    let even = JobFilter {
        queue: Some(q("even")),
        ..JobFilter::default()
    };
    let mut seen = Vec::new();
    let mut page = PageRequest::first(2);
    loop {
        let got = store.list_jobs(&even, &page, t).await.unwrap();
        seen.extend(got.items.iter().map(|j| j.id));
        match got.next_after {
            Some(a) => page.after = Some(a),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4);
    let available = JobFilter {
        queue: Some(q("even")),
        state: Some(JobState::Available),
        owner: None,
    };
    let got = store
        .list_jobs(&available, &PageRequest::first(100), t)
        .await
        .unwrap();
    assert_eq!(
        got.items.len(),
        3,
        "the future job is scheduled, not available"
    );
    let scheduled = JobFilter {
        state: Some(JobState::Scheduled),
        ..JobFilter::default()
    };
    assert_eq!(
        store
            .list_jobs(&scheduled, &PageRequest::first(100), t)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    let later = t + Duration::from_secs(600);
    assert_eq!(
        store
            .list_jobs(&scheduled, &PageRequest::first(100), later)
            .await
            .unwrap()
            .items
            .len(),
        0
    );
    let mine = JobFilter {
        owner: Some("u1".into()),
        ..JobFilter::default()
    };
    let got = store
        .list_jobs(&mine, &PageRequest::first(100), t)
        .await
        .unwrap();
    assert_eq!(
        got.items.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[3], ids[1]]
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

pub async fn jobs_concurrent_claims_never_overlap(store: Arc<dyn Store>) {
    let t = now();
    let jobs: Vec<_> = (0..200).map(|_| job("race", t)).collect();
    store.insert_jobs(jobs).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let queue = q("race");
            let worker = format!("w{w}");
            let mut mine = Vec::new();
            loop {
                let got = store
                    .claim_jobs(Claim {
                        queue: &queue,
                        worker: &worker,
                        max: 7,
                        lease: None,
                        now: t,
                        push: false,
                    })
                    .await
                    .unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|c| c.id));
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(
        (all.len(), unique.len()),
        (200, 200),
        "every job claimed exactly once"
    );
}

pub async fn leader_election(store: Arc<dyn Store>) {
    let t = now();
    let ttl = Duration::from_secs(10);
    assert!(store.try_lead("maint", "a", t + ttl, t).await.unwrap());
    assert!(
        store
            .try_lead("maint", "a", t + ttl * 2, t + ttl / 2)
            .await
            .unwrap(),
        "renewal"
    );
    assert!(
        !store
            .try_lead("maint", "b", t + ttl * 2, t + ttl)
            .await
            .unwrap()
    );
    assert!(
        store.try_lead("other", "b", t + ttl, t).await.unwrap(),
        "leases are per name"
    );
    let after = t + ttl * 3;
    assert!(
        store
            .try_lead("maint", "b", after + ttl, after)
            .await
            .unwrap(),
        "an expired lease is taken over"
    );
    assert!(
        !store
            .try_lead("maint", "a", after + ttl, after)
            .await
            .unwrap()
    );
    store.resign("maint", "a").await.unwrap();
    assert!(
        !store
            .try_lead("maint", "a", after + ttl, after)
            .await
            .unwrap(),
        "only the holder resigns"
    );
    store.resign("maint", "b").await.unwrap();
    assert!(
        store
            .try_lead("maint", "a", after + ttl, after)
            .await
            .unwrap()
    );
}

pub async fn jobs_queue_limits(store: Arc<dyn Store>) {
    let t = now();
    let batch: Vec<_> = (0..20).map(|_| job("limited", t)).collect();
    store.insert_jobs(batch).await.unwrap();
    let limits = QueueLimits {
        concurrency: Some(3),
        rate_per_second: None,
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
        concurrency: None,
        rate_per_second: Some(4.0),
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

pub async fn jobs_push_jobs_are_claimed_apart(store: Arc<dyn Store>) {
    let t = now();
    let pull = insert(&store, job("mixed", t)).await;
    let mut p = job("mixed", t);
    p.target = Some("https://app.example/hooks/jobs".into());
    let push = insert(&store, p).await;
    assert_eq!(
        push.target.as_deref(),
        Some("https://app.example/hooks/jobs")
    );
    assert_eq!(
        store.get_job(push.id).await.unwrap().unwrap().target,
        push.target
    );
    let mut later = job("later", t + Duration::from_secs(60));
    later.target = Some("https://app.example/hooks/later".into());
    insert(&store, later).await;
    assert_eq!(store.push_queues(t).await.unwrap(), vec![q("mixed")]);

    let pulled = claim(&store, "mixed", 10, t).await;
    assert_eq!(
        pulled.iter().map(|c| c.id).collect::<Vec<_>>(),
        [pull.id],
        "pull workers never get push jobs"
    );
    let queue = q("mixed");
    let pushed = store
        .claim_jobs(Claim {
            queue: &queue,
            worker: "dispatcher",
            max: 10,
            lease: None,
            now: t,
            push: true,
        })
        .await
        .unwrap();
    assert_eq!(pushed.iter().map(|c| c.id).collect::<Vec<_>>(), [push.id]);
    assert_eq!(pushed[0].target, push.target);
    assert!(store.push_queues(t).await.unwrap().is_empty());
    let due = store
        .push_queues(t + Duration::from_secs(61))
        .await
        .unwrap();
    assert_eq!(due, vec![q("later")]);
}

fn schedule(name: &str, next: OffsetDateTime) -> Schedule {
    let t = now();
    Schedule {
        name: name.into(),
        cron: "0 9 * * *".into(),
        timezone: "Asia/Seoul".into(),
        job: json!({"queue": "reports", "args": {"kind": "daily"}}),
        paused: false,
        next_fire_at: next,
        last_fire_at: None,
        last_job_id: None,
        created_at: t,
        updated_at: t,
    }
}

pub async fn schedules_are_stored_listed_and_fired_once(store: Arc<dyn Store>) {
    let t = now();
    let daily = schedule("daily-report", t - Duration::from_secs(5));
    assert!(store.put_schedule(daily.clone()).await.unwrap(), "created");
    assert_eq!(
        store.get_schedule("daily-report").await.unwrap(),
        Some(daily.clone())
    );
    let mut later = schedule("later", t + Duration::from_secs(3600));
    assert!(store.put_schedule(later.clone()).await.unwrap());
    let mut paused = schedule("paused", t - Duration::from_secs(5));
    paused.paused = true;
    store.put_schedule(paused).await.unwrap();

    let due = store.due_schedules(t, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["daily-report"]
    );
    let next = t + Duration::from_secs(86_400);
    let fired = store
        .mark_fired("daily-report", daily.next_fire_at, t, Some(JobId(42)), next)
        .await
        .unwrap();
    assert!(fired);
    // A second leader that read the same tick changes nothing.
    let again = store
        .mark_fired("daily-report", daily.next_fire_at, t, Some(JobId(43)), next)
        .await
        .unwrap();
    assert!(!again);
    let saved = store.get_schedule("daily-report").await.unwrap().unwrap();
    assert_eq!(
        (saved.next_fire_at, saved.last_fire_at, saved.last_job_id),
        (next, Some(t), Some(JobId(42)))
    );
    assert!(store.due_schedules(t, 10).await.unwrap().is_empty());

    // Replacing keeps the creation time and the history; it is not "created".
    let created = later.created_at;
    later.cron = "*/5 * * * *".into();
    later.created_at = t + Duration::from_secs(99);
    assert!(!store.put_schedule(later.clone()).await.unwrap());
    let saved = store.get_schedule("later").await.unwrap().unwrap();
    assert_eq!(
        (saved.cron.as_str(), saved.created_at),
        ("*/5 * * * *", created)
    );

    let first = store.list_schedules(&PageRequest::first(2)).await.unwrap();
    let names: Vec<_> = first.items.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["daily-report", "later"]);
    let rest = store
        .list_schedules(&PageRequest {
            after: first.next_after.clone(),
            limit: 2,
        })
        .await
        .unwrap();
    assert_eq!(
        rest.items
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["paused"]
    );
    assert!(store.delete_schedule("later").await.unwrap());
    assert!(!store.delete_schedule("later").await.unwrap());
    assert_eq!(store.get_schedule("later").await.unwrap(), None);
}

async fn finish(store: &Arc<dyn Store>, queue: &str, result: Value, at: OffsetDateTime) -> JobId {
    let c = claim(store, queue, 1, at).await.remove(0);
    let done = Completion {
        id: c.id,
        lease_token: c.lease_token,
        result,
    };
    assert_eq!(
        store.complete_jobs(&[done], at).await.unwrap(),
        vec![Fenced::Done(())]
    );
    c.id
}

pub async fn workflows_chain_pass_results_along(store: Arc<dyn Store>) {
    let t = now();
    let steps = vec![job("wf-a", t), job("wf-b", t), job("wf-c", t)];
    let wf = store
        .create_workflow(WorkflowKind::Chain, steps, t)
        .await
        .unwrap();
    assert_eq!(
        (wf.kind, wf.state),
        (WorkflowKind::Chain, WorkflowState::Running)
    );
    let states: Vec<_> = wf.steps.iter().map(|j| j.state).collect();
    assert_eq!(
        states,
        [JobState::Available, JobState::Pending, JobState::Pending]
    );
    assert_eq!(wf.steps[1].workflow, Some((wf.id, 1)));
    assert!(
        claim(&store, "wf-b", 10, t).await.is_empty(),
        "pending steps are never claimed"
    );

    let a = finish(&store, "wf-a", json!({"rows": 10}), t).await;
    let started = store.advance_workflows(&[a], t).await.unwrap();
    assert_eq!(started, vec![(wf.steps[1].id, q("wf-b"))]);
    // Advancing again changes nothing.
    assert!(store.advance_workflows(&[a], t).await.unwrap().is_empty());
    let b = store.get_job(wf.steps[1].id).await.unwrap().unwrap();
    assert_eq!(b.state, JobState::Available);
    assert_eq!(b.args, json!({"n": 1, "previous": {"rows": 10}}));

    let b = finish(&store, "wf-b", json!("b-done"), t).await;
    store.advance_workflows(&[b], t).await.unwrap();
    let c = finish(&store, "wf-c", json!(null), t).await;
    assert!(store.advance_workflows(&[c], t).await.unwrap().is_empty());
    let wf = store.get_workflow(wf.id).await.unwrap().unwrap();
    assert_eq!(wf.state, WorkflowState::Completed);
    assert!(wf.finalized_at.is_some());
    assert_eq!(wf.steps[2].args["previous"], json!("b-done"));
    assert_eq!(
        store.get_workflow(WorkflowId(wf.id.0 + 999)).await.unwrap(),
        None
    );
}

pub async fn workflows_chords_call_back_once(store: Arc<dyn Store>) {
    let t = now();
    let steps = vec![job("fan", t), job("fan", t), job("gather", t)];
    let wf = store
        .create_workflow(WorkflowKind::Chord, steps, t)
        .await
        .unwrap();
    let states: Vec<_> = wf.steps.iter().map(|j| j.state).collect();
    assert_eq!(
        states,
        [JobState::Available, JobState::Available, JobState::Pending]
    );
    let claimed = claim(&store, "fan", 2, t).await;
    // Both members finish; whichever advance runs, the callback starts once.
    for (i, c) in claimed.iter().enumerate() {
        let done = Completion {
            id: c.id,
            lease_token: c.lease_token.clone(),
            result: json!(i),
        };
        store.complete_jobs(&[done], t).await.unwrap();
    }
    let ids: Vec<_> = claimed.iter().map(|c| c.id).collect();
    let (x, y) = tokio::join!(
        store.advance_workflows(&ids[..1], t),
        store.advance_workflows(&ids[1..], t)
    );
    assert_eq!(
        x.unwrap().len() + y.unwrap().len(),
        1,
        "the callback is started exactly once"
    );
    let callback = store.get_job(wf.steps[2].id).await.unwrap().unwrap();
    assert_eq!(callback.state, JobState::Available);
    let first = if claimed[0].id == wf.steps[0].id {
        0
    } else {
        1
    };
    let expected = if first == 0 {
        json!([0, 1])
    } else {
        json!([1, 0])
    };
    assert_eq!(callback.args["results"], expected, "results in step order");
    let cb = finish(&store, "gather", json!("all"), t).await;
    store.advance_workflows(&[cb], t).await.unwrap();
    assert_eq!(
        store.get_workflow(wf.id).await.unwrap().unwrap().state,
        WorkflowState::Completed
    );
}

pub async fn workflows_stop_at_a_failed_step(store: Arc<dyn Store>) {
    let t = now();
    let mut first = job("fails", t);
    first.max_attempts = 1;
    let wf = store
        .create_workflow(
            WorkflowKind::Chain,
            vec![first, job("never", t), job("never", t)],
            t,
        )
        .await
        .unwrap();
    let c = claim(&store, "fails", 1, t).await.remove(0);
    let f = Failure {
        id: c.id,
        lease_token: &c.lease_token,
        message: "bad".into(),
        retry: RetryRequest::Default,
        now: t,
    };
    store.fail_job(f).await.unwrap();
    assert!(
        store
            .advance_workflows(&[c.id], t)
            .await
            .unwrap()
            .is_empty()
    );
    let wf = store.get_workflow(wf.id).await.unwrap().unwrap();
    assert_eq!(wf.state, WorkflowState::Failed);
    let states: Vec<_> = wf.steps.iter().map(|j| j.state).collect();
    assert_eq!(
        states,
        [
            JobState::Discarded,
            JobState::Cancelled,
            JobState::Cancelled
        ]
    );

    // A group with one member cancelled: the running member is asked to stop.
    let g = store
        .create_workflow(WorkflowKind::Group, vec![job("g1", t), job("g2", t)], t)
        .await
        .unwrap();
    let running = claim(&store, "g1", 1, t).await.remove(0);
    store.cancel_job(g.steps[1].id, t).await.unwrap();
    store.advance_workflows(&[g.steps[1].id], t).await.unwrap();
    let g = store.get_workflow(g.id).await.unwrap().unwrap();
    assert_eq!(g.state, WorkflowState::Cancelled);
    let member = store.get_job(running.id).await.unwrap().unwrap();
    assert!(member.cancel_requested);
}

pub async fn workflows_are_swept_after_a_crash(store: Arc<dyn Store>) {
    let t = now();
    let wf = store
        .create_workflow(WorkflowKind::Chain, vec![job("s1", t), job("s2", t)], t)
        .await
        .unwrap();
    // The step completes, but the process dies before advancing the workflow.
    finish(&store, "s1", json!(7), t).await;
    let started = store.advance_running_workflows(t, 100).await.unwrap();
    assert_eq!(started, vec![(wf.steps[1].id, q("s2"))]);
    finish(&store, "s2", json!(8), t).await;
    store.advance_running_workflows(t, 100).await.unwrap();
    assert_eq!(
        store.get_workflow(wf.id).await.unwrap().unwrap().state,
        WorkflowState::Completed
    );
    assert!(
        store
            .advance_running_workflows(t, 100)
            .await
            .unwrap()
            .is_empty()
    );
}
