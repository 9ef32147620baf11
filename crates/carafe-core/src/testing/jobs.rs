//! Conformance checks for `JobStore`: inserting, unique keys, claiming, heartbeats, completion.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::jobs::*;
use crate::store::Store;
use crate::time::now;

pub(super) fn q(name: &str) -> QueueName {
    QueueName::parse(name).unwrap()
}

pub(super) fn job(queue: &str, at: OffsetDateTime) -> NewJob {
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

pub(super) async fn insert(store: &Arc<dyn Store>, new: NewJob) -> Job {
    match store.insert_jobs(vec![new]).await.unwrap().remove(0) {
        Inserted::Created(j) => j,
        other => panic!("expected a new job, got {other:?}"),
    }
}

/// The server's default lease in these tests (unlike the test jobs' 30 s timeout).
pub(super) const DEFAULT_LEASE: Duration = Duration::from_secs(45);

/// A lease of `asked` length, else the queue's, else `DEFAULT_LEASE`.
pub(super) fn lease(asked: Option<Duration>) -> LeaseLength {
    LeaseLength {
        asked,
        default: DEFAULT_LEASE,
    }
}

pub(super) async fn claim(
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
            lease: lease(None),
            now: at,
            push: false,
        })
        .await
        .unwrap()
}

pub(super) async fn events(store: &Arc<dyn Store>, id: JobId) -> Vec<(String, Value)> {
    store
        .job_events(id, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.data))
        .collect()
}

pub(super) fn state_of(data: &Value) -> &str {
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
        t + DEFAULT_LEASE,
        "the default lease, not the job's timeout"
    );
    assert_eq!(got[0].lease, DEFAULT_LEASE);
    let running = store.get_job(high.id).await.unwrap().unwrap();
    assert_eq!(running.state, JobState::Running);
    assert_eq!(running.attempted_by.as_deref(), Some("w1"));
    assert_eq!(running.attempted_at, Some(t));
    let evs = events(&store, high.id).await;
    assert_eq!(evs.len(), 2);
    assert_eq!(state_of(&evs[1].1), "running");

    // An explicit lease overrides the default.
    let queue = q("work");
    let got = store
        .claim_jobs(Claim {
            queue: &queue,
            worker: "w2",
            max: 10,
            lease: lease(Some(Duration::from_secs(5))),
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
    let renew = Some(lease(Some(Duration::from_secs(120))));
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
            renew,
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
        renew,
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
        .unwrap()
        .outcome;
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
    let again = store.complete_jobs(&items[..1], t).await.unwrap().outcome;
    assert_eq!(again, vec![Fenced::LeaseLost]);
}
